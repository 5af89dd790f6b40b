//! Partitions between real processes: five peers, each with its own HAProxy,
//! each in a network namespace of its own (tests/support/netns.rs), cut
//! apart with links taken down and nftables drops, then healed.
//!
//! Needs root, `ip` and `nft` (CI has them); without them these tests fail
//! and say why. Times are printed (`--nocapture`), never asserted:
//! `scripts/bench-partitions.sh` measures them over several runs.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::http::{Clients, fetch};
use support::netns::{MEMBER_PORT, NetMesh, in_netns};
use support::{Peer, eventually, ok, wait_for_convergence};

/// The peers of every scenario.
const PEERS: usize = 5;

/// A static backend whose one member is the member server in each peer's
/// own namespace.
fn local_backend(balance: &str) -> Value {
    json!({"type": "static", "balance": balance,
           "members": [{"host": "127.0.0.1", "port": MEMBER_PORT}]})
}

/// A frontend on `*:port` in front of `backend`.
fn frontend(port: u16, backend: &str) -> Value {
    json!({"bind": format!("*:{port}"), "backend": backend})
}

/// How `observer` sees each other peer: name → SWIM state.
fn swim_view(observer: &Peer) -> BTreeMap<String, String> {
    let (status, list) = observer.get("/mesh/peers");
    assert_eq!(status, 200, "GET /mesh/peers: {list}");
    list.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or("?").to_owned();
            (name, p["state"].as_str().unwrap_or("?").to_owned())
        })
        .collect()
}

/// Waits until `observer` no longer sees any of `others` alive.
fn wait_until_not_alive(observer: &Peer, others: &[&Peer]) {
    eventually(
        &format!(
            "{} to see {} peers as not alive",
            observer.spec.name,
            others.len()
        ),
        || {
            let view = swim_view(observer);
            others
                .iter()
                .all(|o| view.get(&o.spec.name).is_none_or(|s| s != "alive"))
                .then_some(())
        },
    );
}

/// Keeps a partition in place `AQUEDUCT_PARTITION_HOLD_MS` longer (default
/// 0): `scripts/bench-partitions.sh` (`HOLD_MS`) times heals after
/// partitions that outlast the transport's idle timeout.
fn hold_partition() {
    let hold = std::env::var("AQUEDUCT_PARTITION_HOLD_MS").map_or(0, |ms| {
        ms.parse()
            .expect("AQUEDUCT_PARTITION_HOLD_MS: milliseconds")
    });
    std::thread::sleep(Duration::from_millis(hold));
}

/// Whether every peer lists every other as alive.
fn all_alive(mesh: &NetMesh) -> bool {
    mesh.peers.iter().all(|p| {
        let view = swim_view(p);
        view.len() + 1 == mesh.peers.len() && view.values().all(|s| s == "alive")
    })
}

/// Heals `mesh` and waits until every peer has the same digest, printing
/// (for `scripts/bench-partitions.sh`) how long that took, and when every
/// peer saw every other alive again (SWIM) if that came first.
fn heal_and_time_convergence(mesh: &NetMesh, scenario: &str, cut_at: Instant) {
    // QUIC connections (one per pair, counted from both ends) still open
    // when the partition ends: those recover by QUIC retransmission,
    // closed ones by dialling again.
    let open: usize = mesh
        .peers
        .iter()
        .map(|p| {
            let (_, list) = p.get("/mesh/peers");
            list.as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["connected"] == true)
                .count()
        })
        .sum();
    let healed = Instant::now();
    mesh.net.heal();
    let mut swim_healed = None;
    eventually("the peers to converge after the heal", || {
        if swim_healed.is_none() && all_alive(mesh) {
            swim_healed = Some(healed.elapsed());
        }
        let digests: Vec<String> = mesh.peers.iter().map(Peer::digest).collect();
        digests.windows(2).all(|w| w[0] == w[1]).then_some(())
    });
    let took = healed.elapsed();
    let swim = swim_healed.map_or("later".to_owned(), |t| format!("{}", t.as_millis()));
    println!(
        "partitions: {scenario}: heal-to-convergence-ms {} (all alive in SWIM after {swim} ms; \
         partitioned for {} ms; connections open at heal {open} of {})",
        took.as_millis(),
        (healed - cut_at).as_millis(),
        mesh.peers.len() * (mesh.peers.len() - 1)
    );
}

/// Waits until every peer renders byte-identical HAProxy configuration,
/// once each peer's own settings (its data directory: the admin socket's and
/// the server state file's paths, the same on every machine of a real
/// deployment) read as placeholders.
fn wait_for_identical_configs(mesh: &NetMesh) -> String {
    eventually("every peer to render the same haproxy.cfg", || {
        let configs: Vec<String> = mesh
            .peers
            .iter()
            .map(Peer::try_neutral_haproxy_config)
            .collect::<Option<_>>()?;
        configs
            .windows(2)
            .all(|w| w[0] == w[1])
            .then(|| configs[0].clone())
    })
}

/// Waits until a request through peer `i`'s HAProxy on `port` is answered,
/// from inside that peer's namespace.
fn wait_until_served(mesh: &NetMesh, i: usize, port: u16) {
    let through = mesh.peers[i].through_haproxy(port);
    let expected = format!("member-{i}");
    in_netns(&mesh.net.ns(i), || {
        eventually(&format!("peer {i}'s HAProxy to serve port {port}"), || {
            matches!(fetch(through, "/", "example.com"), Ok((200, body)) if body.trim() == expected)
                .then_some(())
        })
    });
}

/// The keys of `kind` (`frontends`, `backends`) on `peer`.
fn keys(peer: &Peer, kind: &str) -> Vec<String> {
    let (status, list) = peer.get(&format!("/{kind}"));
    assert_eq!(status, 200, "GET /{kind}: {list}");
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["key"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_mesh_split_2_3_takes_writes_on_both_sides_and_after_heal_every_peer_has_them_all_and_the_same_config()
 {
    let mesh = NetMesh::start("split", PEERS);
    let (left, right) = (&mesh.peers[0], &mesh.peers[3]);
    ok(left.put("/backends/shared", local_backend("roundrobin")));
    wait_for_convergence(&mesh.all());

    let cut_at = Instant::now();
    mesh.net.partition(&[&[0, 1], &[2, 3, 4]]);
    let (left_side, right_side) = (&mesh.all()[..2], &mesh.all()[2..]);
    for p in left_side {
        wait_until_not_alive(p, right_side);
    }
    for p in right_side {
        wait_until_not_alive(p, left_side);
    }
    // Distinct writes on each side (a backend with its member, then,
    // once it has spread within the side, a frontend in front of it on
    // another peer of that side), and one object written on both sides
    // at once.
    ok(left.put("/backends/left", local_backend("roundrobin")));
    ok(right.put("/backends/right", local_backend("roundrobin")));
    for (writer, key, port) in [(1, "left", 8081), (4, "right", 8082)] {
        let peer = &mesh.peers[writer];
        eventually(&format!("backend {key} to reach peer {writer}"), || {
            (peer.get(&format!("/backends/{key}")).0 == 200).then_some(())
        });
        ok(peer.put(&format!("/frontends/{key}"), frontend(port, key)));
    }
    ok(left.put("/backends/shared", local_backend("leastconn")));
    ok(right.put("/backends/shared", local_backend("source")));

    hold_partition();
    heal_and_time_convergence(&mesh, "split 2|3", cut_at);
    let config = wait_for_identical_configs(&mesh);
    for peer in &mesh.peers {
        assert_eq!(keys(peer, "frontends"), ["left", "right"]);
        assert_eq!(keys(peer, "backends"), ["left", "right", "shared"]);
    }
    let balances: Vec<Value> = mesh
        .peers
        .iter()
        .map(|p| p.get("/backends/shared").1["balance"].clone())
        .collect();
    assert!(
        balances.windows(2).all(|w| w[0] == w[1])
            && (balances[0] == "leastconn" || balances[0] == "source"),
        "one winner of the concurrent write, the same everywhere: {balances:?}"
    );
    assert!(config.contains("frontend left") && config.contains("frontend right"));
    for i in 0..PEERS {
        wait_until_served(&mesh, i, 8081);
        wait_until_served(&mesh, i, 8082);
        mesh.peers[i].assert_haproxy_workers_unprivileged();
    }
}

#[test]
fn an_isolated_peer_keeps_serving_its_last_config_and_taking_writes_then_catches_up_after_heal() {
    let mesh = NetMesh::start("isolate", PEERS);
    ok(mesh.peers[0].put("/backends/app", local_backend("roundrobin")));
    ok(mesh.peers[0].put("/frontends/web", frontend(8080, "app")));
    wait_for_convergence(&mesh.all());
    let isolated = &mesh.peers[4];
    wait_until_served(&mesh, 4, 8080);

    let clients = in_netns(&mesh.net.ns(4), || {
        Clients::start(isolated.through_haproxy(8080), "example.com", 1)
    });
    let cut_at = Instant::now();
    mesh.net.cut(4);
    let others = &mesh.all()[..4];
    // Writes on both sides; the isolated peer's adds a frontend, so its
    // HAProxy reloads while cut off and serving.
    ok(isolated.put("/backends/alone", local_backend("roundrobin")));
    ok(isolated.put("/frontends/alone", frontend(8083, "alone")));
    ok(mesh.peers[1].put("/backends/majority", local_backend("roundrobin")));
    // The isolation lasts until both sides' failure detectors have noticed
    // and the client has sent 200 more requests after that.
    wait_until_not_alive(isolated, others);
    for peer in others {
        wait_until_not_alive(peer, &[isolated]);
    }
    let noticed = clients.sent();
    eventually("200 more requests during the isolation", || {
        (clients.sent() >= noticed + 200).then_some(())
    });
    wait_until_served(&mesh, 4, 8083);
    let (answered, failures) = clients.finish();
    println!("partitions: isolated peer: {answered} requests answered, {failures:?} failed");
    assert!(
        failures.is_empty(),
        "requests failed during the isolation: {failures:?}"
    );

    heal_and_time_convergence(&mesh, "isolated peer", cut_at);
    wait_for_identical_configs(&mesh);
    for peer in &mesh.peers {
        assert_eq!(keys(peer, "backends"), ["alone", "app", "majority"]);
    }
    wait_until_served(&mesh, 0, 8083);
}

#[test]
fn a_one_way_partition_breaks_no_peer_and_writes_on_both_ends_converge_after_heal() {
    let mesh = NetMesh::start("asymmetric", PEERS);
    let (a, b) = (&mesh.peers[0], &mesh.peers[1]);
    let cut_at = Instant::now();
    mesh.net.drop_packets(0, 1);
    ok(a.put("/backends/from-a", local_backend("roundrobin")));
    ok(b.put("/backends/from-b", local_backend("roundrobin")));
    // Watch for a while what SWIM makes of it: every peer keeps answering.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        for peer in &mesh.peers {
            let view = swim_view(peer);
            for (observer, target) in [(a, b), (b, a)] {
                if peer.spec.name == observer.spec.name {
                    let state = view.get(&target.spec.name).cloned().unwrap_or_default();
                    let key = format!("{} sees {}", observer.spec.name, target.spec.name);
                    let states = seen.entry(key).or_default();
                    if states.last() != Some(&state) {
                        states.push(state);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("partitions: one-way 0→1 dropped, SWIM states seen in 8 s: {seen:?}");
    let converged_during = mesh
        .peers
        .iter()
        .map(Peer::digest)
        .collect::<Vec<_>>()
        .windows(2)
        .all(|w| w[0] == w[1]);
    println!("partitions: one-way: digests equal before heal: {converged_during}");

    heal_and_time_convergence(&mesh, "one-way", cut_at);
    wait_for_identical_configs(&mesh);
    for peer in &mesh.peers {
        assert_eq!(keys(peer, "backends"), ["from-a", "from-b"]);
    }
}

#[test]
fn writes_on_two_peers_with_30_percent_loss_between_them_reach_every_peer() {
    let mesh = NetMesh::start("loss", PEERS);
    mesh.net.lose(0, 1, 30);
    for n in 0..5 {
        ok(mesh.peers[0].put(&format!("/backends/a{n}"), local_backend("roundrobin")));
        ok(mesh.peers[1].put(&format!("/backends/b{n}"), local_backend("roundrobin")));
    }
    let written = Instant::now();
    wait_for_convergence(&mesh.all());
    println!(
        "partitions: 30% loss between peers 0 and 1: last-write-to-convergence-ms {}",
        written.elapsed().as_millis()
    );
    for peer in &mesh.peers {
        assert_eq!(
            keys(peer, "backends"),
            ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"]
        );
    }
    wait_for_identical_configs(&mesh);
}
