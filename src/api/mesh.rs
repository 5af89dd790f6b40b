//! Handlers for this peer's place in the mesh and its liveness.
//!
//! Owns nothing but the mapping of [`Status`](crate::peer::Status) to
//! answers. Must not compute anything the peer task already knows.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::dto::{MeshOut, PeerOut};
use super::error::ApiError;

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

/// `GET /health`: ok while the peer task answers.
pub(crate) async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.handle.status().await?;
    Ok(Json(json!({ "status": "ok" })))
}
