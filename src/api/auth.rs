//! API access control: two bearer tokens (read scope and write scope) and
//! which routes stay public.
//!
//! Owns the tokens' rules, their constant-time check and the access rule of
//! every route: with no token configured everything is open (the API then
//! listens on loopback only, unless the operator said `--api-insecure`);
//! with any token configured, every route but the public ones (`/health`
//! and the dashboard's static files) needs a token — the read token for
//! reads (`GET`, `HEAD`, `OPTIONS`), the write token for anything, reads
//! included. Must not let a secret reach a log, a `Debug` output or an
//! error message.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::refusals::{Refusal, Refusals};

/// A secret that requests present as `Authorization: Bearer <token>`.
///
/// 1–256 bytes of visible ASCII (no spaces: HTTP trims whitespace around
/// header values, so a token could not round-trip through a header).
/// `Debug` shows no part of it.
#[derive(Clone)]
pub struct ApiToken(String);

/// Why a token was refused. Never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    /// Empty.
    #[error("the API token must not be empty")]
    Empty,
    /// Over [`ApiToken::MAX_BYTES`].
    #[error("the API token must be at most 256 bytes")]
    TooLong,
    /// Holds whitespace, a control character or non-ASCII.
    #[error("the API token must be visible ASCII characters without spaces")]
    NotPrintable,
}

impl ApiToken {
    /// Longest accepted token.
    pub const MAX_BYTES: usize = 256;

    /// Validates `token`.
    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        if token.is_empty() {
            Err(InvalidToken::Empty)
        } else if token.len() > Self::MAX_BYTES {
            Err(InvalidToken::TooLong)
        } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
            Err(InvalidToken::NotPrintable)
        } else {
            Ok(ApiToken(token.to_owned()))
        }
    }

    /// The secret, for a client that sends it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token. The comparison takes the same
    /// time wherever the first difference is (only a length difference
    /// answers early, which reveals the length at most).
    fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl FromStr for ApiToken {
    type Err = InvalidToken;
    fn from_str(token: &str) -> Result<Self, InvalidToken> {
        ApiToken::new(token)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read every route.
    Read,
    /// Read and write every route.
    Write,
}

/// The tokens a peer's API takes. With neither, every route is open.
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    /// Reads and writes.
    pub write: Option<ApiToken>,
    /// Reads only. Configured only together with [`ApiAccess::write`]
    /// (the options refuse a read token alone: nobody could write).
    pub read: Option<ApiToken>,
}

impl ApiAccess {
    /// Whether every route is open (no token configured).
    pub fn is_open(&self) -> bool {
        self.write.is_none() && self.read.is_none()
    }

    /// The scope the `Authorization: Bearer` header of `headers` grants,
    /// if it carries a configured token. Both tokens are compared whatever
    /// the first one gives, so the time taken does not tell which matched.
    fn scope_of(&self, headers: &HeaderMap) -> Option<Scope> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
            .map(|(_, token)| token.trim_start())?;
        let writes = self.write.as_ref().is_some_and(|t| t.matches(presented));
        let reads = self.read.as_ref().is_some_and(|t| t.matches(presented));
        if writes {
            Some(Scope::Write)
        } else if reads {
            Some(Scope::Read)
        } else {
            None
        }
    }
}

/// Routes that answer without a token: liveness and readiness, and the dashboard's page,
/// script and style sheet (static files holding nothing of the peer's; the
/// page asks for a token and sends it with every request it makes).
pub const PUBLIC_PATHS: &[&str] = &[
    "/health",
    "/ready",
    "/",
    "/ui",
    "/ui/style.css",
    "/ui/app.js",
];

/// The scope a request needs: reads need [`Scope::Read`], anything else
/// [`Scope::Write`].
pub fn scope_needed(method: &Method) -> Scope {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Scope::Read
    } else {
        Scope::Write
    }
}

/// Who a request was served as, for the audit line: what the token
/// granted, `open` on an API without tokens, `none` where no token was
/// given or a wrong one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No token configured: every request is served.
    Open,
    /// No valid token.
    Nothing,
    /// A configured token of this scope.
    Token(Scope),
}

impl Presented {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Presented::Open => "open",
            Presented::Nothing => "none",
            Presented::Token(Scope::Read) => "read",
            Presented::Token(Scope::Write) => "write",
        }
    }
}

/// Middleware: answers 401 (with `WWW-Authenticate: Bearer`) without a
/// valid token and 403 for a read token on a write, before the body is
/// read; public routes and an open API pass. The answer carries what was
/// presented ([`Presented`]) for the audit line.
pub(crate) async fn require_scope(
    State((access, refusals)): State<(Arc<ApiAccess>, Refusals)>,
    request: Request,
    next: Next,
) -> Response {
    let presented = if access.is_open() {
        Presented::Open
    } else {
        access
            .scope_of(request.headers())
            .map_or(Presented::Nothing, Presented::Token)
    };
    let needed = scope_needed(request.method());
    let mut response = match presented {
        Presented::Open => next.run(request).await,
        _ if PUBLIC_PATHS.contains(&request.uri().path()) => next.run(request).await,
        Presented::Token(granted) if granted >= needed => next.run(request).await,
        Presented::Token(_) => {
            refusals.count(Refusal::ReadTokenOnWrite);
            ApiError::ReadScopeOnly.into_response()
        }
        Presented::Nothing => {
            refusals.count(Refusal::NoToken);
            ApiError::Unauthorized.into_response()
        }
    };
    response.extensions_mut().insert(presented);
    response
}

/// Middleware: one log line per write (any method but `GET`, `HEAD` and
/// `OPTIONS`) once it is answered, refused ones included: method, path,
/// what token it came with, the client's address and the status — so
/// that who changed what can be traced after the fact. Never the token,
/// the body or the query.
pub(crate) async fn audit(request: Request, next: Next) -> Response {
    if scope_needed(request.method()) == Scope::Read {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    let response = next.run(request).await;
    let presented = response
        .extensions()
        .get::<Presented>()
        .map_or("none", |presented| presented.label());
    tracing::info!(
        target: "aqueduct::audit",
        %method,
        path = %path.chars().take(256).collect::<String>(),
        token = %presented,
        client = %client.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        "API write"
    );
    response
}
