//! Cross-site request guards, applied to every request before any handler:
//! the `Host` must name this API (DNS rebinding: a page on `evil.example`
//! whose name is made to point at 127.0.0.1 reaches a loopback API with
//! `Host: evil.example`), an `Origin` must be the API's own or one the
//! operator allowed (a page on another site that a browser of an operator
//! visits), and a write's body must be declared JSON (a cross-site form or
//! `text/plain` body, which a browser sends without asking first).
//!
//! Owns those three rules. Must not look at tokens (`auth` does) or at the
//! body itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{Scope, scope_needed};
use super::error::ApiError;
use super::refusals::{Refusal, Refusals};

/// What the guards accept besides the API's own address.
#[derive(Debug, Clone, Default)]
pub struct SiteRules {
    /// The API's listening address: a `Host` naming its IP (any IP when it
    /// listens on every address; any loopback IP or `localhost` when it
    /// listens on loopback) is the API's own.
    pub listen: Option<SocketAddr>,
    /// Further host names (lower case, no port) a `Host` may carry, for a
    /// peer reached by DNS name or through a proxy.
    pub allowed_hosts: Vec<String>,
    /// Further origins (`scheme://host[:port]`, lower case) a request may
    /// come from, e.g. a dashboard served elsewhere.
    pub allowed_origins: Vec<String>,
}

impl SiteRules {
    /// Whether `authority` (a `Host` value: `name`, `name:port`,
    /// `[v6]:port`) names this API. The port is not compared: a rebinding
    /// page uses the API's port already, and a proxy may change it.
    fn is_own_host(&self, authority: &str) -> bool {
        let host = host_of(authority);
        if self.allowed_hosts.contains(&host) {
            return true;
        }
        let listen = match self.listen {
            Some(listen) => listen.ip(),
            // No address known (a router built for tests): any IP literal
            // or localhost, never a DNS name.
            None => return host.parse::<IpAddr>().is_ok() || host == "localhost",
        };
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                ip == listen
                    || listen.is_unspecified()
                    || (listen.is_loopback() && ip.is_loopback())
            }
            Err(_) => host == "localhost" && (listen.is_loopback() || listen.is_unspecified()),
        }
    }

    /// Whether `origin` may send requests here: the origin of the page the
    /// API itself serves (same host and port as the request's `Host`), or
    /// one the operator allowed.
    fn is_allowed_origin(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.allowed_origins.contains(&origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
    }
}

/// The host part of a `Host` value, lower case, without port or brackets
/// (what follows `]` must be nothing or a port: `[::1]evil.example` is
/// no host of ours).
fn host_of(authority: &str) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, "")) => host.to_owned(),
            Some((host, after))
                if after
                    .strip_prefix(':')
                    .is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit())) =>
            {
                host.to_owned()
            }
            _ => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_owned(),
        _ => authority,
    }
}

/// The request's `Host`: the URI's authority (HTTP/2) or the header.
fn request_host(request: &Request) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.as_str().to_owned());
    }
    request
        .headers()
        .get(header::HOST)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// Whether a write's declared body type is JSON: `application/json` with
/// any parameters. No `Content-Type` is accepted only with no body.
fn declares_json(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => value.to_str().is_ok_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
        }),
        None => !has_body(headers),
    }
}

/// Whether the request says it carries a body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|length| length.trim() != "0")
}

/// Middleware: refuses a foreign `Host` or `Origin` (403) and a write
/// whose body is not declared JSON (415), counting each.
pub(crate) async fn same_site(
    State((rules, refusals)): State<(Arc<SiteRules>, Refusals)>,
    request: Request,
    next: Next,
) -> Response {
    let host = request_host(&request);
    if let Some(host) = &host
        && !rules.is_own_host(host)
    {
        refusals.count(Refusal::ForeignHost);
        return ApiError::ForeignHost.into_response();
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| rules.is_allowed_origin(origin, host.as_deref()));
        if !allowed {
            refusals.count(Refusal::ForeignOrigin);
            return ApiError::ForeignOrigin.into_response();
        }
    }
    let is_write = scope_needed(request.method()) == Scope::Write;
    if is_write && !declares_json(request.headers()) {
        refusals.count(Refusal::NotJson);
        return ApiError::NotJson.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_rules() -> SiteRules {
        SiteRules {
            listen: Some("127.0.0.1:10000".parse().unwrap()),
            allowed_hosts: vec!["lb-1.internal".to_owned()],
            allowed_origins: vec!["https://ops.example".to_owned()],
        }
    }

    #[test]
    fn a_loopback_api_is_its_loopback_addresses_localhost_and_the_allowed_names() {
        let rules = loopback_rules();
        for own in [
            "127.0.0.1:10000",
            "127.0.0.2",
            "localhost:10000",
            "[::1]:10000",
            "LB-1.internal:1",
        ] {
            assert!(rules.is_own_host(own), "{own}");
        }
        for foreign in [
            "evil.example",
            "evil.example:10000",
            "10.0.0.1:10000",
            "localhost.evil.example",
            "",
            "[::1]evil.example",
            "[::1]:80evil",
        ] {
            assert!(!rules.is_own_host(foreign), "{foreign}");
        }
    }

    #[test]
    fn an_api_on_one_address_is_only_that_address() {
        let rules = SiteRules {
            listen: Some("10.0.0.5:10000".parse().unwrap()),
            ..SiteRules::default()
        };
        assert!(rules.is_own_host("10.0.0.5:10000"));
        assert!(!rules.is_own_host("127.0.0.1:10000"));
        assert!(!rules.is_own_host("localhost:10000"));
    }

    #[test]
    fn an_api_on_every_address_is_any_ip_but_no_unlisted_name() {
        let rules = SiteRules {
            listen: Some("0.0.0.0:10000".parse().unwrap()),
            ..SiteRules::default()
        };
        assert!(rules.is_own_host("192.0.2.7:10000"));
        assert!(!rules.is_own_host("rebound.evil.example:10000"));
    }

    #[test]
    fn the_own_origin_is_the_host_the_request_names() {
        let rules = loopback_rules();
        let host = Some("127.0.0.1:10000");
        assert!(rules.is_allowed_origin("http://127.0.0.1:10000", host));
        assert!(rules.is_allowed_origin("https://127.0.0.1:10000/", host));
        assert!(rules.is_allowed_origin("https://OPS.example", host));
        assert!(!rules.is_allowed_origin("http://127.0.0.1:10001", host));
        assert!(!rules.is_allowed_origin("http://evil.example", host));
        assert!(!rules.is_allowed_origin("null", host));
        assert!(!rules.is_allowed_origin("http://127.0.0.1:10000", None));
    }

    #[test]
    fn a_write_body_must_be_declared_json() {
        let with = |pairs: &[(header::HeaderName, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(name.clone(), value.parse().unwrap());
            }
            declares_json(&headers)
        };
        assert!(with(&[(header::CONTENT_TYPE, "application/json")]));
        assert!(with(&[(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8"
        )]));
        assert!(with(&[(header::CONTENT_LENGTH, "0")]));
        assert!(with(&[]));
        assert!(!with(&[(header::CONTENT_TYPE, "text/plain")]));
        assert!(!with(&[(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded"
        )]));
        assert!(!with(&[(header::CONTENT_TYPE, "application/jsonp")]));
        assert!(!with(&[(header::CONTENT_LENGTH, "2")]));
        assert!(!with(&[(header::TRANSFER_ENCODING, "chunked")]));
    }
}
