//! The one typed client of a peer's REST API, for `ctl`, `register`,
//! `bench` and `demo` (and the tests, through the library): a base URL, an
//! optional token sent with every request, JSON in and out, and the API's
//! error answers turned into [`ClientError::Api`].
//!
//! Owns the HTTP details of talking to a peer (URL building with escaped
//! path segments, the bearer token, timeouts, error mapping) and where a
//! command-line client takes its token from (`--token`, `--token-file`,
//! `AQUEDUCT_API_TOKEN`, `AQUEDUCT_API_TOKEN_FILE`) and which CA it trusts
//! for an HTTPS API (`--ca`). Must not know what a
//! route means: its callers do.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::api::ApiToken;

/// How long an unused connection stays pooled.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a command-line client reaches a peer's API: its token and, for an
/// HTTPS API, the CA that signed the API's certificate. A token given in a
/// file never shows in `ps`; `--token` does, so prefer the file or the
/// environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// The API token (`Authorization: Bearer`): the write token for
    /// writes, the read or write token for reads.
    #[arg(long, env = "AQUEDUCT_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the API token (its first line).
    #[arg(long, env = "AQUEDUCT_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) an `https://` API's certificate must be
    /// signed by (the only one trusted: the system's CAs are not).
    #[arg(long, env = "AQUEDUCT_API_CA")]
    pub ca: Option<PathBuf>,
}

/// What a client presents and trusts.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Sent with every request.
    pub token: Option<ApiToken>,
    /// Trusted for `https://` APIs (`None`: plain HTTP only).
    pub tls: Option<rustls::ClientConfig>,
}

impl ClientArgs {
    /// The token and trust, if given; an unreadable file, an invalid token
    /// or CA is an error, and so is a token given both ways.
    pub fn resolve(self) -> Result<Credentials, ClientError> {
        let token = crate::config::token_from("token", self.token, self.token_file)
            .map_err(|e| ClientError::Input(e.to_string()))?;
        let tls = self
            .ca
            .map(|ca| {
                crate::api::server::client_tls_config(&ca)
                    .map_err(|e| ClientError::Input(format!("--ca: {e}")))
            })
            .transpose()?;
        Ok(Credentials { token, tls })
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The peer could not be reached (or its answer could not be read).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The peer answered with an error.
    #[error("{status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error (and details).
        message: String,
    },
    /// Something wrong on this side (a bad base URL or path, a token).
    #[error("{0}")]
    Input(String),
}

impl ClientError {
    /// Whether the peer refused the request for want of a token or scope
    /// (401 or 403): asking again, or another peer, will not help.
    pub fn is_access_refused(&self) -> bool {
        matches!(
            self,
            ClientError::Api {
                status: 401 | 403,
                ..
            }
        )
    }
}

/// A client of one peer's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: reqwest::Url,
    token: Option<ApiToken>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (`http://127.0.0.1:10000`), sending
    /// the token of `credentials` with every request and trusting its CA;
    /// each request may take `timeout`.
    pub fn new(
        base: &str,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let base = reqwest::Url::parse(base.trim_end_matches('/'))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| ClientError::Input(format!("{base:?} is not an http(s) URL")))?;
        let builder = match &credentials.tls {
            Some(tls) => reqwest::Client::builder().tls_backend_preconfigured(tls.clone()),
            None => http_builder(),
        };
        let http = builder
            .timeout(timeout)
            // Below the API's header timeout (10 s at most), which closes a
            // kept-alive connection that carries no new request: a pooled
            // connection older than that may be closed under a request.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Input(e.to_string()))?;
        Ok(ApiClient {
            base,
            token: credentials.token.clone(),
            http,
        })
    }

    /// The base URL, as given.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of the path made of `segments`, each percent-encoded (a key
    /// with `/` or `?` stays one segment). `.` and `..` are refused: a URL
    /// drops them, so a key like that would address something else.
    pub fn url(&self, segments: &[&str]) -> Result<reqwest::Url, ClientError> {
        if let Some(dots) = segments.iter().find(|s| matches!(**s, "." | "..")) {
            return Err(ClientError::Input(format!("{dots:?} is not a key")));
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::Input(format!("{} cannot be a base", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// `GET` of a JSON answer.
    pub async fn get(&self, segments: &[&str]) -> Result<Value, ClientError> {
        self.send(reqwest::Method::GET, segments, None).await
    }

    /// Any request with an optional JSON body; the answer's JSON (`null`
    /// when it has none).
    pub async fn send(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let response = self.answer(method, segments, body).await?;
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    /// The successful response to a request, or the API's error.
    async fn answer(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(segments)?;
        exchange(&self.http, method, url.as_str(), self.token.as_ref(), body).await
    }
}

/// A reqwest client builder for plain HTTP: reqwest is built with rustls
/// but no crypto provider of its own (its own would be aws-lc; ours is
/// ring), so every client is handed a TLS configuration, here one that
/// trusts nothing (an `https://` URL fails). Every client of this crate
/// and its tests starts here or from [`ClientArgs::resolve`]'s trust.
pub fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(tls_trusting_nothing())
}

/// A TLS configuration that trusts no certificate (for clients of plain
/// HTTP APIs: see [`http_builder`]).
pub fn tls_trusting_nothing() -> rustls::ClientConfig {
    crate::api::server::client_tls_trusting(rustls::RootCertStore::empty())
}

/// Sends one request to `url` (with `token` and a JSON `body`, if any) and
/// returns the successful response, or the API's error answer as
/// [`ClientError::Api`]. [`ApiClient`] sends through this; so do the
/// benchmarks and the demo, which address many peers by URL with one
/// connection pool.
pub async fn exchange(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&ApiToken>,
    body: Option<&Value>,
) -> Result<reqwest::Response, ClientError> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token.expose());
    }
    let response = request.send().await.map_err(|e| ClientError::Unreachable {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let value: Value = response.json().await.unwrap_or(Value::Null);
    let message = match (&value["error"], &value["details"]) {
        (Value::String(error), Value::Null) => error.clone(),
        (Value::String(error), details) if details.as_object().is_some_and(|d| d.is_empty()) => {
            error.clone()
        }
        (Value::String(error), details) => format!("{error} {details}"),
        _ => status.to_string(),
    };
    Err(ClientError::Api {
        status: status.as_u16(),
        message,
    })
}
