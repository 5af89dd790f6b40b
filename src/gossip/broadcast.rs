//! Dissemination of changes: a broadcast tree over the ring of peer ids,
//! with acknowledgements and bounded retransmits.
//!
//! A change's origin owns the whole ring (every peer but itself). Whoever
//! owns a ring range splits the peers it knows in that range into at most
//! `fanout` contiguous chunks, sends the change to the first peer (or, with
//! `redundancy` 2, the first two peers) of each chunk and hands it the rest
//! of the chunk. Each peer therefore receives a
//! change about once (cost per write and peer: one message and one ack)
//! after O(log N) hops, whatever the size of the mesh. Ranges are ids, not
//! lists, so peers whose member lists differ still cover the whole ring:
//! each fills its range from its own view. A lost message is retransmitted
//! after `ack_timeout`; after `send_attempts_max` tries the next peer of the
//! child's range takes over the rest of that range. What still slips through (crashes, partitions) is
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
    sent_at: Time,
    deadline: Time,
}

/// Smoothed round-trip estimates per peer (RFC 6298), bounded in size.
#[derive(Debug, Default)]
struct RoundTrips {
    by_peer: BTreeMap<PeerId, (Duration, Duration)>,
}

impl RoundTrips {
    /// Peers remembered at most; beyond, the lowest id is forgotten.
    const PEERS_MAX: usize = 65_536;

    fn sample(&mut self, peer: PeerId, rtt: Duration) {
        let entry = self.by_peer.entry(peer).or_insert((rtt, rtt / 2));
        let (srtt, rttvar) = *entry;
        let deviation = srtt.abs_diff(rtt);
        *entry = ((srtt * 7 + rtt) / 8, (rttvar * 3 + deviation) / 4);
        if self.by_peer.len() > Self::PEERS_MAX {
            self.by_peer.pop_first();
        }
    }

    fn timeout(&self, peer: PeerId) -> Option<Duration> {
        self.by_peer
            .get(&peer)
            .map(|(srtt, rttvar)| *srtt + (*rttvar * 4).max(*srtt / 8))
    }
}

/// Settings of the broadcast tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeConfig {
    /// Chunks each tree node cuts its range into.
    pub fanout: usize,
    /// Peers of each chunk that receive the change (1: a tree; 2: every
    /// peer gets two copies over independent paths, so one loss costs no
    /// retransmit delay).
    pub redundancy: usize,
    /// Wait at most this long for an ack before sending again (less once
    /// the peer's round trip is measured).
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
    round_trips: RoundTrips,
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
            round_trips: RoundTrips::default(),
            untracked: 0,
            abandoned: 0,
        }
    }

    /// Whether broadcast `id` was already handled here (a duplicate).
    pub(super) fn has_seen(&self, id: Dot) -> bool {
        self.seen.contains(&id)
    }

    /// Records broadcast `id` as handled, forgetting the oldest beyond
    /// `seen_max`.
    pub(super) fn mark_seen(&mut self, id: Dot) {
        if !self.seen.insert(id) {
            return;
        }
        self.seen_order.push_back(id);
        if self.seen_order.len() > self.config.seen_max
            && let Some(oldest) = self.seen_order.pop_front()
        {
            self.seen.remove(&oldest);
        }
    }

    /// Sends `delta` down the tree for `range`, as seen from `me`: the
    /// peers in the range are cut into at most `fanout` contiguous chunks,
    /// and the first `redundancy` peers of each chunk receive the change,
    /// all made responsible for the rest of the chunk after the last of
    /// them. A range never reaches back to its owner or an ancestor.
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
        let mut out = Vec::with_capacity(chunks * self.config.redundancy);
        for chunk in 0..chunks {
            let start = chunk * peers.len() / chunks;
            let end = (chunk + 1) * peers.len() / chunks;
            let before = if end < peers.len() {
                peers[end]
            } else {
                range.before
            };
            let heads = &peers[start..end.min(start + self.config.redundancy)];
            // Every head gets the same range (after the last head), so they
            // all cut it the same way and each peer below gets one copy
            // from each of them.
            let after = *heads.last().expect("a chunk has at least one peer");
            for &head in heads {
                out.push(self.track(now, head, id, RingRange { after, before }, delta.clone()));
            }
        }
        out
    }

    /// An ack arrived: stop retransmitting to `from`, and learn the round
    /// trip to it (from first attempts only: an ack after a retransmit is
    /// ambiguous, Karn's rule).
    pub(super) fn acknowledge(&mut self, now: Time, from: PeerId, id: Dot) {
        let Some(p) = self.pending.remove(&(id, from)) else {
            return;
        };
        self.deadlines.remove(&(p.deadline, id, from));
        if p.attempts == 1 {
            self.round_trips.sample(from, now.since(p.sent_at));
        }
    }

    /// Retransmits what timed out at `now`; gives up on children that used
    /// all their attempts (or left the member list) and hands their range to
    /// the next peer in it.
    pub(super) fn handle_timeout(
        &mut self,
        now: Time,
        me: PeerId,
        members: &BTreeSet<PeerId>,
    ) -> Vec<Transmission> {
        let mut out = Vec::new();
        while let Some(&(deadline, id, child)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(mut pending) = self.pending.remove(&(id, child)) else {
                continue;
            };
            if pending.attempts < self.config.send_attempts_max && members.contains(&child) {
                pending.attempts += 1;
                pending.deadline = now + self.retransmit_timeout(child) * pending.attempts;
                self.deadlines.insert((pending.deadline, id, child));
                out.push(Transmission {
                    to: child,
                    id,
                    range: pending.range,
                    delta: pending.delta.clone(),
                });
                self.pending.insert((id, child), pending);
            } else {
                self.abandoned += 1;
                // The next peer of the child's range takes over the rest of
                // it. The range shrinks with every takeover, so a run of
                // silent peers is walked through once, never in a loop.
                if let Some(&heir) = peers_in(pending.range, members, me).first() {
                    let range = RingRange {
                        after: heir,
                        before: pending.range.before,
                    };
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

    /// How long to wait for `peer`'s ack: from its measured round trip
    /// when known (as TCP does: smoothed RTT plus four deviations), never
    /// more than `ack_timeout`, which also serves peers not yet measured.
    fn retransmit_timeout(&self, peer: PeerId) -> Duration {
        self.round_trips
            .timeout(peer)
            .map_or(self.config.ack_timeout, |t| t.min(self.config.ack_timeout))
    }

    fn track(
        &mut self,
        now: Time,
        to: PeerId,
        id: Dot,
        range: RingRange,
        delta: Arc<ConfigDelta>,
    ) -> Transmission {
        let transmission = Transmission {
            to,
            id,
            range,
            delta: delta.clone(),
        };
        if self.pending.len() >= self.config.pending_max {
            self.untracked += 1;
            return transmission;
        }
        let deadline = now + self.retransmit_timeout(to);
        let pending = Pending {
            range,
            delta,
            attempts: 1,
            sent_at: now,
            deadline,
        };
        if let Some(old) = self.pending.insert((id, to), pending) {
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
        upper
            .chain(members.range(..range.before))
            .copied()
            .collect()
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
            redundancy: 1,
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

    /// Follows a broadcast through the tree with perfect delivery (each
    /// peer forwarding only on first sight, as nodes do) and returns how
    /// many times each peer received it.
    fn deliver_everywhere(
        config: TreeConfig,
        origin: PeerId,
        members: &BTreeSet<PeerId>,
    ) -> BTreeMap<PeerId, usize> {
        let mut received = BTreeMap::new();
        let delta = Arc::new(ConfigDelta::default());
        let mut queue = VecDeque::new();
        let range = RingRange {
            after: origin,
            before: origin,
        };
        let mut tree = BroadcastTree::new(config);
        queue.extend(tree.spread(Time::ZERO, origin, id(), range, delta.clone(), members));
        while let Some(t) = queue.pop_front() {
            let count = received.entry(t.to).or_insert(0);
            *count += 1;
            if *count == 1 {
                let mut child = BroadcastTree::new(config);
                queue.extend(child.spread(Time::ZERO, t.to, id(), t.range, delta.clone(), members));
            }
        }
        received
    }

    #[test]
    fn every_peer_receives_a_broadcast_exactly_once() {
        let members = ids(1..=200);
        let received = deliver_everywhere(config(), PeerId(77), &members);
        assert_eq!(received.len(), 199);
        assert!(received.values().all(|n| *n == 1));
        assert!(!received.contains_key(&PeerId(77)));
    }

    #[test]
    fn with_redundancy_two_every_peer_below_the_origin_heads_receives_two_copies() {
        let members = ids(1..=300);
        let received = deliver_everywhere(
            TreeConfig {
                redundancy: 2,
                ..config()
            },
            PeerId(5),
            &members,
        );
        assert_eq!(received.len(), 299);
        // The origin's own heads get one copy each; everyone below them
        // gets one from each head of their parent's chunk.
        let once = received.values().filter(|n| **n == 1).count();
        assert_eq!(once, 2 * config().fanout, "{received:?}");
        assert!(received.values().all(|n| *n <= 2), "{received:?}");
    }

    #[test]
    fn a_silent_child_is_retried_then_replaced_by_its_next_peer() {
        let members = ids(1..=9);
        let mut tree = BroadcastTree::new(config());
        let range = RingRange {
            after: PeerId(1),
            before: PeerId(1),
        };
        let first = tree.spread(
            Time::ZERO,
            PeerId(1),
            id(),
            range,
            Arc::new(ConfigDelta::default()),
            &members,
        );
        assert_eq!(first.len(), 3);
        for t in &first[1..] {
            tree.acknowledge(Time::ZERO, t.to, id());
        }
        let silent = first[0].to;
        let retry =
            tree.handle_timeout(Time::ZERO + Duration::from_millis(10), PeerId(1), &members);
        assert_eq!(retry.iter().map(|t| t.to).collect::<Vec<_>>(), vec![silent]);
        let takeover =
            tree.handle_timeout(Time::ZERO + Duration::from_millis(30), PeerId(1), &members);
        assert_eq!(takeover.len(), 1);
        assert_ne!(takeover[0].to, silent);
        assert_eq!(takeover[0].range.before, first[0].range.before);
        assert_eq!(tree.abandoned, 1);
    }

    #[test]
    fn takeovers_walk_through_silent_peers_and_end() {
        let members = ids(1..=9);
        let mut tree = BroadcastTree::new(TreeConfig {
            fanout: 1,
            ..config()
        });
        let range = RingRange {
            after: PeerId(1),
            before: PeerId(1),
        };
        let delta = Arc::new(ConfigDelta::default());
        let first = tree.spread(Time::ZERO, PeerId(1), id(), range, delta, &members);
        assert_eq!(first.len(), 1);
        // Nobody ever answers: every peer of the range is tried, then the
        // broadcast is given up to anti-entropy.
        let mut sent = first.len();
        while let Some(deadline) = tree.next_deadline() {
            sent += tree.handle_timeout(deadline, PeerId(1), &members).len();
            assert!(
                sent <= 8 * config().send_attempts_max as usize,
                "{sent} sends: a takeover loop"
            );
        }
        assert_eq!(tree.abandoned, 8);
        assert_eq!(tree.pending_count(), 0);
    }

    #[test]
    fn duplicates_are_recognised_within_the_memory_bound() {
        let mut tree = BroadcastTree::new(config());
        assert!(!tree.has_seen(id()));
        tree.mark_seen(id());
        assert!(tree.has_seen(id()));
        for c in 2..=200 {
            tree.mark_seen(Dot::new(ReplicaId::new(1).unwrap(), c).unwrap());
        }
        assert!(tree.seen.len() <= 100);
        assert!(!tree.has_seen(id()), "the oldest id is forgotten first");
    }
}
