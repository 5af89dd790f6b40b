//! [`Node`]: one peer's protocol state machine, tying the replica,
//! membership, the broadcast tree and anti-entropy together.
//!
//! Owns the order of effects: a local change is emitted for persistence
//! before any message carrying it. Must not do I/O: the driver executes the
//! [`Output`]s.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::crdt::model::ObjectKey;
use crate::crdt::{
    Command, CommandError, ConfigDelta, Dot, DotSet, Plausibility, RemoteDeltaError, RemoteJoin,
    Replica, ReplicaId,
};

use super::broadcast::{BroadcastTree, Transmission};
use super::membership::{MemberId, Membership};
use super::reports::{ApplyReport, HeardReport, REPORT_FANOUT, Reports, ReportsMerged};
use super::revocations::{
    REVOCATIONS_MAX, Revocation, RevocationError, RevocationExchange, RevocationVerifier,
    Revocations,
};
use super::wire::{self, Message, RingRange};
use super::{Config, PeerId, PeerState, Time};

/// How much sooner anti-entropy rounds come while rounds bring news.
const ANTI_ENTROPY_SPEEDUP: u32 = 10;

/// How many fast rounds follow the latest news. Like rumor mongering with a
/// counter: each peer that learned something keeps spreading it for a few
/// rounds, so the share of peers still missing it falls geometrically
/// instead of waiting for the slow periodic rounds.
const FAST_ROUNDS_AFTER_NEWS: u32 = 4;

/// How many anti-entropy intervals an asked-for answer is waited for:
/// then it counts as lost (a lost message, a restarted peer).
const SYNC_ANSWER_WAIT_ROUNDS: u32 = 10;

/// A received part carrying entries of at least this fraction (1/n) of
/// [`Config::sync_chunk_bytes`] is followed up at once: an honest cut part
/// is close to the budget (the budget counts each entry with its key, the
/// part shares a key among an object's fields).
const PART_FULL_DIVISOR: usize = 4;

/// A node this many dots behind a peer's summary asks that peer for what
/// it lacks at once (a bucket's worth: more than writes in flight ever
/// make, so that two peers under load do not ask each other back and forth).
const SYNC_GAP_DOTS_MIN: u64 = 1024;

/// How many dots of `theirs` are not in `ours` (saturating).
fn unseen_dots(theirs: &DotSet, ours: &DotSet) -> u64 {
    theirs
        .difference(ours)
        .ranges()
        .map(|(_, range)| (range.end() - range.start()).saturating_add(1))
        .fold(0, u64::saturating_add)
}

/// A `SyncRequest` this node sent and has no answer to yet.
#[derive(Clone, Copy, Debug)]
struct AwaitedAnswer {
    /// When it asked.
    asked: Time,
    /// Whether it asked for the next part of a cut answer: while such an
    /// answer is awaited, this node is being synced in parts and starts no
    /// other exchange.
    next_part: bool,
}

/// Seeds remembered for re-announcing (the first ones given win).
const SEEDS_MAX: usize = 16;

/// Remote changes kept for the shell to take ([`Node::take_remote_changes`]);
/// beyond, the oldest are dropped and counted.
const REMOTE_CHANGES_MAX: usize = 1024;

/// Objects named per remote change, at most (the rest are only counted).
const CHANGE_OBJECTS_MAX: usize = 8;

/// Random active members told of a dot conflict's winner, besides the peer
/// that sent the other value.
const CONFLICT_FANOUT: usize = 3;

/// Dots whose conflict this node has announced, remembered so that each is
/// announced once (beyond, the oldest are forgotten).
const CONFLICTS_ANNOUNCED_MAX: usize = 4096;

/// A remote delta that changed this node's state: who sent it, and whose
/// change it was, so that a compromised peer's writes and deletions can be
/// traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChange {
    /// The peer it came from (authenticated by the transport).
    pub from: PeerId,
    /// The replica that made it: a broadcast's origin (as claimed by its
    /// id; a relay could lie), `None` for anti-entropy, which merges many
    /// changes.
    pub origin: Option<ReplicaId>,
    /// Objects it wrote or removed (at most [`CHANGE_OBJECTS_MAX`]).
    pub objects: Vec<ObjectKey>,
    /// How many objects in all.
    pub objects_total: usize,
}

/// An effect the driver must carry out, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `bytes` to peer `to` (best effort: loss is repaired).
    Send {
        /// The receiver.
        to: PeerId,
        /// An encoded [`wire::Message`].
        bytes: Vec<u8>,
    },
    /// The state changed by this delta: make it durable. For a local
    /// change, this comes before any `Send` that carries it, and the change
    /// may be acknowledged to the client once it is durable.
    Persist(ConfigDelta),
    /// A revocation this node took (from the API or a peer): make it
    /// durable and refuse the certificates it covers. Comes before any
    /// `Send` that carries it.
    Revoked(Revocation),
}

/// Counters of one node, for metrics and the simulator's checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Messages handed to the driver to send.
    pub messages_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// Received bytes that did not decode (dropped).
    pub garbage_dropped: u64,
    /// Received deltas that failed validation (dropped, state unchanged),
    /// including those counted by kind below.
    pub deltas_refused: u64,
    /// Of those, deltas claiming a dot no replica can have issued yet.
    pub deltas_implausible_dots: u64,
    /// Of those, deltas with a stamp or lease renewal further ahead of this
    /// peer's clock than the skew allowed.
    pub deltas_ahead_of_clock: u64,
    /// Remote deltas joined that claimed dots of this node's replica it had
    /// not issued (a forger's claim; the replica's counter moved past it).
    pub own_dots_claimed: u64,
    /// Entries of joined remote deltas under a dot of another replica that
    /// this node held with another value (a forger's value under a
    /// replica's dot): each resolved to the entry that outranks the other.
    pub dot_conflicts_resolved: u64,
    /// Data messages (broadcasts, acks, anti-entropy) from a peer that is
    /// not an active member, dropped.
    pub data_from_non_members: u64,
    /// Report messages that broke a bound, or whose sender's report was of
    /// another generation than membership knows (dropped whole).
    pub reports_refused: u64,
    /// Reports about a peer other than their sender, ignored (a peer of
    /// 2.1 relays them; a forger makes them).
    pub reports_about_others: u64,
    /// Membership packets refused (not from their sender, or foca refused
    /// them).
    pub swim_refused: u64,
    /// Membership updates declaring another peer down, taken as suspicion.
    pub swim_downs_taken_as_suspicion: u64,
    /// Membership updates from another peer giving a known peer (or this
    /// node) an identity other than the one known, dropped: a peer's
    /// generation and address are its own word.
    pub swim_identities_refused: u64,
    /// Remote changes dropped before the shell took them.
    pub remote_changes_dropped: u64,
    /// Local membership calls foca declined (harmless, see `Membership`).
    pub swim_local_errors: u64,
    /// Messages not sent because they would exceed the size limit.
    pub too_large: u64,
    /// Anti-entropy answers cut short at [`Config::sync_chunk_bytes`] (the
    /// peer asks for the rest).
    pub sync_chunks_cut: u64,
    /// Requests for the next part of a cut answer.
    pub sync_chunks_asked: u64,
    /// Broadcast sends not tracked for retransmit (pending table full).
    pub broadcasts_untracked: u64,
    /// Broadcast children given up on and replaced.
    pub broadcasts_abandoned: u64,
    /// High-water mark of the pending-ack table.
    pub pending_high_water: usize,
    /// High-water mark of the output queue.
    pub outputs_high_water: usize,
    /// High-water mark of the membership timer queue.
    pub timers_high_water: usize,
    /// Revocations refused: malformed, not signed by the cluster CA, or
    /// beyond [`REVOCATIONS_MAX`] names (a message stops being read at its
    /// first refused revocation).
    pub revocations_refused: u64,
    /// Revocation messages not read because their sender's last one held a
    /// refused revocation less than [`REVOCATION_SENDER_COOLDOWN`] ago.
    pub revocations_ignored: u64,
    /// When a digest exchange last found this node's state equal to a
    /// peer's (the shell reports the time since as convergence lag).
    pub last_in_sync: Option<Time>,
    /// When this node first held everything a live member held: a digest
    /// exchange found both equal, or an anti-entropy answer left nothing
    /// of the member's context unseen here. A peer that started empty
    /// applies nothing to its HAProxy before (the shell's rule).
    pub first_synced: Option<Time>,
}

/// One peer's protocol state machine. See the module documentation.
///
/// The driver drains [`Node::poll_output`] after every call. One call adds a
/// bounded number of outputs: a persist, `fanout × redundancy` broadcasts,
/// an ack, a few SWIM packets, one anti-entropy message, or the retransmits
/// that fell due (at most the pending-ack bound). Its high-water mark is in
/// [`NodeStats`].
pub struct Node {
    config: Config,
    replica: Replica,
    membership: Membership,
    tree: BroadcastTree,
    rng: ChaCha8Rng,
    outputs: VecDeque<Output>,
    next_anti_entropy: Time,
    /// Anti-entropy rounds still to run at the fast pace.
    fast_rounds_left: u32,
    /// The `SyncRequest`s this node has no answer to yet, by peer (one at
    /// a time per peer, so that an answer is the answer to the one
    /// request): while one asks for a next part, no other exchange starts,
    /// since its answers would carry the same parts again. Forgotten after
    /// [`SYNC_ANSWER_WAIT_ROUNDS`] rounds. At most one per active member.
    awaiting_answer: BTreeMap<PeerId, AwaitedAnswer>,
    /// Peers given to [`Node::join`], asked again while no peer is known.
    seeds: Vec<PeerId>,
    next_rejoin: Time,
    reports: Reports,
    /// Where the next round's reports go: the active peers in turns, after
    /// this one.
    report_cursor: PeerId,
    remote_changes: VecDeque<RemoteChange>,
    /// Dots whose conflict this node announced (see
    /// [`Node::announce_conflicts`]), and the same in the order announced,
    /// to forget the oldest.
    conflicts_announced: BTreeSet<Dot>,
    conflicts_announced_order: VecDeque<Dot>,
    revocations: Revocations,
    /// Peers whose revocation messages go unread until the given time, for
    /// having sent a refused one; bounded by [`REVOCATION_SENDERS_MAX`].
    revocation_senders_ignored: BTreeMap<PeerId, Time>,
    stats: NodeStats,
}

/// How long a peer that sent a malformed or forged revocation has its
/// revocation messages ignored. Why: checking a signature costs the
/// receiver far more than forging one costs the sender (an ECDSA
/// verification against a hundred-byte message), and an honest peer passes
/// on only revocations it checked, so it never sends such a one (a genuine
/// one refused because this node's set is full does not count). One check per sender per
/// cooldown bounds what a member can make every peer spend; an honest
/// peer's revocations still arrive through anti-entropy with the others.
pub const REVOCATION_SENDER_COOLDOWN: Duration = Duration::from_secs(30);
/// The most senders ignored at once; beyond it the one ignored longest is
/// let go (only members send data at all, so a mesh has few of them).
const REVOCATION_SENDERS_MAX: usize = 1024;

impl Node {
    /// A node for `me` holding `replica` (new, or restored from disk). All
    /// its randomness derives from `seed`.
    pub fn new(config: Config, me: MemberId, replica: Replica, seed: u64, now: Time) -> Node {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let membership = Membership::new(me, config.swim.clone(), rng.random());
        let tree = BroadcastTree::new(config.tree);
        // Spread the first anti-entropy round so that peers started
        // together do not all sync at the same instant.
        let jitter = config.anti_entropy_interval.mul_f64(rng.random::<f64>());
        Node {
            next_anti_entropy: now + jitter,
            fast_rounds_left: 0,
            awaiting_answer: BTreeMap::new(),
            seeds: Vec::new(),
            next_rejoin: now,
            config,
            replica,
            membership,
            tree,
            rng,
            outputs: VecDeque::new(),
            reports: Reports::default(),
            report_cursor: me.peer,
            remote_changes: VecDeque::new(),
            conflicts_announced: BTreeSet::new(),
            conflicts_announced_order: VecDeque::new(),
            revocations: Revocations::default(),
            revocation_senders_ignored: BTreeMap::new(),
            stats: NodeStats::default(),
        }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.membership.identity().peer
    }

    /// This node's current membership identity.
    pub fn identity(&self) -> MemberId {
        self.membership.identity()
    }

    /// The replica (read-only: changes go through [`Node::execute`]).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The peers this node believes alive.
    pub fn members(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.membership.active().iter().copied()
    }

    /// Where `peer` accepts gossip, as SWIM spread it (`None` for a peer
    /// not heard of, such as a seed before it answered).
    pub fn address_of(&self, peer: PeerId) -> Option<std::net::SocketAddr> {
        self.membership.address_of(peer)
    }

    /// Every peer SWIM knows of (alive, suspect or down), with its identity.
    pub fn peers(&self) -> impl Iterator<Item = (MemberId, PeerState)> + '_ {
        self.membership.states()
    }

    /// The latest report of every other peer heard of (directly or
    /// relayed), and when it arrived.
    pub fn reports(&self) -> impl Iterator<Item = &HeardReport> + '_ {
        self.reports.others()
    }

    /// What this node's reports say about its HAProxy from now on.
    pub fn set_haproxy_report(&mut self, report: Option<ApplyReport>) {
        self.reports.set_own_haproxy(report);
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        let mut stats = self.stats.clone();
        stats.swim_refused = self.membership.refused_packets;
        stats.swim_downs_taken_as_suspicion = self.membership.downs_taken_as_suspicion;
        stats.swim_identities_refused = self.membership.identities_refused;
        stats.own_dots_claimed = self.replica.own_dots_claimed();
        stats.swim_local_errors = self.membership.local_errors;
        stats.broadcasts_untracked = self.tree.untracked;
        stats.broadcasts_abandoned = self.tree.abandoned;
        stats
    }

    /// [`NodeStats::too_large`] alone, for a caller that checks it after
    /// every step (without copying every counter).
    pub fn messages_too_large(&self) -> u64 {
        self.stats.too_large
    }

    /// [`NodeStats::first_synced`] alone, likewise.
    pub fn first_synced(&self) -> Option<Time> {
        self.stats.first_synced
    }

    /// Asks `seed` to let this node join the mesh.
    ///
    /// The seed is remembered: while this node knows no live peer (the
    /// announce was lost, or the seed was down or partitioned away), it
    /// announces to its seeds again every `rejoin_interval`.
    pub fn join(&mut self, now: Time, seed: PeerId) {
        if !self.seeds.contains(&seed) && self.seeds.len() < SEEDS_MAX {
            self.seeds.push(seed);
        }
        self.next_rejoin = now + self.config.rejoin_interval;
        let sends = self.membership.announce(now, seed);
        self.send_swim(sends);
    }

    /// Takes `peers` as alive without any exchange (starting from a known
    /// member list, e.g. a simulated mesh that has been running).
    ///
    /// foca keeps its members in a list with linear lookups, so loading N
    /// members into each of N nodes costs O(N³) overall; beyond
    /// `swim_members_max` peers, SWIM is given a random sample of that size
    /// (it probes and detects failures among those), while dissemination
    /// uses the whole list. The simulator uses this for meshes of
    /// thousands of peers.
    pub fn assume_members(&mut self, now: Time, peers: &[MemberId], swim_members_max: usize) {
        let me = self.peer_id();
        let mut probed: Vec<MemberId> = peers.iter().copied().filter(|p| p.peer != me).collect();
        while probed.len() > swim_members_max {
            let drop = self.rng.random_range(0..probed.len());
            probed.swap_remove(drop);
        }
        let sends = self.membership.assume_alive(now, peers, &probed);
        self.send_swim(sends);
    }

    /// Leaves the mesh gracefully: peers stop probing this node at once.
    pub fn leave(&mut self, now: Time) {
        let sends = self.membership.leave(now);
        self.send_swim(sends);
    }

    /// Executes a local command at wall-clock `wall_ms`: the returned delta
    /// is queued for persistence, then pushed down the broadcast tree at
    /// once (no batching timer). An empty delta changed nothing and goes
    /// nowhere.
    pub fn execute(
        &mut self,
        now: Time,
        wall_ms: u64,
        command: &Command,
    ) -> Result<ConfigDelta, CommandError> {
        let delta = self.replica.execute(command, wall_ms)?;
        self.publish_local(now, &delta);
        Ok(delta)
    }

    /// Makes a local change durable, then pushes it down the broadcast
    /// tree at once (no batching timer). An empty delta changed nothing and
    /// goes nowhere.
    fn publish_local(&mut self, now: Time, delta: &ConfigDelta) {
        if delta.is_empty() {
            return;
        }
        self.push_output(Output::Persist(delta.clone()));
        let me = self.peer_id();
        let id = Dot::new(
            self.replica.id(),
            delta.context.max_counter(self.replica.id()),
        )
        .expect("a non-empty local delta holds a dot of its own replica");
        self.tree.mark_seen(id);
        let everyone = RingRange {
            after: me,
            before: me,
        };
        let sends = self.tree.spread(
            now,
            me,
            id,
            everyone,
            Arc::new(delta.clone()),
            self.membership.active(),
        );
        self.transmit(sends);
    }

    /// Handles bytes received from `from` (authenticated by the transport)
    /// at wall-clock `wall_ms` (what remote claims are held against, see
    /// [`Plausibility`]). Garbage is dropped and counted, never an error.
    /// Only membership packets are taken from a peer that is not an active
    /// member: data, anti-entropy and reports come from members only.
    pub fn handle_message(&mut self, now: Time, wall_ms: u64, from: PeerId, bytes: &[u8]) {
        self.stats.messages_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        let message = match wire::decode(bytes) {
            Ok(message) => message,
            Err(_) => {
                self.stats.garbage_dropped += 1;
                return;
            }
        };
        if !matches!(message, Message::Swim(_)) && !self.membership.active().contains(&from) {
            self.stats.data_from_non_members += 1;
            return;
        }
        let bounds = Plausibility {
            wall_ms,
            skew_max_ms: u64::try_from(self.config.clock_skew_max.as_millis()).unwrap_or(u64::MAX),
        };
        match message {
            Message::Swim(packet) => {
                let sends = self.membership.handle_packet(now, from, &packet);
                self.send_swim(sends);
                // A peer that comes up (a new one, or one back from a
                // restart or a partition) and this node compare revocations
                // at once, not at the next anti-entropy round between them:
                // both sides send their digest, so a peer that was down
                // when a certificate was revoked (its own set empty or
                // behind) asks as soon as it sees the first member up.
                // Others that came up (learned from `from`'s word) are
                // told only when there is something to tell: a member's
                // gossip of made-up peers must not make this node dial
                // every address it names.
                let digest = self.revocations.digest();
                for peer in self.membership.take_came_up() {
                    if peer == from || !self.revocations.is_empty() {
                        self.send(
                            peer,
                            &Message::Revocations(RevocationExchange::Digest(digest)),
                        );
                    }
                }
            }
            Message::Broadcast { id, range, delta } => {
                // Acked even when refused below: retransmitting garbage helps
                // nobody, and anti-entropy covers this peer's subtree.
                self.send(from, &Message::BroadcastAck { id });
                // A refused delta does not use up its id, so that the
                // genuine change with that id still gets through.
                if self.tree.has_seen(id)
                    || self
                        .join_remote(now, from, Some(id.replica), delta.clone(), bounds)
                        .is_none()
                {
                    return;
                }
                self.tree.mark_seen(id);
                let sends = self.tree.spread(
                    now,
                    self.peer_id(),
                    id,
                    range,
                    Arc::new(delta),
                    self.membership.active(),
                );
                self.transmit(sends);
            }
            Message::BroadcastAck { id } => self.tree.acknowledge(now, from, id),
            Message::Revocations(exchange) => self.handle_revocations(now, from, exchange),
            Message::Reports { reports } => {
                let generation = self.membership.generation_of(from);
                match self.reports.merge(now, from, generation, reports) {
                    ReportsMerged::Refused => self.stats.reports_refused += 1,
                    ReportsMerged::Taken { about_others } => {
                        self.stats.reports_about_others += about_others as u64;
                    }
                }
            }
            Message::Digest { digest } => {
                if digest == self.replica.digest() {
                    self.in_sync(now);
                } else {
                    self.request_sync(now, from, false);
                }
            }
            Message::SyncRequest { summary } => {
                let chunk = self
                    .replica
                    .missing_for_peer(&summary, self.config.sync_chunk_bytes);
                if !chunk.complete {
                    self.stats.sync_chunks_cut += 1;
                }
                let reply = Message::SyncDelta {
                    delta: chunk.delta,
                    reply_to: Some(self.replica.summary()),
                    sender_digest: self.replica.digest(),
                };
                self.send(from, &reply);
                // Far behind the requester (a new or wiped node that the
                // requester's round found): ask it at once, rather than
                // wait for a cut answer back (none is sent, see below).
                if unseen_dots(&summary.context, self.replica.context()) >= SYNC_GAP_DOTS_MIN {
                    self.request_sync(now, from, false);
                }
            }
            Message::SyncDelta {
                delta,
                reply_to,
                sender_digest,
            } => {
                if reply_to.is_some() {
                    // The answer to this node's request (or a part the
                    // peer cut on its own, taken alike: at worst one more
                    // request).
                    self.awaiting_answer.remove(&from);
                }
                // Measured before the join takes the delta: the entries
                // alone, which a sender cannot pad.
                let part_bytes =
                    postcard::experimental::serialized_size(&delta.objects).unwrap_or(usize::MAX);
                let Some(changed) = self.join_remote(now, from, None, delta, bounds) else {
                    return;
                };
                if changed {
                    // This peer was behind (after a partition or a restart,
                    // say); others likely are too. Spread what it learned
                    // at a faster pace until rounds stop bringing news.
                    self.fast_rounds_left = FAST_ROUNDS_AFTER_NEWS;
                    let soon = now + self.config.anti_entropy_interval / ANTI_ENTROPY_SPEEDUP;
                    self.next_anti_entropy = self.next_anti_entropy.min(soon);
                }
                if self.replica.digest() == sender_digest {
                    self.in_sync(now);
                } else if let Some(summary) = reply_to {
                    // The answer was a part (a large state, a far-behind
                    // peer) if the sender has seen what this node has not:
                    // the next part is asked for at once, from what this
                    // node holds now, rather than at a round. A sender
                    // keeps nothing between parts, so a sync cut by a
                    // reconnect or a restart of either side goes on from
                    // wherever the joined parts took this node. Only a
                    // part of a size an honest cut gives is followed up: a
                    // member feeding small made-up parts for ever would
                    // otherwise keep this node from every other exchange.
                    let behind = !summary.context.is_subset_of(self.replica.context());
                    let next_part = behind
                        && changed
                        && part_bytes >= self.config.sync_chunk_bytes / PART_FULL_DIVISOR
                        && self.may_request(now, from, true);
                    // What the peer lacks goes back only if it fits one
                    // part: a peer far behind asks by itself (it saw this
                    // node's summary in its request, see above), so that
                    // every answer with a summary answers one request and
                    // no part comes twice.
                    let chunk = self
                        .replica
                        .missing_for_peer(&summary, self.config.sync_chunk_bytes);
                    if chunk.complete && !chunk.delta.is_empty() {
                        let reply = Message::SyncDelta {
                            delta: chunk.delta,
                            reply_to: None,
                            sender_digest: self.replica.digest(),
                        };
                        self.send(from, &reply);
                    }
                    if next_part {
                        self.request_sync(now, from, true);
                        self.stats.sync_chunks_asked += 1;
                    } else if !behind && !summary.context.is_empty() {
                        // Every dot a member that holds something had seen
                        // is seen here, and its removals were never cut:
                        // nothing it held is missing (the digests may
                        // still differ by what this node holds that the
                        // member lacks).
                        self.stats.first_synced.get_or_insert(now);
                    }
                }
            }
        }
    }

    /// Whether this node may ask `peer` for what it lacks now: not while a
    /// request to it is unanswered, nor while it is being synced in parts
    /// (by anyone: another chain would bring the same parts again); for a
    /// next part (`next_part`), not while another chain runs.
    fn may_request(&self, now: Time, peer: PeerId, next_part: bool) -> bool {
        !self
            .awaiting_answer
            .get(&peer)
            .is_some_and(|answer| self.still_awaited(now, peer, answer))
            && !self.syncing_in_parts(now, next_part.then_some(peer))
    }

    /// Whether this node is being synced in parts: a next part is awaited
    /// from an active member (other than `except`).
    fn syncing_in_parts(&self, now: Time, except: Option<PeerId>) -> bool {
        self.awaiting_answer.iter().any(|(peer, answer)| {
            answer.next_part && Some(*peer) != except && self.still_awaited(now, *peer, answer)
        })
    }

    /// Whether `answer`, from `peer`, is still to come: `peer` is an active
    /// member and it was asked for less than [`SYNC_ANSWER_WAIT_ROUNDS`]
    /// rounds ago.
    fn still_awaited(&self, now: Time, peer: PeerId, answer: &AwaitedAnswer) -> bool {
        now < answer.asked + self.config.anti_entropy_interval * SYNC_ANSWER_WAIT_ROUNDS
            && self.membership.active().contains(&peer)
    }

    /// Asks `peer` for what this node lacks (`next_part`: the next part of
    /// a cut answer), unless [`Node::may_request`] says no; whether it
    /// asked.
    fn request_sync(&mut self, now: Time, peer: PeerId, next_part: bool) -> bool {
        if !self.may_request(now, peer, next_part) {
            return false;
        }
        let stale: Vec<PeerId> = self
            .awaiting_answer
            .iter()
            .filter(|(peer, answer)| !self.still_awaited(now, **peer, answer))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in stale {
            self.awaiting_answer.remove(&peer);
        }
        self.awaiting_answer.insert(
            peer,
            AwaitedAnswer {
                asked: now,
                next_part,
            },
        );
        let summary = self.replica.summary();
        self.send(peer, &Message::SyncRequest { summary });
        true
    }

    /// A digest exchange found this node's state equal to a member's.
    /// Equal empty states are no sync: two wiped peers would each take the
    /// other's nothing for the mesh's configuration.
    fn in_sync(&mut self, now: Time) {
        self.stats.last_in_sync = Some(now);
        if !self.replica.context().is_empty() {
            self.stats.first_synced.get_or_insert(now);
        }
    }

    /// Joins a remote delta: whether it changed the state, or `None` if it
    /// was refused (counted, state unchanged).
    /// Values of this replica's own that a forged claim removed are written
    /// again at once (see [`Replica::join`]), and the winners of dot
    /// conflicts are announced ([`Node::announce_conflicts`]).
    fn join_remote(
        &mut self,
        now: Time,
        from: PeerId,
        origin: Option<ReplicaId>,
        delta: ConfigDelta,
        bounds: Plausibility,
    ) -> Option<bool> {
        let joined = Replica::check_plausible(&delta, bounds)
            .and_then(|()| self.replica.join_attributed(&delta));
        match joined {
            Ok(RemoteJoin {
                changed: true,
                touched,
                conflicts,
            }) => {
                self.note_change(from, origin, touched);
                self.push_output(Output::Persist(delta));
                let rewritten = self.replica.rewrite_claimed(bounds.wall_ms);
                self.publish_local(now, &rewritten);
                self.announce_conflicts(from, conflicts);
                Some(true)
            }
            Ok(RemoteJoin { conflicts, .. }) => {
                self.announce_conflicts(from, conflicts);
                Some(false)
            }
            Err(error) => {
                self.stats.deltas_refused += 1;
                match error {
                    RemoteDeltaError::ImplausibleDot(_) => self.stats.deltas_implausible_dots += 1,
                    RemoteDeltaError::StampAhead { .. } | RemoteDeltaError::LeaseAhead { .. } => {
                        self.stats.deltas_ahead_of_clock += 1;
                    }
                    RemoteDeltaError::InvalidEntry { .. } | RemoteDeltaError::Join(_) => {}
                }
                None
            }
        }
    }

    /// Tells `from` and [`CONFLICT_FANOUT`] random active members which
    /// entry won each dot of `conflicts` here, once per dot, as an
    /// anti-entropy answer (not relayed; a peer of an older release takes
    /// it like any other).
    ///
    /// Anti-entropy never ships an entry for a dot both sides have seen, so
    /// peers holding two values under one dot would keep them for good:
    /// only a peer that meets both can tell. Each that does passes the
    /// winner on once (rumor mongering), so it soon reaches the dot's own
    /// replica, which never keeps a value it did not write under its dot:
    /// it writes its own value again under a fresh dot and removes the dot
    /// everywhere (see [`Replica::join`]), which ends the conflict.
    fn announce_conflicts(&mut self, from: PeerId, conflicts: Vec<Dot>) {
        self.stats.dot_conflicts_resolved += conflicts.len() as u64;
        for dot in conflicts {
            if !self.conflicts_announced.insert(dot) {
                continue;
            }
            self.conflicts_announced_order.push_back(dot);
            if self.conflicts_announced_order.len() > CONFLICTS_ANNOUNCED_MAX
                && let Some(oldest) = self.conflicts_announced_order.pop_front()
            {
                self.conflicts_announced.remove(&oldest);
            }
            // Removed meanwhile (the dot's replica's own repair): nothing
            // to tell.
            let Some(winner) = self.replica.live_entry(dot) else {
                continue;
            };
            let message = Message::SyncDelta {
                delta: winner,
                reply_to: None,
                sender_digest: self.replica.digest(),
            };
            let mut others: Vec<PeerId> = self
                .membership
                .active()
                .iter()
                .copied()
                .filter(|peer| *peer != from)
                .collect();
            let mut targets = vec![from];
            while targets.len() <= CONFLICT_FANOUT && !others.is_empty() {
                let pick = self.rng.random_range(0..others.len());
                targets.push(others.swap_remove(pick));
            }
            for to in targets {
                self.send(to, &message);
            }
        }
    }

    /// The remote changes since the last call, oldest first.
    pub fn take_remote_changes(&mut self) -> VecDeque<RemoteChange> {
        std::mem::take(&mut self.remote_changes)
    }

    fn note_change(
        &mut self,
        from: PeerId,
        origin: Option<ReplicaId>,
        objects: BTreeSet<ObjectKey>,
    ) {
        if self.remote_changes.len() >= REMOTE_CHANGES_MAX {
            self.remote_changes.pop_front();
            self.stats.remote_changes_dropped += 1;
        }
        self.remote_changes.push_back(RemoteChange {
            from,
            origin,
            objects_total: objects.len(),
            objects: objects.into_iter().take(CHANGE_OBJECTS_MAX).collect(),
        });
    }

    /// Runs everything due at `now`: membership timers, broadcast
    /// retransmits, and an anti-entropy round.
    pub fn handle_timeout(&mut self, now: Time) {
        let sends = self.membership.handle_timeout(now);
        self.send_swim(sends);
        let me = self.peer_id();
        let retransmits = self.tree.handle_timeout(now, me, self.membership.active());
        self.transmit(retransmits);
        if self.membership.active().is_empty() && !self.seeds.is_empty() && now >= self.next_rejoin
        {
            self.next_rejoin = now + self.config.rejoin_interval;
            for seed in self.seeds.clone() {
                let sends = self.membership.announce(now, seed);
                self.send_swim(sends);
            }
        }
        if now >= self.next_anti_entropy {
            let mut interval = self.config.anti_entropy_interval;
            if self.fast_rounds_left > 0 {
                self.fast_rounds_left -= 1;
                interval /= ANTI_ENTROPY_SPEEDUP;
            }
            self.next_anti_entropy = now + interval;
            let members = self.membership.active();
            if !members.is_empty() {
                let pick = self.rng.random_range(0..members.len());
                let peer = *members.iter().nth(pick).expect("index within length");
                // This node's report goes to a few active peers per round, in
                // turns (reports are not relayed: see `reports`).
                let report_targets: Vec<PeerId> = members
                    .range((Excluded(self.report_cursor), Unbounded))
                    .chain(members.iter())
                    .copied()
                    .take(REPORT_FANOUT.min(members.len()))
                    .collect();
                // While this node is being synced in parts, it starts no
                // other exchange: one would bring the same parts again.
                let digest = self.replica.digest();
                if !self.syncing_in_parts(now, None) {
                    self.send(peer, &Message::Digest { digest });
                }
                let identity = self.membership.identity();
                let report = self
                    .reports
                    .own(now, identity.peer, identity.generation, digest);
                let message = Message::Reports {
                    reports: vec![report],
                };
                for target in &report_targets {
                    self.send(*target, &message);
                }
                if let Some(last) = report_targets.last() {
                    self.report_cursor = *last;
                }
                // Only a peer holding revocations asks: one holding none is
                // asked by the others (and a mesh without any sends none).
                if !self.revocations.is_empty() {
                    let digest = self.revocations.digest();
                    self.send(
                        peer,
                        &Message::Revocations(RevocationExchange::Digest(digest)),
                    );
                }
            }
        }
        self.stats.timers_high_water = self
            .stats
            .timers_high_water
            .max(self.membership.timer_count());
    }

    /// Sets what checks revocations' signatures; until then every
    /// revocation is refused.
    pub fn set_revocation_verifier(&mut self, verifier: Box<dyn RevocationVerifier>) {
        self.revocations.set_verifier(verifier);
    }

    /// Takes revocations restored from disk at start, whose signatures the
    /// shell checked as it enforced them, without outputs (they are durable
    /// and enforced already). Returns how many were refused.
    pub fn restore_revocations(&mut self, list: Vec<Revocation>) -> usize {
        list.into_iter()
            .filter(|revocation| {
                self.revocations
                    .insert_verified(revocation.clone())
                    .is_err()
            })
            .count()
    }

    /// Takes a revocation given to this node (through the API), checked
    /// whole even if one held covers as much: if it is new, it is emitted for persistence and enforcement, then pushed to
    /// every active member at once. `Ok(false)`: it was known already.
    pub fn revoke(&mut self, revocation: Revocation) -> Result<bool, RevocationError> {
        self.revocations.check(&revocation)?;
        let taken = self.revocations.insert_verified(revocation.clone())?;
        if taken {
            self.push_output(Output::Revoked(revocation.clone()));
            let push = Message::Revocations(RevocationExchange::Set {
                list: vec![revocation],
                answer: false,
            });
            let members: Vec<PeerId> = self.membership.active().iter().copied().collect();
            for member in members {
                self.send(member, &push);
            }
        }
        Ok(taken)
    }

    /// Every revocation this node holds, by name.
    pub fn revocations(&self) -> impl Iterator<Item = &Revocation> + '_ {
        self.revocations.iter()
    }

    /// Declares `peer` down at once: the shell closed its connection because
    /// its certificate was revoked.
    pub fn evict(&mut self, now: Time, peer: PeerId) {
        let sends = self.membership.declare_down(now, peer);
        self.send_swim(sends);
    }

    /// A step of the revocation exchange (see [`RevocationExchange`]).
    /// Revocations a peer sends are taken as from the API but not pushed on:
    /// the peer that took one first pushed it to every member, and
    /// anti-entropy reaches the rest. A sender of a refused revocation is
    /// not heard on revocations for [`REVOCATION_SENDER_COOLDOWN`].
    fn handle_revocations(&mut self, now: Time, from: PeerId, exchange: RevocationExchange) {
        if self
            .revocation_senders_ignored
            .get(&from)
            .is_some_and(|until| now < *until)
        {
            self.stats.revocations_ignored += 1;
            return;
        }
        match exchange {
            RevocationExchange::Digest(digest) => {
                if digest != self.revocations.digest() {
                    self.send_revocations(from, true);
                }
            }
            RevocationExchange::Set { list, answer } => {
                if list.len() > REVOCATIONS_MAX {
                    self.stats.revocations_refused += 1;
                    self.ignore_revocations_from(now, from);
                    return;
                }
                let theirs = answer.then(|| super::revocations::digest_of(&list));
                for revocation in list {
                    match self.revocations.insert(revocation.clone()) {
                        Ok(true) => self.push_output(Output::Revoked(revocation)),
                        Ok(false) => {}
                        // A genuine revocation beyond this node's bound: an
                        // honest peer may hold it (its set is not full).
                        Err(RevocationError::Full) => self.stats.revocations_refused += 1,
                        // Checking a signature costs far more than sending
                        // a forged one: one refusal ends the message.
                        Err(RevocationError::Malformed | RevocationError::NotGenuine) => {
                            self.stats.revocations_refused += 1;
                            self.ignore_revocations_from(now, from);
                            return;
                        }
                    }
                }
                if theirs.is_some_and(|theirs| theirs != self.revocations.digest()) {
                    self.send_revocations(from, false);
                }
            }
        }
    }

    /// Ignores `from`'s revocation messages for the cooldown, forgetting
    /// the senders whose cooldown ended (and, at the bound, the one whose
    /// ends first).
    fn ignore_revocations_from(&mut self, now: Time, from: PeerId) {
        let ignored = &mut self.revocation_senders_ignored;
        ignored.retain(|_, until| now < *until);
        if ignored.len() >= REVOCATION_SENDERS_MAX
            && let Some(first) = ignored
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(p, _)| *p)
        {
            ignored.remove(&first);
        }
        ignored.insert(from, now + REVOCATION_SENDER_COOLDOWN);
    }

    /// Sends this node's whole revocation set to `to`.
    fn send_revocations(&mut self, to: PeerId, answer: bool) {
        let list = self.revocations.iter().cloned().collect();
        self.send(
            to,
            &Message::Revocations(RevocationExchange::Set { list, answer }),
        );
    }

    /// When [`Node::handle_timeout`] must next be called.
    pub fn next_deadline(&self) -> Time {
        let rejoin = (self.membership.active().is_empty() && !self.seeds.is_empty())
            .then_some(self.next_rejoin);
        [
            self.membership.next_deadline(),
            self.tree.next_deadline(),
            rejoin,
        ]
        .into_iter()
        .flatten()
        .fold(self.next_anti_entropy, Time::min)
    }

    /// The next effect to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn transmit(&mut self, transmissions: Vec<Transmission>) {
        for t in transmissions {
            let message = Message::Broadcast {
                id: t.id,
                range: t.range,
                delta: (*t.delta).clone(),
            };
            self.send(t.to, &message);
        }
        self.stats.pending_high_water =
            self.stats.pending_high_water.max(self.tree.pending_count());
    }

    fn send_swim(&mut self, sends: Vec<(PeerId, Vec<u8>)>) {
        for (to, packet) in sends {
            self.send(to, &Message::Swim(packet));
        }
    }

    fn send(&mut self, to: PeerId, message: &Message) {
        match wire::encode(message) {
            Ok(bytes) => {
                self.stats.messages_sent += 1;
                self.stats.bytes_sent += bytes.len() as u64;
                self.push_output(Output::Send { to, bytes });
            }
            Err(_) => self.stats.too_large += 1,
        }
    }

    fn push_output(&mut self, output: Output) {
        self.outputs.push_back(output);
        self.stats.outputs_high_water = self.stats.outputs_high_water.max(self.outputs.len());
    }
}
