//! The gossip protocol as a pure state machine: membership (SWIM via
//! foca), dissemination (a broadcast tree with acks), anti-entropy (digest,
//! then causal context, then only what is missing), and the wire codec.
//!
//! The shell and the simulator drive a [`Node`] the same way: feed it
//! `handle_*(now, ..)` calls, drain [`Node::poll_output`], and call
//! [`Node::handle_timeout`] at [`Node::next_deadline`]. Must not touch the
//! network, disk, clock, environment or OS randomness: time is an input and
//! randomness comes from a seeded ChaCha generator owned by the node.
//! Collections are ordered, so a run is reproducible from its seed.

mod broadcast;
mod membership;
mod node;
mod reports;
pub mod revocations;
pub mod wire;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use broadcast::TreeConfig;
pub use membership::{MemberId, append_updates};
pub use node::{Node, NodeStats, Output, REVOCATION_SENDER_COOLDOWN, RemoteChange};
pub use reports::{ApplyReport, HeardReport, PeerReport, REPORT_TEXT_MAX, REPORTS_MAX};
pub use revocations::{Revocation, RevocationError, RevocationVerifier};

/// A peer's stable identity in the mesh (derived from its certificate in the
/// shell, drawn from the seed in the simulator). Its position on the id ring
/// decides its place in broadcast trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub u64);

impl PeerId {
    /// The id of the node called `name`: a hash of the name, so it is the
    /// same across restarts and on every peer (and for every certificate
    /// issued for that name).
    pub fn of_name(name: &str) -> PeerId {
        PeerId(xxhash_rust::xxh3::xxh3_64(name.as_bytes()))
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What SWIM believes of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerState {
    /// Answering probes.
    Alive,
    /// Missed a probe; still treated as alive until it refutes or times out.
    Suspect,
    /// Declared down (or left); re-announced to now and then.
    Down,
}

impl PeerState {
    /// How the state is spelled in JSON, metric labels and activity.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Down => "down",
        }
    }
}

/// A point in monotonic time, in microseconds since an arbitrary origin
/// chosen by the driver (process start in the shell, 0 in the simulator).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);

    /// A time `micros` after the origin.
    pub fn from_micros(micros: u64) -> Time {
        Time(micros)
    }

    /// Microseconds since the origin.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

/// Protocol settings. Use [`Config::lan`] or [`Config::wan`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The broadcast tree.
    pub tree: TreeConfig,
    /// How often a node compares digests with one random peer.
    pub anti_entropy_interval: Duration,
    /// How often a node re-announces itself to peers it believes down, so
    /// both sides of a healed partition find each other again.
    pub rejoin_interval: Duration,
    /// SWIM settings (foca).
    pub swim: foca::Config,
    /// How far ahead of this peer's clock another's may be: a remote stamp
    /// or lease renewal further ahead is refused (see
    /// [`crate::crdt::Plausibility`]).
    pub clock_skew_max: Duration,
    /// How much of a state one anti-entropy answer carries, about (bytes of
    /// encoded entries and removals): a peer that lacks more gets it in
    /// parts, asking for the next as soon as it has taken one.
    pub sync_chunk_bytes: usize,
}

/// The default [`Config::sync_chunk_bytes`]: big enough that a round trip
/// per chunk costs little on a LAN, small enough that a chunk is joined
/// and made durable in tens of milliseconds and stays far below
/// [`wire::MESSAGE_BYTES_MAX`] (an entry larger than a chunk goes alone,
/// and the model bounds every entry far below that).
pub const SYNC_CHUNK_BYTES_DEFAULT: usize = 4 << 20;

/// The default [`Config::clock_skew_max`]: peers kept in time by NTP are
/// milliseconds apart; ten seconds leaves room for a peer whose clock
/// drifted, while a forger's stamps win concurrent writes for at most that
/// long.
pub const CLOCK_SKEW_MAX_DEFAULT: Duration = Duration::from_secs(10);

impl Config {
    /// For a data centre: sub-millisecond to few-millisecond round trips.
    pub fn lan(cluster_size: u32) -> Config {
        let size = std::num::NonZeroU32::new(cluster_size.max(1)).expect("at least 1");
        let rejoin_interval = Duration::from_millis(500);
        Config {
            tree: TreeConfig {
                fanout: 4,
                redundancy: 1,
                ack_timeout: Duration::from_millis(8),
                send_attempts_max: 3,
                pending_max: 65_536,
                seen_max: 65_536,
            },
            anti_entropy_interval: Duration::from_millis(500),
            rejoin_interval,
            swim: membership::swim_config(foca::Config::new_lan(size), rejoin_interval),
            clock_skew_max: CLOCK_SKEW_MAX_DEFAULT,
            sync_chunk_bytes: SYNC_CHUNK_BYTES_DEFAULT,
        }
    }

    /// For peers spread across regions: round trips up to a few hundred ms.
    /// Wider chunks (fewer hops) and two heads per chunk (a lost message
    /// costs no retransmit wait), otherwise as [`Config::lan`].
    pub fn wan(cluster_size: u32) -> Config {
        let size = std::num::NonZeroU32::new(cluster_size.max(1)).expect("at least 1");
        let rejoin_interval = Duration::from_secs(2);
        let lan = Config::lan(cluster_size);
        Config {
            tree: TreeConfig {
                fanout: 8,
                redundancy: 2,
                ack_timeout: Duration::from_millis(400),
                ..lan.tree
            },
            anti_entropy_interval: Duration::from_secs(2),
            rejoin_interval,
            swim: membership::swim_config(foca::Config::new_wan(size), rejoin_interval),
            ..lan
        }
    }
}
