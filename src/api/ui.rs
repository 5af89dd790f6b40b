//! The live dashboard: `GET /ui` serves one page (HTML, CSS and vanilla
//! JavaScript embedded in the binary from `src/api/ui/`, no front-end
//! build step), and `GET /` sends browsers there.
//!
//! Owns only serving those assets and the redirect. Must not compute
//! anything for the page: the page reads the same API every client reads
//! (and the `/events` stream), and fetches nothing from any other
//! host.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::error::ApiError;

/// The page.
const PAGE: &str = include_str!("ui/index.html");
/// Its style sheet.
const STYLE: &str = include_str!("ui/style.css");
/// Its script.
const SCRIPT: &str = include_str!("ui/app.js");

/// What the page may do: load and connect to this peer only, run no inline
/// script, never be framed (clickjacking of the A/B switch), send no
/// referrer and submit no form.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded asset with its type; browsers revalidate each time, so a
/// new binary's page is never mixed with an old script.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui`: the dashboard.
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/style.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /ui/app.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /`: a browser (its `Accept` names `text/html`) is sent to `/ui`;
/// API clients get the same "no such route" as before.
pub(crate) async fn root(headers: HeaderMap) -> Response {
    let wants_html = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/html"));
    if wants_html {
        Redirect::to("/ui").into_response()
    } else {
        ApiError::NoRoute.into_response()
    }
}
