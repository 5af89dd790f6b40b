//! Every failure the API answers, as one JSON shape:
//! `{"error": "<message>", "details": {...}}` with a 4xx/5xx status.
//!
//! Owns the mapping from peer and replica errors to HTTP statuses. Must not
//! put internals (stack traces, debug output) in an answer.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::quota::OverQuota;
use crate::crdt::CommandError;
use crate::crdt::model::{Name, ServiceName, Version};
use crate::gossip::RevocationError;
use crate::haproxy::driver::{HAPROXY_REFUSED, WriteCheckError};
use crate::peer::{PeerGone, WriteError};

/// The `field` of an error about the body as a whole (malformed JSON, not
/// an object): the root of a JSON path.
pub(crate) const WHOLE_BODY: &str = ".";

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A field of the body or the path is malformed or refused by the model.
    #[error("{}: {reason}", if field == WHOLE_BODY { "request body" } else { field })]
    Invalid {
        /// The JSON path (`rules[0].operation`), [`WHOLE_BODY`], or the
        /// name of a path parameter.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object does not exist (`"frontend web"`).
    #[error("{0} not found")]
    NotFound(String),
    /// DELETE of a backend that frontends still route to.
    #[error("backend {backend} is used by frontends {}", join(frontends))]
    BackendInUse {
        /// The backend.
        backend: Name,
        /// The frontends using it, by default or in a rule.
        frontends: Vec<Name>,
    },
    /// The A/B switch to a version nobody serves.
    #[error(
        "no live registration of {service}@{version}; switching would empty the backend \
         (send \"force\": true to switch anyway)"
    )]
    NoLiveInstances {
        /// The service followed.
        service: ServiceName,
        /// The version asked for.
        version: Version,
    },
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {} s", limit.as_secs())]
    BodyTooSlow {
        /// The deadline.
        limit: std::time::Duration,
    },
    /// The body is larger than the limit.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A request without a configured bearer token, on a route that
    /// needs one.
    #[error("this route needs a valid bearer token (Authorization: Bearer <token>)")]
    Unauthorized,
    /// A write with the read token.
    #[error("the read token cannot write; writes need the write token")]
    ReadScopeOnly,
    /// A `Host` that names none of the API's addresses or allowed names.
    #[error(
        "the Host header names none of this API's addresses or allowed names \
         (--api-allowed-hosts)"
    )]
    ForeignHost,
    /// An `Origin` other than the API's own or an allowed one.
    #[error(
        "requests from another site are refused: the Origin is not this API's own \
         (--api-allowed-origins)"
    )]
    ForeignOrigin,
    /// A write whose body is not declared `application/json`.
    #[error("a write's body must be sent as Content-Type: application/json")]
    NotJson,
    /// The API already works on as many requests as it may.
    #[error("too many requests in progress; retry shortly")]
    Busy {
        /// The limit.
        limit: usize,
    },
    /// As many event streams are open as may be.
    #[error("too many event streams open; retry later")]
    TooManyStreams {
        /// The limit.
        limit: usize,
    },
    /// No route has this path.
    #[error("no such route")]
    NoRoute,
    /// The route exists, not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The peer's store failed; the write may not be durable.
    #[error("the write was not acknowledged: the store failed")]
    Store(String),
    /// The peer task has stopped.
    #[error(transparent)]
    PeerGone(#[from] PeerGone),
    /// Nothing has rendered an HAProxy configuration.
    #[error("no HAProxy configuration has been rendered by this peer")]
    NotRendered,
    /// HAProxy refused the configuration the write would produce: the
    /// answer names the writer's own lines it pointed to, never HAProxy's
    /// words (which quote whatever HAProxy read: a file it was pointed at).
    #[error("{}", refused_message(lines))]
    HaproxyRejected {
        /// The section written (`backend web`).
        section: String,
        /// Its lines HAProxy pointed to, as rendered.
        lines: Vec<String>,
    },
    /// HAProxy could not be run to check the write.
    #[error("{0}")]
    CheckFailed(WriteCheckError),
    /// A write beyond a quota (nothing was written).
    #[error(transparent)]
    OverQuota(#[from] OverQuota),
}

/// Longest `field` in an answer, in characters.
const FIELD_CHARS_MAX: usize = 128;
/// Longest `reason` in an answer, in characters.
const REASON_CHARS_MAX: usize = 512;

/// `text` cut to `max` characters, marked with `…` when cut.
fn cut(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// The fixed sentence of a write HAProxy refused, with the lines it
/// pointed to.
fn refused_message(lines: &[String]) -> String {
    if lines.is_empty() {
        HAPROXY_REFUSED.to_owned()
    } else {
        let quoted: Vec<String> = lines.iter().map(|line| format!("{line:?}")).collect();
        format!("{HAPROXY_REFUSED} (it points to {})", quoted.join(", "))
    }
}

fn join(names: &[Name]) -> String {
    names
        .iter()
        .map(Name::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ApiError {
    /// An invalid field with the model's (or serde's) reason.
    ///
    /// Both are cut to a few hundred characters: serde's messages quote the
    /// offending input (`unknown variant `...``, an unknown field's name),
    /// and a megabyte of it is no clearer than its start.
    pub(crate) fn invalid(field: impl Into<String>, reason: impl ToString) -> Self {
        ApiError::Invalid {
            field: cut(field.into(), FIELD_CHARS_MAX),
            reason: cut(reason.to_string(), REASON_CHARS_MAX),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::HaproxyRejected { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::BackendInUse { .. } | ApiError::NoLiveInstances { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::OverQuota(over) => over.status(),
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ReadScopeOnly | ApiError::ForeignHost | ApiError::ForeignOrigin => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Store(_)
            | ApiError::PeerGone(_)
            | ApiError::NotRendered
            | ApiError::CheckFailed(_)
            | ApiError::Busy { .. }
            | ApiError::TooManyStreams { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::Invalid { field, reason } => json!({ "field": field, "reason": reason }),
            ApiError::BackendInUse { backend, frontends } => {
                json!({ "backend": backend, "frontends": frontends })
            }
            ApiError::NoLiveInstances { service, version } => {
                json!({ "name": service, "version": version })
            }
            ApiError::TooLarge { limit } => json!({ "limitBytes": limit }),
            ApiError::BodyTooSlow { limit } => json!({ "limitSeconds": limit.as_secs() }),
            ApiError::OverQuota(over) => over.details(),
            ApiError::Busy { limit } => json!({ "limitRequests": limit }),
            ApiError::TooManyStreams { limit } => json!({ "limitStreams": limit }),
            ApiError::Store(reason) => json!({ "reason": reason }),
            ApiError::HaproxyRejected { section, lines } => {
                json!({ "section": section, "lines": lines })
            }
            ApiError::CheckFailed(_) => json!({}),
            ApiError::NotRendered => json!({
                "reason": "nothing rendered yet, or this peer runs without the HAProxy driver"
            }),
            ApiError::NotFound(_)
            | ApiError::Unauthorized
            | ApiError::ReadScopeOnly
            | ApiError::ForeignHost
            | ApiError::ForeignOrigin
            | ApiError::NotJson
            | ApiError::NoRoute
            | ApiError::MethodNotAllowed
            | ApiError::PeerGone(_) => json!({}),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::NotFound(what) => ApiError::NotFound(what),
            // The path names the backend, so the path key is the field.
            CommandError::NotDynamic(_) => ApiError::invalid("key", error),
            // The API never sends renewals; the peer batches its own.
            CommandError::TooMany(_) => ApiError::invalid(WHOLE_BODY, error),
        }
    }
}

impl From<WriteCheckError> for ApiError {
    fn from(error: WriteCheckError) -> Self {
        match error {
            WriteCheckError::Refused { section, lines } => {
                ApiError::HaproxyRejected { section, lines }
            }
            unavailable @ WriteCheckError::Unavailable => ApiError::CheckFailed(unavailable),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Refused(refused) => refused.into(),
            WriteError::Revocation(refused) => {
                let field = match refused {
                    RevocationError::NotGenuine => "signature",
                    RevocationError::Malformed | RevocationError::Full => WHOLE_BODY,
                };
                ApiError::invalid(field, refused)
            }
            WriteError::Store(reason) => ApiError::Store(reason),
            WriteError::ShuttingDown(gone) => gone.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.to_string(), "details": self.details() }));
        let mut response = (self.status(), body).into_response();
        match self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            ApiError::Busy { .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The answer for a path no route has.
pub(crate) async fn no_route() -> ApiError {
    ApiError::NoRoute
}

/// The answer for a known path with the wrong method (axum adds `Allow`).
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
