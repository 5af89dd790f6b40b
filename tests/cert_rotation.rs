//! Certificate rotation on running peers: a peer's certificate and key are
//! replaced while writes flow through every peer of a mesh of three, taken
//! on SIGHUP or once the files change (a pair caught half-written refused
//! until complete), and then no write has failed, no connection was made
//! again, open connections still carry the old certificate and new
//! handshakes present the new one. A replacement that fails a check
//! (another node's, a key that does not match, another CA's) is refused,
//! logged and counted, and the old certificate stays. A peer serving its
//! node certificate on its HTTPS API too serves the new one there.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aqueduct::certs::{self, CertificateInfo};
use aqueduct::tls_reload;
use rustls::pki_types::pem::PemObject;
use support::hostile::Attacker;
use support::{
    Cluster, MemberWrites, Peer, aqueduct, counter, eventually, member_ports, static_backend,
    wait_for_convergence, wait_for_mesh,
};

/// Writes acknowledged before the rotation starts, and after it ends, at
/// least.
const WRITES_AROUND: usize = 100;
/// The pace of the write load (one client, all peers in turn).
const PACE: std::time::Duration = std::time::Duration::from_millis(10);
/// The validity of the new certificates: short, so that it is told apart
/// from the two years of the ones the peers started with.
const NEW_DAYS: i64 = 3;

const RELOADED: &str = "aqueduct_tls_reloads_total{result=\"ok\"}";
const REFUSED: &str = "aqueduct_tls_reloads_total{result=\"refused\"}";
const DIALLED: &str = "aqueduct_gossip_connections_established_total{side=\"dialled\"}";
const OWN_EXPIRY: &str = "aqueduct_tls_certificate_expiry_timestamp_seconds";
const API_RELOADED: &str = "aqueduct_api_tls_reloads_total{result=\"ok\"}";

/// How the new pair reaches the peer.
#[derive(Clone, Copy, Debug)]
enum Rotation {
    /// Both files put in place, then SIGHUP.
    Hangup,
    /// The certificate put in place, then (once the peer has refused that
    /// half-written pair) the key; no signal.
    FilesOnly,
}

/// What one rotation under writes measured.
#[derive(Debug)]
struct Measured {
    acknowledged: usize,
    failed: u64,
    /// Connections dialled by any peer from just before the rotation to the
    /// end of the writes.
    reconnects: u64,
    /// From the complete pair in place (and SIGHUP sent, if any) to the
    /// peer's metrics showing it taken.
    taken_after: std::time::Duration,
}

#[test]
fn a_certificate_replaced_with_sighup_under_writes_fails_no_write_and_reconnects_nothing() {
    let measured = rotate_under_writes("rotation-hup", Rotation::Hangup);
    eprintln!("rotation with SIGHUP: {measured:?}");
}

#[test]
fn a_certificate_replaced_on_disk_under_writes_is_picked_up_without_a_signal() {
    let measured = rotate_under_writes("rotation-files", Rotation::FilesOnly);
    eprintln!("rotation by file change: {measured:?}");
}

/// Three peers under a write load; peer-b's certificate is replaced as
/// `rotation` says. Checks everything the module promises and returns the
/// numbers.
fn rotate_under_writes(label: &str, rotation: Rotation) -> Measured {
    let cluster = Cluster::new(label);
    let a = cluster.start("peer-a", &[]);
    let b = cluster.start("peer-b", &[&a]);
    let c = cluster.start("peer-c", &[&a]);
    let peers = [&a, &b, &c];
    wait_for_mesh(&peers);
    let (status, body) = a.put("/backends/web", static_backend(9000));
    assert_eq!(status, 200, "{body}");
    let observer = observer(&cluster);
    let old = presented(&observer, &b);

    let writes = MemberWrites::start(peers.iter().map(|p| p.api).collect(), "web", PACE);
    eventually("writes before the rotation", || {
        (writes.acknowledged() >= WRITES_AROUND).then_some(())
    });
    let dialled_before = dialled(&peers);
    // Each of the three pairs of peers dialled at least once: the counter
    // sees the mesh's connections.
    assert!(dialled_before >= 3, "{dialled_before} connections dialled");
    let new_pair = issue(&cluster, &cluster.ca_dir(), "peer-b");
    let tls_dir = &b.spec.tls_dir;
    match rotation {
        Rotation::Hangup => {
            install(&new_pair, tls_dir, certs::NODE_KEY_FILE);
            install(&new_pair, tls_dir, certs::NODE_CERT_FILE);
            b.hangup();
        }
        Rotation::FilesOnly => {
            install(&new_pair, tls_dir, certs::NODE_CERT_FILE);
            eventually("the half-written pair to be refused", || {
                (b.metric(REFUSED) == 1).then_some(())
            });
            install(&new_pair, tls_dir, certs::NODE_KEY_FILE);
        }
    }
    let complete = std::time::Instant::now();
    eventually("the new pair to be taken", || {
        (b.metric(RELOADED) == 1).then_some(())
    });
    let taken_after = complete.elapsed();
    let rotated_at = writes.acknowledged();
    eventually("writes after the rotation", || {
        (writes.acknowledged() >= rotated_at + WRITES_AROUND).then_some(())
    });
    let (acknowledged, failed) = writes.finish();
    let reconnects = dialled(&peers) - dialled_before;

    // New handshakes present the new certificate; the peer says so too.
    let new = presented(&observer, &b);
    assert_ne!(new.serial, old.serial);
    assert_eq!(new.name, old.name);
    let expected = unix_now() + NEW_DAYS * 24 * 60 * 60;
    assert!(
        (expected - 120..=expected).contains(&new.not_after),
        "{new}"
    );
    assert_eq!(b.metric(OWN_EXPIRY), as_u64(new.not_after));
    let refused_half_written = u64::from(matches!(rotation, Rotation::FilesOnly));
    assert_eq!(b.metric(REFUSED), refused_half_written);
    let trigger = match rotation {
        Rotation::Hangup => "SIGHUP",
        Rotation::FilesOnly => "files changed",
    };
    let log = b.log();
    assert!(
        log.lines()
            .any(|l| l.contains("reloaded the node certificate") && l.contains(trigger)),
        "log:\n{log}"
    );
    // The connections to peer-b were kept: the others still hold the
    // certificate it presented when they were made.
    for other in [&a, &c] {
        let held = "aqueduct_tls_peer_certificate_expiry_timestamp_seconds{peer=\"peer-b\"}";
        assert_eq!(other.metric(held), as_u64(old.not_after));
    }

    wait_for_convergence(&peers);
    for peer in peers {
        let ports = member_ports(peer, "web");
        let missing: Vec<_> = acknowledged.iter().filter(|p| !ports.contains(p)).collect();
        assert!(
            missing.is_empty(),
            "{}: missing {missing:?}",
            peer.spec.name
        );
    }
    let measured = Measured {
        acknowledged: acknowledged.len(),
        failed,
        reconnects,
        taken_after,
    };
    assert!(measured.acknowledged >= 2 * WRITES_AROUND, "{measured:?}");
    // Polling needs the files unchanged across two reads a second apart:
    // SIGHUP must be quicker than that, and polling not much slower.
    let limit = match rotation {
        Rotation::Hangup => tls_reload::POLL_EVERY,
        Rotation::FilesOnly => 5 * tls_reload::POLL_EVERY,
    };
    assert!(measured.taken_after < limit, "{measured:?}");
    assert_eq!(
        (measured.failed, measured.reconnects),
        (0, 0),
        "{measured:?}"
    );
    measured
}

#[test]
fn a_replacement_that_fails_a_check_is_refused_logged_and_counted_and_the_old_certificate_stays() {
    let cluster = Cluster::new("rotation-refused");
    let peer = cluster.start("peer-a", &[]);
    let observer = observer(&cluster);
    let original = presented(&observer, &peer);
    let other_ca = cluster.dir.path().join("other-ca");
    aqueduct(&["certs", "init", "--out", path(&other_ca)]);
    let mismatched = {
        let cert = issue(&cluster, &cluster.ca_dir(), "peer-a");
        let key = issue(&cluster, &cluster.ca_dir(), "peer-a");
        std::fs::copy(
            key.join(certs::NODE_KEY_FILE),
            cert.join(certs::NODE_KEY_FILE),
        )
        .expect("copy the key");
        cert
    };
    let cases = [
        (
            "another node's",
            issue(&cluster, &cluster.ca_dir(), "peer-z"),
            "the certificate is for peer-z, but this node is peer-a",
        ),
        (
            "a key that does not match",
            mismatched,
            "the key does not match the certificate",
        ),
        (
            "another CA's",
            issue(&cluster, &other_ca, "peer-a"),
            "not valid under",
        ),
    ];

    for (refused, (case, pair, reason)) in (1..).zip(cases) {
        install(&pair, &peer.spec.tls_dir, certs::NODE_KEY_FILE);
        install(&pair, &peer.spec.tls_dir, certs::NODE_CERT_FILE);
        peer.hangup();

        eventually(case, || (peer.metric(REFUSED) == refused).then_some(()));
        assert_eq!(peer.metric(RELOADED), 0, "{case}");
        assert_eq!(presented(&observer, &peer), original, "{case}");
        assert_eq!(
            peer.metric(OWN_EXPIRY),
            as_u64(original.not_after),
            "{case}"
        );
        let log = peer.log();
        assert!(
            log.lines()
                .any(|l| l.contains("refused the new node certificate") && l.contains(reason)),
            "{case}: no {reason:?} in the log:\n{log}"
        );
    }
}

#[test]
fn a_peer_serving_its_node_certificate_over_https_serves_the_new_one_after_sighup() {
    let cluster = Cluster::new("rotation-https");
    let mut spec = cluster.peer("peer-a");
    let tls_dir = spec.tls_dir.clone();
    spec.extra = ["--api-tls-cert", "--api-tls-key"]
        .iter()
        .zip([certs::NODE_CERT_FILE, certs::NODE_KEY_FILE])
        .flat_map(|(flag, file)| [flag.to_string(), path(&tls_dir.join(file)).to_owned()])
        .collect();
    let peer = spec.start();
    let (old, _) = over_https(&peer, &tls_dir);
    let pair = issue(&cluster, &cluster.ca_dir(), "peer-a");

    install(&pair, &tls_dir, certs::NODE_KEY_FILE);
    install(&pair, &tls_dir, certs::NODE_CERT_FILE);
    peer.hangup();

    eventually("both certificates reloaded", || {
        let (_, metrics) = over_https(&peer, &tls_dir);
        let reloaded = |name| counter(&metrics, name) == 1;
        (reloaded(RELOADED) && reloaded(API_RELOADED)).then_some(())
    });
    // A connection made after the reload (the one that told of it may
    // have been made before).
    let (new, metrics) = over_https(&peer, &tls_dir);
    let new_pem = std::fs::read(pair.join(certs::NODE_CERT_FILE)).expect("node.pem");
    let new_der = rustls::pki_types::CertificateDer::from_pem_slice(&new_pem).expect("PEM");
    assert_ne!(new, old);
    assert_eq!(new, new_der.to_vec());
    let not_after = presented(&observer(&cluster), &peer).not_after;
    let api_expiry = "aqueduct_api_tls_certificate_expiry_timestamp_seconds";
    assert_eq!(counter(&metrics, api_expiry), as_u64(not_after));
}

/// Over a new HTTPS connection to `peer`'s API, whose certificate names
/// `peer-a` and is signed by the CA in `tls_dir`: the certificate it
/// presented (DER) and `GET /metrics`.
fn over_https(peer: &Peer, tls_dir: &Path) -> (Vec<u8>, String) {
    let tls = aqueduct::api::server::client_tls_config(&tls_dir.join(certs::CA_CERT_FILE))
        .expect("client TLS");
    // A client of its own: no connection of an earlier call is reused.
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .resolve("peer-a", peer.api)
        .build()
        .expect("an HTTPS client");
    let url = format!("https://peer-a:{}/metrics", peer.api.port());
    let response = client.get(url).send().expect("GET /metrics over HTTPS");
    let certificate = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(reqwest::tls::TlsInfo::peer_certificate)
        .expect("the server's certificate")
        .to_vec();
    (certificate, response.text().expect("the metrics"))
}

/// A client holding a certificate of the cluster for a name that is not
/// in the mesh: its connections leave the mesh's own alone.
fn observer(cluster: &Cluster) -> Attacker {
    Attacker::member(&cluster.peer("observer").tls_dir)
}

/// The certificate a new connection to `peer`'s gossip port is presented.
fn presented(observer: &Attacker, peer: &Peer) -> CertificateInfo {
    let connection = observer.connect(peer.gossip).expect("a handshake");
    let certificate = certs::peer_of(&connection).expect("a certificate");
    connection.close(0u32.into(), b"seen");
    certificate
}

/// A new certificate and key for `name` from the CA in `ca`, valid for
/// [`NEW_DAYS`], in a directory of its own.
fn issue(cluster: &Cluster, ca: &Path, name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let out = cluster.dir.path().join(format!(
        "issued-{name}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    aqueduct(&[
        "certs",
        "issue",
        "--ca",
        path(ca),
        "--name",
        name,
        "--out",
        path(&out),
        "--days",
        &NEW_DAYS.to_string(),
    ]);
    out
}

/// Puts `file` of directory `from` in place in `tls_dir` as an operator
/// would: copied next to it, then renamed over it.
fn install(from: &Path, tls_dir: &Path, file: &str) {
    let staged = tls_dir.join(format!(".{file}.new"));
    std::fs::copy(from.join(file), &staged).expect("copy");
    std::fs::rename(&staged, tls_dir.join(file)).expect("rename");
}

/// Connections dialled by `peers` so far.
fn dialled(peers: &[&Peer]) -> u64 {
    peers.iter().map(|p| counter(&p.metrics(), DIALLED)).sum()
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

fn as_u64(seconds: i64) -> u64 {
    u64::try_from(seconds).expect("after 1970")
}

fn unix_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit")
}
