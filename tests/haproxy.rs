//! Peers driving real HAProxy processes, with real HTTP traffic on
//! loopback: routing, member changes without reloads, no failed request
//! across reloads and member churn, refused configurations, and HAProxy's
//! supervision.
//!
//! Each peer's HAProxy listens on a loopback address of its own
//! (`--bind-host`), so frontends bind the same port on every peer.

mod support;

use std::time::Duration;

use serde_json::json;
use support::http::{Clients, TestServer, fetch};
use support::{Cluster, Peer, eventually, within};

/// The port every test frontend binds (on each peer's own address).
const PORT: u16 = 18080;

fn member(server: &TestServer) -> serde_json::Value {
    json!({"host": "127.0.0.1", "port": server.port()})
}

/// Waits until a request for `path` (with `host`) through `peer`'s
/// HAProxy is answered by `server`.
fn wait_until_served_by(peer: &Peer, path: &str, host: &str, server: &TestServer) {
    let through = peer.through_haproxy(PORT);
    eventually(
        &format!("{} to serve {path} (host {host})", server.name),
        || {
            matches!(fetch(through, path, host), Ok((200, body)) if body == server.name)
                .then_some(())
        },
    );
}

/// The server names that answer `count` requests through `peer`.
fn answers(peer: &Peer, count: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..count)
        .map(|_| {
            let (status, body) =
                fetch(peer.through_haproxy(PORT), "/", "example.com").expect("HAProxy answers");
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A frontend on `*:PORT` in front of a static backend `app` with `members`.
fn serve(peer: &Peer, members: &[&TestServer]) {
    let members: Vec<_> = members.iter().map(|s| member(s)).collect();
    let (status, body) = peer.put(
        "/backends/app",
        json!({"type": "static", "members": members}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = peer.put(
        "/frontends/web",
        json!({"bind": format!("*:{PORT}"), "backend": "app"}),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn requests_reach_the_members_and_rules_route_by_path_and_host_header() {
    let cluster = Cluster::new("haproxy-routing");
    let peer = cluster.start_with_haproxy("peer-a", &[]);
    let (default, api, staged) = (
        TestServer::start("default"),
        TestServer::start("api"),
        TestServer::start("staged"),
    );
    for (key, server) in [("app", &default), ("api", &api), ("staged", &staged)] {
        let (status, body) = peer.put(
            &format!("/backends/{key}"),
            json!({"type": "static", "members": [member(server)]}),
        );
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = peer.put(
        "/frontends/web",
        json!({
            "bind": format!("*:{PORT}"),
            "backend": "app",
            "rules": [
                {"type": "path", "operation": "path_beg", "value": "/api", "backend": "api"},
                {"type": "header", "header": "host", "operation": "hdr_dom",
                 "value": "staged.example.com", "backend": "staged"}
            ]
        }),
    );
    assert_eq!(status, 200, "{body}");

    wait_until_served_by(&peer, "/", "example.com", &default);
    wait_until_served_by(&peer, "/api/users", "example.com", &api);
    wait_until_served_by(&peer, "/", "staged.example.com", &staged);
    peer.assert_haproxy_workers_unprivileged();
}

#[test]
fn a_member_added_on_another_peer_serves_here_without_a_reload() {
    let cluster = Cluster::new("haproxy-remote-member");
    let a = cluster.start_with_haproxy("peer-a", &[]);
    let b = cluster.start_with_haproxy("peer-b", &[&a]);
    support::wait_for_mesh(&[&a, &b]);
    let (first, second) = (TestServer::start("first"), TestServer::start("second"));
    serve(&a, &[&first]);
    wait_until_served_by(&b, "/", "example.com", &first);
    b.wait_until_applied();
    let reloads = b.haproxy_count("reloads");
    let runtime = b.haproxy_count("runtimeChanges");

    let (status, body) = a.put(
        &format!("/backends/app/members/127.0.0.1/{}", second.port()),
        json!({}),
    );
    assert_eq!(status, 200, "{body}");

    wait_until_served_by(&b, "/", "example.com", &second);
    // HAProxy serves the new member before the driver has finished (and
    // counted) the change.
    b.wait_until_applied();
    assert_eq!(
        b.haproxy_count("reloads"),
        reloads,
        "a member change reloaded"
    );
    assert!(b.haproxy_count("runtimeChanges") > runtime);
    assert_eq!(answers(&b, 20), ["first", "second"]);
    // Same state, same bytes: the peers' files differ only in their own
    // settings (data dir, listen address).
    wait_until_served_by(&a, "/", "example.com", &second);
    assert_eq!(a.neutral_haproxy_config(), b.neutral_haproxy_config());
    a.assert_haproxy_workers_unprivileged();
    b.assert_haproxy_workers_unprivileged();
}

#[test]
fn no_request_fails_during_50_reloads_and_200_member_changes() {
    let cluster = Cluster::new("haproxy-no-failed-request");
    let peer = cluster.start_with_haproxy("peer-a", &[]);
    let stable = [TestServer::start("stable-1"), TestServer::start("stable-2")];
    let churn: Vec<TestServer> = (0..4)
        .map(|i| TestServer::start(&format!("churn-{i}")))
        .collect();
    serve(&peer, &[&stable[0], &stable[1]]);
    wait_until_served_by(&peer, "/", "example.com", &stable[0]);
    peer.wait_until_applied();
    let reloads_before = peer.haproxy_count("reloads");
    let runtime_before = peer.haproxy_count("runtimeChanges");

    // Two clients, so that requests are in flight while HAProxy changes.
    let clients = Clients::start(peer.through_haproxy(PORT), "example.com", 2);
    let mut structure = 0;
    let mut members = 0;
    for round in 0..50 {
        // A structure change: the frontend gains a header line (reload).
        let reloads = peer.haproxy_count("reloads");
        let (status, body) = peer.put(
            "/frontends/web",
            json!({"bind": format!("*:{PORT}"), "backend": "app",
                   "natives": [format!("http-response set-header X-Round {round}")]}),
        );
        assert_eq!(status, 200, "{body}");
        structure += 1;
        // Applied on its own, so that the member changes below go through
        // the runtime API rather than ride along with this reload.
        eventually("the reload", || {
            (peer.haproxy_count("reloads") > reloads).then_some(())
        });
        // Four member changes: a churn member comes in, is re-weighted,
        // drained, and removed (the runtime API, no reload).
        let server = &churn[round % churn.len()];
        let path = format!("/backends/app/members/127.0.0.1/{}", server.port());
        let changes = [
            Some(json!({})),
            Some(json!({"weight": 5})),
            Some(json!({"weight": 5, "state": "drain"})),
            None,
        ];
        for body in changes {
            let runtime = peer.haproxy_count("runtimeChanges");
            let (status, answer) = match body {
                Some(body) => peer.put(&path, body),
                None => peer.delete(&path),
            };
            assert_eq!(status, 200, "{answer}");
            members += 1;
            // Each change is applied on its own (none coalesces).
            eventually("the member change", || {
                (peer.haproxy_count("runtimeChanges") > runtime).then_some(())
            });
        }
        // Let traffic flow between rounds, so that changes meet requests.
        let sent = clients.sent();
        eventually("requests between rounds", || {
            (clients.sent() >= sent + 5).then_some(())
        });
    }
    assert_eq!((structure, members), (50, 200));
    // Everything applied: the last round's header is served.
    eventually("the last structure change to be applied", || {
        let text = support::http_get(peer.url("/haproxy/config"))
            .ok()?
            .text()
            .ok()?;
        text.contains("X-Round 49").then_some(())
    });
    assert_eq!(
        peer.haproxy_count("runtimeChanges") - runtime_before,
        200,
        "every member change went through the runtime API"
    );
    assert!(peer.haproxy_status()["lastError"].is_null());
    let (ok, failures) = clients.finish();

    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(10)]
    );
    assert!(ok >= 400, "only {ok} requests went through");
    let reloads = peer.haproxy_count("reloads") - reloads_before;
    assert!(
        (1..=50).contains(&reloads),
        "{reloads} reloads for 50 structure changes"
    );
    peer.assert_haproxy_workers_unprivileged();
}

#[test]
fn a_natives_line_haproxy_refuses_is_a_400_naming_the_line_and_changes_nothing() {
    let cluster = Cluster::new("haproxy-refused");
    let peer = cluster.start_with_haproxy("peer-a", &[]);
    let server = TestServer::start("only");
    serve(&peer, &[&server]);
    wait_until_served_by(&peer, "/", "example.com", &server);
    peer.wait_until_applied();
    let config = support::http_get(peer.url("/haproxy/config"))
        .expect("config")
        .text()
        .expect("text");
    let reloads = peer.haproxy_count("reloads");

    let (status, body) = peer.put(
        "/backends/broken",
        json!({"type": "static", "natives": ["timeout server bogus"]}),
    );

    assert_eq!(status, 400, "{body}");
    // The writer's own line, not HAProxy's words (which quote what HAProxy
    // read); those are in the peer's log.
    assert_eq!(
        body["details"]["lines"],
        json!(["timeout server bogus"]),
        "{body}"
    );
    assert!(!body.to_string().contains("ALERT"), "{body}");
    assert_eq!(peer.get("/backends/broken").0, 404);
    let after = support::http_get(peer.url("/haproxy/config"))
        .expect("config")
        .text()
        .expect("text");
    assert_eq!(after, config);
    assert_eq!(peer.haproxy_count("reloads"), reloads);
    wait_until_served_by(&peer, "/", "example.com", &server);
}

#[test]
fn haproxy_killed_with_sigkill_is_back_and_serving_within_2_s() {
    let cluster = Cluster::new("haproxy-restart");
    let peer = cluster.start_with_haproxy("peer-a", &[]);
    let server = TestServer::start("only");
    serve(&peer, &[&server]);
    wait_until_served_by(&peer, "/", "example.com", &server);
    peer.wait_until_applied();
    let pid = peer.haproxy_status()["pid"].as_i64().expect("a pid");

    let master = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
    rustix::process::kill_process(master, rustix::process::Signal::KILL).expect("SIGKILL");

    let through = peer.through_haproxy(PORT);
    within(Duration::from_secs(2), "HAProxy back and serving", || {
        let status = peer.haproxy_status();
        let restarted = status["restarts"] == 1 && status["pid"].as_i64() != Some(pid);
        (restarted && matches!(fetch(through, "/", "example.com"), Ok((200, _)))).then_some(())
    });
    peer.assert_haproxy_workers_unprivileged();
}

#[test]
fn a_restarted_peer_takes_over_the_haproxy_its_killed_run_left_serving() {
    let cluster = Cluster::new("haproxy-takeover");
    let mut peer = cluster.start_with_haproxy("peer-a", &[]);
    let server = TestServer::start("only");
    serve(&peer, &[&server]);
    wait_until_served_by(&peer, "/", "example.com", &server);
    let old = peer.haproxy_status()["pid"].as_i64().expect("a pid");

    peer.kill_9();
    // The control plane is gone; its HAProxy keeps serving.
    let (status, body) = fetch(peer.through_haproxy(PORT), "/", "example.com").expect("answer");
    assert_eq!((status, body.as_str()), (200, "only"));
    peer.restart();

    new_haproxy(&peer, old);
    wait_until_served_by(&peer, "/", "example.com", &server);
    assert!(peer.log().contains(&format!(
        "taking over from the HAProxy a previous run left old={old}"
    )));
    eventually("the old HAProxy to stop", || gone(old).then_some(()));
    peer.assert_haproxy_workers_unprivileged();
}

/// Whether process `pid` has exited: gone, or a zombie nobody reaps (its
/// parent, a peer that is no more, cannot).
fn gone(pid: i64) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    state.is_empty() || state.split(' ').nth(2) == Some("Z")
}

/// Waits until `clients` have sent `more` requests more.
fn more_requests(clients: &Clients, more: u64) {
    let from = clients.sent();
    eventually("more requests through HAProxy", || {
        (clients.sent() >= from + more).then_some(())
    });
}

/// Once `peer`'s HAProxy runs what `peer` applied: its pid, and clients
/// sending requests through it (50 of them answered already).
fn under_traffic(peer: &Peer) -> (i64, Clients) {
    peer.wait_until_applied();
    let pid = peer.haproxy_status()["pid"].as_i64().expect("a pid");
    let clients = Clients::start(peer.through_haproxy(PORT), "example.com", 2);
    more_requests(&clients, 50);
    (pid, clients)
}

/// Stops `clients`; none of their requests may have failed.
fn no_request_failed(clients: Clients, what: &str) {
    let (ok, failures) = clients.finish();
    println!("{what}: {ok} requests answered, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

/// Waits until `peer`'s HAProxy is another than `old`: the peer's new run
/// started its own.
fn new_haproxy(peer: &Peer, old: i64) {
    eventually("the new run to start its own HAProxy", || {
        (peer.haproxy_status()["pid"]
            .as_i64()
            .is_some_and(|pid| pid != old))
        .then_some(())
    });
}

#[test]
fn sigterm_leaves_haproxy_serving_and_the_next_start_takes_it_over_without_a_failed_request() {
    let cluster = Cluster::new("haproxy-sigterm-takeover");
    let mut peer = cluster.start_with_haproxy("peer-a", &[]);
    let server = TestServer::start("only");
    serve(&peer, &[&server]);
    wait_until_served_by(&peer, "/", "example.com", &server);
    let (old, clients) = under_traffic(&peer);

    assert!(peer.terminate().success(), "log:\n{}", peer.log());
    assert!(!gone(old), "SIGTERM stopped HAProxy");
    more_requests(&clients, 50);
    peer.restart();
    new_haproxy(&peer, old);
    eventually("the old HAProxy to stop", || gone(old).then_some(()));
    more_requests(&clients, 100);
    no_request_failed(clients, "takeover after SIGTERM");
    peer.assert_haproxy_workers_unprivileged();
}

#[test]
fn a_wiped_peer_keeps_its_haproxy_serving_until_its_first_sync_then_applies_everything() {
    let cluster = Cluster::new("haproxy-wiped");
    let mut a = cluster.start_with_haproxy("peer-a", &[]);
    let mut b = cluster.start_with_haproxy("peer-b", &[&a]);
    let server = TestServer::start("only");
    serve(&a, &[&server]);
    wait_until_served_by(&b, "/", "example.com", &server);
    let (old, clients) = under_traffic(&b);

    // b's data directory moved away while its HAProxy serves on, and the
    // one member that could sync it is down: b starts empty.
    assert!(b.terminate().success(), "log:\n{}", b.log());
    a.terminate();
    std::fs::remove_dir_all(&b.spec.data_dir).expect("data directory removed");
    b.restart();
    assert_eq!(b.mesh()["firstSync"], "waiting");
    assert_eq!(b.get("/ready").0, 503);
    more_requests(&clients, 100);
    assert!(!gone(old), "b's HAProxy stopped while b waited");
    assert!(b.log().contains("waiting for a first sync"));

    a.restart_on_same_addresses();
    eventually("b's first sync", || {
        (b.mesh()["firstSync"] == "done").then_some(())
    });
    eventually("b ready", || (b.get("/ready").0 == 200).then_some(()));
    new_haproxy(&b, old);
    wait_until_served_by(&b, "/", "example.com", &server);
    more_requests(&clients, 100);
    no_request_failed(clients, "wiped peer");
}

#[test]
fn with_haproxy_on_exit_stop_sigterm_stops_haproxy_too() {
    let cluster = Cluster::new("haproxy-on-exit-stop");
    let mut spec = cluster.peer_with_haproxy("peer-a", &[]);
    spec.extra = vec!["--haproxy-on-exit".into(), "stop".into()];
    let mut peer = spec.start();
    let server = TestServer::start("only");
    serve(&peer, &[&server]);
    wait_until_served_by(&peer, "/", "example.com", &server);
    let pid = peer.haproxy_status()["pid"].as_i64().expect("a pid");

    assert!(peer.terminate().success(), "log:\n{}", peer.log());
    assert!(gone(pid), "HAProxy still runs after its peer stopped");
    assert!(fetch(peer.through_haproxy(PORT), "/", "example.com").is_err());
}

#[test]
fn a_registration_whose_lease_runs_out_leaves_the_dynamic_backend_without_a_reload() {
    let cluster = Cluster::new("haproxy-lease");
    let peer = cluster.start_with_haproxy("peer-a", &[]);
    let (lasting, fleeting) = (TestServer::start("lasting"), TestServer::start("fleeting"));
    for (server, seconds) in [(&lasting, 3600), (&fleeting, 5)] {
        let (status, body) = peer.post(
            &format!("/registrations/myapp/1.0.0/127.0.0.1/{}", server.port()),
            json!({"secondsToExpire": seconds}),
        );
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = peer.put(
        "/backends/app",
        json!({"type": "dynamic", "name": "myapp", "version": "1.0.0"}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = peer.put(
        "/frontends/web",
        json!({"bind": format!("*:{PORT}"), "backend": "app"}),
    );
    assert_eq!(status, 200, "{body}");
    wait_until_served_by(&peer, "/", "example.com", &fleeting);
    peer.wait_until_applied();
    let reloads = peer.haproxy_count("reloads");

    eventually("the expired instance to leave the backend", || {
        (answers(&peer, 10) == ["lasting"]).then_some(())
    });
    peer.wait_until_applied();
    assert_eq!(peer.haproxy_count("reloads"), reloads);
}

#[test]
fn the_event_stream_carries_stats_member_health_and_applied_changes() {
    let cluster = Cluster::new("haproxy-events");
    let peer = cluster.start_with_haproxy("peer-a", &[]);
    let (steady, doomed, late) = (
        TestServer::start("steady"),
        TestServer::start("doomed"),
        TestServer::start("late"),
    );
    let (status, body) = peer.put(
        "/backends/app",
        json!({"type": "static", "health": {"interval": 100},
               "members": [member(&steady), member(&doomed)]}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = peer.put(
        "/frontends/web",
        json!({"bind": format!("*:{PORT}"), "backend": "app"}),
    );
    assert_eq!(status, 200, "{body}");
    wait_until_served_by(&peer, "/", "example.com", &doomed);
    let events = support::event_stream(&peer, "/haproxy/events");

    support::expect_event(
        &events,
        "stats",
        &["\"proxy\":\"app\"", "\"name\":\"BACKEND\""],
    );
    let doomed_name = format!("127.0.0.1:{}", doomed.port());
    drop(doomed);
    support::expect_event(
        &events,
        "activity",
        &["\"type\":\"member\"", &doomed_name, "\"to\":\"DOWN\""],
    );
    let (status, body) = peer.put(
        &format!("/backends/app/members/127.0.0.1/{}", late.port()),
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    support::expect_event(
        &events,
        "activity",
        &["\"type\":\"applied\"", "\"how\":\"runtime\""],
    );
}

#[test]
fn a_reload_haproxy_cannot_do_keeps_the_old_configuration_and_member_changes_still_apply() {
    let cluster = Cluster::new("haproxy-failed-reload");
    let peer = cluster.start_with_haproxy("peer-a", &[]);
    let (first, second) = (TestServer::start("first"), TestServer::start("second"));
    serve(&peer, &[&first]);
    wait_until_served_by(&peer, "/", "example.com", &first);
    // A port on this peer's address that something else holds without
    // SO_REUSEPORT: `haproxy -c` passes, the reload cannot bind.
    let holder = std::net::TcpListener::bind(peer.through_haproxy(0)).expect("bind");
    let held = holder.local_addr().expect("address").port();
    let (status, body) = peer.put(
        "/frontends/blocked",
        json!({"bind": format!("*:{held}"), "backend": "app"}),
    );
    assert_eq!(status, 200, "{body}");
    eventually("the reload to fail", || {
        (peer.haproxy_count("reloadFailures") >= 1).then_some(())
    });
    let status = peer.haproxy_status();
    assert!(
        status["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("reload failed")),
        "{status}"
    );

    let (code, body) = peer.put(
        &format!("/backends/app/members/127.0.0.1/{}", second.port()),
        json!({}),
    );
    assert_eq!(code, 200, "{body}");

    wait_until_served_by(&peer, "/", "example.com", &second);
    let on_disk = std::fs::read_to_string(peer.spec.data_dir.join("haproxy/haproxy.cfg"))
        .expect("haproxy.cfg");
    assert!(
        !on_disk.contains("frontend blocked"),
        "the failed structure is not on disk"
    );
    assert!(on_disk.contains(&format!("127.0.0.1:{}", second.port())));
    drop(holder);
    peer.assert_haproxy_workers_unprivileged();
}

#[test]
fn haproxys_own_stats_page_listens_where_configured_behind_basic_auth() {
    let cluster = Cluster::new("haproxy-stats-page");
    let mut spec = cluster.peer("peer-a");
    let host = support::loopback_host();
    spec.haproxy = Some(host);
    let page = format!("{host}:19880");
    spec.extra = [
        "--haproxy-stats",
        &page,
        "--haproxy-stats-auth",
        "admin:s3cret",
    ]
    .map(String::from)
    .to_vec();
    let peer = spec.start();
    let client = support::http_builder().build().expect("http client");
    let url = format!("http://{page}/");

    let status = eventually("the stats page", || {
        client
            .get(&url)
            .basic_auth("admin", Some("s3cret"))
            .send()
            .ok()
            .map(|r| r.status().as_u16())
    });

    assert_eq!(status, 200);
    let anonymous = client.get(&url).send().expect("answer").status().as_u16();
    assert_eq!(anonymous, 401);
    let shown = peer.haproxy_config().expect("the rendered configuration");
    assert!(shown.contains("stats auth <redacted>"), "{shown}");
    assert!(
        !shown.contains("s3cret"),
        "the API shows the stats password"
    );
    // The applied hash is of the text as shown, so clients can still
    // compare the two.
    eventually("the peer to confirm what it runs", || {
        peer.runs_what_it_rendered().then_some(())
    });
    peer.assert_haproxy_workers_unprivileged();
}
