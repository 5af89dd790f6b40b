//! `GET /events` (also at `/haproxy/events`, its first address): a
//! server-sent-event stream of this peer's HAProxy stats and of everything
//! on its activity log.
//!
//! Owns only the mapping of stats snapshots and activity to events. Must
//! not produce either.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::{broadcast, watch};

use super::error::ApiError;
use super::ip_slots::Refused;
use super::{AppState, EVENT_STREAMS_MAX, EVENT_STREAMS_PER_IP_MAX};

/// `stats` (a snapshot each time one is read, on a peer with a driver)
/// and `activity` (members up/down, configurations applied or rejected,
/// reloads, restarts, registrations, peers joining and leaving). A reader
/// too slow for the activity buffer gets a `lagged` event saying how many
/// it missed. At most [`EVENT_STREAMS_MAX`] streams are open at once, at
/// most [`EVENT_STREAMS_PER_IP_MAX`] of them from one client address (the
/// router driven without a server has none: its streams count towards the
/// total only).
pub(crate) async fn stream(
    State(state): State<AppState>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let client = client.map(|Extension(ConnectInfo(addr))| addr.ip());
    // Held by the stream until it ends.
    let place = state
        .streams
        .try_acquire(client)
        .map_err(|refused| ApiError::TooManyStreams {
            limit: match refused {
                Refused::Global => EVENT_STREAMS_MAX,
                Refused::PerIp => EVENT_STREAMS_PER_IP_MAX,
            },
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
