//! The transport: QUIC with mutual TLS between peers, one connection per
//! peer pair, each message a length-prefixed frame on a long-lived
//! unidirectional stream.
//!
//! Owns the QUIC endpoint, the connections and one bounded send queue per
//! peer. Identities come only from certificates: a peer is whoever its
//! certificate (signed by the cluster CA) names, whatever its messages say.
//! Must not interpret messages: bytes go to the peer task as they came.
//!
//! Sending never blocks the caller: a full queue or an unreachable peer
//! drops the message (counted), because gossip is repaired by anti-entropy
//! and a stalled peer must not stall the others. A peer that cannot be
//! reached is dialled again only after a backoff.
//!
//! Receiving is bounded the same way: a frame's length is checked before
//! anything is reserved for it, its buffer grows only with the bytes that
//! arrive, and a frame that breaks the framing (too long, or stalled or
//! ended short) is counted and closes its connection. What a well-framed
//! message says is the peer task's business (garbage is dropped and counted
//! there).
//!
//! Received frames are fair between peers, because a member holding one
//! certificate must not be able to silence the others by flooding. Until
//! the peer task has handled it, a frame holds room (one message, and the
//! bytes its length announces) in two budgets: its peer's own share
//! ([`RECEIVE_PEER_QUEUE_MAX`], [`RECEIVE_PEER_BYTES_MAX`]), then the
//! budget of all peers together ([`RECEIVE_QUEUE_MAX`],
//! [`RECEIVE_QUEUE_BYTES_MAX`]), which bounds memory whatever the number of
//! peers (shares times peers would not: a mesh may have thousands). The
//! share is taken first, so a peer whose share is full waits in a queue of
//! its own frames only: its reading stops (QUIC flow control slows that
//! sender alone) and its frames beyond the share hold no place in the
//! common budget's queue. A share is a quarter of the common budget, so one
//! peer can never take what the others need: frames wait for the common
//! budget only once the other peers hold three quarters of it, and then
//! behind at most one share of the flooder's; it takes four members
//! flooding at once to fill it. A share belongs to the peer (its certificate identity), not to a
//! connection, so dialling again and again gains nothing. Admitted frames
//! wait in one queue per peer, and the peer task takes them in turns
//! ([`Events`]): an honest peer's frame waits behind at most one frame of
//! each other peer, never behind a flooder's backlog.
//!
//! Revoked certificates ([`RevokedCertificates`]) are refused at the
//! handshake by the TLS configuration; a revocation that arrives while a
//! connection with such a certificate is open closes that connection at
//! once (each connection's reader watches the list), and its frames still
//! waiting for the peer task are dropped when their turn comes, never
//! handed over (counted).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use crate::certs::{
    self, CertError, CertificateInfo, MESH_SERVER_NAME, NodeName, RevokedCertificates, TlsIdentity,
};
use crate::gossip::PeerId;
use crate::gossip::wire::MESSAGE_BYTES_MAX;

/// Messages queued towards one peer before new ones are dropped...
const SEND_QUEUE_MAX: usize = 4096;
/// ...and their bytes.
const SEND_QUEUE_BYTES_MAX: usize = 64 << 20;
/// Received messages not yet handled by the peer task, from all peers
/// together, before readers wait (QUIC flow control then slows the senders
/// down)...
const RECEIVE_QUEUE_MAX: usize = 8192;
/// ...and their bytes: a frame is read only once its length fits in this
/// budget, which it holds until the peer task has handled it.
const RECEIVE_QUEUE_BYTES_MAX: usize = 256 << 20;
/// One peer's share of [`RECEIVE_QUEUE_MAX`]: a quarter, so that a flooding
/// peer leaves the others most of it. Public so that tests can fill a share.
pub const RECEIVE_PEER_QUEUE_MAX: usize = RECEIVE_QUEUE_MAX / 4;
/// One peer's share of [`RECEIVE_QUEUE_BYTES_MAX`]: a quarter, two of the
/// largest frames (one being handled while the next is read).
const RECEIVE_PEER_BYTES_MAX: usize = RECEIVE_QUEUE_BYTES_MAX / 4;
const _: () = assert!(RECEIVE_PEER_BYTES_MAX >= 2 * MESSAGE_BYTES_MAX);
/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest wait before dialling an unreachable peer again. The
/// longest is near SWIM's rejoin interval (500 ms), so that a peer reachable
/// again after a partition is dialled about as soon as SWIM asks for it;
/// a failing dial is a few small handshake packets.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Keep-alives hold connections open (and notice dead ones) between
/// bursts of gossip.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams a peer may open at once: one is used; the bound caps what a
/// misbehaving peer can make us buffer.
const STREAMS_MAX: u32 = 4;
/// Two connections established this close together are a simultaneous
/// open by both peers (both keep the same one); a later one replaces a
/// connection that is probably dead (the peer restarted). Each side judges
/// by its own clock, so near the boundary the two can pick differently;
/// then each closes the other's choice after [`LOSER_GRACE`] and the next
/// send dials again, which settles it.
const SIMULTANEOUS_OPEN: Duration = Duration::from_secs(2);
/// A connection that lost to another stays open this long, so that frames
/// already in flight on it still arrive.
const LOSER_GRACE: Duration = Duration::from_secs(2);
/// A frame whose writing makes no progress for this long (no piece of
/// [`WRITE_PIECE`] bytes accepted) means the peer stopped reading while its
/// QUIC stack still answers keep-alives: the connection is closed rather
/// than left to block the link for good. Long, because a busy peer slows
/// its senders down this way on purpose (its receive budget is full).
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Frames are written in pieces of this size; each piece restarts
/// [`WRITE_TIMEOUT`], so a large frame on a slow path is not cut off.
const WRITE_PIECE: usize = 64 << 10;
/// A frame whose bytes stop coming for this long (a length announced, then
/// silence) is refused and its connection closed: it holds a share of the
/// receive budget as large as the length it announced, which must not stay
/// taken for good. As long as a connection may stay silent: a peer whose
/// packets stopped for that long is gone anyway.
const FRAME_STALL_TIMEOUT: Duration = IDLE_TIMEOUT;
/// After the links are flushed at shutdown, how long closing the endpoint
/// may take.
const CLOSE_BUDGET: Duration = Duration::from_millis(500);

/// What the transport tells the peer task.
#[derive(Debug)]
pub enum Event {
    /// A message from an authenticated peer.
    Message {
        /// The sender, from its certificate.
        from: PeerId,
        /// That certificate (a revoked one's messages are never handed
        /// over).
        certificate: Arc<CertificateInfo>,
        /// The bytes as received (one frame).
        bytes: Vec<u8>,
        /// Its share of the receive budget, returned when dropped (after
        /// the message is handled).
        budget: ReceiveBudget,
    },
    /// A connection with `peer` was established.
    Connected {
        /// The peer, from its certificate.
        peer: PeerId,
        /// Its name, from its certificate.
        name: NodeName,
        /// Its certificate's notBefore (Unix seconds).
        not_before: i64,
    },
    /// A connection with `peer` was closed because a revocation covers its
    /// certificate.
    Revoked {
        /// The peer, from its certificate.
        peer: PeerId,
    },
}

/// The room a received message holds in its peer's share and in the
/// common budget, returned when dropped.
#[derive(Debug)]
pub struct ReceiveBudget {
    // Never read: held only for their drop, which returns the room.
    _peer: Room,
    _all: Room,
}

/// One message and its bytes, taken from a [`Budget`].
#[derive(Debug)]
struct Room {
    _message: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// Room for received messages and their bytes: a peer's share, or the
/// budget of all peers together.
struct Budget {
    messages: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

impl Budget {
    fn new(messages: usize, bytes: usize) -> Budget {
        Budget {
            messages: Arc::new(Semaphore::new(messages)),
            bytes: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// Waits for room for one message of `len` bytes (at most
    /// [`MESSAGE_BYTES_MAX`], well within every budget).
    async fn take(&self, len: usize) -> Room {
        const OPEN: &str = "receive budgets are never closed";
        let message = self.messages.clone().acquire_owned().await.expect(OPEN);
        let bytes = self
            .bytes
            .clone()
            .acquire_many_owned(u32::try_from(len).unwrap_or(u32::MAX))
            .await
            .expect(OPEN);
        Room {
            _message: message,
            _bytes: bytes,
        }
    }
}

/// The events the transport has for the peer task: each peer's in a queue
/// of its own, handed out in turns, one event per peer with something
/// waiting. Bounded by the receive budgets: every queued event holds room.
pub struct Events {
    inbox: Arc<Inbox>,
}

impl Events {
    /// The next event, taking peers in turns; `None` once the transport is
    /// gone and nothing is left. Cancel-safe: an event is taken only when
    /// it is returned.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            {
                let mut turns = self.inbox.lock();
                while let Some(event) = turns.next() {
                    if let Event::Message { certificate, .. } = &event
                        && self.inbox.revoked.covers(certificate)
                    {
                        self.inbox.revoked_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    return Some(event);
                }
                if turns.closed {
                    return None;
                }
            }
            // A notification sent since the lock was released is kept (one
            // permit), so none is missed between the check and the wait.
            self.inbox.ready.notified().await;
        }
    }
}

/// Where admitted events wait for the peer task.
struct Inbox {
    turns: Mutex<Turns>,
    ready: Notify,
    /// Messages from a certificate revoked meanwhile are dropped on their
    /// turn...
    revoked: RevokedCertificates,
    /// ...and counted.
    revoked_dropped: AtomicU64,
}

#[derive(Default)]
struct Turns {
    /// Each peer's waiting events, with the room they hold if it is not in
    /// the event itself. Only peers with something waiting.
    queues: BTreeMap<PeerId, VecDeque<(Event, Option<ReceiveBudget>)>>,
    /// The peers in `queues`, next turn first.
    order: VecDeque<PeerId>,
    /// Set when the transport is gone.
    closed: bool,
}

impl Inbox {
    fn new(revoked: RevokedCertificates) -> Inbox {
        Inbox {
            turns: Mutex::new(Turns::default()),
            ready: Notify::new(),
            revoked,
            revoked_dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Turns> {
        // Every update leaves `queues` and `order` consistent before
        // anything can panic.
        self.turns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, from: PeerId, event: Event, budget: Option<ReceiveBudget>) {
        let mut turns = self.lock();
        let queue = turns.queues.entry(from).or_default();
        queue.push_back((event, budget));
        if queue.len() == 1 {
            turns.order.push_back(from);
        }
        drop(turns);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

impl Turns {
    /// The first event of the peer whose turn it is; that peer goes last.
    fn next(&mut self) -> Option<Event> {
        let peer = self.order.pop_front()?;
        let queue = self
            .queues
            .get_mut(&peer)
            .expect("every peer in order has a queue");
        let (event, _room) = queue.pop_front().expect("queues are never empty");
        if queue.is_empty() {
            self.queues.remove(&peer);
        } else {
            self.order.push_back(peer);
        }
        Some(event)
    }
}

/// Why the transport could not start or reach a peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The certificates could not be turned into a TLS configuration.
    #[error(transparent)]
    Certificates(#[from] CertError),
    /// The gossip address could not be bound.
    #[error("cannot listen for gossip on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Dialling failed.
    #[error("cannot connect to {addr}: {reason}")]
    Dial {
        /// The address dialled.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Transport counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Messages dropped: queue full, peer unreachable, or stream broken.
    pub send_drops: u64,
    /// Connections refused for their certificate (or that presented the
    /// wrong peer at a known address).
    pub connections_refused: u64,
    /// Frames refused for breaking the framing (a length over
    /// [`MESSAGE_BYTES_MAX`], or fewer bytes than announced: the stream
    /// stalled or ended mid-frame); each closes its connection.
    pub frames_refused: u64,
    /// Connections this peer dialled that were established (handshake
    /// done, identity accepted).
    pub connections_dialled: u64,
    /// Connections other peers dialled that were established.
    pub connections_accepted: u64,
    /// Connections closed because a revocation arrived that covers their
    /// certificate.
    pub connections_revoked: u64,
    /// Received messages dropped, not handed to the peer task, because
    /// their sender's certificate was revoked after they arrived.
    pub revoked_messages_dropped: u64,
}

/// The transport of one peer. Cloning is cheap; all clones share it.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: quinn::Endpoint,
    me: PeerId,
    links: Mutex<BTreeMap<PeerId, Link>>,
    /// Received messages not yet handled, from all peers (see
    /// [`RECEIVE_QUEUE_MAX`]).
    receive_budget: Budget,
    /// Set at shutdown: no new link is made from then on.
    closing: std::sync::atomic::AtomicBool,
    inbox: Arc<Inbox>,
    send_drops: AtomicU64,
    connections_refused: AtomicU64,
    frames_refused: AtomicU64,
    connections_dialled: AtomicU64,
    connections_accepted: AtomicU64,
    connections_revoked: AtomicU64,
    /// Woken whenever a connection is registered, for writers waiting on a
    /// dial (see [`write_link`]).
    registered: Notify,
}

/// Everything about one remote peer.
struct Link {
    queue: mpsc::Sender<Vec<u8>>,
    /// Bytes in `queue` (see [`SEND_QUEUE_BYTES_MAX`]).
    queued_bytes: Arc<AtomicU64>,
    /// The task sending the queue; it ends once the queue is closed and
    /// what was queued has been delivered (taken at shutdown).
    writer: Option<tokio::task::JoinHandle<()>>,
    /// Where to dial it (the latest address the peer task gave).
    addr: SocketAddr,
    connection: Option<Registered>,
    /// The peer's share of the receive budget, kept across its connections.
    received: Arc<Budget>,
}

#[derive(Clone)]
struct Registered {
    connection: quinn::Connection,
    initiator: PeerId,
    since: Instant,
    /// When the certificate the peer presented for this connection expires
    /// (Unix seconds).
    not_after: i64,
}

impl Transport {
    /// Listens for gossip on `addr` with `identity`'s certificates. Events
    /// arrive on the returned receiver. Must be called inside a tokio
    /// runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: &TlsIdentity,
    ) -> Result<(Transport, Events), TransportError> {
        let transport_config = Arc::new(transport_config());
        let mut server = quinn::ServerConfig::with_crypto(identity.server_crypto()?);
        server.transport_config(transport_config.clone());
        let mut client = quinn::ClientConfig::new(identity.client_crypto()?);
        client.transport_config(transport_config);
        let mut endpoint = quinn::Endpoint::server(server, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        endpoint.set_default_client_config(client);
        let inbox = Arc::new(Inbox::new(identity.revoked().clone()));
        let inner = Arc::new(Inner {
            endpoint,
            me: identity.peer_id(),
            links: Mutex::new(BTreeMap::new()),
            receive_budget: Budget::new(RECEIVE_QUEUE_MAX, RECEIVE_QUEUE_BYTES_MAX),
            closing: std::sync::atomic::AtomicBool::new(false),
            inbox: inbox.clone(),
            send_drops: AtomicU64::new(0),
            registered: Notify::new(),
            connections_refused: AtomicU64::new(0),
            frames_refused: AtomicU64::new(0),
            connections_dialled: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_revoked: AtomicU64::new(0),
        });
        tokio::spawn(accept_loop(inner.clone()));
        Ok((Transport { inner }, Events { inbox }))
    }

    /// The address gossip is accepted on (with the real port if 0 was
    /// asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// Queues `bytes` for `to`, dialling `addr` if no connection is open.
    /// Never waits: a full queue drops the message.
    pub fn send(&self, to: PeerId, addr: SocketAddr, bytes: Vec<u8>) {
        let len = bytes.len() as u64;
        let queued = {
            let mut links = self.inner.lock_links();
            self.inner.link(&mut links, to, addr).and_then(|link| {
                link.addr = addr;
                // Counted before the writer can take it off the queue (and
                // uncounted if it does not go in).
                let before = link.queued_bytes.fetch_add(len, Ordering::Relaxed);
                let queued = before + len <= SEND_QUEUE_BYTES_MAX as u64
                    && link.queue.try_send(bytes).is_ok();
                if !queued {
                    link.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                }
                queued.then_some(())
            })
        };
        if queued.is_none() {
            self.inner.send_drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Dials `addr` without knowing who answers (a `--join` address):
    /// returns the peer its certificate names, with the connection kept.
    pub async fn dial(&self, addr: SocketAddr) -> Result<(PeerId, NodeName), TransportError> {
        self.inner.dial(addr, None).await
    }

    /// Closes the connection to `peer`, if any; the next send dials a new
    /// one. For a peer the mesh declared down: its connection may be
    /// stuck in QUIC's retransmission backoff, which doubles with every
    /// unanswered probe, so after a long partition it would carry data
    /// again only about as long after the heal as the partition lasted,
    /// while a fresh dial gets through within a backoff step.
    pub fn disconnect(&self, peer: PeerId) {
        let connection = self.inner.current(peer);
        if let Some(connection) = connection {
            connection.close(5u32.into(), b"declared down");
            self.inner.forget(peer, &connection);
        }
    }

    /// Peers with an open connection, each with the expiry (Unix seconds)
    /// of the certificate it presented for that connection: a peer that
    /// has since replaced its certificate shows the new one only on its
    /// next connection.
    pub fn connected(&self) -> BTreeMap<PeerId, i64> {
        self.inner
            .lock_links()
            .iter()
            .filter_map(|(peer, link)| {
                let registered = link.connection.as_ref().filter(|r| r.is_open())?;
                Some((*peer, registered.not_after))
            })
            .collect()
    }

    /// QUIC connections open now (at most one per peer once simultaneous
    /// dials have settled).
    pub fn open_connections(&self) -> usize {
        self.inner.endpoint.open_connections()
    }

    /// Counters.
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            send_drops: self.inner.send_drops.load(Ordering::Relaxed),
            connections_refused: self.inner.connections_refused.load(Ordering::Relaxed),
            frames_refused: self.inner.frames_refused.load(Ordering::Relaxed),
            connections_dialled: self.inner.connections_dialled.load(Ordering::Relaxed),
            connections_accepted: self.inner.connections_accepted.load(Ordering::Relaxed),
            connections_revoked: self.inner.connections_revoked.load(Ordering::Relaxed),
            revoked_messages_dropped: self.inner.inbox.revoked_dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops taking messages, waits up to `grace` for what is queued to be
    /// delivered (each stream finished and read by the peer), then closes
    /// every connection.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.closing.store(true, Ordering::SeqCst);
        // Replacing each queue's sender by one of a closed channel closes the
        // queue; its writer then flushes what is left (over the connection
        // the link still holds) and ends.
        let writers: Vec<_> = self
            .inner
            .lock_links()
            .values_mut()
            .filter_map(|link| {
                link.queue = mpsc::channel(1).0;
                link.writer.take()
            })
            .collect();
        let deadline = tokio::time::Instant::now() + grace;
        for writer in writers {
            let _ = tokio::time::timeout_at(deadline, writer).await;
        }
        self.inner.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(CLOSE_BUDGET, self.inner.endpoint.wait_idle()).await;
    }
}

impl Inner {
    fn lock_links(&self) -> std::sync::MutexGuard<'_, BTreeMap<PeerId, Link>> {
        // A panic while holding the lock leaves a consistent map (every
        // update is a single insert or assignment), so poisoning is moot.
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The link to `peer`, made if there is none (unless shutting down).
    fn link<'a>(
        self: &Arc<Self>,
        links: &'a mut BTreeMap<PeerId, Link>,
        peer: PeerId,
        addr: SocketAddr,
    ) -> Option<&'a mut Link> {
        if self.closing.load(Ordering::SeqCst) {
            return links.get_mut(&peer);
        }
        Some(
            links
                .entry(peer)
                .or_insert_with(|| new_link(self, peer, addr)),
        )
    }

    fn refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a frame that broke the framing and closes its connection:
    /// nothing after it on that stream can be told apart from garbage, and
    /// a peer that sends such frames is broken (it dials again if not).
    fn refuse_frame(&self, connection: &quinn::Connection, why: FrameError) {
        self.frames_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %connection.remote_address(), %why, "refusing a gossip frame; closing the connection");
        connection.close(3u32.into(), why.to_string().as_bytes());
    }

    /// The open connection to `peer`, if any.
    fn current(&self, peer: PeerId) -> Option<quinn::Connection> {
        let links = self.lock_links();
        let registered = links.get(&peer)?.connection.as_ref()?;
        registered.is_open().then(|| registered.connection.clone())
    }

    /// Returns once a connection to `peer` is open (one this side dialled
    /// or one the peer dialled in).
    async fn until_connected(&self, peer: PeerId) {
        loop {
            let registered = self.registered.notified();
            if self.current(peer).is_some() {
                return;
            }
            registered.await;
        }
    }

    /// Dials `addr`; the certificate must name `expected` if given.
    async fn dial(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<(PeerId, NodeName), TransportError> {
        let fail = |reason: String| TransportError::Dial { addr, reason };
        let connecting = self
            .endpoint
            .connect(addr, MESH_SERVER_NAME)
            .map_err(|e| fail(e.to_string()))?;
        let connection = tokio::time::timeout(DIAL_TIMEOUT, connecting)
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let certificate = certs::peer_of(&connection).map_err(|e| {
            self.refused();
            fail(e.to_string())
        })?;
        let (peer, name) = (certificate.peer, certificate.name.clone());
        if expected.is_some_and(|expected| expected != peer) || peer == self.me {
            self.refused();
            connection.close(1u32.into(), b"unexpected peer");
            return Err(fail(format!("the peer there is {name} ({peer})")));
        }
        self.register(certificate, connection, self.me, addr).await;
        Ok((peer, name))
    }

    /// Makes `connection` the one used for `peer` (or not: see
    /// [`SIMULTANEOUS_OPEN`]), starts reading from it, and reports it.
    async fn register(
        self: &Arc<Self>,
        certificate: CertificateInfo,
        connection: quinn::Connection,
        initiator: PeerId,
        addr: SocketAddr,
    ) {
        let peer = certificate.peer;
        let established = if initiator == self.me {
            &self.connections_dialled
        } else {
            &self.connections_accepted
        };
        established.fetch_add(1, Ordering::Relaxed);
        let fresh = Registered {
            connection: connection.clone(),
            initiator,
            since: Instant::now(),
            not_after: certificate.not_after,
        };
        let (loser, share) = {
            let mut links = self.lock_links();
            let Some(link) = self.link(&mut links, peer, addr) else {
                drop(links);
                connection.close(0u32.into(), b"shutdown");
                return;
            };
            let loser = match link.connection.take() {
                Some(old) if old.is_open() => {
                    let redial = fresh.initiator == old.initiator;
                    let (keep, lose) =
                        if !redial && fresh.since.duration_since(old.since) < SIMULTANEOUS_OPEN {
                            // Both dialled at once: both sides keep the one
                            // dialled by the lower id, so they agree.
                            let preferred = self.me.min(peer);
                            if old.initiator == preferred || fresh.initiator != preferred {
                                (old, fresh.clone())
                            } else {
                                (fresh.clone(), old)
                            }
                        } else {
                            // A later connection, or a new dial by the same
                            // side: the old one is probably dead.
                            (fresh.clone(), old)
                        };
                    link.connection = Some(keep);
                    Some(lose.connection)
                }
                _ => {
                    link.connection = Some(fresh);
                    None
                }
            };
            (loser, link.received.clone())
        };
        self.registered.notify_waiters();
        if let Some(loser) = loser {
            tokio::spawn(async move {
                tokio::time::sleep(LOSER_GRACE).await;
                loser.close(2u32.into(), b"duplicate connection");
            });
        }
        let connected = Event::Connected {
            peer,
            name: certificate.name.clone(),
            not_before: certificate.not_before,
        };
        tokio::spawn(read_connection(
            self.clone(),
            Arc::new(certificate),
            share.clone(),
            connection,
        ));
        // Counted as a message of the peer's, so that dialling again and
        // again fills only its own share.
        let budget = self.admit(&share, 0).await;
        self.inbox.push(peer, connected, Some(budget));
    }

    /// Waits for room for a message of `len` bytes from the peer whose
    /// share is `share`. The share first: a peer whose share is full waits
    /// there, behind its own frames only, and holds no place in the common
    /// budget's queue meanwhile.
    async fn admit(&self, share: &Budget, len: usize) -> ReceiveBudget {
        let peer = share.take(len).await;
        let all = self.receive_budget.take(len).await;
        ReceiveBudget {
            _peer: peer,
            _all: all,
        }
    }

    /// Forgets `connection` for `peer` if it is still the registered one.
    fn forget(&self, peer: PeerId, connection: &quinn::Connection) {
        let mut links = self.lock_links();
        if let Some(link) = links.get_mut(&peer)
            && link
                .connection
                .as_ref()
                .is_some_and(|r| r.connection.stable_id() == connection.stable_id())
        {
            link.connection = None;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.inbox.close();
    }
}

impl Registered {
    fn is_open(&self) -> bool {
        self.connection.close_reason().is_none()
    }
}

fn transport_config() -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .expect("10 s is a valid idle timeout"),
        ))
        .max_concurrent_uni_streams(STREAMS_MAX.into())
        .max_concurrent_bidi_streams(0u32.into());
    config
}

fn new_link(inner: &Arc<Inner>, peer: PeerId, addr: SocketAddr) -> Link {
    let (queue, receiver) = mpsc::channel(SEND_QUEUE_MAX);
    let queued_bytes = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_link(
        inner.clone(),
        peer,
        receiver,
        queued_bytes.clone(),
    ));
    Link {
        queue,
        queued_bytes,
        writer: Some(writer),
        addr,
        connection: None,
        received: Arc::new(Budget::new(RECEIVE_PEER_QUEUE_MAX, RECEIVE_PEER_BYTES_MAX)),
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            let Ok(connection) = incoming.await else {
                // Includes a client whose certificate the CA did not sign.
                inner.refused();
                return;
            };
            match certs::peer_of(&connection) {
                Ok(certificate) if certificate.peer != inner.me => {
                    let peer = certificate.peer;
                    inner.register(certificate, connection, peer, addr).await;
                }
                _ => {
                    inner.refused();
                    connection.close(1u32.into(), b"bad identity");
                }
            }
        });
    }
}

/// Sends everything queued for `peer`, dialling when no connection is open
/// and backing off when dialling fails.
async fn write_link(
    inner: Arc<Inner>,
    peer: PeerId,
    mut queue: mpsc::Receiver<Vec<u8>>,
    queued_bytes: Arc<AtomicU64>,
) {
    let mut stream: Option<(usize, quinn::SendStream)> = None;
    let mut backoff = BACKOFF_MIN;
    let mut retry_at: Option<Instant> = None;
    while let Some(bytes) = queue.recv().await {
        queued_bytes.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
        let connection = match inner.current(peer) {
            Some(connection) => connection,
            None if retry_at.is_some_and(|at| Instant::now() < at) => {
                inner.send_drops.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            None => {
                let addr = inner.lock_links().get(&peer).map(|link| link.addr);
                // The peer may dial in meanwhile: a peer back from a
                // restart does, while a dial started when it was down waits
                // for QUIC to retransmit its first packet (up to the dial
                // timeout). Its connection serves at once; the dial runs
                // on in a task of its own (dropped mid-way, it would close a
                // handshake the peer may have taken, or skip the rest of
                // registering its connection).
                if let Some(addr) = addr {
                    let dial = tokio::spawn({
                        let inner = inner.clone();
                        async move { inner.dial(addr, Some(peer)).await }
                    });
                    tokio::select! {
                        _ = dial => {}
                        () = inner.until_connected(peer) => {}
                    }
                }
                match inner.current(peer) {
                    Some(connection) => {
                        backoff = BACKOFF_MIN;
                        retry_at = None;
                        connection
                    }
                    None => {
                        inner.send_drops.fetch_add(1, Ordering::Relaxed);
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
        };
        if stream
            .as_ref()
            .is_none_or(|(id, _)| *id != connection.stable_id())
        {
            stream = match connection.open_uni().await {
                Ok(send) => Some((connection.stable_id(), send)),
                Err(_) => {
                    inner.forget(peer, &connection);
                    inner.send_drops.fetch_add(1, Ordering::Relaxed);
                    None
                }
            };
        }
        let Some((_, send)) = stream.as_mut() else {
            continue;
        };
        let prefix = frame_len(&bytes).to_be_bytes();
        let written = write_frame(send, &prefix, &bytes).await;
        if !matches!(written, Ok(Ok(()))) {
            if written.is_err() {
                connection.close(4u32.into(), b"not reading");
            }
            inner.forget(peer, &connection);
            inner.send_drops.fetch_add(1, Ordering::Relaxed);
            stream = None;
        }
    }
    // The queue is closed (shutdown): end the stream and wait until the
    // peer has read it all, so that a last message (a leave) is not lost
    // when the endpoint closes.
    if let Some((_, mut send)) = stream
        && send.finish().is_ok()
    {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, send.stopped()).await;
    }
}

/// Writes a length prefix and its message, piece by piece, each piece
/// within [`WRITE_TIMEOUT`]. The outer error is a stall; the inner one a
/// broken stream.
async fn write_frame(
    send: &mut quinn::SendStream,
    prefix: &[u8],
    bytes: &[u8],
) -> Result<Result<(), quinn::WriteError>, tokio::time::error::Elapsed> {
    for piece in std::iter::once(prefix).chain(bytes.chunks(WRITE_PIECE)) {
        if let Err(broken) = tokio::time::timeout(WRITE_TIMEOUT, send.write_all(piece)).await? {
            return Ok(Err(broken));
        }
    }
    Ok(Ok(()))
}

fn frame_len(bytes: &[u8]) -> u32 {
    // The core never emits a message over MESSAGE_BYTES_MAX (32 MiB).
    u32::try_from(bytes.len()).expect("messages are bounded far below 4 GiB")
}

/// Reads every stream the peer of `certificate` opens on `connection`,
/// until it closes, or until a revocation covers the certificate: then
/// closes it and tells the peer task. `share` is the peer's share of the
/// receive budget.
async fn read_connection(
    inner: Arc<Inner>,
    certificate: Arc<CertificateInfo>,
    share: Arc<Budget>,
    connection: quinn::Connection,
) {
    let peer = certificate.peer;
    let mut revocations = inner.inbox.revoked.changes();
    revocations.mark_changed();
    loop {
        tokio::select! {
            accepted = connection.accept_uni() => {
                let Ok(receive) = accepted else { break };
                tokio::spawn(read_stream(
                    inner.clone(),
                    connection.clone(),
                    certificate.clone(),
                    share.clone(),
                    receive,
                ));
            }
            changed = revocations.changed() => {
                if changed.is_err() {
                    break;
                }
                if let Some(revocation) = inner.inbox.revoked.covering(&certificate) {
                    tracing::warn!(
                        name = %certificate.name,
                        revoked_at = revocation.revoked_at,
                        "closing the connection of a revoked certificate"
                    );
                    connection.close(6u32.into(), b"certificate revoked");
                    inner.connections_revoked.fetch_add(1, Ordering::Relaxed);
                    inner.inbox.push(peer, Event::Revoked { peer }, None);
                    break;
                }
            }
        }
    }
    inner.forget(peer, &connection);
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum FrameError {
    /// Its length prefix is over [`MESSAGE_BYTES_MAX`].
    #[error("frame length {0} over the limit")]
    TooLarge(usize),
    /// Its bytes stopped coming for [`FRAME_STALL_TIMEOUT`].
    #[error("frame stalled")]
    Stalled,
    /// The stream ended before the frame did.
    #[error("frame cut short")]
    Truncated,
}

/// Why a frame's body could not be read.
enum BodyError {
    /// The frame broke the framing.
    Refused(FrameError),
    /// The stream or connection broke (reset, closed, lost): nothing to
    /// blame the frame for.
    Broken,
}

async fn read_stream(
    inner: Arc<Inner>,
    connection: quinn::Connection,
    certificate: Arc<CertificateInfo>,
    share: Arc<Budget>,
    mut receive: quinn::RecvStream,
) {
    let from = certificate.peer;
    loop {
        let mut len = [0u8; 4];
        if receive.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MESSAGE_BYTES_MAX {
            // Refused before anything is reserved for it.
            inner.refuse_frame(&connection, FrameError::TooLarge(len));
            return;
        }
        // Waits for room (QUIC flow control holds this sender meanwhile).
        let budget = inner.admit(&share, len).await;
        let bytes = match read_body(&mut receive, len).await {
            Ok(bytes) => bytes,
            Err(BodyError::Refused(why)) => {
                inner.refuse_frame(&connection, why);
                return;
            }
            Err(BodyError::Broken) => return,
        };
        let message = Event::Message {
            from,
            certificate: certificate.clone(),
            bytes,
            budget,
        };
        inner.inbox.push(from, message, None);
    }
}

/// Reads the `len` bytes of a frame's body. The buffer grows with the bytes
/// that arrived (doubling, never past `len`), so the length a peer
/// announces reserves nothing by itself; each piece must come within
/// [`FRAME_STALL_TIMEOUT`].
async fn read_body(receive: &mut quinn::RecvStream, len: usize) -> Result<Vec<u8>, BodyError> {
    let mut bytes = Vec::new();
    while bytes.len() < len {
        let chunk = tokio::time::timeout(
            FRAME_STALL_TIMEOUT,
            receive.read_chunk(len - bytes.len(), true),
        )
        .await
        .map_err(|_| BodyError::Refused(FrameError::Stalled))?;
        match chunk {
            Ok(Some(chunk)) => {
                let needed = bytes.len() + chunk.bytes.len();
                if needed > bytes.capacity() {
                    let target = needed.max(bytes.capacity() * 2).min(len);
                    bytes.reserve_exact(target - bytes.len());
                }
                bytes.extend_from_slice(&chunk.bytes);
            }
            Ok(None) => return Err(BodyError::Refused(FrameError::Truncated)),
            Err(_) => return Err(BodyError::Broken),
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(peer: u64, name: &str) -> Event {
        Event::Connected {
            peer: PeerId(peer),
            name: NodeName::new(name).expect("valid name"),
            not_before: 0,
        }
    }

    /// The name in the next event `inbox` hands out.
    fn next_name(inbox: &Inbox) -> String {
        match inbox.lock().next() {
            Some(Event::Connected { name, .. }) => name.to_string(),
            other => panic!("not a connection event: {other:?}"),
        }
    }

    #[test]
    fn an_event_waits_behind_at_most_one_event_of_a_peer_with_a_backlog() {
        let inbox = Inbox::new(RevokedCertificates::default());
        let backlog = 100;
        for i in 0..backlog {
            inbox.push(PeerId(1), connected(1, &format!("flood-{i}")), None);
        }
        assert_eq!(next_name(&inbox), "flood-0");
        inbox.push(PeerId(2), connected(2, "honest"), None);
        assert_eq!(next_name(&inbox), "flood-1");
        assert_eq!(next_name(&inbox), "honest");
        for i in 2..backlog {
            assert_eq!(next_name(&inbox), format!("flood-{i}"));
        }
        let turns = inbox.lock();
        assert!(turns.queues.is_empty() && turns.order.is_empty());
    }
}
