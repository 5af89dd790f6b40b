//! Specifies the REST API: the Thalassa-compatible surface of API.md, the
//! mesh additions, validation, access control and error answers.
//!
//! The router is driven in-process (`tower::ServiceExt::oneshot`). Behind
//! its [`Handle`] runs a small fake peer task that owns a real
//! [`Replica`]: it executes writes (or fails them like a broken store),
//! hands out views, and reports a fixed, plausible [`Status`].

use aqueduct::activity::{ActivityKind, ActivityLog};
use aqueduct::api::{
    ApiAccess, ApiOptions, ApiToken, EVENT_STREAMS_MAX, InvalidToken, PUBLIC_PATHS, Quotas, Scope,
    SiteRules, router, scope_needed,
};
use aqueduct::crdt::model::{
    Host, Lease, Meta, Port, Registration, RegistrationKey, ServiceName, Version,
};
use aqueduct::crdt::{Command, Replica, ReplicaId};
use aqueduct::peer::Handle;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;

mod support;
use support::memory::{
    API_CERTIFICATE_NOT_AFTER, OWN_CERTIFICATE_NOT_AFTER, PEER_B_CERTIFICATE_NOT_AFTER, Store,
    spawn_peer, wall_clock_ms,
};

// ---------------------------------------------------------------------------
// Harness

const TOKEN: &str = "s3cret-token";

/// How the fake peer answers writes.
fn replica() -> Replica {
    Replica::new(ReplicaId::new(0x1234).expect("non-zero id"))
}

/// One answer of the API.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.text))
    }

    /// Asserts a 400 naming `field`, in the shape of every error answer.
    fn assert_invalid(&self, field: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{}", self.text);
        let body = self.json();
        assert_eq!(body["details"]["field"], field, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        assert!(
            body["details"]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{body}"
        );
    }

    /// Asserts an error answer with `status` and a non-empty message.
    fn assert_error(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        assert!(body["details"].is_object(), "{body}");
        body
    }
}

/// The router under test.
struct Api {
    router: Router,
}

impl Api {
    fn new() -> Api {
        Api::with(replica(), Store::Works, ApiOptions::default())
    }

    fn with_token() -> Api {
        let options = ApiOptions {
            access: ApiAccess {
                write: Some(ApiToken::new(TOKEN).expect("valid token")),
                read: None,
            },
            ..ApiOptions::default()
        };
        Api::with(replica(), Store::Works, options)
    }

    fn with(replica: Replica, store: Store, options: ApiOptions) -> Api {
        Api {
            router: router(spawn_peer(replica, store), options),
        }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("answer body");
        Answer {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).expect("UTF-8 answer"),
        }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(request.body(body).expect("request")).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, None).await
    }

    async fn put(&self, uri: &str, body: Value) -> Answer {
        self.call(Method::PUT, uri, Some(body)).await
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.call(Method::POST, uri, Some(body)).await
    }

    async fn delete(&self, uri: &str) -> Answer {
        self.call(Method::DELETE, uri, None).await
    }

    /// A write that must succeed (set-up).
    async fn ok(&self, method: Method, uri: &str, body: Value) -> Value {
        let answer = self.call(method.clone(), uri, Some(body)).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{method} {uri}: {}",
            answer.text
        );
        answer.json()
    }

    async fn static_backend(&self, key: &str) {
        self.ok(
            Method::PUT,
            &format!("/backends/{key}"),
            json!({"type": "static"}),
        )
        .await;
    }

    async fn dynamic_backend(&self, key: &str, version: &str) {
        let body = json!({"type": "dynamic", "name": "myapp", "version": version});
        self.ok(Method::PUT, &format!("/backends/{key}"), body)
            .await;
    }

    async fn heartbeat(&self, version: &str, host: &str) -> Value {
        let uri = format!("/registrations/myapp/{version}/{host}/8080");
        self.ok(Method::POST, &uri, json!({"secondsToExpire": 60}))
            .await
    }
}

/// A `web` frontend body routing to `backend`.
fn frontend_to(backend: &str) -> Value {
    json!({"bind": "*:80", "backend": backend})
}

// ---------------------------------------------------------------------------
// Frontends

#[tokio::test]
async fn a_frontend_is_stored_with_the_defaults_of_the_original() {
    let api = Api::new();
    api.static_backend("live").await;
    let put = api.put("/frontends/web", frontend_to("live")).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let expected = json!({
        "key": "web", "bind": "*:80", "backend": "live", "mode": "http",
        "keepalive": "default", "rules": [], "natives": []
    });
    assert_eq!(put.json(), expected);
    assert_eq!(api.get("/frontends/web").await.json(), expected);
}

#[tokio::test]
async fn frontends_are_listed_sorted_by_key() {
    let api = Api::new();
    api.static_backend("live").await;
    for (key, port) in [("zeta", 80), ("alpha", 81), ("mid", 82)] {
        api.ok(
            Method::PUT,
            &format!("/frontends/{key}"),
            json!({"bind": format!("*:{port}"), "backend": "live"}),
        )
        .await;
    }
    let list = api.get("/frontends").await.json();
    let keys: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|f| f["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["alpha", "mid", "zeta"]);
}

#[tokio::test]
async fn the_readme_frontend_of_the_original_round_trips() {
    let api = Api::new();
    api.static_backend("live").await;
    api.static_backend("staged").await;
    let frontend = json!({
        "key": "myapp",
        "bind": "*:8080,*:80",
        "backend": "live",
        "mode": "http",
        "keepalive": "server-close",
        "rules": [{
            "type": "header", "header": "host", "operation": "hdr_dom",
            "value": "staged.myapp.com", "backend": "staged"
        }, {
            "type": "path", "operation": "path_beg", "value": "/api", "backend": "staged"
        }],
        "natives": ["option forwardfor"]
    });
    api.ok(Method::PUT, "/frontends/myapp", frontend.clone())
        .await;
    assert_eq!(api.get("/frontends/myapp").await.json(), frontend);
}

#[tokio::test]
async fn a_frontend_body_without_key_takes_the_path_key() {
    let api = Api::new();
    api.static_backend("live").await;
    let put = api.put("/frontends/myapp", frontend_to("live")).await;
    assert_eq!(put.json()["key"], "myapp");
}

#[tokio::test]
async fn a_deleted_frontend_is_gone() {
    let api = Api::new();
    api.static_backend("live").await;
    api.ok(Method::PUT, "/frontends/web", frontend_to("live"))
        .await;
    let deleted = api.delete("/frontends/web").await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.json(), json!({}));
    api.get("/frontends/web")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_unknown_frontend_is_404_on_read_and_delete() {
    let api = Api::new();
    api.get("/frontends/nope")
        .await
        .assert_error(StatusCode::NOT_FOUND);
    api.delete("/frontends/nope")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------
// Backends

#[tokio::test]
async fn the_readme_backend_of_the_original_gets_health_defaults() {
    let api = Api::new();
    let body = json!({
        "key": "live", "type": "dynamic", "name": "myapp", "version": "1.0.0",
        "balance": "roundrobin", "health": {"uri": "/health", "interval": 5000}
    });
    api.ok(Method::PUT, "/backends/live", body).await;
    let expected = json!({
        "key": "live", "type": "dynamic", "name": "myapp", "version": "1.0.0",
        "balance": "roundrobin", "mode": "http", "members": [], "natives": [],
        "health": {"method": "GET", "uri": "/health", "httpVersion": "HTTP/1.0", "interval": 5000}
    });
    assert_eq!(api.get("/backends/live").await.json(), expected);
}

#[tokio::test]
async fn a_static_backend_with_every_field_round_trips() {
    let api = Api::new();
    let backend = json!({
        "key": "web", "type": "static", "balance": "leastconn", "host": "example.com",
        "mode": "http",
        "members": [
            {"host": "10.0.0.5", "port": 8080, "weight": 1, "state": "ready"},
            {"host": "10.0.0.6", "port": 8080, "weight": 0, "state": "drain"}
        ],
        "natives": ["option httplog"],
        "health": {"method": "POST", "uri": "/ping", "httpVersion": "HTTP/1.1", "interval": 2000}
    });
    let put = api.put("/backends/web", backend.clone()).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.json(), backend);
    assert_eq!(api.get("/backends/web").await.json(), backend);
}

#[tokio::test]
async fn a_tcp_backend_is_shown_without_a_health_check() {
    let api = Api::new();
    api.ok(
        Method::PUT,
        "/backends/db",
        json!({"type": "static", "mode": "tcp"}),
    )
    .await;
    let backend = api.get("/backends/db").await.json();
    assert_eq!(backend["mode"], "tcp");
    assert!(backend.get("health").is_none(), "{backend}");
}

#[tokio::test]
async fn a_member_port_may_be_a_string_as_in_the_original() {
    let api = Api::new();
    let body = json!({"type": "static", "members": [{"host": "10.0.0.5", "port": "8080"}]});
    let put = api.put("/backends/web", body).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.json()["members"][0]["port"], 8080);
}

#[tokio::test]
async fn backends_are_listed_sorted_with_their_members() {
    let api = Api::new();
    let members = json!([{"host": "10.0.0.5", "port": 80}]);
    api.ok(
        Method::PUT,
        "/backends/b",
        json!({"type": "static", "members": members}),
    )
    .await;
    api.static_backend("a").await;
    let list = api.get("/backends").await.json();
    assert_eq!(list[0]["key"], "a");
    assert_eq!(list[1]["key"], "b");
    assert_eq!(list[1]["members"][0]["host"], "10.0.0.5");
}

#[tokio::test]
async fn a_backend_lists_its_members() {
    let api = Api::new();
    let members = json!([{"host": "10.0.0.5", "port": 80}, {"host": "10.0.0.6", "port": 80}]);
    api.ok(
        Method::PUT,
        "/backends/web",
        json!({"type": "static", "members": members}),
    )
    .await;
    let listed = api.get("/backends/web/members").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        listed.json(),
        json!([
            {"host": "10.0.0.5", "port": 80, "weight": 1, "state": "ready"},
            {"host": "10.0.0.6", "port": 80, "weight": 1, "state": "ready"}
        ])
    );
}

#[tokio::test]
async fn members_of_an_unknown_backend_are_404() {
    let api = Api::new();
    api.get("/backends/nope/members")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_deleted_backend_is_gone() {
    let api = Api::new();
    api.static_backend("web").await;
    let deleted = api.delete("/backends/web").await;
    assert_eq!(deleted.status, StatusCode::OK);
    api.get("/backends/web")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_an_unknown_backend_is_404() {
    Api::new()
        .delete("/backends/nope")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_a_backend_a_frontend_uses_is_409_naming_the_frontends() {
    let api = Api::new();
    api.static_backend("live").await;
    api.static_backend("staged").await;
    api.ok(Method::PUT, "/frontends/main", frontend_to("live"))
        .await;
    let with_rule = json!({
        "bind": "*:81", "backend": "live",
        "rules": [{"type": "path", "operation": "path_beg", "value": "/s", "backend": "staged"}]
    });
    api.ok(Method::PUT, "/frontends/other", with_rule).await;
    let refused = api.delete("/backends/staged").await;
    let body = refused.assert_error(StatusCode::CONFLICT);
    assert_eq!(body["details"]["frontends"], json!(["other"]));
    assert_eq!(api.get("/backends/staged").await.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Dynamic backends, registrations and the A/B switch

#[tokio::test]
async fn a_dynamic_backend_serves_the_live_registrations_of_its_version() {
    let api = Api::new();
    api.heartbeat("1.0.0", "10.0.0.1").await;
    api.heartbeat("2.0.0", "10.0.0.2").await;
    api.dynamic_backend("live", "1.0.0").await;
    let members = api.get("/backends/live/members").await.json();
    assert_eq!(members.as_array().map(Vec::len), Some(1), "{members}");
    assert_eq!(members[0]["id"], "/myapp/1.0.0/10.0.0.1/8080");
}

#[tokio::test]
async fn a_re_put_of_a_dynamic_backend_keeps_its_pool() {
    let api = Api::new();
    api.heartbeat("1.0.0", "10.0.0.1").await;
    api.dynamic_backend("live", "1.0.0").await;
    let body =
        json!({"type": "dynamic", "name": "myapp", "version": "1.0.0", "balance": "leastconn"});
    let put = api.put("/backends/live", body).await;
    assert_eq!(put.json()["members"][0]["host"], "10.0.0.1", "{}", put.text);
}

#[tokio::test]
async fn the_ab_switch_moves_a_dynamic_backend_to_a_live_version() {
    let api = Api::new();
    api.heartbeat("1.0.0", "10.0.0.1").await;
    api.heartbeat("2.0.0", "10.0.0.2").await;
    api.dynamic_backend("live", "1.0.0").await;
    let switched = api
        .post("/backends/live", json!({"version": "2.0.0"}))
        .await;
    assert_eq!(switched.status, StatusCode::OK, "{}", switched.text);
    let backend = switched.json();
    assert_eq!(backend["version"], "2.0.0");
    assert_eq!(backend["members"][0]["host"], "10.0.0.2");
    assert_eq!(api.get("/backends/live").await.json()["version"], "2.0.0");
}

#[tokio::test]
async fn the_ab_switch_to_a_version_nobody_serves_is_409() {
    let api = Api::new();
    api.heartbeat("1.0.0", "10.0.0.1").await;
    api.dynamic_backend("live", "1.0.0").await;
    let refused = api
        .post("/backends/live", json!({"version": "2.0.0"}))
        .await;
    let body = refused.assert_error(StatusCode::CONFLICT);
    assert_eq!(body["details"]["version"], "2.0.0");
    assert_eq!(api.get("/backends/live").await.json()["version"], "1.0.0");
}

#[tokio::test]
async fn the_ab_switch_with_force_needs_no_live_version() {
    let api = Api::new();
    api.dynamic_backend("live", "1.0.0").await;
    let body = json!({"version": "2.0.0", "name": "myapp", "force": true});
    let forced = api.post("/backends/live", body).await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.text);
    assert_eq!(forced.json()["version"], "2.0.0");
}

#[tokio::test]
async fn the_ab_switch_of_a_static_backend_is_400() {
    let api = Api::new();
    api.static_backend("web").await;
    let refused = api
        .post("/backends/web", json!({"version": "2.0.0", "force": true}))
        .await;
    refused.assert_invalid("key");
}

#[tokio::test]
async fn the_ab_switch_of_an_unknown_backend_is_404() {
    let api = Api::new();
    api.post("/backends/nope", json!({"version": "2.0.0", "force": true}))
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_heartbeat_registers_an_instance_in_the_original_shape() {
    let api = Api::new();
    let before = wall_clock_ms();
    let meta = json!({"secondsToExpire": 60, "hostname": "box-1", "pid": 42});
    let answer = api
        .post("/registrations/myapp/1.0.0/10.0.0.5/8080", meta.clone())
        .await;
    let after = wall_clock_ms();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let registration = answer.json();
    assert_eq!(registration["id"], "/myapp/1.0.0/10.0.0.5/8080");
    assert_eq!(registration["name"], "myapp");
    assert_eq!(registration["version"], "1.0.0");
    assert_eq!(registration["host"], "10.0.0.5");
    assert_eq!(registration["port"], 8080);
    assert_eq!(registration["meta"], meta);
    let last_known = registration["lastKnown"].as_u64().expect("lastKnown");
    assert!((before..=after).contains(&last_known), "{last_known}");
    assert_eq!(
        api.get("/registrations").await.json(),
        json!([registration])
    );
}

#[tokio::test]
async fn a_heartbeat_without_a_body_registers_with_empty_meta() {
    let api = Api::new();
    let answer = api
        .call(
            Method::POST,
            "/registrations/myapp/1.0.0/10.0.0.5/8080",
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json()["meta"], json!({}));
}

#[tokio::test]
async fn registrations_are_listed_by_name_and_version() {
    let api = Api::new();
    api.heartbeat("1.0.0", "10.0.0.1").await;
    api.heartbeat("2.0.0", "10.0.0.2").await;
    let count = |answer: Answer| answer.json().as_array().map(Vec::len);
    assert_eq!(count(api.get("/registrations/myapp").await), Some(2));
    assert_eq!(count(api.get("/registrations/myapp/2.0.0").await), Some(1));
    assert_eq!(count(api.get("/registrations/other").await), Some(0));
    assert_eq!(count(api.get("/registrations/myapp/9.9.9").await), Some(0));
}

#[tokio::test]
async fn a_deregistered_instance_is_gone() {
    let api = Api::new();
    api.heartbeat("1.0.0", "10.0.0.1").await;
    let deleted = api.delete("/registrations/myapp/1.0.0/10.0.0.1/8080").await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(api.get("/registrations").await.json(), json!([]));
}

#[tokio::test]
async fn deregistering_an_unknown_instance_is_404() {
    Api::new()
        .delete("/registrations/myapp/1.0.0/10.0.0.1/8080")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registrations_past_their_lease_are_hidden_everywhere() {
    let mut seeded = replica();
    let now = wall_clock_ms();
    let key = RegistrationKey {
        service: ServiceName::new("myapp").expect("name"),
        version: Version::new("1.0.0").expect("version"),
        host: Host::new("10.0.0.1").expect("host"),
        port: Port::new(8080).expect("port"),
    };
    let registration = Registration {
        meta: Meta::new("{}").expect("meta"),
        lease: Lease::new(now - 60_000, 10_000).expect("lease"),
    };
    seeded
        .execute(&Command::Register { key, registration }, now)
        .expect("register");
    let api = Api::with(seeded, Store::Works, ApiOptions::default());
    api.dynamic_backend("live", "1.0.0").await;
    assert_eq!(api.get("/registrations").await.json(), json!([]));
    assert_eq!(
        api.get("/registrations/myapp/1.0.0").await.json(),
        json!([])
    );
    assert_eq!(api.get("/backends/live/members").await.json(), json!([]));
}

// ---------------------------------------------------------------------------
// Members one by one (mesh addition)

#[tokio::test]
async fn a_member_can_be_put_and_deleted_alone() {
    let api = Api::new();
    api.static_backend("web").await;
    let put = api
        .put(
            "/backends/web/members/10.0.0.5/8080",
            json!({"weight": 5, "state": "drain"}),
        )
        .await;
    let member = json!({"host": "10.0.0.5", "port": 8080, "weight": 5, "state": "drain"});
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.json(), member);
    assert_eq!(
        api.get("/backends/web/members").await.json(),
        json!([member])
    );
    let deleted = api.delete("/backends/web/members/10.0.0.5/8080").await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(api.get("/backends/web/members").await.json(), json!([]));
}

#[tokio::test]
async fn a_member_put_without_a_body_takes_the_defaults() {
    let api = Api::new();
    api.static_backend("web").await;
    let put = api
        .call(Method::PUT, "/backends/web/members/10.0.0.5/8080", None)
        .await;
    assert_eq!(put.json()["weight"], 1);
    assert_eq!(put.json()["state"], "ready");
}

#[tokio::test]
async fn a_member_of_a_dynamic_backend_cannot_be_put() {
    let api = Api::new();
    api.dynamic_backend("live", "1.0.0").await;
    api.put("/backends/live/members/10.0.0.5/8080", json!({}))
        .await
        .assert_invalid("key");
}

#[tokio::test]
async fn a_member_of_an_unknown_backend_is_404() {
    let api = Api::new();
    api.put("/backends/nope/members/10.0.0.5/8080", json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND);
    api.delete("/backends/nope/members/10.0.0.5/8080")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------
// Validation: every rule has a case, each answer names the field

#[tokio::test]
async fn a_bind_with_a_newline_is_refused() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({"bind": "*:80\nbackend evil", "backend": "live"});
    api.put("/frontends/web", body).await.assert_invalid("bind");
}

#[tokio::test]
async fn port_zero_is_refused() {
    let api = Api::new();
    let body = json!({"type": "static", "members": [{"host": "10.0.0.5", "port": 0}]});
    api.put("/backends/web", body)
        .await
        .assert_invalid("members[0].port");
}

#[tokio::test]
async fn a_port_in_the_path_must_be_a_port() {
    let api = Api::new();
    api.post("/registrations/myapp/1.0.0/10.0.0.5/http", json!({}))
        .await
        .assert_invalid("port");
}

#[tokio::test]
async fn a_bad_host_is_refused() {
    let api = Api::new();
    let body = json!({"type": "static", "members": [{"host": "exa_mple.com", "port": 80}]});
    api.put("/backends/web", body)
        .await
        .assert_invalid("members[0].host");
}

#[tokio::test]
async fn a_natives_line_with_a_newline_is_refused() {
    let api = Api::new();
    let body =
        json!({"type": "static", "natives": ["option httplog", "timeout server 5s\nlisten x"]});
    api.put("/backends/web", body)
        .await
        .assert_invalid("natives[1]");
}

#[tokio::test]
async fn a_natives_line_opening_a_section_is_refused() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({"bind": "*:80", "backend": "live", "natives": ["backend evil"]});
    let answer = api.put("/frontends/web", body).await;
    answer.assert_invalid("natives[0]");
    let reason = answer.json()["details"]["reason"].to_string();
    assert!(reason.contains("must not open a new section"), "{reason}");
}

#[tokio::test]
async fn a_rule_operation_must_match_its_type() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({
        "bind": "*:80", "backend": "live",
        "rules": [{"type": "path", "operation": "hdr_dom", "value": "x.com", "backend": "live"}]
    });
    api.put("/frontends/web", body)
        .await
        .assert_invalid("rules[0].operation");
}

#[tokio::test]
async fn a_header_rule_needs_a_header_name() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({
        "bind": "*:80", "backend": "live",
        "rules": [{"type": "header", "operation": "hdr_dom", "value": "x.com", "backend": "live"}]
    });
    api.put("/frontends/web", body)
        .await
        .assert_invalid("rules[0].header");
}

#[tokio::test]
async fn an_unknown_field_is_refused() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({"bind": "*:80", "backend": "live", "colour": "red"});
    api.put("/frontends/web", body)
        .await
        .assert_invalid("colour");
}

#[tokio::test]
async fn an_unknown_field_in_a_rule_is_refused_with_its_path() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({
        "bind": "*:80", "backend": "live",
        "rules": [{"type": "path", "operation": "path", "value": "/", "backend": "live", "acl": "x"}]
    });
    api.put("/frontends/web", body)
        .await
        .assert_invalid("rules[0].acl");
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_refused() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({"bind": "*:80", "backend": "live", "rules": "none"});
    api.put("/frontends/web", body)
        .await
        .assert_invalid("rules");
}

#[tokio::test]
async fn an_unknown_enum_value_is_refused() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({"bind": "*:80", "backend": "live", "mode": "udp"});
    api.put("/frontends/web", body).await.assert_invalid("mode");
}

#[tokio::test]
async fn a_missing_required_field_is_named() {
    let api = Api::new();
    api.put("/frontends/web", json!({"backend": "live"}))
        .await
        .assert_invalid("bind");
}

#[tokio::test]
async fn malformed_json_is_400() {
    let api = Api::new();
    let request = Request::builder()
        .method(Method::PUT)
        .uri("/frontends/web")
        .body(Body::from("bind: *:80"))
        .expect("request");
    api.send(request).await.assert_invalid(".");
}

/// A PUT of `text` as it is (not necessarily JSON) to `uri`.
async fn put_text(api: &Api, uri: &str, text: &str) -> Answer {
    let request = Request::builder()
        .method(Method::PUT)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(text.to_owned()))
        .expect("request");
    api.send(request).await
}

#[tokio::test]
async fn malformed_json_is_said_to_be_not_json() {
    let api = Api::new();
    let answer = put_text(&api, "/frontends/web", "bind: *:80").await;
    answer.assert_invalid(".");
    let reason = answer.json()["details"]["reason"].to_string();
    assert!(reason.contains("not valid JSON"), "{reason}");
}

#[tokio::test]
async fn a_body_that_is_not_an_object_is_refused_even_in_the_array_form_of_its_fields() {
    let api = Api::new();
    api.static_backend("live").await;
    // serde would take a struct's fields in order from an array.
    let answer = put_text(&api, "/frontends/web", r#"[null, "*:80", "live"]"#).await;
    answer.assert_invalid(".");
    assert!(
        answer.text.contains("expected a JSON object"),
        "{}",
        answer.text
    );
    api.get("/frontends/web")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_nested_object_in_the_array_form_of_its_fields_is_refused() {
    let api = Api::new();
    let body = json!({"type": "static", "health": ["GET", "/", "HTTP/1.0", 2000]});
    api.put("/backends/web", body)
        .await
        .assert_invalid("health");
    let body = json!({"type": "static", "members": [["10.0.0.5", 80]]});
    api.put("/backends/web", body)
        .await
        .assert_invalid("members[0]");
    api.get("/backends/web")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_key_given_twice_is_refused_with_the_object_it_is_in() {
    let api = Api::new();
    api.static_backend("live").await;
    let answer = put_text(
        &api,
        "/frontends/web",
        r#"{"bind": "*:80", "backend": "live", "bind": "*:81"}"#,
    )
    .await;
    answer.assert_invalid(".");
    assert!(
        answer.text.contains(r#"duplicate key \"bind\""#),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn a_key_given_twice_in_a_heartbeat_is_refused_at_any_depth() {
    let api = Api::new();
    let uri = "/registrations/myapp/1.0.0/10.0.0.5/8080";
    for (body, field) in [
        (r#"{"secondsToExpire": 60, "secondsToExpire": 120}"#, "."),
        (r#"{"tags": {"zone": "a", "zone": "b"}}"#, "tags"),
    ] {
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Body::from(body))
            .expect("request");
        api.send(request).await.assert_invalid(field);
    }
    assert_eq!(api.get("/registrations").await.json(), json!([]));
}

#[tokio::test]
async fn json_nested_too_deeply_is_refused_at_its_outermost_field() {
    let api = Api::new();
    let deep = format!(
        r#"{{"deep": {}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri("/registrations/myapp/1.0.0/10.0.0.5/8080")
        .body(Body::from(deep))
        .expect("request");
    let answer = api.send(request).await;
    answer.assert_invalid("deep");
    assert!(
        answer.text.contains("nested more than 128 levels"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn an_error_quotes_at_most_a_few_hundred_characters_of_the_input() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({"bind": "*:80", "backend": "live", "mode": "h".repeat(100_000)});
    let answer = api.put("/frontends/web", body).await;
    answer.assert_invalid("mode");
    assert!(answer.text.len() < 2_000, "{} bytes", answer.text.len());
}

#[tokio::test]
async fn a_bind_item_may_have_spaces_around_it_but_no_other_whitespace() {
    let api = Api::new();
    api.static_backend("live").await;
    let spaced = json!({"bind": "*:80 , *:81", "backend": "live"});
    assert_eq!(
        api.put("/frontends/web", spaced).await.json()["bind"],
        "*:80,*:81"
    );
    for bind in ["*:82\n", "*:82\t", "\r\n*:82"] {
        let body = json!({"bind": bind, "backend": "live"});
        api.put("/frontends/other", body)
            .await
            .assert_invalid("bind");
    }
}

#[tokio::test]
async fn a_natives_line_cannot_be_a_dot_directive() {
    let api = Api::new();
    for line in [".if 0", ".endif", "  .diag \"x\""] {
        let body = json!({"type": "static", "natives": ["option httplog", line]});
        let answer = api.put("/backends/web", body).await;
        answer.assert_invalid("natives[1]");
        assert!(
            answer.text.contains("configuration directive"),
            "{}",
            answer.text
        );
    }
}

#[tokio::test]
async fn a_natives_line_cannot_open_a_section_of_a_kind_added_in_2_1() {
    let api = Api::new();
    for line in ["log-forward x", "fcgi-app php"] {
        let body = json!({"type": "static", "natives": [line]});
        let answer = api.put("/backends/web", body).await;
        answer.assert_invalid("natives[0]");
        assert!(
            answer.text.contains("opens a new section"),
            "{}",
            answer.text
        );
    }
}

#[tokio::test]
async fn a_backend_has_at_most_4096_members_also_when_added_one_by_one() {
    let api = Api::new();
    let members = |count: u16| -> Vec<Value> {
        (1..=count)
            .map(|port| json!({"host": "10.0.0.5", "port": port}))
            .collect()
    };
    let answer = api
        .put(
            "/backends/web",
            json!({"type": "static", "members": members(4097)}),
        )
        .await;
    answer.assert_invalid("members");
    assert!(answer.text.contains("too many"), "{}", answer.text);
    api.ok(
        Method::PUT,
        "/backends/web",
        json!({"type": "static", "members": members(4096)}),
    )
    .await;
    // The members-per-backend quota (at most 4096, and so by default).
    api.put("/backends/web/members/10.0.0.6/80", json!({}))
        .await
        .assert_error(StatusCode::CONFLICT);
    // Changing one of the 4096 is still fine.
    api.ok(
        Method::PUT,
        "/backends/web/members/10.0.0.5/1",
        json!({"weight": 2}),
    )
    .await;
}

#[tokio::test]
async fn a_body_key_differing_from_the_path_is_refused() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({"key": "other", "bind": "*:80", "backend": "live"});
    api.put("/frontends/web", body).await.assert_invalid("key");
}

#[tokio::test]
async fn a_key_that_is_not_a_name_is_refused_on_put() {
    let api = Api::new();
    api.put("/backends/-bad", json!({"type": "static"}))
        .await
        .assert_invalid("key");
}

#[tokio::test]
async fn a_dynamic_backend_needs_a_version() {
    let api = Api::new();
    api.put(
        "/backends/live",
        json!({"type": "dynamic", "name": "myapp"}),
    )
    .await
    .assert_invalid("version");
}

#[tokio::test]
async fn a_static_backend_follows_no_service() {
    let api = Api::new();
    api.put("/backends/web", json!({"type": "static", "name": "myapp"}))
        .await
        .assert_invalid("name");
}

#[tokio::test]
async fn a_backend_needs_a_type() {
    let api = Api::new();
    api.put("/backends/web", json!({"balance": "roundrobin"}))
        .await
        .assert_invalid("type");
}

#[tokio::test]
async fn a_dynamic_backend_lists_no_members() {
    let api = Api::new();
    let body = json!({
        "type": "dynamic", "name": "myapp", "version": "1.0.0",
        "members": [{"host": "10.0.0.5", "port": 80}]
    });
    api.put("/backends/live", body)
        .await
        .assert_invalid("members");
}

#[tokio::test]
async fn a_member_listed_twice_is_refused() {
    let api = Api::new();
    let member = json!({"host": "10.0.0.5", "port": 80});
    let body = json!({"type": "static", "members": [member, member]});
    api.put("/backends/web", body)
        .await
        .assert_invalid("members[1]");
}

#[tokio::test]
async fn a_weight_over_256_is_refused() {
    let api = Api::new();
    let body =
        json!({"type": "static", "members": [{"host": "10.0.0.5", "port": 80, "weight": 300}]});
    api.put("/backends/web", body)
        .await
        .assert_invalid("members[0].weight");
}

#[tokio::test]
async fn a_health_interval_out_of_range_is_refused() {
    let api = Api::new();
    let body = json!({"type": "static", "health": {"interval": 50}});
    api.put("/backends/web", body)
        .await
        .assert_invalid("health.interval");
}

#[tokio::test]
async fn an_http_1_1_health_check_needs_the_backend_host() {
    let api = Api::new();
    let body = json!({"type": "static", "health": {"httpVersion": "HTTP/1.1"}});
    api.put("/backends/web", body)
        .await
        .assert_invalid("health.httpVersion");
}

#[tokio::test]
async fn a_tcp_backend_takes_no_health_check() {
    let api = Api::new();
    let body = json!({"type": "static", "mode": "tcp", "health": {"uri": "/"}});
    api.put("/backends/web", body)
        .await
        .assert_invalid("health");
}

#[tokio::test]
async fn a_lease_must_be_a_positive_number_of_seconds_up_to_a_day() {
    let api = Api::new();
    for seconds in [
        json!(-5),
        json!(0),
        json!("ten"),
        json!(0.5),
        json!(86_401),
        json!(1e300),
    ] {
        api.post(
            "/registrations/myapp/1.0.0/10.0.0.5/8080",
            json!({"secondsToExpire": seconds}),
        )
        .await
        .assert_invalid("secondsToExpire");
    }
}

#[tokio::test]
async fn a_heartbeat_body_must_be_an_object() {
    let api = Api::new();
    api.post("/registrations/myapp/1.0.0/10.0.0.5/8080", json!([1, 2]))
        .await
        .assert_invalid(".");
}

#[tokio::test]
async fn a_frontend_must_route_to_an_existing_backend() {
    let api = Api::new();
    api.put("/frontends/web", frontend_to("live"))
        .await
        .assert_invalid("backend");
}

#[tokio::test]
async fn a_rule_must_route_to_an_existing_backend() {
    let api = Api::new();
    api.static_backend("live").await;
    let body = json!({
        "bind": "*:80", "backend": "live",
        "rules": [{"type": "url", "operation": "url_beg", "value": "/x", "backend": "missing"}]
    });
    api.put("/frontends/web", body)
        .await
        .assert_invalid("rules[0].backend");
}

#[tokio::test]
async fn a_frontend_must_share_its_backends_mode() {
    let api = Api::new();
    api.ok(
        Method::PUT,
        "/backends/db",
        json!({"type": "static", "mode": "tcp"}),
    )
    .await;
    api.put("/frontends/web", frontend_to("db"))
        .await
        .assert_invalid("mode");
}

#[tokio::test]
async fn a_backend_cannot_change_mode_under_a_frontend_that_uses_it() {
    let api = Api::new();
    api.static_backend("live").await;
    api.ok(Method::PUT, "/frontends/web", frontend_to("live"))
        .await;
    api.put("/backends/live", json!({"type": "static", "mode": "tcp"}))
        .await
        .assert_invalid("mode");
}

#[tokio::test]
async fn two_frontends_cannot_listen_on_one_port_of_one_address() {
    let api = Api::new();
    api.static_backend("live").await;
    api.ok(
        Method::PUT,
        "/frontends/web",
        json!({"bind": "*:80", "backend": "live"}),
    )
    .await;
    api.put(
        "/frontends/other",
        json!({"bind": "10.0.0.1:80", "backend": "live"}),
    )
    .await
    .assert_invalid("bind");
    // Its own binds are no conflict, and another port is free.
    api.ok(
        Method::PUT,
        "/frontends/web",
        json!({"bind": "*:80,*:81", "backend": "live"}),
    )
    .await;
    api.ok(
        Method::PUT,
        "/frontends/other",
        json!({"bind": "10.0.0.1:82", "backend": "live"}),
    )
    .await;
}

#[tokio::test]
async fn a_backend_named_in_a_frontends_natives_is_in_use() {
    let api = Api::new();
    api.static_backend("live").await;
    api.static_backend("admin").await;
    api.ok(
        Method::PUT,
        "/frontends/web",
        json!({"bind": "*:80", "backend": "live",
               "natives": ["use_backend admin if { path_beg /admin }"]}),
    )
    .await;
    let answer = api.delete("/backends/admin").await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text);
}

// ---------------------------------------------------------------------------
// Access control

const READ_TOKEN: &str = "r3ad-only-token";

fn with_bearer(method: Method, uri: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request
        .body(Body::from(json!({"type": "static"}).to_string()))
        .expect("request")
}

impl Api {
    /// A router with a write token and a read token.
    fn with_both_tokens() -> Api {
        let options = ApiOptions {
            access: ApiAccess {
                write: Some(ApiToken::new(TOKEN).expect("valid token")),
                read: Some(ApiToken::new(READ_TOKEN).expect("valid token")),
            },
            ..ApiOptions::default()
        };
        Api::with(replica(), Store::Works, options)
    }

    /// The status of one request, without reading the body (an event
    /// stream's never ends).
    async fn status_of(&self, request: Request<Body>) -> StatusCode {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        response.status()
    }
}

#[tokio::test]
async fn a_write_without_the_token_is_401() {
    let api = Api::with_token();
    let answer = api
        .send(with_bearer(Method::PUT, "/backends/web", None))
        .await;
    answer.assert_error(StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
    let listed = api
        .send(with_bearer(Method::GET, "/backends", Some(TOKEN)))
        .await;
    assert_eq!(listed.json(), json!([]));
}

#[tokio::test]
async fn a_write_with_a_wrong_token_is_401() {
    let api = Api::with_token();
    let answer = api
        .send(with_bearer(
            Method::PUT,
            "/backends/web",
            Some("s3cret-tokeN"),
        ))
        .await;
    answer.assert_error(StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
}

#[tokio::test]
async fn a_write_with_the_token_succeeds() {
    let api = Api::with_token();
    let answer = api
        .send(with_bearer(Method::PUT, "/backends/web", Some(TOKEN)))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let deleted = api
        .send(with_bearer(Method::DELETE, "/backends/web", Some(TOKEN)))
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text);
}

#[tokio::test]
async fn with_a_token_configured_reads_need_a_token_too() {
    let api = Api::with_token();
    for uri in [
        "/frontends",
        "/backends",
        "/registrations",
        "/mesh",
        "/metrics",
        "/haproxy/config",
    ] {
        let answer = api.send(with_bearer(Method::GET, uri, None)).await;
        answer.assert_error(StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn health_and_the_dashboard_files_need_no_token() {
    let api = Api::with_token();
    for uri in ["/health", "/ui", "/ui/app.js", "/ui/style.css"] {
        assert_eq!(api.get(uri).await.status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn the_read_token_reads_but_cannot_write() {
    let api = Api::with_both_tokens();
    let read = api
        .send(with_bearer(Method::GET, "/backends", Some(READ_TOKEN)))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    let write = api
        .send(with_bearer(Method::PUT, "/backends/web", Some(READ_TOKEN)))
        .await;
    write.assert_error(StatusCode::FORBIDDEN);
    let listed = api
        .send(with_bearer(Method::GET, "/backends", Some(TOKEN)))
        .await;
    assert_eq!(
        listed.json(),
        json!([]),
        "the refused write changed nothing"
    );
}

/// A request to every route the router has (its path parameters filled
/// in), with every method, as `token` presents.
fn every_route_request(token: Option<&str>) -> Vec<(String, Method, Request<Body>)> {
    const METHODS: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    let paths = aqueduct::api::route_paths();
    assert!(paths.len() >= 20, "the router lists its routes: {paths:?}");
    let mut requests = Vec::new();
    for path in paths {
        let uri = path
            .replace("{key}", "web")
            .replace("{host}", "10.0.0.1")
            .replace("{port}", "80")
            .replace("{name}", "shop")
            .replace("{version}", "1.0.0");
        assert!(
            !uri.contains('{'),
            "a route parameter the test does not fill: {path}"
        );
        for method in METHODS {
            requests.push((
                uri.clone(),
                method.clone(),
                with_bearer(method, &uri, token),
            ));
        }
    }
    requests
}

#[tokio::test]
async fn every_route_and_method_needs_the_scope_it_should_with_each_token() {
    let api = Api::with_both_tokens();
    for (who, token) in [
        ("no token", None),
        ("read token", Some(READ_TOKEN)),
        ("write token", Some(TOKEN)),
    ] {
        for (uri, method, request) in every_route_request(token) {
            let status = api.status_of(request).await;
            let public = PUBLIC_PATHS.contains(&uri.as_str());
            let allowed = match token {
                _ if public => true,
                None => false,
                Some(READ_TOKEN) => scope_needed(&method) == Scope::Read,
                Some(_) => true,
            };
            let expected_refusal = match token {
                None => StatusCode::UNAUTHORIZED,
                Some(_) => StatusCode::FORBIDDEN,
            };
            if allowed {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{who}: {method} {uri} was refused ({status})"
                );
            } else {
                assert_eq!(status, expected_refusal, "{who}: {method} {uri}");
            }
        }
    }
}

#[tokio::test]
async fn without_tokens_every_route_is_open() {
    let api = Api::new();
    for (uri, method, request) in every_route_request(None) {
        let status = api.status_of(request).await;
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{method} {uri}: {status}"
        );
    }
}

#[tokio::test]
async fn refused_requests_are_counted_by_reason() {
    let api = Api::with_both_tokens();
    api.send(with_bearer(Method::GET, "/backends", None)).await;
    api.send(with_bearer(Method::PUT, "/backends/web", Some(READ_TOKEN)))
        .await;
    let metrics = api
        .send(with_bearer(Method::GET, "/metrics", Some(READ_TOKEN)))
        .await
        .text;
    assert!(
        metrics.contains(r#"aqueduct_api_requests_refused_total{reason="no_token"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"aqueduct_api_requests_refused_total{reason="read_token_on_write"} 1"#),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------
// Cross-site requests

/// A write of a static backend with these headers.
fn cross_site_put(headers: &[(header::HeaderName, &str)], body: &str) -> Request<Body> {
    let mut request = Request::builder().method(Method::PUT).uri("/backends/web");
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    request.body(Body::from(body.to_owned())).expect("request")
}

#[tokio::test]
async fn a_text_plain_write_is_415_and_changes_nothing() {
    let api = Api::new();
    let answer = api
        .send(cross_site_put(
            &[(header::CONTENT_TYPE, "text/plain")],
            r#"{"type":"static"}"#,
        ))
        .await;
    answer.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(api.get("/backends").await.json(), json!([]));
}

#[tokio::test]
async fn a_body_without_a_content_type_is_415() {
    let api = Api::new();
    let answer = api
        .send(cross_site_put(
            &[(header::CONTENT_LENGTH, "17")],
            r#"{"type":"static"}"#,
        ))
        .await;
    answer.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(api.get("/backends").await.json(), json!([]));
}

/// A JSON write to the API at 127.0.0.1:10000 from a page of `origin`.
async fn put_from_origin(api: &Api, origin: &str) -> Answer {
    api.send(cross_site_put(
        &[
            (header::HOST, "127.0.0.1:10000"),
            (header::ORIGIN, origin),
            (header::CONTENT_TYPE, "application/json"),
        ],
        r#"{"type":"static"}"#,
    ))
    .await
}

#[tokio::test]
async fn a_foreign_origin_is_403_and_changes_nothing() {
    let api = Api::new();
    let answer = put_from_origin(&api, "http://evil.example").await;
    answer.assert_error(StatusCode::FORBIDDEN);
    assert_eq!(api.get("/backends").await.json(), json!([]));
}

#[tokio::test]
async fn the_pages_own_origin_may_write() {
    let api = Api::new();
    let answer = put_from_origin(&api, "http://127.0.0.1:10000").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test]
async fn an_allowed_origin_may_write() {
    let options = ApiOptions {
        site: SiteRules {
            allowed_origins: vec!["https://ops.example".to_owned()],
            ..SiteRules::default()
        },
        ..ApiOptions::default()
    };
    let api = Api::with(replica(), Store::Works, options);
    let answer = put_from_origin(&api, "https://ops.example").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test]
async fn a_foreign_host_is_403_even_on_health() {
    let options = ApiOptions {
        site: SiteRules {
            listen: Some("127.0.0.1:10000".parse().expect("address")),
            ..SiteRules::default()
        },
        ..ApiOptions::default()
    };
    let api = Api::with(replica(), Store::Works, options);
    for uri in ["/health", "/backends"] {
        let request = Request::builder()
            .uri(uri)
            .header(header::HOST, "rebound.evil.example:10000")
            .body(Body::empty())
            .expect("request");
        api.send(request).await.assert_error(StatusCode::FORBIDDEN);
    }
    let own = Request::builder()
        .uri("/health")
        .header(header::HOST, "localhost:10000")
        .body(Body::empty())
        .expect("request");
    assert_eq!(api.send(own).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_dashboard_allows_only_itself_and_no_framing() {
    let api = Api::new();
    for uri in ["/ui", "/ui/app.js", "/ui/style.css"] {
        let answer = api.get(uri).await;
        let policy = answer.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ASCII");
        assert!(policy.contains("default-src 'self'"), "{uri}: {policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{uri}: {policy}");
        assert_eq!(answer.headers[header::X_FRAME_OPTIONS], "DENY", "{uri}");
    }
}

#[test]
fn a_token_is_1_to_256_visible_ascii_characters() {
    assert_eq!(ApiToken::new("").err(), Some(InvalidToken::Empty));
    assert_eq!(
        ApiToken::new(&"a".repeat(257)).err(),
        Some(InvalidToken::TooLong)
    );
    for bad in ["a b", "a\nb", "é", "tab\t"] {
        assert_eq!(
            ApiToken::new(bad).err(),
            Some(InvalidToken::NotPrintable),
            "{bad:?}"
        );
    }
    assert!(ApiToken::new(&"~".repeat(256)).is_ok());
}

#[test]
fn a_token_is_not_shown_by_debug() {
    let token = ApiToken::new(TOKEN).expect("valid token");
    let options = ApiOptions {
        access: ApiAccess {
            write: Some(token.clone()),
            read: Some(token.clone()),
        },
        ..ApiOptions::default()
    };
    assert!(!format!("{token:?}").contains(TOKEN));
    assert!(!format!("{options:?}").contains(TOKEN));
}

// ---------------------------------------------------------------------------
// Limits and error answers

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let options = ApiOptions {
        body_limit_bytes: 256,
        ..ApiOptions::default()
    };
    let api = Api::with(replica(), Store::Works, options);
    let natives: Vec<String> = (0..20).map(|i| format!("option x{i}")).collect();
    let body = json!({"type": "static", "natives": natives});
    let answer = api.put("/backends/web", body).await;
    let error = answer.assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["details"]["limitBytes"], 256);
}

#[tokio::test]
async fn a_request_over_the_limit_in_progress_is_503_with_retry_after_at_once() {
    let options = ApiOptions {
        max_requests: 1,
        ..ApiOptions::default()
    };
    let api = Api::with(replica(), Store::Works, options);
    // A write whose body never finishes arriving holds the only place.
    let stalled = Request::builder()
        .method(Method::PUT)
        .uri("/backends/web")
        .body(Body::from_stream(futures_util::stream::pending::<
            Result<Vec<u8>, std::io::Error>,
        >()))
        .expect("request");
    let mut holder = Box::pin(api.router.clone().oneshot(stalled));
    std::future::poll_fn(|cx| {
        // Polled until it waits for the body, holding its place.
        for _ in 0..10 {
            assert!(holder.as_mut().poll(cx).is_pending(), "the write ended");
        }
        std::task::Poll::Ready(())
    })
    .await;
    let busy = api.get("/health").await;
    let error = busy.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error["details"]["limitRequests"], 1);
    assert_eq!(busy.headers[header::RETRY_AFTER], "1");
    drop(holder);
    assert_eq!(api.get("/health").await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    Api::new()
        .get("/nothing/here")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let answer = Api::new().call(Method::PATCH, "/frontends/web", None).await;
    answer.assert_error(StatusCode::METHOD_NOT_ALLOWED);
    assert!(answer.headers.contains_key(header::ALLOW));
}

#[tokio::test]
async fn a_failing_store_is_503() {
    let api = Api::with(replica(), Store::Fails, ApiOptions::default());
    let answer = api.put("/backends/web", json!({"type": "static"})).await;
    answer.assert_error(StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_stopped_peer_is_503_for_health_and_writes() {
    let (requests, inbox) = mpsc::channel(1);
    drop(inbox);
    let api = Api {
        router: router(Handle::new(requests), ApiOptions::default()),
    };
    api.get("/health")
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE);
    api.put("/backends/web", json!({"type": "static"}))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn the_haproxy_routes_are_503_without_a_driver() {
    let answer = Api::new().get("/haproxy/config").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.json(),
        json!({
            "error": "no HAProxy configuration has been rendered by this peer",
            "details": {
                "reason": "nothing rendered yet, or this peer runs without the HAProxy driver"
            }
        })
    );
    for path in ["/haproxy/status", "/haproxy/stats"] {
        let answer = Api::new().get(path).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
}

#[tokio::test]
async fn the_event_stream_carries_activity_also_without_a_driver() {
    let activity = ActivityLog::default();
    let options = ApiOptions {
        activity: activity.clone(),
        ..ApiOptions::default()
    };
    let api = Api::with(replica(), Store::Works, options);
    let request = Request::get("/events")
        .body(Body::empty())
        .expect("request");
    let response = api
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );

    activity.record(ActivityKind::Peer {
        peer: "peer-b".to_owned(),
        from: Some("alive"),
        to: "down",
    });
    let mut body = response.into_body().into_data_stream();
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
        .await
        .expect("an event before the deadline")
        .expect("a chunk")
        .expect("bytes");
    let text = String::from_utf8(chunk.to_vec()).expect("UTF-8");
    assert!(text.starts_with("event: activity\n"), "{text}");
    let data: Value = serde_json::from_str(
        text.lines()
            .find_map(|line| line.strip_prefix("data: "))
            .expect("a data line"),
    )
    .expect("JSON");
    assert_eq!(data["type"], "peer");
    assert_eq!(data["peer"], "peer-b");
    assert_eq!(data["from"], "alive");
    assert_eq!(data["to"], "down");
    assert!(data["atMs"].as_u64().is_some_and(|ms| ms > 0), "{data}");
}

#[tokio::test]
async fn event_streams_beyond_the_limit_are_refused_until_one_closes() {
    let api = Api::new();
    let open = || async {
        let request = Request::get("/events")
            .body(Body::empty())
            .expect("request");
        api.router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible")
    };
    let mut streams = Vec::new();
    for _ in 0..EVENT_STREAMS_MAX {
        let response = open().await;
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    let refused = open().await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

    drop(streams.pop());
    assert_eq!(open().await.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Mesh and operations

#[tokio::test]
async fn health_is_ok_while_the_peer_answers() {
    let answer = Api::new().get("/health").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn mesh_shows_this_peers_identity_and_version_vector() {
    let api = Api::new();
    api.static_backend("web").await;
    let mesh = api.get("/mesh").await.json();
    assert_eq!(mesh["name"], "peer-a");
    assert_eq!(mesh["peerId"], "0000000000000abc");
    assert_eq!(mesh["generation"], 3);
    assert_eq!(mesh["replicaId"], "0000000000001234");
    assert_eq!(mesh["gossipAddr"], "127.0.0.1:7000");
    assert_eq!(mesh["digest"].as_str().map(str::len), Some(32));
    assert!(
        mesh["versionVector"]["0000000000001234"].as_u64() > Some(0),
        "{mesh}"
    );
    assert_eq!(mesh["convergenceLagSeconds"], 0.5);
    assert_eq!(mesh["uptimeSeconds"], 12.0);
}

#[tokio::test]
async fn mesh_peers_shows_each_peer_its_state_and_its_latest_report() {
    let api = Api::new();
    let digest = api.get("/mesh").await.json()["digest"].clone();
    let peers = api.get("/mesh/peers").await.json();
    assert_eq!(
        peers,
        json!([
            {"peerId": "0000000000000002", "name": "peer-b", "addr": "127.0.0.1:7001",
             "generation": 1, "state": "alive", "connected": true,
             "report": {"digest": digest, "converged": true, "ageSeconds": 0.5,
                        "haproxy": {"managed": true, "running": true, "appliedHash": null,
                                    "reloads": 2, "reloadFailures": 0, "runtimeChanges": 0,
                                    "rejected": 0, "restarts": 0, "lastError": null}},
             "revoked": false, "revokedAt": null},
            {"peerId": "0000000000000003", "name": "peer-c", "addr": "127.0.0.1:7001",
             "generation": 1, "state": "suspect", "connected": false, "report": null,
             "revoked": true, "revokedAt": 1_767_225_600}
        ])
    );
}

#[tokio::test]
async fn a_revocation_the_peer_finds_not_genuine_is_a_400_on_its_signature() {
    let api = Api::new();
    let forged = json!({"name": "peer-c", "revokedAt": 1_767_225_600,
                        "notBeforeUpTo": 1_767_222_000, "signature": "3045"});
    let answer = api.post("/mesh/revocations", forged).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["details"]["field"], "signature");
    assert_eq!(api.get("/mesh/revocations").await.json(), json!([]));
}

#[tokio::test]
async fn metrics_expose_the_peer_counters_in_openmetrics_text() {
    let api = Api::new();
    api.static_backend("web").await;
    let answer = api.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for line in [
        "aqueduct_writes_acknowledged_total 1",
        "aqueduct_writes_refused_total 0",
        "aqueduct_remote_changes_applied_total 0",
        "aqueduct_store_commits_total 0",
        "aqueduct_gossip_messages_sent_total 10",
        "aqueduct_gossip_messages_received_total 12",
        "aqueduct_gossip_sent_bytes_total 1000",
        "aqueduct_gossip_received_bytes_total 1200",
        "aqueduct_gossip_garbage_dropped_total 0",
        "aqueduct_gossip_deltas_refused_total 0",
        "aqueduct_gossip_frames_refused_total 0",
        "aqueduct_connections_revoked_total 0",
        "aqueduct_gossip_revoked_messages_dropped_total 0",
        "aqueduct_gossip_revocations_refused_total 0",
        "aqueduct_peers{state=\"alive\"} 1",
        "aqueduct_peers{state=\"suspect\"} 1",
        "aqueduct_peers{state=\"down\"} 0",
        "aqueduct_convergence_lag_seconds 0.5",
        "aqueduct_uptime_seconds 12.0",
    ] {
        assert!(
            answer.text.lines().any(|l| l == line),
            "no {line:?} in\n{}",
            answer.text
        );
    }
}

#[tokio::test]
async fn metrics_expose_certificate_expiries_reloads_and_connections() {
    let api = Api::new();
    let answer = api.get("/metrics").await;
    // peer-c is not connected: no series for it.
    for line in [
        format!("aqueduct_tls_certificate_expiry_timestamp_seconds {OWN_CERTIFICATE_NOT_AFTER}"),
        format!(
            "aqueduct_tls_peer_certificate_expiry_timestamp_seconds{{peer=\"peer-b\"}} \
             {PEER_B_CERTIFICATE_NOT_AFTER}"
        ),
        "aqueduct_tls_reloads_total{result=\"ok\"} 2".to_owned(),
        "aqueduct_tls_reloads_total{result=\"refused\"} 1".to_owned(),
        format!(
            "aqueduct_api_tls_certificate_expiry_timestamp_seconds {API_CERTIFICATE_NOT_AFTER}"
        ),
        "aqueduct_api_tls_reloads_total{result=\"ok\"} 1".to_owned(),
        "aqueduct_api_tls_reloads_total{result=\"refused\"} 0".to_owned(),
        "aqueduct_gossip_connections_established_total{side=\"dialled\"} 0".to_owned(),
        "aqueduct_gossip_connections_established_total{side=\"accepted\"} 0".to_owned(),
    ] {
        assert!(
            answer.text.lines().any(|l| l == line),
            "no {line:?} in\n{}",
            answer.text
        );
    }
    assert!(!answer.text.contains("peer-c"), "{}", answer.text);
}

// ---------------------------------------------------------------------------
// Quotas

impl Api {
    fn with_quotas(quotas: Quotas) -> Api {
        Api::with_replica_and_quotas(replica(), quotas)
    }

    fn with_replica_and_quotas(replica: Replica, quotas: Quotas) -> Api {
        let options = ApiOptions {
            quotas,
            ..ApiOptions::default()
        };
        Api::with(replica, Store::Works, options)
    }

    /// The state digest: equal before and after means nothing changed.
    async fn digest(&self) -> Value {
        self.get("/mesh").await.json()["digest"].clone()
    }

    /// Asserts that `answer` is a refusal by `quota` (named with its
    /// option in the message) and that the state is still `before`.
    async fn assert_refused_by(
        &self,
        answer: Answer,
        status: StatusCode,
        quota: &str,
        before: &Value,
    ) {
        let body = answer.assert_error(status);
        assert_eq!(body["details"]["quota"], quota, "{body}");
        let message = body["error"].as_str().expect("a message");
        assert!(
            message.contains(&format!("the quota is {}", body["details"]["limit"]))
                && message.contains(&format!("(--quota-{quota})")),
            "{message}"
        );
        assert_eq!(
            &self.digest().await,
            before,
            "a refused write changed the state"
        );
    }
}

/// A static backend body with one member per port of `ports`.
fn backend_with_members(ports: std::ops::RangeInclusive<u16>) -> Value {
    let members: Vec<Value> = ports
        .map(|port| json!({"host": "10.0.0.5", "port": port}))
        .collect();
    json!({"type": "static", "members": members})
}

#[tokio::test]
async fn a_new_frontend_beyond_the_quota_is_a_409_and_a_replacement_at_it_passes() {
    let api = Api::with_quotas(Quotas {
        frontends: 1,
        ..Quotas::default()
    });
    api.static_backend("live").await;
    api.ok(Method::PUT, "/frontends/web", frontend_to("live"))
        .await;
    let before = api.digest().await;
    let answer = api
        .put("/frontends/api", json!({"bind": "*:81", "backend": "live"}))
        .await;
    api.assert_refused_by(answer, StatusCode::CONFLICT, "frontends", &before)
        .await;
    let replaced = json!({"bind": "*:8080", "backend": "live"});
    api.ok(Method::PUT, "/frontends/web", replaced).await;
}

#[tokio::test]
async fn a_new_backend_beyond_the_quota_is_a_409_and_a_replacement_at_it_passes() {
    let api = Api::with_quotas(Quotas {
        backends: 2,
        ..Quotas::default()
    });
    api.static_backend("a").await;
    api.static_backend("b").await;
    let before = api.digest().await;
    let answer = api.put("/backends/c", json!({"type": "static"})).await;
    api.assert_refused_by(answer, StatusCode::CONFLICT, "backends", &before)
        .await;
    assert_eq!(api.get("/backends/c").await.status, StatusCode::NOT_FOUND);
    api.ok(
        Method::PUT,
        "/backends/a",
        json!({"type": "static", "balance": "leastconn"}),
    )
    .await;
}

#[tokio::test]
async fn members_beyond_the_quota_are_a_409_in_a_backend_and_one_by_one() {
    let api = Api::with_quotas(Quotas {
        members_per_backend: 2,
        ..Quotas::default()
    });
    let before = api.digest().await;
    let answer = api.put("/backends/web", backend_with_members(1..=3)).await;
    api.assert_refused_by(answer, StatusCode::CONFLICT, "members-per-backend", &before)
        .await;
    api.ok(Method::PUT, "/backends/web", backend_with_members(1..=2))
        .await;
    let before = api.digest().await;
    let answer = api.put("/backends/web/members/10.0.0.5/3", json!({})).await;
    api.assert_refused_by(answer, StatusCode::CONFLICT, "members-per-backend", &before)
        .await;
    // At the quota: changing a member, or replacing the backend with as
    // many, passes.
    api.ok(
        Method::PUT,
        "/backends/web/members/10.0.0.5/1",
        json!({"weight": 5}),
    )
    .await;
    api.ok(Method::PUT, "/backends/web", backend_with_members(2..=3))
        .await;
}

#[tokio::test]
async fn a_new_registration_beyond_the_quota_is_a_409_and_a_heartbeat_at_it_passes() {
    let api = Api::with_quotas(Quotas {
        registrations: 2,
        ..Quotas::default()
    });
    api.heartbeat("1.0.0", "10.0.0.1").await;
    api.heartbeat("2.0.0", "10.0.0.2").await;
    let before = api.digest().await;
    let answer = api
        .post("/registrations/other/1.0.0/10.0.0.3/8080", json!({}))
        .await;
    api.assert_refused_by(answer, StatusCode::CONFLICT, "registrations", &before)
        .await;
    assert_eq!(
        api.get("/registrations")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    api.heartbeat("1.0.0", "10.0.0.1").await;
    // A heartbeat that changes an existing instance's meta adds nothing.
    api.ok(
        Method::POST,
        "/registrations/myapp/1.0.0/10.0.0.1/8080",
        json!({"secondsToExpire": 60, "zone": "b"}),
    )
    .await;
}

#[tokio::test]
async fn a_new_registration_beyond_the_quota_of_its_name_is_a_409() {
    let api = Api::with_quotas(Quotas {
        registrations_per_name: 1,
        ..Quotas::default()
    });
    api.heartbeat("1.0.0", "10.0.0.1").await;
    let before = api.digest().await;
    // Another version is another instance of the same name.
    let answer = api
        .post("/registrations/myapp/2.0.0/10.0.0.2/8080", json!({}))
        .await;
    api.assert_refused_by(
        answer,
        StatusCode::CONFLICT,
        "registrations-per-name",
        &before,
    )
    .await;
    api.heartbeat("1.0.0", "10.0.0.1").await;
    api.ok(
        Method::POST,
        "/registrations/other/1.0.0/10.0.0.2/8080",
        json!({}),
    )
    .await;
}

/// A heartbeat body whose meta (as stored: compact JSON) is `bytes` long.
fn meta_of(bytes: usize) -> Value {
    let bare = json!({"secondsToExpire": 60, "pad": ""}).to_string().len();
    json!({"secondsToExpire": 60, "pad": "x".repeat(bytes - bare)})
}

#[tokio::test]
async fn meta_beyond_the_quota_is_a_413_and_meta_at_it_passes() {
    let api = Api::with_quotas(Quotas {
        meta_bytes: 100,
        ..Quotas::default()
    });
    let uri = "/registrations/myapp/1.0.0/10.0.0.1/8080";
    let before = api.digest().await;
    let answer = api.post(uri, meta_of(101)).await;
    api.assert_refused_by(answer, StatusCode::PAYLOAD_TOO_LARGE, "meta-bytes", &before)
        .await;
    let stored = api.ok(Method::POST, uri, meta_of(100)).await;
    assert_eq!(stored["meta"], meta_of(100));
    api.ok(Method::POST, uri, meta_of(100)).await;
}

#[tokio::test]
async fn a_lease_beyond_the_quota_is_a_400_naming_seconds_to_expire() {
    let api = Api::with_quotas(Quotas {
        lease_max_seconds: 60,
        ..Quotas::default()
    });
    let uri = "/registrations/myapp/1.0.0/10.0.0.1/8080";
    let before = api.digest().await;
    let answer = api.post(uri, json!({"secondsToExpire": 61})).await;
    assert_eq!(answer.json()["details"]["field"], "secondsToExpire");
    api.assert_refused_by(answer, StatusCode::BAD_REQUEST, "lease-max", &before)
        .await;
    api.ok(Method::POST, uri, json!({"secondsToExpire": 60}))
        .await;
    api.ok(Method::POST, uri, json!({"secondsToExpire": 60}))
        .await;
}

#[tokio::test]
async fn the_default_longest_lease_is_an_hour() {
    let api = Api::new();
    let uri = "/registrations/myapp/1.0.0/10.0.0.1/8080";
    let answer = api.post(uri, json!({"secondsToExpire": 3601})).await;
    let body = answer.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(body["details"]["quota"], "lease-max", "{body}");
    api.ok(Method::POST, uri, json!({"secondsToExpire": 3600}))
        .await;
}

#[tokio::test]
async fn a_stored_registration_above_a_lowered_quota_is_served_and_its_heartbeats_pass() {
    // Stored under a longer lease and larger meta than today's quotas.
    let mut stored = replica();
    let key = RegistrationKey {
        service: ServiceName::new("myapp").expect("name"),
        version: Version::new("1.0.0").expect("version"),
        host: Host::new("10.0.0.1").expect("host"),
        port: Port::new(8080).expect("port"),
    };
    let meta = json!({"secondsToExpire": 120, "zone": "a"});
    let registration = Registration {
        meta: Meta::new(&meta.to_string()).expect("meta"),
        lease: Lease::new(wall_clock_ms(), 120_000).expect("lease"),
    };
    stored
        .execute(&Command::Register { key, registration }, wall_clock_ms())
        .expect("registers");
    let api = Api::with_replica_and_quotas(
        stored,
        Quotas {
            lease_max_seconds: 60,
            meta_bytes: 16,
            ..Quotas::default()
        },
    );
    let uri = "/registrations/myapp/1.0.0/10.0.0.1/8080";
    assert_eq!(
        api.get("/registrations/myapp").await.json()[0]["meta"],
        meta
    );
    api.ok(Method::POST, uri, meta).await;
    // Its next change must fit.
    let before = api.digest().await;
    let answer = api
        .post(uri, json!({"secondsToExpire": 120, "zone": "b"}))
        .await;
    api.assert_refused_by(answer, StatusCode::PAYLOAD_TOO_LARGE, "meta-bytes", &before)
        .await;
}

#[tokio::test]
async fn natives_beyond_the_quota_of_lines_are_a_413() {
    let api = Api::with_quotas(Quotas {
        natives_lines: 2,
        ..Quotas::default()
    });
    let lines = |count: usize| vec!["option forwardfor"; count];
    let before = api.digest().await;
    let answer = api
        .put(
            "/backends/web",
            json!({"type": "static", "natives": lines(3)}),
        )
        .await;
    api.assert_refused_by(
        answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "natives-lines",
        &before,
    )
    .await;
    api.ok(
        Method::PUT,
        "/backends/web",
        json!({"type": "static", "natives": lines(2)}),
    )
    .await;
    let frontend = json!({"bind": "*:80", "backend": "web", "natives": lines(3)});
    let answer = api.put("/frontends/web", frontend).await;
    let before = api.digest().await;
    api.assert_refused_by(
        answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "natives-lines",
        &before,
    )
    .await;
    let frontend = json!({"bind": "*:80", "backend": "web", "natives": lines(2)});
    api.ok(Method::PUT, "/frontends/web", frontend).await;
}

#[tokio::test]
async fn natives_beyond_the_quota_of_bytes_are_a_413() {
    // "option forwardfor" and "option httplog" are 17 and 14 bytes.
    let api = Api::with_quotas(Quotas {
        natives_bytes: 31,
        ..Quotas::default()
    });
    let before = api.digest().await;
    let over = json!({"type": "static", "natives": ["option forwardfor", "option httplog", "option http-server-close"]});
    let answer = api.put("/backends/web", over).await;
    api.assert_refused_by(
        answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "natives-bytes",
        &before,
    )
    .await;
    let at = json!({"type": "static", "natives": ["option forwardfor", "option httplog"]});
    api.ok(Method::PUT, "/backends/web", at).await;
}

#[tokio::test]
async fn a_write_that_would_grow_the_document_beyond_the_quota_is_a_413() {
    let api = Api::with_quotas(Quotas {
        document_bytes: 1_000,
        ..Quotas::default()
    });
    api.heartbeat("1.0.0", "10.0.0.1").await;
    // Backends until the document is full: about a hundred bytes each.
    let mut refused = None;
    for index in 0..50 {
        let before = api.digest().await;
        let answer = api
            .put(&format!("/backends/b{index}"), json!({"type": "static"}))
            .await;
        if answer.status != StatusCode::OK {
            refused = Some((index, answer, before));
            break;
        }
    }
    let (index, answer, before) = refused.expect("the document fills up");
    assert!(index > 1, "only {index} backends fit in 1,000 bytes");
    api.assert_refused_by(
        answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "document-bytes",
        &before,
    )
    .await;
    // What does not grow it passes: a replacement, a heartbeat, a delete.
    api.ok(Method::PUT, "/backends/b0", json!({"type": "static"}))
        .await;
    api.heartbeat("1.0.0", "10.0.0.1").await;
    assert_eq!(api.delete("/backends/b0").await.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_quota_refusals_by_quota() {
    let api = Api::with_quotas(Quotas {
        backends: 1,
        ..Quotas::default()
    });
    api.static_backend("a").await;
    for key in ["b", "c"] {
        api.put(&format!("/backends/{key}"), json!({"type": "static"}))
            .await
            .assert_error(StatusCode::CONFLICT);
    }
    let text = api.get("/metrics").await.text;
    for line in [
        "aqueduct_api_quota_refusals_total{quota=\"backends\"} 2",
        "aqueduct_api_quota_refusals_total{quota=\"frontends\"} 0",
        "aqueduct_api_quota_refusals_total{quota=\"document-bytes\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_rule_regex_that_backtracks_exponentially_is_refused_and_a_plain_one_taken() {
    let api = Api::new();
    api.static_backend("app").await;
    api.static_backend("other").await;
    let with_rule = |operation: &str, value: &str| {
        let mut rule = json!({"type": "header", "header": "x", "operation": operation,
                              "value": value, "backend": "other"});
        if operation.starts_with("path") {
            rule = json!({"type": "path", "operation": operation, "value": value,
                          "backend": "other"});
        }
        json!({"bind": "*:8080", "backend": "app", "rules": [rule]})
    };
    for (operation, value) in [
        ("hdr_reg", "^(a|aa)+$"),
        ("path_reg", "(a+)+"),
        ("path_reg", "a*b*c*d"),
    ] {
        let answer = api.put("/frontends/web", with_rule(operation, value)).await;
        answer.assert_invalid("rules[0].value");
    }
    assert_eq!(
        api.get("/frontends").await.json(),
        json!([]),
        "nothing was written"
    );
    let answer = api
        .put("/frontends/web", with_rule("path_reg", "^/v[0-9]+/legacy"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}
