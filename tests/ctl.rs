//! `aqueduct ctl` against a real peer: it writes through the API, reads
//! back as tables or JSON, and reports API errors with a failing exit
//! status.

mod support;

use support::{Cluster, Peer};

/// Runs `aqueduct ctl --api <peer> args...`: (success, stdout, stderr).
fn ctl(peer: &Peer, args: &[&str]) -> (bool, String, String) {
    let api = peer.url("");
    let mut all = vec!["--api", api.as_str()];
    all.extend(args);
    support::ctl(&all, &[])
}

#[test]
fn ctl_puts_a_backend_from_a_file_and_lists_it_as_a_table_and_as_json() {
    let cluster = Cluster::new("ctl-put");
    let peer = cluster.start("peer-a", &[]);
    let file = cluster.dir.path().join("backend.json");
    std::fs::write(
        &file,
        r#"{"type":"static","members":[{"host":"10.0.0.5","port":8080}]}"#,
    )
    .expect("writes");
    let (ok, _, stderr) = ctl(
        &peer,
        &[
            "backends",
            "put",
            "web",
            "--file",
            file.to_str().expect("utf-8"),
        ],
    );
    assert!(ok, "{stderr}");
    let (ok, table, _) = ctl(&peer, &["backends", "list"]);
    assert!(ok);
    assert!(table.contains("web") && table.contains("static"), "{table}");
    let (ok, json, _) = ctl(&peer, &["--json", "backends", "get", "web"]);
    assert!(ok);
    let value: serde_json::Value = serde_json::from_str(&json).expect("JSON output");
    assert_eq!(value["members"][0]["port"], 8080);
}

#[test]
fn ctl_registers_an_instance_and_switches_a_dynamic_backend_to_it() {
    let cluster = Cluster::new("ctl-ab");
    let peer = cluster.start("peer-a", &[]);
    let (ok, _, stderr) = ctl(
        &peer,
        &[
            "registrations",
            "register",
            "myapp",
            "2.0.0",
            "10.0.0.9",
            "8080",
            "--ttl",
            "60",
        ],
    );
    assert!(ok, "{stderr}");
    let backend = serde_json::json!({"type": "dynamic", "name": "myapp", "version": "1.0.0"});
    assert_eq!(peer.put("/backends/live", backend).0, 200);
    let (ok, _, stderr) = ctl(&peer, &["switch", "live", "--version", "2.0.0"]);
    assert!(ok, "{stderr}");
    let (_, live) = peer.get("/backends/live");
    assert_eq!(live["version"], "2.0.0");
}

#[test]
fn ctl_reports_an_api_error_and_exits_non_zero() {
    let cluster = Cluster::new("ctl-error");
    let peer = cluster.start("peer-a", &[]);
    let (ok, _, stderr) = ctl(&peer, &["switch", "nothing-here", "--version", "1.0.0"]);
    assert!(!ok);
    assert!(stderr.contains("404"), "{stderr}");
}

#[test]
fn ctl_shows_this_peer_and_its_mesh() {
    let cluster = Cluster::new("ctl-mesh");
    let a = cluster.start("peer-a", &[]);
    let b = cluster.start("peer-b", &[&a]);
    support::wait_for_mesh(&[&a, &b]);
    let (ok, status, _) = ctl(&a, &["status"]);
    assert!(ok && status.contains("peer-a"), "{status}");
    let (ok, peers, _) = ctl(&a, &["peers"]);
    assert!(
        ok && peers.contains("peer-b") && peers.contains("alive"),
        "{peers}"
    );
}

#[test]
fn ctl_shows_this_peers_haproxy() {
    let cluster = Cluster::new("ctl-haproxy");
    let a = cluster.start_with_haproxy("peer-a", &[]);
    support::eventually("HAProxy to run", || {
        (a.haproxy_status()["running"] == true).then_some(())
    });
    a.assert_haproxy_workers_unprivileged();
    let (ok, status, _) = ctl(&a, &["haproxy"]);
    assert!(
        ok && status.contains("running") && status.contains("reloads"),
        "{status}"
    );
}

#[test]
fn ctl_sends_a_key_as_one_path_segment_whatever_it_contains() {
    let cluster = Cluster::new("ctl-encode");
    let peer = cluster.start("peer-a", &[]);
    assert_eq!(
        peer.put("/backends/web", support::static_backend(9000)).0,
        200
    );
    let (ok, _, stderr) = ctl(&peer, &["backends", "delete", "web?x=1"]);
    assert!(!ok && stderr.contains("404"), "{stderr}");
    let (ok, _, stderr) = ctl(&peer, &["backends", "delete", "web/members"]);
    assert!(!ok && stderr.contains("404"), "{stderr}");
    assert_eq!(peer.get("/backends/web").0, 200, "web was deleted");
    // A URL path would drop these segments and address the whole list.
    let (ok, _, stderr) = ctl(&peer, &["backends", "get", ".."]);
    assert!(!ok && stderr.contains("not a key"), "{stderr}");
}
