//! The REST API (axum): the Thalassa-compatible surface of API.md section 1
//! (frontends, backends, the A/B switch, registrations) plus the mesh
//! additions (members one by one, `/mesh`, `/health`, `/metrics`, and
//! `/haproxy/*`: the rendered configuration, apply status, stats and the
//! event stream), and the live dashboard at `/ui` (`GET /` redirects
//! browsers there).
//!
//! Owns the JSON shapes (the `dto` types, separate from `crdt::model`),
//! their validation into model values, the error answers and write access
//! control. Talks to the peer only through [`Handle`]. Must not hold
//! protocol logic, expose CRDT internals, or log the API token.
//!
//! Decisions where the original was silent or wrong (API.md lists them):
//!
//! - **References are checked against this peer's view when the request
//!   arrives.** A frontend whose `backend` (or a rule's `backend`) does not
//!   exist is a 400 naming the field: create backends first, as in the A/B
//!   story. Deleting a backend that a frontend still uses is a 409 naming
//!   the frontends. These checks cannot see concurrent writes on other
//!   peers, so after a merge a reference may still dangle; rendering must
//!   cope with that, the API only stops the mistakes a user makes alone.
//! - **Dynamic backends hold no members of their own**: their pool is the
//!   live registrations of `name`@`version`, so a re-PUT cannot empty it.
//!   `members` on a dynamic backend must be absent or `[]`; member writes to
//!   one are a 400.
//! - **The A/B switch refuses a version with no live registration** (409),
//!   unless the body says `"force": true`.
//! - **`health` is for http mode only** (a 400 in tcp mode, where the
//!   original dropped it silently); `HTTP/1.1` checks need the backend's
//!   `host`, as in the original. A tcp backend is shown without `health`.
//! - **Registrations whose lease has run out are left out of every read**,
//!   also from the members of dynamic backends. The peer that takes an
//!   instance's heartbeats owns its lease: while that peer is up, every
//!   peer lists the instance, and the owner removes it (with its own clock)
//!   once heartbeats stop for a lease. When the owner goes silent
//!   (suspected or down), each peer keeps the instance for one lease from
//!   when it first saw the owner so (`crdt::model::Owners`); a registration
//!   no owner will remove is swept a minute after its last live instant. A
//!   heartbeat that changes nothing others can see is answered without a
//!   write; `lastKnown` is the last renewal in the replicated state, up to
//!   15 s plus one heartbeat interval behind the last heartbeat.
//! - An empty request body counts as `{}`, so a heartbeat needs no body and
//!   a forgotten one is answered with the first missing field. The
//!   `Content-Type` is not checked (`curl -d` sends a form type): a body
//!   that is not JSON is a 400 saying so, whatever its type claims.
//! - **A body is one JSON object, with no key given twice** at any depth
//!   (also inside a heartbeat's `meta`, where the last value would
//!   otherwise win silently); unknown fields are refused. Error answers
//!   quote at most a few hundred characters of the input.
//! - A key in a path that is not a valid name cannot exist: 404 on reads,
//!   400 on writes. PUT and POST answer the object as stored; DELETE
//!   answers `{}`.
//! - **Writes that shape `haproxy.cfg` are checked by HAProxy first**: a
//!   frontend (with the backends it names) or a backend, as it would be
//!   after the write, is rendered and run through `haproxy -c`; a refusal
//!   is a 400 carrying HAProxy's own message, and nothing is written. Only
//!   the touched sections are checked, so the cost does not grow with the
//!   configuration; the driver checks the whole file again before any
//!   reload and never activates one HAProxy refuses. A render-only peer
//!   (`--haproxy off`) has no HAProxy to ask and checks nothing; what it
//!   accepts is still held back by every managed peer that cannot load it.
//! - **Two frontends cannot listen on one port of one address** (HAProxy
//!   binds with SO_REUSEPORT and would split connections between them at
//!   random): a 400 on `bind`; `*` overlaps every address.
//! - **A backend named in a frontend's `natives`** (`use_backend x if ...`)
//!   is in use like one named by a rule.
//! - **A frontend and the backends it routes to share one mode** (HAProxy
//!   refuses an http frontend in front of a tcp backend): a 400 on the
//!   frontend's `mode` or on the backend's `mode` when a frontend of the
//!   other mode uses it.
//! - `/haproxy/*` answers 503 on a peer started without a driver.
//! - **Requests in progress are bounded** (`--api-max-requests`, 256 by
//!   default): one more is answered 503 with `Retry-After: 1` at once,
//!   rather than queued, so that memory stays bounded by the limit times
//!   the body limit (`--api-body-limit`, 1 MiB) whatever the number of
//!   clients. A request holds its place until its answer starts: an event
//!   stream (`/events`, `/haproxy/events`) holds none while it streams.
//! - Reads show this peer's state as it is in memory: a write that is not
//!   durable yet (its answer has not been sent) is visible to a concurrent
//!   read, and is gone again if the peer crashes before the commit. What
//!   was acknowledged is never lost.

mod auth;
mod config;
mod dto;
mod error;
mod events;
mod extract;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod haproxy;
mod ip_slots;
mod mesh;
mod metrics;
mod registry;
pub mod server;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, put};

use crate::activity::ActivityLog;
use crate::crdt::model::ConfigView;
use crate::haproxy::driver::Driver;
use crate::peer::Handle;
use error::ApiError;

pub use auth::{ApiToken, InvalidToken};

/// Largest request body accepted unless [`ApiOptions`] say otherwise (1 MiB).
pub const BODY_LIMIT_DEFAULT: usize = 1 << 20;
/// Requests in progress at once unless [`ApiOptions`] say otherwise.
pub const MAX_REQUESTS_DEFAULT: usize = 256;
/// Event streams (`GET /events`) open at once: a stream holds no request
/// place once it is answered, so it needs a bound of its own (each holds a
/// connection and a subscription); one more is answered 503.
pub const EVENT_STREAMS_MAX: usize = 256;
/// Event streams open at once from one client IP address, well below
/// [`EVENT_STREAMS_MAX`], so that one client cannot lock every dashboard
/// out; one more from that address is answered 503.
pub const EVENT_STREAMS_PER_IP_MAX: usize = 16;

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// When set, every write (any method but GET, HEAD and OPTIONS) needs
    /// `Authorization: Bearer <token>`; reads stay open.
    pub token: Option<ApiToken>,
    /// Largest request body, in bytes; larger ones are answered 413.
    pub body_limit_bytes: usize,
    /// Requests in progress at once; one more is answered 503.
    pub max_requests: usize,
    /// This peer's HAProxy driver: `/haproxy/*` answers 503 without one,
    /// and writes are not checked against HAProxy.
    pub haproxy: Option<Driver>,
    /// What `GET /events` streams besides stats.
    pub activity: ActivityLog,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            token: None,
            body_limit_bytes: BODY_LIMIT_DEFAULT,
            max_requests: MAX_REQUESTS_DEFAULT,
            haproxy: None,
            activity: ActivityLog::default(),
        }
    }
}

/// What every handler gets.
#[derive(Debug, Clone)]
struct AppState {
    handle: Handle,
    body_limit_bytes: usize,
    haproxy: Option<Driver>,
    activity: ActivityLog,
    /// Places for open event streams ([`EVENT_STREAMS_MAX`] in total,
    /// [`EVENT_STREAMS_PER_IP_MAX`] per client address).
    streams: Arc<ip_slots::IpSlots>,
}

impl AppState {
    /// Checks the configuration a write would produce (the objects it
    /// touches and what they name) against HAProxy before it is made.
    async fn check_with_haproxy(&self, would_be: &ConfigView) -> Result<(), ApiError> {
        match &self.haproxy {
            Some(driver) => Ok(driver.check(would_be).await?),
            None => Ok(()),
        }
    }

    fn driver(&self) -> Result<&Driver, ApiError> {
        self.haproxy.as_ref().ok_or(ApiError::NotRendered)
    }
}

/// The API's routes, answering through `handle`.
pub fn router(handle: Handle, options: ApiOptions) -> Router {
    let state = AppState {
        handle,
        body_limit_bytes: options.body_limit_bytes,
        haproxy: options.haproxy,
        activity: options.activity,
        streams: ip_slots::IpSlots::new(EVENT_STREAMS_MAX, EVENT_STREAMS_PER_IP_MAX),
    };
    let routes = Router::new()
        .route("/frontends", get(config::list_frontends))
        .route(
            "/frontends/{key}",
            get(config::get_frontend)
                .put(config::put_frontend)
                .delete(config::delete_frontend),
        )
        .route("/backends", get(config::list_backends))
        .route(
            "/backends/{key}",
            get(config::get_backend)
                .put(config::put_backend)
                .delete(config::delete_backend)
                .post(config::switch_backend),
        )
        .route("/backends/{key}/members", get(config::list_members))
        .route(
            "/backends/{key}/members/{host}/{port}",
            put(config::put_member).delete(config::delete_member),
        )
        .route("/registrations", get(registry::list_all))
        .route("/registrations/{name}", get(registry::list_by_name))
        .route(
            "/registrations/{name}/{version}",
            get(registry::list_by_version),
        )
        .route(
            "/registrations/{name}/{version}/{host}/{port}",
            axum::routing::post(registry::register).delete(registry::deregister),
        )
        .route("/haproxy/config", get(haproxy::config))
        .route("/haproxy/status", get(haproxy::status))
        .route("/haproxy/stats", get(haproxy::stats))
        .route("/haproxy/events", get(events::stream))
        .route("/events", get(events::stream))
        .route("/mesh", get(mesh::this_peer))
        .route("/mesh/peers", get(mesh::peers))
        .route("/health", get(mesh::health))
        .route("/metrics", get(metrics::scrape))
        .route("/", get(ui::root))
        .route("/ui", get(ui::page))
        .route("/ui/style.css", get(ui::style))
        .route("/ui/app.js", get(ui::script))
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_route);
    let routes = match options.token {
        Some(token) => routes.layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            auth::require_token_for_writes,
        )),
        None => routes,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_requests));
    routes
        .layer(DefaultBodyLimit::max(options.body_limit_bytes))
        // Outermost: a request over the limit costs nothing further.
        .layer(axum::middleware::from_fn_with_state(
            (slots, options.max_requests),
            limit_requests,
        ))
        .with_state(state)
}

/// Middleware: serves a request if fewer than the limit are in progress
/// (its place is held until its answer starts), else answers 503.
async fn limit_requests(
    axum::extract::State((slots, limit)): axum::extract::State<(
        Arc<tokio::sync::Semaphore>,
        usize,
    )>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match slots.try_acquire() {
        Ok(_place) => next.run(request).await,
        Err(_) => ApiError::Busy { limit }.into_response(),
    }
}
