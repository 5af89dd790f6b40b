//! Peers as separate processes on 127.0.0.1: writes spread, conflicts
//! converge, late and restarted peers catch up, acknowledged writes survive
//! `kill -9`, and only holders of the cluster CA's certificates take part.

mod support;

use std::time::Duration;

use serde_json::json;

use support::{
    Cluster, Peer, counter, eventually, ok, static_backend, wait_for_convergence, wait_for_mesh,
    within,
};

/// How soon peers must learn of a graceful leave.
const LEAVE_SEEN_WITHIN: Duration = Duration::from_secs(3);

fn backend_port(peer: &Peer, key: &str) -> Option<u64> {
    let (status, body) = peer.get(&format!("/backends/{key}"));
    (status == 200)
        .then(|| body["members"][0]["port"].as_u64())
        .flatten()
}

#[test]
fn a_write_on_each_peer_is_visible_on_all_three() {
    let cluster = Cluster::new("each");
    let (a, b, c) = cluster.three_peers();
    let peers = [&a, &b, &c];
    for (i, writer) in peers.iter().enumerate() {
        let (status, body) = writer.put(&format!("/backends/from-{i}"), static_backend(9000));
        assert_eq!(status, 200, "{body}");
    }
    for reader in peers {
        for i in 0..peers.len() {
            eventually(&format!("backend from-{i} on {}", reader.spec.name), || {
                backend_port(reader, &format!("from-{i}"))
            });
        }
    }
}

#[test]
fn concurrent_conflicting_writes_converge_to_the_same_value_everywhere() {
    let cluster = Cluster::new("conflict");
    let (a, b, c) = cluster.three_peers();
    // Both writes are issued before either could have travelled.
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| a.put("/backends/contested", static_backend(9001)));
        let second = s.spawn(|| b.put("/backends/contested", static_backend(9002)));
        (
            first.join().expect("writer a"),
            second.join().expect("writer b"),
        )
    });
    assert_eq!(first.0, 200);
    assert_eq!(second.0, 200);
    wait_for_convergence(&[&a, &b, &c]);
    let winner = eventually("the backend on peer a", || backend_port(&a, "contested"));
    assert!(winner == 9001 || winner == 9002);
    for peer in [&b, &c] {
        assert_eq!(backend_port(peer, "contested"), Some(winner));
    }
}

#[test]
fn a_peer_joining_late_catches_up() {
    let cluster = Cluster::new("late");
    let a = cluster.start("peer-a", &[]);
    let b = cluster.start("peer-b", &[&a]);
    for i in 0..20 {
        assert_eq!(
            a.put(&format!("/backends/early-{i}"), static_backend(9000))
                .0,
            200
        );
    }
    assert_eq!(a.delete("/backends/early-0").0, 200);
    let late = cluster.start("peer-late", &[&b]);
    wait_for_convergence(&[&a, &b, &late]);
    let (_, backends) = late.get("/backends");
    assert_eq!(backends.as_array().map(Vec::len), Some(19));
    assert_eq!(late.get("/backends/early-0").0, 404);
}

#[test]
fn a_restarted_peer_catches_up_on_what_it_missed() {
    let cluster = Cluster::new("restart");
    let (a, b, mut c) = cluster.three_peers();
    assert_eq!(a.put("/backends/before", static_backend(9000)).0, 200);
    wait_for_convergence(&[&a, &b, &c]);
    c.kill_9();
    assert_eq!(a.put("/backends/while-down", static_backend(9000)).0, 200);
    assert_eq!(b.delete("/backends/before").0, 200);
    c.restart();
    wait_for_convergence(&[&a, &b, &c]);
    assert_eq!(c.get("/backends/before").0, 404);
    assert_eq!(backend_port(&c, "while-down"), Some(9000));
    // And it is a member again, reachable at its new address.
    wait_for_mesh(&[&a, &b, &c]);
    assert_eq!(c.put("/backends/after", static_backend(9000)).0, 200);
    eventually("a write of the restarted peer on a", || {
        backend_port(&a, "after")
    });
}

#[test]
fn a_write_acknowledged_just_before_kill_9_survives_and_reaches_the_others() {
    let cluster = Cluster::new("kill9");
    let a = cluster.start("peer-a", &[]);
    let b = cluster.start("peer-b", &[&a]);
    // c starts alone, so its writes can reach a and b only from its disk.
    let mut spec = cluster.peer("peer-c");
    let mut c = spec.start();
    for i in 0..50 {
        let (status, body) = c.put(&format!("/backends/acked-{i}"), static_backend(9000));
        assert_eq!(status, 200, "{body}");
    }
    c.kill_9();
    spec.join = vec![a.gossip];
    c = spec.start();
    for i in 0..50 {
        assert_eq!(
            backend_port(&c, &format!("acked-{i}")),
            Some(9000),
            "acked-{i} lost by the restarted peer"
        );
    }
    wait_for_convergence(&[&a, &b, &c]);
    for i in 0..50 {
        assert_eq!(backend_port(&b, &format!("acked-{i}")), Some(9000));
    }
}

#[test]
fn a_peer_with_a_certificate_from_another_ca_gets_no_data_and_sends_none() {
    let cluster = Cluster::new("members");
    let a = cluster.start("peer-a", &[]);
    assert_eq!(a.put("/backends/secret", static_backend(9000)).0, 200);
    let foreign = Cluster::new("foreign");
    let intruder = foreign.start("intruder", &[&a]);
    assert_eq!(
        intruder.put("/backends/planted", static_backend(9000)).0,
        200
    );
    // The intruder keeps dialling with backoff (0.1 s, 0.2 s, ...): five
    // refusals span well over two anti-entropy rounds, time enough for any
    // data to have moved had a connection been accepted.
    eventually("peer a to refuse the intruder five times", || {
        let (status, text) = raw_get(&a, "/metrics");
        (status == 200 && counter(&text, "aqueduct_connections_refused_total") >= 5).then_some(())
    });
    assert_eq!(intruder.get("/backends/secret").0, 404);
    assert_eq!(a.get("/backends/planted").0, 404);
    let (_, peers) = a.get("/mesh/peers");
    assert_eq!(peers.as_array().map(Vec::len), Some(0), "a lists {peers}");
    let (_, metrics) = raw_get(&a, "/metrics");
    assert_eq!(
        counter(&metrics, "aqueduct_gossip_messages_received_total"),
        0
    );
}

fn raw_get(peer: &Peer, path: &str) -> (u16, String) {
    let response = support::http_get(peer.url(path)).expect("the peer answers");
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
}

#[test]
fn sigterm_leaves_the_mesh_and_exits_cleanly() {
    let cluster = Cluster::new("sigterm");
    let (a, b, mut c) = cluster.three_peers();
    let sent = std::time::Instant::now();
    let status = c.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        c.log()
    );
    // SWIM's failure detection would take longer than this (a suspicion
    // timeout of several seconds): only the leave message can make it.
    within(LEAVE_SEEN_WITHIN, "a and b to see c gone", || {
        [&a, &b]
            .iter()
            .all(|p| {
                let (_, list) = p.get("/mesh/peers");
                list.as_array().is_some_and(|l| {
                    let c: Vec<_> = l.iter().filter(|e| e["name"] == "peer-c").collect();
                    !c.is_empty() && c.iter().all(|e| e["state"] == "down")
                })
            })
            .then_some(())
    });
    // What scripts/bench-leave.sh reads (a median over several runs).
    println!(
        "leave: SIGTERM to down on both other peers in {} ms",
        sent.elapsed().as_millis()
    );
}

/// Kills `peer` with SIGKILL (and stops the writers) when dropped: at the
/// planned moment, or when the test fails first, so that it never hangs.
struct KillOnDrop<'a> {
    pid: u32,
    stop: &'a std::sync::atomic::AtomicBool,
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Eight clients write new backends to `peer` until it has acknowledged
/// `before_kill` writes; then it is killed with SIGKILL mid-stream. Returns
/// the keys it acknowledged (the process is left to reap).
fn write_until_killed(peer: &Peer, before_kill: usize) -> Vec<String> {
    let acknowledged = std::sync::Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let kill = KillOnDrop {
            pid: peer.pid(),
            stop: &stop,
        };
        for writer in 0..8 {
            let (acknowledged, stop) = (&acknowledged, &stop);
            s.spawn(move || {
                let client = support::http_builder().build().expect("http client");
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("w{writer}-{i}");
                    let url = peer.url(&format!("/backends/{key}"));
                    // Errors are expected once the peer is killed.
                    match client.put(url).json(&static_backend(9000)).send() {
                        Ok(response) if response.status().is_success() => {
                            acknowledged.lock().expect("not poisoned").push(key);
                        }
                        _ => break,
                    }
                }
            });
        }
        eventually("enough acknowledged writes", || {
            (acknowledged.lock().expect("not poisoned").len() >= before_kill).then_some(())
        });
        drop(kill);
    });
    acknowledged.into_inner().expect("not poisoned")
}

#[test]
fn kill_9_in_the_middle_of_concurrent_writes_loses_no_acknowledged_write() {
    let cluster = Cluster::new("kill9-load");
    let spec = cluster.peer("peer-a");
    let mut peer = spec.start();
    let acknowledged = write_until_killed(&peer, 300);
    peer.kill_9(); // reaps it
    peer = spec.start();
    for key in &acknowledged {
        assert_eq!(
            backend_port(&peer, key),
            Some(9000),
            "{key} was acknowledged, then lost ({} acknowledged in all)",
            acknowledged.len()
        );
    }
}

#[test]
fn a_peer_killed_during_writes_never_reissues_a_change_the_others_already_have() {
    let cluster = Cluster::new("kill9-dots");
    let a = cluster.start("peer-a", &[]);
    let spec = {
        let mut spec = cluster.peer("peer-b");
        spec.join = vec![a.gossip];
        spec
    };
    let mut b = spec.start();
    wait_for_mesh(&[&a, &b]);
    write_until_killed(&b, 300);
    b.kill_9(); // reaps it
    b = spec.start();
    // New writes after the restart take the counters that follow what b
    // persisted; had b sent a change it had not persisted, one of these
    // would reuse its dot and a would refuse it.
    for i in 0..50 {
        assert_eq!(
            b.put(&format!("/backends/after-{i}"), static_backend(9000))
                .0,
            200
        );
    }
    wait_for_convergence(&[&a, &b]);
    let (_, metrics) = raw_get(&a, "/metrics");
    assert_eq!(counter(&metrics, "aqueduct_gossip_deltas_refused_total"), 0);
}

fn registrations(peer: &Peer) -> usize {
    let (status, list) = peer.get("/registrations/myapp");
    assert_eq!(status, 200, "{list}");
    list.as_array().map_or(0, Vec::len)
}

#[test]
fn heartbeats_that_change_nothing_are_not_gossiped() {
    let cluster = Cluster::new("mesh-heartbeats");
    let (a, b, c) = cluster.three_peers();
    for _ in 0..20 {
        let (status, body) = a.post(
            "/registrations/myapp/1.0.0/10.0.0.1/8080",
            json!({"secondsToExpire": 10}),
        );
        assert_eq!(status, 200, "{body}");
    }
    wait_for_convergence(&[&a, &b, &c]);
    assert_eq!(registrations(&b), 1);
    let metrics = raw_get(&a, "/metrics").1;
    assert_eq!(counter(&metrics, "aqueduct_registry_heartbeats_total"), 20);
    assert_eq!(
        counter(&metrics, "aqueduct_registry_heartbeats_written_total"),
        1
    );
}

#[test]
fn a_registration_taken_by_a_killed_peer_expires_on_the_others() {
    let cluster = Cluster::new("mesh-owner-killed");
    let (mut a, b, c) = cluster.three_peers();
    let (status, body) = a.post(
        "/registrations/myapp/1.0.0/10.0.0.1/8080",
        json!({"secondsToExpire": 2}),
    );
    assert_eq!(status, 200, "{body}");
    eventually("the registration on every peer", || {
        (registrations(&b) == 1 && registrations(&c) == 1).then_some(())
    });

    a.kill_9();

    eventually("the registration to expire on the others", || {
        (registrations(&b) == 0 && registrations(&c) == 0).then_some(())
    });
}

#[test]
fn every_peer_shows_the_others_reported_digests_and_whether_they_converged() {
    let cluster = Cluster::new("reports");
    let peers = cluster.three_peers();
    let all = [&peers.0, &peers.1, &peers.2];
    ok(peers.0.put("/backends/web", static_backend(9001)));
    wait_for_convergence(&all);
    for peer in all {
        eventually("every other peer's report converged with this one", || {
            let (_, listed) = peer.get("/mesh/peers");
            let reports: Vec<&serde_json::Value> = listed
                .as_array()?
                .iter()
                .filter(|p| p["state"] == "alive")
                .map(|p| &p["report"])
                .collect();
            (reports.len() == 2
                && reports
                    .iter()
                    .all(|r| r["converged"] == true && r["digest"] == peer.digest().as_str()))
            .then_some(())
        });
    }
    let (_, listed) = peers.0.get("/mesh/peers");
    let haproxy = &listed[0]["report"]["haproxy"];
    assert_eq!(
        haproxy["managed"], false,
        "peers started with --haproxy off"
    );
}
