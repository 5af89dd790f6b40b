//! `aqueduct register`, the registry sidecar, against real peers: it
//! registers, keeps the instance alive past its lease, fails over between
//! peers, and deregisters when stopped.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Cluster, Peer, Sidecar, binary, eventually};

/// The instance every test registers.
const INSTANCE: &str = "myapp@1.0.0:10.0.0.1:8080";
const PATH: &str = "/registrations/myapp/1.0.0";

fn listed(peer: &Peer) -> Vec<serde_json::Value> {
    let (status, list) = peer.get(PATH);
    assert_eq!(status, 200, "{list}");
    list.as_array().cloned().unwrap_or_default()
}

/// Asserts that `peer` lists the instance throughout `window`.
fn stays_registered(peer: &Peer, window: Duration) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert_eq!(listed(peer).len(), 1, "the instance expired");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_sidecar_keeps_an_instance_registered_and_deregisters_it_on_sigterm() {
    let cluster = Cluster::new("register-sidecar");
    let peer = cluster.start("peer-a", &[]);
    // The first API answers nothing: the sidecar goes on to the next.
    let apis = ["http://127.0.0.1:9".to_owned(), peer.url("")];
    let (mut sidecar, line) = Sidecar::start(&apis, INSTANCE, &["--ttl", "3", "--meta", "zone=b"]);
    assert!(
        line.starts_with(&format!("registered {INSTANCE} via")),
        "{line}"
    );

    let instance = &listed(&peer)[0];
    assert_eq!(instance["meta"]["zone"], "b");
    assert_eq!(instance["meta"]["secondsToExpire"], 3);
    // Two leases long, the heartbeats keep it.
    stays_registered(&peer, Duration::from_secs(6));

    assert!(sidecar.terminate().success());
    assert!(listed(&peer).is_empty());
}

#[test]
fn the_sidecar_moves_to_another_peer_when_its_peer_dies() {
    let cluster = Cluster::new("register-failover");
    let mut a = cluster.start("peer-a", &[]);
    let b = cluster.start("peer-b", &[&a]);
    support::wait_for_mesh(&[&a, &b]);
    let (_sidecar, line) = Sidecar::start(&[a.url(""), b.url("")], INSTANCE, &["--ttl", "3"]);
    assert!(line.contains(&a.url("")), "{line}");
    eventually("the instance on peer b", || {
        (listed(&b).len() == 1).then_some(())
    });

    a.kill_9();

    // Longer than a lease plus failure detection: without the move to
    // peer b, the instance would be gone by then.
    stays_registered(&b, Duration::from_secs(10));
}

#[test]
fn the_sidecar_refuses_an_instance_that_is_not_name_at_version_host_port() {
    let output = Command::new(binary())
        .args([
            "register",
            "--api",
            "http://127.0.0.1:9",
            "myapp:10.0.0.1:8080",
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("NAME@VERSION:HOST:PORT"), "{stderr}");
}
