//! Hostile peers against real `aqueduct` processes: an attacker in the test
//! process dials a peer's gossip port with a certificate the mesh must not
//! accept (another CA, expired, a name that is no node name, the target's
//! own name), or with a genuine certificate and broken traffic (garbage,
//! an oversize length prefix, a frame cut short by silence or by the end
//! of its stream, a flood). Each is refused or dropped, counted in the
//! target's metrics, and the mesh carries on: a write on one peer still
//! reaches the others.
//!
//! The cluster is its CA: certificates carry no cluster name, and a
//! certificate of another CA is refused whatever its name says.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aqueduct::crdt::model::{Balance, FieldId, FieldValue, Name, ObjectKey};
use aqueduct::crdt::{ConfigDelta, Digest, Dot, Hlc, ReplicaId, Stamped};
use aqueduct::gossip::wire::{MESSAGE_BYTES_MAX, Message, RingRange};
use aqueduct::gossip::{ApplyReport, MemberId, PeerId, PeerReport};
use support::hostile::{Attacker, Credentials, Validity, frame, garbage, rss_kib};
use support::{Cluster, Peer, eventually, ok, static_backend, wait_for_mesh};

const REFUSED: &str = "aqueduct_connections_refused_total";
const GARBAGE: &str = "aqueduct_gossip_garbage_dropped_total";
const FRAMES_REFUSED: &str = "aqueduct_gossip_frames_refused_total";

/// Two peers of one cluster that see each other.
fn two_peers(cluster: &Cluster) -> (Peer, Peer) {
    let a = cluster.start("peer-a", &[]);
    let b = cluster.start("peer-b", &[&a]);
    wait_for_mesh(&[&a, &b]);
    (a, b)
}

/// Waits until `peer`'s counter `name` reaches `at_least`.
fn counted(peer: &Peer, name: &str, at_least: u64) {
    eventually(&format!("{name} to reach {at_least}"), || {
        (peer.metric(name) >= at_least).then_some(())
    });
}

/// A write on `from` becomes readable on `to`: the mesh still works.
fn a_write_travels(from: &Peer, to: &Peer, key: &str) {
    ok(from.put(&format!("/backends/{key}"), static_backend(9000)));
    eventually(&format!("{key} to reach {}", to.spec.name), || {
        (to.get(&format!("/backends/{key}")).0 == 200).then_some(())
    });
}

/// Dials `target` with `attacker` and sends one garbage frame, as a peer
/// that got in would: the handshake may seem to succeed on the attacker's
/// side before the target refuses the certificate.
fn knock(attacker: &Attacker, target: &Peer) {
    if let Ok(connection) = attacker.connect(target.gossip) {
        let _ = attacker.send_raw(&connection, &frame(&garbage(1, 64)));
    }
}

/// Asserts that `target` refused a connection made with `credentials`,
/// counted it, never read a frame from it, and still gossips with `other`.
fn refused_and_counted(cluster: &Cluster, credentials: Credentials, target: &Peer, other: &Peer) {
    let refused = target.metric(REFUSED);
    let garbage_before = target.metric(GARBAGE);
    let attacker = Attacker::with(credentials, &cluster.ca_dir());
    knock(&attacker, target);
    counted(target, REFUSED, refused + 1);
    a_write_travels(other, target, "after-the-attempt");
    a_write_travels(target, other, "and-back");
    assert_eq!(
        target.metric(GARBAGE),
        garbage_before,
        "a frame from the refused connection was read"
    );
}

#[test]
fn a_node_certificate_from_another_ca_is_refused_and_counted() {
    let cluster = Cluster::new("hostile-foreign-ca");
    let (a, b) = two_peers(&cluster);
    // Another cluster's certificate, even for the name of a real member.
    let foreign = Cluster::new("hostile-foreign");
    let impostor = Credentials::load(&foreign.peer("peer-b").tls_dir);
    refused_and_counted(&cluster, impostor, &a, &b);
}

#[test]
fn an_expired_certificate_of_the_cluster_ca_is_refused_and_counted() {
    let cluster = Cluster::new("hostile-expired");
    let (a, b) = two_peers(&cluster);
    let expired = Credentials::forge(&cluster.ca_dir(), "peer-x", Validity::Expired);
    refused_and_counted(&cluster, expired, &a, &b);
}

#[test]
fn a_certificate_of_the_cluster_ca_whose_name_is_no_node_name_is_refused_and_counted() {
    let cluster = Cluster::new("hostile-bad-name");
    let (a, b) = two_peers(&cluster);
    let badly_named = Credentials::forge(&cluster.ca_dir(), "Peer X; DROP", Validity::Current);
    refused_and_counted(&cluster, badly_named, &a, &b);
}

#[test]
fn a_certificate_of_the_cluster_ca_naming_the_target_itself_is_refused_and_counted() {
    let cluster = Cluster::new("hostile-self");
    let (a, b) = two_peers(&cluster);
    let itself = Credentials::forge(&cluster.ca_dir(), "peer-a", Validity::Current);
    refused_and_counted(&cluster, itself, &a, &b);
}

/// A member of the cluster turned hostile: a genuine certificate.
fn mallory(cluster: &Cluster) -> Attacker {
    Attacker::member(&cluster.peer("mallory").tls_dir)
}

fn rss_report(label: &str, peer: &Peer, before_kib: u64) -> u64 {
    let after = rss_kib(peer.pid());
    println!(
        "{label}: VmRSS of {} before {before_kib} KiB, after {after} KiB",
        peer.spec.name
    );
    after
}

#[test]
fn garbage_frames_from_a_member_are_dropped_and_counted() {
    let cluster = Cluster::new("hostile-garbage");
    let (a, b) = two_peers(&cluster);
    let attacker = mallory(&cluster);
    let before = a.metric(GARBAGE);
    let connection = attacker.connect(a.gossip).expect("a member connects");
    const FRAMES: u64 = 1000;
    let bytes: Vec<u8> = (0..FRAMES)
        .flat_map(|i| frame(&garbage(i, 1 + (i as usize * 37) % 2000)))
        .collect();
    attacker.send_raw(&connection, &bytes).expect("sent");
    counted(&a, GARBAGE, before + FRAMES);
    a_write_travels(&b, &a, "despite-garbage");
    // Garbage in correct framing is the peer task's to drop; the connection
    // stays (the framing is intact).
    assert!(connection.close_reason().is_none(), "connection closed");
    assert_eq!(a.metric(FRAMES_REFUSED), 0);
}

#[test]
fn a_length_prefix_over_the_limit_is_refused_without_reading_it_and_closes_the_connection() {
    let cluster = Cluster::new("hostile-oversize");
    let (a, b) = two_peers(&cluster);
    let attacker = mallory(&cluster);
    let rss_before = rss_kib(a.pid());
    let connection = attacker.connect(a.gossip).expect("a member connects");
    let too_long = u32::try_from(MESSAGE_BYTES_MAX + 1).expect("fits");
    // The announced body is never sent: only the prefix and a few bytes.
    let mut bytes = too_long.to_be_bytes().to_vec();
    bytes.extend_from_slice(&garbage(7, 1000));
    let _stream = attacker.send_raw(&connection, &bytes).expect("sent");
    let reason = attacker.closed(&connection);
    println!("closed: {reason}");
    assert_eq!(a.metric(FRAMES_REFUSED), 1);
    rss_report("oversize prefix", &a, rss_before);
    a_write_travels(&b, &a, "after-oversize");
}

#[test]
fn a_frame_cut_short_then_silence_is_refused_after_a_stall_and_closes_the_connection() {
    let cluster = Cluster::new("hostile-truncated");
    let (a, b) = two_peers(&cluster);
    let attacker = mallory(&cluster);
    let rss_before = rss_kib(a.pid());
    let connection = attacker.connect(a.gossip).expect("a member connects");
    // A whole legal frame's length announced, a hundred bytes sent, then
    // nothing (the QUIC connection itself stays alive: keep-alives).
    let announced = u32::try_from(MESSAGE_BYTES_MAX).expect("fits");
    let mut bytes = announced.to_be_bytes().to_vec();
    bytes.extend_from_slice(&garbage(9, 100));
    let _stream = attacker.send_raw(&connection, &bytes).expect("sent");
    // Meanwhile the mesh works.
    a_write_travels(&b, &a, "while-stalled");
    let reason = attacker.closed(&connection);
    println!("closed: {reason}");
    assert_eq!(a.metric(FRAMES_REFUSED), 1);
    rss_report("truncated frame", &a, rss_before);
    a_write_travels(&b, &a, "after-the-stall");
}

#[test]
fn a_frame_whose_stream_ends_early_is_refused_and_closes_the_connection() {
    let cluster = Cluster::new("hostile-ended");
    let (a, b) = two_peers(&cluster);
    let attacker = mallory(&cluster);
    let connection = attacker.connect(a.gossip).expect("a member connects");
    let mut bytes = 1000u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&garbage(11, 10));
    let mut stream = attacker.send_raw(&connection, &bytes).expect("sent");
    stream.finish().expect("finished");
    let reason = attacker.closed(&connection);
    println!("closed: {reason}");
    assert_eq!(a.metric(FRAMES_REFUSED), 1);
    a_write_travels(&b, &a, "after-the-cut");
}

/// The flood: this many small garbage frames, or this long, whichever
/// comes first.
const FLOOD_FRAMES: u64 = 100_000;
const FLOOD_LIMIT: Duration = Duration::from_secs(20);
/// How much a flood of garbage may grow the target's memory: under half
/// of what it sends (100,000 frames of 16 to 1,024 bytes, about 50 MiB),
/// because received frames wait in a bounded queue and are dropped as they
/// are decoded. (Measured: under 3 MiB.)
const FLOOD_RSS_GROWTH_MAX_KIB: u64 = 24 << 10;

#[test]
fn a_flood_of_garbage_frames_is_dropped_and_counted_while_the_api_and_gossip_keep_working() {
    let cluster = Cluster::new("hostile-flood");
    let (a, b) = two_peers(&cluster);
    let attacker = mallory(&cluster);
    let garbage_before = a.metric(GARBAGE);
    let rss_before = rss_kib(a.pid());
    let connection = attacker.connect(a.gossip).expect("a member connects");
    let flood = attacker.runtime.spawn({
        let connection = connection.clone();
        async move {
            let mut stream = connection.open_uni().await.expect("stream");
            let started = Instant::now();
            let mut sent = 0;
            while sent < FLOOD_FRAMES && started.elapsed() < FLOOD_LIMIT {
                let body = garbage(sent, 16 + (sent as usize * 131) % 1008);
                if stream.write_all(&frame(&body)).await.is_err() {
                    break;
                }
                sent += 1;
            }
            (sent, started.elapsed())
        }
    });
    // During the flood: the API answers, and gossip carries a write.
    let mut probes = Vec::new();
    let mut rss_max = rss_before;
    let mut written = 0;
    loop {
        let asked = Instant::now();
        assert_eq!(a.get("/health").0, 200);
        probes.push(asked.elapsed());
        rss_max = rss_max.max(rss_kib(a.pid()));
        if written < 3 {
            a_write_travels(&b, &a, &format!("during-flood-{written}"));
            written += 1;
        }
        if flood.is_finished() {
            break;
        }
    }
    let (sent, took) = attacker.runtime.block_on(flood).expect("flood ran");
    counted(&a, GARBAGE, garbage_before + sent);
    a_write_travels(&b, &a, "after-flood");
    let rss_after = rss_report("flood", &a, rss_before);
    probes.sort();
    println!(
        "flood: {sent} frames in {took:?}; /health probes {} p50 {:?} max {:?}; VmRSS max {rss_max} KiB",
        probes.len(),
        probes[probes.len() / 2],
        probes[probes.len() - 1]
    );
    assert!(written >= 1, "the flood ended before a write was tried");
    assert!(
        rss_max.max(rss_after) < rss_before + FLOOD_RSS_GROWTH_MAX_KIB,
        "memory grew from {rss_before} KiB to {rss_max} KiB"
    );
}

// ---------------------------------------------------------------------------
// A member that forges: mallory holds a genuine certificate and joins the
// mesh through SWIM like any peer, then lies in what it sends.

const CLAIMS_REFUSED: &str = "aqueduct_gossip_claims_refused_total";

/// `peer`'s count of refused claims of `kind`.
fn claims_refused(peer: &Peer, kind: &str) -> u64 {
    peer.metric(&format!("{CLAIMS_REFUSED}{{kind=\"{kind}\"}}"))
}

/// `peer`'s identity as the mesh knows it: (peer id, replica id).
fn ids_of(peer: &Peer) -> (PeerId, ReplicaId) {
    let mesh = peer.mesh();
    let hex = |field: &str| {
        let text = mesh[field].as_str().expect("an id");
        u64::from_str_radix(text, 16).expect("hex")
    };
    (
        PeerId(hex("peerId")),
        ReplicaId::new(hex("replicaId")).expect("non-zero"),
    )
}

/// Mallory, connected to `target` and taken as a member by it.
fn mallory_joined(cluster: &Cluster, target: &Peer) -> (Attacker, quinn::Connection) {
    let attacker = mallory(cluster);
    let connection = attacker.connect(target.gossip).expect("a member connects");
    attacker.announce(&connection, "mallory", ids_of(target).0);
    eventually("mallory to be a member of the target", || {
        let (_, peers) = target.get("/mesh/peers");
        peers
            .as_array()?
            .iter()
            .any(|p| p["name"] == "mallory" && p["state"] == "alive")
            .then_some(())
    });
    (attacker, connection)
}

/// A broadcast from mallory's replica carrying `delta` to everyone.
fn broadcast(delta: ConfigDelta) -> Message {
    let mallory_replica = ReplicaId::new(0x0bad_0bad).expect("non-zero");
    let id = Dot::new(mallory_replica, 1).expect("valid");
    let mut delta = delta;
    delta.context.insert(id);
    let everyone = PeerId(0);
    Message::Broadcast {
        id,
        range: RingRange {
            after: everyone,
            before: everyone,
        },
        delta,
    }
}

/// A write of `backend`'s balance by mallory's replica, stamped at
/// `wall_ms`, superseding nothing.
fn balance_write(backend: &str, balance: Balance, wall_ms: u64) -> ConfigDelta {
    let dot = Dot::new(ReplicaId::new(0x0bad_0bad).expect("non-zero"), 2).expect("valid");
    let mut delta = ConfigDelta::default();
    delta.context.insert(dot);
    delta.insert_entry(
        ObjectKey::Backend(Name::new(backend).expect("a name")),
        FieldId::Balance,
        dot,
        Stamped {
            hlc: Hlc::try_from((wall_ms, 0)).expect("a valid stamp"),
            value: FieldValue::Balance(balance),
        },
    );
    delta
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_millis()).expect("fits")
}

#[test]
fn a_certificate_that_is_not_a_member_gets_no_data_accepted() {
    let cluster = Cluster::new("hostile-non-member");
    let (a, b) = two_peers(&cluster);
    ok(a.put("/backends/web", static_backend(9000)));
    eventually("web on b", || {
        (b.get("/backends/web").0 == 200).then_some(())
    });
    let attacker = mallory(&cluster);
    let connection = attacker
        .connect(b.gossip)
        .expect("the certificate is valid");
    let before = claims_refused(&b, "data_from_non_member");
    attacker.send(
        &connection,
        &broadcast(balance_write("web", Balance::Leastconn, now_ms())),
    );
    counted(
        &b,
        &format!("{CLAIMS_REFUSED}{{kind=\"data_from_non_member\"}}"),
        before + 1,
    );
    assert_eq!(b.get("/backends/web").1["balance"], "roundrobin");
}

#[test]
fn a_poisoned_context_is_refused_deletes_nothing_and_the_victims_later_writes_reach_every_peer() {
    let cluster = Cluster::new("hostile-poison");
    let (a, b, c) = cluster.three_peers();
    ok(a.put("/backends/web", static_backend(9000)));
    eventually("web everywhere", || {
        [&b, &c]
            .iter()
            .all(|p| p.get("/backends/web").0 == 200)
            .then_some(())
    });
    let (attacker, connection) = mallory_joined(&cluster, &b);
    let before = claims_refused(&b, "implausible_dot");

    // The victim's replica id is on its /mesh; the claim: every counter up
    // to the limit, so that the victim's objects look removed and its
    // later writes look seen.
    let (_, victim) = ids_of(&a);
    let mut poison = ConfigDelta::default();
    poison.context.insert_interval(victim, 1..=Dot::COUNTER_MAX);
    attacker.send(&connection, &broadcast(poison));
    counted(
        &b,
        &format!("{CLAIMS_REFUSED}{{kind=\"implausible_dot\"}}"),
        before + 1,
    );
    for peer in [&a, &b, &c] {
        assert_eq!(peer.get("/backends/web").0, 200, "nothing deleted");
    }

    let written = Instant::now();
    ok(a.put("/backends/api", static_backend(9001)));
    eventually("the victim's next write on every peer", || {
        [&b, &c]
            .iter()
            .all(|p| p.get("/backends/api").0 == 200)
            .then_some(())
    });
    println!(
        "poison: the victim's next write reached both other peers in {} ms",
        written.elapsed().as_millis()
    );
}

#[test]
fn a_report_about_another_peer_is_ignored() {
    let cluster = Cluster::new("hostile-report");
    let (a, b, _c) = cluster.three_peers();
    let (attacker, connection) = mallory_joined(&cluster, &b);
    let (victim, _) = ids_of(&a);
    let before = claims_refused(&b, "report_about_another_peer");
    attacker.send(
        &connection,
        &Message::Reports {
            reports: vec![PeerReport {
                peer: victim,
                generation: u32::MAX,
                seq: u64::MAX,
                digest: Digest(1),
                haproxy: Some(ApplyReport {
                    last_error: Some("all good".to_owned()),
                    ..ApplyReport::default()
                }),
            }],
        },
    );
    counted(
        &b,
        &format!("{CLAIMS_REFUSED}{{kind=\"report_about_another_peer\"}}"),
        before + 1,
    );
    let (_, peers) = b.get("/mesh/peers");
    let shown = peers
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["name"] == "peer-a")
        .expect("peer-a listed")
        .clone();
    assert_ne!(shown["generation"], u32::MAX, "{shown}");
    assert!(
        !shown.to_string().contains("all good"),
        "the forged status is not shown: {shown}"
    );
}

#[test]
fn a_far_future_stamp_is_refused_and_the_honest_value_wins() {
    let cluster = Cluster::new("hostile-stamp");
    let (a, b) = two_peers(&cluster);
    ok(a.put("/backends/web", static_backend(9000)));
    eventually("web on b", || {
        (b.get("/backends/web").0 == 200).then_some(())
    });
    let (attacker, connection) = mallory_joined(&cluster, &b);
    let before = claims_refused(&b, "ahead_of_clock");
    let a_year_ahead = now_ms() + 365 * 24 * 3_600_000;
    attacker.send(
        &connection,
        &broadcast(balance_write("web", Balance::Leastconn, a_year_ahead)),
    );
    counted(
        &b,
        &format!("{CLAIMS_REFUSED}{{kind=\"ahead_of_clock\"}}"),
        before + 1,
    );
    assert_eq!(b.get("/backends/web").1["balance"], "roundrobin");

    // An honest change made now is what every peer shows: a stamp a year
    // ahead, had it been taken, would have won over it for a year.
    let mut changed = static_backend(9000);
    changed["balance"] = "first".into();
    ok(a.put("/backends/web", changed));
    eventually("the honest change on b", || {
        (b.get("/backends/web").1["balance"] == "first").then_some(())
    });
}

#[test]
fn the_event_stream_shows_a_remote_change_with_the_peer_and_replica_it_came_from() {
    let cluster = Cluster::new("hostile-attribution");
    let (a, b) = two_peers(&cluster);
    let events = support::event_stream(&b, "/events");
    let (_, origin) = ids_of(&a);
    ok(a.put("/backends/traced", static_backend(9002)));
    support::expect_event(
        &events,
        "activity",
        &[
            "\"type\":\"change\"",
            "\"from\":\"peer-a\"",
            &format!("\"originReplica\":\"{origin}\""),
            "backend traced",
        ],
    );
    ok(a.delete("/backends/traced"));
    support::expect_event(
        &events,
        "activity",
        &[
            "\"type\":\"change\"",
            "\"from\":\"peer-a\"",
            "backend traced",
        ],
    );
}

/// `peer`'s SWIM identity as it runs (what a packet to it must name).
fn member_id_of(peer: &Peer) -> MemberId {
    let mesh = peer.mesh();
    MemberId {
        peer: ids_of(peer).0,
        generation: u32::try_from(mesh["generation"].as_u64().expect("a generation"))
            .expect("a u32"),
        addr: mesh["gossipAddr"]
            .as_str()
            .expect("an address")
            .parse()
            .expect("a socket address"),
    }
}

/// How `observer` lists the peer `name`: (generation, state).
fn seen_as(observer: &Peer, name: &str) -> Option<(u64, String)> {
    let (_, peers) = observer.get("/mesh/peers");
    peers
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| {
            (
                p["generation"].as_u64().unwrap_or_default(),
                p["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

#[test]
fn a_member_giving_another_peer_a_new_identity_is_ignored_and_the_peer_stays_a_member() {
    let cluster = Cluster::new("hostile-identity");
    let (a, b, c) = cluster.three_peers();
    let (attacker, connection) = mallory_joined(&cluster, &c);
    let genuine = member_id_of(&a);
    // The highest generation, at an address where nobody answers: taken,
    // it would replace a's identity on c and on everyone c gossips to,
    // a's own packets would be ignored as from a stale identity, and the
    // forged one, never answering, would be declared down, taking a out
    // of the members for a day (its data refused as from a non-member).
    let usurper = MemberId {
        generation: u32::MAX,
        addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        ..genuine
    };
    let before = claims_refused(&c, "identity_from_another_peer");
    attacker.gossip(
        &connection,
        "mallory",
        member_id_of(&c),
        &[foca::Member::alive(usurper)],
    );
    counted(
        &c,
        &format!("{CLAIMS_REFUSED}{{kind=\"identity_from_another_peer\"}}"),
        before + 1,
    );
    for observer in [&b, &c] {
        assert_eq!(
            seen_as(observer, "peer-a"),
            Some((u64::from(genuine.generation), "alive".to_owned())),
            "as {} sees peer-a",
            observer.spec.name
        );
    }
    a_write_travels(&a, &c, "after-usurping");
}
