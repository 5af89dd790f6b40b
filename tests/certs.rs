//! Certificates: creating the cluster CA and node certificates, loading and
//! checking a TLS directory, and mutual TLS between QUIC endpoints.

use std::error::Error;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aqueduct::certs::{
    self, CaRevocationVerifier, CertError, MESH_SERVER_NAME, NodeName, PeerCertificate,
    TlsIdentity, ensure_self_made, init_ca, issue, peer_id_of, peer_of,
};
use aqueduct::gossip::wire::ALPN;
use aqueduct::gossip::{PeerId, Revocation, RevocationVerifier};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::oneshot;
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
    let ca_dir = dir.join(ca);
    if !ca_dir.join(certs::CA_CERT_FILE).exists() {
        init_ca(&ca_dir).expect("init_ca");
    }
    let tls_dir = dir.join(node);
    issue(&ca_dir, &name(node), &tls_dir).expect("issue");
    tls_dir
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
                    let PeerCertificate {
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
    let PeerCertificate {
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

#[tokio::test]
async fn a_revoked_client_certificate_is_refused_at_the_handshake() {
    let dir = TempDir::new();
    let (alpha, mallory) = alpha_revoking_mallory(&dir);
    let listener = server(&alpha);
    let served = serve_one_echo(listener.clone());

    let echoed = timeout(
        DEADLINE,
        echo_through(&client(&mallory), addr_of(&listener), b"still here?"),
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

#[tokio::test]
async fn a_revoked_server_certificate_is_refused_by_the_client() {
    let dir = TempDir::new();
    let (alpha, mallory) = alpha_revoking_mallory(&dir);
    let listener = server(&mallory);
    let _served = serve_one_echo(listener.clone());

    let connected = timeout(DEADLINE, async {
        client(&alpha)
            .connect(addr_of(&listener), MESH_SERVER_NAME)?
            .await
            .map_err(Box::<dyn Error>::from)
    })
    .await
    .expect("the handshake must end within the deadline");

    assert!(connected.is_err(), "connected to a revoked server");
}
