//! Handlers for the service registry (the original Thalassa server's
//! `/registrations`): heartbeats, deregistration and listings.
//!
//! Owns the wall-clock reading for a lease's renewal, and which quotas a
//! heartbeat is checked against (the rules are `quota`'s). Must not list a
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
use super::quota::{self, Quota};
use crate::crdt::model::LiveRegistrations;
use crate::crdt::model::{Host, Registration, RegistrationKey, ServiceName, Version};
use crate::crdt::{Command, Counted, ViewPart};
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
    check_quotas(&state, &key, &registration).await?;
    let answer = RegistrationOut::new(&key, &registration);
    state.handle.heartbeat(key, registration).await?;
    Ok(Json(answer))
}

/// The quotas a heartbeat must fit in, unless it repeats the stored meta
/// (the common case, which costs one lookup of the instance): meta and
/// lease, one more registration of its name and in all if it is new, and
/// the document's size.
async fn check_quotas(
    state: &AppState,
    key: &RegistrationKey,
    registration: &Registration,
) -> Result<(), ApiError> {
    let view = state
        .handle
        .view_of(vec![ViewPart::Registration(key.clone())])
        .await?;
    let stored = view.registrations.get(key);
    if quota::repeats(registration, stored) {
        return Ok(());
    }
    state.quotas.registration(registration)?;
    let usage = match stored {
        Some(_) => state.handle.usage(None).await?,
        None => {
            let of_name = Counted::RegistrationsOf(key.service.clone());
            let held = state.handle.usage(Some(of_name)).await?.objects;
            state.quotas.count(
                Quota::RegistrationsPerName,
                held,
                held + 1,
                format_args!("registrations of {}", key.service),
            )?;
            let usage = state.handle.usage(Some(Counted::Registrations)).await?;
            state.quotas.count(
                Quota::Registrations,
                usage.objects,
                usage.objects + 1,
                "registrations",
            )?;
            usage
        }
    };
    state
        .quotas
        .document(usage.document_bytes, key, stored, registration)
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
