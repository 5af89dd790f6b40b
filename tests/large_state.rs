//! A state larger than one gossip message (32 MiB) between real processes
//! on 127.0.0.1: a new peer catches up in parts, and a sync cut by `kill -9`
//! of either side goes on after the restart.

mod support;

use std::time::Duration;

use serde_json::{Value, json};

use support::{Cluster, Peer, PeerSpec, counter, ok, within};

/// Backends written, each with 64 natives lines of about 500 bytes: about
/// 46 MB of document, past the old limit of one message (32 MiB).
const BACKENDS: usize = 1_400;

/// How long a peer may take to catch up on the whole state: generous for
/// a debug build on two shared cores (the release figure is in
/// BENCHMARKS.md).
const CATCH_UP_WITHIN: Duration = Duration::from_secs(120);

/// Quotas that let the state grow past one message.
fn large_state_peer(cluster: &Cluster, name: &str, join: &[&Peer]) -> PeerSpec {
    let mut spec = cluster.peer(name);
    spec.join = join.iter().map(|p| p.gossip).collect();
    spec.extra = [
        "--quota-document-bytes",
        "134217728",
        "--quota-natives-bytes",
        "32768",
    ]
    .map(String::from)
    .to_vec();
    spec
}

/// A backend whose natives take about 32 KiB.
fn padded_backend(i: usize) -> Value {
    let natives: Vec<String> = (0..64)
        .map(|line| {
            let pad: String =
                std::iter::repeat_n(char::from(b'a' + (line % 26) as u8), 470).collect();
            format!("http-response set-header X-Pad-{i}-{line} {pad}")
        })
        .collect();
    json!({
        "type": "static",
        "members": [{"host": "127.0.0.1", "port": 9000}],
        "natives": natives,
    })
}

/// Writes [`BACKENDS`] padded backends to `peer` from four threads.
fn write_large_state(peer: &Peer) {
    std::thread::scope(|scope| {
        for part in 0..4 {
            scope.spawn(move || {
                for i in (part..BACKENDS).step_by(4) {
                    ok(peer.put(&format!("/backends/big-{i:05}"), padded_backend(i)));
                }
            });
        }
    });
}

fn document_bytes(peer: &Peer) -> u64 {
    counter(&peer.metrics(), "aqueduct_document_bytes")
}

fn backend_count(peer: &Peer) -> usize {
    let (_, backends) = peer.get("/backends");
    backends.as_array().map_or(0, Vec::len)
}

fn caught_up(peers: [&Peer; 2]) {
    within(CATCH_UP_WITHIN, "the new peer to catch up", || {
        (peers[0].digest() == peers[1].digest()).then_some(())
    });
    assert_eq!(backend_count(peers[1]), BACKENDS);
}

#[test]
fn a_new_peer_catches_up_on_a_state_larger_than_one_message_in_parts() {
    let cluster = Cluster::new("large");
    let a = large_state_peer(&cluster, "peer-a", &[]).start();
    write_large_state(&a);
    let bytes = document_bytes(&a);
    assert!(bytes > 40 << 20, "only {bytes} bytes of document");

    let b = large_state_peer(&cluster, "peer-b", &[&a]).start();
    caught_up([&a, &b]);
    let (a_metrics, b_metrics) = (a.metrics(), b.metrics());
    assert!(counter(&a_metrics, "aqueduct_gossip_sync_chunks_cut_total") >= bytes / (4 << 20));
    assert!(counter(&b_metrics, "aqueduct_gossip_sync_chunks_asked_total") >= bytes / (4 << 20));
    for metrics in [&a_metrics, &b_metrics] {
        assert_eq!(
            counter(metrics, "aqueduct_gossip_messages_too_large_total"),
            0
        );
    }
}

#[test]
fn a_sync_cut_by_kill_9_of_either_side_goes_on_after_the_restart() {
    let cluster = Cluster::new("large-kill");
    let mut a = large_state_peer(&cluster, "peer-a", &[]).start();
    write_large_state(&a);

    let mut b = large_state_peer(&cluster, "peer-b", &[&a]).start();
    let asked = |peer: &Peer| counter(&peer.metrics(), "aqueduct_gossip_sync_chunks_asked_total");
    within(CATCH_UP_WITHIN, "the first parts to arrive", || {
        (asked(&b) >= 2).then_some(())
    });
    assert!(
        backend_count(&b) < BACKENDS,
        "the sync ended before the kill"
    );
    // Both sides killed in the middle; b comes back first, to a store that
    // holds part of the state and no member to finish it with.
    b.kill_9();
    a.kill_9();
    b.restart();
    assert_eq!(
        b.mesh()["firstSync"],
        "waiting",
        "a partial store is not a sync"
    );
    assert_eq!(b.get("/ready").0, 503);
    a.restart_on_same_addresses();
    caught_up([&a, &b]);
    within(CATCH_UP_WITHIN, "b's first sync", || {
        (b.mesh()["firstSync"] == "done").then_some(())
    });
}
