//! `GET /events` (also at `/haproxy/events`, its first address): a
//! server-sent-event stream of this peer's HAProxy stats and of everything
//! on its activity log.
//!
//! Owns only the mapping of stats snapshots and activity to events. Must
//! not produce either.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::{broadcast, watch};

use super::error::ApiError;
use super::{AppState, EVENT_STREAMS_MAX};

/// `stats` (a snapshot each time one is read, on a peer with a driver)
/// and `activity` (members up/down, configurations applied or rejected,
/// reloads, restarts, registrations, peers joining and leaving). A reader
/// too slow for the activity buffer gets a `lagged` event saying how many
/// it missed. At most [`EVENT_STREAMS_MAX`] streams are open at once.
pub(crate) async fn stream(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Held by the stream until it ends.
    let place =
        state
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyStreams {
                limit: EVENT_STREAMS_MAX,
            })?;
    let stats = state.haproxy.as_ref().map(|driver| {
        let mut stats = driver.watch_stats();
        stats.mark_changed();
        stats
    });
    let activity = state.activity.subscribe();
    let stream = futures_util::stream::unfold(
        (stats, activity, place),
        |(mut stats, mut activity, place)| async move {
            let event = tokio::select! {
                received = activity.recv() => match received {
                    Ok(item) => Event::default().event("activity").json_data(&item).ok()?,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Event::default().event("lagged").data(missed.to_string())
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                Some(snapshot) = next_stats(&mut stats) => {
                    Event::default().event("stats").json_data(&*snapshot).ok()?
                }
            };
            Some((Ok(event), (stats, activity, place)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The next stats snapshot; pending forever without a driver.
async fn next_stats<T: Clone>(stats: &mut Option<watch::Receiver<T>>) -> Option<T> {
    match stats {
        Some(stats) => {
            stats.changed().await.ok()?;
            Some(stats.borrow_and_update().clone())
        }
        None => std::future::pending().await,
    }
}
