//! The peer: the one task that owns the protocol [`Node`], and the
//! [`Handle`] the API uses to reach it.
//!
//! Owns the event loop (messages from the transport, requests from the API,
//! timers, durability notices from the store) and the order of effects: a
//! local change is sent to peers only once it is durable, and a write is
//! answered only once it is durable. Must not hold protocol logic: every
//! decision is the [`Node`]'s.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::crdt::model::ConfigView;
use crate::crdt::{Command, CommandError, Digest, ReplicaId};
use crate::gossip::{NodeStats, PeerId, PeerState};

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
    /// The current configuration (shared; cheap while nothing changes).
    View {
        /// Where the view goes.
        reply: oneshot::Sender<Arc<ConfigView>>,
    },
    /// Identity, mesh membership and counters.
    Status {
        /// Where the status goes.
        reply: oneshot::Sender<Status>,
    },
}

/// Why a write was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The replica refused the command (nothing changed).
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// The store failed: the change may not be durable, so it is not
    /// acknowledged. The peer stops accepting writes.
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
    /// Restart generation of this peer.
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
}

/// One peer as this peer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Counters kept by the shell (the protocol's are in [`NodeStats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Writes acknowledged to API clients.
    pub writes_acknowledged: u64,
    /// Writes refused (validation passed, but the replica said no).
    pub writes_refused: u64,
    /// Remote changes applied to the state.
    pub remote_changes_applied: u64,
    /// Store transactions committed (each one fsync).
    pub store_commits: u64,
    /// Messages dropped because a peer's send queue was full.
    pub send_queue_drops: u64,
    /// Connections refused or closed because of the peer's certificate.
    pub connections_refused: u64,
}

/// The API's way to the peer task. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
}

impl Handle {
    /// A handle sending into `requests` (the peer task holds the receiver).
    pub fn new(requests: mpsc::Sender<Request>) -> Handle {
        Handle { requests }
    }

    /// Applies `command`; returns once it is durable on this peer.
    pub async fn write(&self, command: Command) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Write { command, reply }).await?;
        answer.await.map_err(|_| PeerGone)?
    }

    /// The current configuration view.
    pub async fn view(&self) -> Result<Arc<ConfigView>, PeerGone> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::View { reply }).await?;
        answer.await.map_err(|_| PeerGone)
    }

    /// Identity, membership and counters.
    pub async fn status(&self) -> Result<Status, PeerGone> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Status { reply }).await?;
        answer.await.map_err(|_| PeerGone)
    }

    async fn send(&self, request: Request) -> Result<(), PeerGone> {
        self.requests.send(request).await.map_err(|_| PeerGone)
    }
}
