//! Request extractors whose failures are [`ApiError`]s (JSON, naming the
//! field), never axum's plain-text rejections.
//!
//! Owns reading a bounded body and decoding it with the JSON path of the
//! first error. Must not validate beyond what the DTO types say.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::AppState;
use super::error::{ApiError, WHOLE_BODY};

/// A JSON body decoded into `T`. An empty body counts as `{}`.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge {
                        limit: state.body_limit_bytes,
                    }
                } else {
                    ApiError::invalid(WHOLE_BODY, rejection.body_text())
                }
            })?;
        decode_body(&bytes).map(JsonBody)
    }
}

/// Decodes a request body; an empty (or all-blank) body counts as `{}`.
pub(crate) fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text: &[u8] = if bytes.trim_ascii().is_empty() {
        b"{}"
    } else {
        bytes
    };
    decode(text)
}

/// Decodes `text`, naming the first offending field by its JSON path.
fn decode<T: DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let inner = error.inner();
        let message = inner.to_string();
        // serde_json appends the position to every message; the field path
        // says more to an API user.
        let suffix = format!(" at line {} column {}", inner.line(), inner.column());
        let reason = message.strip_suffix(&suffix).unwrap_or(&message);
        ApiError::invalid(field_path(error.path(), reason), reason)
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::invalid(WHOLE_BODY, error))?;
    Ok(value)
}

/// `rules[0].operation` style path. A missing field is reported by serde at
/// its parent object, with the name only in the message, so it is added.
fn field_path(path: &serde_path_to_error::Path, reason: &str) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => out.push('?'),
        }
    }
    let missing = reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    if let Some(name) = missing {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(name);
    }
    if out.is_empty() {
        WHOLE_BODY.to_owned()
    } else {
        out
    }
}

/// Path parameters decoded into `T`.
pub(crate) struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(params)| PathParams(params))
            .map_err(|rejection| ApiError::invalid("path", rejection.body_text()))
    }
}
