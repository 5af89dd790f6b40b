//! Handlers for this peer's HAProxy: the configuration it last rendered,
//! the apply status, live stats, and a server-sent-event stream of stats
//! and activity.
//!
//! Owns only the mapping of the driver's reports to answers. Must not
//! talk to HAProxy itself.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast;

use super::AppState;
use super::error::ApiError;
use crate::haproxy::driver::{ApplyStatus, StatsSnapshot};

/// `GET /haproxy/config`: the configuration this peer last rendered, as
/// text (whether it is applied is in `/haproxy/status`).
pub(crate) async fn config(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.driver()?.rendered().ok_or(ApiError::NotRendered)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_string(),
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

/// `GET /haproxy/events`: server-sent events — `stats` (a snapshot, each
/// time one is read) and `activity` (member up/down, configuration
/// applied or rejected, reloads, restarts). A reader too slow for the
/// activity buffer gets a `lagged` event saying how many it missed.
pub(crate) async fn events(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let driver = state.driver()?;
    let mut stats = driver.watch_stats();
    stats.mark_changed();
    let activity = driver.subscribe();
    let stream =
        futures_util::stream::unfold((stats, activity), |(mut stats, mut activity)| async move {
            let event = tokio::select! {
                received = activity.recv() => match received {
                    Ok(item) => Event::default().event("activity").json_data(&item).ok()?,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Event::default().event("lagged").data(missed.to_string())
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = stats.changed() => {
                    changed.ok()?;
                    let snapshot = stats.borrow_and_update().clone();
                    Event::default().event("stats").json_data(&*snapshot).ok()?
                }
            };
            Some((Ok(event), (stats, activity)))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
