//! Hostile and bad input against real peers that drive their own HAProxy:
//! a table of requests (injection of newlines and HAProxy directives in
//! every string field, sections opened from `natives`, unicode look-alikes,
//! over-long values, bad ports, path traversal, deep nesting, oversized
//! bodies, wrong content types, malformed JSON, duplicate and unknown keys,
//! wrong methods, refused switches and health intervals).
//!
//! Every row must be answered with its 4xx status and a JSON error whose
//! message names the offending field or reason, and must change nothing:
//! the replicated state of both peers, their rendered configurations and
//! HAProxy's apply status are the same after the table as before it, and
//! both HAProxies still serve the configured members.
//!
//! Requests are written byte for byte (`support::http::raw_request`), so
//! paths reach the peer as sent, `..` and percent-escapes included.

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::http::{TestServer, fetch, raw_request_with};
use support::{Cluster, Peer, eventually, ok, wait_for_convergence, wait_for_mesh};

/// The port of the frontend set up before the table.
const PORT: u16 = 18100;
/// The port of the frontends the table tries to create.
const OTHER_PORT: u16 = 18101;
/// An error answer longer than this echoes too much of its input.
const ANSWER_BYTES_MAX: usize = 4096;
/// The configured request body limit (the default, 1 MiB).
const BODY_LIMIT: usize = 1 << 20;

/// Texts that would add lines to `haproxy.cfg` if a field let them through.
const INJECTIONS: [(&str, &str); 4] = [
    ("server line", "\n  server x 1.2.3.4:80"),
    ("new section", "\nfrontend evil"),
    ("CRLF bind", "\r\nbind *:1"),
    ("NUL", "\u{0}"),
];

/// One row of the table.
struct Case {
    name: String,
    method: &'static str,
    /// The request target, sent as is.
    target: String,
    content_type: Option<&'static str>,
    /// Further headers (`Origin`, `Host`).
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// The status the peer must answer.
    status: u16,
    /// A text the error message must contain (the field or the reason).
    says: &'static str,
}

impl Case {
    /// A request with a JSON body.
    fn json(
        name: impl Into<String>,
        method: &'static str,
        target: impl Into<String>,
        body: &Value,
        status: u16,
        says: &'static str,
    ) -> Case {
        Case::raw(
            name,
            method,
            target,
            Some("application/json"),
            body.to_string(),
            status,
            says,
        )
    }

    /// A request with any body and content type.
    fn raw(
        name: impl Into<String>,
        method: &'static str,
        target: impl Into<String>,
        content_type: Option<&'static str>,
        body: impl Into<Vec<u8>>,
        status: u16,
        says: &'static str,
    ) -> Case {
        Case {
            name: name.into(),
            method,
            target: target.into(),
            content_type,
            headers: Vec::new(),
            body: body.into(),
            status,
            says,
        }
    }

    /// This case with one more header.
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }
}

/// `value` with what is at JSON pointer `pointer` replaced.
fn with(mut value: Value, pointer: &str, replacement: Value) -> Value {
    *value
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("the base body has {pointer}")) = replacement;
    value
}

/// `value` with `suffix` appended to the string at `pointer`.
fn appended(value: &Value, pointer: &str, suffix: &str) -> Value {
    let original = value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is a string"));
    with(value.clone(), pointer, json!(format!("{original}{suffix}")))
}

/// Percent-encodes every byte but unreserved ones, as a client would in a
/// path segment.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A frontend the table tries to create, with every string field set.
fn frontend() -> Value {
    json!({
        "key": "other", "bind": format!("*:{OTHER_PORT}"), "backend": "app",
        "mode": "http", "keepalive": "default",
        "rules": [{"type": "header", "header": "host", "operation": "hdr_dom",
                   "value": "x.example.com", "backend": "live"}],
        "natives": ["option forwardfor"]
    })
}

/// A static backend the table tries to create, with every string field set.
fn static_backend() -> Value {
    json!({
        "key": "other", "type": "static", "balance": "roundrobin", "host": "example.com",
        "mode": "http", "members": [{"host": "127.0.0.1", "port": 1}],
        "natives": ["option forwardfor"],
        "health": {"method": "GET", "uri": "/", "httpVersion": "HTTP/1.1", "interval": 2000}
    })
}

/// A dynamic backend the table tries to create.
fn dynamic_backend() -> Value {
    json!({"key": "other", "type": "dynamic", "name": "myapp", "version": "1.0.0"})
}

/// A registration the table tries to make: name, version, host, port.
const REGISTRATION: [&str; 4] = ["myapp", "1.0.0", "127.0.0.1", "1"];

fn registration_target(parts: [&str; 4]) -> String {
    let parts: Vec<String> = parts.iter().map(|p| encode(p)).collect();
    format!("/registrations/{}", parts.join("/"))
}

/// `depth` nested arrays.
fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Every string field of a frontend, a backend, a path, with each injection.
fn injection_cases() -> Vec<Case> {
    const FRONTEND_FIELDS: [(&str, &str); 11] = [
        ("/key", "key"),
        ("/bind", "bind"),
        ("/backend", "backend"),
        ("/mode", "mode"),
        ("/keepalive", "keepalive"),
        ("/rules/0/type", "rules[0].type"),
        ("/rules/0/operation", "rules[0].operation"),
        ("/rules/0/value", "rules[0].value"),
        ("/rules/0/header", "rules[0].header"),
        ("/rules/0/backend", "rules[0].backend"),
        ("/natives/0", "natives[0]"),
    ];
    const STATIC_FIELDS: [(&str, &str); 10] = [
        ("/key", "key"),
        ("/type", "type"),
        ("/balance", "balance"),
        ("/host", "host"),
        ("/mode", "mode"),
        ("/members/0/host", "members[0].host"),
        ("/natives/0", "natives[0]"),
        ("/health/method", "health.method"),
        ("/health/uri", "health.uri"),
        ("/health/httpVersion", "health.httpVersion"),
    ];
    const DYNAMIC_FIELDS: [(&str, &str); 2] = [("/name", "name"), ("/version", "version")];
    let mut cases = Vec::new();
    for (label, injection) in INJECTIONS {
        let body_cases = [
            (
                "frontend",
                "/frontends/other",
                frontend(),
                &FRONTEND_FIELDS[..],
            ),
            (
                "backend",
                "/backends/other",
                static_backend(),
                &STATIC_FIELDS[..],
            ),
            (
                "backend",
                "/backends/other",
                dynamic_backend(),
                &DYNAMIC_FIELDS[..],
            ),
        ];
        for (object, target, base, fields) in body_cases {
            for (pointer, field) in fields {
                cases.push(Case::json(
                    format!("{label} in {object} {field}"),
                    "PUT",
                    target,
                    &appended(&base, pointer, injection),
                    400,
                    field,
                ));
            }
        }
        let key = encode(&format!("other{injection}"));
        cases.push(Case::json(
            format!("{label} in a frontend key"),
            "PUT",
            format!("/frontends/{key}"),
            &frontend(),
            400,
            "key",
        ));
        cases.push(Case::json(
            format!("{label} in a backend key"),
            "PUT",
            format!("/backends/{key}"),
            &static_backend(),
            400,
            "key",
        ));
        cases.push(Case::json(
            format!("{label} in a member host (path)"),
            "PUT",
            format!(
                "/backends/app/members/{}/1",
                encode(&format!("127.0.0.1{injection}"))
            ),
            &json!({}),
            400,
            "host",
        ));
        for (index, says) in ["name", "version", "host", "port"].into_iter().enumerate() {
            let mut parts = REGISTRATION.map(str::to_owned);
            parts[index].push_str(injection);
            cases.push(Case::json(
                format!("{label} in a registration {says} (path)"),
                "POST",
                registration_target(parts.each_ref().map(String::as_str)),
                &json!({"secondsToExpire": 60}),
                400,
                says,
            ));
        }
    }
    cases
}

/// `natives` lines that would open a section of their own.
fn section_cases() -> Vec<Case> {
    let lines = [
        ("backend x", "new section"),
        ("frontend y", "new section"),
        ("global", "new section"),
        ("defaults", "new section"),
        ("listen z", "new section"),
        ("userlist u", "new section"),
        ("peers p", "new section"),
        ("resolvers r", "new section"),
        ("program p", "new section"),
        ("cache c", "new section"),
        ("ring r", "new section"),
        ("http-errors e", "new section"),
        ("  backend x", "new section"),
        ("   listen z", "new section"),
        ("BACKEND X", "new section"),
        ("\tfrontend y", "not allowed"),
        ("\t global", "not allowed"),
        // A conditional block (`.if 0` ... `.endif`) spans sections.
        (".if 0", "directive"),
        (".endif", "directive"),
    ];
    let mut cases = Vec::new();
    for (line, says) in lines {
        cases.push(Case::json(
            format!("frontend natives {line:?}"),
            "PUT",
            "/frontends/other",
            &with(frontend(), "/natives/0", json!(line)),
            400,
            says,
        ));
        cases.push(Case::json(
            format!("backend natives {line:?}"),
            "PUT",
            "/backends/other",
            &with(static_backend(), "/natives/0", json!(line)),
            400,
            says,
        ));
    }
    cases.push(Case::json(
        "frontend natives naming a backend that does not exist",
        "PUT",
        "/frontends/other",
        &with(
            frontend(),
            "/natives/0",
            json!("use_backend nowhere if TRUE"),
        ),
        400,
        "HAProxy refused the configuration",
    ));
    cases
}

/// Unicode that looks like ASCII, or hides.
fn unicode_cases() -> Vec<Case> {
    const CYRILLIC_A: &str = "\u{430}";
    vec![
        Case::json(
            "Cyrillic a in a frontend key",
            "PUT",
            format!("/frontends/{}", encode(&format!("other{CYRILLIC_A}"))),
            &frontend(),
            400,
            "key",
        ),
        Case::json(
            "Cyrillic a sent unencoded in a frontend key",
            "PUT",
            format!("/frontends/other{CYRILLIC_A}"),
            &frontend(),
            400,
            "key",
        ),
        Case::json(
            "Cyrillic a in a backend key",
            "PUT",
            format!("/backends/{}", encode(&format!("{CYRILLIC_A}pp"))),
            &static_backend(),
            400,
            "key",
        ),
        Case::json(
            "Cyrillic a in a member host",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/members/0/host",
                json!(format!("ex{CYRILLIC_A}mple.com")),
            ),
            400,
            "members[0].host",
        ),
        Case::json(
            "Cyrillic a in a backend host",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/host",
                json!(format!("ex{CYRILLIC_A}mple.com")),
            ),
            400,
            "host",
        ),
        Case::json(
            "Cyrillic a in the backend a frontend names",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/backend", json!(format!("{CYRILLIC_A}pp"))),
            400,
            "backend",
        ),
        Case::json(
            "Cyrillic a in a registration name",
            "POST",
            registration_target([&format!("my{CYRILLIC_A}pp"), "1.0.0", "127.0.0.1", "1"]),
            &json!({}),
            400,
            "name",
        ),
        Case::json(
            "fullwidth digits in a bind port",
            "PUT",
            "/frontends/other",
            &with(
                frontend(),
                "/bind",
                json!("*:\u{FF11}\u{FF18}\u{FF11}\u{FF10}\u{FF11}"),
            ),
            400,
            "bind",
        ),
        Case::json(
            "fullwidth digits in a member port",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/members/0/port",
                json!("\u{FF18}\u{FF10}"),
            ),
            400,
            "members[0].port",
        ),
        Case::json(
            "fullwidth digits in a registration port",
            "POST",
            registration_target(["myapp", "1.0.0", "127.0.0.1", "\u{FF18}\u{FF10}"]),
            &json!({}),
            400,
            "port",
        ),
        Case::json(
            "zero-width joiner in a backend key",
            "PUT",
            format!("/backends/{}", encode("app\u{200D}")),
            &static_backend(),
            400,
            "key",
        ),
        Case::json(
            "zero-width space in a rule value",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/rules/0/value", json!("x.example.com\u{200B}")),
            400,
            "rules[0].value",
        ),
        Case::json(
            "RTL override in a natives line",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/natives/0", json!("option \u{202E}forwardfor")),
            400,
            "natives[0]",
        ),
        Case::json(
            "combining accent in a rule backend",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/rules/0/backend", json!("live\u{301}")),
            400,
            "rules[0].backend",
        ),
        Case::json(
            "combining accent in a version",
            "PUT",
            "/backends/other",
            &with(dynamic_backend(), "/version", json!("1.0.0\u{301}")),
            400,
            "version",
        ),
        Case::json(
            "fullwidth letters in a health method",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/health/method",
                json!("\u{FF27}\u{FF25}\u{FF34}"),
            ),
            400,
            "health.method",
        ),
    ]
}

/// Values past every bound: lengths, counts, body size.
fn size_cases() -> Vec<Case> {
    let long_key = "k".repeat(10_000);
    let rule = json!({"type": "path", "operation": "path_beg", "value": "/x", "backend": "app"});
    let member = |port: usize| json!({"host": "127.0.0.1", "port": port});
    let oversized = format!(
        r#"{{"type": "static", "natives": ["option forwardfor"], "pad": "{}"}}"#,
        "x".repeat(2 * BODY_LIMIT)
    );
    vec![
        Case::json(
            "frontend key of 10,000 characters",
            "PUT",
            format!("/frontends/{long_key}"),
            &frontend(),
            400,
            "too long",
        ),
        Case::json(
            "backend key of 10,000 characters",
            "PUT",
            format!("/backends/{long_key}"),
            &static_backend(),
            400,
            "too long",
        ),
        Case::json(
            "body key of 10,000 characters",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/key", json!(long_key)),
            400,
            "key",
        ),
        Case::json(
            "registration name of 10,000 characters",
            "POST",
            registration_target([&long_key, "1.0.0", "127.0.0.1", "1"]),
            &json!({}),
            400,
            "too long",
        ),
        Case::json(
            "natives line of 1,000,000 characters",
            "PUT",
            "/frontends/other",
            &with(
                frontend(),
                "/natives/0",
                json!(format!("option {}", "x".repeat(1_000_000))),
            ),
            400,
            "too long",
        ),
        Case::json(
            "mode of 100,000 characters (the answer must not echo it)",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/mode", json!("h".repeat(100_000))),
            400,
            "mode",
        ),
        Case::json(
            "unknown field named with 100,000 characters",
            "PUT",
            "/frontends/other",
            &json!({"bind": "*:18101", "backend": "app", "f".repeat(100_000): 1}),
            400,
            "unknown field",
        ),
        Case::json(
            "65 natives lines",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/natives",
                json!(vec!["option forwardfor"; 65]),
            ),
            400,
            "too many",
        ),
        Case::json(
            "257 rules",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/rules", json!(vec![rule.clone(); 257])),
            400,
            "too many",
        ),
        Case::json(
            "17 bind addresses",
            "PUT",
            "/frontends/other",
            &with(
                frontend(),
                "/bind",
                json!(
                    (1..=17)
                        .map(|p| format!("*:{}", 20000 + p))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
            400,
            "1 to 16",
        ),
        Case::json(
            "4,097 members",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/members",
                json!((1..=4_097).map(member).collect::<Vec<_>>()),
            ),
            400,
            "too many",
        ),
        Case::json(
            "20,000 members (within the body limit)",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/members",
                json!((1..=20_000).map(member).collect::<Vec<_>>()),
            ),
            400,
            "too many",
        ),
        Case::json(
            "100,000 members",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/members",
                json!(
                    (1..=100_000)
                        .map(|p| member(p % 65_535 + 1))
                        .collect::<Vec<_>>()
                ),
            ),
            413,
            "larger than",
        ),
        Case::json(
            "100,000 rules",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/rules", json!(vec![rule; 100_000])),
            413,
            "larger than",
        ),
        Case::raw(
            "a body of 2 MiB",
            "PUT",
            "/backends/other",
            Some("application/json"),
            oversized,
            413,
            "larger than",
        ),
        Case::json(
            "meta of 5,000 bytes",
            "POST",
            registration_target(REGISTRATION),
            &json!({"secondsToExpire": 60, "notes": "n".repeat(5_000)}),
            400,
            "meta",
        ),
    ]
}

/// Ports out of range or of the wrong type, everywhere a port is given.
fn port_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let json_ports = [
        json!(0),
        json!(65536),
        json!(-1),
        json!(1e3),
        json!(80.5),
        json!(null),
        json!("0"),
        json!("65536"),
        json!("eighty"),
        json!([80]),
    ];
    for port in json_ports {
        cases.push(Case::json(
            format!("member port {port}"),
            "PUT",
            "/backends/other",
            &with(static_backend(), "/members/0/port", port),
            400,
            "members[0].port",
        ));
    }
    for port in [
        "0", "65536", "-1", "1e3", "80.5", "", "18101\n", "18101\t", "18101\r",
    ] {
        cases.push(Case::json(
            format!("bind port {port:?}"),
            "PUT",
            "/frontends/other",
            &with(frontend(), "/bind", json!(format!("*:{port}"))),
            400,
            "bind",
        ));
    }
    for port in ["0", "65536", "-1", "1e3", "80.5", "0x50"] {
        cases.push(Case::json(
            format!("registration port {port:?}"),
            "POST",
            registration_target(["myapp", "1.0.0", "127.0.0.1", port]),
            &json!({}),
            400,
            "port",
        ));
        cases.push(Case::json(
            format!("member port {port:?} in the path"),
            "PUT",
            format!("/backends/app/members/127.0.0.1/{}", encode(port)),
            &json!({}),
            400,
            "port",
        ));
    }
    cases
}

/// Keys and paths that try to leave their place.
fn path_cases() -> Vec<Case> {
    let put_frontend = |name: &str, target: &str, status: u16, says: &'static str| {
        Case::json(name, "PUT", target, &frontend(), status, says)
    };
    vec![
        put_frontend("key ..", "/frontends/..", 400, "key"),
        put_frontend("key %2e%2e", "/frontends/%2e%2e", 400, "key"),
        put_frontend("key %2e%2e%2fetc", "/frontends/%2e%2e%2fetc", 400, "key"),
        put_frontend("key ../etc", "/frontends/../etc", 404, "no such route"),
        put_frontend("key a/b", "/frontends/a/b", 404, "no such route"),
        put_frontend("key a%2fb", "/frontends/a%2fb", 400, "key"),
        put_frontend("key with %00", "/frontends/other%00", 400, "key"),
        put_frontend("key .hidden", "/frontends/.hidden", 400, "key"),
        put_frontend("key -f", "/frontends/-f", 400, "key"),
        Case::json(
            "backend key ..%2f..%2fetc%2fpasswd",
            "PUT",
            "/backends/..%2f..%2fetc%2fpasswd",
            &static_backend(),
            400,
            "key",
        ),
        Case::raw(
            "GET of a traversing frontend key",
            "GET",
            "/frontends/..%2fweb",
            None,
            "",
            404,
            "not found",
        ),
        Case::raw(
            "DELETE of a frontend key with a newline",
            "DELETE",
            "/frontends/web%0A",
            None,
            "",
            404,
            "not found",
        ),
        Case::raw(
            "DELETE of a backend key with %00",
            "DELETE",
            "/backends/app%00",
            None,
            "",
            404,
            "not found",
        ),
        Case::raw(
            "DELETE of a registration with a traversing name",
            "DELETE",
            "/registrations/..%2fmyapp/1.0.0/127.0.0.1/1",
            None,
            "",
            404,
            "not found",
        ),
        Case::json(
            "registration name ..%2f..%2fetc",
            "POST",
            "/registrations/..%2f..%2fetc/1.0.0/127.0.0.1/1",
            &json!({}),
            400,
            "name",
        ),
        Case::raw(
            "the dashboard's files by traversal",
            "GET",
            "/ui/../../etc/passwd",
            None,
            "",
            404,
            "no such route",
        ),
        Case::raw(
            "HAProxy's files by an encoded traversal",
            "GET",
            "/haproxy/..%2f..%2fhaproxy.cfg",
            None,
            "",
            404,
            "no such route",
        ),
    ]
}

/// Bodies that are not what they claim, or not JSON objects.
fn body_cases() -> Vec<Case> {
    let form = "bind=*%3A18101&backend=app";
    let multipart =
        "--x\r\nContent-Disposition: form-data; name=\"bind\"\r\n\r\n*:18101\r\n--x--\r\n";
    let frontend_text = frontend().to_string();
    let raw_put = |name: &str, content_type: Option<&'static str>, body: &str, status, says| {
        Case::raw(
            name,
            "PUT",
            "/frontends/other",
            content_type,
            body.to_owned(),
            status,
            says,
        )
    };
    vec![
        raw_put(
            "a form as text/plain",
            Some("text/plain"),
            form,
            415,
            "application/json",
        ),
        raw_put(
            "a form as a form",
            Some("application/x-www-form-urlencoded"),
            form,
            415,
            "application/json",
        ),
        raw_put(
            "a form without content type",
            None,
            form,
            415,
            "application/json",
        ),
        raw_put(
            "multipart form data",
            Some("multipart/form-data; boundary=x"),
            multipart,
            415,
            "application/json",
        ),
        raw_put(
            "XML",
            Some("application/xml"),
            "<frontend bind=\"*:18101\"/>",
            415,
            "application/json",
        ),
        raw_put(
            "truncated JSON",
            Some("application/json"),
            &frontend_text[..frontend_text.len() / 2],
            400,
            "not valid JSON",
        ),
        raw_put(
            "trailing garbage after the object",
            Some("application/json"),
            &format!("{frontend_text} {{}}"),
            400,
            "not valid JSON",
        ),
        raw_put(
            "single quotes",
            Some("application/json"),
            "{'bind': '*:18101', 'backend': 'app'}",
            400,
            "not valid JSON",
        ),
        raw_put(
            "an unquoted value",
            Some("application/json"),
            r#"{"bind": *:18101, "backend": "app"}"#,
            400,
            "not valid JSON",
        ),
        raw_put(
            "a byte-order mark",
            Some("application/json"),
            &format!("\u{FEFF}{frontend_text}"),
            400,
            "not valid JSON",
        ),
        raw_put(
            "a lone surrogate escape",
            Some("application/json"),
            r#"{"bind": "*:18101", "backend": "app\ud800"}"#,
            400,
            "backend",
        ),
        raw_put(
            "NaN",
            Some("application/json"),
            r#"{"bind": "*:18101", "backend": "app", "rules": NaN}"#,
            400,
            "not valid JSON",
        ),
        Case::raw(
            "invalid UTF-8 in a string",
            "PUT",
            "/frontends/other",
            Some("application/json"),
            b"{\"bind\": \"*:18101\", \"backend\": \"app\xff\"}".to_vec(),
            400,
            "backend",
        ),
        raw_put(
            "an empty body",
            Some("application/json"),
            "",
            400,
            "missing field `bind`",
        ),
        raw_put(
            "an array of the fields",
            Some("application/json"),
            r#"[null, "*:18101", "app"]"#,
            400,
            "object",
        ),
        Case::json(
            "a rule as an array of its fields",
            "PUT",
            "/frontends/other",
            &with(
                frontend(),
                "/rules/0",
                json!(["path", null, "path", "/x", "app"]),
            ),
            400,
            "rules[0]",
        ),
        Case::json(
            "a member as an array of its fields",
            "PUT",
            "/backends/other",
            &with(static_backend(), "/members/0", json!(["127.0.0.1", 1])),
            400,
            "members[0]",
        ),
        Case::json(
            "a health check as an array of its fields",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/health",
                json!(["GET", "/", "HTTP/1.1", 2000]),
            ),
            400,
            "health",
        ),
        raw_put(
            "an empty array",
            Some("application/json"),
            "[]",
            400,
            "object",
        ),
        raw_put(
            "a string",
            Some("application/json"),
            r#""*:18101""#,
            400,
            "object",
        ),
        raw_put("a number", Some("application/json"), "42", 400, "object"),
        raw_put("true", Some("application/json"), "true", 400, "object"),
        raw_put("null", Some("application/json"), "null", 400, "object"),
        raw_put(
            "10,000 nested arrays as the body",
            Some("application/json"),
            &nested_arrays(10_000),
            400,
            "object",
        ),
        raw_put(
            "10,000 nested arrays in natives",
            Some("application/json"),
            &format!(
                r#"{{"bind": "*:18101", "backend": "app", "natives": {}}}"#,
                nested_arrays(10_000)
            ),
            400,
            "natives",
        ),
        raw_put(
            "10,000 nested arrays in rules",
            Some("application/json"),
            &format!(
                r#"{{"bind": "*:18101", "backend": "app", "rules": {}}}"#,
                nested_arrays(10_000)
            ),
            400,
            "rules",
        ),
        Case::raw(
            "10,000 nested arrays in meta",
            "POST",
            registration_target(REGISTRATION),
            Some("application/json"),
            format!(
                r#"{{"secondsToExpire": 60, "deep": {}}}"#,
                nested_arrays(10_000)
            ),
            400,
            "nested",
        ),
        Case::raw(
            "10,000 nested objects in meta",
            "POST",
            registration_target(REGISTRATION),
            Some("application/json"),
            format!(
                r#"{{"deep": {}1{}}}"#,
                r#"{"a":"#.repeat(10_000),
                "}".repeat(10_000)
            ),
            400,
            "nested",
        ),
        Case::raw(
            "a heartbeat body that is an array",
            "POST",
            registration_target(REGISTRATION),
            Some("application/json"),
            "[60]",
            400,
            "object",
        ),
        Case::raw(
            "a heartbeat body that is a number",
            "POST",
            registration_target(REGISTRATION),
            Some("application/json"),
            "60",
            400,
            "object",
        ),
        Case::raw(
            "a switch body that is a string",
            "POST",
            "/backends/live",
            Some("application/json"),
            r#""2.0.0""#,
            400,
            "object",
        ),
    ]
}

/// Duplicate and unknown keys.
fn key_cases() -> Vec<Case> {
    let raw_json = |name: &str, method, target: String, body: &str, says| {
        Case::raw(
            name,
            method,
            target,
            Some("application/json"),
            body.to_owned(),
            400,
            says,
        )
    };
    vec![
        raw_json(
            "bind given twice",
            "PUT",
            "/frontends/other".into(),
            r#"{"bind": "*:18101", "bind": "*:18102", "backend": "app"}"#,
            "duplicate",
        ),
        raw_json(
            "a rule's backend given twice",
            "PUT",
            "/frontends/other".into(),
            r#"{"bind": "*:18101", "backend": "app", "rules": [{"type": "path", "operation": "path",
                "value": "/x", "backend": "app", "backend": "live"}]}"#,
            "duplicate",
        ),
        raw_json(
            "a health interval given twice",
            "PUT",
            "/backends/other".into(),
            r#"{"type": "static", "health": {"interval": 2000, "interval": 100}}"#,
            "duplicate",
        ),
        raw_json(
            "a member's port given twice",
            "PUT",
            "/backends/other".into(),
            r#"{"type": "static", "members": [{"host": "127.0.0.1", "port": 1, "port": 2}]}"#,
            "duplicate",
        ),
        raw_json(
            "secondsToExpire given twice in meta",
            "POST",
            registration_target(REGISTRATION),
            r#"{"secondsToExpire": 60, "secondsToExpire": 120}"#,
            "duplicate",
        ),
        raw_json(
            "a key given twice in an object inside meta",
            "POST",
            registration_target(REGISTRATION),
            r#"{"secondsToExpire": 60, "tags": {"zone": "a", "zone": "b"}}"#,
            "duplicate",
        ),
        raw_json(
            "the switch's version given twice",
            "POST",
            "/backends/live".into(),
            r#"{"version": "1.0.0", "version": "9.9.9", "force": true}"#,
            "duplicate",
        ),
        Case::json(
            "an unknown frontend field",
            "PUT",
            "/frontends/other",
            &json!({"bind": "*:18101", "backend": "app", "maxconn": 1}),
            400,
            "unknown field `maxconn`",
        ),
        Case::json(
            "an unknown member field",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/members/0",
                json!({"host": "127.0.0.1", "port": 1, "check": "x"}),
            ),
            400,
            "unknown field `check`",
        ),
        Case::json(
            "an unknown health field",
            "PUT",
            "/backends/other",
            &with(static_backend(), "/health", json!({"timeout": 1})),
            400,
            "unknown field `timeout`",
        ),
        Case::json(
            "an unknown switch field",
            "POST",
            "/backends/live",
            &json!({"version": "1.0.0", "weight": 1}),
            400,
            "unknown field `weight`",
        ),
        Case::json(
            "an unknown member settings field",
            "PUT",
            "/backends/app/members/127.0.0.1/1",
            &json!({"backup": true}),
            400,
            "unknown field `backup`",
        ),
    ]
}

/// Every route with a method it does not have.
fn method_cases() -> Vec<Case> {
    let wrong = [
        ("POST", "/frontends"),
        ("DELETE", "/frontends"),
        ("PATCH", "/frontends/web"),
        ("POST", "/frontends/web"),
        ("PUT", "/backends"),
        ("PATCH", "/backends/app"),
        ("POST", "/backends/app/members"),
        ("GET", "/backends/app/members/127.0.0.1/1"),
        ("POST", "/backends/app/members/127.0.0.1/1"),
        ("DELETE", "/registrations"),
        ("POST", "/registrations/myapp"),
        ("PUT", "/registrations/myapp/1.0.0"),
        ("GET", "/registrations/myapp/1.0.0/127.0.0.1/1"),
        ("PUT", "/registrations/myapp/1.0.0/127.0.0.1/1"),
        ("POST", "/haproxy/config"),
        ("PUT", "/haproxy/status"),
        ("DELETE", "/haproxy/stats"),
        ("POST", "/haproxy/events"),
        ("DELETE", "/mesh"),
        ("POST", "/mesh/peers"),
        ("POST", "/health"),
        ("PUT", "/metrics"),
        ("DELETE", "/ui"),
    ];
    wrong
        .into_iter()
        .map(|(method, target)| {
            Case::json(
                format!("{method} {target}"),
                method,
                target,
                &json!({}),
                405,
                "method not allowed",
            )
        })
        .collect()
}

/// Writes the model refuses for what they mean, not how they are spelled.
fn meaning_cases() -> Vec<Case> {
    let health = |interval: Value| with(static_backend(), "/health/interval", interval);
    let lease = |seconds: Value| json!({ "secondsToExpire": seconds });
    let weight = |w: Value| {
        let mut body = static_backend();
        body["members"][0]["weight"] = w;
        body
    };
    let mut cases = vec![
        Case::json(
            "switch to a version with no live instance",
            "POST",
            "/backends/live",
            &json!({"version": "9.9.9"}),
            409,
            "no live registration",
        ),
        Case::json(
            "switch with force as a string",
            "POST",
            "/backends/live",
            &json!({"version": "9.9.9", "force": "yes"}),
            400,
            "force",
        ),
        Case::json(
            "switch of a static backend",
            "POST",
            "/backends/app",
            &json!({"version": "1.0.0"}),
            400,
            "dynamic",
        ),
        Case::json(
            "switch without a version",
            "POST",
            "/backends/live",
            &json!({}),
            400,
            "version",
        ),
        Case::json(
            "switch of a backend that does not exist",
            "POST",
            "/backends/nowhere",
            &json!({"version": "1.0.0"}),
            404,
            "not found",
        ),
        Case::json(
            "switch whose body names another backend",
            "POST",
            "/backends/live",
            &json!({"key": "app", "version": "1.0.0"}),
            400,
            "key",
        ),
        Case::raw(
            "delete a backend a frontend uses",
            "DELETE",
            "/backends/app",
            None,
            "",
            409,
            "used by",
        ),
        Case::json(
            "a second frontend on the port of the first",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/bind", json!(format!("127.0.0.1:{PORT}"))),
            400,
            "already bound",
        ),
        Case::json(
            "a frontend routing to a backend that does not exist",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/backend", json!("nowhere")),
            400,
            "does not exist",
        ),
        Case::json(
            "a tcp frontend in front of http backends",
            "PUT",
            "/frontends/other",
            &with(frontend(), "/mode", json!("tcp")),
            400,
            "mode",
        ),
        Case::json(
            "a dynamic backend with members",
            "PUT",
            "/backends/other",
            &json!({"type": "dynamic", "name": "myapp", "version": "1.0.0",
                    "members": [{"host": "127.0.0.1", "port": 1}]}),
            400,
            "members",
        ),
        Case::json(
            "a member put on a dynamic backend",
            "PUT",
            "/backends/live/members/127.0.0.1/1",
            &json!({}),
            400,
            "dynamic",
        ),
        Case::json(
            "a member listed twice",
            "PUT",
            "/backends/other",
            &with(
                static_backend(),
                "/members",
                json!([{"host": "127.0.0.1", "port": 1}, {"host": "127.0.0.1", "port": 1}]),
            ),
            400,
            "twice",
        ),
        Case::json(
            "a health check on a tcp backend",
            "PUT",
            "/backends/other",
            &with(static_backend(), "/mode", json!("tcp")),
            400,
            "health",
        ),
        Case::json(
            "an HTTP/1.1 health check without host",
            "PUT",
            "/backends/other",
            &json!({"type": "static", "health": {"httpVersion": "HTTP/1.1"}}),
            400,
            "health.httpVersion",
        ),
    ];
    for interval in [
        json!(0),
        json!(99),
        json!(3_600_001),
        json!(4_294_967_296u64),
        json!(1e100),
        json!(-1),
        json!("2000"),
        json!(null),
    ] {
        cases.push(Case::json(
            format!("health interval {interval}"),
            "PUT",
            "/backends/other",
            &health(interval),
            400,
            "health.interval",
        ));
    }
    for w in [json!(257), json!(-1), json!(1.5), json!("heavy")] {
        cases.push(Case::json(
            format!("member weight {w}"),
            "PUT",
            "/backends/other",
            &weight(w),
            400,
            "members[0].weight",
        ));
    }
    for seconds in [
        json!(0),
        json!(-1),
        json!(1e20),
        json!(86_401),
        json!("10"),
        json!(null),
        json!(0.0001),
    ] {
        cases.push(Case::json(
            format!("secondsToExpire {seconds}"),
            "POST",
            registration_target(REGISTRATION),
            &lease(seconds),
            400,
            "secondsToExpire",
        ));
    }
    cases
}

/// The whole table.
fn cases() -> Vec<Case> {
    [
        injection_cases(),
        section_cases(),
        unicode_cases(),
        size_cases(),
        port_cases(),
        path_cases(),
        body_cases(),
        key_cases(),
        method_cases(),
        meaning_cases(),
        cross_site_cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// What a web page an operator visits could send (cross-site writes: a
/// browser sends a `text/plain` or form POST without asking first) and a
/// DNS-rebinding page (its own host name pointed at the peer).
fn cross_site_cases() -> Vec<Case> {
    let register = "/registrations/shop/2.0.0/203.0.113.9/80";
    let meta = r#"{"secondsToExpire": 86400}"#;
    vec![
        Case::raw(
            "a cross-site text/plain registration",
            "POST",
            register,
            Some("text/plain"),
            meta,
            403,
            "Origin",
        )
        .header("Origin", "http://evil.example"),
        Case::raw(
            "a cross-site form A/B switch",
            "POST",
            "/backends/live",
            Some("application/x-www-form-urlencoded"),
            "version=2.0.0",
            403,
            "Origin",
        )
        .header("Origin", "http://evil.example"),
        Case::raw(
            "a text/plain registration (no Origin: a page that hides it)",
            "POST",
            register,
            Some("text/plain"),
            meta,
            415,
            "application/json",
        ),
        Case::raw(
            "a cross-site JSON registration",
            "POST",
            register,
            Some("application/json"),
            meta,
            403,
            "Origin",
        )
        .header("Origin", "http://evil.example"),
        Case::raw(
            "a cross-site JSON switch from a null origin",
            "POST",
            "/backends/live",
            Some("application/json"),
            r#"{"version": "2.0.0", "force": true}"#,
            403,
            "Origin",
        )
        .header("Origin", "null"),
        Case::raw(
            "a write from another port of the same host",
            "PUT",
            "/backends/other",
            Some("application/json"),
            r#"{"type": "static"}"#,
            403,
            "Origin",
        )
        .header("Origin", "http://127.0.0.1:1"),
        Case::raw(
            "a rebinding page's registration",
            "POST",
            register,
            Some("application/json"),
            meta,
            403,
            "Host",
        )
        .header("Host", "rebound.evil.example"),
        Case::raw(
            "a rebinding page's read",
            "GET",
            "/backends",
            None,
            "",
            403,
            "Host",
        )
        .header("Host", "rebound.evil.example:10000"),
        Case::raw(
            "a Host with a path",
            "GET",
            "/backends",
            None,
            "",
            403,
            "Host",
        )
        .header("Host", "evil.example/127.0.0.1"),
    ]
}

/// What a hostile request must not change on a peer.
#[derive(Debug, PartialEq)]
struct Snapshot {
    digest: String,
    frontends: Value,
    backends: Value,
    registrations: Value,
    config: String,
    haproxy: BTreeMap<&'static str, Value>,
}

impl Snapshot {
    fn of(peer: &Peer) -> Snapshot {
        let read = |path: &str| {
            let (status, body) = peer.get(path);
            assert_eq!(status, 200, "GET {path}: {body}");
            body
        };
        let config = support::http_get(peer.url("/haproxy/config"))
            .and_then(|r| r.text())
            .expect("the rendered configuration");
        let status = peer.haproxy_status();
        let haproxy = [
            "appliedHash",
            "reloads",
            "reloadFailures",
            "runtimeChanges",
            "runtimeFailures",
            "rejected",
            "restarts",
            "lastError",
        ]
        .into_iter()
        .map(|field| (field, status[field].clone()))
        .collect();
        Snapshot {
            digest: peer.digest(),
            frontends: read("/frontends"),
            backends: read("/backends"),
            registrations: read("/registrations"),
            config,
            haproxy,
        }
    }
}

/// Waits until `peer`'s HAProxy sends `/` to both static members and
/// `dyn.example.com` to the registered instance.
fn wait_until_serving(peer: &Peer, members: &[&TestServer], instance: &TestServer) {
    let through = peer.through_haproxy(PORT);
    let answer = |host: &str| match fetch(through, "/", host) {
        Ok((200, body)) => Some(body),
        _ => None,
    };
    for member in members {
        eventually(
            &format!("{} to serve through {}", member.name, peer.spec.name),
            || (answer("example.com")? == member.name).then_some(()),
        );
    }
    eventually(
        &format!("{} to serve through {}", instance.name, peer.spec.name),
        || (answer("dyn.example.com")? == instance.name).then_some(()),
    );
}

/// Why `case`'s answer is wrong, if it is.
fn judge(case: &Case, status: u16, body: &str) -> Option<String> {
    if status != case.status {
        return Some(format!(
            "answered {status}, not {}: {}",
            case.status,
            cut(body)
        ));
    }
    if body.len() > ANSWER_BYTES_MAX {
        return Some(format!("an answer of {} bytes: {}", body.len(), cut(body)));
    }
    let error = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|json| json["error"].as_str().map(str::to_owned));
    match error {
        None => Some(format!("not a JSON error: {}", cut(body))),
        Some(message) if !message.to_lowercase().contains(&case.says.to_lowercase()) => Some(
            format!("the message does not say {:?}: {message}", case.says),
        ),
        Some(_) => None,
    }
}

fn cut(text: &str) -> String {
    text.chars().take(300).collect()
}

#[test]
fn every_hostile_input_is_refused_clearly_and_changes_nothing_on_either_peer() {
    let cluster = Cluster::new("hostile");
    let a = cluster.start_with_haproxy("a", &[]);
    let b = cluster.start_with_haproxy("b", &[&a]);
    wait_for_mesh(&[&a, &b]);
    let one = TestServer::start("static-1");
    let two = TestServer::start("static-2");
    let instance = TestServer::start("1.0.0#0");
    let member = |s: &TestServer| json!({"host": "127.0.0.1", "port": s.port()});
    ok(a.post(
        &format!("/registrations/myapp/1.0.0/127.0.0.1/{}", instance.port()),
        json!({"secondsToExpire": 3600, "zone": "a"}),
    ));
    ok(a.put(
        "/backends/app",
        json!({"type": "static", "host": "example.com", "members": [member(&one), member(&two)],
               "health": {"uri": "/", "httpVersion": "HTTP/1.1", "interval": 1000}}),
    ));
    ok(b.put(
        "/backends/live",
        json!({"type": "dynamic", "name": "myapp", "version": "1.0.0"}),
    ));
    wait_for_convergence(&[&a, &b]);
    ok(a.put(
        "/frontends/web",
        json!({"bind": format!("*:{PORT}"), "backend": "app", "natives": ["option forwardfor"],
               "rules": [{"type": "header", "header": "host", "operation": "hdr_dom",
                          "value": "dyn.example.com", "backend": "live"}]}),
    ));
    wait_for_convergence(&[&a, &b]);
    for peer in [&a, &b] {
        wait_until_serving(peer, &[&one, &two], &instance);
        peer.wait_until_applied();
    }
    let before = [Snapshot::of(&a), Snapshot::of(&b)];

    let cases = cases();
    let mut failures = Vec::new();
    let mut by_status = BTreeMap::<u16, usize>::new();
    let mut digests = [a.digest(), b.digest()];
    for (index, case) in cases.iter().enumerate() {
        // Alternate peers, so that both APIs take hostile input.
        let peer = if index % 2 == 0 { &a } else { &b };
        let mut headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        if let Some(content_type) = case.content_type {
            headers.push(("Content-Type", content_type));
        }
        let answer = raw_request_with(peer.api, case.method, &case.target, &headers, &case.body);
        let verdict = match &answer {
            Ok((status, body)) => {
                *by_status.entry(*status).or_default() += 1;
                judge(case, *status, body)
            }
            Err(error) => Some(format!("no answer: {error}")),
        };
        let now = [a.digest(), b.digest()];
        let verdict = verdict.or_else(|| (now != digests).then(|| "the state changed".to_owned()));
        if let Some(why) = verdict {
            failures.push(format!("{} {}: {why}", case.name, case.method));
        }
        digests = now;
    }
    let summary: Vec<String> = by_status
        .iter()
        .map(|(status, count)| format!("{status}: {count}"))
        .collect();
    println!(
        "hostile input: {} cases ({}), {} failed",
        cases.len(),
        summary.join(", "),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} hostile inputs were not refused cleanly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    wait_for_convergence(&[&a, &b]);
    assert_eq!([Snapshot::of(&a), Snapshot::of(&b)], before);
    for peer in [&a, &b] {
        wait_until_serving(peer, &[&one, &two], &instance);
    }

    // The bodies the table spoils are accepted as they are: each row was
    // refused for what it changed, not for a mistake in its base.
    ok(a.put("/backends/other", static_backend()));
    ok(b.put("/backends/other", dynamic_backend()));
    ok(a.put("/frontends/other", frontend()));
    ok(b.post(
        &registration_target(REGISTRATION),
        json!({"secondsToExpire": 60}),
    ));
    a.assert_haproxy_workers_unprivileged();
    b.assert_haproxy_workers_unprivileged();
}

#[test]
fn a_natives_line_cannot_read_the_peers_environment() {
    // The allow-list refuses `$` in double quotes: the line is written on a
    // peer that takes any line, to show HAProxy's own environment is empty.
    let cluster = Cluster::new("hostile-env");
    let peer = cluster.start_unrestricted_with_haproxy("a");
    let member = TestServer::start("member");
    ok(peer.put(
        "/backends/app",
        json!({"type": "static", "members": [{"host": "127.0.0.1", "port": member.port()}]}),
    ));
    // HAProxy expands both spellings in double quotes; the peer runs with
    // RUST_LOG set (support::PeerSpec), so a leak would show "info".
    ok(peer.put(
        "/frontends/leak",
        json!({"bind": format!("*:{PORT}"), "backend": "app", "natives": [
            r#"http-request return status 200 content-type text/plain string "[${RUST_LOG}|$RUST_LOG]""#
        ]}),
    ));

    let body = eventually("the frontend to answer", || {
        match fetch(peer.through_haproxy(PORT), "/", "example.com") {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    });

    assert_eq!(body, "[|]");
    peer.assert_haproxy_workers_unprivileged();
}
