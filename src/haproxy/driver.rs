//! The driver task: keeps this peer's HAProxy serving the converged
//! configuration, and reports what it did.
//!
//! Owns the apply loop — render on every change (and when a registration's
//! lease runs out), plan, then runtime-API commands for member changes or
//! check → write → reload for structure changes — plus HAProxy's
//! supervision (restart with backoff), stats polling and the activity
//! stream. It holds no replication logic (it reads views through the peer's
//! [`Handle`]) and no rendering logic (that is [`super::render`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::privileges::{self, PrivilegeError};
use super::process::{Binary, CheckError, Master, ProcessError, ReloadOutcome};
use super::render::{
    self, LeftOut, Outcome, Plan, Rendered, RuntimeCommand, Settings, StatsListener,
};
use super::socket;
use super::stats::{StatKind, StatRow, parse_show_stat};
use crate::activity::{ActivityKind, ActivityLog};
use crate::config::{HaproxyOptions, OnExit};
use crate::crdt::model::{
    CfgWord, ConfigView, InvalidValue, LiveRegistrations, Name, NativesPolicy, RegistrationKey,
    Section,
};
use crate::files;
use crate::gossip::ApplyReport;
use crate::peer::{FirstSync, Handle, sleep_until, wall_clock_ms};

/// Bound on one runtime-API or stats exchange.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
/// First and largest pause before restarting an HAProxy that died.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// When a structure whose reload failed (not one `haproxy -c` refused) is
/// tried again.
const RELOAD_RETRY: Duration = Duration::from_secs(30);
/// Left-out `natives` lines remembered as logged; beyond this, the memory
/// starts again (and each is logged once more).
const LOGGED_LEFT_OUT_MAX: usize = 4096;
/// Deletions waiting for connections to finish; beyond this, a reload.
const PENDING_DELETIONS_MAX: usize = 10_000;
/// An HAProxy that stayed up this long resets the restart backoff (one that
/// cannot even start keeps backing off: its start fails before this).
pub const STABLE_AFTER: Duration = Duration::from_secs(1);

/// How the driver is set up.
pub struct DriverConfig {
    /// The HAProxy to run, or `None` to only render (`--haproxy off`).
    pub binary: Option<Binary>,
    /// Where HAProxy's files live (configuration, sockets, server state).
    pub dir: PathBuf,
    /// Peer-local HAProxy settings.
    pub options: HaproxyOptions,
}

/// Why the driver cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The HAProxy directory cannot be created.
    #[error("cannot create HAProxy directory {dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file an older release left cannot be made private.
    #[error("cannot make {path} private: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// HAProxy cannot be given an unprivileged user.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// A path cannot appear in `haproxy.cfg`.
    #[error("HAProxy directory {dir} cannot be named in haproxy.cfg: {source}")]
    Path {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: InvalidValue,
    },
}

/// What the driver has done, as the API shows it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyStatus {
    /// Whether this peer runs an HAProxy (false: render only).
    pub managed: bool,
    /// The HAProxy version, when managed.
    pub version: Option<String>,
    /// Whether the HAProxy master is running.
    pub running: bool,
    /// Its process id.
    pub pid: Option<u32>,
    /// xxh3 of the configuration HAProxy runs, as `/haproxy/config` shows
    /// it (secrets redacted; hex).
    pub applied_hash: Option<String>,
    /// Wall-clock ms of the last change applied (either way).
    pub applied_at_ms: Option<u64>,
    /// Servers in the applied configuration.
    pub servers: usize,
    /// Reloads done.
    pub reloads: u64,
    /// Reloads HAProxy failed (the previous configuration kept serving).
    pub reload_failures: u64,
    /// Duration of the last reload, ms.
    pub last_reload_ms: Option<f64>,
    /// Member changes applied through the runtime API (no reload).
    pub runtime_changes: u64,
    /// Runtime commands HAProxy refused (each led to a reload).
    pub runtime_failures: u64,
    /// Configurations `haproxy -c` refused (never activated).
    pub rejected: u64,
    /// Times HAProxy was started again after it died.
    pub restarts: u64,
    /// Removed servers waiting for their connections to finish.
    pub pending_deletions: usize,
    /// The last error (HAProxy's own words), until the next success.
    pub last_error: Option<String>,
}

impl ApplyStatus {
    /// What this peer's reports tell other peers about its HAProxy.
    pub fn report(&self) -> ApplyReport {
        ApplyReport {
            managed: self.managed,
            running: self.running,
            applied_hash: self.applied_hash.clone(),
            reloads: self.reloads,
            reload_failures: self.reload_failures,
            runtime_changes: self.runtime_changes,
            rejected: self.rejected,
            restarts: self.restarts,
            last_error: self.last_error.clone(),
        }
        .bounded()
    }
}

/// The latest stats.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    /// Wall-clock ms they were read.
    pub at_ms: u64,
    /// One row per frontend, backend and server.
    pub rows: Vec<StatRow>,
}

/// The API's side of the driver: status, the rendered text, stats, the
/// activity stream, and the write-time check.
#[derive(Clone)]
pub struct Driver {
    status: watch::Receiver<ApplyStatus>,
    rendered: watch::Receiver<Option<Arc<str>>>,
    stats: watch::Receiver<Arc<StatsSnapshot>>,
    checker: Arc<Checker>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("managed", &self.checker.binary.is_some())
            .finish_non_exhaustive()
    }
}

/// What the write-time check needs.
struct Checker {
    binary: Option<Binary>,
    settings: Settings,
    scratch: PathBuf,
    /// Bounds the `haproxy -c` processes writes can start at once.
    permits: tokio::sync::Semaphore,
}

/// `haproxy -c` processes the API may run at once; further writes wait.
const CHECKS_IN_FLIGHT_MAX: usize = 4;

impl Driver {
    /// The apply status.
    pub fn status(&self) -> ApplyStatus {
        self.status.borrow().clone()
    }

    /// The configuration this peer last rendered.
    pub fn rendered(&self) -> Option<Arc<str>> {
        self.rendered.borrow().clone()
    }

    /// The latest stats.
    pub fn stats(&self) -> Arc<StatsSnapshot> {
        self.stats.borrow().clone()
    }

    /// Stats as they change.
    pub fn watch_stats(&self) -> watch::Receiver<Arc<StatsSnapshot>> {
        self.stats.clone()
    }

    /// Which `natives` lines this peer takes (`--natives`).
    pub fn natives(&self) -> NativesPolicy {
        self.checker.settings.natives
    }

    /// Checks that `view` — the objects a write touches, as they would be
    /// after it, with the backends they name — renders to a configuration
    /// HAProxy loads. `touched` is the section the write changes: a refusal
    /// quotes only its lines. HAProxy's own words go to the log, never into
    /// the error: they quote whatever HAProxy read. Render-only peers
    /// accept everything (nothing to ask).
    pub async fn check(
        &self,
        view: &ConfigView,
        touched: (Section, &Name),
    ) -> Result<(), WriteCheckError> {
        let Some(binary) = &self.checker.binary else {
            return Ok(());
        };
        let text = render::render(view, &self.checker.settings, wall_clock_ms()).text();
        let _permit = self
            .checker
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let (section, key) = touched;
        match binary.check(&text, &self.checker.scratch).await {
            Ok(()) => Ok(()),
            Err(CheckError::Rejected(rejected)) => {
                tracing::warn!(
                    "HAProxy refused the configuration a write to {section} {key} would produce: {}",
                    rejected.message
                );
                Err(WriteCheckError::Refused {
                    section: format!("{section} {key}"),
                    lines: render::lines_in_section(&text, section, key, &rejected.lines),
                })
            }
            Err(CheckError::Process(e)) => {
                tracing::warn!("checking a write to {section} {key} with HAProxy: {e}");
                Err(WriteCheckError::Unavailable)
            }
        }
    }
}

/// What an API client is told when HAProxy refuses what its write would
/// produce.
pub const HAPROXY_REFUSED: &str = "HAProxy refused the configuration this write would produce; the peer's log has HAProxy's message";

/// Why a write's configuration did not pass [`Driver::check`], in words
/// an API client may read: none of HAProxy's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteCheckError {
    /// HAProxy refused the configuration.
    #[error("{HAPROXY_REFUSED}")]
    Refused {
        /// The section written (`backend web`).
        section: String,
        /// The lines of that section HAProxy pointed to, as rendered.
        lines: Vec<String>,
    },
    /// HAProxy could not be run to check.
    #[error("HAProxy could not be run to check this write; the peer's log says why")]
    Unavailable,
}

/// Files of one HAProxy under the driver's directory.
struct Files {
    config: PathBuf,
    server_state: PathBuf,
    admin_socket: PathBuf,
    dir: PathBuf,
}

/// Starts the driver; it runs until `shutdown` resolves, then leaves
/// HAProxy serving or stops it, as [`HaproxyOptions::on_exit`] says.
pub fn spawn(
    config: DriverConfig,
    peer: Handle,
    changes: watch::Receiver<u64>,
    first_sync: watch::Receiver<FirstSync>,
    activity: ActivityLog,
    shutdown: oneshot::Receiver<()>,
) -> Result<(Driver, tokio::task::JoinHandle<()>), DriverError> {
    let dir = std::path::absolute(&config.dir).unwrap_or_else(|_| config.dir.clone());
    files::private_dir(&dir).map_err(|source| DriverError::Dir {
        dir: dir.clone(),
        source,
    })?;
    let files = Files {
        config: dir.join("haproxy.cfg"),
        server_state: dir.join("server-state"),
        admin_socket: dir.join("admin.sock"),
        dir: dir.clone(),
    };
    // Rewritten private at the first apply; until then, not readable by
    // others either if an older release left them so.
    for path in [&files.config, &files.server_state] {
        crate::files::private_file(path).map_err(|source| DriverError::File {
            path: path.clone(),
            source,
        })?;
    }
    let word = |path: &Path| {
        CfgWord::new(&path.to_string_lossy()).map_err(|source| DriverError::Path {
            dir: dir.clone(),
            source,
        })
    };
    // A render-only peer writes a file for someone else to run: whoever
    // runs it decides whom as.
    let privileges = match &config.binary {
        Some(_) => privileges::resolve(
            config.options.user.as_ref(),
            config.options.group.as_ref(),
            &dir,
        )?,
        None => None,
    };
    let mut settings = settings_of(
        &config.options,
        word(&files.admin_socket)?,
        word(&files.server_state)?,
    );
    if settings.natives == NativesPolicy::Unrestricted {
        tracing::warn!(
            "--natives unrestricted: API writers may send any natives line that opens no \
             section, including lines that make HAProxy read files, open sockets or run programs"
        );
    }
    log_privileges(privileges.as_ref(), config.binary.is_some(), &settings);
    settings.privileges = privileges;
    let (status_tx, status) = watch::channel(ApplyStatus {
        managed: config.binary.is_some(),
        ..ApplyStatus::default()
    });
    tokio::spawn(report_status(status.clone(), peer.clone()));
    let (rendered_tx, rendered) = watch::channel(None);
    let (stats_tx, stats) = watch::channel(Arc::new(StatsSnapshot::default()));
    let driver = Driver {
        status,
        rendered,
        stats,
        checker: Arc::new(Checker {
            binary: config.binary.clone(),
            settings: settings.clone(),
            scratch: dir.clone(),
            permits: tokio::sync::Semaphore::new(CHECKS_IN_FLIGHT_MAX),
        }),
    };
    let task = DriverTask {
        binary: config.binary,
        stats_interval: config.options.stats_interval,
        on_exit: config.options.on_exit,
        settings,
        files,
        peer,
        master: None,
        started_at: None,
        restart_at: None,
        restart_backoff: RESTART_BACKOFF.0,
        active: None,
        quarantine: None,
        died_reloading: None,
        next_expiry_ms: None,
        pending_deletions: Vec::new(),
        server_status: BTreeMap::new(),
        status: status_tx,
        rendered: rendered_tx,
        stats: stats_tx,
        activity,
        live_registrations: None,
        logged_left_out: BTreeSet::new(),
    };
    Ok((
        driver,
        tokio::spawn(task.run(changes, first_sync, shutdown)),
    ))
}

/// Hands every change of the apply status to the peer task, for its
/// reports to the mesh, until either side is gone.
async fn report_status(mut status: watch::Receiver<ApplyStatus>, peer: Handle) {
    loop {
        let report = status.borrow_and_update().report();
        if peer.report_haproxy(report).await.is_err() || status.changed().await.is_err() {
            return;
        }
    }
}

/// Says whom HAProxy's workers run as, and warns of a log target they
/// cannot reach from their chroot.
fn log_privileges(privileges: Option<&render::Privileges>, managed: bool, settings: &Settings) {
    match privileges {
        Some(p) => {
            tracing::info!(user = %p.user, group = %p.group, chroot = %p.chroot, "HAProxy's workers drop root");
            if let Some(log) = settings
                .log
                .as_ref()
                .filter(|log| log.as_str().starts_with('/'))
            {
                tracing::warn!(
                    %log,
                    "HAProxy's workers are chrooted: a log socket named by path is out of their \
                     reach; log to an address instead"
                );
            }
        }
        None if managed => {
            tracing::info!(
                "HAProxy runs as this peer's own user (not root: no user, group or chroot)"
            );
        }
        None => {}
    }
}

/// The renderer's settings from the peer's options and files.
fn settings_of(options: &HaproxyOptions, admin_socket: CfgWord, server_state: CfgWord) -> Settings {
    let mut settings = Settings::new(admin_socket, server_state);
    let defaults = settings.clone();
    settings.maxconn = options.maxconn.unwrap_or(defaults.maxconn);
    settings.timeout_connect_ms = options
        .timeout_connect_ms
        .unwrap_or(defaults.timeout_connect_ms);
    settings.timeout_client_ms = options
        .timeout_client_ms
        .unwrap_or(defaults.timeout_client_ms);
    settings.timeout_server_ms = options
        .timeout_server_ms
        .unwrap_or(defaults.timeout_server_ms);
    settings.hard_stop_after_ms = options
        .hard_stop_after_ms
        .unwrap_or(defaults.hard_stop_after_ms);
    settings.log = options.log.clone();
    settings.stats = options
        .stats
        .clone()
        .map(|(bind, user, password)| StatsListener {
            bind,
            user,
            password,
        });
    settings.bind_host = options.bind_host;
    settings.natives = options.natives;
    settings
}

/// A structure (by [`Rendered::structure_key`]) that HAProxy refused
/// (`retry_at` none: until the structure changes) or failed to run.
struct Quarantine {
    key: u64,
    retry_at: Option<Instant>,
}

struct DriverTask {
    binary: Option<Binary>,
    stats_interval: Duration,
    on_exit: OnExit,
    settings: Settings,
    files: Files,
    peer: Handle,
    master: Option<Master>,
    started_at: Option<Instant>,
    /// When to try starting HAProxy again (it died, or would not start).
    restart_at: Option<Instant>,
    restart_backoff: Duration,
    /// What HAProxy runs (or, render-only, what the file holds).
    active: Option<Rendered>,
    /// A structure HAProxy could not take, held back.
    quarantine: Option<Quarantine>,
    /// The structure HAProxy was reloading when it last died: a second
    /// death on the same one holds it back.
    died_reloading: Option<u64>,
    /// When a live registration next expires (wall-clock ms).
    next_expiry_ms: Option<u64>,
    /// `del server` commands refused because connections remain.
    pending_deletions: Vec<RuntimeCommand>,
    /// Last seen status of each server, for member up/down activity.
    server_status: BTreeMap<(String, String), String>,
    status: watch::Sender<ApplyStatus>,
    rendered: watch::Sender<Option<Arc<str>>>,
    stats: watch::Sender<Arc<StatsSnapshot>>,
    activity: ActivityLog,
    /// The registrations live at the last render (`None` before the
    /// first), for registration activity.
    live_registrations: Option<BTreeSet<RegistrationKey>>,
    /// The left-out `natives` lines already logged.
    logged_left_out: BTreeSet<LeftOut>,
}

impl DriverTask {
    /// Applies every change of the document (once `first_sync` allows:
    /// until then HAProxy is neither started nor taken over, so one that
    /// serves keeps serving what it has) and supervises HAProxy, until
    /// `shutdown`.
    async fn run(
        mut self,
        mut changes: watch::Receiver<u64>,
        mut first_sync: watch::Receiver<FirstSync>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        if let Some(binary) = &self.binary {
            let version = binary.version().await.ok();
            self.status.send_modify(|s| s.version = version);
        }
        let mut stats_tick = tokio::time::interval(self.stats_interval);
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = true;
        loop {
            if dirty && first_sync.borrow_and_update().allows_apply() {
                dirty = false;
                changes.borrow_and_update();
                self.apply().await;
            }
            let expiry = self.next_expiry_ms.map(|at| {
                Instant::now() + Duration::from_millis(at.saturating_sub(wall_clock_ms()))
            });
            tokio::select! {
                changed = changes.changed() => match changed {
                    Ok(()) => dirty = true,
                    Err(_) => break,
                },
                Ok(()) = first_sync.changed() => {}
                () = sleep_until(expiry) => dirty = true,
                () = sleep_until(self.quarantine.as_ref().and_then(|q| q.retry_at)) => {
                    self.quarantine = None;
                    dirty = true;
                }
                exit = exited(&mut self.master) => self.on_exit(exit),
                () = sleep_until(self.restart_at) => {
                    self.restart_at = None;
                    self.start().await;
                    // Changes that arrived while HAProxy was down, or that
                    // failed against a dying one, are applied now.
                    dirty = true;
                }
                _ = stats_tick.tick() => {
                    self.poll_stats().await;
                    self.retry_deletions().await;
                }
                _ = &mut shutdown => break,
            }
        }
        match (self.master.take(), self.on_exit) {
            (Some(master), OnExit::Keep) => {
                tracing::info!(
                    pid = master.pid(),
                    "leaving HAProxy serving; the next start takes it over"
                );
                master.detach();
            }
            (Some(master), OnExit::Stop) => master.stop().await,
            (None, _) => {}
        }
    }

    fn event(&self, kind: ActivityKind) {
        self.activity.record(kind);
    }

    /// Records the registrations that became live or stopped being live
    /// since the last render (none for the first: that is the start-up
    /// state, not news).
    fn note_live_registrations(&mut self, live: BTreeSet<RegistrationKey>) {
        if let Some(before) = &self.live_registrations {
            for (key, now_live) in before
                .symmetric_difference(&live)
                .map(|key| (key, live.contains(key)))
            {
                self.activity.record(ActivityKind::Registration {
                    id: key.to_string(),
                    live: now_live,
                });
            }
        }
        self.live_registrations = Some(live);
    }

    /// Logs each stored `natives` line rendered as a comment, once.
    fn note_left_out(&mut self, left_out: Vec<LeftOut>) {
        for line in left_out {
            if self.logged_left_out.contains(&line) {
                continue;
            }
            tracing::warn!(
                "natives line of {} {} left out of haproxy.cfg as a comment, {}: {}",
                line.section,
                line.key,
                line.why,
                line.line
            );
            if self.logged_left_out.len() >= LOGGED_LEFT_OUT_MAX {
                self.logged_left_out.clear();
            }
            self.logged_left_out.insert(line);
        }
    }

    fn fail(&self, message: String) {
        tracing::warn!("HAProxy: {message}");
        self.status.send_modify(|s| s.last_error = Some(message));
    }

    /// Renders the current view and moves HAProxy to it.
    async fn apply(&mut self) {
        let Ok(view) = self.peer.view().await else {
            return;
        };
        let settings = self.settings.clone();
        let now = wall_clock_ms();
        // Rendering a large configuration takes tens of milliseconds: off
        // the async workers.
        let rendered = tokio::task::spawn_blocking(move || {
            let next = render::render(&view, &settings, now);
            let expiry = LiveRegistrations::next_expiry(&view, now);
            let live: BTreeSet<RegistrationKey> = LiveRegistrations::new(&view, now)
                .all()
                .map(|(key, _)| key.clone())
                .collect();
            let left_out = render::left_out_natives(&view, &settings);
            (next, expiry, live, left_out)
        })
        .await;
        let Ok((next, expiry, live, left_out)) = rendered else {
            return;
        };
        self.note_left_out(left_out);
        self.next_expiry_ms = expiry;
        self.note_live_registrations(live);
        self.rendered.send_replace(Some(next.text().into()));
        let plan = match &self.active {
            Some(active) => render::plan(active, &next),
            None => Plan::Reload,
        };
        match plan {
            Plan::Unchanged => {}
            Plan::Runtime(changes) => self.apply_runtime(next, changes).await,
            Plan::Reload if self.quarantined(&next) => self.apply_members_only(&next).await,
            Plan::Reload => {
                if !self.apply_reload(next.clone()).await {
                    self.apply_members_only(&next).await;
                }
            }
        }
    }

    /// Whether `next`'s structure is one HAProxy could not take (and its
    /// retry time, if any, has not come).
    fn quarantined(&self, next: &Rendered) -> bool {
        self.quarantine.as_ref().is_some_and(|q| {
            q.key == next.structure_key() && q.retry_at.is_none_or(|at| Instant::now() < at)
        })
    }

    /// Keeps a structure HAProxy refused (for good) or failed to run (tried
    /// again after [`RELOAD_RETRY`]) from being tried on every change.
    fn quarantine(&mut self, next: &Rendered, retry: bool) {
        self.quarantine = Some(Quarantine {
            key: next.structure_key(),
            retry_at: retry.then(|| Instant::now() + RELOAD_RETRY),
        });
    }

    /// Applies the member changes of `next` that the running structure can
    /// take, when `next`'s structure cannot be activated: one bad structure
    /// change must not freeze every member change behind it.
    async fn apply_members_only(&mut self, next: &Rendered) {
        let Some(active) = &self.active else {
            return;
        };
        let merged = active.with_runtime_servers_of(next);
        if let Plan::Runtime(changes) = render::plan(active, &merged) {
            self.apply_runtime(merged, changes).await;
        }
    }

    async fn apply_runtime(&mut self, next: Rendered, changes: Vec<render::ServerChange>) {
        let text = next.text();
        if self.binary.is_some() && self.master.is_none() {
            // HAProxy is down and about to be started again: the file is
            // what it will load.
            if let Err(e) = write_atomically(&self.files.config, &text).await {
                self.fail(format!("writing {}: {e}", self.files.config.display()));
            }
            self.active = Some(next);
            return;
        }
        if self.master.is_some() {
            for change in &changes {
                for command in change.commands() {
                    match self.runtime(&command).await {
                        Ok(Outcome::Done) => {}
                        Ok(Outcome::NotYet)
                            if self.pending_deletions.len() < PENDING_DELETIONS_MAX =>
                        {
                            if !self.pending_deletions.contains(&command) {
                                self.pending_deletions.push(command);
                            }
                        }
                        refused => {
                            let reply = match refused {
                                Err(e) => e,
                                Ok(_) => "refused, or too many deletions waiting".to_owned(),
                            };
                            // The file is the truth: a reload makes HAProxy
                            // agree with it.
                            self.fail(format!("runtime command {:?}: {reply}", command.line));
                            self.status.send_modify(|s| s.runtime_failures += 1);
                            self.apply_reload(next).await;
                            return;
                        }
                    }
                }
            }
        }
        if let Err(e) = write_atomically(&self.files.config, &text).await {
            self.fail(format!("writing {}: {e}", self.files.config.display()));
        }
        self.status.send_modify(|s| {
            s.runtime_changes += changes.len() as u64;
            s.pending_deletions = self.pending_deletions.len();
        });
        self.activated(next, &text, "runtime", changes.len());
    }

    /// Sends one runtime command: what its reply means, or the socket error.
    async fn runtime(&self, command: &RuntimeCommand) -> Result<Outcome, String> {
        match socket::send(&self.files.admin_socket, &command.line, SOCKET_TIMEOUT).await {
            Ok(reply) => match command.outcome(&reply) {
                Outcome::Refused => Err(reply.trim().to_owned()),
                outcome => Ok(outcome),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    /// Checks, writes and reloads (or starts) `next`. Returns whether
    /// `next` now runs (or, render-only, is written).
    async fn apply_reload(&mut self, next: Rendered) -> bool {
        let text = next.text();
        let Some(binary) = self.binary.clone() else {
            if let Err(e) = write_atomically(&self.files.config, &text).await {
                self.fail(format!("writing {}: {e}", self.files.config.display()));
                return false;
            }
            self.activated(next, &text, "file", 0);
            return true;
        };
        match binary.check(&text, &self.files.dir).await {
            Ok(()) => {}
            Err(CheckError::Rejected(rejected)) => {
                self.quarantine(&next, false);
                self.status.send_modify(|s| s.rejected += 1);
                self.fail(format!(
                    "configuration rejected, the previous one keeps serving: {}",
                    rejected.message
                ));
                self.event(ActivityKind::Rejected {
                    message: rejected.message,
                });
                return false;
            }
            Err(CheckError::Process(e)) => {
                self.quarantine(&next, true);
                self.fail(format!("running haproxy -c: {e}"));
                return false;
            }
        }
        let previous = self.active.as_ref().map(Rendered::text);
        if let Err(e) = write_atomically(&self.files.config, &text).await {
            self.fail(format!("writing {}: {e}", self.files.config.display()));
            return false;
        }
        if self.master.is_none() {
            // Not running (first apply, or waiting to restart): start on
            // the new file, or, if HAProxy cannot run it, on the last one
            // that ran.
            let fallback = self.active.replace(next);
            self.restart_at = None;
            if self.start().await {
                return true;
            }
            let Some(fallback) = fallback else {
                return false;
            };
            if let Some(failed) = self.active.replace(fallback) {
                self.quarantine(&failed, true);
            }
            self.restart_at = None;
            self.start().await;
            return false;
        }
        self.save_server_state().await;
        let outcome = match self.master.as_mut() {
            Some(master) => master.reload().await,
            None => return false,
        };
        match outcome {
            Ok(ReloadOutcome::Applied { took }) => {
                let took_ms = took.as_secs_f64() * 1000.0;
                self.pending_deletions.clear();
                self.quarantine = None;
                self.died_reloading = None;
                self.status.send_modify(|s| {
                    s.reloads += 1;
                    s.last_reload_ms = Some(took_ms);
                    s.pending_deletions = 0;
                });
                self.event(ActivityKind::Reloaded { took_ms });
                self.activated(next, &text, "reload", 0);
                true
            }
            Ok(ReloadOutcome::Failed { alerts, .. }) => {
                self.quarantine(&next, true);
                self.reload_failed(alerts.join("\n"), previous).await;
                false
            }
            Err(e @ ProcessError::TimedOut { .. }) => {
                // HAProxy re-reads the file on disk, which is `next`: most
                // likely it runs it, only late. Plans go on from there; a
                // runtime command that finds otherwise falls back to a
                // reload.
                self.active = Some(next);
                self.status.send_modify(|s| s.reload_failures += 1);
                self.fail(format!("reload not confirmed: {e}"));
                false
            }
            Err(e) => {
                // HAProxy died during the reload (or its CLI failed): it
                // restarts on the previous configuration and the next apply
                // tries `next` again — unless `next` was being loaded the
                // last time HAProxy died too.
                let key = next.structure_key();
                if self.died_reloading == Some(key) {
                    self.quarantine(&next, true);
                }
                self.died_reloading = Some(key);
                self.reload_failed(e.to_string(), previous).await;
                false
            }
        }
    }

    async fn reload_failed(&mut self, message: String, previous: Option<String>) {
        // Put the running configuration back on disk, so that a restart
        // or the next reload does not pick up the failed one.
        if let Some(previous) = previous
            && let Err(e) = write_atomically(&self.files.config, &previous).await
        {
            tracing::warn!("restoring {}: {e}", self.files.config.display());
        }
        self.status.send_modify(|s| s.reload_failures += 1);
        self.fail(format!(
            "reload failed, the previous configuration keeps serving: {message}"
        ));
        self.event(ActivityKind::ReloadFailed { message });
    }

    /// `next` runs: records it, and says so.
    fn activated(&mut self, next: Rendered, text: &str, how: &'static str, changes: usize) {
        self.active = Some(next);
        self.record_applied(text, how, changes);
    }

    fn record_applied(&self, text: &str, how: &'static str, changes: usize) {
        // Of the text `/haproxy/config` shows (secrets redacted), so that
        // clients can compare the two and nobody can test guesses of a
        // secret against it.
        let shown = crate::haproxy::render::redacted(text);
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(shown.as_bytes()));
        let servers = self.active.as_ref().map_or(0, Rendered::server_count);
        // An error stays visible while a structure is held back.
        let clear_error = self.quarantine.is_none();
        self.status.send_modify(|s| {
            s.applied_hash = Some(hash);
            s.applied_at_ms = Some(wall_clock_ms());
            s.servers = servers;
            if clear_error {
                s.last_error = None;
            }
        });
        self.event(ActivityKind::Applied { how, changes });
    }

    /// Writes HAProxy's server state where the next worker loads it from,
    /// keeping only what the configuration file cannot say — each server's
    /// health — and leaving administrative state and weight to the file,
    /// which is rendered from the replicated state.
    async fn save_server_state(&self) {
        match socket::send(
            &self.files.admin_socket,
            "show servers state",
            SOCKET_TIMEOUT,
        )
        .await
        {
            Ok(state) => {
                if let Err(e) =
                    write_atomically(&self.files.server_state, &health_only(&state)).await
                {
                    tracing::warn!("writing {}: {e}", self.files.server_state.display());
                }
            }
            Err(e) => {
                // Better no saved health than health from long ago.
                tracing::warn!("show servers state: {e}");
                let _ = tokio::fs::remove_file(&self.files.server_state).await;
            }
        }
    }

    /// Starts HAProxy on the configuration file; on failure, tries again
    /// later with backoff.
    /// Starts HAProxy on the active configuration; on failure, tries again
    /// later with backoff. Returns whether it runs.
    async fn start(&mut self) -> bool {
        let (Some(binary), Some(active)) = (self.binary.clone(), &self.active) else {
            return false;
        };
        let text = active.text();
        // A fresh HAProxy starts from the file alone: health state saved
        // by a previous one may be stale.
        let _ = tokio::fs::remove_file(&self.files.server_state).await;
        if let Err(e) = write_atomically(&self.files.config, &text).await {
            self.fail(format!("writing {}: {e}", self.files.config.display()));
            self.schedule_restart();
            return false;
        }
        let leftovers = self.leftover_masters().await;
        let (config, dir) = (&self.files.config, &self.files.dir);
        let started = if leftovers.is_empty() {
            Master::start(&binary, config, dir).await
        } else {
            Master::take_over(&binary, config, dir, &self.files.admin_socket).await
        };
        match started {
            Ok(master) => {
                let pid = master.pid();
                for old in leftovers
                    .into_iter()
                    .filter(|old| old.as_raw_nonzero().get() as u32 != pid)
                {
                    // The new HAProxy accepts on the old one's sockets (or
                    // its own, with SO_REUSEPORT): the old one may stop
                    // listening and finish its connections (a soft stop).
                    tracing::info!(
                        old = old.as_raw_nonzero().get(),
                        "taking over from the HAProxy a previous run left"
                    );
                    let _ = rustix::process::kill_process(old, rustix::process::Signal::USR1);
                }
                self.master = Some(master);
                self.started_at = Some(Instant::now());
                self.status.send_modify(|s| {
                    s.running = true;
                    s.pid = Some(pid);
                });
                tracing::info!(pid, "HAProxy started");
                self.record_applied(&text, "start", 0);
                true
            }
            Err(e) => {
                self.fail(format!("starting HAProxy: {e}"));
                self.schedule_restart();
                false
            }
        }
    }

    /// The HAProxy processes a previous run of this peer left behind (it
    /// was killed, and HAProxy kept serving): those running in master-worker
    /// mode on this peer's configuration file. Found through
    /// /proc rather than a pid file, which a run killed at the wrong moment
    /// may not have written.
    async fn leftover_masters(&self) -> Vec<rustix::process::Pid> {
        let config = self.files.config.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir("/proc") else {
                return Vec::new();
            };
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
                    // Its workers match too (they share the command line);
                    // a soft stop is what their master would send them.
                    args.contains(&b"-W".as_slice())
                        && args.contains(&config.as_os_str().as_encoded_bytes())
                })
                .filter_map(rustix::process::Pid::from_raw)
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    fn schedule_restart(&mut self) {
        self.restart_at = Some(Instant::now() + self.restart_backoff);
        self.restart_backoff = (self.restart_backoff * 2).min(RESTART_BACKOFF.1);
    }

    fn on_exit(&mut self, exit: Result<std::process::ExitStatus, ProcessError>) {
        self.master = None;
        if self
            .started_at
            .is_some_and(|at| at.elapsed() >= STABLE_AFTER)
        {
            self.restart_backoff = RESTART_BACKOFF.0;
        }
        let reason = match exit {
            Ok(status) => format!("HAProxy exited ({status})"),
            Err(e) => format!("HAProxy: {e}"),
        };
        self.pending_deletions.clear();
        self.server_status.clear();
        self.status.send_modify(|s| {
            s.running = false;
            s.pid = None;
            s.restarts += 1;
            s.pending_deletions = 0;
        });
        self.fail(format!("{reason}; restarting"));
        self.event(ActivityKind::Restarted { reason });
        self.schedule_restart();
    }

    async fn poll_stats(&mut self) {
        if self.master.is_none() {
            return;
        }
        let csv = match socket::send(&self.files.admin_socket, "show stat", SOCKET_TIMEOUT).await {
            Ok(csv) => csv,
            Err(e) => return tracing::debug!("show stat: {e}"),
        };
        let rows: Vec<StatRow> = parse_show_stat(&csv)
            .into_iter()
            .filter(|row| !row.proxy.starts_with('_'))
            .collect();
        let mut seen = BTreeMap::new();
        for row in rows.iter().filter(|row| row.kind == StatKind::Server) {
            let key = (row.proxy.clone(), row.name.clone());
            let now = status_word(&row.status);
            match self.server_status.get(&key) {
                Some(before) if before != now => self.event(ActivityKind::Member {
                    backend: row.proxy.clone(),
                    server: row.name.clone(),
                    from: before.clone(),
                    to: now.to_owned(),
                }),
                _ => {}
            }
            seen.insert(key, now.to_owned());
        }
        // Only servers that still exist are remembered.
        self.server_status = seen;
        self.stats.send_replace(Arc::new(StatsSnapshot {
            at_ms: wall_clock_ms(),
            rows,
        }));
    }

    async fn retry_deletions(&mut self) {
        if self.pending_deletions.is_empty() || self.master.is_none() {
            return;
        }
        let mut still = Vec::new();
        for command in std::mem::take(&mut self.pending_deletions) {
            match self.runtime(&command).await {
                Ok(Outcome::Done) => {}
                Ok(_) => still.push(command),
                // The server stays in maintenance (no traffic); the next
                // reload removes it.
                Err(reply) => tracing::warn!("{:?}: {reply}", command.line),
            }
        }
        self.pending_deletions = still;
        let pending = self.pending_deletions.len();
        self.status.send_modify(|s| s.pending_deletions = pending);
    }
}

/// The status word of a server (`UP 1/3` → `UP`, `no check` stays).
fn status_word(status: &str) -> &str {
    match status.split_once(' ') {
        Some((word, rest)) if rest.contains('/') => word,
        _ => status,
    }
}

/// `show servers state` with every server's administrative state cleared
/// and its current weight set to its configured weight (columns 7 and 8 of
/// HAProxy's format 1), so that loading it restores health only.
fn health_only(state: &str) -> String {
    let mut out = String::with_capacity(state.len());
    for line in state.lines() {
        let mut fields: Vec<&str> = line.split(' ').collect();
        if !line.starts_with('#') && fields.len() > 8 {
            fields[6] = "0";
            fields[7] = fields[8];
        }
        out.push_str(&fields.join(" "));
        out.push('\n');
    }
    out
}

/// [`files::write_atomically`] off the async workers: `path` is private
/// (it may hold the stats password) and holds the old text or the new.
async fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let (path, text) = (path.to_path_buf(), text.to_owned());
    tokio::task::spawn_blocking(move || files::write_atomically(&path, text.as_bytes()))
        .await
        .map_err(std::io::Error::other)?
}

async fn exited(master: &mut Option<Master>) -> Result<std::process::ExitStatus, ProcessError> {
    match master {
        Some(master) => master.exited().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_server_state_keeps_health_and_leaves_admin_state_and_weight_to_the_file() {
        // HAProxy 2.6's `show servers state`: a server forced into
        // maintenance (admin state 1) with a runtime weight of 7.
        let header = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n";
        let state = format!(
            "{header}3 be 1 127.0.0.1:19001 127.0.0.1 2 1 7 1 5 15 3 4 6 0 0 0 - 19001 - 0 0 - - 0\n"
        );
        assert_eq!(
            health_only(&state),
            format!(
                "{header}3 be 1 127.0.0.1:19001 127.0.0.1 2 0 1 1 5 15 3 4 6 0 0 0 - 19001 - 0 0 - - 0\n"
            )
        );
    }

    #[test]
    fn status_words_drop_check_progress() {
        assert_eq!(status_word("UP 1/3"), "UP");
        assert_eq!(status_word("DOWN"), "DOWN");
        assert_eq!(status_word("no check"), "no check");
    }
}
