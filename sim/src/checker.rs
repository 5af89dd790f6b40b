//! End-of-run checkers: identical peers, no lost acknowledged write, no
//! resurrection, bounded queues.

use std::collections::BTreeMap;

use aqueduct::crdt::{Digest, Dot, DotSet, Replica};

/// What the simulator remembers of one acknowledged write.
#[derive(Debug, Clone)]
pub struct WriteRecord {
    /// The write's own dot (its broadcast id).
    pub id: Dot,
    /// Index of the peer that took it.
    pub origin: usize,
    /// Simulated microseconds of its acknowledgment.
    pub acked_at_us: u64,
    /// Dots of the values it wrote.
    pub written: Vec<Dot>,
    /// Dots of values it removed or overwrote (what its peer had seen).
    pub superseded: Vec<Dot>,
    /// Its only copy died with a wiped disk.
    pub lost_with_disk: bool,
}

/// Peers whose digest differs from the most common digest.
pub fn divergent_peers(digests: &[Digest]) -> usize {
    let mut counts: BTreeMap<Digest, usize> = BTreeMap::new();
    for d in digests {
        *counts.entry(*d).or_default() += 1;
    }
    let most = counts.values().copied().max().unwrap_or(0);
    digests.len() - most
}

/// Counts (lost writes, resurrections) against a converged replica.
///
/// A written value is lost if the replica never saw its dot, or no longer
/// holds it although no acknowledged write superseded it. A value is
/// resurrected if an acknowledged write superseded it and it is live.
pub fn lost_and_resurrected(writes: &[WriteRecord], replica: &Replica) -> (usize, usize) {
    let state = replica.full_state();
    let live: DotSet = state.entries().map(|(_, _, dot, _)| dot).collect();
    let superseded: DotSet = writes
        .iter()
        .filter(|w| !w.lost_with_disk)
        .flat_map(|w| w.superseded.iter().copied())
        .collect();
    let lost = writes
        .iter()
        .filter(|w| !w.lost_with_disk)
        .filter(|w| {
            !replica.context().contains(w.id)
                || w.written
                    .iter()
                    .any(|d| !live.contains(*d) && !superseded.contains(*d))
        })
        .count();
    let resurrected = state
        .entries()
        .filter(|(_, _, dot, _)| superseded.contains(*dot))
        .count();
    (lost, resurrected)
}
