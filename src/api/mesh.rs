//! Handlers for this peer's place in the mesh and its liveness.
//!
//! Owns nothing but the mapping of [`Status`](crate::peer::Status) to
//! answers. Must not compute anything the peer task already knows.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::dto::{MeshOut, PeerOut};
use super::error::ApiError;
use super::extract::JsonBody;
use crate::certs::RevocationFile;

/// `GET /mesh`: this peer's identity, digest and version vector.
pub(crate) async fn this_peer(State(state): State<AppState>) -> Result<Json<MeshOut>, ApiError> {
    let status = state.handle.status().await?;
    Ok(Json(MeshOut::new(&status)))
}

/// `GET /mesh/peers`: every peer SWIM knows of.
pub(crate) async fn peers(State(state): State<AppState>) -> Result<Json<Vec<PeerOut>>, ApiError> {
    let status = state.handle.status().await?;
    Ok(Json(
        status
            .peers
            .iter()
            .map(|peer| PeerOut::new(peer, status.digest))
            .collect(),
    ))
}

/// `GET /mesh/revocations`: every revocation this peer holds, by name.
pub(crate) async fn revocations(
    State(state): State<AppState>,
) -> Result<Json<Vec<RevocationFile>>, ApiError> {
    let revocations = state.handle.revocations().await?;
    Ok(Json(revocations.iter().map(RevocationFile::from).collect()))
}

/// `POST /mesh/revocations`: takes a revocation file and spreads it;
/// answers with what this peer holds for the name once that is durable.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    JsonBody(file): JsonBody<RevocationFile>,
) -> Result<Json<RevocationFile>, ApiError> {
    let revocation = file
        .into_revocation()
        .map_err(|reason| ApiError::invalid(super::error::WHOLE_BODY, reason))?;
    let name = revocation.name.clone();
    state.handle.revoke(revocation).await?;
    let held = state.handle.revocations().await?;
    let held = held
        .iter()
        .find(|revocation| revocation.name == name)
        .ok_or(ApiError::NotFound(format!("revocation of {name}")))?;
    Ok(Json(RevocationFile::from(held)))
}

/// `GET /ready`: 200 once this peer serves its configuration — its first
/// sync done (or not needed) and, if it runs an HAProxy, that HAProxy
/// running a configuration; 503 with the reason before (for a load
/// balancer's or an orchestrator's readiness probe; `/health` says only
/// that the peer task answers).
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason })),
        )
    };
    let Ok(status) = state.handle.status().await else {
        return not_ready("the peer task does not answer");
    };
    if !status.first_sync.allows_apply() {
        return not_ready("started empty: waiting for a first sync with a live member");
    }
    if let Some(driver) = &state.haproxy {
        let haproxy = driver.status();
        if haproxy.managed && !(haproxy.running && haproxy.applied_hash.is_some()) {
            return not_ready("HAProxy does not run a configuration yet");
        }
    }
    (StatusCode::OK, Json(json!({ "ready": true })))
}

/// `GET /health`: ok while the peer task answers.
pub(crate) async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.handle.status().await?;
    Ok(Json(json!({ "status": "ok" })))
}
