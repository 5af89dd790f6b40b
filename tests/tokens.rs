//! API tokens against real peers: with a write token and a read token
//! configured (from files), every route but `/health` and the dashboard's
//! files needs one, the read token cannot write, and neither token shows
//! in `ps` or the log; `aqueduct register` and `aqueduct ctl` take the
//! token from a flag, a file or the environment, and a sidecar without
//! one stops with a clear error instead of retrying forever.

mod support;

use std::process::{Command, Stdio};

use serde_json::json;
use support::{Cluster, Peer, Sidecar, binary, static_backend};

const WRITE_TOKEN: &str = "wr1te-token-7f3a";
const READ_TOKEN: &str = "r3ad-token-19c2";
const INSTANCE: &str = "shop@1.0.0:10.0.0.7:8080";

/// A peer whose tokens come from files (0600, as an operator would keep
/// them).
fn guarded_peer(cluster: &Cluster) -> Peer {
    let secrets = cluster.dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    let write = secrets.join("write-token");
    let read = secrets.join("read-token");
    std::fs::write(&write, format!("{WRITE_TOKEN}\n")).expect("write token file");
    std::fs::write(&read, format!("{READ_TOKEN}\n")).expect("read token file");
    let mut spec = cluster.peer("guarded");
    spec.extra = vec![
        "--api-token-file".into(),
        write.display().to_string(),
        "--api-read-token-file".into(),
        read.display().to_string(),
    ];
    spec.start().with_token(WRITE_TOKEN)
}

/// One way a client may be given the write token.
struct TokenWay {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
}

/// The three ways: a flag, a file (written under `cluster`), the
/// environment.
fn token_ways(cluster: &Cluster) -> [TokenWay; 3] {
    let file = cluster.dir.path().join("client-token");
    std::fs::write(&file, format!("{WRITE_TOKEN}\n")).expect("client token file");
    [
        TokenWay {
            name: "flag",
            args: vec!["--token".into(), WRITE_TOKEN.into()],
            env: vec![],
        },
        TokenWay {
            name: "file",
            args: vec!["--token-file".into(), file.display().to_string()],
            env: vec![],
        },
        TokenWay {
            name: "environment",
            args: vec![],
            env: vec![("AQUEDUCT_API_TOKEN", WRITE_TOKEN)],
        },
    ]
}

impl TokenWay {
    /// The way's arguments followed by `more`.
    fn args_with<'a>(&'a self, more: &[&'a str]) -> Vec<&'a str> {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend(more);
        args
    }
}

#[test]
fn every_route_but_health_needs_a_token_and_the_read_token_cannot_write() {
    let cluster = Cluster::new("tokens-routes");
    let peer = guarded_peer(&cluster);
    let peer = &peer;
    let as_who = |token: &'static str| {
        move |method: reqwest::Method, path: &str| {
            let body = (method != reqwest::Method::GET).then(|| static_backend(9000));
            peer.request(method, path, body, Some(token)).0
        }
    };
    // The handle sends the write token by default; a wrong one replaces it.
    let nobody = as_who("not-a-token");
    let reader = as_who(READ_TOKEN);
    let writer = as_who(WRITE_TOKEN);
    assert_eq!(nobody(reqwest::Method::GET, "/health"), 200);
    for path in [
        "/backends",
        "/mesh",
        "/metrics",
        "/haproxy/config",
        "/registrations",
    ] {
        assert_eq!(nobody(reqwest::Method::GET, path), 401, "{path}");
    }
    assert_eq!(reader(reqwest::Method::GET, "/backends"), 200);
    assert_eq!(reader(reqwest::Method::PUT, "/backends/x"), 403);
    assert_eq!(nobody(reqwest::Method::PUT, "/backends/x"), 401);
    assert_eq!(reader(reqwest::Method::GET, "/backends/x"), 404);
    assert_eq!(writer(reqwest::Method::PUT, "/backends/x"), 200);
    assert_eq!(reader(reqwest::Method::GET, "/backends/x"), 200);
}

#[test]
fn tokens_from_files_show_neither_in_ps_nor_in_the_log() {
    let cluster = Cluster::new("tokens-hidden");
    let peer = guarded_peer(&cluster);
    peer.put("/backends/x", static_backend(9000));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", peer.pid())).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline);
    let environ = std::fs::read(format!("/proc/{}/environ", peer.pid())).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    for token in [WRITE_TOKEN, READ_TOKEN] {
        assert!(!cmdline.contains(token), "the command line shows a token");
        assert!(!environ.contains(token), "the environment holds a token");
        assert!(!peer.log().contains(token), "the log shows a token");
    }
}

#[test]
fn the_sidecar_registers_with_a_token_from_a_flag_a_file_or_the_environment() {
    let cluster = Cluster::new("tokens-register");
    let peer = guarded_peer(&cluster);
    for way in token_ways(&cluster) {
        let extra = way.args_with(&["--ttl", "5"]);
        let (mut sidecar, line) =
            Sidecar::start_with_env(&[peer.url("")], INSTANCE, &extra, &way.env);
        let way = way.name;
        assert!(line.starts_with("registered"), "{way}: {line}");
        let (_, listed) = peer.get("/registrations/shop/1.0.0");
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{way}: {listed}");
        assert!(sidecar.terminate().success(), "{way}");
        let (_, listed) = peer.get("/registrations/shop/1.0.0");
        assert_eq!(listed, json!([]), "{way}: deregistered on SIGTERM");
    }
}

#[test]
fn a_sidecar_without_the_token_stops_with_an_error_naming_the_token() {
    let cluster = Cluster::new("tokens-register-refused");
    let peer = guarded_peer(&cluster);
    let output = Command::new(binary())
        .env_remove("AQUEDUCT_API_TOKEN")
        .env_remove("AQUEDUCT_API_TOKEN_FILE")
        .args(["register", "--api", &peer.url(""), INSTANCE])
        .stdin(Stdio::null())
        .output()
        .expect("aqueduct register runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("401") && stderr.contains("token"),
        "{stderr}"
    );
    let (_, listed) = peer.get("/registrations/shop/1.0.0");
    assert_eq!(listed, json!([]));
}

/// `aqueduct ctl` against `peer` with `args` and `env`: (success, stdout,
/// stderr).
fn ctl(peer: &Peer, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let api = peer.url("");
    let mut all = vec!["--api", api.as_str()];
    all.extend(args);
    support::ctl(&all, env)
}

#[test]
fn ctl_reads_and_writes_with_a_token_from_a_flag_a_file_or_the_environment() {
    let cluster = Cluster::new("tokens-ctl");
    let peer = guarded_peer(&cluster);
    for way in token_ways(&cluster) {
        let (name, env) = (way.name, &way.env);
        // A write the API refuses for what it is, not for the token.
        let args = way.args_with(&["switch", "nothing", "--version", "1.0.0"]);
        let (ok, _, stderr) = ctl(&peer, &args, env);
        assert!(!ok && stderr.contains("404"), "{name}: {stderr}");
        let args = way.args_with(&[
            "registrations",
            "register",
            "shop",
            "1.0.0",
            "10.0.0.9",
            "80",
        ]);
        let (ok, _, stderr) = ctl(&peer, &args, env);
        assert!(ok, "{name}: {stderr}");
        let args = way.args_with(&["--json", "backends", "list"]);
        let (ok, stdout, stderr) = ctl(&peer, &args, env);
        assert!(ok, "{name}: {stderr}");
        assert!(stdout.trim_start().starts_with('['), "{name}: {stdout}");
    }
    let (ok, _, stderr) = ctl(&peer, &["backends", "list"], &[]);
    assert!(!ok && stderr.contains("401"), "without a token: {stderr}");
}

#[test]
fn every_write_is_logged_with_its_token_scope_client_and_result_but_never_the_token() {
    let cluster = Cluster::new("tokens-audit");
    let peer = guarded_peer(&cluster);
    let body = Some(static_backend(9000));
    let put = |token| {
        peer.request(
            reqwest::Method::PUT,
            "/backends/audited",
            body.clone(),
            token,
        )
    };
    assert_eq!(put(Some(WRITE_TOKEN)).0, 200);
    assert_eq!(put(Some(READ_TOKEN)).0, 403);
    assert_eq!(put(Some("not-a-token")).0, 401);
    peer.get("/backends/audited");
    let log = peer.log();
    let writes: Vec<&str> = log.lines().filter(|l| l.contains("API write")).collect();
    let line_with = |token: &str, status: &str| {
        writes.iter().any(|line| {
            line.contains("method=PUT")
                && line.contains("path=/backends/audited")
                && line.contains(&format!("token={token}"))
                && line.contains("client=127.0.0.1")
                && line.contains(&format!("status={status}"))
        })
    };
    assert!(line_with("write", "200"), "{writes:#?}");
    assert!(line_with("read", "403"), "{writes:#?}");
    assert!(line_with("none", "401"), "{writes:#?}");
    assert_eq!(writes.len(), 3, "reads are not audited: {writes:#?}");
    for token in [WRITE_TOKEN, READ_TOKEN] {
        assert!(!log.contains(token), "the log shows a token");
    }
}
