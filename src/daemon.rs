//! `aqueduct run`: assembles a peer from its options (certificates, store,
//! transport, REST API), runs it, and shuts it down gracefully on SIGTERM
//! or SIGINT.
//!
//! Owns start-up order and shutdown order. Must not hold protocol logic
//! (that is the [`Node`]'s) or request handling (the API's).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::activity::ActivityLog;
use crate::api::server::{self, ApiTls, ApiTlsError, ServerOptions};
use crate::api::{self, ApiOptions, SiteRules};
use crate::certs::{self, CertError, NodeName, TlsIdentity};
use crate::config::{HaproxySetting, RunOptions, TlsSource};
use crate::files;
use crate::gossip::{Config, MemberId, Node, RevocationVerifier, Time};
use crate::haproxy::{
    self,
    driver::{DriverConfig, DriverError},
    process::Binary,
};
use crate::peer::{self, FirstSync, Handle, PeerError, REQUESTS_MAX};
use crate::store::{self, Store, StoreError};
use crate::tls_reload;
use crate::transport::{Transport, TransportError};

/// Entries the peer may queue towards the store before it waits.
const STORE_QUEUE_MAX: usize = 16_384;
/// A size hint for SWIM's tuning (foca scales probes and retransmissions
/// with it); the protocol works for any mesh size.
const MESH_SIZE_HINT: u32 = 64;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Certificates.
    #[error(transparent)]
    Certificates(#[from] CertError),
    /// The name asked for is not the certificate's.
    #[error("--name {asked} does not match the certificate in {tls_dir}, which is for {actual}")]
    NameMismatch {
        /// The name given.
        asked: NodeName,
        /// The certificate's name.
        actual: NodeName,
        /// Where the certificate is.
        tls_dir: std::path::PathBuf,
    },
    /// The data directory cannot be made (or made private).
    #[error("data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The API's TLS certificate or key.
    #[error("API TLS: {0}")]
    ApiTls(#[from] ApiTlsError),
    /// The API address.
    #[error("cannot listen for the API on {addr}: {source}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The peer task.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// Signal handlers could not be installed.
    #[error("cannot listen for SIGTERM, SIGINT and SIGHUP: {0}")]
    Signals(std::io::Error),
    /// `--haproxy PATH` names no file.
    #[error("--haproxy {}: no such file", .0.display())]
    Haproxy(std::path::PathBuf),
    /// The HAProxy driver cannot start.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// This peer's own certificate is revoked.
    #[error(
        "the certificate of {name} was revoked at {revoked_at} (Unix seconds); \
         issue a new one (aqueduct certs issue) and start with it"
    )]
    Revoked {
        /// This peer's name.
        name: NodeName,
        /// When.
        revoked_at: u64,
    },
    /// Randomness for the protocol's seed was unavailable.
    #[error("no OS randomness: {0}")]
    Random(String),
}

/// Where a started peer listens: printed as one line on stdout, which
/// scripts and tests read to find ephemeral ports.
#[derive(Debug, Clone)]
pub struct Listening {
    /// This peer's name.
    pub name: NodeName,
    /// The REST API.
    pub api: SocketAddr,
    /// Whether the REST API is served over HTTPS (`api=https://...`).
    pub https: bool,
    /// Gossip.
    pub gossip: SocketAddr,
}

impl Listening {
    /// Reads a listening line back (what `demo` and scripts do).
    pub fn parse(line: &str) -> Option<Listening> {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key))
        };
        let api = field("api=")?;
        let (https, api) = match api.strip_prefix("https://") {
            Some(addr) => (true, addr),
            None => (false, api.trim_start_matches("http://")),
        };
        Some(Listening {
            name: NodeName::new(field("name=")?).ok()?,
            api: api.parse().ok()?,
            https,
            gossip: field("gossip=")?.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "aqueduct listening name={} api={}://{} gossip={}",
            self.name,
            if self.https { "https" } else { "http" },
            self.api,
            self.gossip
        )
    }
}

/// A file in the data directory while the peer waits for its first sync
/// ([`FirstSync::Waiting`]), removed when the wait ends: a peer restarted
/// in the middle of its first sync finds a store that is no longer empty,
/// and must go on waiting.
const FIRST_SYNC_PENDING_FILE: &str = "first-sync-pending";

/// Runs one peer until SIGTERM or SIGINT.
pub async fn run(options: RunOptions) -> Result<(), DaemonError> {
    let mut signals = ShutdownSignals::new().map_err(DaemonError::Signals)?;
    // Before anything else too: SIGHUP's default action ends the process,
    // and from here on it reloads the certificate instead (even one sent
    // before the reloader starts is kept for it).
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(DaemonError::Signals)?;
    // Private before anything is written into it (a self-made TLS key, the
    // store): only this peer's user reads its data.
    files::private_own_dir(&options.data_dir, store::STORE_FILE).map_err(|source| {
        DaemonError::DataDir {
            dir: options.data_dir.clone(),
            source,
        }
    })?;
    let open_files = server::raise_open_files_limit();
    tracing::debug!(?open_files, "open-files limit");
    server::check_open_files_limit(open_files, options.api_connections.max);
    let api_tls = options
        .api_tls
        .as_ref()
        .map(|files| ApiTls::load(&files.cert, &files.key))
        .transpose()?;
    let tls_dir = match &options.tls {
        TlsSource::Given(dir) => dir.clone(),
        TlsSource::SelfMade(dir) => {
            let name = options.name.clone().unwrap_or_else(host_name);
            certs::ensure_self_made(dir, &name)?;
            dir.clone()
        }
    };
    let identity = TlsIdentity::load(&tls_dir)?;
    if let Some(asked) = &options.name
        && asked != identity.name()
    {
        return Err(DaemonError::NameMismatch {
            asked: asked.clone(),
            actual: identity.name().clone(),
            tls_dir,
        });
    }

    // Opening may wait for a lock, check integrity and migrate a large
    // file: off the async workers, so that a signal is still handled.
    let data_dir = options.data_dir.clone();
    let (store, recovered) = tokio::task::spawn_blocking(move || Store::open(&data_dir))
        .await
        .unwrap_or_else(|panicked| std::panic::resume_unwind(panicked.into_panic()))?;
    let mut recovered = recovered;
    // Enforced before the transport accepts anything.
    let verifier = identity.revocation_verifier()?;
    let revocations: Vec<_> = std::mem::take(&mut recovered.revocations)
        .into_iter()
        .filter(|revocation| verifier.verify(revocation))
        .collect();
    for revocation in &revocations {
        identity.revoked().insert(revocation.clone());
    }
    if let Some(revocation) = identity.own_revocation() {
        return Err(DaemonError::Revoked {
            name: identity.name().clone(),
            revoked_at: revocation.revoked_at,
        });
    }
    let (replica, generation) = recovered.into_replica()?;
    // Nothing ever written or learnt: a new or wiped data directory.
    let started_empty = replica.context().is_empty();
    let (writer, durability) = store::spawn_writer(store, STORE_QUEUE_MAX)?;

    let (transport, events) = Transport::bind(options.gossip, &identity)?;
    let name = identity.name().clone();
    let peer_id = identity.peer_id();
    // Shared, not copied: a reloaded identity enforces the same list.
    let revoked = identity.revoked().clone();
    let (tls_status, tls_reloader) =
        tls_reload::spawn(identity, &tls_dir, api_tls.clone(), hangups);
    let gossip = options.advertise.unwrap_or_else(|| transport.local_addr());
    let me = MemberId {
        peer: peer_id,
        generation: swim_generation(generation),
        addr: gossip,
    };
    let seed = getrandom::u64().map_err(|e| DaemonError::Random(e.to_string()))?;
    let config = Config {
        clock_skew_max: options.clock_skew_max,
        ..Config::lan(MESH_SIZE_HINT)
    };
    let mut node = Node::new(config, me, replica, seed, Time::ZERO);
    node.set_revocation_verifier(Box::new(verifier));
    node.restore_revocations(revocations);

    let listener = server::listen(options.api).map_err(|source| DaemonError::Api {
        addr: options.api,
        source,
    })?;
    let api_addr = listener.local_addr().map_err(|source| DaemonError::Api {
        addr: options.api,
        source,
    })?;
    let (requests_in, requests) = mpsc::channel(REQUESTS_MAX);
    let handle = Handle::new(requests_in);
    let (changes, changes_seen) = watch::channel(0);
    let first_sync_pending = options.data_dir.join(FIRST_SYNC_PENDING_FILE);
    let data_dir_error = |source| DaemonError::DataDir {
        dir: options.data_dir.clone(),
        source,
    };
    let was_pending = first_sync_pending.try_exists().map_err(data_dir_error)?;
    let waiting = !options.join.is_empty() && (started_empty || was_pending);
    if waiting && !was_pending {
        // Durable before anything is received: a restart in the middle of
        // the first sync finds a store that is no longer empty.
        files::write_atomically(&first_sync_pending, b"").map_err(data_dir_error)?;
    } else if !waiting && was_pending {
        std::fs::remove_file(&first_sync_pending).map_err(data_dir_error)?;
    }
    let (first_sync, first_sync_seen) = watch::channel(if waiting {
        FirstSync::Waiting
    } else {
        FirstSync::NotNeeded
    });
    let (stop_driver, driver_stopped) = oneshot::channel();
    let activity = ActivityLog::default();
    let (driver, driver_task) = haproxy::driver::spawn(
        DriverConfig {
            binary: haproxy_binary(&options.haproxy)?,
            dir: options.data_dir.join("haproxy"),
            options: options.haproxy_options.clone(),
        },
        handle.clone(),
        changes_seen,
        first_sync_seen,
        activity.clone(),
        driver_stopped,
    )?;
    let app = api::router(
        handle,
        ApiOptions {
            access: options.api_access.clone(),
            site: SiteRules {
                listen: Some(api_addr),
                // Clients of an HTTPS API name it as its certificate does.
                allowed_hosts: options
                    .api_site
                    .allowed_hosts
                    .iter()
                    .chain(api_tls.iter().flat_map(ApiTls::host_names))
                    .cloned()
                    .collect(),
                ..options.api_site.clone()
            },
            body_limit_bytes: options.api_body_limit,
            body_deadline: options.api_body_timeout,
            max_requests: options.api_max_requests,
            haproxy: Some(driver),
            activity: activity.clone(),
            quotas: options.quotas,
        },
    );

    let listening = Listening {
        name: name.clone(),
        api: api_addr,
        https: api_tls.is_some(),
        gossip,
    };
    if options.api_access.is_open() && !api_addr.ip().is_loopback() {
        tracing::warn!(
            api = %api_addr,
            "the API listens beyond loopback WITHOUT A TOKEN (--api-insecure): anyone who \
             reaches it can read and change the whole mesh's configuration"
        );
    }
    tracing::info!(
        generation,
        peer = %peer_id,
        data_dir = %options.data_dir.display(),
        "{listening}"
    );
    println!("{listening}");

    // Stop order: the API stops taking requests and finishes the ones in
    // flight (they need the peer task), then the peer leaves the mesh and
    // flushes the store.
    let (stop_api, api_stopped) = watch::channel(false);
    let (stop_peer, peer_stopped) = oneshot::channel();
    let peer_task = tokio::spawn(peer::run(peer::Parts {
        node,
        name,
        transport,
        events,
        writer,
        durability,
        requests,
        join: options.join.clone(),
        changes,
        activity,
        tls: tls_status,
        revoked,
        first_sync,
        first_sync_timeout: options.first_sync_timeout,
        first_sync_pending,
        shutdown: peer_stopped,
    }));
    let connections = &options.api_connections;
    let server = tokio::spawn(server::serve(
        listener,
        app,
        ServerOptions {
            header_timeout: connections.header_timeout,
            idle_timeout: connections.idle_timeout,
            max_connections: connections.max,
            max_connections_per_ip: connections.max_per_ip,
            tls: api_tls,
        },
        api_stopped,
    ));
    tokio::pin!(peer_task);
    let outcome = tokio::select! {
        () = signals.recv() => None,
        result = &mut peer_task => Some(result),
    };
    let _ = stop_api.send(true);
    // In-flight requests get a bounded time to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let result = match outcome {
        Some(result) => result,
        None => {
            let _ = stop_peer.send(());
            peer_task.await
        }
    };
    // The driver goes last: HAProxy keeps serving the last configuration
    // while the rest shuts down, and after (`--haproxy-on-exit keep`) until
    // the next start takes it over.
    tls_reloader.abort();
    let _ = stop_driver.send(());
    let _ = driver_task.await;
    tracing::info!("stopped");
    match result {
        Ok(result) => result.map_err(DaemonError::from),
        Err(panicked) => std::panic::resume_unwind(panicked.into_panic()),
    }
}

/// The HAProxy to drive: `off` drives none (the configuration is still
/// rendered to the data dir), `auto` the `haproxy` on `PATH` if there is one,
/// a path that binary (which must run).
fn haproxy_binary(setting: &HaproxySetting) -> Result<Option<Binary>, DaemonError> {
    match setting {
        HaproxySetting::Off => {
            tracing::info!("HAProxy: off (render only)");
            Ok(None)
        }
        HaproxySetting::Auto => {
            let found = std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("haproxy"))
                    .find(|candidate| candidate.is_file())
            });
            if found.is_none() {
                tracing::warn!(
                    "no haproxy on PATH: rendering only (give --haproxy PATH or install HAProxy)"
                );
            }
            Ok(found.map(Binary::new))
        }
        HaproxySetting::Path(path) if path.is_file() => Ok(Some(Binary::new(path))),
        HaproxySetting::Path(path) => Err(DaemonError::Haproxy(path.clone())),
    }
}

/// SWIM generations reserved per start: SWIM renews a peer's generation in
/// memory when it finds itself declared down, and the next start must not
/// reuse one of those, so each start begins a fresh block.
const SWIM_GENERATIONS_PER_START: u32 = 1 << 10;

/// The first SWIM generation of the `start`-th start of this data dir
/// (saturating: four million restarts leave the last block in use).
fn swim_generation(start: u32) -> u32 {
    start.saturating_mul(SWIM_GENERATIONS_PER_START)
}

/// SIGTERM and SIGINT, listened for from the moment this is made: a signal
/// that comes early (right after the listening line, say) is kept until
/// [`ShutdownSignals::recv`] and still stops the process gracefully.
pub(crate) struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Starts listening.
    pub(crate) fn new() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

/// The host name as a peer name, for a peer started without one.
fn host_name() -> NodeName {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|name| {
            let label: String = name
                .trim()
                .split('.')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            NodeName::new(label.trim_matches('-')).ok()
        })
        .unwrap_or_else(|| NodeName::new("aqueduct").expect("a valid name"))
}
