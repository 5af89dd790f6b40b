//! The A/B deploy story of API.md, end to end: real peers with real
//! HAProxy, instances registered by `aqueduct register` sidecars, test
//! services that answer with their version, and clients sending requests
//! throughout. No request may fail, and after each switch only the expected
//! version answers.

mod support;

use std::time::Duration;

use serde_json::json;
use support::http::{Clients, TestServer, fetch};
use support::{Cluster, Peer, Sidecar, eventually, ok, serve_myapp_v1};

const PORT: u16 = 18090;

/// One service instance: its server and the sidecar that registers it.
struct Instance {
    /// Serves as long as the instance lives.
    _server: TestServer,
    sidecar: Sidecar,
}

impl Instance {
    fn start(version: &str, index: usize, apis: &[String]) -> Instance {
        let server = TestServer::start(&format!("{version}#{index}"));
        let instance = format!("myapp@{version}:127.0.0.1:{}", server.port());
        let (sidecar, line) = Sidecar::start(apis, &instance, &["--ttl", "3"]);
        assert!(line.starts_with("registered"), "{line}");
        Instance {
            _server: server,
            sidecar,
        }
    }

    /// Stops the sidecar gracefully: it deregisters the instance.
    fn retire(&mut self) {
        assert!(self.sidecar.terminate().success());
    }
}

/// The versions that answer `count` requests for `host` through `peer`.
fn versions(peer: &Peer, host: &str, count: usize) -> Vec<String> {
    let mut seen: Vec<String> = (0..count)
        .filter_map(|_| match fetch(peer.through_haproxy(PORT), "/", host) {
            Ok((200, body)) => body.split('#').next().map(str::to_owned),
            _ => None,
        })
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

fn only(peer: &Peer, host: &str, version: &str) {
    eventually(&format!("only {version} to answer for {host}"), || {
        (versions(peer, host, 20) == [version]).then_some(())
    });
}

#[test]
fn the_ab_deploy_story_flips_rolls_back_and_retires_without_a_failed_request() {
    let cluster = Cluster::new("ab-deploy");
    let edge = cluster.start_with_haproxy("edge", &[]);
    let control = cluster.start_with_haproxy("control", &[&edge]);
    support::wait_for_mesh(&[&edge, &control]);
    let apis = [control.url(""), edge.url("")];

    // 1–3: v1 instances heartbeat; a dynamic backend and a frontend follow
    // them (written on one peer, served through the other's HAProxy).
    let mut v1: Vec<Instance> = (0..3).map(|i| Instance::start("1.0.0", i, &apis)).collect();
    serve_myapp_v1(&control, "myapp", PORT);
    only(&edge, "myapp.example.com", "1.0.0");
    let clients = Clients::start(edge.through_haproxy(PORT), "myapp.example.com", 2);

    // 4: v2 instances register, staged behind a Host rule.
    let _v2: Vec<Instance> = (0..3).map(|i| Instance::start("2.0.0", i, &apis)).collect();
    ok(control.put(
        "/backends/staged",
        json!({"type": "dynamic", "name": "myapp", "version": "2.0.0"}),
    ));
    ok(control.put(
        "/frontends/myapp",
        json!({"bind": format!("*:{PORT}"), "backend": "live", "rules": [
            {"type": "header", "header": "host", "operation": "hdr_dom",
             "value": "staged.example.com", "backend": "staged"}]}),
    ));
    only(&edge, "staged.example.com", "2.0.0");
    only(&edge, "myapp.example.com", "1.0.0");
    edge.wait_until_applied();
    let reloads = edge.haproxy_count("reloads");

    // 5: the flip; 6: the rollback; then the flip again.
    ok(control.post("/backends/live", json!({"version": "2.0.0"})));
    only(&edge, "myapp.example.com", "2.0.0");
    ok(control.post("/backends/live", json!({"version": "1.0.0"})));
    only(&edge, "myapp.example.com", "1.0.0");
    ok(control.post("/backends/live", json!({"version": "2.0.0"})));
    only(&edge, "myapp.example.com", "2.0.0");

    // v1 retired: its sidecars stop and deregister.
    for instance in &mut v1 {
        instance.retire();
    }
    eventually("v1 gone from the registry", || {
        let (_, list) = edge.get("/registrations/myapp/1.0.0");
        (list.as_array().map(Vec::len) == Some(0)).then_some(())
    });
    only(&edge, "myapp.example.com", "2.0.0");

    let (answered, failures) = clients.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        answered + failures.len() as u64,
        &failures[..failures.len().min(10)]
    );
    assert!(answered >= 200, "only {answered} requests went through");
    // Switching versions and retiring never reloaded: the members moved
    // through the runtime API.
    edge.wait_until_applied();
    assert_eq!(edge.haproxy_count("reloads"), reloads);
    edge.assert_haproxy_workers_unprivileged();
    control.assert_haproxy_workers_unprivileged();
}

/// A server that answers `name` after `delay` (a long request in flight).
fn slow_server(name: &'static str, delay: Duration) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        // Serves until the test process ends; one thread per connection.
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head);
                // Health checks and probes are answered at once; the
                // request under test is the one for /slow.
                if head.starts_with(b"GET /slow") {
                    std::thread::sleep(delay);
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
            });
        }
    });
    addr
}

#[test]
fn a_request_in_flight_to_the_old_version_completes_after_the_switch() {
    let cluster = Cluster::new("ab-in-flight");
    let peer = cluster.start_with_haproxy("edge", &[]);
    let old = slow_server("1.0.0#slow", Duration::from_secs(4));
    let new = TestServer::start("2.0.0#0");
    for (version, port) in [("1.0.0", old.port()), ("2.0.0", new.port())] {
        ok(peer.post(
            &format!("/registrations/myapp/{version}/127.0.0.1/{port}"),
            json!({"secondsToExpire": 60}),
        ));
    }
    serve_myapp_v1(&peer, "myapp", PORT);
    only(&peer, "myapp.example.com", "1.0.0");
    let through = peer.through_haproxy(PORT);
    let in_flight = std::thread::spawn(move || fetch(through, "/slow", "myapp.example.com"));
    eventually("the slow request to reach the old version", || {
        let stats = peer.get("/haproxy/stats").1;
        stats["rows"]
            .as_array()?
            .iter()
            .any(|row| {
                row["proxy"] == "live" && row["name"] != "BACKEND" && row["currentSessions"] == 1
            })
            .then_some(())
    });

    ok(peer.post("/backends/live", json!({"version": "2.0.0"})));
    only(&peer, "myapp.example.com", "2.0.0");

    let (status, body) = in_flight.join().expect("request").expect("an answer");
    assert_eq!((status, body.as_str()), (200, "1.0.0#slow"));
    peer.assert_haproxy_workers_unprivileged();
}
