//! Handlers for the service registry (the original Thalassa server's
//! `/registrations`): heartbeats, deregistration and listings.
//!
//! Owns the wall-clock reading for a lease's renewal. Must not list a
//! registration whose lease has run out. A heartbeat goes to the peer,
//! which writes only what other peers need to learn
//! ([`crate::crdt::LeaseKeeper`]).

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::AppState;
use super::dto::{self, RegistrationOut};
use super::error::ApiError;
use super::extract::{JsonBody, PathParams};
use crate::crdt::model::LiveRegistrations;
use crate::crdt::model::{Host, RegistrationKey, ServiceName, Version};
use crate::crdt::{Command, ViewPart};
use crate::peer::wall_clock_ms;

/// The live registrations in `part` that `keep` accepts, in key order.
async fn live_where(
    state: &AppState,
    part: ViewPart,
    keep: impl Fn(&RegistrationKey) -> bool,
) -> Result<Json<Vec<RegistrationOut>>, ApiError> {
    let view = state.handle.view_of(vec![part]).await?;
    let live = LiveRegistrations::new(&view, wall_clock_ms());
    Ok(Json(
        live.all()
            .filter(|(key, _)| keep(key))
            .map(|(key, registration)| RegistrationOut::new(key, registration))
            .collect(),
    ))
}

/// `GET /registrations`.
pub(crate) async fn list_all(
    State(state): State<AppState>,
) -> Result<Json<Vec<RegistrationOut>>, ApiError> {
    live_where(&state, ViewPart::Registrations, |_| true).await
}

/// `GET /registrations/{name}` (an unknown name lists nothing).
pub(crate) async fn list_by_name(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<Vec<RegistrationOut>>, ApiError> {
    let Ok(service) = ServiceName::new(&name) else {
        return Ok(Json(Vec::new()));
    };
    live_where(&state, ViewPart::Service(service), |_| true).await
}

/// `GET /registrations/{name}/{version}`.
pub(crate) async fn list_by_version(
    State(state): State<AppState>,
    PathParams((name, version)): PathParams<(String, String)>,
) -> Result<Json<Vec<RegistrationOut>>, ApiError> {
    let Ok(service) = ServiceName::new(&name) else {
        return Ok(Json(Vec::new()));
    };
    live_where(&state, ViewPart::Service(service), |key| {
        key.version.as_str() == version
    })
    .await
}

/// `POST /registrations/{name}/{version}/{host}/{port}`: register or renew.
/// The body (any JSON object) becomes `meta`; its `secondsToExpire` is the
/// lease.
pub(crate) async fn register(
    State(state): State<AppState>,
    PathParams((name, version, host, port)): PathParams<(String, String, String, String)>,
    JsonBody(meta): JsonBody<Map<String, Value>>,
) -> Result<Json<RegistrationOut>, ApiError> {
    let key = RegistrationKey {
        service: dto::path_value("name", &name, ServiceName::new)?,
        version: dto::path_value("version", &version, Version::new)?,
        host: dto::path_value("host", &host, Host::new)?,
        port: dto::path_value("port", &port, dto::parse_port)?,
    };
    let registration = dto::registration_from_meta(meta, wall_clock_ms())?;
    let answer = RegistrationOut::new(&key, &registration);
    state.handle.heartbeat(key, registration).await?;
    Ok(Json(answer))
}

/// `DELETE /registrations/{name}/{version}/{host}/{port}`.
pub(crate) async fn deregister(
    State(state): State<AppState>,
    PathParams((name, version, host, port)): PathParams<(String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::NotFound(format!("registration /{name}/{version}/{host}/{port}"));
    let key = RegistrationKey {
        service: ServiceName::new(&name).map_err(|_| not_found())?,
        version: Version::new(&version).map_err(|_| not_found())?,
        host: Host::new(&host).map_err(|_| not_found())?,
        port: dto::parse_port(&port).map_err(|_| not_found())?,
    };
    state.handle.write(Command::Deregister { key }).await?;
    Ok(Json(json!({})))
}
