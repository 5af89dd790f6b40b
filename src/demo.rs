//! `aqueduct demo`: a local mesh of three peers on loopback, each a child
//! `aqueduct run` process with its own data dir and ports under one
//! cluster CA, loaded with the example configuration
//! (`examples/mesh.json`, the A/B deploy story of the README), until
//! Ctrl-C or SIGTERM stops them all.
//!
//! Owns the children's lifecycle and the example's loading (through the
//! public REST API, like any client). Must not reach into a peer's state
//! any other way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::certs::{self, CertError, NodeName};
use crate::daemon::{Listening, shutdown_signal};

/// The example configuration the demo loads (also what the README shows).
pub const EXAMPLE: &str = include_str!("../examples/mesh.json");

/// How long a peer may take to start, and the example to load.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
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
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Certificates.
    #[error(transparent)]
    Certificates(#[from] CertError),
    /// A child process.
    #[error("{peer}: {reason} (log: {log})")]
    Peer {
        /// Which peer.
        peer: String,
        /// What went wrong.
        reason: String,
        /// Its log file.
        log: PathBuf,
    },
    /// Loading the example.
    #[error("loading the example: {0}")]
    Load(String),
}

struct DemoPeer {
    name: NodeName,
    child: Child,
    api: SocketAddr,
    gossip: SocketAddr,
    log: PathBuf,
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let ca = args.dir.join("ca");
    if !ca.join("ca.pem").exists() {
        certs::init_ca(&ca)?;
    }
    let mut peers: Vec<DemoPeer> = Vec::new();
    let started = start_all(&args, &ca, &mut peers).await;
    let outcome = match started {
        Ok(()) => serve(&args, &mut peers).await,
        Err(error) => Err(error),
    };
    stop_all(&mut peers).await;
    outcome
}

async fn start_all(args: &DemoArgs, ca: &Path, peers: &mut Vec<DemoPeer>) -> Result<(), DemoError> {
    let executable = std::env::current_exe().map_err(|e| DemoError::Peer {
        peer: "demo".into(),
        reason: format!("cannot find its own executable: {e}"),
        log: PathBuf::new(),
    })?;
    for index in 0..args.peers {
        let name = NodeName::new(&format!("peer-{}", index + 1))?;
        let home = args.dir.join(name.as_str());
        let tls = home.join("tls");
        if !tls.join("node.pem").exists() {
            certs::issue(ca, &name, &tls)?;
        }
        let api_port = args.base_port.saturating_add(index * 10);
        let log = home.join("log.txt");
        let fail = |reason: String| DemoError::Peer {
            peer: name.to_string(),
            reason,
            log: log.clone(),
        };
        let log_file = std::fs::File::create(&log).map_err(|e| fail(e.to_string()))?;
        let mut command = Command::new(&executable);
        command
            .arg("run")
            .args(["--name", name.as_str()])
            .arg("--data-dir")
            .arg(home.join("data"))
            .arg("--tls-dir")
            .arg(&tls)
            .args(["--api", &format!("127.0.0.1:{api_port}")])
            .args(["--gossip", &format!("127.0.0.1:{}", api_port.saturating_add(1))])
            .args(["--haproxy", "off"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true);
        if let Some(first) = peers.first() {
            command.args(["--join", &first.gossip.to_string()]);
        }
        let mut child = command.spawn().map_err(|e| fail(e.to_string()))?;
        let stdout = child.stdout.take().ok_or_else(|| fail("no stdout".into()))?;
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        let read = tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut line));
        let listening = match read.await {
            Ok(Ok(_)) => Listening::parse(&line),
            _ => None,
        };
        let Some(Listening { api, gossip, .. }) = listening else {
            let _ = child.start_kill();
            return Err(fail("did not start".into()));
        };
        peers.push(DemoPeer {
            name,
            child,
            api,
            gossip,
            log,
        });
    }
    Ok(())
}

/// Loads the example, prints where everything is, and keeps the example's
/// registrations alive until a signal (or a peer dying) ends the demo.
async fn serve(args: &DemoArgs, peers: &mut [DemoPeer]) -> Result<(), DemoError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| DemoError::Load(e.to_string()))?;
    let first = format!("http://{}", peers[0].api);
    let example: Value = serde_json::from_str(EXAMPLE).map_err(|e| DemoError::Load(e.to_string()))?;
    let mut writes = Vec::new();
    for section in ["backends", "frontends"] {
        for (key, body) in example[section].as_object().into_iter().flatten() {
            writes.push((reqwest::Method::PUT, format!("{first}/{section}/{key}"), body.clone()));
        }
    }
    let registrations = registration_writes(&first, &example);
    writes.extend(registrations.iter().cloned());
    for (method, url, body) in &writes {
        send(&http, method.clone(), url, body).await?;
    }
    wait_until_everywhere(&http, peers).await?;

    println!(
        "Aqueduct demo: {} peers on loopback, data and logs in {}",
        peers.len(),
        args.dir.display()
    );
    for peer in peers.iter() {
        println!(
            "  {:<8} API http://{}   gossip {}   log {}",
            peer.name,
            peer.api,
            peer.gossip,
            peer.log.display()
        );
    }
    let last = format!("http://{}", peers[peers.len() - 1].api);
    println!("The example configuration (examples/mesh.json) was written to {} and is on every peer:", peers[0].name);
    println!("  curl {last}/backends");
    println!("  curl {last}/mesh/peers");
    println!("  aqueduct ctl --api {last} backends");
    println!("The A/B switch, on any peer:");
    println!(
        "  curl -X POST {last}/backends/live -H 'content-type: application/json' -d '{{\"version\":\"2.0.0\"}}'"
    );
    println!("Ctrl-C stops the mesh.");

    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut health = tokio::time::interval(Duration::from_secs(1));
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => return Ok(()),
            _ = heartbeat.tick() => {
                for (method, url, body) in &registrations {
                    if let Err(error) = send(&http, method.clone(), url, body).await {
                        tracing::warn!(%error, "heartbeat failed");
                    }
                }
            }
            _ = health.tick() => {
                for peer in peers.iter_mut() {
                    if let Ok(Some(status)) = peer.child.try_wait() {
                        return Err(DemoError::Peer {
                            peer: peer.name.to_string(),
                            reason: format!("exited unexpectedly ({status})"),
                            log: peer.log.clone(),
                        });
                    }
                }
            }
        }
    }
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
    let response = http
        .request(method, url)
        .json(body)
        .send()
        .await
        .map_err(|e| DemoError::Load(format!("{url}: {e}")))?;
    if response.status().is_success() {
        Ok(())
    } else {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(DemoError::Load(format!("{url}: {status} {text}")))
    }
}

/// Waits until every peer serves the example's frontend.
async fn wait_until_everywhere(http: &reqwest::Client, peers: &[DemoPeer]) -> Result<(), DemoError> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
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

/// SIGTERM to every child, then SIGKILL to any still running after
/// [`STOP_TIMEOUT`].
async fn stop_all(peers: &mut [DemoPeer]) {
    for peer in peers.iter() {
        if let Some(pid) = peer
            .child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    for peer in peers.iter_mut() {
        if tokio::time::timeout(STOP_TIMEOUT, peer.child.wait())
            .await
            .is_err()
        {
            let _ = peer.child.kill().await;
        }
    }
    println!("demo stopped");
}
