//! The HAProxy binary and the one master-worker process this peer runs.
//!
//! Owns running `haproxy`: validating a configuration text (`-c`), reading
//! its version, and the lifecycle of a master (`-W`, master CLI on `-S`):
//! start until a worker serves, reload through the master CLI until the
//! outcome is confirmed by `show proc`, observe its exit, and stop it. The
//! child's output is forwarded to `tracing` line by line. Must not decide
//! what to run: rendering the configuration and supervising (restarting
//! with backoff, choosing when to reload) are the driver's. Must not signal
//! any process but the master it spawned.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::socket::{self, SocketError};
use crate::files;

/// How long `haproxy -c` may take: it resolves host names and reads
/// certificates, which can be slow, but never this slow unless stuck.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new master may take until a worker serves.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reload may take until `show proc` tells its outcome.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a soft stop (SIGUSR1: finish the connections in flight) may
/// take before the master is told to stop hard.
pub const SOFT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a hard stop (SIGTERM) may take before the master is killed.
const HARD_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// The limit on one master CLI exchange.
const CLI_TIMEOUT: Duration = Duration::from_secs(5);
/// How often `show proc` is asked while waiting for a start or a reload.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How much of `haproxy -c` / `-v` output is kept (the rest is drained so
/// the child never blocks on a full pipe).
const OUTPUT_BYTES_MAX: usize = 1024 * 1024;
/// The longest line of the master's output kept (the rest is dropped).
const LINE_BYTES_MAX: usize = 4096;
/// How many of the master's latest output lines are kept for errors.
const TAIL_LINES: usize = 64;
/// How long the output of a master that exited is awaited for its error.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Why running HAProxy failed (as opposed to HAProxy rejecting a config).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The binary could not be started at all (missing, not executable).
    #[error("cannot run {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file HAProxy needs could not be written or removed.
    #[error("cannot prepare {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The run directory's path cannot be passed to `-S`, whose argument
    /// is comma-separated.
    #[error("the run directory {0} contains a comma, which `haproxy -S` cannot take")]
    RunDir(PathBuf),
    /// Reading HAProxy's output or waiting for it failed.
    #[error("cannot follow HAProxy: {0}")]
    Io(#[source] io::Error),
    /// A step did not finish in time.
    #[error("{what} did not finish within {limit:?}")]
    TimedOut {
        /// The step.
        what: &'static str,
        /// The limit that passed.
        limit: Duration,
    },
    /// The master exited while it was expected to run.
    #[error("HAProxy exited ({status}); its last output:\n{}", last_lines.join("\n"))]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// Its last output lines (at most 64).
        last_lines: Vec<String>,
    },
    /// `haproxy -v` printed nothing.
    #[error("`{0} -v` printed no version")]
    NoVersion(PathBuf),
    /// The master CLI failed.
    #[error("master CLI: {0}")]
    Cli(#[from] SocketError),
    /// The master CLI answered `show proc` with something unexpected.
    #[error("master CLI: {0}")]
    ShowProc(#[from] ShowProcError),
}

/// HAProxy refused a configuration; `message` is its own explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HAProxy rejected the configuration:\n{message}")]
pub struct Rejected {
    /// HAProxy's `[ALERT]` lines without their process id, with the
    /// checked file named `haproxy.cfg`. HAProxy quotes what it read in
    /// them (a file it was pointed at included): for the peer's log, never
    /// for an API client.
    pub message: String,
    /// The lines of the checked text the alerts point to (from 1), in the
    /// order they are named, without repeats.
    pub lines: Vec<usize>,
}

/// Why a configuration did not pass [`Binary::check`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// HAProxy ran and said no.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// HAProxy could not be run to say anything.
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// The `haproxy` executable.
#[derive(Debug, Clone)]
pub struct Binary {
    path: PathBuf,
}

impl Binary {
    /// The executable at `path` (a bare name is looked up in `PATH`).
    pub fn new(path: impl Into<PathBuf>) -> Binary {
        Binary { path: path.into() }
    }

    /// The executable's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command running this executable with none of the peer's
    /// environment but `PATH` (to find a bare name, also when the master
    /// re-executes itself). HAProxy expands `"${NAME}"` and `"$NAME"` in
    /// quoted configuration text, and `natives` lines come from API
    /// writers: with the peer's environment, a line such as `http-request
    /// return string "${AQUEDUCT_API_TOKEN}"` would serve the peer's
    /// secrets to anyone who can reach a frontend.
    ///
    /// It runs in `/`: HAProxy returns to its starting directory after
    /// reading its files, and refuses the configuration when it cannot
    /// (an unprivileged peer started from a directory it may not enter,
    /// such as root's home); every path it is given is absolute.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.path);
        command.current_dir("/");
        command.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command
    }

    /// Validates `config_text` with `haproxy -c`, from a uniquely named
    /// file in `scratch_dir` that is removed afterwards.
    ///
    /// `-q` is not passed: HAProxy 2.6 with `-q` prints no `[ALERT]` lines
    /// either, and those are the only explanation of a rejection.
    pub async fn check(&self, config_text: &str, scratch_dir: &Path) -> Result<(), CheckError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let file = ScratchFile(scratch_dir.join(format!(
            "check-{}-{}.cfg",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )));
        let (path, text) = (file.0.clone(), config_text.to_owned());
        // Private: the text may hold the stats password.
        blocking(move || files::create(&path)?.write_all(text.as_bytes()))
            .await
            .map_err(|source| ProcessError::File {
                path: file.0.clone(),
                source,
            })?;
        let output = self
            .run(
                &["-c".into(), "-f".into(), file.0.clone().into()],
                "haproxy -c",
                CHECK_TIMEOUT,
            )
            .await?;
        if output.status.success() {
            Ok(())
        } else {
            let message = rejection_message(&output.stderr, &file.0);
            Err(Rejected {
                lines: alert_lines(&message),
                message,
            }
            .into())
        }
    }

    /// The first line of `haproxy -v`, e.g. `HAProxy version 2.6.12-1
    /// 2023/03/20 - https://haproxy.org/`.
    pub async fn version(&self) -> Result<String, ProcessError> {
        let output = self.run(&["-v".into()], "haproxy -v", CLI_TIMEOUT).await?;
        output
            .stdout
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ProcessError::NoVersion(self.path.clone()))
    }

    /// Runs the binary to completion within `limit`, keeping a bounded
    /// amount of its output.
    async fn run(
        &self,
        args: &[OsString],
        what: &'static str,
        limit: Duration,
    ) -> Result<Output, ProcessError> {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A check that times out is dropped, and must not outlive it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                path: self.path.clone(),
                source,
            })?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let finished = async {
            let (stdout, stderr, status) =
                tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
            Ok::<_, io::Error>(Output {
                status: status?,
                stdout: stdout?,
                stderr: stderr?,
            })
        };
        match tokio::time::timeout(limit, finished).await {
            Ok(output) => output.map_err(ProcessError::Io),
            Err(_) => Err(ProcessError::TimedOut { what, limit }),
        }
    }
}

/// What a finished run of the binary printed.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// A temporary file removed when dropped, so that a check cancelled
/// mid-way (its future dropped) leaves nothing behind either.
struct ScratchFile(PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs blocking file-system work off the async threads (the runtime has
/// no `fs` feature; a configuration can run to megabytes).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

/// Reads `reader` to EOF, keeping the first [`OUTPUT_BYTES_MAX`] bytes.
async fn read_capped(reader: Option<impl AsyncRead + Unpin>) -> io::Result<String> {
    let Some(mut reader) = reader else {
        return Ok(String::new());
    };
    let mut kept = Vec::new();
    (&mut reader)
        .take(OUTPUT_BYTES_MAX as u64)
        .read_to_end(&mut kept)
        .await?;
    tokio::io::copy(&mut reader, &mut tokio::io::sink()).await?;
    Ok(String::from_utf8_lossy(&kept).into_owned())
}

/// HAProxy's reasons from `haproxy -c` stderr: its `[ALERT]` lines without
/// the tag and process id (which differ on every run), or all of stderr if
/// there are none; the scratch file's path, which is ours and not the
/// user's, reads `haproxy.cfg`.
fn rejection_message(stderr: &str, file: &Path) -> String {
    let stderr = stderr.replace(file.to_string_lossy().as_ref(), "haproxy.cfg");
    let alerts: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("[ALERT]"))
        .map(without_pid)
        .collect();
    if alerts.is_empty() {
        stderr.trim().to_owned()
    } else {
        alerts.join("\n")
    }
}

/// The line numbers a rejection message points to: HAProxy names a line
/// as `[haproxy.cfg:LINE]`.
fn alert_lines(message: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for rest in message.split("[haproxy.cfg:").skip(1) {
        if let Some(number) = rest.split(']').next().and_then(|n| n.parse().ok())
            && !lines.contains(&number)
        {
            lines.push(number);
        }
    }
    lines
}

/// `"    (1234) : config : …"` → `"config : …"`.
fn without_pid(rest: &str) -> &str {
    let rest = rest.trim_start();
    rest.strip_prefix('(')
        .and_then(|r| r.split_once(") : "))
        .map_or(rest, |(_, message)| message)
        .trim()
}

/// The master's latest output lines, numbered so that a reload can tell
/// which lines it caused.
#[derive(Default)]
struct Tail {
    next: u64,
    lines: VecDeque<(u64, String)>,
}

impl Tail {
    fn push(&mut self, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back((self.next, line));
        self.next += 1;
    }

    fn alerts_since(&self, first: u64) -> Vec<String> {
        self.lines
            .iter()
            .filter(|(n, line)| *n >= first && line.starts_with("[ALERT]"))
            .map(|(_, line)| without_pid(&line["[ALERT]".len()..]).to_owned())
            .collect()
    }
}

type SharedTail = Arc<Mutex<Tail>>;

fn lock(tail: &SharedTail) -> std::sync::MutexGuard<'_, Tail> {
    // The lock guards plain data; a panic while holding it cannot leave
    // the tail inconsistent, so a poisoned lock is still usable.
    tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Forwards each line of `reader` to `tracing` and into `tail`, until EOF.
fn forward(
    reader: Option<impl AsyncRead + Unpin + Send + 'static>,
    tail: SharedTail,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(reader) = reader else { return };
        let mut reader = BufReader::new(reader);
        while let Ok(Some(line)) = next_line(&mut reader).await {
            if line.starts_with("[ALERT]") || line.starts_with("[WARNING]") {
                tracing::warn!(target: "haproxy", "{line}");
            } else {
                tracing::debug!(target: "haproxy", "{line}");
            }
            lock(&tail).push(line);
        }
    })
}

/// The next line of `reader` without its line ending, cut to
/// [`LINE_BYTES_MAX`] bytes (the rest of a longer line is consumed and
/// dropped); `None` at EOF.
async fn next_line(reader: &mut (impl AsyncBufRead + Unpin)) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut read_any = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            break;
        }
        read_any = true;
        let (used, ended) = match chunk.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (chunk.len(), false),
        };
        let room = LINE_BYTES_MAX.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..used.min(room)]);
        reader.consume(used);
        if ended {
            break;
        }
    }
    Ok(read_any.then(|| String::from_utf8_lossy(&line).trim_end().to_owned()))
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A worker of the new configuration serves; older workers finish
    /// their connections and exit.
    Applied {
        /// From sending `reload` to `show proc` confirming it.
        took: Duration,
    },
    /// The new configuration did not start (HAProxy counted a failed
    /// reload, or no worker of the new generation exists); the previous
    /// worker keeps serving the previous configuration.
    Failed {
        /// From sending `reload` to `show proc` telling the failure.
        took: Duration,
        /// The `[ALERT]` lines HAProxy printed since the reload was sent,
        /// without tag and process id (its explanation of the failure).
        alerts: Vec<String>,
    },
}

/// One running HAProxy master (`-W`) and, through it, its workers.
///
/// Dropping it kills the master (its workers exit when their master is
/// gone); [`Master::stop`] stops it gracefully, [`Master::detach`] leaves
/// it running.
pub struct Master {
    child: Child,
    pid: u32,
    cli: PathBuf,
    tail: SharedTail,
    /// Left running when dropped ([`Master::detach`]).
    detached: bool,
}

impl Drop for Master {
    fn drop(&mut self) {
        if !self.detached {
            let _ = self.child.start_kill();
        }
    }
}

impl Master {
    /// Starts `haproxy -W -S <run_dir>/master.sock,mode,600 -f <config>`
    /// and returns once its master CLI lists a worker of this generation.
    pub async fn start(
        binary: &Binary,
        config: &Path,
        run_dir: &Path,
    ) -> Result<Master, ProcessError> {
        Master::launch(binary, config, run_dir, None).await
    }

    /// [`Master::start`], taking the listening sockets over from the
    /// HAProxy that answers on `old_socket` (its stats socket, with
    /// `expose-fd listeners`: `haproxy -x`). The new HAProxy then accepts
    /// on the very sockets the old one did, so a connection waiting in
    /// their accept queues when the old one stops is not reset, as it can
    /// be when both merely bind with `SO_REUSEPORT`. If the old one does
    /// not hand them over, HAProxy binds its own (master-worker mode goes
    /// on past that failure).
    pub async fn take_over(
        binary: &Binary,
        config: &Path,
        run_dir: &Path,
        old_socket: &Path,
    ) -> Result<Master, ProcessError> {
        Master::launch(binary, config, run_dir, Some(old_socket)).await
    }

    async fn launch(
        binary: &Binary,
        config: &Path,
        run_dir: &Path,
        old_socket: Option<&Path>,
    ) -> Result<Master, ProcessError> {
        let cli = run_dir.join("master.sock");
        let cli_text = cli.to_str().filter(|p| !p.contains(','));
        let Some(cli_text) = cli_text else {
            return Err(ProcessError::RunDir(run_dir.to_path_buf()));
        };
        // A socket left by a master that died would answer nothing, and
        // HAProxy would refuse to bind over it.
        let stale = cli.clone();
        blocking(move || match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(|source| ProcessError::File {
            path: cli.clone(),
            source,
        })?;
        let mut command = binary.command();
        command
            .arg("-W")
            .arg("-S")
            .arg(format!("{cli_text},mode,600"))
            .arg("-f")
            .arg(config);
        if let Some(old_socket) = old_socket {
            command.arg("-x").arg(old_socket);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A process group of its own: Ctrl-C in the peer's terminal
            // (SIGINT to the whole foreground group) stops the peer, which
            // then keeps or stops HAProxy as configured, not HAProxy itself.
            .process_group(0)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                path: binary.path().to_path_buf(),
                source,
            })?;
        let pid = child.id().ok_or_else(|| {
            ProcessError::Io(io::Error::other("HAProxy exited before its pid was read"))
        })?;
        let tail = SharedTail::default();
        let forwarders = [
            forward(child.stdout.take(), tail.clone()),
            forward(child.stderr.take(), tail.clone()),
        ];
        // A master from here on: a start abandoned half-way (its task
        // dropped) kills it, as dropping any master does.
        let mut master = Master {
            child,
            pid,
            cli,
            tail,
            detached: false,
        };
        let ready = poll_show_proc(&master.cli, START_TIMEOUT, "HAProxy start", |proc| {
            proc.current_worker().is_some()
        });
        tokio::select! {
            status = master.child.wait() => {
                let status = status.map_err(ProcessError::Io)?;
                // The pipes close when the master exits (no worker was
                // forked to inherit them); the bound covers one that was.
                for forwarder in forwarders {
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, forwarder).await;
                }
                let last_lines = lock(&master.tail).lines.iter().map(|(_, l)| l.clone()).collect();
                Err(ProcessError::Exited { status, last_lines })
            }
            ready = ready => match ready {
                Ok(_) => Ok(master),
                Err(error) => {
                    let _ = master.child.kill().await;
                    Err(error)
                }
            },
        }
    }

    /// The master's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The master's `show proc`.
    pub async fn show_proc(&self) -> Result<ShowProc, ProcessError> {
        show_proc(&self.cli).await
    }

    /// Reloads the master (it re-executes itself and re-reads the
    /// configuration file it was started with) and reports whether the new
    /// configuration serves.
    ///
    /// The outcome is read from `show proc`: the master's reload counter
    /// says the reload has happened; then a worker with 0 reloads (one
    /// forked by this generation) that came with no new failed reload
    /// means it was applied.
    pub async fn reload(&mut self) -> Result<ReloadOutcome, ProcessError> {
        let before = self.show_proc().await?;
        let first_line = lock(&self.tail).next;
        let started = Instant::now();
        // The master closes the connection as it re-executes, so the
        // reply may be cut; only a refused connection means the command
        // was not delivered. `show proc` tells what happened.
        if let Err(error @ SocketError::Connect { .. }) =
            socket::send(&self.cli, "reload", CLI_TIMEOUT).await
        {
            return Err(error.into());
        }
        let reloaded = poll_show_proc(&self.cli, RELOAD_TIMEOUT, "HAProxy reload", |proc| {
            proc.reloads > before.reloads
        });
        let after = tokio::select! {
            status = self.child.wait() => {
                let status = status.map_err(ProcessError::Io)?;
                let last_lines = lock(&self.tail).lines.iter().map(|(_, l)| l.clone()).collect();
                return Err(ProcessError::Exited { status, last_lines });
            }
            after = reloaded => after?,
        };
        let took = started.elapsed();
        if after.current_worker().is_some() && after.failed <= before.failed {
            return Ok(ReloadOutcome::Applied { took });
        }
        // HAProxy prints its alerts before the master CLI comes back, but
        // the forwarding task may not have read them yet.
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let alerts = loop {
            let alerts = lock(&self.tail).alerts_since(first_line);
            if !alerts.is_empty() || Instant::now() >= deadline {
                break alerts;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        Ok(ReloadOutcome::Failed { took, alerts })
    }

    /// Waits until the master exits, however that happens; cancel-safe, so
    /// a supervisor can `select!` on it.
    pub async fn exited(&mut self) -> Result<ExitStatus, ProcessError> {
        self.child.wait().await.map_err(ProcessError::Io)
    }

    /// Lets the master outlive this handle and this process: it keeps
    /// serving its configuration until a new master takes its listeners
    /// over (a restart of the peer) or someone stops it.
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Stops the master: soft (SIGUSR1: workers finish their connections)
    /// for up to [`SOFT_STOP_TIMEOUT`], then hard (SIGTERM), then killed.
    pub async fn stop(mut self) {
        for (signal, limit) in [
            (rustix::process::Signal::USR1, SOFT_STOP_TIMEOUT),
            (rustix::process::Signal::TERM, HARD_STOP_TIMEOUT),
        ] {
            // No id means the master has been reaped: nothing to signal,
            // and its pid may already belong to another process.
            let Some(pid) = self
                .child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw)
            else {
                return;
            };
            let _ = rustix::process::kill_process(pid, signal);
            if tokio::time::timeout(limit, self.child.wait()).await.is_ok() {
                return;
            }
            tracing::warn!(
                pid = self.pid,
                ?signal,
                ?limit,
                "HAProxy did not stop in time"
            );
        }
        let _ = self.child.kill().await;
    }
}

/// Asks `show proc` until `done` holds or `limit` passes. Failed exchanges
/// are retried: the master CLI is unreachable while the master starts and
/// while it re-executes for a reload.
async fn poll_show_proc(
    cli: &Path,
    limit: Duration,
    what: &'static str,
    done: impl Fn(&ShowProc) -> bool,
) -> Result<ShowProc, ProcessError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(proc) = show_proc(cli).await
            && done(&proc)
        {
            return Ok(proc);
        }
        if Instant::now() >= deadline {
            return Err(ProcessError::TimedOut { what, limit });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn show_proc(cli: &Path) -> Result<ShowProc, ProcessError> {
    let reply = socket::send(cli, "show proc", CLI_TIMEOUT).await?;
    Ok(parse_show_proc(&reply)?)
}

/// The master CLI's `show proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowProc {
    /// How many times the master has reloaded, failed reloads included.
    pub reloads: u32,
    /// Failed reloads since the last successful one (HAProxy resets it to
    /// 0 when a reload succeeds).
    pub failed: u32,
    /// Current and old workers (old ones finish their connections).
    pub workers: Vec<Worker>,
}

impl ShowProc {
    /// The worker forked by the master's current generation, if any.
    pub fn current_worker(&self) -> Option<&Worker> {
        self.workers.iter().find(|w| w.reloads == 0)
    }
}

/// One worker in `show proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// Its process id.
    pub pid: u32,
    /// How many reloads it has lived through: 0 for the current worker.
    pub reloads: u32,
}

/// Why a `show proc` reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShowProcError {
    /// No `master` line.
    #[error("`show proc` lists no master")]
    NoMaster,
    /// A master or worker line without the expected columns.
    #[error("unexpected `show proc` line: {0:?}")]
    Malformed(String),
}

/// Parses `show proc`. Lines of other process types (`program` sections)
/// and the section comments are ignored.
pub fn parse_show_proc(text: &str) -> Result<ShowProc, ShowProcError> {
    let mut master = None;
    let mut workers = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let malformed = || ShowProcError::Malformed(line.to_owned());
        let number = |i: usize| -> Result<u32, ShowProcError> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(malformed)
        };
        match fields.get(1) {
            // `<pid> master <reloads> [failed: <n>] <uptime> <version>`
            Some(&"master") => {
                let failed = fields
                    .get(4)
                    .and_then(|f| f.strip_suffix(']'))
                    .filter(|_| fields.get(3) == Some(&"[failed:"))
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(malformed)?;
                master = Some((number(2)?, failed));
            }
            // `<pid> worker <reloads> <uptime> <version>`
            Some(&"worker") => workers.push(Worker {
                pid: number(0)?,
                reloads: number(2)?,
            }),
            _ => {}
        }
    }
    let (reloads, failed) = master.ok_or(ShowProcError::NoMaster)?;
    Ok(ShowProc {
        reloads,
        failed,
        workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HAProxy 2.6.12 right after start.
    const STARTED: &str = "\
#<PID>          <type>          <reloads>       <uptime>        <version>
14494           master          0 [failed: 0]   0d00h00m01s     2.6.12-1+deb12u4
# workers
14497           worker          0               0d00h00m01s     2.6.12-1+deb12u4
# programs

";

    /// HAProxy 2.6.12 after a successful reload while the previous worker
    /// still held a connection (2.6 lists it under `# old workers`).
    const RELOADED_WITH_OLD_WORKER: &str = "\
#<PID>          <type>          <reloads>       <uptime>        <version>
14494           master          3 [failed: 0]   0d00h00m27s     2.6.12-1+deb12u4
# workers
14812           worker          0               0d00h00m02s     2.6.12-1+deb12u4
# old workers
14524           worker          2               0d00h00m24s     2.6.12-1+deb12u4
# programs

";

    /// HAProxy 2.6.12 after a reload whose configuration could not bind:
    /// no worker of the new generation, the old one still serving.
    const FAILED_RELOAD: &str = "\
#<PID>          <type>          <reloads>       <uptime>        <version>
14494           master          2 [failed: 1]   0d00h00m09s     2.6.12-1+deb12u4
# workers
14524           worker          1               0d00h00m06s     2.6.12-1+deb12u4
# programs

";

    #[test]
    fn show_proc_after_start_lists_the_master_and_its_current_worker() {
        let proc = parse_show_proc(STARTED).expect("parses");
        assert_eq!(
            proc,
            ShowProc {
                reloads: 0,
                failed: 0,
                workers: vec![Worker {
                    pid: 14497,
                    reloads: 0,
                }],
            }
        );
        assert_eq!(proc.current_worker().map(|w| w.pid), Some(14497));
    }

    #[test]
    fn show_proc_lists_old_workers_with_their_reload_count() {
        let proc = parse_show_proc(RELOADED_WITH_OLD_WORKER).expect("parses");
        assert_eq!(proc.reloads, 3);
        let workers: Vec<_> = proc.workers.iter().map(|w| (w.pid, w.reloads)).collect();
        assert_eq!(workers, [(14812, 0), (14524, 2)]);
        assert_eq!(proc.current_worker().map(|w| w.pid), Some(14812));
    }

    #[test]
    fn show_proc_after_a_failed_reload_has_no_current_worker() {
        let proc = parse_show_proc(FAILED_RELOAD).expect("parses");
        assert_eq!((proc.reloads, proc.failed), (2, 1));
        assert_eq!(proc.current_worker(), None);
    }

    #[test]
    fn show_proc_ignores_program_lines() {
        let text = STARTED.replace(
            "# programs\n",
            "# programs\n14600           dataplane       0               0d00h00m01s     -\n",
        );
        assert_eq!(parse_show_proc(&text).expect("parses").workers.len(), 1);
    }

    #[test]
    fn show_proc_without_a_master_is_an_error() {
        assert_eq!(parse_show_proc(""), Err(ShowProcError::NoMaster));
        assert_eq!(
            parse_show_proc("Unknown command.\n"),
            Err(ShowProcError::NoMaster)
        );
    }

    #[test]
    fn a_malformed_master_line_is_an_error() {
        let text = "14494 master 0 0d00h00m01s 2.6.12\n";
        assert!(matches!(
            parse_show_proc(text),
            Err(ShowProcError::Malformed(_))
        ));
    }

    #[test]
    fn a_rejection_message_is_the_alerts_without_pid_or_scratch_path() {
        let file = Path::new("/tmp/scratch/check-77-3.cfg");
        let stderr = "\
[NOTICE]   (15453) : haproxy version is 2.6.12-1+deb12u4
[NOTICE]   (15453) : path to executable is /usr/sbin/haproxy
[ALERT]    (15453) : config : parsing [/tmp/scratch/check-77-3.cfg:2] : unknown keyword 'bogus-keyword' in 'backend' section
[ALERT]    (15453) : config : Error(s) found in configuration file : /tmp/scratch/check-77-3.cfg
";
        assert_eq!(
            rejection_message(stderr, file),
            "config : parsing [haproxy.cfg:2] : unknown keyword 'bogus-keyword' in 'backend' section\n\
             config : Error(s) found in configuration file : haproxy.cfg"
        );
    }

    #[test]
    fn the_lines_a_rejection_points_to_are_read_once_each_in_order() {
        let message = "config : parsing [haproxy.cfg:12] : a\n\
                       config : parsing [haproxy.cfg:3] : b\n\
                       config : parsing [haproxy.cfg:12] : c\n\
                       config : parsing [haproxy.cfg:x] : d\n\
                       config : Error(s) found in configuration file : haproxy.cfg";
        assert_eq!(alert_lines(message), [12, 3]);
    }

    #[test]
    fn a_rejection_without_alerts_is_all_of_stderr() {
        let file = Path::new("/tmp/x.cfg");
        assert_eq!(
            rejection_message("\n  something odd in /tmp/x.cfg \n", file),
            "something odd in haproxy.cfg"
        );
    }

    #[tokio::test]
    async fn an_overlong_output_line_is_cut_and_the_next_line_kept() {
        let long = "x".repeat(LINE_BYTES_MAX * 3);
        let text = format!("{long}\nnext\r\nlast");
        let mut reader = BufReader::with_capacity(64, text.as_bytes());
        let first = next_line(&mut reader).await.expect("reads");
        assert_eq!(first.map(|l| l.len()), Some(LINE_BYTES_MAX));
        assert_eq!(
            next_line(&mut reader).await.expect("reads").as_deref(),
            Some("next")
        );
        assert_eq!(
            next_line(&mut reader).await.expect("reads").as_deref(),
            Some("last")
        );
        assert_eq!(next_line(&mut reader).await.expect("reads"), None);
    }
}
