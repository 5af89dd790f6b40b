//! Reloads this peer's own certificate and key (`node.pem`, `node.key` in
//! its TLS directory) while it runs, so that rotating them needs no
//! restart and no connection is dropped: on SIGHUP, and when the files
//! change.
//!
//! Owns the peer's [`TlsIdentity`] once the transport is bound: when to try
//! a replacement, its log lines and its counters ([`TlsStatus`]). Must not
//! check certificates itself ([`TlsIdentity::replace`] does, exactly as at
//! start-up, and refuses another node's name) nor touch connections: new
//! handshakes, both dialled and accepted, present the new pair; open
//! connections keep the one they were made with, so a rotation causes no
//! reconnection at all.
//!
//! The files are polled ([`POLL_EVERY`]) rather than watched with inotify:
//! no new dependency, two small reads a second, and it sees every way of
//! replacing them (rewritten in place, renamed over, swapped through a
//! symlink as a Kubernetes secret volume does, with modification times kept
//! by `cp -p` or not), which watching modification times or one inode would
//! not. A change is tried once the files read the same at two polls in a
//! row, so that a pair copied one file at a time is not refused for being
//! caught half-written; SIGHUP tries at once (the operator says the files
//! are ready). Whatever the trigger, the pair in use stays until a new one
//! passes every check, and a refused pair is tried again only once the files
//! change again (or at the next SIGHUP), so it is logged once.

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::Signal;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::certs::{CertificateInfo, NodePair, TlsIdentity};

/// How often the files are read to see whether they changed.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// The certificate in use and what reloading did so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsStatus {
    /// The certificate new handshakes present.
    pub certificate: CertificateInfo,
    /// Pairs taken (on SIGHUP, or once the files changed).
    pub reloads: u64,
    /// Pairs refused (unreadable, invalid, or for another node): the
    /// previous one stayed in use.
    pub reloads_refused: u64,
}

/// Starts reloading `identity` from `tls_dir` on each signal of `hangups`
/// (SIGHUP) and when the files change. The receiver follows the status;
/// abort the task to stop.
pub fn spawn(
    identity: TlsIdentity,
    tls_dir: PathBuf,
    hangups: Signal,
) -> (watch::Receiver<TlsStatus>, JoinHandle<()>) {
    let (status, receiver) = watch::channel(TlsStatus {
        certificate: identity.certificate().clone(),
        reloads: 0,
        reloads_refused: 0,
    });
    let task = tokio::spawn(run(identity, tls_dir, hangups, status));
    (receiver, task)
}

/// What the files held when read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// Both files, with this [`NodePair::fingerprint`].
    Pair(u64),
    /// Not both readable, for this reason.
    Unreadable(String),
}

/// Why a replacement is tried, for the log.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Hangup,
    FilesChanged,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Hangup => "SIGHUP",
            Trigger::FilesChanged => "files changed",
        }
    }
}

async fn run(
    mut identity: TlsIdentity,
    tls_dir: PathBuf,
    mut hangups: Signal,
    status: watch::Sender<TlsStatus>,
) {
    // The files as last tried (at first, those loaded at start-up) and as
    // read at the previous poll.
    let mut tried = Seen::Pair(identity.fingerprint());
    let mut previous = tried.clone();
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            Some(()) = hangups.recv() => Trigger::Hangup,
            _ = poll.tick() => Trigger::FilesChanged,
        };
        let dir = tls_dir.clone();
        let read = tokio::task::spawn_blocking(move || NodePair::read(&dir))
            .await
            .unwrap_or_else(|panicked| std::panic::resume_unwind(panicked.into_panic()));
        let seen = match &read {
            Ok(pair) => Seen::Pair(pair.fingerprint()),
            Err(error) => Seen::Unreadable(error.to_string()),
        };
        let settled = seen == previous;
        previous = seen.clone();
        if matches!(trigger, Trigger::FilesChanged) && (!settled || seen == tried) {
            continue;
        }
        tried = seen;
        let outcome = read.and_then(|pair| identity.replace(&pair).cloned());
        status.send_modify(|status| match outcome {
            Ok(certificate) => {
                tracing::info!(
                    trigger = trigger.as_str(),
                    %certificate,
                    "reloaded this peer's certificate and key: new connections present it, \
                     open ones keep theirs"
                );
                status.certificate = certificate;
                status.reloads += 1;
            }
            Err(error) => {
                tracing::warn!(
                    trigger = trigger.as_str(),
                    %error,
                    keeping = %identity.certificate(),
                    "refused the new certificate and key; the one in use stays"
                );
                status.reloads_refused += 1;
            }
        });
    }
}
