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

/// `GET /haproxy/config`: the configuration this peer last rendered, as
/// text (whether it is applied is in `/haproxy/status`), with its secrets
/// redacted.
pub(crate) async fn config(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.driver()?.rendered().ok_or(ApiError::NotRendered)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        redacted(&text),
    ))
}

/// What `/haproxy/config` replaces a secret with.
const REDACTED: &str = "<redacted>";

/// `text` with every secret the peer itself put in it replaced by
/// [`REDACTED`]: the stats page's `stats auth USER:PASSWORD`. (Lines a
/// writer put in `natives` are the writer's own, and stats lines are
/// refused there anyway.)
fn redacted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let mut words = body.split_whitespace();
        if words.next() == Some("stats") && words.next() == Some("auth") {
            out.push_str(indent);
            out.push_str("stats auth ");
            out.push_str(REDACTED);
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_password_is_redacted_and_nothing_else_changes() {
        let text = "global\n    maxconn 10\n\nlisten stats\n    stats auth admin:hunter2\n    stats uri /\n";
        let shown = redacted(text);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            shown,
            "global\n    maxconn 10\n\nlisten stats\n    stats auth <redacted>\n    stats uri /\n"
        );
    }
}
