//! Upgrades of the mesh itself (ARCHITECTURE.md, "Compatibility"): the
//! previous release — its `aqueduct` built by `scripts/build-previous.sh`
//! from the rev in `tests/fixtures/previous-release.txt` and named by
//! `AQUEDUCT_PREVIOUS_BIN` — and this one in one mesh; a rolling upgrade
//! and a rolling restart of every peer, one at a time, under request and
//! write load, each peer with its own HAProxy and real traffic through it;
//! and a restarted peer serving from its own state alone.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::http::{Clients, TestServer, fetch};
use support::{
    Cluster, MemberWrites, Peer, counter, eventually, member_ports, ok, previous_binary,
    static_backend, wait_for_convergence, wait_for_mesh,
};

/// The port every test frontend binds (on each peer's own address).
const PORT: u16 = 18380;
/// The static backend the write load adds members to.
const SINK: &str = "sink";
/// One write every this long: the digests of a mesh under this load are
/// equal most of the time, so that convergence after each step shows.
const WRITE_PACE: Duration = Duration::from_millis(20);

fn current_binary() -> PathBuf {
    PathBuf::from(support::binary())
}

/// A frontend on `*:PORT` in front of `server`, and the backend the write
/// load fills.
fn serve(peer: &Peer, server: &TestServer) {
    ok(peer.put(
        "/backends/app",
        json!({"type": "static", "members": [{"host": "127.0.0.1", "port": server.port()}]}),
    ));
    ok(peer.put(
        "/frontends/web",
        json!({"bind": format!("*:{PORT}"), "backend": "app"}),
    ));
    ok(peer.put(
        &format!("/backends/{SINK}"),
        static_backend(MemberWrites::FIRST_PORT - 1),
    ));
}

fn wait_until_served_by(peer: &Peer, server: &TestServer) {
    let through = peer.through_haproxy(PORT);
    eventually(
        &format!("{} to serve through {through}", server.name),
        || {
            matches!(fetch(through, "/", "example.com"), Ok((200, body)) if body == server.name)
                .then_some(())
        },
    );
}

/// Three peers with HAProxy, peer `i` running `binaries[i]`, in one mesh;
/// each will rejoin through the other two when restarted.
fn mesh(cluster: &Cluster, binaries: [&Path; 3]) -> Vec<Peer> {
    let mut peers: Vec<Peer> = Vec::new();
    for (i, binary) in binaries.into_iter().enumerate() {
        let mut spec = cluster.peer_with_haproxy(&format!("peer-{i}"), &[]);
        spec.join = peers
            .first()
            .map(|first| first.gossip)
            .into_iter()
            .collect();
        spec.binary = binary.to_path_buf();
        peers.push(spec.start());
    }
    wait_for_mesh(&all(&peers));
    let gossip: Vec<_> = peers.iter().map(|p| p.gossip).collect();
    for (i, peer) in peers.iter_mut().enumerate() {
        peer.spec.join = gossip
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, addr)| *addr)
            .collect();
    }
    peers
}

fn all(peers: &[Peer]) -> Vec<&Peer> {
    peers.iter().collect()
}

/// Waits until every peer has the same digest and its HAProxy runs the
/// same configuration (up to the peer's own settings).
fn wait_for_same_config(peers: &[Peer]) {
    wait_for_convergence(&all(peers));
    for peer in peers {
        peer.wait_until_applied();
    }
    let first = peers[0].neutral_haproxy_config();
    for peer in &peers[1..] {
        assert_eq!(
            peer.neutral_haproxy_config(),
            first,
            "{} renders another configuration than {}",
            peer.spec.name,
            peers[0].spec.name
        );
    }
}

/// How a peer is stopped for its upgrade.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// A graceful stop: it leaves the mesh, and (this release) leaves its
    /// HAProxy serving for the next start to take over.
    Sigterm,
    /// The previous release stops its HAProxy on SIGTERM, so a hitless
    /// upgrade from it stops it with SIGKILL: its HAProxy keeps serving,
    /// and every acknowledged write is already durable.
    Sigkill,
}

/// Writes acknowledged between two steps of a roll, at least.
const WRITES_PER_STEP: usize = 25;

/// Stops each peer in turn and starts `binary` on its data dir, API and
/// gossip addresses; after each step, waits until the mesh has converged
/// and the write load has gone on through the new mesh.
fn roll(peers: &mut [Peer], stop: Stop, binary: &Path, writes: &MemberWrites) {
    for i in 0..peers.len() {
        match stop {
            Stop::Sigterm => {
                let status = peers[i].terminate();
                assert!(status.success(), "{status:?}; log:\n{}", peers[i].log());
            }
            Stop::Sigkill => peers[i].kill_9(),
        }
        peers[i].restart_in_place(binary);
        wait_for_mesh(&all(peers));
        wait_for_convergence(&all(peers));
        let from = writes.acknowledged();
        eventually("more writes acknowledged", || {
            (writes.acknowledged() >= from + WRITES_PER_STEP).then_some(())
        });
        println!(
            "{stop:?} {} and start {}: converged",
            peers[i].spec.name,
            binary.display()
        );
    }
}

#[test]
fn a_mesh_of_the_previous_release_and_this_one_converges_and_renders_the_same_config() {
    let previous = previous_binary();
    let cluster = Cluster::new("mixed-versions");
    let peers = mesh(&cluster, [&previous, &previous, &current_binary()]);
    let server = TestServer::start("app");
    serve(&peers[0], &server);
    for (i, peer) in peers.iter().enumerate() {
        ok(peer.put(&format!("/backends/from-{i}"), static_backend(9000)));
        for port in 0..10 {
            let port = MemberWrites::FIRST_PORT + u16::try_from(i * 10).expect("small") + port;
            ok(peer.put(
                &format!("/backends/{SINK}/members/127.0.0.1/{port}"),
                json!({}),
            ));
        }
    }

    wait_for_same_config(&peers);
    for peer in &peers {
        wait_until_served_by(peer, &server);
        assert_eq!(member_ports(peer, SINK).len(), 31);
        let metrics = peer.metrics();
        assert_eq!(counter(&metrics, "aqueduct_gossip_deltas_refused_total"), 0);
        // The previous release drops what it cannot decode (a message
        // added since, say) and counts it; recorded, not a failure.
        println!(
            "{}: {} messages dropped as garbage",
            peer.spec.name,
            counter(&metrics, "aqueduct_gossip_garbage_dropped_total")
        );
    }
    peers[2].assert_haproxy_workers_unprivileged();
}

#[test]
fn a_rolling_upgrade_then_a_rolling_restart_under_load_fail_no_request_and_lose_no_write() {
    let previous = previous_binary();
    let current = current_binary();
    let cluster = Cluster::new("rolling-upgrade");
    let mut peers = mesh(&cluster, [&previous, &previous, &previous]);
    let server = TestServer::start("app");
    serve(&peers[0], &server);
    wait_for_same_config(&peers);
    for peer in &peers {
        wait_until_served_by(peer, &server);
    }
    let clients: Vec<Clients> = peers
        .iter()
        .map(|p| Clients::start(p.through_haproxy(PORT), "example.com", 1))
        .collect();
    let load = std::time::Instant::now();
    let writes = MemberWrites::start(peers.iter().map(|p| p.api).collect(), SINK, WRITE_PACE);
    eventually("the write load to start", || {
        (writes.acknowledged() >= 10).then_some(())
    });

    roll(&mut peers, Stop::Sigkill, &current, &writes);
    // The previous release ran its HAProxy as root; this one's drops it.
    for peer in &peers {
        peer.assert_haproxy_workers_unprivileged();
    }
    roll(&mut peers, Stop::Sigterm, &current, &writes);

    let (acknowledged, unanswered) = writes.finish();
    wait_for_same_config(&peers);
    for peer in &peers {
        let present = member_ports(peer, SINK);
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|port| !present.contains(port))
            .collect();
        assert!(
            lost.is_empty(),
            "{} lost {} acknowledged writes: {lost:?}",
            peer.spec.name,
            lost.len()
        );
    }
    let mut failures = Vec::new();
    let mut answered = 0;
    for (peer, clients) in peers.iter().zip(clients) {
        let (ok, failed) = clients.finish();
        println!(
            "through {}'s HAProxy: {ok} requests answered, {} failed",
            peer.spec.name,
            failed.len()
        );
        answered += ok;
        failures.extend(failed);
    }
    println!(
        "rolling upgrade and restart, {:.1} s: {answered} requests answered, {} failed; \
         {} writes acknowledged and present on every peer, {unanswered} unanswered \
         (sent to a peer while it restarted)",
        load.elapsed().as_secs_f64(),
        failures.len(),
        acknowledged.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn a_restarted_peer_serves_from_its_own_state_before_hearing_from_anyone() {
    let current = current_binary();
    let cluster = Cluster::new("restart-alone");
    let mut peers = mesh(&cluster, [&current, &current, &current]);
    let server = TestServer::start("app");
    serve(&peers[1], &server);
    wait_for_same_config(&peers);
    wait_until_served_by(&peers[0], &server);
    let old = peers[0].haproxy_status()["pid"].as_i64();
    for peer in peers.iter_mut() {
        assert!(peer.terminate().success());
    }

    // Its seeds are all down: whatever it serves comes from its own store.
    peers[0].restart_in_place(&current);
    let (status, body) = peers[0].get("/backends/app");
    assert_eq!(status, 200, "{body}");
    eventually("its own HAProxy, started from its own state", || {
        let pid = peers[0].haproxy_status()["pid"].as_i64();
        (pid.is_some() && pid != old).then_some(())
    });
    wait_until_served_by(&peers[0], &server);
    let (_, list) = peers[0].get("/mesh/peers");
    assert!(
        list.as_array()
            .expect("a list")
            .iter()
            .all(|p| p["state"] != "alive"),
        "it heard from someone: {list}"
    );
    peers[0].assert_haproxy_workers_unprivileged();
}
