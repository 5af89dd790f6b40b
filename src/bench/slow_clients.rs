//! `aqueduct bench slow-clients`: one peer's API under slow and greedy
//! clients. Many connections that never finish their request head come
//! from one address (127.0.0.2) while another (127.0.0.3) asks
//! `GET /health` over and over: its latency while they are open, and how
//! long each of them stays open. Then many idle event streams from one
//! address (127.0.0.4), and a dashboard's stream from another (127.0.0.5).
//!
//! Owns this workload only: raw TCP from chosen source addresses (the HTTP
//! client cannot pick one), so every connection is as slow or as idle as
//! the workload says.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{BenchError, WAIT_LIMIT, percentiles};

/// Where the unfinished heads come from.
const PARTIAL_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The client probing `/health` meanwhile.
const PROBE_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Where the idle event streams come from.
const STREAMS_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
/// The dashboard that must still get its stream.
const DASHBOARD_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// Where the benchmark scrapes `/metrics` from.
const METRICS_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// Pause between two `/health` probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Dashboard streams opened (one at a time) while the idle ones are held.
const DASHBOARD_SAMPLES: usize = 20;

/// What one run does.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlowClientsLoad {
    /// Connections with an unfinished head, all from one address.
    pub(super) partial: u32,
    /// Idle event streams asked for from one address.
    pub(super) streams: u32,
}

/// Runs the workload against the API at `api`.
pub(super) async fn slow_clients(
    api: SocketAddr,
    load: SlowClientsLoad,
) -> Result<Value, BenchError> {
    // The benchmark holds a descriptor per connection too.
    crate::api::server::raise_open_files_limit();
    let before = connection_counters(api).await?;
    let mut partial = partial_heads(api, load.partial).await?;
    let after = connection_counters(api).await?;
    let streams = idle_streams(api, load.streams).await?;
    Ok(json!({
        "partial": {
            "connections": load.partial,
            "refusedPerIp": after.refused_per_ip - before.refused_per_ip,
            "refusedGlobal": after.refused_global - before.refused_global,
            "timedOutHeader": after.timed_out_header - before.timed_out_header,
            "notConnected": partial.not_connected,
            "closedAfterMs": percentiles(&mut partial.closed_after),
        },
        "health": {
            "samples": partial.probes.len() + partial.probes_failed,
            "failed": partial.probes_failed,
            "latencyMs": percentiles(&mut partial.probes),
        },
        "eventStreams": streams,
    }))
}

/// What the unfinished heads did and what the probe saw meanwhile.
struct PartialOutcome {
    /// Per connection, from its last byte sent until the server closed it.
    closed_after: Vec<Duration>,
    /// Connections the kernel or the server refused before they were made.
    not_connected: usize,
    /// `/health` latencies while any of them was open.
    probes: Vec<Duration>,
    /// `/health` probes that failed or were not answered 200.
    probes_failed: usize,
}

/// Opens `count` connections from [`PARTIAL_CLIENT`], each sending an
/// unfinished head, and probes `/health` until the server has closed all.
async fn partial_heads(api: SocketAddr, count: u32) -> Result<PartialOutcome, BenchError> {
    let mut connections = tokio::task::JoinSet::new();
    for _ in 0..count {
        connections.spawn(async move {
            let mut stream = connect_from(PARTIAL_CLIENT, api).await.ok()?;
            // A refused connection may be closed before this is written.
            let _ = stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await;
            let sent = Instant::now();
            let mut buffer = [0u8; 512];
            loop {
                match tokio::time::timeout(WAIT_LIMIT, stream.read(&mut buffer)).await {
                    Ok(Ok(0) | Err(_)) => return Some(Ok(sent.elapsed())),
                    Ok(Ok(_)) => {}
                    Err(_) => return Some(Err(())),
                }
            }
        });
    }
    let open = Arc::new(AtomicBool::new(true));
    let probe = tokio::spawn(probe_health(api, Arc::clone(&open)));
    let mut closed_after = Vec::new();
    let mut not_connected = 0;
    let mut still_open = 0;
    while let Some(joined) = connections.join_next().await {
        match joined.map_err(|e| BenchError::Run(e.to_string()))? {
            Some(Ok(after)) => closed_after.push(after),
            Some(Err(())) => still_open += 1,
            None => not_connected += 1,
        }
    }
    open.store(false, Ordering::Relaxed);
    let (probes, probes_failed) = probe.await.map_err(|e| BenchError::Run(e.to_string()))?;
    if still_open > 0 {
        return Err(BenchError::Run(format!(
            "{still_open} connections with an unfinished head were still open after {WAIT_LIMIT:?}"
        )));
    }
    Ok(PartialOutcome {
        closed_after,
        not_connected,
        probes,
        probes_failed,
    })
}

/// `GET /health` from [`PROBE_CLIENT`] every [`PROBE_INTERVAL`], each on a
/// connection of its own, while `open` holds.
async fn probe_health(api: SocketAddr, open: Arc<AtomicBool>) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut failed = 0;
    while open.load(Ordering::Relaxed) {
        let started = Instant::now();
        match get_from(PROBE_CLIENT, api, "/health").await {
            Ok((200, _)) => latencies.push(started.elapsed()),
            _ => failed += 1,
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    (latencies, failed)
}

/// Asks for `count` event streams from [`STREAMS_CLIENT`] and keeps those
/// given; meanwhile opens a dashboard's stream from [`DASHBOARD_CLIENT`]
/// [`DASHBOARD_SAMPLES`] times.
async fn idle_streams(api: SocketAddr, count: u32) -> Result<Value, BenchError> {
    let mut held = Vec::new();
    let (mut refused, mut closed) = (0, 0);
    for _ in 0..count {
        match open_stream(STREAMS_CLIENT, api).await {
            Ok((200, stream)) => held.push(stream),
            Ok(_) => refused += 1,
            Err(_) => closed += 1,
        }
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for _ in 0..DASHBOARD_SAMPLES {
        let started = Instant::now();
        match open_stream(DASHBOARD_CLIENT, api).await {
            Ok((200, _)) => latencies.push(started.elapsed()),
            _ => failed += 1,
        }
    }
    Ok(json!({
        "asked": count,
        "given": held.len(),
        "refused503": refused,
        "connectionClosed": closed,
        "dashboard": {
            "samples": DASHBOARD_SAMPLES,
            "failed": failed,
            "latencyMs": percentiles(&mut latencies),
        },
    }))
}

/// A connection to `api` from `source`.
async fn connect_from(source: Ipv4Addr, api: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    tokio::time::timeout(WAIT_LIMIT, socket.connect(api))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// `GET path` from `source` (connection closed after): status and body.
async fn get_from(source: Ipv4Addr, api: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = connect_from(source, api).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(WAIT_LIMIT, stream.read_to_string(&mut answer))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    let status = status_of(&answer)?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// `GET /events` from `source`, kept open: the status and the stream.
async fn open_stream(source: Ipv4Addr, api: SocketAddr) -> std::io::Result<(u16, TcpStream)> {
    let mut stream = connect_from(source, api).await?;
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(WAIT_LIMIT, stream.read(&mut byte))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok((status_of(&String::from_utf8_lossy(&head))?, stream))
}

fn status_of(answer: &str) -> std::io::Result<u16> {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::ErrorKind::InvalidData.into())
}

/// The server's connection counters, from `/metrics`.
struct Counters {
    refused_global: i64,
    refused_per_ip: i64,
    timed_out_header: i64,
}

async fn connection_counters(api: SocketAddr) -> Result<Counters, BenchError> {
    let (status, metrics) = get_from(METRICS_CLIENT, api, "/metrics")
        .await
        .map_err(|e| BenchError::Run(format!("GET /metrics: {e}")))?;
    if status != 200 {
        return Err(BenchError::Run(format!("GET /metrics: {status}")));
    }
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .map_or(0, |value| value as i64)
    };
    Ok(Counters {
        refused_global: value(r#"aqueduct_api_connections_refused_total{reason="global"}"#),
        refused_per_ip: value(r#"aqueduct_api_connections_refused_total{reason="per_ip"}"#),
        timed_out_header: value(r#"aqueduct_api_connections_timed_out_total{reason="header"}"#),
    })
}
