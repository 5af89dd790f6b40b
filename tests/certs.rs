//! Certificates: creating the cluster CA and node certificates, loading and
//! checking a TLS directory, mutual TLS between QUIC endpoints, replacing
//! a node's certificate while its endpoints run, and revocations.

use std::error::Error;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aqueduct::certs::{
    self, CaRevocationVerifier, CertError, CertificateInfo, MESH_SERVER_NAME, NodeName,
    NodeValidity, PemPair, TlsIdentity, ensure_self_made, init_ca, issue, issue_for, peer_id_of,
    peer_of,
};
use aqueduct::gossip::wire::ALPN;
use aqueduct::gossip::{PeerId, Revocation, RevocationVerifier};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

type TestResult = Result<(), Box<dyn Error>>;

/// How long a handshake or an echo may take before a test gives up.
const DEADLINE: Duration = Duration::from_secs(10);

/// A unique directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "aqueduct-certs-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover from an earlier run with the same pid would make
        // "refuses to overwrite" tests fail for the wrong reason.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn name(s: &str) -> NodeName {
    NodeName::new(s).expect("valid node name")
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// A CA in `dir/<ca>` and a node `node` issued by it into `dir/<node>`;
/// returns the node's TLS dir.
fn node_of(dir: &TempDir, ca: &str, node: &str) -> PathBuf {
    issued_into(dir, ca, node, node)
}

/// A CA in `dir/<ca>` (made if missing) and a certificate for `node`
/// issued by it into `dir/<out>`; returns that directory.
fn issued_into(dir: &TempDir, ca: &str, node: &str, out: &str) -> PathBuf {
    let ca_dir = dir.join(ca);
    if !ca_dir.join(certs::CA_CERT_FILE).exists() {
        init_ca(&ca_dir).expect("init_ca");
    }
    let tls_dir = dir.join(out);
    issue(&ca_dir, &name(node), &tls_dir).expect("issue");
    tls_dir
}

/// A new certificate and key for `node` from the CA in `dir/<ca>`, read
/// as a replacement would be.
fn reissued(dir: &TempDir, ca: &str, node: &str) -> PemPair {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let out = format!("{node}-reissued-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    PemPair::node(&issued_into(dir, ca, node, &out)).expect("read the new pair")
}

/// Accepts every connection on `endpoint` and echoes every stream on it;
/// reports the certificate each client presented, and keeps serving.
fn serve_echoes(endpoint: quinn::Endpoint) -> mpsc::UnboundedReceiver<CertificateInfo> {
    let (report, certificates) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(connection) = incoming.await else {
                continue;
            };
            let _ = report.send(peer_of(&connection).expect("a client certificate"));
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    let data = recv.read_to_end(1024).await.expect("read request");
                    send.write_all(&data).await.expect("write echo");
                    send.finish().expect("finish echo");
                }
            });
        }
    });
    certificates
}

/// Connects to `server`; the connection, kept open.
async fn connect(client: &quinn::Endpoint, server: SocketAddr) -> quinn::Connection {
    let connecting = client.connect(server, MESH_SERVER_NAME).expect("connect");
    timeout(DEADLINE, connecting)
        .await
        .expect("handshake within the deadline")
        .expect("handshake")
}

/// Sends `payload` on a new stream of `connection`; the echo.
async fn echo_on(connection: &quinn::Connection, payload: &[u8]) -> Vec<u8> {
    timeout(DEADLINE, async {
        let (mut send, mut recv) = connection.open_bi().await.expect("open stream");
        send.write_all(payload).await.expect("write");
        send.finish().expect("finish");
        recv.read_to_end(1024).await.expect("read echo")
    })
    .await
    .expect("echo within the deadline")
}

fn identity(tls_dir: &Path) -> TlsIdentity {
    TlsIdentity::load(tls_dir).expect("load identity")
}

fn server(identity: &TlsIdentity) -> quinn::Endpoint {
    let crypto = identity.server_crypto().expect("server crypto");
    let config = quinn::ServerConfig::with_crypto(crypto);
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("address")).expect("bind server")
}

fn client(identity: &TlsIdentity) -> quinn::Endpoint {
    let crypto = identity.client_crypto().expect("client crypto");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("bind client");
    endpoint.set_default_client_config(quinn::ClientConfig::new(crypto));
    endpoint
}

/// The rustls pieces of an outsider: the certificate and key of `own_tls_dir`
/// (issued by some other CA), while trusting the cluster's public `ca.pem`
/// from `trusted_tls_dir` — what anyone who copied that file could build.
struct Outsider {
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Outsider {
    fn new(own_tls_dir: &Path, trusted_tls_dir: &Path) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(trusted_tls_dir.join(certs::CA_CERT_FILE));
        roots
            .add(ca.expect("cluster ca.pem"))
            .expect("trust cluster CA");
        let cert = CertificateDer::from_pem_file(own_tls_dir.join(certs::NODE_CERT_FILE));
        let key = PrivateKeyDer::from_pem_file(own_tls_dir.join(certs::NODE_KEY_FILE));
        Self {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            roots: Arc::new(roots),
            chain: vec![cert.expect("outsider node.pem")],
            key: key.expect("outsider node.key"),
        }
    }

    fn client(self) -> quinn::Endpoint {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(self.roots)
            .with_client_auth_cert(self.chain, self.key)
            .expect("client certificate");
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(config).expect("QUIC client config");
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("bind client");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        endpoint
    }

    fn server(self) -> quinn::Endpoint {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots, self.provider.clone())
                .build()
                .expect("client verifier");
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain, self.key)
            .expect("server certificate");
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(config).expect("QUIC server config");
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("address"))
            .expect("bind server")
    }
}

fn addr_of(endpoint: &quinn::Endpoint) -> SocketAddr {
    endpoint.local_addr().expect("local address")
}

/// What the server side of a test saw.
#[derive(Debug)]
enum Served {
    /// The handshake failed.
    Refused,
    /// The handshake completed but no stream arrived.
    NoStream,
    /// A stream arrived and was echoed; the peer as its certificate says.
    Echoed(NodeName, PeerId),
}

/// Accepts one connection on `endpoint`, echoes one stream, and reports.
fn serve_one_echo(endpoint: quinn::Endpoint) -> oneshot::Receiver<Served> {
    let (report, outcome) = oneshot::channel();
    tokio::spawn(async move {
        let Some(incoming) = endpoint.accept().await else {
            return;
        };
        let served = match incoming.await {
            Err(_) => Served::Refused,
            Ok(connection) => match connection.accept_bi().await {
                Err(_) => Served::NoStream,
                Ok((mut send, mut recv)) => {
                    let data = recv.read_to_end(1024).await.expect("read request");
                    send.write_all(&data).await.expect("write echo");
                    send.finish().expect("finish echo");
                    let CertificateInfo {
                        name: peer,
                        peer: peer_id,
                        ..
                    } = peer_of(&connection).expect("peer identity");
                    // Keep the connection open until the client has read.
                    connection.closed().await;
                    Served::Echoed(peer, peer_id)
                }
            },
        };
        let _ = report.send(served);
    });
    outcome
}

/// Connects to `server`, sends `payload` on a new stream and returns the
/// echo and the server's identity.
async fn echo_through(
    client: &quinn::Endpoint,
    server: SocketAddr,
    payload: &[u8],
) -> Result<(Vec<u8>, NodeName, PeerId), Box<dyn Error + Send + Sync>> {
    let connection = client.connect(server, MESH_SERVER_NAME)?.await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(payload).await?;
    send.finish()?;
    let echo = recv.read_to_end(1024).await?;
    let CertificateInfo {
        name: peer,
        peer: peer_id,
        ..
    } = peer_of(&connection)?;
    connection.close(0u32.into(), b"done");
    Ok((echo, peer, peer_id))
}

#[test]
fn init_ca_writes_a_certificate_and_a_private_key() {
    let dir = TempDir::new();
    let files = init_ca(&dir.join("nested/ca")).expect("init_ca");

    assert!(
        fs::read_to_string(&files.cert)
            .expect("ca.pem")
            .contains("BEGIN CERTIFICATE")
    );
    assert!(
        fs::read_to_string(&files.key)
            .expect("ca.key")
            .contains("PRIVATE KEY")
    );
    assert_eq!(mode_of(&files.key), 0o600);
}

#[test]
fn a_second_init_ca_is_refused_and_changes_nothing() -> TestResult {
    let dir = TempDir::new();
    let files = init_ca(&dir.0).expect("first init_ca");
    let before = (fs::read(&files.cert)?, fs::read(&files.key)?);

    let err = init_ca(&dir.0).expect_err("second init_ca must be refused");

    assert!(matches!(err, CertError::AlreadyExists { .. }), "{err}");
    let after = (fs::read(&files.cert)?, fs::read(&files.key)?);
    assert_eq!(before, after);
    Ok(())
}

#[test]
fn init_ca_refuses_a_dir_holding_only_a_ca_key() -> TestResult {
    let dir = TempDir::new();
    fs::write(dir.join(certs::CA_KEY_FILE), "precious")?;

    let err = init_ca(&dir.0).expect_err("must not write next to an existing key");

    assert!(err.to_string().contains(certs::CA_KEY_FILE), "{err}");
    assert!(!dir.join(certs::CA_CERT_FILE).exists());
    assert_eq!(
        fs::read_to_string(dir.join(certs::CA_KEY_FILE))?,
        "precious"
    );
    Ok(())
}

#[test]
fn issue_writes_a_complete_tls_dir() -> TestResult {
    let dir = TempDir::new();
    let ca = init_ca(&dir.join("ca")).expect("init_ca");

    let files = issue(&dir.join("ca"), &name("node-1"), &dir.join("node-1")).expect("issue");

    assert!(fs::read_to_string(&files.cert)?.contains("BEGIN CERTIFICATE"));
    assert!(fs::read_to_string(&files.key)?.contains("PRIVATE KEY"));
    assert_eq!(mode_of(&files.key), 0o600);
    assert_eq!(fs::read(&files.ca)?, fs::read(&ca.cert)?);
    Ok(())
}

#[test]
fn issue_refuses_to_overwrite_a_node() -> TestResult {
    let dir = TempDir::new();
    let tls_dir = node_of(&dir, "ca", "node-1");
    let key_before = fs::read(tls_dir.join(certs::NODE_KEY_FILE))?;

    let err = issue(&dir.join("ca"), &name("node-1"), &tls_dir).expect_err("must refuse");

    assert!(matches!(err, CertError::AlreadyExists { .. }), "{err}");
    assert_eq!(fs::read(tls_dir.join(certs::NODE_KEY_FILE))?, key_before);
    Ok(())
}

#[test]
fn node_names_outside_the_dns_label_rules_are_refused() {
    let too_long = "a".repeat(64);
    for bad in [
        "Node1",
        "node.1",
        "node\n1",
        too_long.as_str(),
        "",
        "-node",
        "node-",
        "nöde",
    ] {
        let err = NodeName::new(bad).expect_err(bad);
        assert!(
            matches!(err, CertError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
        assert!(bad.parse::<NodeName>().is_err(), "{bad:?}");
    }
}

#[test]
fn dns_labels_are_node_names() {
    let longest = "a".repeat(63);
    for good in ["n", "node-1", "0", "a-b-c", longest.as_str()] {
        let parsed: NodeName = good.parse().expect(good);
        assert_eq!(parsed.as_str(), good);
        assert_eq!(parsed.to_string(), good);
    }
}

#[test]
fn the_peer_id_depends_only_on_the_name() {
    assert_eq!(peer_id_of(&name("node-1")), peer_id_of(&name("node-1")));
    assert_ne!(peer_id_of(&name("node-1")), peer_id_of(&name("node-2")));
}

#[test]
fn load_reads_the_name_and_peer_id_from_the_certificate() {
    let dir = TempDir::new();
    let tls_dir = node_of(&dir, "ca", "node-7");

    let loaded = identity(&tls_dir);

    assert_eq!(loaded.name(), &name("node-7"));
    assert_eq!(loaded.peer_id(), peer_id_of(&name("node-7")));
}

#[test]
fn a_missing_file_is_an_error_naming_it() -> TestResult {
    let dir = TempDir::new();
    let tls_dir = node_of(&dir, "ca", "node-1");
    let key = tls_dir.join(certs::NODE_KEY_FILE);
    fs::remove_file(&key)?;

    let err = TlsIdentity::load(&tls_dir).expect_err("key is missing");

    assert!(
        matches!(&err, CertError::Missing { path } if *path == key),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_corrupted_node_certificate_is_an_error_naming_the_file() -> TestResult {
    let dir = TempDir::new();
    let tls_dir = node_of(&dir, "ca", "node-1");
    let cert = tls_dir.join(certs::NODE_CERT_FILE);
    let pem = fs::read_to_string(&cert)?;
    fs::write(&cert, &pem[..pem.len() / 2])?;

    let err = TlsIdentity::load(&tls_dir).expect_err("corrupted certificate");

    assert!(
        err.to_string().starts_with(&cert.display().to_string()),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_certificate_block_with_garbage_inside_is_not_a_certificate() -> TestResult {
    let dir = TempDir::new();
    let tls_dir = node_of(&dir, "ca", "node-1");
    let cert = tls_dir.join(certs::NODE_CERT_FILE);
    fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    )?;

    let err = TlsIdentity::load(&tls_dir).expect_err("garbage certificate");

    assert!(
        matches!(&err, CertError::NotCertificate { path, .. } if *path == cert),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_key_from_another_issue_is_an_error_naming_the_key() -> TestResult {
    let dir = TempDir::new();
    let tls_dir = node_of(&dir, "ca", "node-1");
    let other = node_of(&dir, "ca", "node-2");
    let key = tls_dir.join(certs::NODE_KEY_FILE);
    fs::copy(other.join(certs::NODE_KEY_FILE), &key)?;

    let err = TlsIdentity::load(&tls_dir).expect_err("key of another node");

    assert!(
        matches!(&err, CertError::KeyMismatch { path, .. } if *path == key),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_node_certificate_from_another_ca_is_an_error_naming_the_file() -> TestResult {
    let dir = TempDir::new();
    let tls_dir = node_of(&dir, "ca", "node-1");
    let foreign = node_of(&dir, "foreign-ca", "node-2");
    fs::copy(
        foreign.join(certs::CA_CERT_FILE),
        tls_dir.join(certs::CA_CERT_FILE),
    )?;

    let err = TlsIdentity::load(&tls_dir).expect_err("certificate of another CA");

    let cert = tls_dir.join(certs::NODE_CERT_FILE);
    assert!(
        matches!(&err, CertError::Untrusted { path, .. } if *path == cert),
        "{err}"
    );
    Ok(())
}

#[test]
fn issue_refuses_a_ca_key_that_does_not_match_its_certificate() -> TestResult {
    let dir = TempDir::new();
    init_ca(&dir.join("ca")).expect("init_ca");
    init_ca(&dir.join("other-ca")).expect("init_ca");
    let key = dir.join("ca").join(certs::CA_KEY_FILE);
    fs::remove_file(&key)?;
    fs::copy(dir.join("other-ca").join(certs::CA_KEY_FILE), &key)?;

    let err = issue(&dir.join("ca"), &name("node-1"), &dir.join("node-1")).expect_err("mismatch");

    assert!(
        matches!(&err, CertError::KeyMismatch { path, .. } if *path == key),
        "{err}"
    );
    assert!(!dir.join("node-1").join(certs::NODE_CERT_FILE).exists());
    Ok(())
}

#[tokio::test]
async fn nodes_of_one_cluster_exchange_bytes_and_learn_each_others_names() {
    let dir = TempDir::new();
    let alpha = identity(&node_of(&dir, "ca", "alpha"));
    let beta = identity(&node_of(&dir, "ca", "beta"));
    let listener = server(&alpha);
    let served = serve_one_echo(listener.clone());
    let dialler = client(&beta);

    let (echo, server_name, server_id) = timeout(
        DEADLINE,
        echo_through(&dialler, addr_of(&listener), b"hello mesh"),
    )
    .await
    .expect("echo within the deadline")
    .expect("echo");

    assert_eq!(echo, b"hello mesh");
    assert_eq!((server_name, server_id), (name("alpha"), alpha.peer_id()));
    match timeout(DEADLINE, served)
        .await
        .expect("server reports")
        .expect("server ran")
    {
        Served::Echoed(client_name, client_id) => {
            assert_eq!((client_name, client_id), (name("beta"), beta.peer_id()));
        }
        other => panic!("server did not echo: {other:?}"),
    }
}

#[tokio::test]
async fn a_client_of_a_foreign_ca_gets_no_stream_through() {
    let dir = TempDir::new();
    let member_dir = node_of(&dir, "ca", "member");
    let intruder_dir = node_of(&dir, "foreign-ca", "intruder");
    let listener = server(&identity(&member_dir));
    let served = serve_one_echo(listener.clone());
    let dialler = Outsider::new(&intruder_dir, &member_dir).client();

    let echoed = timeout(
        DEADLINE,
        echo_through(&dialler, addr_of(&listener), b"let me in"),
    )
    .await
    .expect("the intruder's stream I/O must fail within the deadline, not hang");

    assert!(echoed.is_err(), "the intruder got an echo: {echoed:?}");
    let served = timeout(DEADLINE, served)
        .await
        .expect("server reports")
        .expect("server ran");
    assert!(
        !matches!(served, Served::Echoed(..)),
        "server accepted a stream: {served:?}"
    );
}

#[tokio::test]
async fn a_server_of_a_foreign_ca_is_refused_by_the_client() {
    let dir = TempDir::new();
    let impostor_dir = node_of(&dir, "foreign-ca", "impostor");
    let member_dir = node_of(&dir, "ca", "member");
    let listener = Outsider::new(&impostor_dir, &member_dir).server();
    let served = serve_one_echo(listener.clone());
    let dialler = client(&identity(&member_dir));

    let connected = timeout(DEADLINE, async {
        dialler
            .connect(addr_of(&listener), MESH_SERVER_NAME)?
            .await
            .map_err(Box::<dyn Error>::from)
    })
    .await
    .expect("the handshake must end within the deadline");

    assert!(connected.is_err(), "connected to a foreign-CA server");
    let served = timeout(DEADLINE, served)
        .await
        .expect("server reports")
        .expect("server ran");
    assert!(
        !matches!(served, Served::Echoed(..)),
        "server accepted a stream: {served:?}"
    );
}

#[tokio::test]
async fn ensure_self_made_creates_a_tls_dir_that_works() -> TestResult {
    let dir = TempDir::new();
    let tls_dir = dir.join("tls");

    ensure_self_made(&tls_dir, &name("solo"))?;

    let solo = identity(&tls_dir);
    assert_eq!(solo.name(), &name("solo"));
    assert!(
        tls_dir
            .join(certs::SELF_MADE_CA_DIR)
            .join(certs::CA_KEY_FILE)
            .exists()
    );
    let listener = server(&solo);
    let _served = serve_one_echo(listener.clone());
    let (echo, peer, _) = timeout(
        DEADLINE,
        echo_through(&client(&solo), addr_of(&listener), b"x"),
    )
    .await?
    .map_err(|e| e.to_string())?;
    assert_eq!((echo.as_slice(), peer), (&b"x"[..], name("solo")));
    Ok(())
}

#[test]
fn ensure_self_made_changes_nothing_in_a_complete_dir() -> TestResult {
    let dir = TempDir::new();
    let tls_dir = dir.join("tls");
    ensure_self_made(&tls_dir, &name("solo"))?;
    let files = [
        certs::CA_CERT_FILE,
        certs::NODE_CERT_FILE,
        certs::NODE_KEY_FILE,
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| fs::read(tls_dir.join(f)))
        .collect::<Result<_, _>>()?;

    ensure_self_made(&tls_dir, &name("solo"))?;

    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| fs::read(tls_dir.join(f)))
        .collect::<Result<_, _>>()?;
    assert_eq!(before, after);
    Ok(())
}

#[test]
fn ensure_self_made_refuses_a_half_complete_dir_naming_what_is_missing() -> TestResult {
    let dir = TempDir::new();
    let tls_dir = dir.join("tls");
    ensure_self_made(&tls_dir, &name("solo"))?;
    fs::remove_file(tls_dir.join(certs::NODE_KEY_FILE))?;

    let err = ensure_self_made(&tls_dir, &name("solo")).expect_err("half-complete");

    assert!(
        matches!(&err, CertError::Incomplete { missing, .. } if *missing == [certs::NODE_KEY_FILE]),
        "{err}"
    );
    assert!(err.to_string().contains(certs::NODE_KEY_FILE), "{err}");
    Ok(())
}

#[test]
fn issue_for_gives_a_certificate_valid_for_the_days_asked() -> TestResult {
    let dir = TempDir::new();
    let ca = new_ca(&dir);
    let tls_dir = dir.join("node-1");
    let now = unix_now();

    issue_for(&ca, &name("node-1"), &tls_dir, NodeValidity::days(3)?)?;

    let not_after = identity(&tls_dir).certificate().not_after;
    let three_days = 3 * 24 * 60 * 60;
    assert!(
        (now + three_days - 60..=now + three_days + 60).contains(&not_after),
        "not after {not_after}, expected about {}",
        now + three_days
    );
    Ok(())
}

#[test]
fn validities_outside_one_day_to_ten_years_are_refused() {
    for days in [0, -1, 3651, i64::MAX, i64::MIN] {
        let err = NodeValidity::days(days).expect_err("out of bounds");
        assert!(
            matches!(err, CertError::InvalidValidity { .. }),
            "{days}: {err}"
        );
    }
    for text in ["", "three", "3d", "1.5", "99999999999999999999"] {
        let err = text
            .parse::<NodeValidity>()
            .expect_err("not a number of days");
        assert!(
            matches!(err, CertError::InvalidValidity { .. }),
            "{text:?}: {err}"
        );
    }
    for days in [1, 90, 3650] {
        let validity = NodeValidity::days(days).expect("in bounds");
        assert_eq!(i64::from(validity.as_days()), days);
    }
}

#[test]
fn a_certificate_that_would_outlive_its_ca_is_not_issued() -> TestResult {
    let dir = TempDir::new();
    let ca = new_ca(&dir);
    let out = dir.join("node-1");

    // The CA was made a moment ago for 3650 days: a node certificate for
    // 3650 days from now would end after it.
    let err = issue_for(&ca, &name("node-1"), &out, NodeValidity::days(3650)?)
        .expect_err("outlives the CA");

    assert!(matches!(err, CertError::OutlivesCa { .. }), "{err}");
    assert!(!out.join(certs::NODE_CERT_FILE).exists());
    Ok(())
}

/// What [`reconnect_around_a_replacement`] saw.
struct AroundReplacement {
    /// alpha's certificate before and after the replacement.
    old: CertificateInfo,
    new: CertificateInfo,
    /// The connection made before the replacement, and the one after.
    before: quinn::Connection,
    after: quinn::Connection,
    /// The certificates the server was presented, in order.
    presented: mpsc::UnboundedReceiver<CertificateInfo>,
}

/// Nodes alpha and beta of one CA, one serving and the other dialling
/// (alpha serves if `alpha_serves`): a connection, then alpha's pair
/// replaced with a new one, then a second connection.
async fn reconnect_around_a_replacement(alpha_serves: bool) -> AroundReplacement {
    let dir = TempDir::new();
    let mut alpha = identity(&node_of(&dir, "ca", "alpha"));
    let beta = identity(&node_of(&dir, "ca", "beta"));
    let (serving, dialling) = if alpha_serves {
        (&alpha, &beta)
    } else {
        (&beta, &alpha)
    };
    let listener = server(serving);
    let presented = serve_echoes(listener.clone());
    let dialler = client(dialling);
    let before = connect(&dialler, addr_of(&listener)).await;
    let old = alpha.certificate().clone();

    let new = alpha
        .replace(&reissued(&dir, "ca", "alpha"))
        .expect("a valid pair for the same node")
        .clone();
    let after = connect(&dialler, addr_of(&listener)).await;
    assert_ne!(new.serial, old.serial);
    AroundReplacement {
        old,
        new,
        before,
        after,
        presented,
    }
}

#[tokio::test]
async fn a_replaced_certificate_is_presented_by_new_server_handshakes_while_open_connections_go_on()
{
    let seen = reconnect_around_a_replacement(true).await;

    assert_eq!(peer_of(&seen.before).expect("certificate"), seen.old);
    assert_eq!(peer_of(&seen.after).expect("certificate"), seen.new);
    assert_eq!(echo_on(&seen.before, b"still here").await, b"still here");
    assert!(seen.before.close_reason().is_none());
}

#[tokio::test]
async fn a_replaced_certificate_is_presented_by_new_client_handshakes_while_open_connections_go_on()
{
    let mut seen = reconnect_around_a_replacement(false).await;

    assert_eq!(seen.presented.recv().await, Some(seen.old));
    assert_eq!(seen.presented.recv().await, Some(seen.new));
    assert_eq!(echo_on(&seen.before, b"still here").await, b"still here");
    assert!(seen.before.close_reason().is_none());
}

#[test]
fn a_certificate_file_over_the_size_bound_is_refused() -> TestResult {
    let dir = TempDir::new();
    let tls_dir = node_of(&dir, "ca", "alpha");
    let oversize = usize::try_from(certs::PEM_BYTES_MAX)? + 1;
    fs::write(tls_dir.join(certs::NODE_CERT_FILE), vec![b'A'; oversize])?;

    let err = PemPair::node(&tls_dir).expect_err("too large");

    assert!(matches!(err, CertError::TooLarge { .. }), "{err}");
    Ok(())
}

/// Replaces `alpha`'s pair with `pair`, which must be refused; checks that
/// nothing changed and returns the error.
fn refused_replacement(alpha: &mut TlsIdentity, pair: &PemPair) -> CertError {
    let (certificate, fingerprint) = (alpha.certificate().clone(), alpha.fingerprint());
    let err = alpha.replace(pair).expect_err("refused");
    assert_eq!(alpha.certificate(), &certificate, "{err}");
    assert_eq!(alpha.fingerprint(), fingerprint, "{err}");
    err
}

#[test]
fn a_replacement_for_another_node_is_refused_and_the_pair_in_use_stays() {
    let dir = TempDir::new();
    let mut alpha = identity(&node_of(&dir, "ca", "alpha"));

    let err = refused_replacement(&mut alpha, &reissued(&dir, "ca", "beta"));

    assert!(
        matches!(&err, CertError::OtherNode { running, found, .. }
            if *running == name("alpha") && *found == name("beta")),
        "{err}"
    );
}

#[test]
fn a_half_written_replacement_is_refused_and_the_pair_in_use_stays() -> TestResult {
    let dir = TempDir::new();
    let alpha_dir = node_of(&dir, "ca", "alpha");
    let mut alpha = identity(&alpha_dir);
    // The new certificate is in place, its key not yet.
    let new = issued_into(&dir, "ca", "alpha", "alpha-new");
    fs::copy(
        new.join(certs::NODE_CERT_FILE),
        alpha_dir.join(certs::NODE_CERT_FILE),
    )?;

    let err = refused_replacement(&mut alpha, &PemPair::node(&alpha_dir)?);

    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    Ok(())
}

#[test]
fn a_replacement_from_another_ca_is_refused_and_the_pair_in_use_stays() {
    let dir = TempDir::new();
    let mut alpha = identity(&node_of(&dir, "ca", "alpha"));

    let err = refused_replacement(&mut alpha, &reissued(&dir, "other-ca", "alpha"));

    assert!(matches!(err, CertError::Untrusted { .. }), "{err}");
}

/// A CA in `dir/ca`; its directory.
fn new_ca(dir: &TempDir) -> PathBuf {
    let ca = dir.join("ca");
    init_ca(&ca).expect("init_ca");
    ca
}

fn unix_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit")
}

// ---------------------------------------------------------------------------
// Revocation.

/// `certs revoke` of `node` with the CA in `dir/ca`, written to
/// `dir/<file>`; the revocation read back from the file.
fn revoke(dir: &TempDir, node: &str, file: &str) -> Revocation {
    let out = dir.join(file);
    let written = certs::revoke(&dir.join("ca"), &name(node), &out).expect("revoke");
    let read = certs::read_revocation(&out).expect("the file reads back");
    assert_eq!(read, written);
    read
}

fn verifier_of(ca_dir: &Path) -> CaRevocationVerifier {
    let ca = CertificateDer::from_pem_file(ca_dir.join(certs::CA_CERT_FILE)).expect("ca.pem");
    CaRevocationVerifier::new(&ca).expect("a CA certificate")
}

#[test]
fn a_revocation_signed_by_the_cluster_ca_verifies() {
    let dir = TempDir::new();
    node_of(&dir, "ca", "mallory");
    let revocation = revoke(&dir, "mallory", "mallory.revocation");

    assert!(verifier_of(&dir.join("ca")).verify(&revocation));
    assert_eq!(revocation.name, "mallory");
    assert_eq!(
        revocation.revoked_at - revocation.not_before_up_to,
        certs::CLOCK_SKEW_ALLOWANCE.as_secs()
    );
}

#[test]
fn a_revocation_signed_by_another_ca_is_refused() {
    let dir = TempDir::new();
    node_of(&dir, "ca", "mallory");
    init_ca(&dir.join("other-ca")).expect("another CA");
    let forged = certs::revoke(
        &dir.join("other-ca"),
        &name("mallory"),
        &dir.join("forged.revocation"),
    )
    .expect("the other CA signs");

    assert!(!verifier_of(&dir.join("ca")).verify(&forged));
}

#[test]
fn a_tampered_revocation_is_refused() {
    let dir = TempDir::new();
    node_of(&dir, "ca", "mallory");
    let genuine = revoke(&dir, "mallory", "mallory.revocation");
    let verifier = verifier_of(&dir.join("ca"));
    let mut flipped = genuine.signature.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let tampered = [
        Revocation {
            name: "alice".to_owned(),
            ..genuine.clone()
        },
        Revocation {
            not_before_up_to: genuine.not_before_up_to + 3600,
            ..genuine.clone()
        },
        Revocation {
            revoked_at: genuine.revoked_at + 1,
            ..genuine.clone()
        },
        Revocation {
            signature: flipped,
            ..genuine.clone()
        },
    ];

    for revocation in tampered {
        assert!(!verifier.verify(&revocation), "accepted {revocation:?}");
    }
}

#[test]
fn a_revocation_never_replaces_a_file() -> TestResult {
    let dir = TempDir::new();
    node_of(&dir, "ca", "mallory");
    fs::write(dir.join("taken"), "precious")?;

    let err = certs::revoke(&dir.join("ca"), &name("mallory"), &dir.join("taken"))
        .expect_err("an existing file is refused");

    assert!(matches!(err, CertError::AlreadyExists { .. }), "{err}");
    assert_eq!(fs::read_to_string(dir.join("taken"))?, "precious");
    Ok(())
}

#[test]
fn a_revocation_covers_the_certificates_issued_before_it_and_not_those_issued_after() {
    let dir = TempDir::new();
    let stolen = identity(&node_of(&dir, "ca", "mallory"));
    let revocation = revoke(&dir, "mallory", "mallory.revocation");
    // Issued at once after `certs revoke` returned, within the same minute.
    let reissued = identity(&{
        let tls_dir = dir.join("mallory-again");
        issue(&dir.join("ca"), &name("mallory"), &tls_dir).expect("issue again");
        tls_dir
    });

    stolen.revoked().insert(revocation.clone());
    reissued.revoked().insert(revocation);

    assert!(stolen.own_revocation().is_some());
    assert_eq!(reissued.own_revocation(), None);
}

/// Two nodes of one cluster, `alpha` and `mallory`, where alpha holds a
/// revocation of mallory's certificate.
fn alpha_revoking_mallory(dir: &TempDir) -> (TlsIdentity, TlsIdentity) {
    let alpha = identity(&node_of(dir, "ca", "alpha"));
    let mallory = identity(&node_of(dir, "ca", "mallory"));
    alpha
        .revoked()
        .insert(revoke(dir, "mallory", "mallory.revocation"));
    (alpha, mallory)
}

/// Asserts that `listener` (serving one echo, reported by `served`)
/// refuses the client of `dialler` at the handshake.
async fn assert_server_refuses(
    listener: &quinn::Endpoint,
    served: oneshot::Receiver<Served>,
    dialler: &TlsIdentity,
) {
    let echoed = timeout(
        DEADLINE,
        echo_through(&client(dialler), addr_of(listener), b"still here?"),
    )
    .await
    .expect("the stream I/O must fail within the deadline, not hang");

    assert!(
        echoed.is_err(),
        "the revoked client got an echo: {echoed:?}"
    );
    let served = timeout(DEADLINE, served)
        .await
        .expect("server reports")
        .expect("server ran");
    assert!(matches!(served, Served::Refused), "{served:?}");
}

/// Asserts that the client of `dialler` refuses the server of `serving`.
async fn assert_client_refuses(dialler: &TlsIdentity, serving: &TlsIdentity) {
    let listener = server(serving);
    let _served = serve_one_echo(listener.clone());

    let connected = timeout(DEADLINE, async {
        client(dialler)
            .connect(addr_of(&listener), MESH_SERVER_NAME)?
            .await
            .map_err(Box::<dyn Error>::from)
    })
    .await
    .expect("the handshake must end within the deadline");

    assert!(connected.is_err(), "connected to a revoked server");
}

#[tokio::test]
async fn a_revoked_client_certificate_is_refused_at_the_handshake() {
    let dir = TempDir::new();
    let (alpha, mallory) = alpha_revoking_mallory(&dir);
    let listener = server(&alpha);
    let served = serve_one_echo(listener.clone());

    assert_server_refuses(&listener, served, &mallory).await;
}

#[tokio::test]
async fn a_revoked_server_certificate_is_refused_by_the_client() {
    let dir = TempDir::new();
    let (alpha, mallory) = alpha_revoking_mallory(&dir);

    assert_client_refuses(&alpha, &mallory).await;
}

#[tokio::test]
async fn a_revoked_client_cannot_come_back_by_resuming_an_earlier_session() {
    let dir = TempDir::new();
    let alpha_dir = node_of(&dir, "ca", "alpha");
    let mallory_dir = node_of(&dir, "ca", "mallory");
    let alpha = identity(&alpha_dir);
    let listener = server(&alpha);
    let _presented = serve_echoes(listener.clone());
    // Mallory's own client, not ours: it keeps and offers any session
    // ticket it is given (a resumed TLS 1.3 session would skip the server's
    // client-certificate verifier).
    let mallory = Outsider::new(&mallory_dir, &alpha_dir).client();
    let member = connect(&mallory, addr_of(&listener)).await;
    // A round trip after the handshake: any ticket has arrived by then.
    assert_eq!(echo_on(&member, b"a member").await, b"a member");
    member.close(0u32.into(), b"done");

    alpha
        .revoked()
        .insert(revoke(&dir, "mallory", "mallory.revocation"));
    let again = timeout(
        DEADLINE,
        echo_through(&mallory, addr_of(&listener), b"resumed?"),
    )
    .await
    .expect("the stream I/O must fail within the deadline, not hang");

    assert!(again.is_err(), "the revoked client got back in: {again:?}");
}

#[tokio::test]
async fn a_replaced_identity_keeps_enforcing_revocations_on_both_sides() {
    let dir = TempDir::new();
    let mut alpha = identity(&node_of(&dir, "ca", "alpha"));
    let mallory = identity(&node_of(&dir, "ca", "mallory"));
    let listener = server(&alpha);
    let served = serve_one_echo(listener.clone());

    alpha
        .replace(&reissued(&dir, "ca", "alpha"))
        .expect("a valid pair for the same node");
    alpha
        .revoked()
        .insert(revoke(&dir, "mallory", "mallory.revocation"));

    // The server made before the replacement refuses mallory, and a
    // client made after it refuses mallory's server.
    assert_server_refuses(&listener, served, &mallory).await;
    assert_client_refuses(&alpha, &mallory).await;
}

#[test]
fn a_revoked_replacement_is_refused_and_the_pair_in_use_stays() {
    let dir = TempDir::new();
    // A pair of mallory's issued before the revocation (a stolen one)...
    let stolen = reissued(&dir, "ca", "mallory");
    let revocation = revoke(&dir, "mallory", "mallory.revocation");
    // ...while mallory runs with one issued after it.
    let mut mallory = identity(&node_of(&dir, "ca", "mallory"));
    mallory.revoked().insert(revocation);

    let err = refused_replacement(&mut mallory, &stolen);

    assert!(
        matches!(&err, CertError::Revoked { name: revoked, .. } if *revoked == name("mallory")),
        "{err}"
    );
}
