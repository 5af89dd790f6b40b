//! The simulated world: peers, the event queue, the phases of a run.
//!
//! A run: bootstrap N peers with a known member list → let membership
//! settle → issue the writes (chaos: with partitions, crashes, restarts
//! and clock skew) → heal everything → run until every peer is identical
//! (or a time limit) → measure idle traffic → check.
//!
//! With hostile members, they forge messages from the first write until
//! the final heal (the liveness phase heals every fault, theirs too), never
//! crash and never write; every checker judges the honest peers only.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use aqueduct::crdt::model::{FieldValue, ObjectKey};
use aqueduct::crdt::{ConfigDelta, Digest, Dot, Replica, ReplicaId};
use aqueduct::gossip::{Config, MemberId, Node, NodeStats, Output, PeerId, PeerState, Time};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::checker::{self, WriteRecord};
use crate::hostile::{self, Forgery, HostileReport, Scene};
use crate::network::{LinkModel, Partition};
use crate::trace::Trace;
use crate::{
    FaultCounts, Options, Percentiles, Profile, QueueMarks, RefusedCounts, Report, workload,
};

/// Wall-clock origin of the simulation (2026-01-01), so leases and stamps
/// look like real times.
const WALL_EPOCH_MS: u64 = 1_767_225_600_000;
/// SWIM gets at most this many members at bootstrap (see
/// `Node::assume_members`).
const SWIM_BOOTSTRAP_MAX: usize = 1024;
/// Never simulate longer than this after the last write.
const QUIESCE_LIMIT: Duration = Duration::from_secs(120);
/// No node may queue more outputs than this at once (see `Node`'s bound).
const OUTPUTS_MAX: usize = 1024;
/// How often convergence is checked while quiescing.
const QUIESCE_STEP: Duration = Duration::from_millis(5);

enum Event {
    Deliver {
        from: usize,
        to: usize,
        bytes: Rc<Vec<u8>>,
        /// A hostile member's forgery, of this kind.
        forged: Option<Forgery>,
    },
    /// A hostile member forges its next message.
    Forge {
        peer: usize,
    },
    Timer {
        peer: usize,
        epoch: u64,
    },
    Write,
    StartPartition,
    HealPartition,
    Crash {
        peer: usize,
    },
    Restart {
        peer: usize,
        wipe: bool,
    },
}

struct Peer {
    id: PeerId,
    node: Option<Node>,
    replica_id: ReplicaId,
    generation: u32,
    /// Persisted deltas (the data directory): survives crashes, not wipes.
    disk: Vec<ConfigDelta>,
    skew_ms: i64,
    /// Bumped on every crash and restart, so stale timer events are ignored.
    epoch: u64,
    timer_at: Option<Time>,
    /// Per write index: simulated µs when this peer first had it.
    seen_at: Vec<u64>,
    unseen: BTreeSet<usize>,
    /// A hostile member: forges, never writes, never crashes.
    hostile: bool,
    /// The last counter of its own replica a hostile member forged with.
    forged_counter: u64,
}

/// [`Config::sync_chunk_bytes`] under chaos: a few dozen entries.
const CHAOS_SYNC_CHUNK_BYTES: usize = 4 << 10;

struct Profiles {
    link: LinkModel,
    config: Config,
    write_interval: Duration,
    settle: Duration,
    idle_window: Duration,
    skew_ms: i64,
    faults: bool,
}

impl Profiles {
    fn of(profile: Profile, peers: usize) -> Profiles {
        let size = u32::try_from(peers).unwrap_or(u32::MAX);
        match profile {
            Profile::Lan => Profiles {
                link: LinkModel::lan(),
                config: Config::lan(size),
                write_interval: Duration::from_millis(10),
                settle: Duration::from_secs(2),
                idle_window: Duration::from_secs(10),
                skew_ms: 0,
                faults: false,
            },
            Profile::Wan => Profiles {
                link: LinkModel::wan(),
                config: Config::wan(size),
                write_interval: Duration::from_millis(50),
                settle: Duration::from_secs(10),
                idle_window: Duration::from_secs(30),
                skew_ms: 0,
                faults: false,
            },
            Profile::Chaos => Profiles {
                link: LinkModel::lan(),
                // Small parts, so that a peer back from a crash or a
                // partition catches up in many of them, cut by further
                // faults.
                config: Config {
                    sync_chunk_bytes: CHAOS_SYNC_CHUNK_BYTES,
                    ..Config::lan(size)
                },
                write_interval: Duration::from_millis(20),
                settle: Duration::from_secs(2),
                idle_window: Duration::from_secs(10),
                skew_ms: 500,
                faults: true,
            },
        }
    }
}

/// Keeps foca from probing or gossiping on its own: membership stays the
/// list each node started with. For meshes of many thousands of peers,
/// whose full-membership SWIM costs the one-process simulator O(N²) memory
/// and O(N³) time (foca keeps members in a list with linear lookups).
fn silence_swim(config: &mut Config) {
    let never = Duration::from_secs(365 * 24 * 3600);
    config.swim.probe_period = never;
    config.swim.probe_rtt = never / 2;
    config.swim.periodic_announce = None;
    config.swim.periodic_announce_to_down_members = None;
    config.swim.periodic_gossip = None;
}

struct World {
    options: Options,
    profile: Profiles,
    rng: ChaCha8Rng,
    now: Time,
    seq: u64,
    events: BTreeMap<(Time, u64), Event>,
    peers: Vec<Peer>,
    partition: Partition,
    /// Peer id → index in `peers`.
    index: BTreeMap<PeerId, usize>,
    writes: Vec<WriteRecord>,
    trace: Trace,
    /// Running hash of every message sent, in order: equal for two runs
    /// exactly when they sent the same bytes in the same order.
    fingerprint: u64,
    messages_sent: u64,
    bytes_sent: u64,
    events_processed: u64,
    faults: FaultCounts,
    refused: RefusedCounts,
    queues: QueueMarks,
    failures: Vec<String>,
    /// What the hostile members forged, per kind.
    hostile: HostileReport,
    /// Refusals that forged messages caused at honest peers (left out of
    /// `refused`).
    excused: RefusedCounts,
    /// The fake digests of every forged report.
    forged_digests: BTreeSet<Digest>,
    /// Hostile members forge until then (the final heal).
    forge_until: Time,
}

/// Runs one simulation and checks it.
pub fn run(options: &Options) -> Report {
    let started = Instant::now();
    let mut world = World::new(options.clone());
    world.trace.log(world.now, || {
        format!(
            "bootstrap {} peers, profile {}",
            options.peers, options.profile
        )
    });
    world.advance(world.now + world.profile.settle);

    // Writes (and, in chaos, faults) from here on.
    let first_write = world.now;
    let write_span =
        world.profile.write_interval * u32::try_from(options.writes).unwrap_or(u32::MAX);
    for i in 0..options.writes {
        world.schedule(
            first_write + world.profile.write_interval * i as u32,
            Event::Write,
        );
    }
    let heal_at = first_write + write_span;
    if world.profile.faults {
        world.schedule_faults(first_write, heal_at);
    }
    world.forge_until = heal_at;
    for p in 0..world.peers.len() {
        if world.peers[p].hostile {
            world.schedule(first_write, Event::Forge { peer: p });
        }
    }
    let (msgs_before, bytes_before) = (world.messages_sent, world.bytes_sent);
    world.advance(heal_at);
    if world.profile.faults {
        world.heal_everything();
    }
    let converged_at = world.quiesce();
    let converged = converged_at.is_some();
    let heal_convergence_ms = match (world.profile.faults, converged_at) {
        (true, Some(at)) => Some(at.since(heal_at).as_secs_f64() * 1000.0),
        _ => None,
    };
    let writes = world.writes.len().max(1) as f64;
    let peers = options.peers as f64;
    let msgs_per_write_per_peer = (world.messages_sent - msgs_before) as f64 / writes / peers;
    let bytes_per_write_per_peer = (world.bytes_sent - bytes_before) as f64 / writes / peers;

    // Idle traffic: nothing written, everything converged.
    let idle_bytes_before = world.bytes_sent;
    let idle_end = world.now + world.profile.idle_window;
    world.advance(idle_end);
    let idle_bytes_per_peer_per_s = (world.bytes_sent - idle_bytes_before) as f64
        / peers
        / world.profile.idle_window.as_secs_f64();

    let (lost_writes, resurrections) = world.check(converged);
    let convergence = world.convergence_ms();
    Report {
        seed: options.seed,
        peers: options.peers,
        profile: options.profile,
        writes: world.writes.len(),
        swim: options.swim,
        converged,
        divergent_peers: checker::divergent_peers(&world.digests()),
        lost_writes,
        writes_lost_with_disk: world.writes.iter().filter(|w| w.lost_with_disk).count(),
        resurrections,
        convergence_ms: convergence,
        heal_convergence_ms,
        msgs_per_write_per_peer,
        bytes_per_write_per_peer,
        idle_bytes_per_peer_per_s,
        faults: world.faults.clone(),
        refused: world.refused.clone(),
        hostile: (options.hostile > 0).then(|| HostileReport {
            members: options.hostile,
            ..world.hostile.clone()
        }),
        queues: world.queues.clone(),
        simulated_ms: world.now.as_micros() as f64 / 1000.0,
        events: world.events_processed,
        fingerprint: format!("{:016x}", world.fingerprint),
        wall_ms: started.elapsed().as_secs_f64() * 1000.0,
        trace: if world.failures.is_empty() {
            Vec::new()
        } else {
            world.trace.lines().cloned().collect()
        },
        failures: world.failures.clone(),
    }
}

impl World {
    fn new(options: Options) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut profile = Profiles::of(options.profile, options.peers);
        if !options.swim {
            silence_swim(&mut profile.config);
        }
        let mut ids = BTreeSet::new();
        while ids.len() < options.peers {
            ids.insert(rng.random_range(1..u64::MAX));
        }
        let mut ids: Vec<PeerId> = ids.into_iter().map(PeerId).collect();
        // Peer index order is independent of ring order.
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.random_range(0..=i));
        }
        let mut world = World {
            trace: Trace::new(options.trace_lines),
            options,
            profile,
            rng,
            now: Time::ZERO,
            seq: 0,
            events: BTreeMap::new(),
            peers: Vec::new(),
            partition: Partition::None,
            index: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
            writes: Vec::new(),
            fingerprint: 0,
            messages_sent: 0,
            bytes_sent: 0,
            events_processed: 0,
            faults: FaultCounts::default(),
            refused: RefusedCounts::default(),
            queues: QueueMarks::default(),
            failures: Vec::new(),
            hostile: HostileReport::default(),
            excused: RefusedCounts::default(),
            forged_digests: BTreeSet::new(),
            forge_until: Time::ZERO,
        };
        let honest = ids.len().saturating_sub(world.options.hostile);
        for (p, &id) in ids.iter().enumerate() {
            let skew_ms = if world.profile.skew_ms > 0 {
                world
                    .rng
                    .random_range(-world.profile.skew_ms..=world.profile.skew_ms)
            } else {
                0
            };
            let replica_id = world.fresh_replica_id();
            let seed = world.rng.random();
            let node = Node::new(
                world.profile.config.clone(),
                member_id(id, 0),
                Replica::new(replica_id),
                seed,
                Time::ZERO,
            );
            world.peers.push(Peer {
                id,
                node: Some(node),
                replica_id,
                generation: 0,
                disk: Vec::new(),
                skew_ms,
                epoch: 0,
                timer_at: None,
                seen_at: Vec::new(),
                unseen: BTreeSet::new(),
                hostile: p >= honest,
                forged_counter: 0,
            });
        }
        let members: Vec<MemberId> = ids.iter().map(|&id| member_id(id, 0)).collect();
        for p in 0..world.peers.len() {
            let node = world.peers[p].node.as_mut().expect("just created");
            node.assume_members(Time::ZERO, &members, SWIM_BOOTSTRAP_MAX);
            world.after(p);
        }
        world
    }

    fn fresh_replica_id(&mut self) -> ReplicaId {
        ReplicaId::new(self.rng.random_range(1..u64::MAX)).expect("non-zero")
    }

    fn schedule(&mut self, at: Time, event: Event) {
        self.seq += 1;
        self.events.insert((at.max(self.now), self.seq), event);
    }

    /// Processes every event up to `until`, then sets the clock to it.
    fn advance(&mut self, until: Time) {
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > until {
                break;
            }
            let ((at, _), event) = entry.remove_entry();
            self.now = at;
            self.events_processed += 1;
            self.process(event);
        }
        self.now = until;
    }

    fn process(&mut self, event: Event) {
        match event {
            Event::Deliver {
                from,
                to,
                bytes,
                forged,
            } => {
                if self.partition.blocks(from, to) {
                    return;
                }
                let from_id = self.peers[from].id;
                let now = self.now;
                let wall_ms = self.wall_ms(to);
                let Some(node) = self.peers[to].node.as_mut() else {
                    return;
                };
                let before = forged.map(|_| refusal_counters(&node.stats()));
                node.handle_message(now, wall_ms, from_id, &bytes);
                if let (Some(kind), Some(before)) = (forged, before) {
                    let after = refusal_counters(&node.stats());
                    self.count_forged_delivery(kind, &before, &after);
                }
                self.after(to);
            }
            Event::Forge { peer } => self.forge(peer),
            Event::Timer { peer, epoch } => {
                let p = &mut self.peers[peer];
                if p.epoch != epoch || p.timer_at != Some(self.now) {
                    return;
                }
                p.timer_at = None;
                let now = self.now;
                if let Some(node) = p.node.as_mut() {
                    node.handle_timeout(now);
                    self.after(peer);
                }
            }
            Event::Write => self.write(),
            Event::StartPartition => {
                let (partition, kind) = Partition::random(self.peers.len(), &mut self.rng);
                self.faults.partitions += 1;
                self.trace.log(self.now, || format!("partition: {kind}"));
                self.partition = partition;
            }
            Event::HealPartition => {
                self.trace.log(self.now, || "partition healed".to_owned());
                self.partition = Partition::None;
            }
            Event::Crash { peer } => self.crash(peer),
            Event::Restart { peer, wipe } => self.restart(peer, wipe),
        }
    }

    /// Carries out a node's outputs, then re-arms its timer.
    fn after(&mut self, p: usize) {
        let now = self.now;
        let mut changed = false;
        while let Some(output) = self.peers[p].node.as_mut().and_then(Node::poll_output) {
            match output {
                Output::Persist(delta) => {
                    self.peers[p].disk.push(delta);
                    changed = true;
                }
                Output::Send { to, bytes } => self.send(p, to, bytes, None),
                // Simulated nodes have no revocation verifier: they take
                // no revocation, so none comes out.
                Output::Revoked(_) => {}
            }
        }
        if changed {
            self.update_seen(p);
        }
        let peer = &mut self.peers[p];
        let Some(node) = peer.node.as_ref() else {
            return;
        };
        let deadline = node.next_deadline().max(now);
        if peer.timer_at.is_none_or(|at| deadline < at) {
            peer.timer_at = Some(deadline);
            let epoch = peer.epoch;
            self.schedule(deadline, Event::Timer { peer: p, epoch });
        }
    }

    fn send(&mut self, from: usize, to: PeerId, bytes: Vec<u8>, forged: Option<Forgery>) {
        self.fingerprint = xxh3_64_with_seed(&bytes, self.fingerprint ^ from as u64);
        self.messages_sent += 1;
        self.bytes_sent += bytes.len() as u64;
        let Some(to) = self.index_of(to) else { return };
        if self.rng.random_bool(self.profile.link.loss) {
            return;
        }
        let bytes = Rc::new(bytes);
        let copies = if self.rng.random_bool(self.profile.link.duplication) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self
                .profile
                .link
                .delay(self.options.seed, from, to, &mut self.rng);
            self.schedule(
                self.now + delay,
                Event::Deliver {
                    from,
                    to,
                    bytes: bytes.clone(),
                    forged,
                },
            );
        }
    }

    fn index_of(&self, id: PeerId) -> Option<usize> {
        self.index.get(&id).copied()
    }

    fn update_seen(&mut self, p: usize) {
        let now = self.now.as_micros();
        let peer = &mut self.peers[p];
        let Some(node) = peer.node.as_ref() else {
            return;
        };
        let context = node.replica().context();
        let writes = &self.writes;
        let seen_at = &mut peer.seen_at;
        peer.unseen.retain(|&w| {
            if context.contains(writes[w].id) {
                seen_at[w] = now;
                false
            } else {
                true
            }
        });
    }

    /// Live honest peers, by index.
    /// The honest peers, up or down, with their index.
    fn honest(&self) -> impl Iterator<Item = (usize, &Peer)> + '_ {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, peer)| !peer.hostile)
    }

    /// The honest peers that are up, with their index.
    fn live_honest_peers(&self) -> impl Iterator<Item = (usize, &Peer)> + '_ {
        self.honest().filter(|(_, peer)| peer.node.is_some())
    }

    fn live_honest(&self) -> Vec<usize> {
        self.live_honest_peers().map(|(p, _)| p).collect()
    }

    fn write(&mut self) {
        let live = self.live_honest();
        if live.is_empty() {
            return;
        }
        let p = live[self.rng.random_range(0..live.len())];
        let wall_ms = self.wall_ms(p);
        // Some commands change nothing (deleting what is not there, a PUT
        // equal to the current state); draw until one writes.
        for _ in 0..32 {
            let command = workload::next_command(&mut self.rng, wall_ms);
            let now = self.now;
            let node = self.peers[p].node.as_mut().expect("picked a live peer");
            let Ok(delta) = node.execute(now, wall_ms, &command) else {
                continue;
            };
            if delta.is_empty() {
                continue;
            }
            let replica = node.replica().id();
            let id = Dot::new(replica, delta.context.max_counter(replica)).expect("own dot");
            let written: Vec<(Dot, ObjectKey, FieldValue)> = delta
                .entries()
                .map(|(key, _, dot, stamped)| (dot, key.clone(), stamped.value.clone()))
                .collect();
            let superseded: Vec<Dot> = delta
                .context
                .ranges()
                .flat_map(|(r, range)| range.map(move |c| Dot::new(r, c).expect("valid")))
                .filter(|d| !written.iter().any(|(w, _, _)| w == d) && *d != id)
                .collect();
            let index = self.writes.len();
            self.writes.push(WriteRecord {
                id,
                acked_at_us: now.as_micros(),
                written,
                superseded,
                lost_with_disk: false,
            });
            for (q, peer) in self.peers.iter_mut().enumerate() {
                peer.seen_at.push(u64::MAX);
                if q != p {
                    peer.unseen.insert(index);
                }
            }
            self.peers[p].seen_at[index] = now.as_micros();
            self.trace
                .log(now, || format!("write {index} at peer {p}: {command:?}"));
            self.after(p);
            return;
        }
    }

    fn wall_ms(&self, p: usize) -> u64 {
        let local = (self.now.as_micros() / 1000) as i64 + self.peers[p].skew_ms;
        WALL_EPOCH_MS.saturating_add_signed(local)
    }

    /// Draws the chaos schedule between `from` and `until`: partitions one
    /// at a time, crashes of at most a tenth of the peers at once, restarts
    /// with or without their data.
    fn schedule_faults(&mut self, from: Time, until: Time) {
        let span = until.since(from);
        let mut t = Duration::ZERO;
        let mut partition_free_at = Duration::ZERO;
        while t < span {
            if t >= partition_free_at && self.rng.random_bool(0.3) {
                let length = Duration::from_millis(self.rng.random_range(200..1500));
                self.schedule(from + t, Event::StartPartition);
                let end = (t + length).min(span);
                self.schedule(from + end, Event::HealPartition);
                partition_free_at = end + Duration::from_millis(50);
            }
            t += Duration::from_millis(250);
        }
        let mut t = Duration::ZERO;
        let honest: Vec<usize> = self.honest().map(|(p, _)| p).collect();
        let max_down = (honest.len() / 10).max(1);
        let mut down_until: Vec<Duration> = Vec::new();
        let mut crashes = 0;
        while t < span {
            down_until.retain(|end| *end > t);
            // A short span may draw no crash at all: the
            // last slot then always gets one, so that every chaos run has a
            // crash.
            let last_chance = crashes == 0 && t + Duration::from_millis(100) >= span;
            if down_until.len() < max_down && (last_chance || self.rng.random_bool(0.3)) {
                let peer = honest[self.rng.random_range(0..honest.len())];
                let length = Duration::from_millis(self.rng.random_range(100..1500));
                let wipe = self.rng.random_bool(0.25);
                self.schedule(from + t, Event::Crash { peer });
                self.schedule(from + t + length, Event::Restart { peer, wipe });
                down_until.push(t + length);
                crashes += 1;
            }
            t += Duration::from_millis(100);
        }
    }

    /// Folds a node's counters into the run's (at the end, and when a
    /// crash is about to lose them). A hostile member's refusals are its
    /// own business; its queues are bounded like anyone's.
    fn absorb(&mut self, stats: &NodeStats, hostile: bool) {
        if !hostile {
            self.refused.garbage += stats.garbage_dropped;
            self.refused.deltas += stats.deltas_refused;
            self.refused.too_large += stats.too_large;
        }
        self.queues.broadcasts_untracked += stats.broadcasts_untracked;
        self.queues.pending_acks = self.queues.pending_acks.max(stats.pending_high_water);
        self.queues.outputs = self.queues.outputs.max(stats.outputs_high_water);
        self.queues.timers = self.queues.timers.max(stats.timers_high_water);
    }

    fn crash(&mut self, p: usize) {
        let Some(node) = self.peers[p].node.take() else {
            return;
        };
        self.absorb(&node.stats(), self.peers[p].hostile);
        let peer = &mut self.peers[p];
        peer.epoch += 1;
        peer.timer_at = None;
        self.faults.crashes += 1;
        self.trace.log(self.now, || format!("crash peer {p}"));
    }

    fn restart(&mut self, p: usize, wipe: bool) {
        if self.peers[p].node.is_some() {
            return;
        }
        if wipe {
            self.faults.wipes += 1;
            self.wipe(p);
        }
        let peer = &mut self.peers[p];
        peer.generation += 1;
        peer.epoch += 1;
        // The data directory: everything persisted, compacted into one state.
        let replica = Replica::restore(peer.replica_id, &peer.disk).expect("own disk is valid");
        peer.disk = vec![replica.full_state()];
        let me = member_id(peer.id, peer.generation);
        let seed = self.rng.random();
        let mut node = Node::new(self.profile.config.clone(), me, replica, seed, self.now);
        for _ in 0..3 {
            let other = self.rng.random_range(0..self.peers.len());
            if other != p {
                node.join(self.now, self.peers[other].id);
            }
        }
        self.peers[p].node = Some(node);
        self.trace.log(self.now, || {
            format!(
                "restart peer {p}{}",
                if wipe { " with an empty disk" } else { "" }
            )
        });
        self.update_seen(p);
        self.after(p);
    }

    /// Destroys peer `p`'s data directory; writes only it had are gone.
    fn wipe(&mut self, p: usize) {
        for w in 0..self.writes.len() {
            let elsewhere = self
                .peers
                .iter()
                .enumerate()
                .any(|(q, peer)| q != p && peer.seen_at[w] != u64::MAX);
            let had_it = self.peers[p].seen_at[w] != u64::MAX;
            if had_it && !elsewhere {
                self.writes[w].lost_with_disk = true;
            }
        }
        let fresh = self.fresh_replica_id();
        let peer = &mut self.peers[p];
        peer.disk.clear();
        peer.replica_id = fresh;
        peer.seen_at.iter_mut().for_each(|s| *s = u64::MAX);
        peer.unseen = (0..self.writes.len()).collect();
    }

    fn heal_everything(&mut self) {
        self.trace.log(self.now, || {
            "heal: partition removed, every crashed peer restarted".to_owned()
        });
        self.partition = Partition::None;
        for p in 0..self.peers.len() {
            if self.peers[p].node.is_none() {
                self.restart(p, false);
            }
        }
    }

    /// Runs until every live peer has the same digest; returns when.
    fn quiesce(&mut self) -> Option<Time> {
        let limit = self.now + QUIESCE_LIMIT;
        while self.now < limit {
            if checker::divergent_peers(&self.digests()) == 0 {
                return Some(self.now);
            }
            self.advance(self.now + QUIESCE_STEP);
        }
        None
    }

    /// The live honest nodes.
    fn honest_nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.honest().filter_map(|(_, peer)| peer.node.as_ref())
    }

    fn digests(&self) -> Vec<Digest> {
        self.honest_nodes().map(|n| n.replica().digest()).collect()
    }

    fn convergence_ms(&self) -> Percentiles {
        let values = self
            .writes
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.lost_with_disk)
            .filter_map(|(i, w)| {
                let last = self
                    .live_honest_peers()
                    .map(|(_, peer)| peer.seen_at[i])
                    .max()?;
                (last != u64::MAX).then(|| last.saturating_sub(w.acked_at_us) as f64 / 1000.0)
            })
            .collect();
        Percentiles::of(values)
    }

    fn reference(&self) -> Option<&Replica> {
        self.honest_nodes().next().map(Node::replica)
    }

    /// A hostile member forges one message to a random live honest peer,
    /// about a random live honest victim, and schedules its next forgery.
    fn forge(&mut self, h: usize) {
        if self.now >= self.forge_until {
            return;
        }
        let next = self.now + Duration::from_millis(self.rng.random_range(hostile::FORGE_EVERY_MS));
        if next < self.forge_until {
            self.schedule(next, Event::Forge { peer: h });
        }
        let honest = self.live_honest();
        let Some(forger) = self.peers[h].node.as_ref() else {
            return;
        };
        if honest.is_empty() {
            return;
        }
        let receiver = honest[self.rng.random_range(0..honest.len())];
        let victim = honest[self.rng.random_range(0..honest.len())];
        let kinds = if self.options.forgeries.is_empty() {
            &Forgery::ALL[..]
        } else {
            &self.options.forgeries[..]
        };
        let kind = kinds[self.rng.random_range(0..kinds.len())];
        let node = |p: usize| self.peers[p].node.as_ref().expect("a live peer");
        let victim_replica = self.peers[victim].replica_id;
        let scene = Scene {
            hostile: forger.identity(),
            hostile_replica: self.peers[h].replica_id,
            hostile_counter: self.peers[h].forged_counter,
            receiver: node(receiver).identity(),
            victim: node(victim).identity(),
            victim_replica,
            victim_counter: node(victim).replica().context().max_counter(victim_replica),
            wall_ms: self.wall_ms(h),
        };
        let mut forged = hostile::forge(kind, &scene, &mut self.rng);
        self.peers[h].forged_counter += forged.counters_used;
        self.forged_digests.extend(forged.report_digests);
        self.hostile.kind(kind).sent += 1;
        let claims = std::mem::take(&mut forged.claims);
        self.trace.log(self.now, || {
            format!(
                "hostile peer {h} forges {} to peer {receiver} about peer {victim} {claims}",
                kind.name()
            )
        });
        let to = self.peers[receiver].id;
        self.send(h, to, forged.bytes, Some(kind));
    }

    /// Counts a forgery delivered to a live honest peer, and what it made
    /// the peer refuse (so that those refusals are not blamed on honest
    /// peers).
    fn count_forged_delivery(
        &mut self,
        kind: Forgery,
        before: &[(&'static str, u64, bool)],
        after: &[(&'static str, u64, bool)],
    ) {
        let counts = self.hostile.kind(kind);
        counts.delivered += 1;
        let mut refused = false;
        for ((name, was, refusal), (_, is, _)) in before.iter().zip(after) {
            let moved = is - was;
            if moved > 0 {
                refused |= refusal;
                *counts.counters.entry(name).or_default() += moved;
                match *name {
                    "garbage_dropped" => self.excused.garbage += moved,
                    "deltas_refused" => self.excused.deltas += moved,
                    _ => {}
                }
            }
        }
        counts.refused += u64::from(refused);
    }

    /// The checkers of a run with hostile members, on the honest peers:
    /// no implausible claim joined, no far-future stamp or lease live, no
    /// forged report shown, nobody down.
    fn check_against_forgeries(&mut self) {
        let nodes: Vec<&Node> = self.honest_nodes().collect();
        let mut failures = Vec::new();
        let mut note = |what: String, peers: Vec<String>| {
            if !peers.is_empty() {
                failures.push(format!(
                    "{} honest peers {what}: {}",
                    peers.len(),
                    peers.join("; ")
                ));
            }
        };
        note(
            "joined implausible claims (peer: claims, the first)".to_owned(),
            nodes
                .iter()
                .filter_map(|node| {
                    let claims = checker::implausible_claims(
                        node.replica().context(),
                        hostile::FAR_CLAIM_MIN,
                    );
                    let first = claims.first()?;
                    Some(format!("{}: {}, {first}", node.peer_id(), claims.len()))
                })
                .collect(),
        );
        let latest_wall = (0..self.peers.len())
            .map(|p| self.wall_ms(p))
            .max()
            .unwrap_or(0);
        // Every peer refuses a remote stamp or renewal further ahead of its
        // clock than the skew bound, and stamps its own writes after what it
        // took: nothing live lies further ahead of the latest clock.
        let skew_max_ms = self.profile.config.clock_skew_max.as_millis() as u64;
        let bound = latest_wall + skew_max_ms;
        note(
            format!(
                "hold live values stamped or renewed over {skew_max_ms} ms ahead of every clock (peer: values)"
            ),
            nodes
                .iter()
                .filter_map(|node| {
                    let future = checker::future_values(node.replica(), bound);
                    (future > 0).then(|| format!("{}: {future}", node.peer_id()))
                })
                .collect(),
        );
        note(
            "show forged reports (peer: reports)".to_owned(),
            nodes
                .iter()
                .filter_map(|node| {
                    let shown = node
                        .reports()
                        .filter(|heard| self.forged_digests.contains(&heard.report.digest))
                        .count();
                    (shown > 0).then(|| format!("{}: {shown}", node.peer_id()))
                })
                .collect(),
        );
        let honest: Vec<MemberId> = nodes.iter().map(|n| n.identity()).collect();
        note(
            "hold an honest peer's current identity down (peer: whom)".to_owned(),
            nodes
                .iter()
                .filter_map(|node| {
                    let doubted: Vec<String> = node
                        .peers()
                        .filter(|(id, state)| honest.contains(id) && *state == PeerState::Down)
                        .map(|(id, _)| id.peer.to_string())
                        .collect();
                    (!doubted.is_empty())
                        .then(|| format!("{}: {}", node.peer_id(), doubted.join(" ")))
                })
                .collect(),
        );
        self.failures.extend(failures);
    }

    /// Runs the end-of-run checkers, recording failures; returns (lost
    /// writes, resurrections).
    fn check(&mut self, converged: bool) -> (usize, usize) {
        if !converged {
            self.failures.push(format!(
                "peers did not converge within {} s after the last write",
                QUIESCE_LIMIT.as_secs()
            ));
        }
        let views: BTreeSet<Vec<u8>> = self
            .honest_nodes()
            .map(|n| n.replica().canonical_bytes())
            .collect();
        if views.len() > 1 {
            self.failures.push(format!(
                "{} different canonical views at the end",
                views.len()
            ));
        }
        let final_stats: Vec<(NodeStats, bool)> = self
            .peers
            .iter()
            .filter_map(|p| p.node.as_ref().map(|n| (n.stats(), p.hostile)))
            .collect();
        for (stats, hostile) in final_stats {
            self.absorb(&stats, hostile);
        }
        self.refused.garbage -= self.excused.garbage;
        self.refused.deltas -= self.excused.deltas;
        if self.options.hostile > 0 {
            self.check_against_forgeries();
        }
        if self.queues.broadcasts_untracked > 0 {
            self.failures.push(format!(
                "the pending-ack table overflowed {} times",
                self.queues.broadcasts_untracked
            ));
        }
        if self.queues.outputs > OUTPUTS_MAX {
            self.failures.push(format!(
                "a node queued {} outputs at once",
                self.queues.outputs
            ));
        }
        let timers_max = 8 * self.peers.len() + 64;
        if self.queues.timers > timers_max {
            self.failures.push(format!(
                "a node held {} membership timers (bound {timers_max})",
                self.queues.timers
            ));
        }
        if self.refused.garbage + self.refused.deltas + self.refused.too_large > 0 {
            self.failures.push(format!(
                "honest peers refused each other's messages: {:?}",
                self.refused
            ));
        }
        let (lost, resurrected) = self.reference().map_or((Vec::new(), 0), |r| {
            let persisted = self.peers.iter().flat_map(|peer| peer.disk.iter());
            checker::lost_and_resurrected(&self.writes, r, persisted)
        });
        if let Some(&(first, value)) = lost.first() {
            let record = &self.writes[first];
            let what = match value {
                None => format!("never seen: dot {}", record.id),
                Some(v) => {
                    let (dot, key, value) = &record.written[v];
                    format!("{key:?} {:?} gone: dot {dot}", value.field())
                }
            };
            self.failures.push(format!(
                "{} acknowledged writes lost (the first: write {first}, {what})",
                lost.len(),
            ));
        }
        if resurrected > 0 {
            self.failures
                .push(format!("{resurrected} removed values resurrected"));
        }
        (lost.len(), resurrected)
    }
}

/// A simulated peer's identity. The network routes by peer id, so the
/// gossip address is only a label (derived from the id, never dialled).
fn member_id(peer: PeerId, generation: u32) -> MemberId {
    let label = std::net::Ipv4Addr::from(peer.0.to_be_bytes()[4..].try_into().unwrap_or([0; 4]));
    MemberId {
        peer,
        generation,
        addr: std::net::SocketAddr::from((label, 7946)),
    }
}

/// The counters of [`NodeStats`] a forgery can move, by name, and whether
/// each counts a refusal (`own_dots_claimed` counts a plausible claim that
/// was joined, `dot_conflicts_resolved` a forged value met with another one
/// under the same dot).
fn refusal_counters(stats: &NodeStats) -> [(&'static str, u64, bool); 12] {
    [
        ("garbage_dropped", stats.garbage_dropped, true),
        ("data_from_non_members", stats.data_from_non_members, true),
        ("deltas_refused", stats.deltas_refused, true),
        (
            "deltas_implausible_dots",
            stats.deltas_implausible_dots,
            true,
        ),
        ("deltas_ahead_of_clock", stats.deltas_ahead_of_clock, true),
        ("own_dots_claimed", stats.own_dots_claimed, false),
        (
            "dot_conflicts_resolved",
            stats.dot_conflicts_resolved,
            false,
        ),
        ("reports_refused", stats.reports_refused, true),
        ("reports_about_others", stats.reports_about_others, true),
        ("swim_refused", stats.swim_refused, true),
        (
            "swim_downs_taken_as_suspicion",
            stats.swim_downs_taken_as_suspicion,
            true,
        ),
        (
            "swim_identities_refused",
            stats.swim_identities_refused,
            true,
        ),
    ]
}
