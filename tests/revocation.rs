//! Certificate revocation against real `aqueduct` processes: a member's
//! certificate is revoked with `aqueduct certs revoke` and handed to one
//! peer with `aqueduct ctl revoke`; every reachable peer then refuses that
//! certificate at the handshake and has dropped its connections within a
//! second, a peer that was down learns the revocation when it comes back,
//! and a certificate issued for the same name afterwards is a member again.
//! Revocations not signed by the cluster CA (another CA's, tampered ones,
//! malformed files) are refused with a 4xx and change nothing; a member
//! sending forged ones has one checked per cooldown.
//!
//! The times from `ctl revoke` to each peer refusing the certificate are
//! printed (`revocation-to-refusal`), for BENCHMARKS.md.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::hostile::Attacker;
use support::{Cluster, Peer, PeerSpec, aqueduct, eventually, wait_for_mesh, within};

/// What the issue promises: every reachable peer refuses a revoked
/// certificate within this long.
const REFUSAL_LIMIT: Duration = Duration::from_secs(1);

/// `aqueduct certs revoke` of `name` with `ca_dir`'s CA into `out`.
fn revoke_file(ca_dir: &Path, name: &str, out: &Path) {
    aqueduct(&[
        "certs",
        "revoke",
        "--ca",
        ca_dir.to_str().expect("utf-8"),
        "--name",
        name,
        "--out",
        out.to_str().expect("utf-8"),
    ]);
}

/// `aqueduct ctl revoke FILE` against `peer`: (success, stdout, stderr).
fn ctl_revoke(peer: &Peer, file: &Path) -> (bool, String, String) {
    let api = peer.url("");
    support::ctl(
        &["--api", &api, "revoke", file.to_str().expect("utf-8")],
        &[],
    )
}

/// The revocations `peer` holds (`GET /mesh/revocations`).
fn revocations(peer: &Peer) -> Value {
    let (status, body) = peer.get("/mesh/revocations");
    assert_eq!(status, 200, "GET /mesh/revocations: {body}");
    body
}

fn holds_revocation_of(peer: &Peer, name: &str) -> bool {
    revocations(peer)
        .as_array()
        .is_some_and(|list| list.iter().any(|r| r["name"] == name))
}

/// `peer`'s entry for the peer called `name` in `/mesh/peers`.
fn entry_of(peer: &Peer, name: &str) -> Option<Value> {
    let (_, list) = peer.get("/mesh/peers");
    list.as_array()?.iter().find(|p| p["name"] == name).cloned()
}

/// Whether `peer` refuses a handshake with `attacker`'s certificate: the
/// dial fails, or the peer closes the connection at once (a QUIC client
/// finishes its side of the handshake before the server has checked the
/// client's certificate).
fn refuses_handshake(attacker: &Attacker, peer: &Peer) -> bool {
    match attacker.connect(peer.gossip) {
        Err(_) => true,
        Ok(connection) => matches!(
            attacker.closed(&connection),
            quinn::ConnectionError::ConnectionClosed(_) | quinn::ConnectionError::TransportError(_)
        ),
    }
}

/// Mallory with a certificate issued now, its own directories, joining
/// through `seed`.
fn reissued_mallory(cluster: &Cluster, seed: &Peer) -> PeerSpec {
    let mut spec = cluster.peer("mallory");
    spec.tls_dir = reissue(cluster, "mallory", "mallory-reissued");
    spec.data_dir = cluster.dir.path().join("mallory-reissued").join("data");
    spec.log = cluster.dir.path().join("mallory-reissued").join("log.txt");
    spec.join = vec![seed.gossip];
    spec
}

/// A TLS directory with a new certificate for `name`, issued now.
fn reissue(cluster: &Cluster, name: &str, dir: &str) -> PathBuf {
    let tls = cluster.dir.path().join(dir).join("tls");
    cluster.issue(name, &tls);
    tls
}

#[test]
fn a_revoked_member_is_refused_mesh_wide_also_by_a_peer_that_was_down_and_its_reissued_certificate_is_accepted()
 {
    let cluster = Cluster::new("revocation");
    let a = cluster.start("peer-a", &[]);
    let b = cluster.start("peer-b", &[&a]);
    let mut c = cluster.start("peer-c", &[&a]);
    let mallory = cluster.start("mallory", &[&a]);
    wait_for_mesh(&[&a, &b, &c, &mallory]);
    let stolen = Attacker::member(&mallory.spec.tls_dir);

    // peer-c is down while the revocation is made and spread.
    c.terminate();
    let file = cluster.dir.path().join("mallory.revocation");
    revoke_file(&cluster.ca_dir(), "mallory", &file);
    let start = Instant::now();
    let (ok, _, stderr) = ctl_revoke(&a, &file);
    assert!(ok, "ctl revoke failed: {stderr}");

    let mut took = Vec::new();
    for peer in [&a, &b] {
        within(REFUSAL_LIMIT, "the revocation to reach every peer", || {
            holds_revocation_of(peer, "mallory").then_some(())
        });
        took.push((peer.spec.name.clone(), start.elapsed()));
    }
    for peer in [&a, &b] {
        assert!(
            refuses_handshake(&stolen, peer),
            "{} accepts the revoked certificate",
            peer.spec.name
        );
        assert!(
            peer.metric("aqueduct_connections_revoked_total") >= 1,
            "{} kept mallory's connection open",
            peer.spec.name
        );
        let seen = entry_of(peer, "mallory").expect("mallory is listed");
        assert_eq!(seen["revoked"], true, "{seen}");
        assert!(seen["revokedAt"].is_u64(), "{seen}");
        eventually("mallory to be down", || {
            let state = entry_of(peer, "mallory")?["state"].clone();
            (state == "down").then_some(())
        });
    }

    // Back, peer-c learns the revocation from the others.
    c.restart_on_same_addresses();
    let back = Instant::now();
    eventually("peer-c to learn the revocation", || {
        holds_revocation_of(&c, "mallory").then_some(())
    });
    took.push(("peer-c (after its restart)".to_owned(), back.elapsed()));
    assert!(refuses_handshake(&stolen, &c), "peer-c accepts it");
    for (peer, elapsed) in &took {
        println!(
            "revocation-to-refusal: {peer} {:.1} ms",
            elapsed.as_secs_f64() * 1000.0
        );
    }

    // The operator issues mallory a new certificate: a member again, and a
    // new peer syncs the revocation too.
    let spec = reissued_mallory(&cluster, &a);
    let reissued = spec.start();
    wait_for_mesh(&[&a, &b, &c, &reissued]);
    for peer in [&a, &b, &c] {
        eventually("the re-issued certificate to be accepted", || {
            let seen = entry_of(peer, "mallory")?;
            (seen["state"] == "alive" && seen["revoked"] == false).then_some(())
        });
    }
    eventually("the new peer to sync the revocation", || {
        holds_revocation_of(&reissued, "mallory").then_some(())
    });
    // The stolen certificate is still refused.
    assert!(refuses_handshake(&stolen, &a));
}

/// A member `name` of `cluster` that joined through `target` by hand
/// (an attacker's client speaking the wire format), at restart
/// `generation`, once `target` lists it alive at that generation.
fn member_by_hand(
    cluster: &Cluster,
    target: &Peer,
    name: &str,
    generation: u32,
) -> (Attacker, quinn::Connection) {
    let attacker = Attacker::member(&cluster.peer(name).tls_dir);
    let connection = attacker.connect(target.gossip).expect("a member connects");
    let target_id =
        u64::from_str_radix(target.mesh()["peerId"].as_str().expect("an id"), 16).expect("hex");
    attacker.announce_at(
        &connection,
        name,
        generation,
        aqueduct::gossip::PeerId(target_id),
    );
    eventually(
        &format!("{name} to be a member at generation {generation}"),
        || {
            let seen = entry_of(target, name)?;
            (seen["state"] == "alive" && seen["generation"] == generation).then_some(())
        },
    );
    (attacker, connection)
}

/// Forged revocations a member sends in one burst, one per message.
const FORGED_BURST: u64 = 200;

#[test]
fn a_member_sending_forged_revocations_gets_one_checked_per_cooldown_and_a_genuine_one_still_spreads()
 {
    let cluster = Cluster::new("revocation-forged");
    let a = cluster.start("peer-a", &[]);
    let b = cluster.start("peer-b", &[&a]);
    wait_for_mesh(&[&a, &b]);
    let (eve, connection) = member_by_hand(&cluster, &a, "eve", 0);

    let forged = aqueduct::gossip::Revocation {
        name: "peer-b".to_owned(),
        not_before_up_to: u64::MAX,
        revoked_at: 0,
        signature: vec![0x5a; 64],
    };
    let message = aqueduct::gossip::wire::Message::Revocations(
        aqueduct::gossip::revocations::RevocationExchange::Set {
            list: vec![forged],
            answer: true,
        },
    );
    for _ in 0..FORGED_BURST {
        eve.send(&connection, &message);
    }
    eventually("every forged message to be handled", || {
        let handled = a.metric("aqueduct_gossip_revocations_refused_total")
            + a.metric("aqueduct_gossip_revocations_ignored_total");
        (handled == FORGED_BURST).then_some(())
    });
    assert_eq!(a.metric("aqueduct_gossip_revocations_refused_total"), 1);
    assert!(!holds_revocation_of(&a, "peer-b"));

    let file = cluster.dir.path().join("eve.revocation");
    revoke_file(&cluster.ca_dir(), "eve", &file);
    let (ok, _, stderr) = ctl_revoke(&a, &file);
    assert!(ok, "ctl revoke failed: {stderr}");
    for peer in [&a, &b] {
        eventually("the genuine revocation to reach every peer", || {
            holds_revocation_of(peer, "eve").then_some(())
        });
    }
}

/// One peer, a member revoked on it, for the refusal tests.
fn revoked_once(cluster: &Cluster) -> (Peer, Value) {
    let peer = cluster.start("peer-a", &[]);
    cluster.peer("mallory");
    let file = cluster.dir.path().join("mallory.revocation");
    revoke_file(&cluster.ca_dir(), "mallory", &file);
    let (ok, _, stderr) = ctl_revoke(&peer, &file);
    assert!(ok, "{stderr}");
    let held = revocations(&peer);
    (peer, held)
}

/// Posts `body` to `/mesh/revocations`; asserts a 400 and that nothing
/// changed.
fn refused(peer: &Peer, held: &Value, body: Value) -> Value {
    let (status, answer) = peer.post("/mesh/revocations", body.clone());
    assert_eq!(status, 400, "{body} was answered {status}: {answer}");
    assert_eq!(&revocations(peer), held, "{body} changed the revocations");
    answer
}

#[test]
fn a_revocation_signed_by_another_ca_is_refused_with_a_4xx_and_changes_nothing() {
    let cluster = Cluster::new("revocation-foreign");
    let (peer, held) = revoked_once(&cluster);
    let other = Cluster::new("revocation-other-ca");
    let file = other.dir.path().join("peer-a.revocation");
    revoke_file(&other.ca_dir(), "peer-a", &file);

    let (ok, _, stderr) = ctl_revoke(&peer, &file);

    assert!(!ok, "ctl revoke of a foreign revocation succeeded");
    assert!(stderr.contains("400"), "{stderr}");
    let body = serde_json::from_str(&std::fs::read_to_string(&file).expect("file"))
        .expect("the file is JSON");
    let answer = refused(&peer, &held, body);
    assert_eq!(answer["details"]["field"], "signature", "{answer}");
}

#[test]
fn a_tampered_or_malformed_revocation_is_refused_with_a_4xx_and_changes_nothing() {
    let cluster = Cluster::new("revocation-tampered");
    let (peer, held) = revoked_once(&cluster);
    let genuine = held[0].clone();
    let with = |field: &str, value: Value| {
        let mut body = genuine.clone();
        body[field] = value;
        body
    };
    let later = genuine["notBeforeUpTo"].as_u64().expect("a number") + 7200;

    // Another name, or more certificates, under mallory's signature.
    refused(&peer, &held, with("name", "peer-a".into()));
    refused(&peer, &held, with("notBeforeUpTo", later.into()));
    for body in [
        with("signature", "00".repeat(70).into()),
        with("signature", "not hex".into()),
        with("name", "Not A Node".into()),
        serde_json::json!({ "name": "mallory" }),
        with("extra", true.into()),
    ] {
        refused(&peer, &held, body);
    }
}

#[test]
fn a_revocation_survives_a_restart_of_a_peer_alone() {
    let cluster = Cluster::new("revocation-durable");
    let (mut peer, held) = revoked_once(&cluster);
    let stolen = Attacker::member(&cluster.peer("mallory").tls_dir);

    peer.restart_on_same_addresses();

    assert_eq!(revocations(&peer), held);
    assert!(refuses_handshake(&stolen, &peer));
}

#[test]
fn a_revocation_posted_again_changes_nothing() {
    let cluster = Cluster::new("revocation-replay");
    let (peer, held) = revoked_once(&cluster);

    let (status, answer) = peer.post("/mesh/revocations", held[0].clone());

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, held[0]);
    assert_eq!(revocations(&peer), held);
}

/// Open (review14): fails today. The revoked member announced itself at
/// generation u32::MAX; the revocation declares that identity down, and foca
/// keeps a down identity for a day (`remove_down_after`), and lets it win
/// the conflict against every identity the re-issued peer can take (it
/// renews by one). Needs the identity order to depend on something a
/// member cannot choose (the certificate's notBefore), a wire change.
#[test]
#[ignore = "open: a revoked member's generation keeps its re-issued name out for a day"]
fn a_member_that_claimed_the_highest_generation_before_its_revocation_does_not_keep_its_reissued_name_out()
 {
    let cluster = Cluster::new("revocation-generation");
    let a = cluster.start("peer-a", &[]);
    let b = cluster.start("peer-b", &[&a]);
    wait_for_mesh(&[&a, &b]);
    let _stolen = member_by_hand(&cluster, &a, "mallory", u32::MAX);

    let file = cluster.dir.path().join("mallory.revocation");
    revoke_file(&cluster.ca_dir(), "mallory", &file);
    let (ok, _, stderr) = ctl_revoke(&a, &file);
    assert!(ok, "ctl revoke failed: {stderr}");

    let spec = reissued_mallory(&cluster, &a);
    let _reissued = spec.start();
    for peer in [&a, &b] {
        eventually("the re-issued certificate's peer to be a member", || {
            let seen = entry_of(peer, "mallory")?;
            (seen["state"] == "alive" && seen["revoked"] == false).then_some(())
        });
    }
}
