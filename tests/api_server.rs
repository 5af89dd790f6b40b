//! Specifies the REST API's HTTP server (`api::server`): slow, silent and
//! greedy clients are closed or refused and counted, and never keep
//! another client from being served; and the API over HTTPS.
//!
//! The server runs in-process on 127.0.0.1 in front of the real router
//! (with the in-memory peer of `support::memory`); clients bind source
//! addresses of their own in 127.0.0.0/8 to stand for different hosts.
//! The last test starts a real peer with `--api-tls-*`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aqueduct::api::server::{self, ApiTls, ApiTlsError, ServerOptions};
use aqueduct::api::{ApiOptions, EVENT_STREAMS_PER_IP_MAX, router};
use aqueduct::certs::{self, NodeName, PemPair};
use aqueduct::crdt::{Replica, ReplicaId};
use aqueduct::daemon::Listening;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

mod support;
use support::memory::{Store, spawn_peer};
use support::{Cluster, DEADLINE, TempDir, counter, first_stdout_line};

// ---------------------------------------------------------------------------
// Harness

/// A server on 127.0.0.1 (ephemeral port), stopped when dropped.
struct Server {
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

impl Server {
    async fn start(options: ServerOptions) -> Server {
        Server::start_with(options, ApiOptions::default()).await
    }

    /// A server whose router has `api` options.
    async fn start_with(options: ServerOptions, api: ApiOptions) -> Server {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let replica = Replica::new(ReplicaId::new(0x1234).expect("non-zero id"));
        let app = router(spawn_peer(replica, Store::Works), api);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(server::serve(listener, app, options, stopped));
        Server { addr, _stop: stop }
    }

    /// A connection from 127.0.0.`host`.
    async fn connect_from(&self, host: u8) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))
            .expect("bind the client address");
        socket.connect(self.addr).await.expect("connect")
    }

    /// `count` connections from 127.0.0.`host`, kept open while held.
    async fn hold(&self, host: u8, count: usize) -> Vec<TcpStream> {
        let mut held = Vec::with_capacity(count);
        for _ in 0..count {
            held.push(self.connect_from(host).await);
        }
        held
    }

    /// `GET path` from 127.0.0.`host` on a connection of its own: the
    /// status code and the body.
    async fn get_from(&self, host: u8, path: &str) -> (u16, String) {
        let mut stream = self.connect_from(host).await;
        exchange(&mut stream, path).await
    }

    async fn metrics(&self) -> String {
        let (status, body) = self.get_from(9, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Options with short timeouts, so that the tests do not wait long.
fn quick() -> ServerOptions {
    ServerOptions {
        header_timeout: Duration::from_secs(1),
        ..ServerOptions::default()
    }
}

/// Sends `GET path` (connection closed after) and reads the whole answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    status_and_body(&answer)
}

fn status_and_body(answer: &str) -> (u16, String) {
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

/// Whether the server closes `stream` (end of file or reset) within
/// [`DEADLINE`], whatever it sends before.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let drain = async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, drain).await.is_ok()
}

/// The head of an answer to `GET path` on a kept-alive connection.
async fn open_stream(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
            .await
            .expect("an answer in time")
            .expect("read");
        assert_eq!(read, 1, "closed before the head ended: {head:?}");
        head.push(byte[0]);
    }
    status_and_body(&String::from_utf8_lossy(&head)).0
}

// ---------------------------------------------------------------------------
// Timeouts

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let server = Server::start(quick()).await;
    let mut silent = server.connect_from(2).await;
    assert!(closed_by_server(&mut silent).await);
    let metrics = server.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            r#"aqueduct_api_connections_timed_out_total{reason="header"}"#
        ),
        1
    );
}

#[tokio::test]
async fn a_connection_with_an_unfinished_head_is_closed_after_the_header_timeout() {
    let server = Server::start(quick()).await;
    let mut slow = server.connect_from(2).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("send");
    assert!(closed_by_server(&mut slow).await);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(quick()).await;
    let mut kept = server.connect_from(2).await;
    assert_eq!(open_stream(&mut kept, "/health").await, 200);
    assert!(closed_by_server(&mut kept).await);
}

#[tokio::test]
async fn a_stalled_request_body_is_closed_after_the_idle_timeout() {
    let server = Server::start(ServerOptions {
        idle_timeout: Duration::from_secs(1),
        ..ServerOptions::default()
    })
    .await;
    let mut stalled = server.connect_from(2).await;
    stalled
        .write_all(
            b"PUT /backends/web HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"ty",
        )
        .await
        .expect("send");
    assert!(closed_by_server(&mut stalled).await);
    let metrics = server.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            r#"aqueduct_api_connections_timed_out_total{reason="idle"}"#
        ),
        1
    );
}

#[tokio::test]
async fn a_body_that_trickles_in_is_answered_408_after_the_body_deadline() {
    let server = Server::start_with(
        ServerOptions::default(),
        ApiOptions {
            body_deadline: Duration::from_secs(1),
            ..ApiOptions::default()
        },
    )
    .await;
    let stream = server.connect_from(2).await;
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            b"PUT /backends/web HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .await
        .expect("send");
    // A byte every 100 ms: never idle, never done (100 bytes take 10 s).
    let trickle = tokio::spawn(async move {
        for _ in 0..99 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut answer = vec![0; 512];
    let read = tokio::time::timeout(DEADLINE, reader.read(&mut answer))
        .await
        .expect("an answer before the body is complete")
        .expect("read");
    trickle.abort();
    let head = String::from_utf8_lossy(&answer[..read]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
}

// ---------------------------------------------------------------------------
// Connection caps

#[tokio::test]
async fn a_connection_beyond_the_per_address_cap_is_closed_at_once_and_counted() {
    let server = Server::start(ServerOptions {
        max_connections_per_ip: 4,
        ..ServerOptions::default()
    })
    .await;
    let _held = server.hold(2, 4).await;
    let mut one_more = server.connect_from(2).await;
    assert!(closed_by_server(&mut one_more).await);
    let metrics = server.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            r#"aqueduct_api_connections_refused_total{reason="per_ip"}"#
        ),
        1
    );
    // The four held, and the scrape's own.
    assert_eq!(counter(&metrics, "aqueduct_api_connections_open"), 5);
}

#[tokio::test]
async fn another_address_is_served_while_one_holds_its_whole_share() {
    let server = Server::start(ServerOptions {
        max_connections_per_ip: 4,
        ..ServerOptions::default()
    })
    .await;
    let _held = server.hold(2, 4).await;
    assert_eq!(server.get_from(3, "/health").await.0, 200);
}

#[tokio::test]
async fn a_connection_beyond_the_global_cap_is_closed_at_once_and_counted() {
    let server = Server::start(ServerOptions {
        max_connections: 3,
        ..ServerOptions::default()
    })
    .await;
    let mut held = vec![
        server.connect_from(2).await,
        server.connect_from(3).await,
        server.connect_from(4).await,
    ];
    let mut one_more = server.connect_from(5).await;
    assert!(closed_by_server(&mut one_more).await);
    // A place for the scrape.
    drop(held.pop());
    let metrics = poll_metrics(&server).await;
    assert_eq!(
        counter(
            &metrics,
            r#"aqueduct_api_connections_refused_total{reason="global"}"#
        ),
        1
    );
}

/// `/metrics`, retried until a place is free for the scrape (one closed
/// connection takes a moment to give its place back).
async fn poll_metrics(server: &Server) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut stream = server.connect_from(9).await;
        let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        if answer.starts_with("HTTP/1.1 200") {
            return status_and_body(&answer).1;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no place for a scrape"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// Event streams

#[tokio::test]
async fn one_address_at_its_event_stream_share_leaves_another_its_stream() {
    let server = Server::start(ServerOptions::default()).await;
    let mut streams = Vec::new();
    for _ in 0..EVENT_STREAMS_PER_IP_MAX {
        let mut stream = server.connect_from(2).await;
        assert_eq!(open_stream(&mut stream, "/events").await, 200);
        streams.push(stream);
    }
    let mut refused = server.connect_from(2).await;
    assert_eq!(open_stream(&mut refused, "/haproxy/events").await, 503);
    let mut dashboard = server.connect_from(3).await;
    assert_eq!(open_stream(&mut dashboard, "/events").await, 200);
}

#[tokio::test]
async fn an_event_stream_outlives_the_header_timeout() {
    let options = quick();
    let server = Server::start(options.clone()).await;
    let mut stream = server.connect_from(2).await;
    assert_eq!(open_stream(&mut stream, "/events").await, 200);
    // Nothing is sent on an idle stream but a keep-alive every 15 s: the
    // header clock must not run while an answer is being streamed.
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(options.header_timeout * 3, stream.read(&mut buffer)).await;
    assert!(read.is_err(), "the stream ended or sent: {read:?}");
}

// ---------------------------------------------------------------------------
// HTTPS

/// A node certificate for `peer-a` (its DNS name) in `dir/tls`, and the CA
/// that signed it.
fn issue_certificate(dir: &TempDir) -> std::path::PathBuf {
    let ca = dir.path().join("ca");
    certs::init_ca(&ca).expect("a CA");
    let tls = dir.path().join("tls");
    certs::issue(&ca, &NodeName::new("peer-a").expect("name"), &tls).expect("a certificate");
    tls
}

/// `GET path` over TLS, trusting `tls/ca.pem` and expecting `peer-a`.
async fn get_over_tls(addr: SocketAddr, tls: &std::path::Path, path: &str) -> (u16, String) {
    exchange(&mut connect_tls(addr, tls).await, path).await
}

/// A TLS connection to `addr`, trusting `tls/ca.pem` and expecting
/// `peer-a`.
async fn connect_tls(
    addr: SocketAddr,
    tls: &std::path::Path,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = server::client_tls_config(&tls.join("ca.pem")).expect("client TLS");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("peer-a").expect("a DNS name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// The certificate the server presented on `stream`.
fn presented(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    let certificates = stream.get_ref().1.peer_certificates();
    certificates.expect("a certificate")[0].clone()
}

/// A server of `peer-a`'s certificate in `dir/tls` (see
/// [`issue_certificate`]), and a copy of its TLS identity to replace it
/// through.
async fn https_server(dir: &TempDir) -> (Server, ApiTls) {
    let tls = issue_certificate(dir);
    let api_tls = ApiTls::load(&tls.join("node.pem"), &tls.join("node.key")).expect("TLS");
    let server = Server::start(ServerOptions {
        tls: Some(api_tls.clone()),
        ..quick()
    })
    .await;
    (server, api_tls)
}

/// A new certificate for `name` from the CA in `dir/ca`, in `dir/<out>`.
fn reissue(dir: &TempDir, name: &str, out: &str) -> PemPair {
    let out = dir.path().join(out);
    let name = NodeName::new(name).expect("name");
    certs::issue(&dir.path().join("ca"), &name, &out).expect("a certificate");
    PemPair::node(&out).expect("the new pair")
}

fn der_of(pair: &PemPair) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pair.cert().1).expect("a PEM certificate")
}

#[tokio::test]
async fn https_serves_a_client_that_trusts_the_ca() {
    let dir = TempDir::new("api-https");
    let tls = issue_certificate(&dir);
    let api_tls = ApiTls::load(&tls.join("node.pem"), &tls.join("node.key")).expect("TLS");
    assert!(
        api_tls.host_names().iter().any(|name| name == "peer-a"),
        "the certificate's names are the API's own: {:?}",
        api_tls.host_names()
    );
    let server = Server::start(ServerOptions {
        tls: Some(api_tls),
        ..quick()
    })
    .await;
    let (status, body) = get_over_tls(server.addr, &tls, "/health").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections_while_open_ones_go_on() {
    let dir = TempDir::new("api-https-replace");
    let (server, mut api_tls) = https_server(&dir).await;
    let tls = dir.path().join("tls");
    let mut open = connect_tls(server.addr, &tls).await;
    let old = presented(&open);
    let pair = reissue(&dir, "peer-a", "tls-new");

    api_tls.replace(&pair).expect("the same host names");
    let fresh = connect_tls(server.addr, &tls).await;

    assert_eq!(presented(&fresh), der_of(&pair));
    assert_ne!(presented(&fresh), old);
    assert_eq!(exchange(&mut open, "/health").await.0, 200);
}

#[tokio::test]
async fn a_replacement_for_other_host_names_is_refused_and_the_served_certificate_stays() {
    let dir = TempDir::new("api-https-other-names");
    let (server, mut api_tls) = https_server(&dir).await;
    let tls = dir.path().join("tls");
    let old = presented(&connect_tls(server.addr, &tls).await);

    let refused = api_tls.replace(&reissue(&dir, "peer-b", "tls-b"));

    assert!(
        matches!(&refused, Err(ApiTlsError::OtherNames { serving, found, .. })
            if serving.contains(&"peer-a".to_owned()) && found.contains(&"peer-b".to_owned())),
        "{refused:?}"
    );
    assert_eq!(presented(&connect_tls(server.addr, &tls).await), old);
}

#[tokio::test]
async fn a_client_that_never_starts_the_tls_handshake_is_closed_after_the_header_timeout() {
    let dir = TempDir::new("api-https-silent");
    let tls = issue_certificate(&dir);
    let server = Server::start(ServerOptions {
        tls: Some(ApiTls::load(&tls.join("node.pem"), &tls.join("node.key")).expect("TLS")),
        ..quick()
    })
    .await;
    let mut silent = server.connect_from(2).await;
    assert!(closed_by_server(&mut silent).await);
}

#[tokio::test]
async fn a_peer_with_api_tls_says_https_and_serves_health_over_it() {
    let cluster = Cluster::new("api-https-peer");
    let mut spec = cluster.peer("peer-a");
    let cert = spec.tls_dir.join("node.pem");
    let key = spec.tls_dir.join("node.key");
    spec.extra = vec![
        "--api-tls-cert".to_owned(),
        cert.display().to_string(),
        "--api-tls-key".to_owned(),
        key.display().to_string(),
    ];
    let mut child = spec.spawn();
    let line = first_stdout_line(&mut child);
    let listening = Listening::parse(&line);
    let answer = match &listening {
        Some(listening) if listening.https => {
            Some(get_over_tls(listening.api, &spec.tls_dir, "/health").await)
        }
        _ => None,
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains(" api=https://"), "{line}");
    assert_eq!(answer.map(|(status, _)| status), Some(200), "{line}");
}

#[test]
fn a_peer_whose_api_certificate_cannot_be_read_refuses_to_start_and_names_the_file() {
    let cluster = Cluster::new("api-https-missing");
    let mut spec = cluster.peer("peer-a");
    let missing = spec.tls_dir.join("no-such-cert.pem");
    spec.extra = vec![
        "--api-tls-cert".to_owned(),
        missing.display().to_string(),
        "--api-tls-key".to_owned(),
        spec.tls_dir.join("node.key").display().to_string(),
    ];
    let mut child = spec.spawn();
    let status = support::eventually("the peer exits", || child.try_wait().ok().flatten());
    assert!(!status.success());
    let log = std::fs::read_to_string(&spec.log).unwrap_or_default();
    assert!(log.contains("no-such-cert.pem"), "{log}");
}

#[test]
fn ctl_reaches_an_https_api_with_its_ca_and_a_token_and_refuses_it_without_the_ca() {
    // A peer named as the host clients dial, so that its node certificate
    // serves for the API too.
    let cluster = Cluster::new("api-https-ctl");
    let mut spec = cluster.peer("localhost");
    spec.extra = vec![
        "--api-tls-cert".to_owned(),
        spec.tls_dir.join("node.pem").display().to_string(),
        "--api-tls-key".to_owned(),
        spec.tls_dir.join("node.key").display().to_string(),
        "--api-token".to_owned(),
        "tls-token".to_owned(),
    ];
    let mut child = spec.spawn();
    let line = first_stdout_line(&mut child);
    let api = Listening::parse(&line)
        .map(|listening| format!("https://localhost:{}", listening.api.port()));
    let ca = spec.tls_dir.join("ca.pem").display().to_string();
    let answers = api.as_ref().map(|api| {
        (
            support::ctl(
                &[
                    "--api",
                    api,
                    "--ca",
                    &ca,
                    "--token",
                    "tls-token",
                    "--json",
                    "backends",
                    "list",
                ],
                &[],
            ),
            support::ctl(
                &["--api", api, "--token", "tls-token", "backends", "list"],
                &[],
            ),
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    let Some((trusted, untrusted)) = answers else {
        panic!("the peer did not start: {line}");
    };
    assert!(trusted.0, "with the CA: {}", trusted.2);
    assert_eq!(trusted.1.trim(), "[]");
    assert!(
        !untrusted.0,
        "without the CA the certificate must not be trusted"
    );
}
