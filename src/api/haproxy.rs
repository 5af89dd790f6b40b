//! Handlers for this peer's HAProxy: the configuration it last rendered,
//! the apply status and live stats (streamed by [`super::events`]).
//!
//! Owns only the mapping of the driver's reports to answers. Must not
//! talk to HAProxy itself.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use super::error::ApiError;
use crate::haproxy::driver::{ApplyStatus, StatsSnapshot};
use crate::haproxy::render;

/// `GET /haproxy/config`: the configuration this peer last rendered, as
/// text (whether it is applied is in `/haproxy/status`), with its secrets
/// redacted.
pub(crate) async fn config(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.driver()?.rendered().ok_or(ApiError::NotRendered)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        render::redacted(&text),
    ))
}

/// `GET /haproxy/status`: reloads, runtime changes, the last error.
pub(crate) async fn status(State(state): State<AppState>) -> Result<Json<ApplyStatus>, ApiError> {
    Ok(Json(state.driver()?.status()))
}

/// `GET /haproxy/stats`: the latest `show stat`, one row per frontend,
/// backend and server.
pub(crate) async fn stats(State(state): State<AppState>) -> Result<Json<StatsSnapshot>, ApiError> {
    Ok(Json(state.driver()?.stats().as_ref().clone()))
}
