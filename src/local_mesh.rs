//! A mesh of `aqueduct run` child processes on loopback under one cluster
//! CA, for `aqueduct demo` and `aqueduct bench`: certificates, data dirs,
//! ports (fixed or ephemeral), each peer's HAProxy (none, or one per peer
//! on its own loopback address), start, restart and stop.
//!
//! Owns the children's lifecycle. Must not reach into a peer's state: the
//! callers talk to the peers through their REST APIs like any client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::certs::{self, CertError, NodeName};
use crate::config::HaproxySetting;
use crate::daemon::Listening;

/// How long a peer may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the peers listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// Peer N's API on BASE + 10·(N−1), its gossip one above.
    From(u16),
    /// Ports chosen by the kernel (benchmarks, tests).
    Ephemeral,
}

/// Whether the peers drive HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshHaproxy {
    /// `--haproxy off`: the peers only render (benchmarks of the control
    /// plane alone).
    Off,
    /// Each peer runs its own HAProxy (`--haproxy` with this setting), which
    /// listens wherever a frontend binds `*` on the peer's own loopback
    /// address (`--bind-host`): peer N on `first_bind_host` + N − 1, so
    /// that the peers' HAProxies, and meshes started from different first
    /// addresses, do not collide on one machine.
    PerPeer {
        /// `auto` or a binary (`off` makes render-only peers that still
        /// get a bind host).
        setting: HaproxySetting,
        /// Peer 1's bind host.
        first_bind_host: Ipv4Addr,
    },
}

impl MeshHaproxy {
    /// Peer `index`'s `--haproxy` argument and bind host.
    fn for_peer(&self, index: u16) -> (std::ffi::OsString, Option<IpAddr>) {
        match self {
            MeshHaproxy::Off => ("off".into(), None),
            MeshHaproxy::PerPeer {
                setting,
                first_bind_host,
            } => {
                let setting = match setting {
                    HaproxySetting::Auto => "auto".into(),
                    HaproxySetting::Off => "off".into(),
                    HaproxySetting::Path(path) => path.clone().into_os_string(),
                };
                let host = Ipv4Addr::from(u32::from(*first_bind_host).saturating_add(index.into()));
                (setting, Some(IpAddr::V4(host)))
            }
        }
    }
}

/// Why a peer could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum LocalMeshError {
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
}

/// One child peer.
pub struct LocalPeer {
    /// Its name (`peer-N`).
    pub name: NodeName,
    /// Its API address.
    pub api: SocketAddr,
    /// Its gossip address.
    pub gossip: SocketAddr,
    /// Where its HAProxy listens for frontends that bind `*` (`None`: the
    /// peer drives no HAProxy).
    pub bind_host: Option<IpAddr>,
    /// Its log file (stderr).
    pub log: PathBuf,
    home: PathBuf,
    child: Child,
}

impl LocalPeer {
    /// Its data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.home.join(DATA_DIR)
    }
}

/// A peer's data directory, under its home.
const DATA_DIR: &str = "data";

/// The peers of a local mesh. Dropping it kills any child still running.
pub struct LocalMesh {
    dir: PathBuf,
    ports: Ports,
    haproxy: MeshHaproxy,
    executable: PathBuf,
    /// The peers, in start order; each joins through the first.
    pub peers: Vec<LocalPeer>,
    /// Options every peer gets besides the usual.
    peer_args: Vec<String>,
}

impl LocalMesh {
    /// Starts `count` peers under `dir` (a CA and certificates are made
    /// on first use), each joining through the first, with `haproxy` and
    /// `peer_args` besides the usual options.
    pub async fn start(
        dir: &Path,
        count: u16,
        ports: Ports,
        haproxy: MeshHaproxy,
        peer_args: Vec<String>,
    ) -> Result<LocalMesh, LocalMeshError> {
        let executable = std::env::current_exe().map_err(|e| LocalMeshError::Peer {
            peer: "aqueduct".into(),
            reason: format!("cannot find its own executable: {e}"),
            log: PathBuf::new(),
        })?;
        let ca = dir.join("ca");
        if !ca.join(certs::CA_CERT_FILE).exists() {
            certs::init_ca(&ca)?;
        }
        let mut mesh = LocalMesh {
            dir: dir.to_owned(),
            ports,
            haproxy,
            executable,
            peers: Vec::new(),
            peer_args,
        };
        for index in 0..count {
            let name = NodeName::new(&format!("peer-{}", index + 1))?;
            let home = dir.join(name.as_str());
            let tls = home.join("tls");
            if !tls.join(certs::NODE_CERT_FILE).exists() {
                certs::issue(&ca, &name, &tls)?;
            }
            let peer = mesh.spawn(index, name, home).await?;
            mesh.peers.push(peer);
        }
        Ok(mesh)
    }

    /// Stops peer `index` with SIGTERM and starts it again on the same
    /// data; returns how long it took from the new process's start until it
    /// listened.
    pub async fn restart(&mut self, index: usize) -> Result<Duration, LocalMeshError> {
        let peer = &mut self.peers[index];
        stop(peer).await;
        let (name, home) = (peer.name.clone(), peer.home.clone());
        let started = Instant::now();
        let peer = self
            .spawn(u16::try_from(index).unwrap_or(u16::MAX), name, home)
            .await?;
        let took = started.elapsed();
        self.peers[index] = peer;
        Ok(took)
    }

    /// Stops peer `index` with SIGTERM (SIGKILL after a grace period);
    /// [`LocalMesh::restart`] starts it again.
    pub async fn stop_peer(&mut self, index: usize) {
        stop(&mut self.peers[index]).await;
    }

    /// The process id of peer `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.peers[index].child.id()
    }

    /// The first peer that has exited, with its exit status.
    pub fn exited(&mut self) -> Option<(&LocalPeer, std::process::ExitStatus)> {
        self.peers
            .iter_mut()
            .find_map(|peer| match peer.child.try_wait() {
                Ok(Some(status)) => Some((&*peer, status)),
                _ => None,
            })
    }

    /// SIGTERM to every peer, then SIGKILL to any still running after a
    /// grace period.
    pub async fn stop(&mut self) {
        for peer in &self.peers {
            terminate(peer);
        }
        for peer in &mut self.peers {
            stop(peer).await;
        }
    }

    /// Where the mesh keeps its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn spawn(
        &self,
        index: u16,
        name: NodeName,
        home: PathBuf,
    ) -> Result<LocalPeer, LocalMeshError> {
        let log = home.join("log.txt");
        let fail = |reason: String| LocalMeshError::Peer {
            peer: name.to_string(),
            reason,
            log: log.clone(),
        };
        std::fs::create_dir_all(&home).map_err(|e| fail(e.to_string()))?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| fail(e.to_string()))?;
        let (api, gossip) = match self.ports {
            Ports::From(base) => {
                let api = base.saturating_add(index.saturating_mul(10));
                (api, api.saturating_add(1))
            }
            Ports::Ephemeral => (0, 0),
        };
        let (haproxy, bind_host) = self.haproxy.for_peer(index);
        let mut command = Command::new(&self.executable);
        command
            .arg("run")
            .args(["--name", name.as_str()])
            .arg("--data-dir")
            .arg(home.join(DATA_DIR))
            .arg("--tls-dir")
            .arg(home.join("tls"))
            .args(["--api", &format!("127.0.0.1:{api}")])
            .args(["--gossip", &format!("127.0.0.1:{gossip}")])
            .arg("--haproxy")
            .arg(haproxy)
            // The mesh owns its processes: none outlives it.
            .args(["--haproxy-on-exit", "stop"])
            .args(&self.peer_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true);
        if let Some(host) = bind_host {
            command.args(["--bind-host", &host.to_string()]);
        }
        // Join through the first peer (the second when restarting the first).
        if let Some(seed) = self.peers.iter().find(|peer| peer.name != name) {
            command.args(["--join", &seed.gossip.to_string()]);
        }
        let mut child = command.spawn().map_err(|e| fail(e.to_string()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| fail("no stdout".into()))?;
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        let listening = match tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut line)).await
        {
            Ok(Ok(_)) => Listening::parse(&line),
            _ => None,
        };
        let Some(Listening { api, gossip, .. }) = listening else {
            let _ = child.start_kill();
            return Err(fail("did not start".into()));
        };
        // The rest of stdout is read and dropped: a peer must never block
        // on (or die of) a pipe nobody reads.
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
        });
        Ok(LocalPeer {
            name,
            api,
            gossip,
            bind_host,
            log,
            home,
            child,
        })
    }
}

fn terminate(peer: &LocalPeer) {
    if let Some(pid) = peer
        .child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

async fn stop(peer: &mut LocalPeer) {
    terminate(peer);
    if tokio::time::timeout(STOP_TIMEOUT, peer.child.wait())
        .await
        .is_err()
    {
        let _ = peer.child.kill().await;
    }
}

/// Sends `body` as JSON to `url` with `method` (to a peer of a local mesh,
/// which has no token); an answer other than 2xx is an error carrying the
/// status and the API's error.
pub async fn send_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    crate::client::exchange(http, method, url, None, Some(body))
        .await
        .map(drop)
        .map_err(|e| format!("{url}: {e}"))
}
