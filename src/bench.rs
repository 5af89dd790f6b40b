//! `aqueduct bench`: measures real peers (child processes on loopback,
//! through their REST APIs) for BENCHMARKS.md: replication lag across a
//! three-peer mesh, durable write throughput, and memory and restart time
//! with a large configuration.
//!
//! Owns the workloads and the statistics. Must not be used as a test:
//! timings vary with the machine; `scripts/bench-daemon.sh` runs it several
//! times and reports medians.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::local_mesh::{LocalMesh, LocalMeshError, Ports, send_json};

/// How long any single wait of a benchmark may take before it fails.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

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
    let result = match LocalMesh::start(&dir, args.workload.peers(), Ports::Ephemeral).await {
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
        }
    }
}

/// Runs `workload` on `mesh` once every peer sees all the others.
async fn measure(mesh: &mut LocalMesh, workload: Workload) -> Result<Value, BenchError> {
    let http = reqwest::Client::builder()
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
    let (load_time, _) = write_concurrently(http, &url, 32, backends, move |i| {
        let members: Vec<Value> = (0..members)
            .map(|m| json!({"host": format!("10.{}.{}.{}", i / 65_536 % 256, i / 256 % 256, i % 256), "port": 8000 + m}))
            .collect();
        (
            format!("/backends/big-{i:06}"),
            json!({"type": "static", "members": members}),
        )
    })
    .await?;
    let loaded_rss = rss_mib(mesh.pid(0))?;
    let to_listening = mesh.restart(0).await?;
    let restarted = Instant::now();
    let url = format!("http://{}", mesh.peers[0].api);
    let last = format!("{url}/backends/big-{:06}", backends.saturating_sub(1));
    let serving = readable(http, last).await?;
    let restart_to_serving = to_listening + serving.saturating_duration_since(restarted);
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

/// Resident set size of process `pid`, in MiB (from /proc).
fn rss_mib(pid: Option<u32>) -> Result<f64, BenchError> {
    let pid = pid.ok_or_else(|| BenchError::Run("the peer is not running".into()))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| BenchError::Run(format!("/proc/{pid}/status: {e}")))?;
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
