//! The replicated configuration document: a delta-state CRDT of our own
//! (a causal dot store: objects → fields → multi-value registers, one
//! compact causal context).
//!
//! Owns the data model (validated newtypes for everything that can reach
//! `haproxy.cfg`), the merge semantics, and the [`Replica`] facade. Must not
//! touch the network, disk, clock, environment or OS randomness, and uses
//! ordered collections only, so that every peer computes the same bytes.
//!
//! Semantics (DESIGN.md, "Data model and merge semantics"), which the
//! property tests in `tests/crdt_laws.rs` enforce:
//! - the join is commutative, associative and idempotent; deltas may arrive
//!   in any order, duplicated, or be replaced by a full-state join;
//! - concurrent writes to different fields of an object both survive;
//!   concurrent writes to one field are all kept until a later write has
//!   seen them, and every view picks the same winner (stamp, then dot);
//! - a field removal concurrent with a write to that field: the write
//!   survives; an object removal concurrent with a field write: the written
//!   field survives, the fields the remover had seen are gone;
//! - a removal is "dot seen, value absent": no tombstones, and the
//!   anti-entropy answer ([`Replica::missing_for_peer`]) carries removals —
//!   only those of the parts where the peer's live dots differ, so a peer in
//!   sync gets an empty answer however many values were ever overwritten.

mod dot;
mod hlc;
mod leases;
pub mod model;
pub mod natives;
mod replica;
mod store;

pub use dot::{Dot, DotSet, ReplicaId};
pub use hlc::Hlc;
pub use leases::{ABANDONED_AFTER_MS, LeaseKeeper};
pub use replica::{
    Command, CommandError, ConfigChunk, ConfigDelta, Counted, DOTS_PER_MS, Digest, Plausibility,
    RENEWALS_PER_COMMAND_MAX, RemoteDeltaError, RemoteJoin, Replica, Usage, ViewPart,
};
pub use store::{
    Delta, DotStore, JoinError, Joined, LiveSummary, Objects, Register, Stamped, SyncChunk,
    SyncSummary,
};

/// Why bytes from a peer did not decode into a valid dot or dot set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Replica id 0 is reserved.
    #[error("replica id 0 is reserved")]
    ZeroReplicaId,
    /// Counters start at 1 and stay at or below `Dot::COUNTER_MAX`.
    #[error("dot counter out of range")]
    CounterOutOfRange,
    /// A stamp's wall time lies beyond `Hlc::WALL_MS_MAX`.
    #[error("stamp wall time {0} ms is beyond the year 10000")]
    StampTooLate(u64),
    /// An interval must be non-empty, start at 1 or above and end at or
    /// below `Dot::COUNTER_MAX`.
    #[error("invalid dot interval {first}..={last}")]
    BadInterval {
        /// First counter.
        first: u64,
        /// Last counter.
        last: u64,
    },
}
