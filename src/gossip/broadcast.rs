//! Dissemination of changes: a broadcast tree over the ring of peer ids,
//! with acknowledgements and bounded retransmits.
//!
//! A change's origin owns the whole ring (every peer but itself). Whoever
//! owns a ring range splits the peers it knows in that range into at most
//! `fanout` contiguous chunks, sends the change to the first peer of each
//! chunk and hands it the rest of the chunk. Each peer therefore receives a
//! change about once (cost per write and peer: one message and one ack)
//! after O(log N) hops, whatever the size of the mesh. Ranges are ids, not
//! lists, so peers whose member lists differ still cover the whole ring:
//! each fills its range from its own view. A lost message is retransmitted
//! after `ack_timeout`; after `send_attempts_max` tries the next peer of the
//! chunk takes over. What still slips through (crashes, partitions) is
//! repaired by anti-entropy.
//!
//! Owns the pending-ack table and the set of broadcasts already seen. Must
//! not do I/O or read a clock: time comes in, messages go out as values.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use crate::crdt::{ConfigDelta, Dot};

use super::wire::RingRange;
use super::{PeerId, Time};

/// A broadcast to send: to whom, which range they own, what change.
#[derive(Debug, Clone)]
pub(super) struct Transmission {
    pub(super) to: PeerId,
    pub(super) id: Dot,
    pub(super) range: RingRange,
    pub(super) delta: Arc<ConfigDelta>,
}

#[derive(Debug)]
struct Pending {
    range: RingRange,
    delta: Arc<ConfigDelta>,
    attempts: u32,
    deadline: Time,
}

/// Settings of the broadcast tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeConfig {
    /// Children per tree node.
    pub fanout: usize,
    /// Wait this long for an ack before sending again.
    pub ack_timeout: Duration,
    /// Tries per child before the next peer of its chunk takes over.
    pub send_attempts_max: u32,
    /// Bound of the pending-ack table; beyond it, sends are not tracked
    /// (anti-entropy repairs what they lose).
    pub pending_max: usize,
    /// How many broadcast ids are remembered to drop duplicates.
    pub seen_max: usize,
}

/// The broadcast tree state of one node. See the module documentation.
#[derive(Debug)]
pub(super) struct BroadcastTree {
    config: TreeConfig,
    pending: BTreeMap<(Dot, PeerId), Pending>,
    deadlines: BTreeSet<(Time, Dot, PeerId)>,
    seen: BTreeSet<Dot>,
    seen_order: VecDeque<Dot>,
    /// Sends not tracked because `pending_max` was reached.
    pub(super) untracked: u64,
    /// Children given up on after `send_attempts_max` tries.
    pub(super) abandoned: u64,
}

impl BroadcastTree {
    pub(super) fn new(config: TreeConfig) -> Self {
        BroadcastTree {
            config,
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            seen: BTreeSet::new(),
            seen_order: VecDeque::new(),
            untracked: 0,
            abandoned: 0,
        }
    }

    /// Records `id` as seen; false if it already was (a duplicate).
    pub(super) fn first_sight(&mut self, id: Dot) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.seen_order.push_back(id);
        if self.seen_order.len() > self.config.seen_max
            && let Some(oldest) = self.seen_order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }

    /// Sends `delta` down the tree for `range`, as seen from `me`.
    pub(super) fn spread(
        &mut self,
        now: Time,
        me: PeerId,
        id: Dot,
        range: RingRange,
        delta: Arc<ConfigDelta>,
        members: &BTreeSet<PeerId>,
    ) -> Vec<Transmission> {
        let peers = peers_in(range, members, me);
        let chunks = self.config.fanout.min(peers.len());
        let mut out = Vec::with_capacity(chunks);
        for chunk in 0..chunks {
            let head = peers[chunk * peers.len() / chunks];
            let next_head = if chunk + 1 < chunks {
                peers[(chunk + 1) * peers.len() / chunks]
            } else {
                range.before
            };
            let child_range = RingRange { after: head, before: next_head };
            out.push(self.track(now, head, id, child_range, delta.clone()));
        }
        out
    }

    /// An ack arrived: stop retransmitting to `from`.
    pub(super) fn acknowledge(&mut self, from: PeerId, id: Dot) {
        if let Some(p) = self.pending.remove(&(id, from)) {
            self.deadlines.remove(&(p.deadline, id, from));
        }
    }

    /// Retransmits what timed out at `now`; gives up on children that used
    /// all their attempts (or left the member list) and hands their range to
    /// the next peer in it.
    pub(super) fn handle_timeout(&mut self, now: Time, me: PeerId, members: &BTreeSet<PeerId>) -> Vec<Transmission> {
        let mut out = Vec::new();
        while let Some(&(deadline, id, child)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(mut pending) = self.pending.remove(&(id, child)) else { continue };
            if pending.attempts < self.config.send_attempts_max && members.contains(&child) {
                pending.attempts += 1;
                pending.deadline = now + self.config.ack_timeout * pending.attempts;
                self.deadlines.insert((pending.deadline, id, child));
                out.push(Transmission { to: child, id, range: pending.range, delta: pending.delta.clone() });
                self.pending.insert((id, child), pending);
            } else {
                self.abandoned += 1;
                // The child's own range, without the child: its next peer
                // takes it over.
                let rest = RingRange { after: child, before: pending.range.before };
                if let Some(&heir) = peers_in(rest, members, me).first() {
                    let range = RingRange { after: heir, before: pending.range.before };
                    out.push(self.track(now, heir, id, range, pending.delta));
                }
            }
        }
        out
    }

    /// When the earliest retransmit is due.
    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.deadlines.first().map(|(at, _, _)| *at)
    }

    /// Number of sends awaiting an ack.
    pub(super) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    fn track(&mut self, now: Time, to: PeerId, id: Dot, range: RingRange, delta: Arc<ConfigDelta>) -> Transmission {
        let transmission = Transmission { to, id, range, delta: delta.clone() };
        if self.pending.len() >= self.config.pending_max {
            self.untracked += 1;
            return transmission;
        }
        let deadline = now + self.config.ack_timeout;
        if let Some(old) = self.pending.insert((id, to), Pending { range, delta, attempts: 1, deadline }) {
            self.deadlines.remove(&(old.deadline, id, to));
        }
        self.deadlines.insert((deadline, id, to));
        transmission
    }
}

/// The known peers inside `range`, in ring order, without `me`.
fn peers_in(range: RingRange, members: &BTreeSet<PeerId>, me: PeerId) -> Vec<PeerId> {
    let upper = members.range((Bound::Excluded(range.after), Bound::Unbounded));
    let peers: Vec<PeerId> = if range.after < range.before {
        members
            .range((Bound::Excluded(range.after), Bound::Excluded(range.before)))
            .copied()
            .collect()
    } else {
        upper.chain(members.range(..range.before)).copied().collect()
    };
    peers.into_iter().filter(|p| *p != me).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::ReplicaId;

    fn config() -> TreeConfig {
        TreeConfig {
            fanout: 3,
            ack_timeout: Duration::from_millis(10),
            send_attempts_max: 2,
            pending_max: 1000,
            seen_max: 100,
        }
    }

    fn id() -> Dot {
        Dot::new(ReplicaId::new(1).unwrap(), 1).unwrap()
    }

    fn ids(range: std::ops::RangeInclusive<u64>) -> BTreeSet<PeerId> {
        range.map(PeerId).collect()
    }

    /// Follows a broadcast through the tree with perfect delivery and
    /// returns how many times each peer received it.
    fn deliver_everywhere(origin: PeerId, members: &BTreeSet<PeerId>) -> BTreeMap<PeerId, usize> {
        let mut received = BTreeMap::new();
        let delta = Arc::new(ConfigDelta::default());
        let mut queue = VecDeque::new();
        let range = RingRange { after: origin, before: origin };
        let mut tree = BroadcastTree::new(config());
        queue.extend(tree.spread(Time::ZERO, origin, id(), range, delta.clone(), members));
        while let Some(t) = queue.pop_front() {
            *received.entry(t.to).or_insert(0) += 1;
            let mut child = BroadcastTree::new(config());
            let view: BTreeSet<PeerId> = members.iter().copied().filter(|p| *p != t.to).collect();
            queue.extend(child.spread(Time::ZERO, t.to, id(), t.range, delta.clone(), &view));
        }
        received
    }

    #[test]
    fn every_peer_receives_a_broadcast_exactly_once() {
        let members = ids(1..=200);
        let received = deliver_everywhere(PeerId(77), &members);
        assert_eq!(received.len(), 199);
        assert!(received.values().all(|n| *n == 1));
        assert!(!received.contains_key(&PeerId(77)));
    }

    #[test]
    fn a_silent_child_is_retried_then_replaced_by_its_next_peer() {
        let members = ids(1..=9);
        let mut tree = BroadcastTree::new(config());
        let range = RingRange { after: PeerId(1), before: PeerId(1) };
        let first = tree.spread(Time::ZERO, PeerId(1), id(), range, Arc::new(ConfigDelta::default()), &members);
        assert_eq!(first.len(), 3);
        for t in &first[1..] {
            tree.acknowledge(t.to, id());
        }
        let silent = first[0].to;
        let retry = tree.handle_timeout(Time::ZERO + Duration::from_millis(10), PeerId(1), &members);
        assert_eq!(retry.iter().map(|t| t.to).collect::<Vec<_>>(), vec![silent]);
        let takeover = tree.handle_timeout(Time::ZERO + Duration::from_millis(30), PeerId(1), &members);
        assert_eq!(takeover.len(), 1);
        assert_ne!(takeover[0].to, silent);
        assert_eq!(takeover[0].range.before, first[0].range.before);
        assert_eq!(tree.abandoned, 1);
    }

    #[test]
    fn duplicates_are_recognised_within_the_memory_bound() {
        let mut tree = BroadcastTree::new(config());
        assert!(tree.first_sight(id()));
        assert!(!tree.first_sight(id()));
        for c in 2..=200 {
            tree.first_sight(Dot::new(ReplicaId::new(1).unwrap(), c).unwrap());
        }
        assert!(tree.seen.len() <= 100);
    }
}
