//! Crash loop between real processes on 127.0.0.1: three peers, each with
//! its own HAProxy, take a steady write load while random `kill -9`s hit
//! their `aqueduct` processes (each stays down a random while, then comes
//! back on the same data dir and addresses) and their HAProxy processes (masters and workers, which the
//! peer must restart). Afterwards no acknowledged write is missing
//! anywhere, the peers converge, and every HAProxy serves. And a peer that
//! comes back while no other peer is up serves its last configuration from
//! its own state.
//!
//! `AQUEDUCT_CRASH_KILLS` sets the number of kills (default
//! [`KILLS_DEFAULT`]); `AQUEDUCT_CRASH_SEED` repeats a run's random choices
//! (which process, how long to pause), though not its timing (the seed is
//! printed).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use support::http::{TestServer, fetch};
use support::{Cluster, Peer, eventually, poll, wait_for_convergence, wait_for_mesh};

/// The port the served frontend binds (on each peer's own address).
const PORT: u16 = 18090;
/// Kills in a run unless `AQUEDUCT_CRASH_KILLS` says otherwise: small
/// enough for CI; 200 is the number, run through the variable.
const KILLS_DEFAULT: usize = 60;
/// Bound on the chaos phase, whatever the number of kills.
const CHAOS_TIME_MAX: Duration = Duration::from_secs(600);
/// Bound on the writes the load sends.
const WRITES_MAX: u32 = 20_000;
/// Longest pause after a kill (before a restart, and before the next kill).
const PAUSE_MAX_MS: u64 = 300;
/// How long the mesh may take to converge once the chaos stops: above the
/// driver's 30 s hold on a structure HAProxy died loading twice.
const CONVERGENCE_MAX: Duration = Duration::from_secs(90);

/// One write of the load; every one is distinct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Write {
    /// `PUT /backends/w{n}`: a structure change, so a reload everywhere.
    Backend(u32),
    /// `PUT /backends/pool/members/127.0.0.1/{port}`: a runtime change.
    Member(u16),
}

impl Write {
    fn nth(n: u32) -> Write {
        if n.is_multiple_of(2) {
            Write::Backend(n)
        } else {
            Write::Member(u16::try_from(20_000 + n).expect("a port"))
        }
    }

    fn path_and_body(self) -> (String, Value) {
        match self {
            Write::Backend(n) => (
                format!("/backends/w{n}"),
                json!({"type": "static", "health": quiet_health(),
                       "members": [{"host": "127.0.0.1", "port": 30_000 + n}]}),
            ),
            Write::Member(port) => (
                format!("/backends/pool/members/127.0.0.1/{port}"),
                json!({}),
            ),
        }
    }
}

/// A health-check interval long enough that the load's thousands of
/// members (nothing listens on their ports) are never checked.
fn quiet_health() -> Value {
    json!({"interval": 3_600_000})
}

/// What a peer's `GET /backends` shows of the load's writes.
fn writes_seen(peer: &Peer) -> BTreeSet<Write> {
    let (status, backends) = peer.get("/backends");
    assert_eq!(status, 200, "GET /backends: {backends}");
    let mut seen = BTreeSet::new();
    for backend in backends.as_array().expect("an array") {
        let key = backend["key"].as_str().unwrap_or_default();
        if let Some(n) = key.strip_prefix('w').and_then(|n| n.parse().ok()) {
            seen.insert(Write::Backend(n));
        }
        if key == "pool" {
            for member in backend["members"].as_array().expect("members") {
                let port = member["port"].as_u64().expect("a port");
                seen.insert(Write::Member(u16::try_from(port).expect("a port")));
            }
        }
    }
    seen
}

/// A client thread writing round-robin to the peers until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Written>,
}

/// What the load wrote.
struct Written {
    /// The writes answered with a 2xx.
    acknowledged: Vec<Write>,
    /// How many writes got no acknowledgement, by reason.
    unacknowledged: BTreeMap<String, u32>,
}

impl Load {
    fn start(apis: Vec<SocketAddr>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let http = support::http_builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client");
            let mut written = Written {
                acknowledged: Vec::new(),
                unacknowledged: BTreeMap::new(),
            };
            let (mut n, mut turn) = (0, 0);
            while n < WRITES_MAX && !stopped.load(Ordering::SeqCst) {
                let write = Write::nth(n);
                let (path, body) = write.path_and_body();
                let api = apis[turn % apis.len()];
                turn += 1;
                let answer = http.put(format!("http://{api}{path}")).json(&body).send();
                // A peer that is down, or killed with the write in flight,
                // does not acknowledge it.
                let reason = match answer {
                    Ok(answer) if answer.status().is_success() => {
                        written.acknowledged.push(write);
                        n += 1;
                        continue;
                    }
                    Ok(answer) => answer.status().to_string(),
                    Err(e) if e.is_connect() => {
                        // Never reached a peer: the same write goes to the
                        // next one (after a breath, in case all are down).
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(e) if e.is_timeout() => "timed out".to_owned(),
                    Err(_) => "connection lost".to_owned(),
                };
                *written.unacknowledged.entry(reason).or_default() += 1;
                n += 1;
            }
            written
        });
        Load { stop, thread }
    }

    fn finish(self) -> Written {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the load thread")
    }
}

/// A random pause of up to [`PAUSE_MAX_MS`]: kills come at random moments
/// (this paces the chaos; it synchronizes nothing).
fn pause(rng: &mut ChaCha8Rng) {
    std::thread::sleep(Duration::from_millis(rng.random_range(0..=PAUSE_MAX_MS)));
}

fn env_or<T: std::str::FromStr>(name: &str, default: impl FnOnce() -> T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(default)
}

/// Three peers with HAProxy, each joining through the other two at fixed
/// addresses, serving `frontend web` → `app` (`server`) and holding the
/// load's `pool` backend.
fn three_serving_peers(cluster: &Cluster, server: &TestServer) -> Vec<Peer> {
    let mut peers: Vec<Peer> = Vec::new();
    for name in ["peer-a", "peer-b", "peer-c"] {
        let joined: Vec<&Peer> = peers.iter().collect();
        let peer = cluster.start_with_haproxy(name, &joined);
        peers.push(peer);
    }
    // From now on, a peer comes back where it was, with every other peer
    // as a seed.
    let gossips: Vec<SocketAddr> = peers.iter().map(|p| p.gossip).collect();
    for peer in &mut peers {
        peer.spec.join = gossips
            .iter()
            .copied()
            .filter(|&g| g != peer.gossip)
            .collect();
    }
    let a = &peers[0];
    support::ok(a.put(
        "/backends/app",
        json!({"type": "static", "members": [{"host": "127.0.0.1", "port": server.port()}]}),
    ));
    support::ok(a.put(
        "/backends/pool",
        json!({"type": "static", "health": quiet_health(), "members": []}),
    ));
    support::ok(a.put(
        "/frontends/web",
        json!({"bind": format!("*:{PORT}"), "backend": "app"}),
    ));
    let all: Vec<&Peer> = peers.iter().collect();
    wait_for_mesh(&all);
    wait_for_convergence(&all);
    for peer in &peers {
        eventually("every HAProxy to serve", || serves(peer).then_some(()));
    }
    peers
}

/// Whether a request through `peer`'s HAProxy is answered by a member.
fn serves(peer: &Peer) -> bool {
    matches!(
        fetch(peer.through_haproxy(PORT), "/", "example.com"),
        Ok((200, _))
    )
}

/// The acknowledged writes missing on at least one peer.
fn lost(peers: &[Peer], acknowledged: &[Write]) -> BTreeSet<Write> {
    let mut lost = BTreeSet::new();
    for peer in peers {
        let seen = writes_seen(peer);
        lost.extend(acknowledged.iter().filter(|w| !seen.contains(w)));
    }
    lost
}

/// What still keeps the mesh from the end state the crash loop demands
/// (`None`: nothing): acknowledged writes missing on a peer, digests or
/// configurations that differ, an HAProxy not running what its peer
/// rendered or not serving.
fn not_converged(peers: &[Peer], acknowledged: &[Write]) -> Option<String> {
    let mut problems = Vec::new();
    let lost = lost(peers, acknowledged);
    if !lost.is_empty() {
        let some: Vec<&Write> = lost.iter().take(5).collect();
        problems.push(format!(
            "{} acknowledged writes missing, e.g. {some:?}",
            lost.len()
        ));
    }
    for peer in peers {
        if !peer.runs_what_it_rendered() {
            problems.push(format!("{}'s HAProxy lags its rendering", peer.spec.name));
        }
        if !serves(peer) {
            problems.push(format!("{}'s HAProxy does not serve", peer.spec.name));
        }
    }
    let digests: BTreeSet<String> = peers.iter().map(Peer::digest).collect();
    if digests.len() > 1 {
        problems.push(format!("digests differ: {digests:?}"));
    }
    let configs: BTreeSet<String> = peers.iter().map(Peer::neutral_haproxy_config).collect();
    if configs.len() > 1 {
        problems.push("configurations differ".to_owned());
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

#[test]
fn no_acknowledged_write_is_lost_and_every_haproxy_serves_after_random_kill_9s() {
    let kills = env_or("AQUEDUCT_CRASH_KILLS", || KILLS_DEFAULT);
    let seed = env_or("AQUEDUCT_CRASH_SEED", || {
        getrandom::u64().expect("randomness")
    });
    println!("crash loop: seed {seed} (AQUEDUCT_CRASH_SEED repeats its choices), {kills} kills");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cluster = Cluster::new("crash-loop");
    let server = TestServer::start("app");
    let mut peers = three_serving_peers(&cluster, &server);

    let started = Instant::now();
    let load = Load::start(peers.iter().map(|p| p.api).collect());
    let (mut peer_kills, mut haproxy_kills) = (0, 0);
    let mut last_kill = Instant::now();
    // A killed peer stays down for a random number of rounds, so that at
    // times two or three are down at once and a peer comes back with none
    // of its seeds up.
    let mut down = [false; 3];
    while peer_kills + haproxy_kills < kills && started.elapsed() < CHAOS_TIME_MAX {
        for (peer, down) in peers.iter_mut().zip(&mut down) {
            if *down && rng.random_bool(0.5) {
                peer.restart_on_same_addresses();
                *down = false;
            }
        }
        let chosen = rng.random_range(0..3);
        let peer = &mut peers[chosen];
        if rng.random_bool(0.5) {
            if down[chosen] {
                continue;
            }
            peer.kill_9();
            down[chosen] = true;
            peer_kills += 1;
        } else {
            // Any of its HAProxy processes: a master, a worker, or one an
            // earlier run left that is still finishing its connections.
            let pids = peer.haproxy_pids();
            if pids.is_empty() {
                continue; // Between a death and its restart: choose again.
            }
            let pid = pids[rng.random_range(0..pids.len())];
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            haproxy_kills += 1;
        }
        last_kill = Instant::now();
        pause(&mut rng);
    }
    for (peer, down) in peers.iter_mut().zip(down) {
        if down {
            peer.restart_on_same_addresses();
        }
    }
    let chaos = started.elapsed();
    let Written {
        acknowledged,
        unacknowledged,
    } = load.finish();

    let outcome = poll(CONVERGENCE_MAX, || {
        not_converged(&peers, &acknowledged).is_none().then_some(())
    });
    let converged_after = last_kill.elapsed();
    let problems = not_converged(&peers, &acknowledged);
    let lost = lost(&peers, &acknowledged).len();
    println!(
        "crash loop: {} kills ({peer_kills} aqueduct, {haproxy_kills} HAProxy) in {:.1} s; \
         writes acknowledged {}, not acknowledged {unacknowledged:?}, lost {lost}; \
         converged {:.1} s after the last kill; {:.1} s in all",
        peer_kills + haproxy_kills,
        chaos.as_secs_f64(),
        acknowledged.len(),
        converged_after.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        outcome.is_some(),
        "not converged {} s after the last kill (seed {seed}): {}",
        CONVERGENCE_MAX.as_secs(),
        problems.unwrap_or_default()
    );
    assert_eq!(lost, 0);
    assert!(
        peer_kills + haproxy_kills == kills,
        "ran out of time for the kills"
    );
    // Restarted however they died, HAProxy's workers still drop root.
    for peer in &peers {
        peer.assert_haproxy_workers_unprivileged();
    }
}

#[test]
fn a_peer_restarted_alone_serves_its_last_configuration_before_hearing_from_anyone() {
    let cluster = Cluster::new("crash-alone");
    let server = TestServer::start("app");
    let mut peers = three_serving_peers(&cluster, &server);
    let before = peers[0].neutral_haproxy_config();
    for peer in &mut peers {
        peer.kill_9();
        // Its HAProxy would keep serving the old configuration: gone too.
        peer.kill_leftover_haproxy();
    }
    eventually("every HAProxy to be gone", || {
        peers.iter().all(|p| !serves(p)).then_some(())
    });

    let alone = &mut peers[0];
    alone.restart_on_same_addresses();

    eventually("the lone peer's HAProxy to serve", || {
        serves(alone).then_some(())
    });
    let (status, backend) = alone.get("/backends/app");
    assert_eq!(status, 200, "{backend}");
    assert_eq!(backend["members"][0]["port"], server.port());
    assert_eq!(alone.neutral_haproxy_config(), before);
    let (_, mesh) = alone.get("/mesh/peers");
    let alive = mesh
        .as_array()
        .expect("an array")
        .iter()
        .filter(|p| p["state"] == "alive");
    assert_eq!(alive.count(), 0, "nobody else is up: {mesh}");
}
