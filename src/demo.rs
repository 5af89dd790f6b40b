//! `aqueduct demo`: a local mesh of three peers on loopback, each a child
//! `aqueduct run` process with its own data dir and ports under one
//! cluster CA and its own HAProxy on its own loopback address, loaded with
//! the example configuration (`examples/mesh.json`, the A/B deploy story
//! of the README) and small HTTP servers standing in for the example's
//! services, until Ctrl-C or SIGTERM stops them all. Without HAProxy
//! installed the peers only render, and the demo says so.
//!
//! Owns the children's lifecycle, the stand-in services and the example's
//! loading (through the public REST API, like any client). Must not reach
//! into a peer's state any other way.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::config::HaproxySetting;
use crate::daemon::ShutdownSignals;
use crate::echo::{self, EchoServer};
use crate::local_mesh::{LocalMesh, LocalMeshError, LocalPeer, MeshHaproxy, Ports, send_json};

/// The example configuration the demo loads (also what the README shows).
pub const EXAMPLE: &str = include_str!("../examples/mesh.json");

/// How long the example may take to reach every peer, and every peer's
/// HAProxy to serve it.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Registrations are renewed this often (the original client's period);
/// the example's leases are 60 s.
const HEARTBEAT: Duration = Duration::from_secs(20);

/// The demo's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the CA, the peers' data and their logs go.
    #[arg(long, default_value = "aqueduct-demo")]
    pub dir: PathBuf,
    /// Peer N's API listens on BASE_PORT + 10·(N−1), its gossip one above.
    #[arg(long, default_value_t = 10000)]
    pub base_port: u16,
    /// How many peers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub peers: u16,
    /// The peers' HAProxy: `auto` (from PATH; render only if there is
    /// none), `off` or a binary.
    #[arg(long, default_value = "auto")]
    pub haproxy: HaproxySetting,
    /// Peer 1's HAProxy listens on this address wherever a frontend binds
    /// `*`, peer N on the N−1th address after it.
    #[arg(long, default_value = "127.0.0.1")]
    pub first_bind_host: Ipv4Addr,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Starting or running the peers.
    #[error(transparent)]
    Mesh(#[from] LocalMeshError),
    /// A peer died.
    #[error("{peer} exited unexpectedly ({status}); its log: {log}")]
    PeerExited {
        /// Which.
        peer: String,
        /// How.
        status: std::process::ExitStatus,
        /// Its log file.
        log: PathBuf,
    },
    /// Loading the example.
    #[error("loading the example: {0}")]
    Load(String),
    /// Signal handlers could not be installed.
    #[error("cannot listen for SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let mut signals = ShutdownSignals::new().map_err(DemoError::Signals)?;
    let example: Value =
        serde_json::from_str(EXAMPLE).map_err(|e| DemoError::Load(e.to_string()))?;
    // Kept until the demo ends: dropping a server stops it.
    let _services = start_services(&example).await;
    let haproxy = MeshHaproxy::PerPeer {
        setting: args.haproxy.clone(),
        first_bind_host: args.first_bind_host,
    };
    // A signal while the peers start drops the half-made mesh, which kills
    // the children started so far.
    let mut mesh = tokio::select! {
        mesh = LocalMesh::start(&args.dir, args.peers, Ports::From(args.base_port), haproxy, Vec::new()) => mesh?,
        () = signals.recv() => {
            println!("demo stopped");
            return Ok(());
        }
    };
    let outcome = serve(&mut mesh, &example, &mut signals).await;
    mesh.stop().await;
    println!("demo stopped");
    outcome
}

/// Loads the example, prints where everything is, and keeps the example's
/// registrations alive until a signal (or a peer dying) ends the demo.
async fn serve(
    mesh: &mut LocalMesh,
    example: &Value,
    signals: &mut ShutdownSignals,
) -> Result<(), DemoError> {
    let peers = &mesh.peers;
    let http = crate::client::http_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| DemoError::Load(e.to_string()))?;
    let first = format!("http://{}", peers[0].api);
    let mut writes = Vec::new();
    for section in ["backends", "frontends"] {
        for (key, body) in example[section].as_object().into_iter().flatten() {
            writes.push((
                reqwest::Method::PUT,
                format!("{first}/{section}/{key}"),
                body.clone(),
            ));
        }
    }
    let registrations = registration_writes(&first, example);
    writes.extend(registrations.iter().cloned());
    for (method, url, body) in &writes {
        send(&http, method.clone(), url, body).await?;
    }
    wait_until_everywhere(&http, peers).await?;
    let status = format!("{first}/haproxy/status");
    let managed = crate::client::exchange(&http, reqwest::Method::GET, &status, None, None)
        .await
        .ok();
    let managed = match managed {
        Some(r) => r
            .json::<Value>()
            .await
            .ok()
            .is_some_and(|s| s["managed"] == true),
        None => false,
    };
    let port = frontend_port(example);

    println!(
        "Aqueduct demo: {} peers on loopback, data and logs in {}",
        peers.len(),
        mesh.dir().display()
    );
    for peer in peers.iter() {
        println!(
            "  {:<8} API http://{}   gossip {}   log {}",
            peer.name.as_str(),
            peer.api,
            peer.gossip,
            peer.log.display()
        );
    }
    let last = format!("http://{}", peers[peers.len() - 1].api);
    println!(
        "The example configuration (examples/mesh.json) was written to {} and is on every peer:",
        peers[0].name
    );
    println!("  curl {last}/backends");
    println!("  curl {last}/mesh/peers");
    println!("  aqueduct ctl --api {last} backends");
    if managed {
        println!("Each peer runs its own HAProxy; through each (answered by a v1 instance):");
        for peer in peers.iter() {
            if let Some(host) = peer.bind_host {
                let addr = SocketAddr::new(host, port);
                let serving = wait_until_serving(addr).await;
                println!(
                    "  {:<8} curl http://{addr}/{}",
                    peer.name.as_str(),
                    if serving {
                        ""
                    } else {
                        "   (not answering yet)"
                    }
                );
            }
        }
        if let Some(host) = peers[0].bind_host {
            println!(
                "  staged (v2): curl -H 'Host: staged.myapp.example.com' http://{host}:{port}/"
            );
        }
    } else {
        println!(
            "HAProxy is not installed (or --haproxy off): the peers only render. Each peer's haproxy.cfg:"
        );
        println!("  curl {last}/haproxy/config");
    }
    println!(
        "The A/B switch, on any peer{}:",
        if managed {
            " (then every HAProxy answers from v2)"
        } else {
            ""
        }
    );
    println!(
        "  curl -X POST {last}/backends/live -H 'content-type: application/json' -d '{{\"version\":\"2.0.0\"}}'"
    );
    println!("Ctrl-C stops the mesh.");

    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut health = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = signals.recv() => return Ok(()),
            _ = heartbeat.tick() => {
                for (method, url, body) in &registrations {
                    if let Err(error) = send(&http, method.clone(), url, body).await {
                        tracing::warn!(%error, "heartbeat failed");
                    }
                }
            }
            _ = health.tick() => {
                if let Some((peer, status)) = mesh.exited() {
                    return Err(DemoError::PeerExited {
                        peer: peer.name.to_string(),
                        status,
                        log: peer.log.clone(),
                    });
                }
            }
        }
    }
}

/// Starts a stand-in for every registration and static member of the
/// example, each answering with which instance it is. An address already in
/// use is reported and skipped: the demo still runs, that member is down.
async fn start_services(example: &Value) -> Vec<EchoServer> {
    let registrations = example["registrations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let name = format!(
                "{} v{} instance {}:{}",
                r["name"].as_str().unwrap_or_default(),
                r["version"].as_str().unwrap_or_default(),
                r["host"].as_str().unwrap_or_default(),
                r["port"]
            );
            (r["host"].clone(), r["port"].clone(), name)
        });
    let members = example["backends"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(key, backend)| {
            backend["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |m| {
                    let name = format!(
                        "{key} member {}:{}",
                        m["host"].as_str().unwrap_or_default(),
                        m["port"]
                    );
                    (m["host"].clone(), m["port"].clone(), name)
                })
        });
    let mut servers = Vec::new();
    for (host, port, name) in registrations.chain(members) {
        let addr = host
            .as_str()
            .and_then(|host| host.parse::<std::net::IpAddr>().ok())
            .zip(port.as_u64().and_then(|p| u16::try_from(p).ok()))
            .map(|(host, port)| SocketAddr::new(host, port));
        let Some(addr) = addr else { continue };
        match EchoServer::bind(addr, &name).await {
            Ok(server) => servers.push(server),
            Err(error) => println!("warning: no stand-in service for {name}: {error}"),
        }
    }
    servers
}

/// The port of the example's frontend (it binds `*:PORT`).
fn frontend_port(example: &Value) -> u16 {
    example["frontends"]["myapp"]["bind"]
        .as_str()
        .and_then(|bind| bind.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(8080)
}

/// Polls `addr` until HAProxy answers 200 there (the example's members pass
/// their first health check), for at most [`LOAD_TIMEOUT`].
async fn wait_until_serving(addr: SocketAddr) -> bool {
    let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if echo::get(addr, "/", "aqueduct", Duration::from_secs(2))
            .await
            .is_ok_and(|answer| answer.status == 200)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn registration_writes(base: &str, example: &Value) -> Vec<(reqwest::Method, String, Value)> {
    example["registrations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let url = format!(
                "{base}/registrations/{}/{}/{}/{}",
                r["name"].as_str().unwrap_or_default(),
                r["version"].as_str().unwrap_or_default(),
                r["host"].as_str().unwrap_or_default(),
                r["port"]
            );
            (reqwest::Method::POST, url, r["meta"].clone())
        })
        .collect()
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &Value,
) -> Result<(), DemoError> {
    send_json(http, method, url, body)
        .await
        .map_err(DemoError::Load)
}

/// Waits until every peer serves the example's frontend.
async fn wait_until_everywhere(
    http: &reqwest::Client,
    peers: &[LocalPeer],
) -> Result<(), DemoError> {
    let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
    for peer in peers {
        let url = format!("http://{}/frontends/myapp", peer.api);
        loop {
            let ok = http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(DemoError::Load(format!(
                    "{} did not receive the example",
                    peer.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}
