//! Real `aqueduct` processes on 127.0.0.1 for integration tests: a cluster
//! CA in a temporary directory, peers started with ephemeral ports (read
//! back from the line each peer prints), an HTTP client, and polling with
//! a deadline instead of sleeps.

#![allow(dead_code)] // Each test file uses a different part of the harness.

pub mod hostile;
pub mod http;
pub mod memory;
pub mod netns;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aqueduct::daemon::Listening;
use serde_json::Value;

/// How long anything in these tests may take before it is a failure.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `aqueduct` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_aqueduct")
}

/// The variable naming the previous release's `aqueduct` binary.
pub const PREVIOUS_BIN_VAR: &str = "AQUEDUCT_PREVIOUS_BIN";

/// The previous release's `aqueduct` binary (the rev in
/// `tests/fixtures/previous-release.txt`), for mixed-version tests. Never
/// skipped: without it, the test fails and says how to build it.
pub fn previous_binary() -> PathBuf {
    let how = "build it with `export AQUEDUCT_PREVIOUS_BIN=$(bash scripts/build-previous.sh | tail -n 1)` \
               (scripts/test.sh does this before the tests)";
    let path = std::env::var_os(PREVIOUS_BIN_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{PREVIOUS_BIN_VAR} is not set: {how}"));
    assert!(
        path.is_file(),
        "{PREVIOUS_BIN_VAR}={} is not a file: {how}",
        path.display()
    );
    path
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "aqueduct-test-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `aqueduct args...` to completion; panics with its output if it fails.
pub fn aqueduct(args: &[&str]) -> String {
    let output = Command::new(binary())
        .args(args)
        .output()
        .expect("aqueduct runs");
    assert!(
        output.status.success(),
        "aqueduct {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A cluster CA and the peers started under it.
pub struct Cluster {
    pub dir: TempDir,
}

impl Cluster {
    pub fn new(label: &str) -> Cluster {
        let dir = TempDir::new(label);
        let ca = dir.path().join("ca");
        aqueduct(&["certs", "init", "--out", ca.to_str().expect("utf-8")]);
        Cluster { dir }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// The settings of a peer named `name` (certificate issued on first use).
    pub fn peer(&self, name: &str) -> PeerSpec {
        let home = self.dir.path().join(name);
        let tls = home.join("tls");
        if !tls.join("node.pem").exists() {
            self.issue(name, &tls);
        }
        PeerSpec {
            name: name.to_owned(),
            binary: PathBuf::from(binary()),
            data_dir: home.join("data"),
            tls_dir: tls,
            log: home.join("log.txt"),
            api: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            gossip: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            netns: None,
            join: Vec::new(),
            extra: Vec::new(),
            haproxy: None,
            run_as: None,
            current_dir: None,
        }
    }

    /// Issues a certificate for `name` into the new TLS directory `tls`
    /// (`aqueduct certs issue`).
    pub fn issue(&self, name: &str, tls: &Path) {
        aqueduct(&[
            "certs",
            "issue",
            "--ca",
            self.ca_dir().to_str().expect("utf-8"),
            "--name",
            name,
            "--out",
            tls.to_str().expect("utf-8"),
        ]);
    }

    /// Three peers, `peer-a`, `peer-b` and `peer-c`, that see each other.
    pub fn three_peers(&self) -> (Peer, Peer, Peer) {
        let a = self.start("peer-a", &[]);
        let b = self.start("peer-b", &[&a]);
        let c = self.start("peer-c", &[&a]);
        wait_for_mesh(&[&a, &b, &c]);
        (a, b, c)
    }

    /// Starts a peer named `name` joining through `join`.
    pub fn start(&self, name: &str, join: &[&Peer]) -> Peer {
        let mut spec = self.peer(name);
        spec.join = join.iter().map(|p| p.gossip).collect();
        spec.start()
    }

    /// Starts a peer with its own HAProxy, listening on a loopback address
    /// of its own wherever a frontend binds `*`.
    pub fn start_with_haproxy(&self, name: &str, join: &[&Peer]) -> Peer {
        self.peer_with_haproxy(name, join).start()
    }

    /// Starts a peer with its own HAProxy that takes any natives line
    /// (`--natives unrestricted`).
    pub fn start_unrestricted_with_haproxy(&self, name: &str) -> Peer {
        let mut spec = self.peer_with_haproxy(name, &[]);
        spec.extra = vec!["--natives".into(), "unrestricted".into()];
        spec.start()
    }

    /// The settings of a peer with its own HAProxy (see
    /// [`Cluster::start_with_haproxy`]), not started yet.
    pub fn peer_with_haproxy(&self, name: &str, join: &[&Peer]) -> PeerSpec {
        let mut spec = self.peer(name);
        spec.join = join.iter().map(|p| p.gossip).collect();
        spec.haproxy = Some(loopback_host());
        spec
    }
}

/// How to start one peer.
#[derive(Clone)]
pub struct PeerSpec {
    pub name: String,
    /// The `aqueduct` to run: [`binary`] unless a test runs another
    /// release ([`previous_binary`]).
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// Given with `--tls-dir`, unless it is `data_dir/tls`: there a peer
    /// started without `--tls-dir` makes its own.
    pub tls_dir: PathBuf,
    pub log: PathBuf,
    /// The API's address (port 0: an ephemeral one).
    pub api: SocketAddr,
    /// The gossip address (port 0: an ephemeral one).
    pub gossip: SocketAddr,
    /// The network namespace the peer runs in (`ip netns exec`), and that
    /// the test's HTTP client for it enters; `None`: the test's own.
    pub netns: Option<String>,
    pub join: Vec<SocketAddr>,
    pub extra: Vec<String>,
    /// Run HAProxy, binding `*` to this address (`None`: `--haproxy off`);
    /// in a namespace, the namespace's address.
    pub haproxy: Option<Ipv4Addr>,
    /// The uid and gid the peer runs as, without supplementary groups
    /// (`None`: the test's own, root).
    pub run_as: Option<(u32, u32)>,
    /// The directory the peer starts in (`None`: the test's own).
    pub current_dir: Option<PathBuf>,
}

impl PeerSpec {
    /// The process, not yet waited for.
    pub fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // What runs the binary: in the namespace, as the user (setpriv
        // switches after the start directory is entered as root, as a
        // shell started by root and then switched would).
        let mut wrappers: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            wrappers.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if let Some((uid, gid)) = self.run_as {
            wrappers.extend([
                "setpriv".to_owned(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".to_owned(),
            ]);
        }
        let mut command = match wrappers.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .args(["run", "--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--api")
            .arg(self.api.to_string())
            .arg("--gossip")
            .arg(self.gossip.to_string())
            .args(self.extra.iter())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for join in &self.join {
            command.arg("--join").arg(join.to_string());
        }
        if !self.api.ip().is_loopback() {
            // Only in a namespace this test made, reached by nobody else.
            command.arg("--api-insecure");
        }
        if self.tls_dir != self.data_dir.join("tls") {
            command.arg("--tls-dir").arg(&self.tls_dir);
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        match self.haproxy {
            // In a namespace of its own, `*` is the peer's one address (and
            // loopback): no --bind-host, so that every peer renders the
            // same frontends.
            Some(_) if self.netns.is_some() => command.args(["--haproxy", "auto"]),
            Some(host) => command.args(["--haproxy", "auto", "--bind-host", &host.to_string()]),
            None => command.args(["--haproxy", "off"]),
        };
        command.spawn().expect("aqueduct starts")
    }

    /// Starts the peer and waits for its "listening" line.
    pub fn start(&self) -> Peer {
        let mut child = self.spawn();
        let line = first_stdout_line(&mut child);
        let Some(listening) = Listening::parse(&line) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "peer {} did not start (stdout {line:?}); log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        };
        Peer {
            spec: self.clone(),
            child: Some(child),
            clean_up_haproxy: true,
            api: listening.api,
            gossip: listening.gossip,
            http: match &self.netns {
                Some(ns) => netns::in_netns(ns, client),
                None => client(),
            },
        }
    }
}

/// A running peer process.
pub struct Peer {
    pub spec: PeerSpec,
    child: Option<Child>,
    /// Whether dropping this peer stops an HAProxy its run left: not when
    /// a new run of the same peer has taken that HAProxy over.
    clean_up_haproxy: bool,
    pub api: SocketAddr,
    pub gossip: SocketAddr,
    http: reqwest::blocking::Client,
}

/// A blocking client: its connections come from a thread it starts now,
/// in the network namespace of the thread that builds it.
fn client() -> reqwest::blocking::Client {
    client_with(reqwest::header::HeaderMap::new())
}

fn client_with(headers: reqwest::header::HeaderMap) -> reqwest::blocking::Client {
    http_builder()
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .expect("http client")
}

impl Peer {
    /// This peer, with every request of this handle carrying `token`.
    pub fn with_token(mut self, token: &str) -> Peer {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {token}").parse().expect("a header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        self.http = client_with(headers);
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// GET `path`: status and JSON body (`Null` when not JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None, None)
    }

    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::PUT, path, Some(body), None)
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body), None)
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, None, None)
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().expect("the peer answers");
        let status = response.status().as_u16();
        let body = response.json().unwrap_or(Value::Null);
        (status, body)
    }

    /// One counter of the peer's `/metrics`, e.g.
    /// `aqueduct_connections_refused_total`.
    pub fn metric(&self, name: &str) -> u64 {
        counter(&self.metrics(), name)
    }

    /// The peer's view of one mesh field (`/mesh`).
    pub fn mesh(&self) -> Value {
        let (status, body) = self.get("/mesh");
        assert_eq!(status, 200, "GET /mesh: {body}");
        body
    }

    pub fn digest(&self) -> String {
        self.mesh()["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }

    /// SIGHUP: the peer reloads its certificate and key.
    pub fn hangup(&self) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid()).expect("pid fits"))
            .expect("non-zero pid");
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"))
            .expect("non-zero pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("waits") {
                return status;
            }
            assert!(Instant::now() < deadline, "peer did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the same peer again (same data and TLS dirs, new ports),
    /// after a SIGKILL if it still runs.
    pub fn restart(&mut self) {
        self.kill_9();
        // If the new run does not start, dropping this one still ends the
        // HAProxy the killed run left.
        let next = self.spec.start();
        self.clean_up_haproxy = false;
        *self = next;
    }

    /// Starts the same peer again on the same API address (what a browser
    /// or client pointed at it reconnects to); gossip gets a new port.
    pub fn restart_on_same_api(&mut self) {
        self.spec.api = self.api;
        self.restart();
    }

    /// Starts the same peer again on the same API and gossip addresses
    /// (what an operator's restart or upgrade does), running `binary`.
    pub fn restart_in_place(&mut self, binary: &Path) {
        self.spec.api = self.api;
        self.spec.gossip = self.gossip;
        self.spec.binary = binary.to_path_buf();
        self.restart();
    }

    /// Starts the same peer again on the same API and gossip addresses, as
    /// a peer with a fixed address in production comes back: the seeds
    /// others were given for it stay right.
    pub fn restart_on_same_addresses(&mut self) {
        let binary = self.spec.binary.clone();
        self.restart_in_place(&binary);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.spec.log).unwrap_or_default()
    }

    /// `GET /metrics` (Prometheus text; read with [`counter`]).
    pub fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("GET /metrics")
    }

    /// `GET /haproxy/config`: the configuration this peer last rendered
    /// (`None` if the request fails).
    pub fn haproxy_config(&self) -> Option<String> {
        self.http
            .get(self.url("/haproxy/config"))
            .send()
            .ok()?
            .text()
            .ok()
    }

    /// `GET /haproxy/status`.
    pub fn haproxy_status(&self) -> Value {
        let (status, body) = self.get("/haproxy/status");
        assert_eq!(status, 200, "GET /haproxy/status: {body}");
        body
    }

    /// One counter of `/haproxy/status`.
    pub fn haproxy_count(&self, field: &str) -> u64 {
        self.haproxy_status()[field]
            .as_u64()
            .unwrap_or_else(|| panic!("/haproxy/status has no {field}"))
    }

    /// Waits until this peer's HAProxy runs exactly what the peer last
    /// rendered, as the driver has confirmed it (a new worker answers
    /// before its reload is confirmed and counted).
    pub fn wait_until_applied(&self) {
        eventually("HAProxy to run the last rendered configuration", || {
            self.runs_what_it_rendered().then_some(())
        });
    }

    /// Whether this peer's HAProxy runs exactly what the peer last
    /// rendered, as the driver has confirmed it.
    pub fn runs_what_it_rendered(&self) -> bool {
        let Some(text) = self.haproxy_config() else {
            return false;
        };
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
        self.haproxy_status()["appliedHash"] == hash.as_str()
    }

    /// The address this peer's HAProxy listens on for `*:port`.
    pub fn through_haproxy(&self, port: u16) -> SocketAddr {
        let host = self.spec.haproxy.expect("a peer with HAProxy");
        SocketAddr::from((host, port))
    }

    /// The HAProxy processes (masters and workers, of this run or left by
    /// an earlier one) running on this peer's configuration file.
    pub fn haproxy_pids(&self) -> Vec<rustix::process::Pid> {
        let config = self.spec.data_dir.join("haproxy/haproxy.cfg");
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == config.as_os_str().as_encoded_bytes())
            })
            .filter_map(rustix::process::Pid::from_raw)
            .collect()
    }

    /// Waits until every HAProxy worker of this peer runs without root —
    /// no uid of `/proc/<pid>/status` is 0 — inside the peer's chroot
    /// (`/proc/<pid>/root`), and there is one. Waits, rather than looks
    /// once, because the workers of an HAProxy just taken over from an older
    /// release (which ran them as root) finish their connections first.
    pub fn assert_haproxy_workers_unprivileged(&self) {
        let chroot = self.spec.data_dir.join("haproxy/chroot");
        let mut last = Vec::new();
        let done = poll(DEADLINE, || {
            last = haproxy_workers(&self.haproxy_pids())
                .into_iter()
                .filter_map(worker_privileges)
                .collect();
            (!last.is_empty() && last.iter().all(|w| w.unprivileged_in(&chroot))).then_some(())
        });
        assert!(
            done.is_some(),
            "{}'s HAProxy workers are not all unprivileged in {}: {last:?}",
            self.spec.name,
            chroot.display()
        );
    }

    /// A peer killed with SIGKILL leaves its HAProxy serving (as in
    /// production); this ends it: every process running on this peer's
    /// HAProxy configuration file.
    pub fn kill_leftover_haproxy(&self) {
        for pid in self.haproxy_pids() {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }

    /// `/haproxy/config` with this peer's own settings (data dir, bind
    /// host) replaced by placeholders and whom its HAProxy runs as (the
    /// `user`, `group` and `chroot` of `global`, which the previous release
    /// did not write) left out: the same on every converged peer.
    pub fn neutral_haproxy_config(&self) -> String {
        self.try_neutral_haproxy_config()
            .expect("the rendered configuration")
    }

    /// [`Peer::neutral_haproxy_config`], `None` if the request fails.
    pub fn try_neutral_haproxy_config(&self) -> Option<String> {
        let text = self.haproxy_config()?;
        let host = self.spec.haproxy.expect("a peer with HAProxy").to_string();
        let mut in_global = false;
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| {
                if !line.starts_with(' ') && !line.is_empty() {
                    in_global = *line == "global";
                }
                let privilege = ["user ", "group ", "chroot "]
                    .iter()
                    .any(|keyword| line.trim_start().starts_with(keyword));
                !(in_global && privilege)
            })
            .collect();
        Some(
            kept.join("\n")
                .replace(&self.spec.data_dir.display().to_string(), "DATA_DIR")
                .replace(&host, "BIND_HOST"),
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill_9();
        if self.clean_up_haproxy {
            self.kill_leftover_haproxy();
        }
    }
}

/// The HAProxy workers among `pids` (masters and workers): those whose
/// parent is one of them, a master.
pub fn haproxy_workers(pids: &[rustix::process::Pid]) -> Vec<i32> {
    let masters: Vec<i32> = pids.iter().map(|pid| pid.as_raw_nonzero().get()).collect();
    masters
        .iter()
        .copied()
        .filter(|&pid| {
            proc_status(pid, "PPid")
                .and_then(|ppid| ppid.trim().parse::<i32>().ok())
                .is_some_and(|ppid| masters.contains(&ppid))
        })
        .collect()
}

/// How a process runs: its uids and gids (real, effective, saved,
/// filesystem) and its root directory.
#[derive(Debug)]
pub struct ProcessPrivileges {
    pub pid: i32,
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub root: PathBuf,
}

impl ProcessPrivileges {
    /// Whether no uid or gid is root's and the root directory is `chroot`.
    pub fn unprivileged_in(&self, chroot: &Path) -> bool {
        self.unprivileged() && self.root == chroot
    }

    /// Whether no uid or gid is root's.
    pub fn unprivileged(&self) -> bool {
        self.uids.len() == 4
            && self.gids.len() == 4
            && self.uids.iter().chain(&self.gids).all(|&id| id != 0)
    }
}

/// `pid`'s privileges from `/proc` (`None` if it has exited meanwhile).
pub fn worker_privileges(pid: i32) -> Option<ProcessPrivileges> {
    let ids = |field| -> Option<Vec<u32>> {
        proc_status(pid, field)?
            .split_whitespace()
            .map(|id| id.parse().ok())
            .collect()
    };
    Some(ProcessPrivileges {
        pid,
        uids: ids("Uid")?,
        gids: ids("Gid")?,
        root: std::fs::read_link(format!("/proc/{pid}/root")).ok()?,
    })
}

/// One field of `/proc/<pid>/status` (`Uid`, `PPid`, …).
fn proc_status(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_owned())
    })
}

/// The first line `child` prints on stdout (empty if it prints none within
/// [`DEADLINE`]); the rest of its output is read and discarded, so that the
/// child never blocks on, or dies of, a closed pipe.
pub fn first_stdout_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = sender.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    receiver.recv_timeout(DEADLINE).unwrap_or_default()
}

/// Polls `check` until it returns `Some`, or panics with `what` after
/// [`DEADLINE`].
pub fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    within(DEADLINE, what, check)
}

/// Polls `check` until it returns `Some`, or panics with `what` after
/// `limit`: for an outcome that must come before a slower mechanism could
/// produce it too (a graceful leave before failure detection).
pub fn within<T>(limit: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll(limit, check).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Polls `check` until it returns `Some`, or gives up (`None`) after
/// `limit`: for a test that reports what it saw last before failing.
pub fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until every peer lists every other as alive.
pub fn wait_for_mesh(peers: &[&Peer]) {
    eventually("every peer to see the others alive", || {
        peers
            .iter()
            .all(|p| {
                let (_, list) = p.get("/mesh/peers");
                let alive = list
                    .as_array()
                    .map(|a| a.iter().filter(|e| e["state"] == "alive").count())
                    .unwrap_or(0);
                alive + 1 >= peers.len()
            })
            .then_some(())
    });
}

/// Waits until all peers report the same digest.
pub fn wait_for_convergence(peers: &[&Peer]) {
    eventually("the peers to converge", || {
        let digests: Vec<String> = peers.iter().map(|p| p.digest()).collect();
        digests.windows(2).all(|w| w[0] == w[1]).then_some(())
    });
}

/// A backend body.
pub fn static_backend(port: u16) -> Value {
    serde_json::json!({"type": "static", "members": [{"host": "127.0.0.1", "port": port}]})
}

/// A loopback address no other peer of this test process uses
/// (127.77.x.y), so that every HAProxy can bind the same ports.
pub fn loopback_host() -> Ipv4Addr {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let hi = u8::try_from(n / 254).expect("fewer than 65,000 peers");
    let lo = u8::try_from(n % 254 + 1).expect("1 to 254");
    Ipv4Addr::new(127, 77, hi, lo)
}

/// An `aqueduct register` sidecar, killed if a test ends before stopping it.
pub struct Sidecar(Option<Child>);

impl Sidecar {
    /// Starts one for `instance` (`NAME@VERSION:HOST:PORT`) on `apis`, with
    /// `extra` options; returns it and its first line ("registered ...").
    pub fn start(apis: &[String], instance: &str, extra: &[&str]) -> (Sidecar, String) {
        Sidecar::start_with_env(apis, instance, extra, &[])
    }

    /// [`Sidecar::start`] with these environment variables set (and
    /// `AQUEDUCT_API_TOKEN*` unset unless given).
    pub fn start_with_env(
        apis: &[String],
        instance: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (Sidecar, String) {
        let mut command = Command::new(binary());
        command
            .env_remove("AQUEDUCT_API_TOKEN")
            .env_remove("AQUEDUCT_API_TOKEN_FILE")
            .envs(env.iter().copied())
            .arg("register");
        for api in apis {
            command.args(["--api", api]);
        }
        let mut child = command
            .arg(instance)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("aqueduct register starts");
        let line = first_stdout_line(&mut child);
        (Sidecar(Some(child)), line)
    }

    /// SIGTERM (it deregisters), then its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("running");
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"))
            .expect("non-zero pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        child.wait().expect("exits")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts a 200 (the body in the message otherwise).
pub fn ok(answer: (u16, Value)) {
    assert_eq!(answer.0, 200, "{}", answer.1);
}

/// The A/B story's set-up on `peer`: dynamic backend `live` following
/// myapp@1.0.0, behind frontend `frontend` on `*:port`.
pub fn serve_myapp_v1(peer: &Peer, frontend: &str, port: u16) {
    ok(peer.put(
        "/backends/live",
        serde_json::json!({"type": "dynamic", "name": "myapp", "version": "1.0.0"}),
    ));
    ok(peer.put(
        &format!("/frontends/{frontend}"),
        serde_json::json!({"bind": format!("*:{port}"), "backend": "live"}),
    ));
}

/// A write load: one client adding members `127.0.0.1:PORT` (a new port
/// each time, from [`MemberWrites::FIRST_PORT`]) to static backend
/// `backend`, on each API of `apis` in turn, one write every `pace`, until
/// stopped (at most [`MemberWrites::WRITES_MAX`] writes, 10 minutes). A
/// write answered 200 is acknowledged; any other outcome (a peer that is
/// restarting) is counted as unanswered.
pub struct MemberWrites {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acknowledged: std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
    thread: std::thread::JoinHandle<u64>,
}

impl MemberWrites {
    pub const FIRST_PORT: u16 = 20_000;
    pub const WRITES_MAX: u16 = 20_000;

    pub fn start(apis: Vec<SocketAddr>, backend: &str, pace: Duration) -> MemberWrites {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop_here, acknowledged_here) = (stop.clone(), acknowledged.clone());
        let backend = backend.to_owned();
        let thread = std::thread::spawn(move || {
            let http = client();
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut unanswered = 0;
            for i in 0..Self::WRITES_MAX {
                if stop_here.load(Ordering::SeqCst) || Instant::now() >= deadline {
                    break;
                }
                let port = Self::FIRST_PORT + i;
                let api = apis[usize::from(i) % apis.len()];
                let url = format!("http://{api}/backends/{backend}/members/127.0.0.1/{port}");
                match http.put(url).json(&serde_json::json!({})).send() {
                    Ok(response) if response.status().as_u16() == 200 => {
                        acknowledged_here.lock().expect("not poisoned").push(port);
                    }
                    _ => unanswered += 1,
                }
                std::thread::sleep(pace);
            }
            unanswered
        });
        MemberWrites {
            stop,
            acknowledged,
            thread,
        }
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.lock().expect("not poisoned").len()
    }

    /// Stops: the ports acknowledged, and how many writes were not.
    pub fn finish(self) -> (Vec<u16>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let unanswered = self.thread.join().expect("the writer");
        let acknowledged = self.acknowledged.lock().expect("not poisoned").clone();
        (acknowledged, unanswered)
    }
}

/// The member ports of static backend `key` on `peer`.
pub fn member_ports(peer: &Peer, key: &str) -> std::collections::BTreeSet<u16> {
    let (status, body) = peer.get(&format!("/backends/{key}"));
    assert_eq!(status, 200, "GET /backends/{key}: {body}");
    body["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| u16::try_from(m["port"].as_u64()?).ok())
        .collect()
}

/// The value of a counter in Prometheus text (a missing one fails the
/// test: a renamed metric must not read as zero).
pub fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .unwrap_or_else(|| panic!("no metric {name} in:\n{metrics}"))
}

/// Runs `aqueduct ctl` with `args` and only the `AQUEDUCT_API_*`
/// variables of `env` (none of the test's own): (success, stdout, stderr).
pub fn ctl(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(binary())
        .env_remove("AQUEDUCT_API_TOKEN")
        .env_remove("AQUEDUCT_API_TOKEN_FILE")
        .env_remove("AQUEDUCT_API_CA")
        .envs(env.iter().copied())
        .arg("ctl")
        .args(args)
        .output()
        .expect("ctl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A blocking HTTP client builder. reqwest is built with rustls but no
/// crypto provider of its own, so every client is handed the crate's TLS
/// configuration (one that trusts nothing: these clients speak plain HTTP).
///
/// A pooled connection is reused only within [`POOL_IDLE`]: the peer closes
/// a keep-alive connection idle for its header-read timeout (10 s), and a
/// request sent on it just as it closes fails (seen after a test's 10 s
/// stall).
pub fn http_builder() -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(aqueduct::client::tls_trusting_nothing())
        .pool_idle_timeout(POOL_IDLE)
}

/// How long a test client keeps an idle connection: well under the peer's
/// 10 s header-read timeout.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// `GET url` with a client of [`http_builder`].
pub fn http_get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::blocking::Response> {
    http_builder().build()?.get(url).send()
}

/// The `(event, data)` pairs of the event stream at `path` (`/events` or
/// `/haproxy/events`), as they arrive.
pub fn event_stream(peer: &Peer, path: &str) -> std::sync::mpsc::Receiver<(String, String)> {
    use std::io::BufRead;
    let response = http_builder()
        .timeout(None)
        .build()
        .expect("client")
        .get(peer.url(path))
        .send()
        .expect("the event stream opens");
    assert_eq!(response.status(), 200);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut event = String::new();
        // Ends when the test drops the receiver (the next send fails) or
        // the peer closes the stream.
        for line in std::io::BufReader::new(response).lines() {
            let Ok(line) = line else { return };
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ")
                && sender.send((event.clone(), data.to_owned())).is_err()
            {
                return;
            }
        }
    });
    receiver
}

/// Waits for an event named `name` whose data contains every one of `parts`.
pub fn expect_event(
    events: &std::sync::mpsc::Receiver<(String, String)>,
    name: &str,
    parts: &[&str],
) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok((event, data)) if event == name && parts.iter().all(|p| data.contains(p)) => return,
            Ok(_) => {}
            Err(e) => panic!("no {name} event with {parts:?}: {e}"),
        }
    }
}
