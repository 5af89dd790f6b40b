//! Request extractors whose failures are [`ApiError`]s (JSON, naming the
//! field), never axum's plain-text rejections.
//!
//! Owns reading a bounded body, checking that it is one JSON object with
//! no key given twice, and decoding it with the JSON path of the first
//! error. Must not validate beyond that and what the DTO types say.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::error::Category;
use serde_path_to_error::Segment;

use super::AppState;
use super::error::{ApiError, WHOLE_BODY};

/// A JSON body decoded into `T`. An empty body counts as `{}`.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        // Within the deadline (`ApiOptions::body_deadline`).
        let bytes = tokio::time::timeout(state.body_deadline, Bytes::from_request(request, state))
            .await
            .map_err(|_| ApiError::BodyTooSlow {
                limit: state.body_deadline,
            })?
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
///
/// The body is read twice: first as untyped JSON ([`StrictJson`]), which
/// refuses a body that is not an object and an object with a key given
/// twice, at any depth (derived structs refuse a repeated field, but the
/// maps of `meta` would keep the last value silently); then as `T`.
fn decode<T: DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    decode_as::<StrictJson>(text)?;
    decode_as(text)
}

fn decode_as<T: DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let inner = error.inner();
        let message = inner.to_string();
        // serde_json appends the position to every message; the field path
        // says more to an API user, except for text that is not JSON.
        let suffix = format!(" at line {} column {}", inner.line(), inner.column());
        let reason = message.strip_suffix(&suffix).unwrap_or(&message);
        let field = field_path(error.path(), reason);
        if reason == "recursion limit exceeded" {
            // serde_json stops at 128 levels; the path down there is noise.
            let outermost = field.split(['.', '[']).next().unwrap_or(WHOLE_BODY);
            return ApiError::invalid(outermost, "nested more than 128 levels deep");
        }
        match inner.classify() {
            Category::Syntax | Category::Eof => {
                // `'bind'` fails on a key not yet known: the path says `?`.
                let field = if field.contains('?') {
                    WHOLE_BODY
                } else {
                    &field
                };
                ApiError::invalid(field, format!("not valid JSON: {message}"))
            }
            Category::Data | Category::Io => ApiError::invalid(field, reason),
        }
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::invalid(WHOLE_BODY, format!("not valid JSON: {error}")))?;
    Ok(value)
}

/// A body as untyped JSON: an object at the top, no key twice in any
/// object. Holds nothing; it only checks.
struct StrictJson;

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeys { top: true })
    }
}

/// Any JSON value with no key twice in one object (the top one must be an
/// object).
struct UniqueKeys {
    top: bool,
}

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = StrictJson;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<StrictJson, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = StrictJson;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.top {
            "a JSON object"
        } else {
            "a JSON value"
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictJson, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value_seed(UniqueKeys { top: false })?;
            seen.insert(key);
        }
        Ok(StrictJson)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictJson, A::Error> {
        if self.top {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        while seq.next_element_seed(UniqueKeys { top: false })?.is_some() {}
        Ok(StrictJson)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<StrictJson, E> {
        self.scalar(de::Unexpected::Bool(value))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<StrictJson, E> {
        self.scalar(de::Unexpected::Signed(value))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<StrictJson, E> {
        self.scalar(de::Unexpected::Unsigned(value))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<StrictJson, E> {
        self.scalar(de::Unexpected::Float(value))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<StrictJson, E> {
        self.scalar(de::Unexpected::Str(value))
    }
    fn visit_unit<E: de::Error>(self) -> Result<StrictJson, E> {
        self.scalar(de::Unexpected::Unit)
    }
}

impl UniqueKeys {
    /// A scalar is fine anywhere but at the top.
    fn scalar<E: de::Error>(self, what: de::Unexpected<'_>) -> Result<StrictJson, E> {
        if self.top {
            Err(E::invalid_type(what, &self))
        } else {
            Ok(StrictJson)
        }
    }
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
