//! `aqueduct bench`: measures real peers (child processes on loopback,
//! through their REST APIs) for BENCHMARKS.md: replication lag across a
//! three-peer mesh, durable write throughput, memory and restart time with
//! a large configuration, and — with one HAProxy per peer — how fast a
//! member change reaches every HAProxy and how many member changes the
//! driver applies without a reload; and a write flood (clients writing to
//! one peer as fast as they can) with every peer's memory, the API's
//! latency and replication lag sampled every second; and slow clients
//! against one peer's API (`slow_clients`).
//!
//! Owns the workloads and the statistics. Must not be used as a test:
//! timings vary with the machine; `scripts/bench-daemon.sh` and
//! `scripts/bench-haproxy.sh` run it several times and report medians.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::HaproxySetting;
use crate::echo::{self, Answer, EchoServer};
use crate::haproxy::driver::STABLE_AFTER;
use crate::local_mesh::{LocalMesh, LocalMeshError, MeshHaproxy, Ports, send_json};
use crate::peer::wall_clock_ms;

mod slow_clients;

/// How long any single wait of a benchmark may take before it fails.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// How long a member change may take to reach an HAProxy in
/// `member-latency` before the run fails.
const MEMBER_DEADLINE: Duration = Duration::from_secs(5);
/// Pause between two probes of one HAProxy.
const PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// The backend and frontend the HAProxy benchmarks create.
const BENCH_KEY: &str = "bench";
/// In `member-churn`, the driver is done once its runtime-change count
/// stood still this long (it may fall short of one per change when two
/// changes of one server land in one apply).
const SETTLED_AFTER: Duration = Duration::from_secs(2);
/// `member-churn`'s members listen nowhere: their ports start here.
const CHURN_FIRST_PORT: u16 = 30_000;

/// `aqueduct bench`'s options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Where the peers' data goes (default: a fresh temporary directory,
    /// removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The peers' HAProxy in the `member-*` benchmarks (`auto`: from PATH;
    /// they fail without one). The others run without HAProxy.
    #[arg(long, default_value = "auto")]
    pub haproxy: HaproxySetting,
    /// In the `member-*` benchmarks, peer 1's HAProxy listens on this
    /// address, peer N on the N−1th after it (away from the demo's).
    #[arg(long, default_value = "127.0.2.1")]
    pub first_bind_host: Ipv4Addr,
    /// What to measure.
    #[command(subcommand)]
    pub workload: Workload,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Workload {
    /// Sequential writes on peer 1 of three: time from each write's 200
    /// until it is readable on both other peers.
    Latency {
        /// How many writes.
        #[arg(long, default_value_t = 1000)]
        writes: u32,
    },
    /// Concurrent clients writing to one peer: acknowledged durable writes
    /// per second.
    Throughput {
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: u32,
        /// Total writes.
        #[arg(long, default_value_t = 20_000)]
        writes: u32,
        /// Peers in the mesh (writes go to the first).
        #[arg(long, default_value_t = 1)]
        peers: u16,
    },
    /// Resident memory idle and with a large configuration, and the time a
    /// restart takes to serve that configuration again.
    Footprint {
        /// Backends to load.
        #[arg(long, default_value_t = 10_000)]
        backends: u32,
        /// Static members per backend.
        #[arg(long, default_value_t = 10)]
        members: u32,
    },
    /// Three peers, each with its own HAProxy: a member added on peer 1,
    /// time from its 200 until a request through every HAProxy is answered
    /// by it (then removed, until all answer 503 again).
    MemberLatency {
        /// How many members are added and removed.
        #[arg(long, default_value_t = 200)]
        iterations: u32,
    },
    /// Member changes (add, re-weight, drain, set ready, delete) on one
    /// backend, one after the other: how fast the driver applies them
    /// through the runtime API, and that none reloads HAProxy.
    MemberChurn {
        /// How many changes.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        changes: u32,
        /// Members at the start.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        members: u32,
        /// Peers in the mesh (changes go to the first).
        #[arg(long, default_value_t = 1)]
        peers: u16,
    },
    /// Three peers taking the heartbeats of many instances (spread over the
    /// peers): the gossip they cost against one write per heartbeat; then
    /// peer 1 killed, and the time until the others drop its instances.
    Heartbeats {
        /// Instances.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(3..=100_000))]
        instances: u32,
        /// Seconds between two heartbeats of one instance.
        #[arg(long, default_value_t = 2)]
        interval: u32,
        /// Lease, seconds.
        #[arg(long, default_value_t = 10)]
        ttl: u32,
        /// Seconds of heartbeats measured (at least one renewal period).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(15..=600))]
        seconds: u32,
    },
    /// Three peers; clients write to the first as fast as they can for a
    /// while. Every second: each peer's resident memory, how long a write
    /// on peer 1 takes to be readable on the others; all along, a separate
    /// client's `GET /health` and `GET /frontends` latency on peer 1; at
    /// the end, how long the mesh takes to converge.
    Flood {
        /// How long the clients write.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3600))]
        seconds: u32,
        /// Concurrent writing clients.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        clients: u32,
        /// Backends the writes cycle through: the state stays this size, so
        /// memory that keeps growing would be a queue's or a buffer's.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        keys: u32,
    },
    /// One peer: connections that never finish their request head, all
    /// from 127.0.0.2, while 127.0.0.3 asks `GET /health` every 10 ms
    /// (its latency, and when each of them was closed); then idle event
    /// streams from 127.0.0.4 and a dashboard's stream from 127.0.0.5.
    /// The peer takes its API limits from the `AQUEDUCT_API_*` variables.
    SlowClients {
        /// Connections with an unfinished head.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        partial: u32,
        /// Idle event streams asked for.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        streams: u32,
    },
    /// One peer with its own HAProxy: its HAProxy master killed with
    /// SIGKILL, time until a request through it is answered again (the
    /// driver restarts it).
    HaproxyRestart {
        /// How many kills.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        kills: u32,
    },
    /// Two peers: the second stopped, a large state written on the first
    /// (static backends of many members), the second's data directory
    /// removed and the second started again: time until both digests are
    /// equal, rate, peak memory of both sides, gossip sent, and the time a
    /// restart of the first takes to serve that state again.
    Sync {
        /// Backends to load.
        #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        backends: u32,
        /// Static members per backend (1,000,000 members in all by
        /// default).
        #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..=4096))]
        members: u32,
    },
}

/// Why a benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Starting or stopping peers.
    #[error(transparent)]
    Mesh(#[from] LocalMeshError),
    /// A request failed or a wait ran out.
    #[error("{0}")]
    Run(String),
}

/// Runs one benchmark and prints its result.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let (dir, temporary) = match args.dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("aqueduct-bench-{}", std::process::id())),
            true,
        ),
    };
    let haproxy = args.workload.haproxy(args.haproxy, args.first_bind_host);
    let result = match LocalMesh::start(
        &dir,
        args.workload.peers(),
        Ports::Ephemeral,
        haproxy,
        args.workload.peer_args(),
    )
    .await
    {
        Ok(mut mesh) => {
            let result = measure(&mut mesh, args.workload).await;
            mesh.stop().await;
            result
        }
        Err(error) => Err(error.into()),
    };
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = result?;
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_else(|_| report.to_string())
        );
    }
    Ok(())
}

impl Workload {
    /// How many peers it runs on.
    fn peers(&self) -> u16 {
        match self {
            Workload::Latency { .. } => 3,
            Workload::Throughput { peers, .. } => *peers,
            Workload::Footprint { .. } => 1,
            Workload::MemberLatency { .. } => 3,
            Workload::MemberChurn { peers, .. } => *peers,
            Workload::HaproxyRestart { .. } => 1,
            Workload::Heartbeats { .. } => 3,
            Workload::Flood { .. } => 3,
            Workload::SlowClients { .. } => 1,
            Workload::Sync { .. } => 2,
        }
    }

    /// Options its peers get besides the usual: quotas raised to what it
    /// writes (the defaults would refuse the larger runs).
    fn peer_args(&self) -> Vec<String> {
        let backends =
            |count: u32| vec!["--quota-backends".to_owned(), count.max(10_000).to_string()];
        match self {
            Workload::Throughput { writes, .. } => backends(*writes),
            Workload::Footprint {
                backends: count, ..
            } => backends(*count),
            Workload::Flood { keys, .. } => backends(*keys),
            Workload::Sync {
                backends: count, ..
            } => {
                let mut args = backends(*count);
                args.extend(
                    [
                        "--quota-document-bytes",
                        "536870912",
                        "--quota-members-per-backend",
                        "4096",
                    ]
                    .map(String::from),
                );
                args
            }
            _ => Vec::new(),
        }
    }

    /// Whether its peers drive HAProxy: only the HAProxy benchmarks do, so
    /// that the others measure the control plane alone, as before.
    fn haproxy(&self, setting: HaproxySetting, first_bind_host: Ipv4Addr) -> MeshHaproxy {
        match self {
            Workload::MemberLatency { .. }
            | Workload::MemberChurn { .. }
            | Workload::HaproxyRestart { .. } => MeshHaproxy::PerPeer {
                setting,
                first_bind_host,
            },
            _ => MeshHaproxy::Off,
        }
    }
}

/// Runs `workload` on `mesh` once every peer sees all the others.
async fn measure(mesh: &mut LocalMesh, workload: Workload) -> Result<Value, BenchError> {
    let http = crate::client::http_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| BenchError::Run(e.to_string()))?;
    let urls: Vec<String> = mesh
        .peers
        .iter()
        .map(|p| format!("http://{}", p.api))
        .collect();
    wait_for_mesh(&http, &urls).await?;
    match workload {
        Workload::Latency { writes } => latency(&http, &urls, writes).await,
        Workload::Throughput {
            clients, writes, ..
        } => throughput(&http, &urls, clients, writes).await,
        Workload::Footprint { backends, members } => {
            footprint(mesh, &http, backends, members).await
        }
        Workload::MemberLatency { iterations } => {
            member_latency(&http, &urls, &frontend_hosts(mesh)?, iterations).await
        }
        Workload::MemberChurn {
            changes, members, ..
        } => member_churn(&http, &urls, &frontend_hosts(mesh)?, changes, members).await,
        Workload::HaproxyRestart { kills } => {
            haproxy_restart(&http, &urls, &frontend_hosts(mesh)?, kills).await
        }
        Workload::Heartbeats {
            instances,
            interval,
            ttl,
            seconds,
        } => {
            let load = HeartbeatLoad {
                instances,
                interval: Duration::from_secs(u64::from(interval.max(1))),
                ttl,
            };
            heartbeats(mesh, &http, &urls, load, seconds).await
        }
        Workload::Flood {
            seconds,
            clients,
            keys,
        } => {
            let pids = (0..urls.len()).map(|i| mesh.pid(i)).collect();
            let load = FloodLoad {
                window: Duration::from_secs(u64::from(seconds)),
                clients,
                keys,
            };
            flood(&http, &urls, pids, load).await
        }
        Workload::Sync { backends, members } => sync(mesh, &http, backends, members).await,
        Workload::SlowClients { partial, streams } => {
            let load = slow_clients::SlowClientsLoad { partial, streams };
            slow_clients::slow_clients(mesh.peers[0].api, load).await
        }
    }
}

/// Kills the peer's HAProxy master `kills` times; each sample is from the
/// kill until a request through HAProxy is answered by the member again.
async fn haproxy_restart(
    http: &reqwest::Client,
    urls: &[String],
    hosts: &[IpAddr],
    kills: u32,
) -> Result<Value, BenchError> {
    let server = EchoServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), "member")
        .await
        .map_err(|e| BenchError::Run(e.to_string()))?;
    let frontends = serve_bench_backend(http, urls, hosts, &[]).await?;
    put(http, &member_url(&urls[0], server.addr()), &json!({})).await?;
    let serving = |answer: &Answer| answer.status == 200 && answer.body == "member";
    on_every_frontend(&frontends, WAIT_LIMIT, serving).await?;
    let mut back = Vec::new();
    for _ in 0..kills {
        // Each kill hits an HAProxy that ran long enough to be "stable":
        // a crash loop backs off on purpose, and is not what this measures.
        tokio::time::sleep(STABLE_AFTER + Duration::from_millis(200)).await;
        applied_everything(http, &urls[0]).await?;
        let status = &haproxy_statuses(http, urls).await?[0];
        let pid = status["pid"]
            .as_i64()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| BenchError::Run(format!("no HAProxy pid in {status}")))?;
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)
            .map_err(|e| BenchError::Run(format!("SIGKILL to HAProxy: {e}")))?;
        let killed = Instant::now();
        // Back: a new master runs (the killed one's workers may answer for
        // a moment after it died), and a request through it is answered.
        loop {
            let status = &haproxy_statuses(http, urls).await?[0];
            if status["running"] == true
                && status["pid"].as_i64() != Some(i64::from(pid.as_raw_nonzero().get()))
            {
                break;
            }
            if killed.elapsed() > WAIT_LIMIT {
                return Err(BenchError::Run(format!("HAProxy not restarted: {status}")));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        let served = on_every_frontend(&frontends, WAIT_LIMIT, serving).await?;
        back.push(served.saturating_duration_since(killed));
    }
    let status = &haproxy_statuses(http, urls).await?[0];
    Ok(json!({
        "benchmark": "haproxy-restart",
        "kills": kills,
        "serving_again_ms": percentiles(&mut back),
        "restarts": status["restarts"],
    }))
}

/// The peers' bind hosts (the `member-*` benchmarks give every peer one).
fn frontend_hosts(mesh: &LocalMesh) -> Result<Vec<IpAddr>, BenchError> {
    mesh.peers
        .iter()
        .map(|peer| {
            peer.bind_host
                .ok_or_else(|| BenchError::Run(format!("{} has no bind host", peer.name)))
        })
        .collect()
}

async fn member_latency(
    http: &reqwest::Client,
    urls: &[String],
    hosts: &[IpAddr],
    iterations: u32,
) -> Result<Value, BenchError> {
    let frontends = serve_bench_backend(http, urls, hosts, &[]).await?;
    let before = haproxy_statuses(http, urls).await?;
    let mut visible = Vec::new();
    let mut gone = Vec::new();
    let mut acks = Vec::new();
    for i in 0..iterations {
        let name = format!("member-{i}");
        let server = EchoServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &name)
            .await
            .map_err(|e| BenchError::Run(e.to_string()))?;
        let member = member_url(&urls[0], server.addr());
        let sent = Instant::now();
        put(http, &member, &json!({"weight": 1, "state": "ready"})).await?;
        let t0 = Instant::now();
        acks.push(t0 - sent);
        let seen = on_every_frontend(&frontends, MEMBER_DEADLINE, move |answer| {
            answer.status == 200 && answer.body == name
        })
        .await?;
        visible.push(seen.saturating_duration_since(t0));
        delete(http, &member).await?;
        let t1 = Instant::now();
        let unserved =
            on_every_frontend(&frontends, WAIT_LIMIT, |answer| answer.status == 503).await?;
        gone.push(unserved.saturating_duration_since(t1));
    }
    let after = haproxy_statuses(http, urls).await?;
    Ok(json!({
        "benchmark": "member-latency",
        "peers": urls.len(),
        "iterations": iterations,
        "member_serving_everywhere_ms": percentiles(&mut visible),
        "member_gone_everywhere_ms": percentiles(&mut gone),
        "write_ack_ms": percentiles(&mut acks),
        "haproxy": status_deltas(&before, &after),
    }))
}

async fn member_churn(
    http: &reqwest::Client,
    urls: &[String],
    hosts: &[IpAddr],
    changes: u32,
    initial: u32,
) -> Result<Value, BenchError> {
    // The members listen nowhere: their health checks fail, which changes
    // their health (not the configuration), as with real servers going down.
    let mut members: Vec<ChurnMember> = (0..initial)
        .map(|i| ChurnMember::new(churn_port(i)))
        .collect();
    let listed: Vec<Value> = members
        .iter()
        .map(|m| json!({"host": "127.0.0.1", "port": m.port}))
        .collect();
    serve_bench_backend(http, urls, hosts, &listed).await?;
    let before = haproxy_statuses(http, urls).await?;
    let mut added = initial;
    let mut acks = Vec::new();
    let started = Instant::now();
    let started_ms = wall_clock_ms();
    for i in 0..changes {
        let (method, url, body) = churn_step(&urls[0], &mut members, &mut added, i)?;
        let sent = Instant::now();
        send_json(http, method.clone(), &url, &body)
            .await
            .map_err(|e| BenchError::Run(format!("{method} {e}")))?;
        acks.push(sent.elapsed());
    }
    let acknowledged = started.elapsed();
    for (url, before) in urls.iter().zip(&before) {
        let target = counter(before, "runtimeChanges") + u64::from(changes);
        runtime_changes_settled(http, url, target).await?;
        applied_everything(http, url).await?;
    }
    let after = haproxy_statuses(http, urls).await?;
    // When the last change was applied, by the driver's own wall clock
    // (polling would add its interval, and the wait for a count that stands
    // still its whole duration).
    let applied = after
        .iter()
        .map(|status| counter(status, "appliedAtMs"))
        .max()
        .map_or(Duration::ZERO, |at| {
            Duration::from_millis(at.saturating_sub(started_ms))
        });
    Ok(json!({
        "benchmark": "member-churn",
        "peers": urls.len(),
        "changes": changes,
        "members_at_start": initial,
        "members_at_end": members.len(),
        "servers_at_end": after.iter().map(|s| s["servers"].clone()).collect::<Vec<_>>(),
        "acknowledged_seconds": acknowledged.as_secs_f64(),
        "applied_seconds": applied.as_secs_f64(),
        "changes_per_second": f64::from(changes) / applied.as_secs_f64(),
        "write_ack_ms": percentiles(&mut acks),
        "expected_runtime_changes": changes,
        "haproxy": status_deltas(&before, &after),
    }))
}

/// A member of `member-churn`'s backend, as the benchmark last set it.
struct ChurnMember {
    port: u16,
    weight: u32,
    drain: bool,
}

impl ChurnMember {
    fn new(port: u16) -> ChurnMember {
        ChurnMember {
            port,
            weight: 1,
            drain: false,
        }
    }

    fn body(&self) -> Value {
        json!({"weight": self.weight, "state": if self.drain { "drain" } else { "ready" }})
    }
}

/// The `added`-th member's port (`--changes` is bounded so that it fits).
fn churn_port(added: u32) -> u16 {
    u16::try_from(u32::from(CHURN_FIRST_PORT) + added).unwrap_or(u16::MAX)
}

/// Change `i` of `member-churn`, applied to `members`: in turn add a member,
/// drain a ready one, re-weight a ready one, delete one, set a drained one
/// ready. Each changes exactly one server of the rendered configuration
/// (a drained member is never re-weighted: its weight in the file stays 0),
/// so the driver should count one runtime change per step; a step with no
/// member to act on adds one instead.
fn churn_step(
    base: &str,
    members: &mut Vec<ChurnMember>,
    added: &mut u32,
    i: u32,
) -> Result<(reqwest::Method, String, Value), BenchError> {
    let len = members.len();
    let start = i as usize % len.max(1);
    // The first member from `start` on (wrapping) that `pick` accepts.
    let find = |members: &[ChurnMember], pick: &dyn Fn(&ChurnMember) -> bool| {
        (0..members.len())
            .map(|k| (start + k) % members.len())
            .find(|&k| pick(&members[k]))
    };
    let url = |m: &ChurnMember| member_url(base, SocketAddr::from(([127, 0, 0, 1], m.port)));
    let target = match i % 5 {
        1 => find(members, &|m| !m.drain).map(|k| (k, Churn::Drain)),
        2 => find(members, &|m| !m.drain).map(|k| (k, Churn::Reweight)),
        3 if len > 1 => Some((start, Churn::Delete)),
        4 => find(members, &|m| m.drain).map(|k| (k, Churn::Ready)),
        _ => None,
    };
    let Some((k, change)) = target else {
        let member = ChurnMember::new(churn_port(*added));
        *added += 1;
        let step = (reqwest::Method::PUT, url(&member), member.body());
        members.push(member);
        return Ok(step);
    };
    let member = &mut members[k];
    match change {
        Churn::Drain => member.drain = true,
        Churn::Ready => member.drain = false,
        Churn::Reweight => member.weight = member.weight % 100 + 1,
        Churn::Delete => {
            let member = members.remove(k);
            return Ok((reqwest::Method::DELETE, url(&member), Value::Null));
        }
    }
    Ok((reqwest::Method::PUT, url(member), member.body()))
}

/// What a `member-churn` step does to an existing member.
enum Churn {
    Drain,
    Ready,
    Reweight,
    Delete,
}

/// Creates the benchmark's static backend with `members` and a frontend on
/// `*:PORT` (a port free on the first bind host) in front of it, and waits
/// until every peer's HAProxy answers 503 there (no server available: the
/// benchmarks' members start unreachable or absent). Returns each peer's
/// frontend address.
async fn serve_bench_backend(
    http: &reqwest::Client,
    urls: &[String],
    hosts: &[IpAddr],
    members: &[Value],
) -> Result<Vec<SocketAddr>, BenchError> {
    for (url, status) in urls.iter().zip(haproxy_statuses(http, urls).await?) {
        if status["managed"] != true {
            return Err(BenchError::Run(format!(
                "{url} drives no HAProxy (install it, or give --haproxy PATH)"
            )));
        }
    }
    let port = std::net::TcpListener::bind((hosts[0], 0))
        .and_then(|listener| listener.local_addr())
        .map_err(|e| BenchError::Run(format!("no free port on {}: {e}", hosts[0])))?
        .port();
    put(
        http,
        &format!("{}/backends/{BENCH_KEY}", urls[0]),
        &json!({"type": "static", "members": members}),
    )
    .await?;
    put(
        http,
        &format!("{}/frontends/{BENCH_KEY}", urls[0]),
        &json!({"bind": format!("*:{port}"), "backend": BENCH_KEY}),
    )
    .await?;
    let frontends: Vec<SocketAddr> = hosts.iter().map(|&h| SocketAddr::new(h, port)).collect();
    on_every_frontend(&frontends, WAIT_LIMIT, |answer| answer.status == 503).await?;
    for url in urls {
        applied_everything(http, url).await?;
    }
    Ok(frontends)
}

/// Waits until `url`'s HAProxy runs what the peer last rendered: a new
/// worker answers before the driver has confirmed its reload, and a reload
/// counted after the "before" reading would look like one the measured
/// changes caused.
async fn applied_everything(http: &reqwest::Client, url: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let config = format!("{url}/haproxy/config");
        let rendered =
            crate::client::exchange(http, reqwest::Method::GET, &config, None, None).await;
        let hash = match rendered {
            Ok(response) => response
                .text()
                .await
                .ok()
                .map(|text| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))),
            Err(_) => None,
        };
        let status = haproxy_statuses(http, &[url.to_owned()]).await?;
        if hash.is_some() && status[0]["appliedHash"].as_str() == hash.as_deref() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Run(format!(
                "{url}: HAProxy never ran the rendered configuration"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn member_url(base: &str, member: SocketAddr) -> String {
    format!(
        "{base}/backends/{BENCH_KEY}/members/{}/{}",
        member.ip(),
        member.port()
    )
}

/// Probes every frontend concurrently (a new connection per request,
/// [`PROBE_INTERVAL`] apart) until an answer satisfies `done` on each;
/// returns when the last one did.
async fn on_every_frontend(
    frontends: &[SocketAddr],
    limit: Duration,
    done: impl Fn(&Answer) -> bool + Clone + Send + 'static,
) -> Result<Instant, BenchError> {
    let probes: Vec<_> = frontends
        .iter()
        .map(|&addr| {
            let done = done.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + limit;
                loop {
                    let answer = echo::get(addr, "/", "aqueduct", limit).await;
                    if answer.as_ref().is_ok_and(&done) {
                        return Ok(Instant::now());
                    }
                    if Instant::now() > deadline {
                        return Err(BenchError::Run(format!(
                            "{addr}: no expected answer within {limit:?} (last: {answer:?})"
                        )));
                    }
                    tokio::time::sleep(PROBE_INTERVAL).await;
                }
            })
        })
        .collect();
    let mut last = Instant::now();
    for probe in probes {
        let at = probe.await.map_err(|e| BenchError::Run(e.to_string()))??;
        last = last.max(at);
    }
    Ok(last)
}

/// Every peer's `/haproxy/status`.
async fn haproxy_statuses(
    http: &reqwest::Client,
    urls: &[String],
) -> Result<Vec<Value>, BenchError> {
    let mut statuses = Vec::new();
    for url in urls {
        statuses.push(get_json(http, &format!("{url}/haproxy/status")).await?);
    }
    Ok(statuses)
}

fn counter(status: &Value, field: &str) -> u64 {
    status[field].as_u64().unwrap_or(0)
}

/// Per peer: reloads and runtime changes before and after the measured
/// part, and the failure counters after it.
fn status_deltas(before: &[Value], after: &[Value]) -> Value {
    let peers: Vec<Value> = before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            json!({
                "reloads_before": counter(b, "reloads"),
                "reloads_after": counter(a, "reloads"),
                "runtime_changes_before": counter(b, "runtimeChanges"),
                "runtime_changes_after": counter(a, "runtimeChanges"),
                "runtime_failures": counter(a, "runtimeFailures"),
                "reload_failures": counter(a, "reloadFailures"),
                "restarts": counter(a, "restarts"),
                "last_error": a["lastError"].clone(),
            })
        })
        .collect();
    let reloads_unchanged = before
        .iter()
        .zip(after)
        .all(|(b, a)| counter(b, "reloads") == counter(a, "reloads"));
    json!({ "reloads_unchanged": reloads_unchanged, "peers": peers })
}

/// Polls `url`'s runtime-change count until it reaches `target`, or stood
/// still for [`SETTLED_AFTER`].
async fn runtime_changes_settled(
    http: &reqwest::Client,
    url: &str,
    target: u64,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut last = (u64::MAX, Instant::now());
    loop {
        let status = haproxy_statuses(http, &[url.to_owned()]).await?;
        let now = counter(&status[0], "runtimeChanges");
        if now != last.0 {
            last = (now, Instant::now());
        }
        if now >= target || last.1.elapsed() >= SETTLED_AFTER {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Run(format!(
                "{url}: runtime changes never settled"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn latency(
    http: &reqwest::Client,
    urls: &[String],
    writes: u32,
) -> Result<Value, BenchError> {
    let mut lags = Vec::new();
    let mut acks = Vec::new();
    for i in 0..writes {
        let path = format!("/backends/lag-{i}");
        let sent = Instant::now();
        put(http, &format!("{}{path}", urls[0]), &static_backend(1)).await?;
        let acknowledged = Instant::now();
        let (second, third) = tokio::join!(
            readable(http, format!("{}{path}", urls[1])),
            readable(http, format!("{}{path}", urls[2])),
        );
        let seen = second?.max(third?);
        acks.push(acknowledged - sent);
        lags.push(seen.saturating_duration_since(acknowledged));
    }
    Ok(json!({
        "benchmark": "latency",
        "peers": 3,
        "writes": writes,
        "replication_lag_ms": percentiles(&mut lags),
        "write_ack_ms": percentiles(&mut acks),
    }))
}

async fn throughput(
    http: &reqwest::Client,
    urls: &[String],
    clients: u32,
    writes: u32,
) -> Result<Value, BenchError> {
    let (elapsed, mut acks) = write_concurrently(http, &urls[0], clients, writes, |i| {
        (format!("/backends/tp-{i}"), static_backend(1))
    })
    .await?;
    Ok(json!({
        "benchmark": "throughput",
        "peers": urls.len(),
        "clients": clients,
        "writes": writes,
        "seconds": elapsed.as_secs_f64(),
        "writes_per_second": f64::from(writes) / elapsed.as_secs_f64(),
        "write_ack_ms": percentiles(&mut acks),
    }))
}

async fn footprint(
    mesh: &mut LocalMesh,
    http: &reqwest::Client,
    backends: u32,
    members: u32,
) -> Result<Value, BenchError> {
    let url = format!("http://{}", mesh.peers[0].api);
    // Idle: let start-up allocations settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = rss_mib(mesh.pid(0))?;
    let load_time = load_static_backends(http, &url, 32, backends, members).await?;
    let loaded_rss = rss_mib(mesh.pid(0))?;
    let restart_to_serving = restart_to_serving(mesh, http, backends).await?;
    let restarted_rss = rss_mib(mesh.pid(0))?;
    Ok(json!({
        "benchmark": "footprint",
        "backends": backends,
        "members_per_backend": members,
        "idle_rss_mib": idle_rss,
        "load_seconds": load_time.as_secs_f64(),
        "loaded_rss_mib": loaded_rss,
        "restart_to_serving_seconds": restart_to_serving.as_secs_f64(),
        "restarted_rss_mib": restarted_rss,
    }))
}

/// Writes `backends` static backends of `members` members each to `url`
/// from `clients` concurrent clients (backend `i`'s members on host
/// 10.x.y.z for `i`, ports from 8000); how long it took.
async fn load_static_backends(
    http: &reqwest::Client,
    url: &str,
    clients: u32,
    backends: u32,
    members: u32,
) -> Result<Duration, BenchError> {
    let (load_time, _) = write_concurrently(http, url, clients, backends, move |i| {
        let members: Vec<Value> = (0..members)
            .map(|m| json!({"host": format!("10.{}.{}.{}", i / 65_536 % 256, i / 256 % 256, i % 256), "port": 8000 + m}))
            .collect();
        (
            format!("/backends/big-{i:06}"),
            json!({"type": "static", "members": members}),
        )
    })
    .await?;
    Ok(load_time)
}

/// Restarts peer 1 and times it from the new process's start until the
/// last of `backends` written by [`load_static_backends`] is readable.
async fn restart_to_serving(
    mesh: &mut LocalMesh,
    http: &reqwest::Client,
    backends: u32,
) -> Result<Duration, BenchError> {
    let to_listening = mesh.restart(0).await?;
    let restarted = Instant::now();
    let url = format!("http://{}", mesh.peers[0].api);
    let last = format!("{url}/backends/big-{:06}", backends.saturating_sub(1));
    let serving = readable(http, last).await?;
    Ok(to_listening + serving.saturating_duration_since(restarted))
}

/// How long the `sync` benchmark waits for the new peer to catch up.
const SYNC_LIMIT: Duration = Duration::from_secs(1800);

async fn sync(
    mesh: &mut LocalMesh,
    http: &reqwest::Client,
    backends: u32,
    members: u32,
) -> Result<Value, BenchError> {
    mesh.stop_peer(1).await;
    let source = format!("http://{}", mesh.peers[0].api);
    // Few clients: each body holds thousands of members.
    let load_time = load_static_backends(http, &source, 8, backends, members).await?;
    // The source renders what was written (a configuration of a million
    // servers takes seconds): measured only once it is done.
    quiet(mesh.pid(0)).await?;
    let loaded = get_json(http, &format!("{source}/mesh")).await?;
    let document_bytes = loaded["documentBytes"].as_u64().unwrap_or(0);
    let source_rss = rss_mib(mesh.pid(0))?;
    let sent_before = gossip_sent(http, std::slice::from_ref(&source)).await?;

    let data = mesh.peers[1].data_dir();
    let _ = std::fs::remove_dir_all(&data);
    let started = Instant::now();
    mesh.restart(1).await?;
    let target = format!("http://{}", mesh.peers[1].api);
    let pids = [mesh.pid(0), mesh.pid(1)];
    let mut peak = [source_rss, 0.0f64];
    let digest = loaded["digest"].clone();
    loop {
        for (i, pid) in pids.iter().enumerate() {
            peak[i] = peak[i].max(rss_mib(*pid)?);
        }
        let mesh = get_json(http, &format!("{target}/mesh")).await?;
        if mesh["digest"] == digest {
            break;
        }
        if started.elapsed() > SYNC_LIMIT {
            return Err(BenchError::Run(format!(
                "the new peer holds {} of {document_bytes} bytes after {SYNC_LIMIT:?}",
                mesh["documentBytes"]
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let to_synced = started.elapsed();
    let sent_after = gossip_sent(http, std::slice::from_ref(&source)).await?;
    let synced_rss = [rss_mib(pids[0])?, rss_mib(pids[1])?];

    let restart_to_serving = restart_to_serving(mesh, http, backends).await?;
    Ok(json!({
        "benchmark": "sync",
        "backends": backends,
        "members": u64::from(backends) * u64::from(members),
        "document_bytes": document_bytes,
        "load_seconds": load_time.as_secs_f64(),
        "seconds_to_synced": to_synced.as_secs_f64(),
        "mib_per_second": document_bytes as f64 / (1 << 20) as f64 / to_synced.as_secs_f64(),
        "source_rss_mib": {"loaded": source_rss, "peak": peak[0], "after": synced_rss[0]},
        "new_peer_rss_mib": {"peak": peak[1], "after": synced_rss[1]},
        "source_sent": {"messages": sent_after.0 - sent_before.0, "bytes": sent_after.1 - sent_before.1},
        "restart_to_serving_seconds": restart_to_serving.as_secs_f64(),
        "restarted_rss_mib": rss_mib(mesh.pid(0))?,
    }))
}

/// Waits until process `pid` uses less than a tenth of a core over half a
/// second.
async fn quiet(pid: Option<u32>) -> Result<(), BenchError> {
    const SPAN: Duration = Duration::from_millis(500);
    let deadline = Instant::now() + SYNC_LIMIT;
    let mut before = cpu_seconds(pid)?;
    loop {
        tokio::time::sleep(SPAN).await;
        let now = cpu_seconds(pid)?;
        if now - before < SPAN.as_secs_f64() / 10.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Run("the peer never went quiet".into()));
        }
        before = now;
    }
}

/// CPU time process `pid` used so far (user and system), in seconds.
fn cpu_seconds(pid: Option<u32>) -> Result<f64, BenchError> {
    let (pid, stat) = proc_file(pid, "stat")?;
    // The fields after the command name (which may hold spaces), from the
    // third: utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / CLOCK_TICKS_PER_SECOND),
        _ => Err(BenchError::Run(format!("no CPU times for {pid}"))),
    }
}

/// `/proc`'s clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// `writes` writes from `clients` concurrent clients: the elapsed time and
/// each write's time to acknowledgement.
async fn write_concurrently(
    http: &reqwest::Client,
    base: &str,
    clients: u32,
    writes: u32,
    request: impl Fn(u32) -> (String, Value) + Send + Sync + 'static,
) -> Result<(Duration, Vec<Duration>), BenchError> {
    let next = Arc::new(AtomicU64::new(0));
    let request = Arc::new(request);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, next, request, base) =
            (http.clone(), next.clone(), request.clone(), base.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Ok(i) = u32::try_from(i) else { break };
                if i >= writes {
                    break;
                }
                let (path, body) = request(i);
                let sent = Instant::now();
                put(&http, &format!("{base}{path}"), &body).await?;
                acks.push(sent.elapsed());
            }
            Ok::<_, BenchError>(acks)
        }));
    }
    let mut acks = Vec::new();
    for task in tasks {
        let done = task.await.map_err(|e| BenchError::Run(e.to_string()))??;
        acks.extend(done);
    }
    Ok((started.elapsed(), acks))
}

fn static_backend(port: u32) -> Value {
    json!({"type": "static", "members": [{"host": "127.0.0.1", "port": 8000 + port}]})
}

async fn put(http: &reqwest::Client, url: &str, body: &Value) -> Result<(), BenchError> {
    send_json(http, reqwest::Method::PUT, url, body)
        .await
        .map_err(|e| BenchError::Run(format!("PUT {e}")))
}

async fn delete(http: &reqwest::Client, url: &str) -> Result<(), BenchError> {
    send_json(http, reqwest::Method::DELETE, url, &Value::Null)
        .await
        .map_err(|e| BenchError::Run(format!("DELETE {e}")))
}

/// Polls `url` until it answers 200; returns when it first did.
async fn readable(http: &reqwest::Client, url: String) -> Result<Instant, BenchError> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        if http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Run(format!("{url} never became readable")));
        }
    }
}

/// Waits until every peer lists all the others as alive.
async fn wait_for_mesh(http: &reqwest::Client, urls: &[String]) -> Result<(), BenchError> {
    let deadline = Instant::now() + WAIT_LIMIT;
    for url in urls {
        loop {
            let alive = match http.get(format!("{url}/mesh/peers")).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|peers| {
                        peers
                            .as_array()
                            .map(|l| l.iter().filter(|p| p["state"] == "alive").count())
                    })
                    .unwrap_or(0),
                Err(_) => 0,
            };
            if alive + 1 >= urls.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Run(format!("{url} never saw the whole mesh")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// p50, p90, p99 and max, in milliseconds.
fn percentiles(samples: &mut [Duration]) -> Value {
    samples.sort();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index].as_secs_f64() * 1000.0
    };
    json!({ "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0) })
}

/// `/proc/{pid}/{name}` of a running peer, with its pid.
fn proc_file(pid: Option<u32>, name: &str) -> Result<(u32, String), BenchError> {
    let pid = pid.ok_or_else(|| BenchError::Run("the peer is not running".into()))?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/{name}"))
        .map_err(|e| BenchError::Run(format!("/proc/{pid}/{name}: {e}")))?;
    Ok((pid, text))
}

/// Resident set size of process `pid`, in MiB (from /proc).
fn rss_mib(pid: Option<u32>) -> Result<f64, BenchError> {
    let (pid, status) = proc_file(pid, "status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| BenchError::Run(format!("no VmRSS for {pid}")))
}

/// The instances of the `heartbeats` benchmark, instance `i` on peer
/// `i % peers`.
#[derive(Clone, Copy)]
struct HeartbeatLoad {
    instances: u32,
    interval: Duration,
    ttl: u32,
}

impl HeartbeatLoad {
    fn url(&self, urls: &[String], i: u32) -> String {
        let peer = &urls[i as usize % urls.len()];
        let (host, port) = (i / 50_000, 10_000 + i % 50_000);
        format!(
            "{peer}/registrations/bench/1.0.0/10.9.{}.{}/{port}",
            host / 256,
            host % 256
        )
    }

    /// One heartbeat of every instance for which `keep` holds, spread over
    /// one interval (in 20 slices).
    async fn round(
        &self,
        http: &reqwest::Client,
        urls: &[String],
        keep: impl Fn(u32) -> bool,
    ) -> Result<u32, BenchError> {
        const SLICES: u32 = 20;
        let body = json!({"secondsToExpire": self.ttl});
        let mut sent = 0;
        for slice in 0..SLICES {
            let started = Instant::now();
            let targets: Vec<String> = (slice..self.instances)
                .step_by(SLICES as usize)
                .filter(|&i| keep(i))
                .map(|i| self.url(urls, i))
                .collect();
            let beats = targets
                .iter()
                .map(|url| send_json(http, reqwest::Method::POST, url, &body));
            for outcome in futures_util::future::join_all(beats).await {
                outcome.map_err(|e| BenchError::Run(format!("heartbeat: {e}")))?;
                sent += 1;
            }
            tokio::time::sleep((self.interval / SLICES).saturating_sub(started.elapsed())).await;
        }
        Ok(sent)
    }
}

/// Gossip messages and bytes every peer in `urls` has sent (from
/// `/metrics`).
async fn gossip_sent(http: &reqwest::Client, urls: &[String]) -> Result<(u64, u64), BenchError> {
    let mut totals = (0, 0);
    for url in urls {
        let metrics = format!("{url}/metrics");
        let text = crate::client::exchange(http, reqwest::Method::GET, &metrics, None, None)
            .await
            .map_err(|e| BenchError::Run(format!("{url}/metrics: {e}")))?
            .text()
            .await
            .map_err(|e| BenchError::Run(format!("{url}/metrics: {e}")))?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        totals.0 += value("aqueduct_gossip_messages_sent_total ");
        totals.1 += value("aqueduct_gossip_sent_bytes_total ");
    }
    Ok(totals)
}

/// Gossip (messages, bytes) per second over `during`.
async fn gossip_rate<T>(
    http: &reqwest::Client,
    urls: &[String],
    during: impl std::future::Future<Output = Result<T, BenchError>>,
) -> Result<(T, f64, f64, Duration), BenchError> {
    let before = gossip_sent(http, urls).await?;
    let started = Instant::now();
    let outcome = during.await?;
    let elapsed = started.elapsed();
    let after = gossip_sent(http, urls).await?;
    let seconds = elapsed.as_secs_f64();
    Ok((
        outcome,
        (after.0 - before.0) as f64 / seconds,
        (after.1 - before.1) as f64 / seconds,
        elapsed,
    ))
}

async fn heartbeats(
    mesh: &LocalMesh,
    http: &reqwest::Client,
    urls: &[String],
    load: HeartbeatLoad,
    seconds: u32,
) -> Result<Value, BenchError> {
    let window = Duration::from_secs(u64::from(seconds));
    // What the mesh costs with nothing to do.
    let (_, idle_msgs, idle_bytes, _) = gossip_rate(http, urls, async {
        tokio::time::sleep(window.min(Duration::from_secs(10))).await;
        Ok(())
    })
    .await?;
    // First heartbeats: every one is a write that travels, which is what
    // one message per heartbeat would cost each time.
    let (_, msgs, bytes, took) = gossip_rate(http, urls, load.round(http, urls, |_| true)).await?;
    let secs = took.as_secs_f64();
    let per_write = (
        ((msgs - idle_msgs) * secs).max(0.0) / f64::from(load.instances),
        ((bytes - idle_bytes) * secs).max(0.0) / f64::from(load.instances),
    );
    // Steady heartbeats.
    let rounds = (window.as_secs_f64() / load.interval.as_secs_f64()).ceil() as u32;
    let (sent, msgs, bytes, took) = gossip_rate(http, urls, async {
        let mut sent = 0;
        for _ in 0..rounds {
            sent += load.round(http, urls, |_| true).await?;
        }
        Ok(sent)
    })
    .await?;
    let beats_per_second = f64::from(sent) / took.as_secs_f64();
    let net = ((msgs - idle_msgs).max(0.0), (bytes - idle_bytes).max(0.0));
    let baseline = (
        beats_per_second * per_write.0,
        beats_per_second * per_write.1,
    );
    // Peer 1 dies; its instances' heartbeats stop with it (the others keep
    // theirs): how long until peers 2 and 3 drop them.
    let pid = mesh
        .pid(0)
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| BenchError::Run("peer 1 is not running".into()))?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        .map_err(|e| BenchError::Run(format!("SIGKILL to peer 1: {e}")))?;
    let killed = Instant::now();
    let survivors = &urls[1..];
    let owned_by_first = load.instances.div_ceil(3);
    // The other instances keep heartbeating meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let heartbeating = {
        let (http, urls, stop) = (http.clone(), urls.to_vec(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                load.round(&http, &urls, |i| i % 3 != 0).await?;
            }
            Ok::<_, BenchError>(())
        })
    };
    let gone = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut left = 0;
        for url in survivors {
            let list = get_json(http, &format!("{url}/registrations/bench/1.0.0")).await?;
            left += list.as_array().map_or(0, Vec::len);
        }
        let expected = 2 * (load.instances - owned_by_first) as usize;
        if left == expected {
            break killed.elapsed();
        }
        if killed.elapsed() > WAIT_LIMIT {
            return Err(BenchError::Run(format!(
                "peer 1's instances still listed after {WAIT_LIMIT:?} ({left} of {expected})"
            )));
        }
    };
    stop.store(true, Ordering::Relaxed);
    heartbeating
        .await
        .map_err(|e| BenchError::Run(e.to_string()))??;
    Ok(json!({
        "benchmark": "heartbeats",
        "peers": urls.len(),
        "instances": load.instances,
        "interval_s": load.interval.as_secs(),
        "ttl_s": load.ttl,
        "heartbeats_per_second": beats_per_second,
        "idle_gossip": {"messages_per_second": idle_msgs, "bytes_per_second": idle_bytes},
        "one_write_per_heartbeat": {
            "messages_per_write": per_write.0,
            "bytes_per_write": per_write.1,
            "messages_per_second": baseline.0,
            "bytes_per_second": baseline.1,
        },
        "measured_net_of_idle": {"messages_per_second": net.0, "bytes_per_second": net.1},
        "fraction_of_one_write_per_heartbeat": {
            "messages": net.0 / baseline.0,
            "bytes": net.1 / baseline.1,
        },
        "owner_killed_instances_gone_after_ms": gone.as_secs_f64() * 1000.0,
    }))
}

/// The `flood` benchmark's load.
#[derive(Clone, Copy)]
struct FloodLoad {
    window: Duration,
    clients: u32,
    keys: u32,
}

/// Writes answered during a flood, by outcome.
#[derive(Default)]
struct FloodCounts {
    /// 200.
    accepted: AtomicU64,
    /// 429 or 503: the peer said it is busy.
    refused: AtomicU64,
    /// Any other answer, or none.
    failed: AtomicU64,
}

async fn flood(
    http: &reqwest::Client,
    urls: &[String],
    pids: Vec<Option<u32>>,
    load: FloodLoad,
) -> Result<Value, BenchError> {
    let rss_all = |pids: &[Option<u32>]| -> Result<Vec<f64>, BenchError> {
        pids.iter().map(|pid| rss_mib(*pid)).collect()
    };
    let rss_start = rss_all(&pids)?;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(FloodCounts::default());
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..load.clients {
        let (http, url, stop, counts, next) = (
            http.clone(),
            urls[0].clone(),
            stop.clone(),
            counts.clone(),
            next.clone(),
        );
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let keys = u64::from(load.keys);
                // Each round over the keys writes other ports: every write
                // is a change (one that changes nothing is not replicated).
                let (key, round) = (i % keys, i / keys);
                let body = json!({"type": "static", "members": [{"host": "127.0.0.1", "port": 8000 + round % 1000}]});
                let answer = http
                    .put(format!("{url}/backends/flood-{key}"))
                    .json(&body)
                    .send()
                    .await;
                let counter = match answer.map(|r| r.status().as_u16()) {
                    Ok(200) => &counts.accepted,
                    Ok(429 | 503) => &counts.refused,
                    _ => &counts.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A separate client (its own connections) probing peer 1's API.
    let prober = {
        let probe = crate::client::http_builder()
            .timeout(WAIT_LIMIT)
            .build()
            .map_err(|e| BenchError::Run(e.to_string()))?;
        let (url, stop) = (urls[0].clone(), stop.clone());
        tokio::spawn(async move {
            let (mut health, mut frontends, mut failures) = (Vec::new(), Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                for (path, samples) in [("/health", &mut health), ("/frontends", &mut frontends)] {
                    let asked = Instant::now();
                    match probe.get(format!("{url}{path}")).send().await {
                        Ok(r) if r.status().is_success() => samples.push(asked.elapsed()),
                        _ => failures += 1,
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (health, frontends, failures)
        })
    };
    // Every second: memory, accepted writes, replication lag of one write.
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut lags = Vec::new();
    let mut accepted_before = 0;
    let mut second = 0u64;
    while started.elapsed() < load.window {
        second += 1;
        let path = format!("/backends/flood-probe-{second}");
        put(http, &format!("{}{path}", urls[0]), &static_backend(1)).await?;
        let written = Instant::now();
        let mut seen = written;
        for url in &urls[1..] {
            seen = seen.max(readable(http, format!("{url}{path}")).await?);
        }
        lags.push(seen - written);
        let wait = Duration::from_secs(second).saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
        let accepted = counts.accepted.load(Ordering::Relaxed);
        samples.push(json!({
            "second": second,
            "rss_mib": rss_all(&pids)?,
            "writes_accepted": accepted - accepted_before,
            "replication_lag_ms": (seen - written).as_secs_f64() * 1000.0,
        }));
        accepted_before = accepted;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for writer in writers {
        writer.await.map_err(|e| BenchError::Run(e.to_string()))?;
    }
    let stopped = Instant::now();
    let rss_end = rss_all(&pids)?;
    let converged = converged(http, urls)
        .await?
        .saturating_duration_since(stopped);
    let (mut health, mut frontends, probe_failures) =
        prober.await.map_err(|e| BenchError::Run(e.to_string()))?;
    let rss_max: Vec<f64> = (0..pids.len())
        .map(|i| {
            samples
                .iter()
                .filter_map(|s| s["rss_mib"][i].as_f64())
                .chain([rss_end[i]])
                .fold(rss_start[i], f64::max)
        })
        .collect();
    let accepted = counts.accepted.load(Ordering::Relaxed);
    Ok(json!({
        "benchmark": "flood",
        "peers": urls.len(),
        "clients": load.clients,
        "keys": load.keys,
        "seconds": elapsed.as_secs_f64(),
        "writes_accepted": accepted,
        "writes_refused": counts.refused.load(Ordering::Relaxed),
        "writes_failed": counts.failed.load(Ordering::Relaxed),
        "writes_per_second": accepted as f64 / elapsed.as_secs_f64(),
        "rss_mib": {"start": rss_start, "max": rss_max, "end": rss_end},
        "health_ms": percentiles(&mut health),
        "frontends_ms": percentiles(&mut frontends),
        "probe_failures": probe_failures,
        "replication_lag_ms": percentiles(&mut lags),
        "converged_after_flood_ms": converged.as_secs_f64() * 1000.0,
        "samples": samples,
    }))
}

/// `GET url` as JSON; any failure is a run error naming the URL.
async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, BenchError> {
    let fail = |e: String| BenchError::Run(format!("{url}: {e}"));
    crate::client::exchange(http, reqwest::Method::GET, url, None, None)
        .await
        .map_err(|e| fail(e.to_string()))?
        .json()
        .await
        .map_err(|e| fail(e.to_string()))
}

/// Polls until every peer in `urls` reports the same digest; returns when
/// they first did.
async fn converged(http: &reqwest::Client, urls: &[String]) -> Result<Instant, BenchError> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let mut digests = Vec::new();
        for url in urls {
            let mesh = get_json(http, &format!("{url}/mesh")).await?;
            digests.push(mesh["digest"].clone());
        }
        if digests.windows(2).all(|w| w[0] == w[1]) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Run(format!(
                "the peers did not converge after the flood: {digests:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
