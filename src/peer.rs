//! The peer: the one task that owns the protocol [`Node`](crate::gossip::Node), and the
//! [`Handle`] the API uses to reach it.
//!
//! Owns the event loop (messages from the transport, requests from the API,
//! timers, durability notices from the store) and the order of effects: a
//! local change is sent to peers only once it is durable, and a write is
//! answered only once it is durable. Must not hold protocol logic: every
//! decision is the [`Node`](crate::gossip::Node)'s.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};

use crate::activity::{ActivityKind, ActivityLog};
use crate::certs::{NodeName, RevokedCertificates};
use crate::config::JoinAddr;
use crate::crdt::model::{
    ConfigView, FieldId, ObjectKey, OwnerId, Owners, Registration, RegistrationKey,
};
use crate::crdt::{
    Command, CommandError, Counted, Digest, LeaseKeeper, ReplicaId, Usage, ViewPart,
};
use crate::gossip::{
    ApplyReport, HeardReport, Node, NodeStats, Output, PeerId, PeerReport, PeerState, Revocation,
    RevocationError, Time, wire,
};
use crate::store::{Durability, Entry, StoreError, Writer};
use crate::tls_reload::TlsStatus;
use crate::transport::{Event, Events, Transport};

/// Requests the API may have in flight towards the peer before senders wait
/// (back-pressure instead of an unbounded queue).
pub const REQUESTS_MAX: usize = 1024;

/// What the API asks of the peer.
#[derive(Debug)]
pub enum Request {
    /// Apply a change; answered once it is durable (or refused).
    Write {
        /// The validated change.
        command: Command,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// The current configuration: all of it (shared, and built once per
    /// change), or only the parts named (built for the request, at a cost
    /// proportional to their size).
    View {
        /// `None` for everything.
        parts: Option<Vec<ViewPart>>,
        /// Where the view goes.
        reply: oneshot::Sender<Arc<ConfigView>>,
    },
    /// How many objects of one kind the document holds, and its size
    /// (for quotas).
    Usage {
        /// The kind to count, if any.
        counted: Option<Counted>,
        /// Where the usage goes.
        reply: oneshot::Sender<Usage>,
    },
    /// Identity, mesh membership and counters.
    Status {
        /// Where the status goes.
        reply: oneshot::Sender<Status>,
    },
    /// A registry heartbeat for one instance: written (and answered once
    /// durable) only when others need to learn something; otherwise kept
    /// by this peer, which then owns the instance's lease.
    Heartbeat {
        /// The instance.
        key: RegistrationKey,
        /// Its meta and lease.
        registration: Registration,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// This peer's HAProxy status changed: what its reports to other peers
    /// say from now on.
    HaproxyReport(ApplyReport),
    /// A certificate revocation to take and spread; answered once durable
    /// (or refused). A revocation known already is answered at once.
    Revoke {
        /// The revocation (its signature is checked by the node).
        revocation: Revocation,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Every revocation this peer holds.
    Revocations {
        /// Where they go, by name.
        reply: oneshot::Sender<Vec<Revocation>>,
    },
}

/// Why a write was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The replica refused the command (nothing changed).
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// The node refused the revocation (nothing changed).
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// The store failed: the change may not be durable, so it is not
    /// acknowledged. The peer stops.
    #[error("the store failed: {0}")]
    Store(String),
    /// The peer is shutting down.
    #[error(transparent)]
    ShuttingDown(#[from] PeerGone),
}

/// The peer task has stopped (shutdown): nothing can be asked of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer is shutting down")]
pub struct PeerGone;

/// A snapshot of the peer's identity, membership and counters.
#[derive(Debug, Clone)]
pub struct Status {
    /// This peer's name (from its certificate).
    pub name: String,
    /// This peer's id (derived from its name).
    pub peer_id: PeerId,
    /// SWIM generation of this peer: a block of 1024 per start of its data
    /// dir, renewed within the block when SWIM finds it declared down.
    pub generation: u32,
    /// The replica id of this data directory.
    pub replica_id: ReplicaId,
    /// Where this peer accepts gossip.
    pub gossip_addr: SocketAddr,
    /// Digest of the replicated state (equal on converged peers).
    pub digest: Digest,
    /// Highest counter seen per replica: the version vector.
    pub version_vector: Vec<(ReplicaId, u64)>,
    /// Every peer SWIM knows of.
    pub peers: Vec<PeerStatus>,
    /// Protocol counters.
    pub node: NodeStats,
    /// Shell counters.
    pub counters: Counters,
    /// Seconds since a digest exchange last found this peer in sync with
    /// another (`None`: never, e.g. alone).
    pub convergence_lag_seconds: Option<f64>,
    /// Seconds since the peer started.
    pub uptime_seconds: f64,
    /// The document's size: the encoded size of its live entries (what
    /// the document quota bounds).
    pub document_bytes: u64,
    /// Whether the configuration may be applied yet.
    pub first_sync: FirstSync,
    /// This peer's certificate and its reloads.
    pub tls: TlsStatus,
}

/// One peer as this peer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// Its id.
    pub peer_id: PeerId,
    /// Its name, once a connection presented its certificate.
    pub name: Option<String>,
    /// Where it accepts gossip.
    pub addr: SocketAddr,
    /// Its restart generation.
    pub generation: u32,
    /// SWIM's belief.
    pub state: PeerState,
    /// Whether a connection to it is open now.
    pub connected: bool,
    /// While connected: when the certificate it presented for that
    /// connection expires (Unix seconds).
    pub certificate_not_after: Option<i64>,
    /// Its latest report (digest, HAProxy status), if one reached this
    /// peer, and the seconds since it arrived.
    pub report: Option<(PeerReport, f64)>,
    /// When its certificate was revoked (Unix seconds), if a revocation
    /// covers the certificate it last presented here (or it presented none
    /// since). A certificate issued for its name after the revocation
    /// clears this.
    pub revoked_at: Option<u64>,
}

/// Counters kept by the shell (the protocol's are in [`NodeStats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Writes acknowledged to API clients.
    pub writes_acknowledged: u64,
    /// Registry heartbeats taken.
    pub heartbeats: u64,
    /// Heartbeats that had to be written (new or changed registrations).
    pub heartbeats_written: u64,
    /// Lease renewals and expiries this peer wrote for instances it owns.
    pub lease_writes: u64,
    /// Writes refused (validation passed, but the replica said no).
    pub writes_refused: u64,
    /// Remote changes applied to the state.
    pub remote_changes_applied: u64,
    /// Store transactions committed (each one fsync).
    pub store_commits: u64,
    /// Messages dropped: a peer's send queue was full, the peer could not
    /// be reached (or its stream broke), or no address was known for it.
    pub send_queue_drops: u64,
    /// Connections refused or closed because of the peer's certificate.
    pub connections_refused: u64,
    /// Received frames that broke the framing (too long, stalled or cut
    /// short); each closed its connection.
    pub frames_refused: u64,
    /// Connections this peer dialled that were established.
    pub connections_dialled: u64,
    /// Connections other peers dialled that were established.
    pub connections_accepted: u64,
    /// Connections closed because a revocation covers their certificate.
    pub connections_revoked: u64,
    /// Received messages dropped because their sender's certificate was
    /// revoked before the peer task took them.
    pub revoked_messages_dropped: u64,
}

/// The API's way to the peer task. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    /// Writes in flight (sent and not yet answered), at most
    /// [`WRITES_IN_FLIGHT_MAX`]: it bounds the answers the peer keeps
    /// waiting for the disk, whatever the number of clients.
    writes_in_flight: Arc<tokio::sync::Semaphore>,
}

/// Writes the API may have waiting for durability at once; further ones
/// wait for a place.
pub const WRITES_IN_FLIGHT_MAX: usize = 4096;

impl Handle {
    /// A handle sending into `requests` (the peer task holds the receiver).
    pub fn new(requests: mpsc::Sender<Request>) -> Handle {
        Handle {
            requests,
            writes_in_flight: Arc::new(tokio::sync::Semaphore::new(WRITES_IN_FLIGHT_MAX)),
        }
    }

    /// Applies `command`; returns once it is durable on this peer.
    pub async fn write(&self, command: Command) -> Result<(), WriteError> {
        self.acknowledged(|reply| Request::Write { command, reply })
            .await
    }

    /// Takes a registry heartbeat; returns once whatever it changed is
    /// durable on this peer.
    pub async fn heartbeat(
        &self,
        key: RegistrationKey,
        registration: Registration,
    ) -> Result<(), WriteError> {
        self.acknowledged(|reply| Request::Heartbeat {
            key,
            registration,
            reply,
        })
        .await
    }

    /// Sends a request answered once durable, within the bound on writes
    /// in flight.
    async fn acknowledged(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<(), WriteError>>) -> Request,
    ) -> Result<(), WriteError> {
        let _place = self
            .writes_in_flight
            .acquire()
            .await
            .map_err(|_| PeerGone)?;
        let (reply, answer) = oneshot::channel();
        self.send(request(reply)).await?;
        answer.await.map_err(|_| PeerGone)?
    }

    /// The whole current configuration view.
    pub async fn view(&self) -> Result<Arc<ConfigView>, PeerGone> {
        self.view_request(None).await
    }

    /// The current view of only `parts` (see [`Replica::view_of`]).
    ///
    /// [`Replica::view_of`]: crate::crdt::Replica::view_of
    pub async fn view_of(&self, parts: Vec<ViewPart>) -> Result<Arc<ConfigView>, PeerGone> {
        self.view_request(Some(parts)).await
    }

    async fn view_request(
        &self,
        parts: Option<Vec<ViewPart>>,
    ) -> Result<Arc<ConfigView>, PeerGone> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::View { parts, reply }).await?;
        answer.await.map_err(|_| PeerGone)
    }

    /// The number of objects of one kind (if asked) and the document's
    /// size.
    pub async fn usage(&self, counted: Option<Counted>) -> Result<Usage, PeerGone> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Usage { counted, reply }).await?;
        answer.await.map_err(|_| PeerGone)
    }

    /// Identity, membership and counters.
    pub async fn status(&self) -> Result<Status, PeerGone> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Status { reply }).await?;
        answer.await.map_err(|_| PeerGone)
    }

    /// Takes and spreads a revocation; returns once it is durable here.
    pub async fn revoke(&self, revocation: Revocation) -> Result<(), WriteError> {
        self.acknowledged(|reply| Request::Revoke { revocation, reply })
            .await
    }

    /// Every revocation this peer holds, by name.
    pub async fn revocations(&self) -> Result<Vec<Revocation>, PeerGone> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Revocations { reply }).await?;
        answer.await.map_err(|_| PeerGone)
    }

    /// Sets what this peer's reports say about its HAProxy.
    pub async fn report_haproxy(&self, report: ApplyReport) -> Result<(), PeerGone> {
        self.send(Request::HaproxyReport(report)).await
    }

    async fn send(&self, request: Request) -> Result<(), PeerGone> {
        self.requests.send(request).await.map_err(|_| PeerGone)
    }
}

/// Messages held back while a local change becomes durable, at most, and
/// their bytes; more are dropped (gossip is repaired by anti-entropy), so a
/// stalled disk cannot grow memory without bound.
const HELD_MAX: usize = 65_536;
const HELD_BYTES_MAX: usize = 64 << 20;
/// How long a shutdown waits for the last local changes to become durable
/// and leave.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Whether this peer may apply its configuration to its HAProxy yet. A
/// peer that starts with an empty store and joins a mesh would otherwise
/// render an empty configuration and take a serving load balancer down;
/// it waits for one complete sync with a live member first, and its
/// HAProxy (one it took over, say) keeps serving meanwhile. A store that
/// held a document is applied at once: it is what this peer last applied,
/// and a peer restarted alone (a whole mesh after a power cut) must serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstSync {
    /// Started empty with `--join`: nothing is applied until a sync.
    Waiting,
    /// Completed one sync with a live member.
    Done,
    /// Not needed: the store held a document, or no `--join` was given
    /// (the first peer of a mesh).
    NotNeeded,
    /// `--first-sync-timeout` passed before any sync (logged): applied
    /// anyway.
    TimedOut,
}

impl FirstSync {
    /// Whether the configuration may be applied.
    pub fn allows_apply(self) -> bool {
        self != FirstSync::Waiting
    }

    /// Its name in `/mesh` and `/ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            FirstSync::Waiting => "waiting",
            FirstSync::Done => "done",
            FirstSync::NotNeeded => "notNeeded",
            FirstSync::TimedOut => "timedOut",
        }
    }
}

/// How often a peer waiting for its first sync says so in the log.
const FIRST_SYNC_LOG_EVERY: Duration = Duration::from_secs(5);

/// Everything the peer task runs on, assembled by the daemon.
pub struct Parts {
    /// The protocol state machine, restored from the store.
    pub node: Node,
    /// This peer's name.
    pub name: NodeName,
    /// The transport and its events.
    pub transport: Transport,
    /// Events from the transport.
    pub events: Events,
    /// The store's writer and its durability reports.
    pub writer: Writer,
    /// Durability reports.
    pub durability: watch::Receiver<Durability>,
    /// Requests from the API.
    pub requests: mpsc::Receiver<Request>,
    /// Addresses to join through (`--join`).
    pub join: Vec<JoinAddr>,
    /// Counts changes to the document, local and remote (the HAProxy
    /// driver renders on each).
    pub changes: watch::Sender<u64>,
    /// Where peers joining and leaving are recorded.
    pub activity: ActivityLog,
    /// This peer's certificate and its reloads.
    pub tls: watch::Receiver<TlsStatus>,
    /// The revocations the transport enforces (the node's, as they come).
    pub revoked: RevokedCertificates,
    /// Whether the configuration may be applied yet (the HAProxy driver
    /// waits while it says [`FirstSync::Waiting`]).
    pub first_sync: watch::Sender<FirstSync>,
    /// How long to wait for a first sync before applying anyway (`None`:
    /// for as long as it takes).
    pub first_sync_timeout: Option<Duration>,
    /// The file that says, across restarts, that the first sync is still
    /// to come (removed when the wait ends).
    pub first_sync_pending: PathBuf,
    /// Resolves when the peer must shut down (a value or a dropped
    /// sender alike).
    pub shutdown: oneshot::Receiver<()>,
}

/// Why the peer task stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The store failed: the peer stops (fail-stop), since it could
    /// neither acknowledge writes nor keep what it learns. Acknowledged
    /// writes are safe; the ones in flight were answered with an error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store's writer reported a failed commit.
    #[error("the store failed: {0}")]
    StoreFailed(String),
}

/// Runs the peer until `parts.shutdown` resolves: then leaves the mesh,
/// lets the last durable changes go out, and closes the store.
pub async fn run(parts: Parts) -> Result<(), PeerError> {
    let Parts {
        node,
        name,
        transport,
        mut events,
        writer,
        mut durability,
        mut requests,
        join,
        changes,
        activity,
        tls,
        revoked,
        first_sync,
        first_sync_timeout,
        first_sync_pending,
        mut shutdown,
    } = parts;
    let (joined, mut joins) = mpsc::channel(join.len().max(1));
    let seed_finders = join
        .into_iter()
        .map(|addr| tokio::spawn(find_seed(transport.clone(), addr, joined.clone())))
        .collect();
    drop(joined);
    let me = OwnerId(node.peer_id().0);
    let keeper = LeaseKeeper::new(
        me,
        &node.replica().view_of(&[ViewPart::Registrations]),
        wall_clock_ms(),
    );
    let mut owners_tick = tokio::time::interval(OWNERS_EVERY);
    owners_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peer = PeerTask {
        node,
        name,
        transport,
        writer,
        start: Instant::now(),
        seeds: BTreeMap::new(),
        certificates: BTreeMap::new(),
        revoked,
        submitted: 0,
        local_gate: 0,
        durable: 0,
        snapshot_pending: None,
        held: VecDeque::new(),
        held_bytes: 0,
        acks: VecDeque::new(),
        view: None,
        changes,
        activity,
        tls,
        peer_states: BTreeMap::new(),
        keeper,
        owners: Owners {
            me: Some(me),
            unknown_up: true,
            ..Owners::default()
        },
        counters: Counters::default(),
        dropped_here: 0,
        too_large_logged: 0,
        seed_finders,
        first_sync_deadline: first_sync_timeout.map(|timeout| Instant::now() + timeout),
        first_sync,
        first_sync_pending,
    };
    let mut first_sync_log = tokio::time::interval(FIRST_SYNC_LOG_EVERY);
    first_sync_log.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = peer.instant_of(peer.node.next_deadline());
        let waiting = *peer.first_sync.borrow() == FirstSync::Waiting;
        tokio::select! {
            Some(request) = requests.recv() => peer.on_request(request).await?,
            Some(event) = events.recv() => peer.on_event(event),
            Some((seed, addr)) = joins.recv() => {
                peer.seeds.insert(seed, addr);
                let now = peer.now();
                peer.node.join(now, seed);
            }
            changed = durability.changed() => {
                let report = match changed {
                    Ok(()) => durability.borrow_and_update().clone(),
                    Err(_) => Durability {
                        failed: Some("the store writer stopped".into()),
                        ..durability.borrow().clone()
                    },
                };
                peer.on_durable(&report).await?;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = peer.now();
                peer.node.handle_timeout(now);
            }
            () = sleep_until_wall_ms(peer.keeper.next_deadline_ms()) => peer.tend_leases().await?,
            _ = owners_tick.tick() => {
                peer.observe_owners();
                peer.note_peer_states();
            }
            _ = first_sync_log.tick(), if waiting => peer.log_first_sync_wait(),
            () = sleep_until(peer.first_sync_deadline), if waiting => {
                peer.end_first_sync(FirstSync::TimedOut);
            }
            _ = &mut shutdown => break,
        }
        peer.flush_outputs(false).await?;
        if *peer.first_sync.borrow() == FirstSync::Waiting && peer.node.first_synced().is_some() {
            peer.end_first_sync(FirstSync::Done);
        }
    }
    peer.shut_down(durability).await
}

/// Looks up and dials a `--join` address until a peer answers there, then
/// reports it.
async fn find_seed(
    transport: Transport,
    join: JoinAddr,
    found: mpsc::Sender<(PeerId, SocketAddr)>,
) {
    let mut backoff = Duration::from_millis(100);
    for attempt in 1u32.. {
        match dial_any(&transport, &join).await {
            Ok((peer, addr)) => {
                let _ = found.send((peer, addr)).await;
                return;
            }
            // Said once loudly, then quietly: a seed that is down for a
            // long time must not flood the log.
            Err(error) if attempt == 1 => {
                tracing::warn!(%join, %error, "cannot reach a join address yet; retrying with backoff");
            }
            Err(error) => tracing::debug!(%join, %error, attempt, "join address still unreachable"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The first address `join` resolves to where a peer answers.
async fn dial_any(transport: &Transport, join: &JoinAddr) -> Result<(PeerId, SocketAddr), String> {
    let addrs = tokio::net::lookup_host(join.lookup_form())
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?;
    let mut last_error = "resolves to no address".to_owned();
    for addr in addrs {
        match transport.dial(addr).await {
            Ok((peer, name)) => {
                tracing::info!(%join, %addr, %name, "joining the mesh through this peer");
                return Ok((peer, addr));
            }
            Err(error) => last_error = error.to_string(),
        }
    }
    Err(last_error)
}

/// What the peer task keeps of the certificate a peer connected with.
struct ConnectedCertificate {
    name: NodeName,
    /// Its notBefore (Unix seconds): whether a revocation covers it.
    not_before: i64,
}

struct PeerTask {
    node: Node,
    name: NodeName,
    transport: Transport,
    writer: Writer,
    start: Instant,
    /// Join addresses by the peer that answered there.
    seeds: BTreeMap<PeerId, SocketAddr>,
    /// The certificate each peer that connected last connected with.
    certificates: BTreeMap<PeerId, ConnectedCertificate>,
    /// What the transport enforces.
    revoked: RevokedCertificates,
    /// Sequence number of the last entry handed to the store.
    submitted: u64,
    /// Sequence number of the last local change handed to the store:
    /// nothing is sent before it is durable, so that no dot of this
    /// replica leaves the peer before the peer could recover it.
    local_gate: u64,
    /// Everything up to this sequence number is durable.
    durable: u64,
    /// A snapshot submitted but not yet durable.
    snapshot_pending: Option<u64>,
    /// Sends waiting for `local_gate` to become durable, in order, and their
    /// bytes (bounded by [`HELD_MAX`] and [`HELD_BYTES_MAX`]).
    held: VecDeque<(u64, PeerId, Vec<u8>)>,
    held_bytes: usize,
    /// Writes to answer once their sequence number is durable, in order. The
    /// [`Handle`] bounds writes in flight to [`WRITES_IN_FLIGHT_MAX`]; a
    /// client that gave up leaves its entry until the disk catches up.
    acks: VecDeque<(u64, oneshot::Sender<Result<(), WriteError>>)>,
    /// The view as of the last change (built on demand).
    view: Option<Arc<ConfigView>>,
    /// Bumped on every change to the document, and when what this peer
    /// knows of registration owners changes.
    changes: watch::Sender<u64>,
    activity: ActivityLog,
    tls: watch::Receiver<TlsStatus>,
    /// SWIM's belief about each peer at the last look, for peer activity.
    peer_states: BTreeMap<PeerId, PeerState>,
    /// The heartbeats this peer takes.
    keeper: LeaseKeeper,
    /// What this peer knows of registration owners (from membership).
    owners: Owners,
    counters: Counters,
    /// Messages this task dropped itself, counted with the transport's
    /// drops: no address known, or [`HELD_MAX`] already waiting.
    dropped_here: u64,
    /// The node's count of messages too large to send, as last logged.
    too_large_logged: u64,
    /// The tasks dialling `--join` addresses (stopped at shutdown).
    seed_finders: Vec<tokio::task::JoinHandle<()>>,
    /// Whether the configuration may be applied yet.
    first_sync: watch::Sender<FirstSync>,
    /// When to stop waiting for a first sync (`None`: never).
    first_sync_deadline: Option<Instant>,
    /// See [`Parts::first_sync_pending`].
    first_sync_pending: PathBuf,
}

impl PeerTask {
    /// `peer`'s certificate name, or its id if it never connected.
    fn name_of(&self, peer: PeerId) -> String {
        self.certificates.get(&peer).map_or_else(
            || peer.to_string(),
            |certificate| certificate.name.to_string(),
        )
    }

    fn now(&self) -> Time {
        Time::from_micros(u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn instant_of(&self, time: Time) -> Instant {
        self.start + Duration::from_micros(time.as_micros())
    }

    async fn on_request(&mut self, request: Request) -> Result<(), PeerError> {
        match request {
            Request::Write { command, reply } => {
                if let Command::Deregister { key } = &command {
                    self.keeper.forget(key);
                }
                self.write(&command, reply).await?;
            }
            Request::Heartbeat {
                key,
                registration,
                reply,
            } => {
                self.counters.heartbeats += 1;
                let part = [ViewPart::Service(key.service.clone())];
                let current = self.node.replica().view_of(&part);
                let command = self.keeper.heartbeat(
                    key.clone(),
                    registration,
                    current.registrations.get(&key),
                    wall_clock_ms(),
                );
                match command {
                    Some(command) => {
                        self.counters.heartbeats_written += 1;
                        self.write(&command, reply).await?;
                    }
                    // The registration as replicated already says all
                    // others need; answered once what came before is
                    // durable (the write it repeats may not be yet).
                    None => {
                        self.acks.push_back((self.submitted, reply));
                        self.answer_durable_writes();
                    }
                }
            }
            Request::View { parts: None, reply } => {
                let (node, owners) = (&self.node, &self.owners);
                let view = self.view.get_or_insert_with(|| {
                    Arc::new(ConfigView {
                        owners: owners.clone(),
                        ..node.replica().view()
                    })
                });
                let _ = reply.send(view.clone());
            }
            Request::View {
                parts: Some(parts),
                reply,
            } => {
                let view = ConfigView {
                    owners: self.owners.clone(),
                    ..self.node.replica().view_of(&parts)
                };
                let _ = reply.send(Arc::new(view));
            }
            Request::Usage { counted, reply } => {
                let _ = reply.send(self.node.replica().usage(counted));
            }
            Request::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Request::HaproxyReport(report) => self.node.set_haproxy_report(Some(report)),
            Request::Revoke { revocation, reply } => match self.node.revoke(revocation) {
                Ok(_) => {
                    self.flush_outputs(true).await?;
                    // A known one waits for what came before, like an
                    // unchanged write: it may not be durable yet.
                    self.acks.push_back((self.submitted, reply));
                    self.answer_durable_writes();
                }
                Err(refused) => {
                    let _ = reply.send(Err(WriteError::Revocation(refused)));
                }
            },
            Request::Revocations { reply } => {
                let _ = reply.send(self.node.revocations().cloned().collect());
            }
        }
        Ok(())
    }

    /// Executes a local change; `reply` is answered once it is durable.
    async fn write(
        &mut self,
        command: &Command,
        reply: oneshot::Sender<Result<(), WriteError>>,
    ) -> Result<(), PeerError> {
        let now = self.now();
        match self.node.execute(now, wall_clock_ms(), command) {
            Ok(_) => {
                self.flush_outputs(true).await?;
                // An unchanged write still waits for every earlier entry:
                // the write it repeats may not be durable yet.
                self.acks.push_back((self.submitted, reply));
                self.answer_durable_writes();
            }
            Err(refused) => {
                self.counters.writes_refused += 1;
                let _ = reply.send(Err(WriteError::Refused(refused)));
            }
        }
        Ok(())
    }

    /// Writes the lease expiries and renewals that are due.
    async fn tend_leases(&mut self) -> Result<(), PeerError> {
        let view = ConfigView {
            owners: self.owners.clone(),
            ..self.node.replica().view_of(&[ViewPart::Registrations])
        };
        let replica = self.node.replica();
        let contested = |key: &RegistrationKey| {
            let object = ObjectKey::Registration(key.clone());
            replica.concurrent_values(&object, FieldId::Lease) > 1
        };
        let commands = self.keeper.tick(&view, wall_clock_ms(), contested);
        for command in commands {
            let now = self.now();
            // Only commands on registrations that exist come out of the
            // keeper; a refusal means one vanished meanwhile: nothing to do.
            if self.node.execute(now, wall_clock_ms(), &command).is_ok() {
                self.counters.lease_writes += 1;
                self.flush_outputs(true).await?;
            }
        }
        Ok(())
    }

    /// Brings [`Owners`] up to date with membership; a change renders the
    /// cached view stale (it decides which registrations are live).
    fn observe_owners(&mut self) {
        let mut owners = Owners {
            me: Some(OwnerId(self.node.peer_id().0)),
            unknown_up: self.start.elapsed() < STARTUP_VOUCHES_FOR,
            ..Owners::default()
        };
        for (member, state) in self.node.peers() {
            let id = OwnerId(member.peer.0);
            match state {
                PeerState::Alive => {
                    owners.up.insert(id);
                }
                PeerState::Suspect | PeerState::Down => {
                    // The clock starts when this peer first saw an owner it
                    // knew up go silent; one never seen up is unknown (its
                    // instances are judged by their replicated renewal).
                    let since = self
                        .owners
                        .silent_since_ms
                        .get(&id)
                        .copied()
                        .or_else(|| self.owners.up.contains(&id).then(wall_clock_ms));
                    if let Some(since) = since {
                        owners.silent_since_ms.insert(id, since);
                    }
                }
            }
        }
        // A peer up again under a later identity is up, whatever an older
        // one of it says.
        let up = owners.up.clone();
        owners.silent_since_ms.retain(|id, _| !up.contains(id));
        if owners != self.owners {
            self.owners = owners;
            self.view = None;
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Records every change of SWIM's belief about a peer since the last
    /// call, and closes the connection to a peer declared down (see
    /// [`Transport::disconnect`]). A peer listed under several generations
    /// counts as its liveliest one (a restarted peer's old identity is
    /// down, its new one alive).
    fn note_peer_states(&mut self) {
        let mut states: BTreeMap<PeerId, PeerState> = BTreeMap::new();
        for (member, state) in self.node.peers() {
            let entry = states.entry(member.peer).or_insert(state);
            *entry = (*entry).min(state);
        }
        for (peer, state) in &states {
            let before = self.peer_states.get(peer).copied();
            if before != Some(*state) {
                let name = self.name_of(*peer);
                self.activity.record(ActivityKind::Peer {
                    peer: name,
                    from: before.map(PeerState::as_str),
                    to: state.as_str(),
                });
                if *state == PeerState::Down {
                    self.transport.disconnect(*peer);
                }
            }
        }
        self.peer_states = states;
    }

    /// Logs each change taken from another peer (target `aqueduct::audit`,
    /// like the API's writes) and shows it in the activity stream.
    fn record_remote_changes(&mut self) {
        for change in self.node.take_remote_changes() {
            let from = self.name_of(change.from);
            let origin_replica = change.origin.map(|replica| replica.to_string());
            let objects: Vec<String> = change.objects.iter().map(ToString::to_string).collect();
            tracing::info!(
                target: "aqueduct::audit",
                from = %from,
                origin_replica = origin_replica.as_deref().unwrap_or("anti-entropy"),
                objects = ?objects,
                objects_total = change.objects_total,
                "remote change"
            );
            self.activity.record(ActivityKind::Change {
                from,
                origin_replica,
                objects,
                objects_total: change.objects_total,
            });
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message { from, bytes, .. } => {
                let now = self.now();
                self.node.handle_message(now, wall_clock_ms(), from, &bytes);
                self.record_remote_changes();
            }
            Event::Connected {
                peer,
                name,
                not_before,
            } => {
                tracing::debug!(%name, %peer, "connected");
                self.certificates
                    .insert(peer, ConnectedCertificate { name, not_before });
            }
            Event::Revoked { peer } => {
                let now = self.now();
                self.node.evict(now, peer);
            }
        }
    }

    /// Carries out the node's outputs in order. `local` marks the outputs
    /// of a local write, whose `Persist` gates every later send.
    async fn flush_outputs(&mut self, local: bool) -> Result<(), PeerError> {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Persist(delta) => {
                    self.submitted = self.writer.submit(Entry::Delta(delta)).await?;
                    self.view = None;
                    self.changes.send_modify(|n| *n += 1);
                    if local {
                        self.local_gate = self.submitted;
                    } else {
                        self.counters.remote_changes_applied += 1;
                    }
                }
                Output::Revoked(revocation) => {
                    tracing::warn!(
                        name = %revocation.name,
                        revoked_at = revocation.revoked_at,
                        "certificate revoked"
                    );
                    // Enforced at once; spread (every later send) only
                    // once durable, like a local change.
                    self.revoked.insert(revocation.clone());
                    self.submitted = self.writer.submit(Entry::Revocation(revocation)).await?;
                    self.local_gate = self.submitted;
                }
                Output::Send { to, bytes } => {
                    if self.local_gate > self.durable {
                        if self.held.len() < HELD_MAX
                            && self.held_bytes + bytes.len() <= HELD_BYTES_MAX
                        {
                            self.held_bytes += bytes.len();
                            self.held.push_back((self.local_gate, to, bytes));
                        } else {
                            self.dropped_here += 1;
                        }
                    } else {
                        self.transmit(to, bytes);
                    }
                }
            }
        }
        let too_large = self.node.messages_too_large();
        if too_large > self.too_large_logged {
            tracing::warn!(
                messages = too_large - self.too_large_logged,
                limit_bytes = wire::MESSAGE_BYTES_MAX,
                "gossip messages over the size limit were not sent"
            );
            self.too_large_logged = too_large;
        }
        Ok(())
    }

    /// Says, while this peer waits for its first sync, how far it got.
    fn log_first_sync_wait(&self) {
        let stats = self.node.stats();
        tracing::info!(
            document_bytes = self.node.replica().document_bytes(),
            parts_asked = stats.sync_chunks_asked,
            members = self.node.members().count(),
            "started empty: waiting for a first sync with a live member before applying anything \
             to HAProxy"
        );
    }

    /// Ends the wait for a first sync, the configuration may be applied.
    fn end_first_sync(&mut self, how: FirstSync) {
        let bytes = self.node.replica().document_bytes();
        let waited_s = self.start.elapsed().as_secs_f64();
        match how {
            FirstSync::TimedOut => tracing::warn!(
                document_bytes = bytes,
                waited_s,
                "no sync with a live member within --first-sync-timeout: applying what this peer \
                 holds"
            ),
            _ => tracing::info!(
                document_bytes = bytes,
                waited_s,
                "first sync done: applying the configuration"
            ),
        }
        if let Err(error) = std::fs::remove_file(&self.first_sync_pending)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            // The next start would wait for a sync again: safe, and said.
            tracing::warn!(
                path = %self.first_sync_pending.display(),
                %error,
                "cannot remove the first-sync marker"
            );
        }
        self.first_sync.send_replace(how);
    }

    fn transmit(&mut self, to: PeerId, bytes: Vec<u8>) {
        // SWIM's address is the peer's own word on where it listens; a
        // join address is the fallback before SWIM has spoken.
        let addr = self
            .node
            .address_of(to)
            .or_else(|| self.seeds.get(&to).copied());
        match addr {
            Some(addr) => self.transport.send(to, addr, bytes),
            None => self.dropped_here += 1,
        }
    }

    async fn on_durable(&mut self, report: &Durability) -> Result<(), PeerError> {
        self.counters.store_commits = report.commits;
        if let Some(failed) = &report.failed {
            for (_, reply) in self.acks.drain(..) {
                let _ = reply.send(Err(WriteError::Store(failed.clone())));
            }
            return Err(PeerError::StoreFailed(failed.clone()));
        }
        self.durable = report.durable_seq;
        while self
            .held
            .front()
            .is_some_and(|(gate, ..)| *gate <= self.durable)
        {
            let (_, to, bytes) = self.held.pop_front().expect("front exists");
            self.held_bytes -= bytes.len();
            self.transmit(to, bytes);
        }
        self.answer_durable_writes();
        if self.snapshot_pending.is_some_and(|seq| seq <= self.durable) {
            self.snapshot_pending = None;
        }
        if self.snapshot_pending.is_none() && report.snapshot_due() {
            let state = self.node.replica().full_state();
            self.submitted = self.writer.submit(Entry::Snapshot(state)).await?;
            self.snapshot_pending = Some(self.submitted);
        }
        Ok(())
    }

    fn answer_durable_writes(&mut self) {
        while self
            .acks
            .front()
            .is_some_and(|(seq, _)| *seq <= self.durable)
        {
            let (_, reply) = self.acks.pop_front().expect("front exists");
            if reply.send(Ok(())).is_ok() {
                self.counters.writes_acknowledged += 1;
            }
        }
    }

    fn status(&self) -> Status {
        let now = self.now();
        let identity = self.node.identity();
        let connected = self.transport.connected();
        let transport = self.transport.stats();
        let replica = self.node.replica();
        let mut version_vector: Vec<(ReplicaId, u64)> = Vec::new();
        for (id, range) in replica.context().ranges() {
            match version_vector.last_mut() {
                Some((last, counter)) if *last == id => *counter = (*counter).max(*range.end()),
                _ => version_vector.push((id, *range.end())),
            }
        }
        let stats = self.node.stats();
        let reports: BTreeMap<PeerId, &HeardReport> = self
            .node
            .reports()
            .map(|heard| (heard.report.peer, heard))
            .collect();
        let revocations: BTreeMap<PeerId, &Revocation> = self
            .node
            .revocations()
            .map(|revocation| (revocation.peer(), revocation))
            .collect();
        let revoked_at = |peer: PeerId| {
            let revocation = revocations.get(&peer)?;
            let covered = self
                .certificates
                .get(&peer)
                .is_none_or(|certificate| revocation.covers(certificate.not_before));
            covered.then_some(revocation.revoked_at)
        };
        Status {
            name: self.name.to_string(),
            peer_id: identity.peer,
            generation: identity.generation,
            replica_id: replica.id(),
            gossip_addr: identity.addr,
            digest: replica.digest(),
            version_vector,
            peers: self
                .node
                .peers()
                .map(|(id, state)| {
                    let heard = reports.get(&id.peer);
                    PeerStatus {
                        peer_id: id.peer,
                        name: self
                            .certificates
                            .get(&id.peer)
                            .map(|certificate| certificate.name.to_string()),
                        addr: id.addr,
                        generation: id.generation,
                        state,
                        connected: connected.contains_key(&id.peer),
                        certificate_not_after: connected.get(&id.peer).copied(),
                        report: heard
                            .map(|h| (h.report.clone(), now.since(h.heard_at).as_secs_f64())),
                        revoked_at: revoked_at(id.peer),
                    }
                })
                .collect(),
            convergence_lag_seconds: stats.last_in_sync.map(|at| now.since(at).as_secs_f64()),
            node: stats,
            counters: Counters {
                send_queue_drops: transport.send_drops + self.dropped_here,
                connections_refused: transport.connections_refused,
                frames_refused: transport.frames_refused,
                connections_dialled: transport.connections_dialled,
                connections_accepted: transport.connections_accepted,
                connections_revoked: transport.connections_revoked,
                revoked_messages_dropped: transport.revoked_messages_dropped,
                ..self.counters.clone()
            },
            uptime_seconds: self.start.elapsed().as_secs_f64(),
            document_bytes: replica.document_bytes(),
            first_sync: *self.first_sync.borrow(),
            tls: self.tls.borrow().clone(),
        }
    }

    /// Leaves the mesh, lets held changes become durable and go out, and
    /// closes the store.
    async fn shut_down(
        mut self,
        mut durability: watch::Receiver<Durability>,
    ) -> Result<(), PeerError> {
        for finder in &self.seed_finders {
            finder.abort();
        }
        let now = self.now();
        self.node.leave(now);
        self.flush_outputs(false).await?;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while !self.held.is_empty() {
            match tokio::time::timeout_at(deadline, durability.changed()).await {
                Ok(Ok(())) => {
                    let report = durability.borrow_and_update().clone();
                    self.on_durable(&report).await?;
                }
                _ => break,
            }
        }
        self.transport.shutdown(SHUTDOWN_GRACE).await;
        self.writer.close().await?;
        Ok(())
    }
}

/// How long a starting peer takes owners it does not know yet as up (it
/// serves its instances from its own state until membership arrives).
const STARTUP_VOUCHES_FOR: Duration = Duration::from_secs(10);
/// How often membership is read for registration owners.
const OWNERS_EVERY: Duration = Duration::from_millis(100);

/// Sleeps until `at`, or for ever.
pub(crate) async fn sleep_until(at: Option<impl Into<tokio::time::Instant>>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until wall-clock `at_ms`, or forever for `None`.
async fn sleep_until_wall_ms(at_ms: Option<u64>) {
    match at_ms {
        Some(at) => {
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(wall_clock_ms()))).await;
        }
        None => std::future::pending().await,
    }
}

/// Milliseconds since the Unix epoch: the stamp of local writes, and the
/// clock against which the API judges leases. A clock before 1970 reads as
/// 0 (every lease looks fresh) rather than failing every request.
pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
