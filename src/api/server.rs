//! The REST API's HTTP server: its own accept loop serving the router
//! over HTTP/1.1 (hyper), optionally behind TLS (rustls), so that slow or
//! greedy clients cannot take the API from others.
//!
//! - **A header-read timeout** (`--api-header-timeout`, 10 s): a connection
//!   that has not sent a whole request head within it is closed. The clock
//!   starts whenever hyper waits for a head: on a new connection that sends
//!   nothing, and on a keep-alive connection between requests, so an idle
//!   keep-alive connection is closed after it too. With TLS the handshake
//!   must finish within the same time first (a client that never sends a
//!   ClientHello is closed), then the head has its own.
//! - **An idle timeout** (`--api-idle-timeout`, 60 s): a connection on which
//!   no byte moved either way for that long is closed: a request body that
//!   stalls, a client that stops reading its answer or its event stream.
//!   It must exceed the event streams' 15 s keep-alive.
//! - **Connection caps**: in total (`--api-max-connections`, 512, which
//!   keeps the peer's file descriptors within systemd's default soft limit
//!   of 1024) and per client IP address (`--api-max-connections-per-ip`,
//!   64; an IPv6 /64 is one client), so that one client cannot take every
//!   place. A connection beyond
//!   a cap is accepted and closed at once (the kernel's backlog does not
//!   fill with it), and counted.
//!
//! Every request carries the client's address as axum's
//! `ConnectInfo<SocketAddr>` (the event streams are capped per address
//! too). `/metrics` reads [`ConnectionStats`] through a request extension.
//!
//! Owns connections: accepting, capping, timing out, TLS, and their
//! graceful end. Must not look into requests (that is the router's).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;

use super::ip_slots::{IpSlots, Refused};
use crate::certs::{CertError, PemPair, ReplaceableKey};

/// Time a client has to send a request head (and to finish a TLS handshake).
pub const HEADER_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// The longest header-read timeout accepted: the bound.
pub const HEADER_TIMEOUT_MAX: Duration = Duration::from_secs(10);
/// Time a connection may stay with no byte moving either way.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// Connections open at once, from every client together.
pub const MAX_CONNECTIONS_DEFAULT: usize = 512;
/// Connections open at once from one client IP address.
pub const MAX_CONNECTIONS_PER_IP_DEFAULT: usize = 64;
/// File descriptors the peer keeps for itself beyond the API's connections
/// (store, gossip sockets, HAProxy's sockets and pipes, log files).
const FDS_RESERVED: u64 = 256;
/// Connections the kernel may hold for the accept loop: a burst of a
/// thousand connects must not overflow it, or the handshakes of every
/// other client wait for a retransmission (1 s) too. The kernel caps it at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;
/// A pause after an accept error such as running out of file descriptors,
/// so that the loop does not spin while it lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How connections are served.
#[derive(Clone)]
pub struct ServerOptions {
    /// Time to send a whole request head (and finish a TLS handshake).
    pub header_timeout: Duration,
    /// Time with no byte moving either way before a connection is closed.
    pub idle_timeout: Duration,
    /// Connections open at once in total.
    pub max_connections: usize,
    /// Connections open at once from one client IP address.
    pub max_connections_per_ip: usize,
    /// HTTPS, when set.
    pub tls: Option<ApiTls>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            header_timeout: HEADER_TIMEOUT_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP_DEFAULT,
            tls: None,
        }
    }
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The API's TLS identity (`--api-tls-cert`, `--api-tls-key`). Clones
/// share the certificate served: [`ApiTls::replace`] on one reaches the
/// handshakes of a server holding another.
#[derive(Clone)]
pub struct ApiTls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The DNS names of the certificate: clients reach the API by them,
    /// so they are among the API's own `Host` names.
    host_names: Vec<String>,
    /// The certificate and key every new handshake presents.
    served: Arc<ReplaceableKey>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    cert_path: PathBuf,
    key_path: PathBuf,
    /// When the certificate served expires (Unix seconds).
    not_after: i64,
    /// The [`PemPair::fingerprint`] of the files it came from.
    fingerprint: u64,
}

/// Why TLS material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ApiTlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate or key file could not be read.
    #[error(transparent)]
    Files(#[from] CertError),
    /// A file holds no usable PEM of the kind expected.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A replacement certificate names other hosts than the one served
    /// since start: the API's own `Host` names were taken from that one.
    #[error(
        "{path}: the certificate is for {found:?}, but the API serves {serving:?} (its Host \
         names); restart the peer to change them"
    )]
    OtherNames {
        /// The certificate file.
        path: PathBuf,
        /// The DNS names served.
        serving: Vec<String>,
        /// The DNS names of the replacement.
        found: Vec<String>,
    },
    /// rustls refused the material (a key that does not match, say).
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A checked certificate chain and key, ready to serve.
struct Checked {
    key: CertifiedKey,
    host_names: Vec<String>,
    not_after: i64,
}

impl ApiTls {
    /// Loads a PEM certificate chain and its private key.
    pub fn load(cert: &Path, key: &Path) -> Result<ApiTls, ApiTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = PemPair::read(cert, key)?;
        let checked = check(&pair, &provider)?;
        let served = ReplaceableKey::new(checked.key);
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(served.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ApiTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            host_names: checked.host_names,
            served,
            provider,
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            not_after: checked.not_after,
            fingerprint: pair.fingerprint(),
        })
    }

    /// Serves the certificate and key of `pair` from the next handshake
    /// on (open connections keep theirs), if they pass the checks of
    /// [`ApiTls::load`] and name the same hosts; if not, nothing changes.
    /// Returns when the new certificate expires (Unix seconds).
    pub fn replace(&mut self, pair: &PemPair) -> Result<i64, ApiTlsError> {
        let checked = check(pair, &self.provider)?;
        if checked.host_names != self.host_names {
            return Err(ApiTlsError::OtherNames {
                path: pair.cert().0.to_owned(),
                serving: self.host_names.clone(),
                found: checked.host_names,
            });
        }
        self.served.replace(checked.key);
        self.not_after = checked.not_after;
        self.fingerprint = pair.fingerprint();
        Ok(self.not_after)
    }

    /// The certificate's DNS names (lower case), which a request's `Host`
    /// may carry.
    pub fn host_names(&self) -> &[String] {
        &self.host_names
    }

    /// The certificate file and the key file.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert_path, &self.key_path)
    }

    /// When the certificate served expires (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The [`PemPair::fingerprint`] of the files the certificate served
    /// came from.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// Checks that the key of `pair` belongs to the first certificate of its
/// chain.
fn check(
    pair: &PemPair,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Checked, ApiTlsError> {
    let ((cert_path, cert), (key_path, key)) = (pair.cert(), pair.key());
    let chain = certificates_in(cert_path, cert)?;
    let pem = |path: &Path, reason: String| ApiTlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| pem(cert_path, format!("not a certificate: {e}")))?;
    let host_names = dns_names(&leaf);
    let not_after = leaf.validity().not_after.timestamp();
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| pem(key_path, format!("no private key: {e}")))?;
    Ok(Checked {
        key: CertifiedKey::from_der(chain, key, provider)?,
        host_names,
        not_after,
    })
}

/// A client's TLS configuration trusting the certificates in `ca_pem` (for
/// `ctl` and `register` with `--ca FILE`): hand it to reqwest's
/// `ClientBuilder::use_preconfigured_tls` (reqwest feature
/// `rustls-no-provider`), or to tokio-rustls directly.
pub fn client_tls_config(ca_pem: &Path) -> Result<rustls::ClientConfig, ApiTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(ca_pem)? {
        roots.add(certificate)?;
    }
    Ok(client_tls_trusting(roots))
}

/// A client's TLS configuration (rustls with ring, TLS 1.3, HTTP/1.1)
/// trusting exactly `roots`.
pub fn client_tls_trusting(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    // ring's provider supports the safe defaults (TLS 1.3 and 1.2) by
    // construction; only a provider without them could fail here.
    .with_safe_default_protocol_versions()
    .expect("ring supports rustls's safe default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

fn read(path: &Path) -> Result<Vec<u8>, ApiTlsError> {
    std::fs::read(path).map_err(|source| ApiTlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file; none is an error.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ApiTlsError> {
    certificates_in(path, &read(path)?)
}

/// Every certificate in `pem`, read from `path`; none is an error.
fn certificates_in(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ApiTlsError> {
    let refuse = |reason: String| ApiTlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refuse(format!("bad PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(refuse("no certificate".to_owned()));
    }
    Ok(certificates)
}

/// The DNS names among `certificate`'s subject alternative names, lower
/// case.
fn dns_names(certificate: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(names)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Connections refused, timed out and open, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    refused_global: AtomicU64,
    refused_per_ip: AtomicU64,
    timed_out_header: AtomicU64,
    timed_out_idle: AtomicU64,
    /// Set once the server runs (the gauge reads the slots).
    slots: std::sync::OnceLock<Arc<IpSlots>>,
}

/// A reading of [`ConnectionStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionCounts {
    /// Open now.
    pub(crate) open: u64,
    /// Refused because every place was taken.
    pub(crate) refused_global: u64,
    /// Refused because the client's address held its share.
    pub(crate) refused_per_ip: u64,
    /// Closed for not sending a request head (or a TLS handshake) in time.
    pub(crate) timed_out_header: u64,
    /// Closed for moving no byte for the idle timeout.
    pub(crate) timed_out_idle: u64,
}

impl ConnectionStats {
    pub(crate) fn read(&self) -> ConnectionCounts {
        ConnectionCounts {
            open: self
                .slots
                .get()
                .map_or(0, |slots| u64::try_from(slots.taken()).unwrap_or(u64::MAX)),
            refused_global: self.refused_global.load(Ordering::Relaxed),
            refused_per_ip: self.refused_per_ip.load(Ordering::Relaxed),
            timed_out_header: self.timed_out_header.load(Ordering::Relaxed),
            timed_out_idle: self.timed_out_idle.load(Ordering::Relaxed),
        }
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every connection task shares.
struct Shared {
    app: Router,
    options: ServerOptions,
    stats: Arc<ConnectionStats>,
}

/// Serves `app` on `listener` until `shutdown` turns true; then stops
/// accepting, lets every connection finish the request it is serving and
/// returns once all are closed (the caller bounds how long it waits).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = IpSlots::new(options.max_connections, options.max_connections_per_ip);
    let stats = Arc::new(ConnectionStats::default());
    let _ = stats.slots.set(Arc::clone(&slots));
    let shared = Arc::new(Shared {
        app: app.layer(axum::Extension(Arc::clone(&stats))),
        options,
        stats,
    });
    // Bounded by the connection cap: each task holds a place.
    let mut connections = JoinSet::new();
    let stop_connections = shutdown.clone();
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => {
                let (stream, client) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, most likely: the caps
                        // are set above what the process may open.
                        tracing::warn!(error = %e, "API: accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let place = match slots.try_acquire(Some(client.ip())) {
                    Ok(place) => place,
                    Err(refused) => {
                        ConnectionStats::count(match refused {
                            Refused::Global => &shared.stats.refused_global,
                            Refused::PerIp => &shared.stats.refused_per_ip,
                        });
                        tracing::debug!(%client, reason = refused.as_str(), "API: connection refused");
                        drop(stream);
                        continue;
                    }
                };
                let shared = Arc::clone(&shared);
                let shutdown = stop_connections.clone();
                connections.spawn(async move {
                    connection(stream, client, &shared, shutdown).await;
                    drop(place);
                });
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// A listener for the API on `addr`, with room for bursts of connects.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restart may bind again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` answers is not `Send`: drop it here.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Serves one connection: TLS first if configured, then HTTP/1.1.
async fn connection(
    stream: TcpStream,
    client: SocketAddr,
    shared: &Shared,
    shutdown: watch::Receiver<bool>,
) {
    // Answers are small and interactive: send them without delay.
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let stream = Watched {
        inner: stream,
        activity: activity.clone(),
    };
    match &shared.options.tls {
        None => http(stream, client, shared, &activity, shutdown).await,
        Some(ApiTls { acceptor, .. }) => {
            match tokio::time::timeout(shared.options.header_timeout, acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => http(tls, client, shared, &activity, shutdown).await,
                Ok(Err(e)) => tracing::debug!(%client, error = %e, "API: TLS handshake failed"),
                Err(_) => ConnectionStats::count(&shared.stats.timed_out_header),
            }
        }
    }
}

/// Serves HTTP/1.1 on `io` until the client or the server closes it.
async fn http<I>(
    io: I,
    client: SocketAddr,
    shared: &Shared,
    activity: &Activity,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = shared.app.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(client));
        app.clone().call(request.map(axum::body::Body::new))
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.options.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let idle = activity.idle_for(shared.options.idle_timeout);
    tokio::pin!(idle);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    if e.is_timeout() {
                        ConnectionStats::count(&shared.stats.timed_out_header);
                    }
                    tracing::debug!(%client, error = %e, "API: connection ended");
                }
                return;
            }
            () = &mut idle => {
                ConnectionStats::count(&shared.stats.timed_out_idle);
                tracing::debug!(%client, "API: idle connection closed");
                return;
            }
            () = stopped(&mut shutdown), if !stopping => {
                // Finishes the request in flight, then closes.
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When a byte last moved on a connection, either way.
#[derive(Debug, Clone)]
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte moved.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let since = last.elapsed();
            if since >= limit {
                return;
            }
            tokio::time::sleep(limit - since).await;
        }
    }
}

/// A stream that records in its [`Activity`] every time bytes move.
struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises this process's soft limit on open files to its hard limit, so
/// that the connection caps, not the file-descriptor limit, decide who is
/// served (systemd starts services with a soft limit of 1024 and a hard
/// limit far above). Returns the soft limit in force (`None`: unlimited).
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            limit = getrlimit(Resource::Nofile);
        }
    }
    limit.current
}

/// Warns when the open-files limit is below what `max_connections` API
/// connections and the rest of the peer may use: the process would run out
/// of descriptors before the cap refuses anyone, and fail everyone.
pub fn check_open_files_limit(soft_limit: Option<u64>, max_connections: usize) {
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(FDS_RESERVED);
    if let Some(soft) = soft_limit
        && soft < needed
    {
        tracing::warn!(
            open_files = soft,
            needed,
            "the open-files limit is below --api-max-connections plus what the peer needs \
             for itself: lower --api-max-connections or raise LimitNOFILE"
        );
    }
}
