//! `natives` as an allow-list, against a real peer driving HAProxy 2.6.
//!
//! A write-scope client sends lines that would make HAProxy read a file,
//! open a socket or listener, execute something, read its environment or
//! serve an admin page: each is a 400 naming the line and the word, no
//! answer (of the API or of HAProxy) carries a planted secret, no file
//! changes, and the state, the rendered configuration and HAProxy's status
//! are what they were. Legitimate lines are still taken, rendered and
//! loaded. A write HAProxy refuses is answered without HAProxy's words.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::http::TestServer;
use support::{Cluster, Peer, TempDir, eventually, ok};

/// The frontend's port.
const PORT: u16 = 18310;
/// A line the frontend holds before the table: the table's line is
/// `natives[1]` of a frontend write.
const FRONTEND_LINE: &str = "http-response set-header X-Test yes";

/// Which section a line is written to.
#[derive(Clone, Copy, Debug)]
enum In {
    Frontend,
    Backend,
}

/// A hostile line (`{S}` is the planted secret file, `{D}` a directory
/// where nothing may appear) and the word its refusal must name.
const HOSTILE: &[(In, &str, &str)] = {
    use In::{Backend as B, Frontend as F};
    &[
        // Read a file.
        (B, "filter spoe engine x config {S}", "filter"),
        (F, "filter spoe engine x config {S}", "filter"),
        (B, "filter cache leak", "filter"),
        (F, "acl leak src -f {S}", "-f"),
        (F, "acl leak hdr(x) -M -f {S}", "-M"),
        (F, "http-request deny if { src -f {S} }", "-f"),
        (
            F,
            "http-request set-header X-Leak %[src,map_ip({S})]",
            "map_ip",
        ),
        (
            F,
            "http-request set-header X-Leak %[req.hdr(host),map({S},none)]",
            "map(",
        ),
        (
            F,
            "http-request set-header X-Leak %[req.hdr(host),map_str({S})]",
            "map_str",
        ),
        (
            F,
            "http-request set-header X-Leak %[src,map_ip_int({S},0)]",
            "map_ip_int",
        ),
        (
            F,
            "http-request return status 200 content-type text/plain file {S}",
            "\"file\"",
        ),
        (
            F,
            "http-request return status 200 content-type text/plain lf-file {S}",
            "lf-file",
        ),
        (
            F,
            "http-request deny deny_status 403 errorfile {S}",
            "errorfile",
        ),
        (F, "http-request deny errorfiles leak", "errorfiles"),
        (
            F,
            "http-error status 500 content-type text/plain file {S}",
            "\"file\"",
        ),
        (B, "http-response return status 200 file {S}", "\"file\""),
        (F, "errorfile 503 {S}", "errorfile"),
        (B, "errorfiles leak", "errorfiles"),
        (F, "http-request return status 200 fi\"le\" {S}", "\"file\""),
        (F, "http-request return status 200 'file' {S}", "\"file\""),
        (
            F,
            "http-request return status 200 \"lf-file\" {S}",
            "lf-file",
        ),
        (F, "http-request return status 200 FILE {S}", "FILE"),
        (F, "http-request return status 200 fi\\x6ce {S}", "\\x"),
        (B, "server tls 127.0.0.1:443 ssl crt {S}", "crt"),
        (
            B,
            "server tls 127.0.0.1:443 ssl verify required ca-file {S}",
            "ca-file",
        ),
        (
            B,
            "server tls 127.0.0.1:443 ssl verify none crl-file {S}",
            "crl-file",
        ),
        (B, "default-server ssl crt {S}", "crt"),
        (
            B,
            "load-server-state-from-file local",
            "load-server-state-from-file",
        ),
        (B, "server-state-file-name {S}", "server-state-file-name"),
        // Read the environment.
        (F, "http-request set-header X-Leak %[env(HOME)]", "env"),
        (F, "http-request return status 200 string \"${HOME}\"", "$"),
        (F, "http-request return status 200 string \"$HOME\"", "$"),
        (F, "http-request set-var(txn.x) env(PATH)", "env"),
        (F, "http-response set-header X-Leak \"%[env(PATH)]\"", "env"),
        (F, "unique-id-format %[env(PATH)]", "env"),
        (
            F,
            "http-request return status 200 lf-string \"%[env(PATH)]\"",
            "env",
        ),
        (F, "http-request set-header X-Leak \"$.FILE\"", "$"),
        // Open a socket or a listener.
        (F, "bind unix@{D}/bound.sock mode 666", "bind"),
        (F, "bind 127.0.0.1:18391", "bind"),
        (F, "bind abns@leak", "bind"),
        (F, "bind fd@3", "bind"),
        (F, "\"bind\" 127.0.0.1:18392", "bind"),
        (F, "b\"in\"d 127.0.0.1:18393", "bind"),
        (B, "server admin {D}/admin.sock", "admin.sock"),
        (B, "server admin unix@{D}/admin.sock", "unix@"),
        (B, "server admin abns@haproxy-master", "abns@"),
        (B, "server admin fd@1", "fd@"),
        (B, "server admin sockpair@3", "sockpair@"),
        (B, "server admin ./admin.sock", "./admin.sock"),
        (B, "server x 127.0.0.1:80 socks4 unix@{D}/s.sock", "unix@"),
        (
            B,
            "server x 127.0.0.1:80 check agent-check agent-addr {D}/a.sock",
            "a.sock",
        ),
        (B, "http-check connect addr {D}/check.sock", "check.sock"),
        (B, "tcp-check connect addr unix@{D}/check.sock", "unix@"),
        (B, "server-template leak 1-2 {D}/t.sock", "t.sock"),
        (
            B,
            "server x 127.0.0.1:80 source 0.0.0.0 usesrc clientip",
            "source",
        ),
        (B, "source 0.0.0.0 usesrc clientip", "source"),
        (B, "dispatch 127.0.0.1:80", "dispatch"),
        // Reach a port or an address the client chooses (an open proxy).
        (F, "http-request set-dst hdr_ip(x-dst)", "set-dst"),
        (F, "http-request set-dst-port hdr(x-port)", "set-dst-port"),
        (B, "server x 0.0.0.0:0", "0.0.0.0:0"),
        (B, "server x 127.0.0.1", "127.0.0.1"),
        (B, "server x [::ffff:0.0.0.0]:80", "[::ffff:0.0.0.0]:80"),
        (B, "default-server init-addr 0.0.0.0", "init-addr"),
        // Stall or kill HAProxy: a key file read while parsing, a regex one
        // request makes backtrack until the watchdog kills the worker, a
        // template whose servers take HAProxy minutes to parse.
        (
            F,
            "http-request set-var(txn.x) req.hdr(a),jwt_verify(RS256,{S})",
            "jwt_verify",
        ),
        (
            F,
            "http-request deny if { req.hdr(x) -m reg ^(a|aa)+$ }",
            "-m",
        ),
        (
            F,
            "http-request replace-value x ^(a|aa)+$ y",
            "replace-value",
        ),
        (B, "server-template w 1-30000 127.0.0.1:80", "1-30000"),
        (F, "log {D}/log.sock local0", "log"),
        (F, "log unix@{D}/log.sock local0", "log"),
        (F, "log stdout format raw local0", "log"),
        (F, "log 127.0.0.1:514 local0", "log"),
        // Execute something.
        (B, "option external-check", "external-check"),
        (B, "external-check command /bin/sh", "external-check"),
        (B, "external-check path /bin", "external-check"),
        (F, "http-request lua.leak", "lua.leak"),
        (F, "lua-load {S}", "lua-load"),
        (F, "http-request use-service lua.leak", "use-service"),
        (F, "http-request set-header X-Leak %[lua.leak]", "lua"),
        (
            F,
            "http-request send-spoe-group spoe leak",
            "send-spoe-group",
        ),
        (B, "use-fcgi-app php", "use-fcgi-app"),
        (F, "program leak", "program"),
        // Admin paths and HAProxy's own services.
        (F, "stats enable", "stats"),
        (F, "stats admin if TRUE", "stats"),
        (F, "stats uri /admin", "stats"),
        (F, "stats auth admin:admin", "stats"),
        (
            F,
            "http-request use-service prometheus-exporter",
            "use-service",
        ),
        (
            F,
            "tcp-request content use-service prometheus-exporter",
            "use-service",
        ),
        (F, "use_backend _aqueduct_stats", "_aqueduct_stats"),
        (F, "use_backend %[req.hdr(x-backend)]", "req.hdr"),
        (F, "http-request set-map({S}) %[src] leak", "set-map"),
        (F, "http-request add-acl({S}) %[src]", "add-acl"),
        (F, "http-request del-map({S}) %[src]", "del-map"),
        (F, "http-request del-acl({S}) %[src]", "del-acl"),
        (F, "email-alert mailers leak", "email-alert"),
        (F, ".if defined(HOME)", ".if"),
        (F, ".notice leak", ".notice"),
        (B, "option transparent", "transparent"),
        (B, "option http_proxy", "http_proxy"),
        (B, "mode tcp", "mode"),
        (F, "default_backend _aqueduct_stats", "default_backend"),
        (F, "http-request cache-use leak", "cache-use"),
        (
            F,
            "http-request do-resolve(txn.ip,leak) hdr(host)",
            "do-resolve",
        ),
    ]
};

/// Legitimate frontend lines (with [`FRONTEND_LINE`]).
const FRONTEND_LINES: &[&str] = &[
    FRONTEND_LINE,
    "option forwardfor",
    "option http-buffer-request",
    "timeout client 30s",
    "timeout http-request 10s",
    "acl is_api path_beg -i /api",
    "acl is_old path /old",
    "http-request set-header X-Forwarded-Proto http",
    "http-request set-var(txn.host) req.hdr(host),lower",
    "http-request deny if { path_beg /admin }",
    "http-request redirect location /new code 301 if is_old",
    "http-request return status 200 content-type text/plain string pong if { path /ping }",
    "http-after-response set-header X-After yes",
    "http-response set-header X-Quoted \"a b\"",
    "stick-table type ip size 100k expire 30s store http_req_rate(10s)",
    "http-request track-sc0 src",
    "http-request deny deny_status 429 if { sc_http_req_rate(0) gt 10000 }",
    "capture request header Host len 64",
    "declare capture request len 32",
    "compression algo gzip",
    "errorloc 503 https://status.example.com/",
    "unique-id-format %{+X}o\\ %ci:%cp_%Ts",
    "unique-id-header X-Request-ID",
    "monitor-uri /haproxy-health",
    "rate-limit sessions 10000",
    "maxconn 10000",
    "log global",
];

/// Legitimate backend lines.
const BACKEND_LINES: &[&str] = &[
    "timeout server 30s",
    "timeout connect 3s",
    "retries 2",
    "option redispatch",
    "http-request set-header X-Backend app",
    "http-response set-header X-Served-By app",
    "http-response del-header Server",
    "http-check expect status 200-399",
    "http-reuse safe",
    "cookie SRV insert indirect nocache",
    "compression algo gzip",
    "acl is_post method POST",
    "no log",
];

/// A peer with HAProxy serving backend `app` (one member) behind frontend
/// `web` on `*:PORT`, whose natives are `frontend` and `backend`.
fn serving(label: &str, frontend: &[&str], backend: &[&str]) -> (Cluster, Peer, TestServer) {
    let cluster = Cluster::new(label);
    let peer = cluster.start_with_haproxy("a", &[]);
    let member = TestServer::start("member");
    ok(peer.put("/backends/app", backend_body(&member, backend)));
    ok(peer.put("/frontends/web", frontend_body(frontend)));
    eventually("HAProxy to run frontend web", || {
        let rendered = peer.haproxy_config()?;
        (rendered.contains("\nfrontend web\n") && peer.runs_what_it_rendered()).then_some(())
    });
    peer.assert_haproxy_workers_unprivileged();
    (cluster, peer, member)
}

fn backend_body(member: &TestServer, natives: &[&str]) -> Value {
    json!({"type": "static", "members": [{"host": "127.0.0.1", "port": member.port()}],
           "natives": natives})
}

fn frontend_body(natives: &[&str]) -> Value {
    json!({"bind": format!("*:{PORT}"), "backend": "app", "natives": natives})
}

/// One request through HAProxy: the whole answer, head and body.
fn answer_through(addr: SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("HAProxy listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// 32 random hex digits.
fn random_secret() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_of(path: &Path) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&std::fs::read(path).expect("readable"))
}

/// What must not change: the state, the rendered text, HAProxy's status.
fn snapshot(peer: &Peer) -> (String, String, Value) {
    let status = peer.haproxy_status();
    let kept = ["appliedHash", "reloads", "rejected", "lastError", "pid"];
    (
        peer.digest(),
        peer.haproxy_config().expect("the rendered configuration"),
        kept.iter()
            .map(|k| (k.to_string(), status[k].clone()))
            .collect(),
    )
}

#[test]
fn hostile_natives_lines_are_refused_naming_the_word_and_change_nothing() {
    assert!(HOSTILE.len() >= 60, "{} rows", HOSTILE.len());
    let (_cluster, peer, member) = serving("natives-hostile", &[FRONTEND_LINE], &[]);
    let planted = TempDir::new("natives-planted");
    let secret_file = planted.path().join("secret.txt");
    let secret = random_secret();
    std::fs::write(&secret_file, format!("{secret}\n")).expect("planted");
    let secret_hash = hash_of(&secret_file);
    let before = snapshot(&peer);
    let mut answers = Vec::new();

    for (section, template, word) in HOSTILE {
        let line = template
            .replace("{S}", &secret_file.display().to_string())
            .replace("{D}", &planted.path().display().to_string());
        let (path, body, field) = match section {
            In::Frontend => (
                "/frontends/web",
                frontend_body(&[FRONTEND_LINE, &line]),
                "natives[1]",
            ),
            In::Backend => (
                "/backends/app",
                backend_body(&member, &[&line]),
                "natives[0]",
            ),
        };
        let (status, answer) = peer.put(path, body);
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{section:?} {line:?}: {answer}");
        assert!(
            error.contains(field) && error.contains(word),
            "{section:?} {line:?}: the answer names {field} and {word:?}: {answer}"
        );
        answers.push(answer.to_string());
    }

    assert_eq!(snapshot(&peer), before);
    answers.push(peer.haproxy_config().unwrap_or_default());
    answers.push(peer.haproxy_status().to_string());
    for path in ["/", "/leak", "/admin", "/metrics", "/haproxy-health"] {
        answers.push(answer_through(peer.through_haproxy(PORT), path));
    }
    assert!(
        answers[answers.len() - 5].contains("x-test: yes"),
        "{}",
        answers[answers.len() - 5]
    );
    for answer in &answers {
        assert!(!answer.contains(&secret), "the secret leaked: {answer}");
    }
    assert_eq!(hash_of(&secret_file), secret_hash);
    let entries: Vec<_> = std::fs::read_dir(planted.path())
        .expect("the planted directory")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(entries, ["secret.txt"]);
}

#[test]
fn legitimate_natives_lines_are_accepted_rendered_and_loaded() {
    assert!(FRONTEND_LINES.len() + BACKEND_LINES.len() >= 20);

    let (_cluster, peer, _member) = serving("natives-legit", FRONTEND_LINES, BACKEND_LINES);

    let config = peer.haproxy_config().expect("the rendered configuration");
    for line in FRONTEND_LINES.iter().chain(BACKEND_LINES) {
        assert!(
            config.contains(&format!("\n    {line}\n")),
            "{line:?} is not rendered:\n{config}"
        );
    }
    let status = peer.haproxy_status();
    assert_eq!(status["rejected"], 0, "{status}");
    let addr = peer.through_haproxy(PORT);
    let answer = eventually("an answer through HAProxy", || {
        Some(answer_through(addr, "/")).filter(|a| a.starts_with("HTTP/1.1 200"))
    });
    for header in [
        "x-test: yes",
        "x-after: yes",
        "x-quoted: a b",
        "x-served-by: app",
    ] {
        assert!(answer.contains(header), "{header}: {answer}");
    }
    assert!(answer.trim_end().ends_with("member"), "{answer}");
    assert!(answer_through(addr, "/ping").trim_end().ends_with("pong"));
    assert!(answer_through(addr, "/admin").starts_with("HTTP/1.1 403"));
    assert!(answer_through(addr, "/old").starts_with("HTTP/1.1 301"));
}

#[test]
fn a_write_haproxy_refuses_is_answered_with_the_writers_lines_not_haproxys_words() {
    let (_cluster, peer, member) = serving("natives-haproxy-refuses", &[FRONTEND_LINE], &[]);
    let before = snapshot(&peer);

    let (status, backend) = peer.put(
        "/backends/app",
        backend_body(&member, &["timeout server soon"]),
    );
    let (frontend_status, frontend) = peer.put(
        "/frontends/web",
        frontend_body(&["use_backend missing if { path /x }"]),
    );

    assert_eq!(status, 400, "{backend}");
    assert!(
        backend["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("HAProxy refused the configuration this write would produce"),
        "{backend}"
    );
    assert_eq!(backend["details"]["section"], "backend app");
    assert_eq!(backend["details"]["lines"], json!(["timeout server soon"]));
    assert_eq!(frontend_status, 400, "{frontend}");
    for answer in [backend.to_string(), frontend.to_string()] {
        for haproxy_word in [
            "ALERT",
            "parsing",
            "haproxy.cfg",
            "unexpected",
            "unable to find",
        ] {
            assert!(
                !answer.contains(haproxy_word),
                "{haproxy_word:?} in {answer}"
            );
        }
    }
    assert!(
        peer.log()
            .contains("HAProxy refused the configuration a write to backend app"),
        "HAProxy's message is logged"
    );
    assert_eq!(snapshot(&peer), before);
}

#[test]
fn an_unrestricted_peer_takes_a_line_the_allow_list_refuses_and_says_so_at_start() {
    let cluster = Cluster::new("natives-unrestricted");
    let peer = cluster.start_unrestricted_with_haproxy("a");
    let member = TestServer::start("member");

    ok(peer.put(
        "/backends/app",
        backend_body(&member, &["filter compression", "compression algo gzip"]),
    ));

    assert!(
        peer.log().contains("--natives unrestricted"),
        "{}",
        peer.log()
    );
    let (status, answer) = peer.put(
        "/backends/other",
        json!({"type": "static", "natives": [".if 0"]}),
    );
    assert_eq!(status, 400, "{answer}");
}
