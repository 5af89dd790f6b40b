//! The activity stream: what happened on this peer, as the dashboard and
//! `GET /events` show it — HAProxy's members going up or down,
//! configurations applied or rejected, reloads and restarts (from the
//! HAProxy driver), registrations coming and going (also the driver's: it
//! follows the live set), and peers joining and leaving and changes taken
//! from other peers (the peer task).
//!
//! Owns the event types and the bounded channel that carries them. Must not
//! keep history: a reader that falls behind skips ahead and is told how far.

use serde::Serialize;
use tokio::sync::broadcast;

use crate::peer::wall_clock_ms;

/// Events kept for slow stream readers; a reader that falls further behind
/// skips ahead.
const BUFFER: usize = 1024;

/// Where events go: cheap to clone, one per peer.
#[derive(Clone, Debug)]
pub struct ActivityLog(broadcast::Sender<Activity>);

impl Default for ActivityLog {
    fn default() -> Self {
        ActivityLog(broadcast::channel(BUFFER).0)
    }
}

impl ActivityLog {
    /// Records `kind` as happening now (dropped when nobody listens).
    pub fn record(&self, kind: ActivityKind) {
        let _ = self.0.send(Activity {
            at_ms: wall_clock_ms(),
            kind,
        });
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Activity> {
        self.0.subscribe()
    }
}

/// One thing that happened on this peer.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// Wall-clock ms.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: ActivityKind,
}

/// What happened.
#[derive(Clone, Debug, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ActivityKind {
    /// A server's health changed (`UP`, `DOWN`, `MAINT`, `DRAIN`, ...).
    Member {
        /// Backend.
        backend: String,
        /// Server.
        server: String,
        /// Status before.
        from: String,
        /// Status now.
        to: String,
    },
    /// A new configuration runs.
    Applied {
        /// `start`, `reload`, `runtime` or `file` (render only).
        how: &'static str,
        /// Runtime changes made (for `runtime`).
        changes: usize,
    },
    /// `haproxy -c` refused a configuration; it was not activated.
    Rejected {
        /// HAProxy's message.
        message: String,
    },
    /// A reload finished.
    Reloaded {
        /// How long it took, ms.
        took_ms: f64,
    },
    /// A reload failed; the previous configuration keeps serving.
    ReloadFailed {
        /// HAProxy's message.
        message: String,
    },
    /// HAProxy died and was started again.
    Restarted {
        /// How it ended.
        reason: String,
    },
    /// A service instance became live (registered, or its owner came
    /// back) or stopped being live (deregistered, or its lease ran out).
    Registration {
        /// `/name/version/host/port`.
        id: String,
        /// Whether it is live now.
        live: bool,
    },
    /// A change from another peer was taken: who sent it, whose it was,
    /// and what it wrote or removed, so that a compromised peer's writes
    /// and deletions can be traced.
    Change {
        /// The peer it came from (its certificate's name, else its id).
        from: String,
        /// The replica that made it, for a broadcast (as its id claims);
        /// `None` for anti-entropy, which merges many changes.
        origin_replica: Option<String>,
        /// Objects written or removed (the first few).
        objects: Vec<String>,
        /// How many in all.
        objects_total: usize,
    },
    /// SWIM changed its belief about a peer (a new peer is `alive`, a peer
    /// that left or failed is `down`).
    Peer {
        /// Its name, once known from its certificate, else its id.
        peer: String,
        /// The state before (`None`: not known before).
        from: Option<&'static str>,
        /// The state now.
        to: &'static str,
    },
}
