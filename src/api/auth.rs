//! Write access control: a bearer token that every write must present.
//!
//! Owns the token's rules and its constant-time check. Must not let the
//! secret reach a log, a `Debug` output or an error message.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The secret that writes must present as `Authorization: Bearer <token>`.
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

    /// Whether `headers` carry `Authorization: Bearer <this token>`. The
    /// comparison takes the same time wherever the first difference is
    /// (only a length difference answers early, which reveals the length
    /// at most).
    fn is_presented_in(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, presented)) = value.split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("Bearer")
            && bool::from(self.0.as_bytes().ct_eq(presented.trim_start().as_bytes()))
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

/// Middleware: reads pass; anything else needs the token (answered 401
/// with `WWW-Authenticate: Bearer` before the body is read).
pub(crate) async fn require_token_for_writes(
    State(token): State<Arc<ApiToken>>,
    request: Request,
    next: Next,
) -> Response {
    let is_read = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if is_read || token.is_presented_in(request.headers()) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}
