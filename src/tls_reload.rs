//! Reloads this peer's certificates while it runs, so that rotating them
//! needs no restart and no connection is dropped: its own certificate and
//! key (`node.pem`, `node.key` in its TLS directory) and, when the API
//! serves HTTPS, the API's (`--api-tls-cert`, `--api-tls-key`); on SIGHUP,
//! and when their files change.
//!
//! Owns the peer's [`TlsIdentity`] once the transport is bound (and a clone
//! of the API's [`ApiTls`]): when to try a replacement, its log lines and
//! its counters ([`TlsStatus`]). Must not check certificates itself
//! ([`TlsIdentity::replace`] does, exactly as at start-up, and refuses
//! another node's name; [`ApiTls::replace`] likewise, refusing other host
//! names) nor touch connections: new handshakes, both dialled and
//! accepted, present the new pair; open connections keep the one they were
//! made with, so a rotation causes no reconnection at all.
//!
//! The files are polled ([`POLL_EVERY`]) rather than watched with inotify:
//! no new dependency, a few small reads a second, and it sees every way of
//! replacing them (rewritten in place, renamed over, swapped through a
//! symlink as a Kubernetes secret volume does, with modification times kept
//! by `cp -p` or not), which watching modification times or one inode would
//! not. A change is tried once the files read the same at two polls in a
//! row, so that a pair copied one file at a time is not refused for being
//! caught half-written; SIGHUP tries at once (the operator says the files
//! are ready). Whatever the trigger, the pair in use stays until a new one
//! passes every check, and a refused pair is tried again only once the files
//! change again (or at the next SIGHUP), so it is logged once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::Signal;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::server::ApiTls;
use crate::certs::{self, CertError, CertificateInfo, PemPair, TlsIdentity};

/// How often the files are read to see whether they changed.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// The certificates in use and what reloading did so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsStatus {
    /// The certificate new mesh handshakes present.
    pub certificate: CertificateInfo,
    /// Its replacements.
    pub reloads: Reloads,
    /// The API's HTTPS certificate, when it serves HTTPS.
    pub api: Option<ApiCertificate>,
}

/// The API's HTTPS certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCertificate {
    /// When the certificate new handshakes present expires (Unix seconds).
    pub not_after: i64,
    /// Its replacements.
    pub reloads: Reloads,
}

/// Replacements of one certificate and key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloads {
    /// Pairs taken (on SIGHUP, or once the files changed).
    pub ok: u64,
    /// Pairs refused (unreadable, invalid, or naming another node or other
    /// hosts): the previous one stayed in use.
    pub refused: u64,
}

/// Starts reloading `identity` from `tls_dir`, and `api` from its files,
/// on each signal of `hangups` (SIGHUP) and when the files change. The
/// receiver follows the status; abort the task to stop.
pub fn spawn(
    identity: TlsIdentity,
    tls_dir: &Path,
    api: Option<ApiTls>,
    hangups: Signal,
) -> (watch::Receiver<TlsStatus>, JoinHandle<()>) {
    let (status, receiver) = watch::channel(TlsStatus {
        certificate: identity.certificate().clone(),
        reloads: Reloads::default(),
        api: api.as_ref().map(|api| ApiCertificate {
            not_after: api.not_after(),
            reloads: Reloads::default(),
        }),
    });
    let node_files = Files::new(
        tls_dir.join(certs::NODE_CERT_FILE),
        tls_dir.join(certs::NODE_KEY_FILE),
        identity.fingerprint(),
    );
    let api = api.map(|api| {
        let (cert, key) = api.files();
        let files = Files::new(cert.to_owned(), key.to_owned(), api.fingerprint());
        (api, files)
    });
    let task = tokio::spawn(run(identity, node_files, api, hangups, status));
    (receiver, task)
}

/// Why a replacement is tried, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    mut node_files: Files,
    mut api: Option<(ApiTls, Files)>,
    mut hangups: Signal,
    status: watch::Sender<TlsStatus>,
) {
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            Some(()) = hangups.recv() => Trigger::Hangup,
            _ = poll.tick() => Trigger::FilesChanged,
        };
        if let Some(read) = node_files.worth_trying(trigger).await {
            let keeping = identity.certificate().to_string();
            let outcome = read.and_then(|pair| identity.replace(&pair).cloned());
            let what = "node certificate and key";
            status.send_modify(|status| match outcome {
                Ok(certificate) => {
                    report_ok(what, trigger, &certificate.to_string(), &mut status.reloads);
                    status.certificate = certificate;
                }
                Err(error) => report_refused(what, trigger, &error, &keeping, &mut status.reloads),
            });
        }
        if let Some((api, files)) = &mut api
            && let Some(read) = files.worth_trying(trigger).await
        {
            let keeping = valid_until(api.not_after());
            let outcome = read
                .map_err(|error| error.to_string())
                .and_then(|pair| api.replace(&pair).map_err(|error| error.to_string()));
            let what = "API's HTTPS certificate and key";
            status.send_modify(|status| {
                let Some(served) = &mut status.api else {
                    return;
                };
                match outcome {
                    Ok(not_after) => {
                        report_ok(what, trigger, &valid_until(not_after), &mut served.reloads);
                        served.not_after = not_after;
                    }
                    Err(error) => {
                        report_refused(what, trigger, &error, &keeping, &mut served.reloads);
                    }
                }
            });
        }
    }
}

fn report_ok(what: &str, trigger: Trigger, certificate: &str, reloads: &mut Reloads) {
    tracing::info!(
        trigger = trigger.as_str(),
        certificate,
        "reloaded the {what}: new connections present it, open ones keep theirs"
    );
    reloads.ok += 1;
}

fn report_refused(
    what: &str,
    trigger: Trigger,
    error: &dyn std::fmt::Display,
    keeping: &str,
    reloads: &mut Reloads,
) {
    tracing::warn!(
        trigger = trigger.as_str(),
        %error,
        keeping,
        "refused the new {what}; the one in use stays"
    );
    reloads.refused += 1;
}

fn valid_until(not_after: i64) -> String {
    format!("valid until {}", certs::unix_time_text(not_after))
}

/// A certificate file and its key file, as polled.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    /// The files as last tried (at first, as loaded at start-up)...
    tried: Seen,
    /// ...and as read at the previous poll.
    previous: Seen,
}

/// What the files held when read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// Both files, with this [`PemPair::fingerprint`].
    Pair(u64),
    /// Not both readable, for this reason.
    Unreadable(String),
}

impl Files {
    fn new(cert: PathBuf, key: PathBuf, loaded: u64) -> Files {
        Files {
            cert,
            key,
            tried: Seen::Pair(loaded),
            previous: Seen::Pair(loaded),
        }
    }

    /// Reads the files; what to try now, if anything: on SIGHUP whatever
    /// they hold, when polled only a change that has settled.
    async fn worth_trying(&mut self, trigger: Trigger) -> Option<Result<PemPair, CertError>> {
        let (cert, key) = (self.cert.clone(), self.key.clone());
        let read = tokio::task::spawn_blocking(move || PemPair::read(&cert, &key))
            .await
            .unwrap_or_else(|panicked| std::panic::resume_unwind(panicked.into_panic()));
        let seen = match &read {
            Ok(pair) => Seen::Pair(pair.fingerprint()),
            Err(error) => Seen::Unreadable(error.to_string()),
        };
        let settled = seen == self.previous;
        self.previous = seen.clone();
        if trigger == Trigger::FilesChanged && (!settled || seen == self.tried) {
            return None;
        }
        self.tried = seen;
        Some(read)
    }
}
