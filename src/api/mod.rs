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
//!   a forgotten one is answered with the first missing field. **A write
//!   with a body must declare it `Content-Type: application/json`** (the
//!   original clients do; `curl -d` needs `-H 'content-type:
//!   application/json'`): anything else is a 415, since a `text/plain` or
//!   form body is what a web page can send cross-site without asking.
//! - **Access** (`auth`): with no token configured every route is open, and
//!   the peer refuses to listen beyond loopback so unless `--api-insecure`
//!   is given. With a token, every route but `/health` and the dashboard's
//!   files needs one: the read token (`--api-read-token`) for `GET`,
//!   `HEAD` and `OPTIONS`, the write token for anything (401 without a
//!   token, 403 for the read token on a write).
//! - **Cross-site requests** (`guard`): a `Host` that names none of the
//!   API's addresses (nor `localhost` on loopback, nor a name of
//!   `--api-allowed-hosts`) is a 403 — a DNS-rebinding page cannot reach a
//!   loopback API; an `Origin` other than the API's own (same host and
//!   port as the `Host`) or one of `--api-allowed-origins` is a 403.
//! - **A routing rule's regex (`path_reg`, `url_reg`, `hdr_reg`) must not
//!   backtrack exponentially**: a repetition of something that repeats or
//!   has alternatives (`(a|aa)+`), more than two unbounded repetitions, or
//!   a pattern the check cannot read (lookaround, back-references) is a
//!   400 on `rules[i].value` (`crdt::model::regex_hazard`). One request
//!   with many values of a header could otherwise hold an HAProxy worker
//!   until its watchdog kills it. Rules stored before keep decoding.
//! - `/haproxy/config` shows the configuration with the stats page's
//!   password `<redacted>`.
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
//!   is a 400 naming the lines of the written section HAProxy pointed to,
//!   never HAProxy's own words (they quote whatever HAProxy read, a file
//!   included; the peer logs them), and nothing is written. Only
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
//! - **`natives` lines are an allow-list** of directives per section that
//!   cannot read, write or execute files, open sockets or listeners, read
//!   the environment or serve an admin page (`crdt::natives`,
//!   `docs/natives.md`); another line is a 400 naming `natives[i]` and the
//!   word. A peer started with `--natives unrestricted` takes any line that
//!   opens no section; the API cannot switch that.
//! - **A frontend and the backends it routes to share one mode** (HAProxy
//!   refuses an http frontend in front of a tcp backend): a 400 on the
//!   frontend's `mode` or on the backend's `mode` when a frontend of the
//!   other mode uses it.
//! - `/haproxy/*` answers 503 on a peer started without a driver.
//! - **Quotas bound what writers can store** (`--quota-*`, `quota`
//!   module): objects per kind, registrations in total and per name, meta
//!   bytes, the longest lease, natives per object and the document's
//!   size. A write beyond one is refused with nothing changed: 409 for a
//!   count, 413 for a size, 400 for the lease (like the model's own bound
//!   on `secondsToExpire`); the message names the quota and its option,
//!   and `/metrics` counts it. Like references, quotas are checked against
//!   this peer's view when the request arrives: writes in flight together
//!   (on this peer, at most `--api-max-requests`, or on other peers) can
//!   each pass a count quota and exceed it until the next write is
//!   refused. Only what a write adds is checked: a replacement that adds
//!   no object, a heartbeat that repeats the stored meta, and deletes are
//!   never refused, and stored state above a quota keeps decoding and
//!   rendering.
//! - **Requests in progress are bounded** (`--api-max-requests`, 256 by
//!   default): one more is answered 503 with `Retry-After: 1` at once,
//!   rather than queued, so that memory stays bounded by the limit times
//!   the body limit (`--api-body-limit`, 1 MiB) whatever the number of
//!   clients. A request holds its place until its answer starts: an event
//!   stream (`/events`, `/haproxy/events`) holds none while it streams. A
//!   body must arrive within `--api-body-timeout` (30 s; 408 beyond), so
//!   that a body trickling in never holds a place for long.
//! - **Certificate revocations** (`/mesh/revocations`): `POST` takes the
//!   file `aqueduct certs revoke` wrote, as it is (JSON: `name`,
//!   `revokedAt`, `notBeforeUpTo`, `signature` in hex), with the write
//!   token; it is answered once durable on this peer, with the revocation
//!   this peer now holds for that name, and spreads to every peer. A body
//!   that is not one is a 400 naming the field; a signature that is not the
//!   cluster CA's a 400 on `signature`; nothing changes either way. Posting
//!   one again changes nothing (200). `GET` lists every revocation held.
//!   `/mesh/peers` shows `revoked: true` and `revokedAt` (Unix seconds) for
//!   a peer whose certificate (the last one it presented here) a
//!   revocation covers; a certificate issued for the name afterwards is
//!   accepted again.
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
mod guard;
mod haproxy;
mod ip_slots;
mod mesh;
mod metrics;
mod quota;
mod refusals;
mod registry;
pub mod server;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post, put};

use crate::activity::ActivityLog;
use crate::crdt::model::{ConfigView, Name, NativesPolicy, Section};
use crate::haproxy::driver::Driver;
use crate::peer::Handle;
use error::ApiError;

pub use auth::{ApiAccess, ApiToken, InvalidToken, PUBLIC_PATHS, Scope, scope_needed};
pub use guard::SiteRules;
pub use quota::{Quota, Quotas};
use refusals::Refusals;

/// Largest request body accepted unless [`ApiOptions`] say otherwise (1 MiB).
pub const BODY_LIMIT_DEFAULT: usize = 1 << 20;
/// How long a request body may take to arrive unless [`ApiOptions`] say
/// otherwise. The server's idle timeout closes a connection on which
/// nothing moves, but a body sent a byte at a time just under it would hold
/// a request place for ever; the largest body (1 MiB by default) arrives
/// well within this even over a slow link.
pub const BODY_DEADLINE_DEFAULT: std::time::Duration = std::time::Duration::from_secs(30);
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
    /// The tokens: with any, every route but [`PUBLIC_PATHS`] needs
    /// `Authorization: Bearer <token>` of the scope it needs.
    pub access: ApiAccess,
    /// The `Host` and `Origin` requests may carry.
    pub site: SiteRules,
    /// Largest request body, in bytes; larger ones are answered 413.
    pub body_limit_bytes: usize,
    /// How long a request body may take to arrive once its handler reads
    /// it; a slower one is answered 408.
    pub body_deadline: std::time::Duration,
    /// Requests in progress at once; one more is answered 503.
    pub max_requests: usize,
    /// This peer's HAProxy driver: `/haproxy/*` answers 503 without one,
    /// and writes are not checked against HAProxy.
    pub haproxy: Option<Driver>,
    /// What `GET /events` streams besides stats.
    pub activity: ActivityLog,
    /// Limits on what writes may store.
    pub quotas: Quotas,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            access: ApiAccess::default(),
            site: SiteRules::default(),
            body_limit_bytes: BODY_LIMIT_DEFAULT,
            body_deadline: BODY_DEADLINE_DEFAULT,
            max_requests: MAX_REQUESTS_DEFAULT,
            haproxy: None,
            activity: ActivityLog::default(),
            quotas: Quotas::default(),
        }
    }
}

/// What every handler gets.
#[derive(Debug, Clone)]
struct AppState {
    handle: Handle,
    body_limit_bytes: usize,
    body_deadline: std::time::Duration,
    haproxy: Option<Driver>,
    activity: ActivityLog,
    /// Places for open event streams ([`EVENT_STREAMS_MAX`] in total,
    /// [`EVENT_STREAMS_PER_IP_MAX`] per client address).
    streams: Arc<ip_slots::IpSlots>,
    /// Requests refused before a handler, for `/metrics`.
    refusals: Refusals,
    /// Limits on what writes may store, and their refusals.
    quotas: quota::QuotaGuard,
}

impl AppState {
    /// Checks the configuration a write would produce (the objects it
    /// touches and what they name) against HAProxy before it is made;
    /// `touched` is the section written.
    async fn check_with_haproxy(
        &self,
        would_be: &ConfigView,
        touched: (Section, &Name),
    ) -> Result<(), ApiError> {
        match &self.haproxy {
            Some(driver) => Ok(driver.check(would_be, touched).await?),
            None => Ok(()),
        }
    }

    /// Which `natives` lines writes may hold: the peer's own setting
    /// (`--natives`), restricted without a driver.
    fn natives(&self) -> NativesPolicy {
        self.haproxy
            .as_ref()
            .map_or(NativesPolicy::Restricted, Driver::natives)
    }

    fn driver(&self) -> Result<&Driver, ApiError> {
        self.haproxy.as_ref().ok_or(ApiError::NotRendered)
    }
}

/// Every route: its path and what it answers. The router is built from
/// this list, and the access tests enumerate it, so that no route can be
/// added without being checked.
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/frontends", get(config::list_frontends)),
        (
            "/frontends/{key}",
            get(config::get_frontend)
                .put(config::put_frontend)
                .delete(config::delete_frontend),
        ),
        ("/backends", get(config::list_backends)),
        (
            "/backends/{key}",
            get(config::get_backend)
                .put(config::put_backend)
                .delete(config::delete_backend)
                .post(config::switch_backend),
        ),
        ("/backends/{key}/members", get(config::list_members)),
        (
            "/backends/{key}/members/{host}/{port}",
            put(config::put_member).delete(config::delete_member),
        ),
        ("/registrations", get(registry::list_all)),
        ("/registrations/{name}", get(registry::list_by_name)),
        (
            "/registrations/{name}/{version}",
            get(registry::list_by_version),
        ),
        (
            "/registrations/{name}/{version}/{host}/{port}",
            post(registry::register).delete(registry::deregister),
        ),
        ("/haproxy/config", get(haproxy::config)),
        ("/haproxy/status", get(haproxy::status)),
        ("/haproxy/stats", get(haproxy::stats)),
        ("/haproxy/events", get(events::stream)),
        ("/events", get(events::stream)),
        ("/mesh", get(mesh::this_peer)),
        ("/mesh/peers", get(mesh::peers)),
        (
            "/mesh/revocations",
            get(mesh::revocations).post(mesh::revoke),
        ),
        ("/health", get(mesh::health)),
        ("/ready", get(mesh::ready)),
        ("/metrics", get(metrics::scrape)),
        ("/", get(ui::root)),
        ("/ui", get(ui::page)),
        ("/ui/style.css", get(ui::style)),
        ("/ui/app.js", get(ui::script)),
    ]
}

/// The path of every route the router has, with `{parameters}` as
/// written (for tests that must cover every route).
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

/// The API's routes, answering through `handle`.
pub fn router(handle: Handle, options: ApiOptions) -> Router {
    let refusals = Refusals::default();
    let state = AppState {
        handle,
        body_limit_bytes: options.body_limit_bytes,
        body_deadline: options.body_deadline,
        haproxy: options.haproxy,
        activity: options.activity,
        streams: ip_slots::IpSlots::new(EVENT_STREAMS_MAX, EVENT_STREAMS_PER_IP_MAX),
        refusals: refusals.clone(),
        quotas: quota::QuotaGuard::new(options.quotas),
    };
    let routes = routes()
        .into_iter()
        .fold(Router::new(), |router, (path, route)| {
            router.route(path, route)
        })
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_route);
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_requests));
    routes
        .layer(DefaultBodyLimit::max(options.body_limit_bytes))
        // Before any body is read: who may ask, then from where.
        .layer(axum::middleware::from_fn_with_state(
            (Arc::new(options.access), refusals.clone()),
            auth::require_scope,
        ))
        .layer(axum::middleware::from_fn_with_state(
            (Arc::new(options.site), refusals),
            guard::same_site,
        ))
        // Sees every write's answer, refusals by the guards included.
        .layer(axum::middleware::from_fn(auth::audit))
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
