//! Specifies the behaviour of a whole [`gossip::Node`] — membership, the
//! broadcast tree, anti-entropy and the order of its effects — by driving a
//! few real nodes exactly as the shell and the simulator do.
//!
//! The harness ([`Mesh`]) is a tiny deterministic world: nodes keyed by
//! [`PeerId`], a virtual clock, and an ordered queue of in-flight messages
//! with a fixed latency of [`LATENCY`]. After every call into a node its
//! outputs are drained in order: `Send`s go on the queue, `Persist`s are
//! recorded per node, and everything is logged. Timers fire when the virtual
//! clock reaches a node's `next_deadline`. Links can be cut (an isolated
//! node, to model a partition) or filtered message by message. There are no
//! threads, no sleeps and no real clock: time advances from one event to the
//! next until a predicate holds or a virtual deadline passes, so every run is
//! reproducible from its seeds.
//!
//! [`gossip::Node`]: aqueduct::gossip::Node

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aqueduct::crdt::model::{
    Binds, FieldId, FieldValue, Frontend, Keepalive, Mode, Name, Natives, ObjectKey, Rules, Weight,
};
use aqueduct::crdt::{Command, ConfigDelta, Digest, Dot, Hlc, Replica, ReplicaId, Stamped};
use aqueduct::gossip::revocations::{REVOCATIONS_MAX, RevocationExchange};
use aqueduct::gossip::wire::{self, Message, RingRange};
use aqueduct::gossip::{
    ApplyReport, Config, MemberId, Node, Output, PeerId, PeerReport, REPORT_TEXT_MAX,
    REVOCATION_SENDER_COOLDOWN, Revocation, RevocationError, RevocationVerifier, Time,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------
// The harness.

/// One-way delay of every message.
const LATENCY: Duration = Duration::from_millis(1);
/// Wall-clock origin (2026-01-01), so stamps look like real times.
const WALL_EPOCH_MS: u64 = 1_767_225_600_000;
/// A node that keeps asking for a timer at the instant it was just served
/// would spin the harness forever; this many steps at one instant is a bug.
const SAME_INSTANT_STEPS_MAX: u32 = 10_000;

/// The id of the `i`-th peer: spread over the ring, not in index order.
fn peer(i: u64) -> PeerId {
    PeerId((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The replica id of the `i`-th peer.
fn replica_id(i: u64) -> ReplicaId {
    ReplicaId::new(1_000 + i).expect("non-zero")
}

/// A message on its way.
struct InFlight {
    from: PeerId,
    to: PeerId,
    bytes: Vec<u8>,
}

/// One output of one node, as the harness carried it out.
#[derive(Debug, Clone, PartialEq)]
struct Effect {
    at: Time,
    node: PeerId,
    output: Output,
}

/// Decides, per delivery, whether a message is lost: `(from, to, message)`.
type DropRule = Box<dyn FnMut(PeerId, PeerId, &Message) -> bool>;

/// A deterministic little world of nodes. See the module documentation.
struct Mesh {
    seed: u64,
    nodes: BTreeMap<PeerId, Node>,
    now: Time,
    seq: u64,
    same_instant_steps: u32,
    queue: BTreeMap<(Time, u64), InFlight>,
    /// Peers cut off from everyone: whatever they send or are sent is lost.
    isolated: BTreeSet<PeerId>,
    drop_rule: Option<DropRule>,
    /// Messages lost to `drop_rule`, decoded.
    dropped_by_rule: Vec<(PeerId, PeerId, Message)>,
    /// Messages lost to isolation.
    dropped_by_isolation: u64,
    /// Every output of every node, in the order carried out.
    effects: Vec<Effect>,
    /// What each node asked to make durable, in order.
    persisted: BTreeMap<PeerId, Vec<ConfigDelta>>,
    /// [`Config::sync_chunk_bytes`] for nodes started from now on, if not
    /// the default.
    sync_chunk_bytes: Option<usize>,
}

impl Mesh {
    /// An empty world; node `i`'s randomness derives from `seed` and `i`.
    fn new(seed: u64) -> Mesh {
        Mesh {
            seed,
            nodes: BTreeMap::new(),
            now: Time::ZERO,
            seq: 0,
            same_instant_steps: 0,
            queue: BTreeMap::new(),
            isolated: BTreeSet::new(),
            drop_rule: None,
            dropped_by_rule: Vec::new(),
            dropped_by_isolation: 0,
            effects: Vec::new(),
            persisted: BTreeMap::new(),
            sync_chunk_bytes: None,
        }
    }

    /// `n` nodes (`0..n`) that take each other as members: a mesh that has
    /// been running.
    fn running(n: u64, seed: u64) -> (Mesh, Vec<PeerId>) {
        let mut mesh = Mesh::new(seed);
        let ids: Vec<PeerId> = (0..n).map(|i| mesh.add(i, n)).collect();
        let members: Vec<MemberId> = ids.iter().map(|&id| member_id(id, 0)).collect();
        for id in &ids {
            let now = mesh.now;
            mesh.node_mut(*id)
                .assume_members(now, &members, usize::try_from(n).expect("small"));
            mesh.drain(*id);
        }
        (mesh, ids)
    }

    /// Starts node `i` (empty replica, generation 0) with the LAN settings
    /// for a mesh of `cluster_size`, without telling anyone.
    fn add(&mut self, i: u64, cluster_size: u64) -> PeerId {
        self.start(i, cluster_size, 0, Replica::new(replica_id(i)))
    }

    /// Starts node `i` in restart `generation` holding `replica`.
    fn start(&mut self, i: u64, cluster_size: u64, generation: u32, replica: Replica) -> PeerId {
        let id = peer(i);
        let mut config = Config::lan(u32::try_from(cluster_size).expect("small"));
        if let Some(bytes) = self.sync_chunk_bytes {
            config.sync_chunk_bytes = bytes;
        }
        let seed = self
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(i)
            .wrapping_add(u64::from(generation) << 32);
        let node = Node::new(config, member_id(id, generation), replica, seed, self.now);
        assert!(
            self.nodes.insert(id, node).is_none(),
            "peer {i} started twice"
        );
        id
    }

    fn node(&self, id: PeerId) -> &Node {
        &self.nodes[&id]
    }

    fn node_mut(&mut self, id: PeerId) -> &mut Node {
        self.nodes.get_mut(&id).expect("a live node")
    }

    fn wall_ms(&self) -> u64 {
        WALL_EPOCH_MS + self.now.as_micros() / 1_000
    }

    /// Carries out one output of `node`.
    fn dispatch(&mut self, node: PeerId, output: Output) {
        self.effects.push(Effect {
            at: self.now,
            node,
            output: output.clone(),
        });
        match output {
            Output::Persist(delta) => self.persisted.entry(node).or_default().push(delta),
            Output::Revoked(_) => {}
            Output::Send { to, bytes } => {
                self.seq += 1;
                let from = node;
                self.queue
                    .insert((self.now + LATENCY, self.seq), InFlight { from, to, bytes });
            }
        }
    }

    /// Takes every pending output of `node` without carrying it out (to
    /// inspect it; hand it back with [`Mesh::dispatch`]).
    fn take_outputs(&mut self, node: PeerId) -> Vec<Output> {
        std::iter::from_fn(|| self.node_mut(node).poll_output()).collect()
    }

    /// Carries out every pending output of `node`.
    fn drain(&mut self, node: PeerId) {
        while let Some(output) = self.nodes.get_mut(&node).and_then(Node::poll_output) {
            self.dispatch(node, output);
        }
    }

    /// Executes `command` at `node` now; panics if the command is refused.
    fn execute(&mut self, node: PeerId, command: &Command) -> ConfigDelta {
        let (now, wall) = (self.now, self.wall_ms());
        let delta = self
            .node_mut(node)
            .execute(now, wall, command)
            .expect("command accepted");
        self.drain(node);
        delta
    }

    /// Hands `bytes` to `to` as if `from` had sent them, now.
    fn inject(&mut self, from: PeerId, to: PeerId, bytes: &[u8]) {
        let (now, wall) = (self.now, self.wall_ms());
        self.node_mut(to).handle_message(now, wall, from, bytes);
    }

    /// Stops `node` for good (its pending outputs are carried out first).
    fn remove(&mut self, node: PeerId) {
        self.drain(node);
        self.nodes.remove(&node);
    }

    fn deliver(&mut self, message: InFlight) {
        let InFlight { from, to, bytes } = message;
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            self.dropped_by_isolation += 1;
            return;
        }
        if let Some(rule) = self.drop_rule.as_mut() {
            let decoded = wire::decode(&bytes).expect("nodes send only valid messages");
            if rule(from, to, &decoded) {
                self.dropped_by_rule.push((from, to, decoded));
                return;
            }
        }
        if !self.nodes.contains_key(&to) {
            return; // the receiver is gone
        }
        self.inject(from, to, &bytes);
        self.drain(to);
    }

    /// When the next message arrives or the next timer is due.
    fn next_event(&self) -> Option<Time> {
        let arrival = self.queue.keys().next().map(|(at, _)| *at);
        let timer = self.nodes.values().map(Node::next_deadline).min();
        arrival.into_iter().chain(timer).min()
    }

    /// Processes the next instant at which anything happens, if it is not
    /// after `limit`: arrivals first (in send order), then due timers (in
    /// peer id order). Returns whether it did.
    fn step(&mut self, limit: Time) -> bool {
        let Some(at) = self.next_event() else {
            return false;
        };
        if at > limit {
            return false;
        }
        let at = at.max(self.now);
        if at == self.now {
            self.same_instant_steps += 1;
            assert!(
                self.same_instant_steps < SAME_INSTANT_STEPS_MAX,
                "time does not advance past {at:?}: a node asks for its timer again and again"
            );
        } else {
            self.same_instant_steps = 0;
        }
        self.now = at;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > at {
                break;
            }
            let message = entry.remove();
            self.deliver(message);
        }
        let due: Vec<PeerId> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.next_deadline() <= at)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.node_mut(id).handle_timeout(at);
            self.drain(id);
        }
        true
    }

    /// Runs until `done` holds (returning when it first did) or virtual
    /// time reaches `limit` (returning `None`, with the clock at `limit`).
    fn run_until(&mut self, limit: Time, mut done: impl FnMut(&Mesh) -> bool) -> Option<Time> {
        loop {
            if done(self) {
                return Some(self.now);
            }
            if !self.step(limit) {
                self.now = self.now.max(limit);
                return None;
            }
        }
    }

    /// Runs for `span` of virtual time.
    fn run_for(&mut self, span: Duration) {
        let limit = self.now + span;
        self.run_until(limit, |_| false);
    }

    fn digest(&self, node: PeerId) -> Digest {
        self.node(node).replica().digest()
    }

    /// Whether every node holds the same state.
    fn converged(&self) -> bool {
        let mut digests = self.nodes.values().map(|n| n.replica().digest());
        let first = digests.next();
        digests.all(|d| Some(d) == first)
    }

    fn members(&self, node: PeerId) -> BTreeSet<PeerId> {
        self.node(node).members().collect()
    }

    /// Every node's member list, for failure messages.
    fn membership(&self) -> Vec<(PeerId, BTreeSet<PeerId>)> {
        self.nodes.keys().map(|p| (*p, self.members(*p))).collect()
    }

    /// Whether every node lists every other node, and nobody else.
    fn fully_meshed(&self) -> bool {
        self.nodes.keys().all(|id| {
            let mut expected: BTreeSet<PeerId> = self.nodes.keys().copied().collect();
            expected.remove(id);
            self.members(*id) == expected
        })
    }

    fn has_frontend(&self, node: PeerId, name: &str) -> bool {
        self.node(node)
            .replica()
            .view()
            .frontends
            .contains_key(&frontend_name(name))
    }

    /// Every message sent so far, decoded, with sender and receiver.
    fn sent_messages(&self) -> impl Iterator<Item = (Time, PeerId, PeerId, Message)> + '_ {
        self.effects.iter().filter_map(|e| match &e.output {
            Output::Send { to, bytes } => Some((
                e.at,
                e.node,
                *to,
                wire::decode(bytes).expect("nodes send only valid messages"),
            )),
            Output::Persist(_) | Output::Revoked(_) => None,
        })
    }
}

// ---------------------------------------------------------------------------
// Commands and messages.

fn frontend_name(name: &str) -> Name {
    Name::new(name).expect("valid name literal")
}

fn put_frontend(name: &str, port: u16) -> Command {
    Command::PutFrontend {
        name: frontend_name(name),
        frontend: Frontend {
            bind: Binds::parse(&format!("*:{port}")).expect("valid bind literal"),
            backend: frontend_name("be0"),
            mode: Mode::Http,
            keepalive: Keepalive::Default,
            rules: Rules::default(),
            natives: Natives::default(),
        },
    }
}

fn delete_frontend(name: &str) -> Command {
    Command::DeleteFrontend {
        name: frontend_name(name),
    }
}

/// The broadcast id a node gives its local change: the newest dot of its
/// own replica in the delta.
fn broadcast_id(delta: &ConfigDelta, replica: ReplicaId) -> Dot {
    Dot::new(replica, delta.context.max_counter(replica)).expect("a local delta has a dot")
}

fn is_anti_entropy(message: &Message) -> bool {
    matches!(
        message,
        Message::Digest { .. } | Message::SyncRequest { .. } | Message::SyncDelta { .. }
    )
}

fn sends_in(outputs: &[Output]) -> Vec<(PeerId, Message)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, bytes } => Some((*to, wire::decode(bytes).expect("valid"))),
            Output::Persist(_) | Output::Revoked(_) => None,
        })
        .collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// Dissemination.

#[test]
fn a_local_write_reaches_every_peer_without_waiting_for_anti_entropy() {
    let (mut mesh, ids) = Mesh::running(5, 1);
    mesh.run_for(ms(50));
    // Only the broadcast tree may carry the change.
    mesh.drop_rule = Some(Box::new(|_, _, m| is_anti_entropy(m)));
    let writer = ids[2];
    let before = mesh.digest(writer);
    let start = mesh.now;
    mesh.execute(writer, &put_frontend("web", 80));
    let target = mesh.digest(writer);
    assert_ne!(target, before);

    let done = mesh
        .run_until(start + ms(20), |m| {
            ids.iter().all(|id| m.digest(*id) == target)
        })
        .expect("every peer has the write within 20 ms");
    let took = done.since(start);
    let anti_entropy = Config::lan(5).anti_entropy_interval;
    assert!(
        took * 10 <= anti_entropy,
        "took {took:?}, anti-entropy interval {anti_entropy:?}"
    );
    assert!(ids.iter().all(|id| mesh.has_frontend(*id, "web")));
}

#[test]
fn a_local_write_crosses_a_larger_mesh_in_a_few_hops_with_one_copy_per_peer() {
    let n = 40;
    let (mut mesh, ids) = Mesh::running(n, 2);
    mesh.run_for(ms(20));
    mesh.drop_rule = Some(Box::new(|_, _, m| is_anti_entropy(m)));
    let writer = ids[7];
    let start = mesh.now;
    let delta = mesh.execute(writer, &put_frontend("web", 80));
    let id = broadcast_id(&delta, replica_id(7));
    let target = mesh.digest(writer);

    let done = mesh
        .run_until(start + ms(20), |m| m.converged())
        .expect("every peer has the write within 20 ms");
    // fanout 4: 40 peers are at most 3 hops (of 1 ms each) from the writer.
    assert!(
        done.since(start) <= 3 * LATENCY,
        "took {:?}",
        done.since(start)
    );
    assert!(ids.iter().all(|p| mesh.digest(*p) == target));

    // Let retransmit timers run out, then count the copies.
    mesh.run_for(ms(30));
    let mut copies: BTreeMap<PeerId, usize> = BTreeMap::new();
    for (_, _, to, message) in mesh.sent_messages() {
        if matches!(message, Message::Broadcast { id: b, .. } if b == id) {
            *copies.entry(to).or_default() += 1;
        }
    }
    assert_eq!(copies.len(), ids.len() - 1, "{copies:?}");
    assert!(!copies.contains_key(&writer));
    assert!(copies.values().all(|c| *c == 1), "{copies:?}");
}

#[test]
fn a_local_write_is_persisted_before_any_message_carries_it() {
    let (mut mesh, ids) = Mesh::running(5, 3);
    mesh.run_for(ms(50));
    let writer = ids[0];
    // Nothing else is pending at the writer.
    assert!(mesh.take_outputs(writer).is_empty());

    let (now, wall) = (mesh.now, mesh.wall_ms());
    let delta = mesh
        .node_mut(writer)
        .execute(now, wall, &put_frontend("web", 80))
        .expect("accepted");
    let outputs = mesh.take_outputs(writer);
    assert_eq!(
        outputs.first(),
        Some(&Output::Persist(delta.clone())),
        "the first output after execute is the Persist of the change: {outputs:?}"
    );
    assert_eq!(
        outputs
            .iter()
            .filter(|o| matches!(o, Output::Persist(_)))
            .count(),
        1
    );
    // Every other output is a Send carrying the change to another peer.
    let sends = sends_in(&outputs);
    assert_eq!(sends.len(), outputs.len() - 1);
    let receivers: BTreeSet<PeerId> = sends.iter().map(|(to, _)| *to).collect();
    assert_eq!(receivers.len(), ids.len() - 1);
    for (_, message) in &sends {
        match message {
            Message::Broadcast { delta: carried, .. } => assert_eq!(carried, &delta),
            other => panic!("unexpected message {other:?}"),
        }
    }
    for output in outputs {
        mesh.dispatch(writer, output);
    }
    mesh.run_until(mesh.now + ms(20), Mesh::converged)
        .expect("the write spreads");
}

#[test]
fn a_relayed_write_is_persisted_before_it_is_passed_on() {
    let (mut mesh, ids) = Mesh::running(30, 4);
    mesh.run_for(ms(20));
    let first_effect = mesh.effects.len();
    let delta = mesh.execute(ids[0], &put_frontend("web", 80));
    let id = broadcast_id(&delta, replica_id(0));
    mesh.run_until(mesh.now + ms(20), Mesh::converged)
        .expect("the write spreads");

    let mut persisted: BTreeSet<PeerId> = BTreeSet::new();
    let mut relays = 0;
    for effect in &mesh.effects[first_effect..] {
        match &effect.output {
            Output::Persist(d) if d == &delta => {
                persisted.insert(effect.node);
            }
            Output::Persist(_) | Output::Revoked(_) => {}
            Output::Send { bytes, .. } => {
                if matches!(wire::decode(bytes), Ok(Message::Broadcast { id: b, .. }) if b == id) {
                    assert!(
                        persisted.contains(&effect.node),
                        "{} passed the change on before persisting it",
                        effect.node
                    );
                    relays += usize::from(effect.node != ids[0]);
                }
            }
        }
    }
    assert!(relays > 0, "30 peers with fanout 4 need relays");
    assert_eq!(
        persisted.len(),
        ids.len(),
        "every peer persisted the change"
    );
}

// ---------------------------------------------------------------------------
// Membership.

#[test]
fn a_new_peer_joins_through_one_seed_and_receives_the_existing_state() {
    let n = 4;
    let (mut mesh, ids) = Mesh::running(n, 5);
    mesh.run_for(ms(100));
    mesh.execute(ids[0], &put_frontend("web", 80));
    mesh.execute(ids[1], &put_frontend("api", 8080));
    mesh.run_until(mesh.now + ms(20), Mesh::converged)
        .expect("the mesh converges");
    mesh.execute(ids[2], &delete_frontend("web"));
    mesh.run_until(mesh.now + ms(50), Mesh::converged)
        .expect("the mesh converges");
    let existing = mesh.digest(ids[0]);

    let newcomer = mesh.add(n, n + 1);
    assert_eq!(mesh.node(newcomer).replica().entry_count(), 0);
    let seed = ids[3];
    let now = mesh.now;
    mesh.node_mut(newcomer).join(now, seed);
    mesh.drain(newcomer);
    let start = mesh.now;

    let done = mesh.run_until(start + Duration::from_secs(10), |m| {
        m.fully_meshed() && m.converged()
    });
    assert!(
        done.is_some(),
        "after 10 s: members {:?}, newcomer digest {} vs {}",
        mesh.membership(),
        mesh.digest(newcomer),
        existing
    );
    assert_eq!(mesh.digest(newcomer), existing);
    assert!(mesh.has_frontend(newcomer, "api"));
    assert!(!mesh.has_frontend(newcomer, "web"));
    // Its first message goes to the seed, the only peer it knew.
    let first_send = mesh
        .effects
        .iter()
        .find(|e| e.node == newcomer && matches!(e.output, Output::Send { .. }))
        .expect("the newcomer sent something");
    assert!(matches!(first_send.output, Output::Send { to, .. } if to == seed));
}

#[test]
fn a_new_peer_takes_a_state_larger_than_a_chunk_in_parts_asking_for_each_at_once() {
    const CHUNK: usize = 2_048;
    let mut mesh = Mesh::new(11);
    mesh.sync_chunk_bytes = Some(CHUNK);
    let ids: Vec<PeerId> = (0..2).map(|i| mesh.add(i, 3)).collect();
    let members: Vec<MemberId> = ids.iter().map(|&id| member_id(id, 0)).collect();
    for id in &ids {
        let now = mesh.now;
        mesh.node_mut(*id).assume_members(now, &members, 2);
        mesh.drain(*id);
    }
    // Parts enough that the sync outlasts a few anti-entropy rounds.
    for i in 0..1_500 {
        mesh.execute(ids[0], &put_frontend(&format!("f{i}"), 1000 + i));
    }
    mesh.run_until(mesh.now + ms(500), Mesh::converged)
        .expect("the mesh converges");
    let state_bytes = mesh.node(ids[0]).replica().document_bytes();
    assert!(state_bytes > 20 * CHUNK as u64, "{state_bytes} bytes");

    let newcomer = mesh.add(2, 3);
    let now = mesh.now;
    mesh.node_mut(newcomer).join(now, ids[1]);
    mesh.drain(newcomer);
    let synced = mesh
        .run_until(mesh.now + Duration::from_secs(5), |m| {
            m.fully_meshed() && m.converged()
        })
        .expect("the newcomer catches up");

    let parts: Vec<(Time, usize)> = mesh
        .sent_messages()
        .filter(|(_, _, to, _)| *to == newcomer)
        .filter_map(|(at, _, _, message)| match message {
            Message::SyncDelta { delta, .. } => Some((
                at,
                postcard::to_stdvec(&delta.objects).expect("encodes").len(),
            )),
            _ => None,
        })
        .collect();
    // No part comes twice (from the same peer or from another).
    let received: usize = mesh
        .sent_messages()
        .filter(|(_, _, to, _)| *to == newcomer)
        .map(|(_, _, _, message)| match message {
            Message::SyncDelta { delta, .. } => delta.entries().count(),
            _ => 0,
        })
        .sum();
    let entries = mesh.node(newcomer).replica().entry_count();
    assert!(
        received <= entries + entries / 20,
        "{received} entries received for {entries}"
    );
    let largest = parts.iter().map(|(_, bytes)| *bytes).max().unwrap_or(0);
    assert!(largest <= CHUNK, "a part of {largest} bytes of entries");
    assert!(
        parts.len() as u64 >= state_bytes / CHUNK as u64,
        "{} parts for {state_bytes} bytes",
        parts.len()
    );
    // Each part is asked for as soon as the one before is taken, not at
    // the next anti-entropy round (500 ms apart).
    let first = parts.first().expect("parts were sent").0;
    assert!(
        synced < first + Duration::from_millis(200),
        "{} parts took {} µs",
        parts.len(),
        synced.as_micros() - first.as_micros()
    );
    let stats = mesh.node(newcomer).stats();
    assert!(stats.sync_chunks_asked >= parts.len() as u64 - 2);
    assert!(stats.first_synced.is_some_and(|at| at <= synced));
    // One exchange at a time: a second request while an answer is on its
    // way (to the same peer or another) would bring the same parts twice.
    let mut outstanding: BTreeMap<PeerId, u32> = BTreeMap::new();
    for (at, from, to, message) in mesh.sent_messages() {
        match message {
            Message::SyncRequest { .. } if from == newcomer => {
                *outstanding.entry(to).or_default() += 1;
                let asked: u32 = outstanding.values().sum();
                assert!(asked <= 1, "a second request, to {to:?}, at {at:?}");
            }
            Message::SyncDelta {
                reply_to: Some(_), ..
            } if to == newcomer => {
                let asked = outstanding.entry(from).or_default();
                *asked = asked.saturating_sub(1);
            }
            _ => {}
        }
    }
}

#[test]
fn a_new_peer_counts_as_synced_only_once_it_holds_what_a_member_held() {
    const CHUNK: usize = 1_024;
    let mut mesh = Mesh::new(12);
    mesh.sync_chunk_bytes = Some(CHUNK);
    let old = mesh.add(0, 2);
    for i in 0..100 {
        mesh.execute(old, &put_frontend(&format!("f{i}"), 1000 + i));
    }
    let newcomer = mesh.add(1, 2);
    let now = mesh.now;
    mesh.node_mut(newcomer).join(now, old);
    mesh.drain(newcomer);
    let mut partial_seen = false;
    mesh.run_until(mesh.now + Duration::from_secs(5), |m| {
        let entries = m.node(newcomer).replica().entry_count();
        let total = m.node(old).replica().entry_count();
        if entries > 0 && entries < total {
            partial_seen = true;
            assert_eq!(m.node(newcomer).stats().first_synced, None);
        }
        m.converged()
    })
    .expect("the newcomer catches up");
    assert!(partial_seen, "the sync came in one part");
    assert!(mesh.node(newcomer).stats().first_synced.is_some());
}

#[test]
fn two_empty_peers_do_not_count_as_synced_with_each_other() {
    let (mut mesh, ids) = Mesh::running(2, 14);
    mesh.run_for(Duration::from_secs(3));
    for id in &ids {
        assert!(
            mesh.node(*id).stats().last_in_sync.is_some(),
            "never compared"
        );
        assert_eq!(mesh.node(*id).stats().first_synced, None);
    }
    mesh.execute(ids[0], &put_frontend("web", 80));
    mesh.run_for(Duration::from_secs(3));
    assert!(mesh.node(ids[1]).stats().first_synced.is_some());
}

#[test]
fn small_parts_a_member_makes_up_are_not_followed_up() {
    let (mut mesh, ids) = Mesh::running(3, 13);
    mesh.run_for(ms(50));
    let (honest, member) = (ids[0], ids[2]);
    // A part that changes something (a value under the member's own dot)
    // and claims the member holds far more.
    let mut part = ConfigDelta::default();
    let dot = Dot::new(replica_id(2), 1).expect("valid");
    part.context.insert(dot);
    let wall = mesh.wall_ms();
    part.insert_entry(
        ObjectKey::Frontend(frontend_name("made-up")),
        FieldId::Mode,
        dot,
        Stamped {
            hlc: Hlc {
                wall_ms: wall,
                logical: 0,
            },
            value: FieldValue::Mode(Mode::Http),
        },
    );
    // The summary padded past a quarter of the chunk budget: what counts
    // is the part's entries.
    let mut summary = mesh.node(member).replica().summary();
    for i in 0..120_000u64 {
        summary
            .context
            .insert_interval(replica_id(2), (1 << 40) + 2 * i..=(1 << 40) + 2 * i);
    }
    let bytes = wire::encode(&Message::SyncDelta {
        delta: part,
        reply_to: Some(summary),
        sender_digest: Digest(7),
    })
    .expect("encodes");
    assert!(bytes.len() > aqueduct::gossip::SYNC_CHUNK_BYTES_DEFAULT / 4);
    let entries = mesh.node(honest).replica().entry_count();
    mesh.inject(member, honest, &bytes);
    let asked: Vec<Message> = sends_in(&mesh.take_outputs(honest))
        .into_iter()
        .filter(|(to, message)| *to == member && matches!(message, Message::SyncRequest { .. }))
        .map(|(_, message)| message)
        .collect();
    assert!(asked.is_empty(), "followed up: {asked:?}");
    assert_eq!(
        mesh.node(honest).replica().entry_count(),
        entries + 1,
        "the part was joined"
    );
    assert_eq!(mesh.node(honest).stats().sync_chunks_asked, 0);
}

#[test]
fn a_peer_that_leaves_is_dropped_by_the_others_quickly() {
    let (mut mesh, ids) = Mesh::running(5, 6);
    mesh.run_for(Duration::from_secs(2));
    assert!(mesh.fully_meshed());
    let leaver = ids[1];
    let now = mesh.now;
    mesh.node_mut(leaver).leave(now);
    mesh.remove(leaver); // its goodbye is on the wire; the process exits
    let start = mesh.now;

    let swim = Config::lan(5).swim;
    let done = mesh
        .run_until(start + swim.suspect_to_down_after * 4, |m| {
            m.nodes.keys().all(|p| !m.members(*p).contains(&leaver))
        })
        .expect("the others drop the leaver");
    let took = done.since(start);
    assert!(
        took < swim.probe_period && took * 4 < swim.suspect_to_down_after,
        "dropped after {took:?}; probe period {:?}, suspicion {:?}",
        swim.probe_period,
        swim.suspect_to_down_after
    );
    assert!(mesh.fully_meshed(), "the others still list each other");
}

// ---------------------------------------------------------------------------
// Repair.

#[test]
fn a_partitioned_peer_catches_up_after_the_partition_heals() {
    let (mut mesh, ids) = Mesh::running(5, 7);
    mesh.run_for(ms(100));
    mesh.execute(ids[0], &put_frontend("shared", 80));
    mesh.run_until(mesh.now + ms(20), Mesh::converged)
        .expect("the mesh converges");

    let cut = ids[4];
    mesh.isolated.insert(cut);
    mesh.run_for(ms(100));
    mesh.execute(ids[0], &put_frontend("majority-a", 81));
    mesh.execute(ids[1], &put_frontend("majority-b", 82));
    mesh.execute(cut, &put_frontend("minority", 83));
    mesh.execute(cut, &delete_frontend("shared"));
    // Long enough for SWIM to declare the two sides down to each other.
    let swim = Config::lan(5).swim;
    mesh.run_for(swim.suspect_to_down_after + swim.probe_period * 10);
    assert!(mesh.dropped_by_isolation > 0);
    assert!(!mesh.converged());
    for p in &ids[..4] {
        assert!(
            !mesh.members(*p).contains(&cut),
            "{p} still lists the cut peer"
        );
    }
    assert!(mesh.members(cut).is_empty(), "{:?}", mesh.members(cut));

    mesh.isolated.clear();
    let healed = mesh.now;
    let done = mesh.run_until(healed + Duration::from_secs(30), |m| {
        m.converged() && m.fully_meshed()
    });
    assert!(
        done.is_some(),
        "30 s after healing: members {:?}, converged {}",
        mesh.membership(),
        mesh.converged()
    );
    for p in &ids {
        assert!(mesh.has_frontend(*p, "majority-a"), "{p}");
        assert!(mesh.has_frontend(*p, "majority-b"), "{p}");
        assert!(mesh.has_frontend(*p, "minority"), "{p}");
        assert!(!mesh.has_frontend(*p, "shared"), "{p}");
    }
}

#[test]
fn a_missed_delete_is_repaired_by_anti_entropy() {
    let (mut mesh, ids) = Mesh::running(5, 8);
    mesh.run_for(ms(100));
    let (writer, victim) = (ids[0], ids[3]);
    mesh.execute(writer, &put_frontend("doomed", 80));
    mesh.run_until(mesh.now + ms(20), Mesh::converged)
        .expect("the mesh converges");
    assert!(mesh.has_frontend(victim, "doomed"));

    // Every copy of every broadcast towards the victim is lost, retransmits
    // included: only anti-entropy can tell it.
    mesh.drop_rule = Some(Box::new(move |_, to, m| {
        to == victim && matches!(m, Message::Broadcast { .. })
    }));
    let delta = mesh.execute(writer, &delete_frontend("doomed"));
    let id = broadcast_id(&delta, replica_id(0));
    let start = mesh.now;
    mesh.run_until(start + ms(20), |m| {
        ids.iter()
            .filter(|p| **p != victim)
            .all(|p| !m.has_frontend(*p, "doomed"))
    })
    .expect("the others drop the frontend at once");
    // Anti-entropy needs at least two more hops than the tree's one.
    assert!(mesh.has_frontend(victim, "doomed"));

    let done = mesh
        .run_until(start + Duration::from_secs(10), |m| {
            !m.has_frontend(victim, "doomed")
        })
        .expect("anti-entropy removes the frontend at the victim");
    mesh.run_until(done + Duration::from_secs(5), Mesh::converged)
        .expect("everyone converges");
    let lost = mesh
        .dropped_by_rule
        .iter()
        .filter(|(_, _, m)| matches!(m, Message::Broadcast { id: b, .. } if *b == id))
        .count();
    assert!(lost >= 1, "the delete's broadcast to the victim was lost");
    assert_eq!(
        mesh.dropped_by_rule
            .iter()
            .filter(|(_, to, _)| *to != victim)
            .count(),
        0
    );
}

// ---------------------------------------------------------------------------
// Bad input.

#[test]
fn garbage_bytes_are_dropped_and_counted_not_fatal() {
    let (mut mesh, ids) = Mesh::running(3, 9);
    mesh.run_for(ms(50));
    let (target, sender) = (ids[0], ids[1]);

    let valid = wire::encode(&Message::Broadcast {
        id: Dot::new(replica_id(1), 1).expect("valid"),
        range: RingRange {
            after: sender,
            before: sender,
        },
        delta: ConfigDelta::default(),
    })
    .expect("encodes");
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff; 16],
        valid[..valid.len() / 2].to_vec(),
        valid[..valid.len() - 1].to_vec(),
        [valid.as_slice(), &[0]].concat(),
    ];
    let mut other_major = valid.clone();
    other_major[0] = u8::try_from(wire::PROTOCOL_MAJOR + 1).expect("a small major");
    garbage.push(other_major);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for len in [1, 7, 64, 1_000] {
        garbage.push((0..len).map(|_| rng.random::<u8>()).collect());
    }
    // A dot with counter 0 is invalid: decoding validates, not just parses.
    let zero_dot = postcard::to_stdvec(&(
        wire::PROTOCOL_MAJOR,
        wire::PROTOCOL_MINOR,
        2u8, // Message::BroadcastAck
        replica_id(1).get(),
        0u64,
    ))
    .expect("encodes");
    garbage.push(zero_dot);
    for bytes in &garbage {
        assert!(wire::decode(bytes).is_err(), "{bytes:?} decodes");
    }

    let before = mesh.node(target).stats();
    let digest = mesh.digest(target);
    for bytes in &garbage {
        mesh.inject(sender, target, bytes);
    }
    let after = mesh.node(target).stats();
    assert_eq!(
        after.garbage_dropped - before.garbage_dropped,
        garbage.len() as u64
    );
    assert_eq!(
        after.messages_received - before.messages_received,
        garbage.len() as u64
    );
    assert_eq!(after.deltas_refused, before.deltas_refused);
    assert!(
        mesh.take_outputs(target).is_empty(),
        "garbage gets no answer"
    );
    assert_eq!(mesh.digest(target), digest);

    // The node keeps working: it takes writes from others and spreads its own.
    mesh.execute(sender, &put_frontend("from-sender", 80));
    mesh.execute(target, &put_frontend("from-target", 81));
    mesh.run_until(mesh.now + ms(20), Mesh::converged)
        .expect("the mesh converges");
    assert!(ids.iter().all(|p| mesh.has_frontend(*p, "from-sender")));
    assert!(ids.iter().all(|p| mesh.has_frontend(*p, "from-target")));
    assert!(mesh.fully_meshed());
}

#[test]
fn a_message_only_a_newer_minor_version_knows_is_dropped_and_counted_and_the_mesh_goes_on() {
    let (mut mesh, ids) = Mesh::running(3, 11);
    mesh.run_for(ms(50));
    let (target, sender) = (ids[0], ids[1]);
    // What a peer of the next minor version sends: a variant appended to
    // `Message` after the ones this version knows (ARCHITECTURE.md,
    // "Compatibility").
    let newer = postcard::to_stdvec(&(
        wire::PROTOCOL_MAJOR,
        wire::PROTOCOL_MINOR + 1,
        100u8, // a variant index (a one-byte varint) far past the last
        "a message of a later release",
    ))
    .expect("encodes");

    let before = mesh.node(target).stats();
    mesh.inject(sender, target, &newer);
    let after = mesh.node(target).stats();
    assert_eq!(after.garbage_dropped - before.garbage_dropped, 1);
    assert!(mesh.take_outputs(target).is_empty(), "it gets no answer");

    mesh.execute(sender, &put_frontend("after-newer", 80));
    mesh.run_until(mesh.now + ms(20), Mesh::converged)
        .expect("the mesh converges");
    assert!(ids.iter().all(|p| mesh.has_frontend(*p, "after-newer")));
}

#[test]
fn a_garbage_swim_packet_is_refused_by_membership_and_counted() {
    let (mut mesh, ids) = Mesh::running(3, 10);
    mesh.run_for(ms(50));
    let (target, sender) = (ids[0], ids[1]);
    let before = mesh.node(target).stats();
    let bytes = wire::encode(&Message::Swim(vec![0xde, 0xad, 0xbe, 0xef])).expect("encodes");
    mesh.inject(sender, target, &bytes);
    mesh.drain(target);
    let after = mesh.node(target).stats();
    assert_eq!(after.swim_refused, before.swim_refused + 1);
    assert_eq!(after.garbage_dropped, before.garbage_dropped);
    mesh.run_for(Duration::from_secs(2));
    assert!(mesh.fully_meshed());
}

#[test]
fn a_swim_packet_speaking_for_another_peer_is_refused() {
    let (mut mesh, ids) = Mesh::running(3, 12);
    mesh.run_for(ms(50));
    let (forger, target) = (ids[0], ids[1]);
    // A genuine packet of `forger`'s, handed over by a connection that
    // authenticated someone else.
    let now = mesh.now;
    mesh.node_mut(forger)
        .handle_timeout(now + Duration::from_secs(5));
    let swim = mesh
        .take_outputs(forger)
        .into_iter()
        .find_map(|output| match output {
            Output::Send { bytes, .. } => {
                matches!(wire::decode(&bytes), Ok(Message::Swim(_))).then_some(bytes)
            }
            Output::Persist(_) | Output::Revoked(_) => None,
        })
        .expect("a probe round sends SWIM packets");
    let before = mesh.node(target).stats().swim_refused;
    mesh.inject(ids[2], target, &swim);
    assert_eq!(mesh.node(target).stats().swim_refused, before + 1);
    mesh.inject(forger, target, &swim);
    assert_eq!(mesh.node(target).stats().swim_refused, before + 1);
}

#[test]
fn swim_spreads_each_peers_gossip_address() {
    let (mut mesh, ids) = Mesh::running(3, 13);
    let newcomer = mesh.add(3, 4);
    assert_eq!(mesh.node(ids[1]).address_of(newcomer), None);
    let now = mesh.now;
    mesh.node_mut(newcomer).join(now, ids[0]);
    mesh.drain(newcomer);
    mesh.run_until(mesh.now + Duration::from_secs(10), Mesh::fully_meshed)
        .expect("the newcomer joins");
    let announced = mesh.node(newcomer).identity().addr;
    for id in &ids {
        assert_eq!(mesh.node(*id).address_of(newcomer), Some(announced));
    }
}

#[test]
fn a_broadcast_with_an_invalid_delta_is_refused_counted_and_not_relayed() {
    let (mut mesh, ids) = Mesh::running(5, 11);
    mesh.run_for(ms(50));
    let (writer, receiver, sender) = (ids[0], ids[1], ids[2]);
    mesh.execute(writer, &put_frontend("web", 80));
    mesh.run_until(mesh.now + ms(20), Mesh::converged)
        .expect("the mesh converges");
    mesh.run_for(ms(50)); // acks in, retransmit timers gone

    let key = ObjectKey::Frontend(frontend_name("web"));
    let state = mesh.node(receiver).replica().full_state();
    let held = state
        .entries()
        .find(|(k, f, _, _)| **k == key && **f == FieldId::Bind)
        .map(|(_, _, _, stamped)| stamped.clone())
        .expect("the receiver holds the bind");
    let forger = ReplicaId::new(0xBAD).expect("non-zero");
    let entry = |dot: Dot, value: FieldValue| {
        let mut delta = ConfigDelta::default();
        let field = value.field();
        delta.insert_entry(
            key.clone(),
            field,
            dot,
            Stamped {
                hlc: Hlc {
                    wall_ms: held.hlc.wall_ms + 1,
                    logical: 0,
                },
                value,
            },
        );
        delta
    };
    let other_bind = FieldValue::Bind(Binds::parse("*:9999").expect("valid"));

    // An entry whose dot its own context does not cover.
    let outside = entry(Dot::new(forger, 1).expect("valid"), other_bind.clone());
    // A field a frontend cannot have.
    let mut wrong_field = entry(
        Dot::new(forger, 2).expect("valid"),
        FieldValue::Weight(Weight::new(50).expect("valid")),
    );
    wrong_field.context = [Dot::new(forger, 2).expect("valid")].into_iter().collect();
    // A dot beyond what any replica can have issued by now.
    let mut implausible = ConfigDelta::default();
    implausible
        .context
        .insert_interval(replica_id(0), 1..=Dot::COUNTER_MAX);
    // A stamp a year ahead of the receiver's clock.
    let ahead = Dot::new(forger, 3).expect("valid");
    let mut far_future = ConfigDelta::default();
    far_future.context.insert(ahead);
    far_future.insert_entry(
        key.clone(),
        FieldId::Bind,
        ahead,
        Stamped {
            hlc: Hlc {
                wall_ms: mesh.wall_ms() + 365 * 24 * 3_600_000,
                logical: 0,
            },
            value: other_bind,
        },
    );

    let cases = [
        ("entry outside context", outside),
        ("field not allowed", wrong_field),
        ("implausible dot", implausible),
        ("stamp far ahead", far_future),
    ];
    let cases_count = cases.len() as u64;
    let digests: Vec<Digest> = ids.iter().map(|p| mesh.digest(*p)).collect();
    for (n, (what, delta)) in cases.into_iter().enumerate() {
        let id = Dot::new(forger, 100 + n as u64).expect("valid");
        let bytes = wire::encode(&Message::Broadcast {
            id,
            // Were it valid, the receiver would pass it on to everyone.
            range: RingRange {
                after: sender,
                before: sender,
            },
            delta,
        })
        .expect("encodes");
        let before = mesh.node(receiver).stats();
        mesh.inject(sender, receiver, &bytes);
        let after = mesh.node(receiver).stats();
        assert_eq!(
            after.deltas_refused,
            before.deltas_refused + 1,
            "{what}: refused and counted"
        );
        assert_eq!(after.garbage_dropped, before.garbage_dropped, "{what}");
        let outputs = mesh.take_outputs(receiver);
        assert!(
            !outputs.iter().any(|o| matches!(o, Output::Persist(_))),
            "{what}: nothing to persist: {outputs:?}"
        );
        for (to, message) in sends_in(&outputs) {
            assert!(
                !matches!(message, Message::Broadcast { .. }),
                "{what}: relayed to {to}"
            );
            assert_eq!(
                (to, message),
                (sender, Message::BroadcastAck { id }),
                "{what}: only the receipt goes back"
            );
        }
        assert_eq!(mesh.digest(receiver), digests[1], "{what}: state unchanged");
        for output in outputs {
            mesh.dispatch(receiver, output);
        }
    }

    // Nobody else ever sees them, and the state stays what it was.
    mesh.run_for(Duration::from_secs(2));
    let refused: Vec<u64> = ids
        .iter()
        .map(|p| mesh.node(*p).stats().deltas_refused)
        .collect();
    assert_eq!(refused, vec![0, cases_count, 0, 0, 0]);
    assert_eq!(
        ids.iter().map(|p| mesh.digest(*p)).collect::<Vec<_>>(),
        digests
    );
    assert!(mesh.has_frontend(receiver, "web"));
}

#[test]
fn a_silent_child_is_bypassed_so_its_subtree_still_gets_the_write() {
    let (mut mesh, ids) = Mesh::running(30, 13);
    mesh.run_for(ms(20));
    mesh.drop_rule = Some(Box::new(|_, _, m| is_anti_entropy(m)));
    let writer = ids[0];
    let (now, wall) = (mesh.now, mesh.wall_ms());
    mesh.node_mut(writer)
        .execute(now, wall, &put_frontend("web", 80))
        .expect("accepted");
    let outputs = mesh.take_outputs(writer);
    // The first child of the writer goes silent (crashed, say).
    let (silent, _) = sends_in(&outputs)
        .into_iter()
        .find(|(_, m)| matches!(m, Message::Broadcast { .. }))
        .expect("the writer broadcasts");
    mesh.isolated.insert(silent);
    for output in outputs {
        mesh.dispatch(writer, output);
    }
    let start = mesh.now;
    let target = mesh.digest(writer);
    let done = mesh
        .run_until(start + ms(200), |m| {
            ids.iter()
                .filter(|p| **p != silent)
                .all(|p| m.digest(*p) == target)
        })
        .expect("everyone but the silent child has the write, through the tree");
    assert!(
        done.since(start) * 5 <= Config::lan(30).anti_entropy_interval,
        "took {:?}",
        done.since(start)
    );
    assert!(mesh.node(writer).stats().broadcasts_abandoned >= 1);
    assert_ne!(mesh.digest(silent), target);
}

#[test]
fn a_restarted_peer_rejoins_with_a_new_generation_and_stays_listed() {
    let n = 5;
    let (mut mesh, ids) = Mesh::running(n, 14);
    mesh.run_for(Duration::from_secs(2));
    mesh.execute(ids[0], &put_frontend("before", 80));
    mesh.run_until(mesh.now + ms(20), Mesh::converged)
        .expect("the mesh converges");

    // Peer 3 crashes (no goodbye) and comes back from its disk before the
    // others have declared it down.
    let crashed = ids[3];
    mesh.remove(crashed);
    let disk = mesh.persisted[&crashed].clone();
    mesh.run_for(ms(300));
    mesh.execute(ids[1], &put_frontend("while-down", 81));
    mesh.run_for(ms(300));
    let restored = Replica::restore(replica_id(3), &disk).expect("its own disk restores");
    mesh.start(3, n, 1, restored);
    let now = mesh.now;
    mesh.node_mut(crashed).join(now, ids[0]);
    mesh.drain(crashed);
    let start = mesh.now;
    let done = mesh
        .run_until(start + Duration::from_secs(10), |m| {
            m.fully_meshed() && m.converged()
        })
        .expect("the restarted peer is back and caught up");
    assert!(mesh.has_frontend(crashed, "while-down"));
    // Its old generation's suspicion must not take the new one out later.
    let swim = Config::lan(5).swim;
    let dropped = mesh.run_until(done + swim.suspect_to_down_after * 3, |m| !m.fully_meshed());
    assert_eq!(dropped, None, "members {:?}", mesh.membership());
}

#[test]
fn a_refused_broadcast_does_not_stop_the_genuine_change_with_the_same_id() {
    let (mut mesh, ids) = Mesh::running(5, 15);
    mesh.run_for(ms(50));
    // Only the tree may carry changes, so a dropped broadcast stays dropped.
    mesh.drop_rule = Some(Box::new(|_, _, m| is_anti_entropy(m)));
    let (writer, receiver, forger) = (ids[0], ids[1], ids[2]);
    // The id the writer's next change will be broadcast under.
    let write = put_frontend("web", 80);
    let mut preview = mesh.node(writer).replica().clone();
    let next_id = broadcast_id(
        &preview.execute(&write, mesh.wall_ms()).expect("accepted"),
        replica_id(0),
    );
    let mut invalid = ConfigDelta::default();
    invalid.insert_entry(
        ObjectKey::Frontend(frontend_name("web")),
        FieldId::Bind,
        next_id,
        Stamped {
            hlc: Hlc {
                wall_ms: WALL_EPOCH_MS,
                logical: 0,
            },
            value: FieldValue::Bind(Binds::parse("*:1").expect("valid")),
        },
    ); // and no context: refused (entry outside context)
    let bytes = wire::encode(&Message::Broadcast {
        id: next_id,
        range: RingRange {
            after: forger,
            before: forger,
        },
        delta: invalid,
    })
    .expect("encodes");
    mesh.inject(forger, receiver, &bytes);
    mesh.drain(receiver);
    assert_eq!(mesh.node(receiver).stats().deltas_refused, 1);
    mesh.run_for(ms(10));

    let delta = mesh.execute(writer, &write);
    assert_eq!(broadcast_id(&delta, replica_id(0)), next_id);
    let target = mesh.digest(writer);
    let reached = mesh.run_until(mesh.now + ms(100), |m| m.digest(receiver) == target);
    assert!(
        reached.is_some(),
        "the genuine broadcast {next_id} was dropped as a duplicate of the refused forgery"
    );
}

// ---------------------------------------------------------------------------
// Peer reports.

/// `of`'s latest report as `at` knows it.
fn report_at(mesh: &Mesh, at: PeerId, of: PeerId) -> Option<PeerReport> {
    mesh.node(at)
        .reports()
        .find(|heard| heard.report.peer == of)
        .map(|heard| heard.report.clone())
}

fn reloaded(reloads: u64) -> ApplyReport {
    ApplyReport {
        managed: true,
        running: true,
        reloads,
        ..ApplyReport::default()
    }
}

#[test]
fn every_peer_learns_every_other_peers_report_from_that_peer() {
    let (mut mesh, ids) = Mesh::running(5, 31);
    mesh.node_mut(ids[0]).set_haproxy_report(Some(reloaded(3)));
    mesh.execute(ids[0], &put_frontend("web", 80));
    let everyone_knows = |mesh: &Mesh| {
        ids.iter().all(|&at| {
            ids.iter()
                .filter(|&&of| of != at)
                .all(|&of| report_at(mesh, at, of).is_some_and(|r| r.digest == mesh.digest(of)))
        })
    };
    mesh.run_until(mesh.now + Duration::from_secs(10), everyone_knows)
        .expect("every peer holds every other peer's current digest");
    for &at in &ids[1..] {
        let report = report_at(&mesh, at, ids[0]).expect("known");
        assert_eq!(report.haproxy, Some(reloaded(3)));
    }
    assert_eq!(
        report_at(&mesh, ids[0], ids[1]).expect("known").haproxy,
        None,
        "a peer without HAProxy reports none"
    );
}

#[test]
fn an_older_report_never_rolls_a_peers_status_back() {
    let (mut mesh, ids) = Mesh::running(3, 32);
    mesh.isolated.insert(ids[2]);
    let (target, sender, subject) = (ids[0], ids[1], ids[1]);
    let report = |seq, reloads| PeerReport {
        peer: subject,
        generation: 0,
        seq,
        digest: Digest(7),
        haproxy: Some(reloaded(reloads)),
    };
    let send = |mesh: &mut Mesh, reports: Vec<PeerReport>| {
        let bytes = wire::encode(&Message::Reports { reports }).expect("encodes");
        mesh.inject(sender, target, &bytes);
    };
    send(&mut mesh, vec![report(10, 5)]);
    send(&mut mesh, vec![report(9, 4)]);
    assert_eq!(
        report_at(&mesh, target, subject).expect("known").haproxy,
        Some(reloaded(5))
    );
    send(&mut mesh, vec![report(11, 6)]);
    assert_eq!(
        report_at(&mesh, target, subject).expect("known").haproxy,
        Some(reloaded(6))
    );
}

#[test]
fn a_report_about_another_peer_is_ignored_and_counted() {
    let (mut mesh, ids) = Mesh::running(3, 34);
    let (target, forger, victim) = (ids[0], ids[1], ids[2]);
    mesh.run_until(mesh.now + Duration::from_secs(5), |mesh| {
        report_at(mesh, target, victim).is_some()
    })
    .expect("the victim reports to the target");
    let genuine = report_at(&mesh, target, victim).expect("known");
    let forged = PeerReport {
        peer: victim,
        generation: u32::MAX,
        seq: u64::MAX,
        digest: mesh.digest(target),
        haproxy: Some(ApplyReport {
            last_error: Some("all good".to_owned()),
            ..reloaded(0)
        }),
    };
    let before = mesh.node(target).stats();
    let bytes = wire::encode(&Message::Reports {
        reports: vec![forged],
    })
    .expect("encodes");
    mesh.inject(forger, target, &bytes);
    assert_eq!(report_at(&mesh, target, victim), Some(genuine));
    let after = mesh.node(target).stats();
    assert_eq!(after.reports_about_others, before.reports_about_others + 1);

    // The victim's own later reports still get through.
    mesh.node_mut(victim).set_haproxy_report(Some(reloaded(9)));
    mesh.run_until(mesh.now + Duration::from_secs(5), |mesh| {
        report_at(mesh, target, victim).is_some_and(|r| r.haproxy == Some(reloaded(9)))
    })
    .expect("the victim's next report is taken");
}

#[test]
fn a_report_of_another_generation_than_membership_knows_is_refused() {
    let (mut mesh, ids) = Mesh::running(3, 35);
    mesh.isolated.insert(ids[2]);
    let (target, sender) = (ids[0], ids[1]);
    let bytes = wire::encode(&Message::Reports {
        reports: vec![PeerReport {
            peer: sender,
            generation: 7,
            seq: u64::MAX,
            digest: Digest(1),
            haproxy: None,
        }],
    })
    .expect("encodes");
    let before = mesh.node(target).stats().reports_refused;
    mesh.inject(sender, target, &bytes);
    assert_eq!(mesh.node(target).stats().reports_refused, before + 1);
    assert_eq!(report_at(&mesh, target, sender), None);
}

#[test]
fn a_report_message_over_the_bounds_is_dropped_whole_and_counted() {
    let (mut mesh, ids) = Mesh::running(3, 33);
    mesh.isolated.insert(ids[2]);
    let (target, sender) = (ids[0], ids[1]);
    let honest = PeerReport {
        peer: ids[2],
        generation: 0,
        seq: 1,
        digest: Digest(1),
        haproxy: Some(reloaded(1)),
    };
    let oversized = PeerReport {
        peer: sender,
        haproxy: Some(ApplyReport {
            last_error: Some("x".repeat(REPORT_TEXT_MAX + 1)),
            ..ApplyReport::default()
        }),
        ..honest.clone()
    };
    let before = mesh.node(target).stats().reports_refused;
    let bytes = wire::encode(&Message::Reports {
        reports: vec![honest, oversized],
    })
    .expect("encodes");
    mesh.inject(sender, target, &bytes);
    assert_eq!(mesh.node(target).stats().reports_refused, before + 1);
    assert_eq!(report_at(&mesh, target, ids[2]), None, "nothing of it kept");
}

// ---------------------------------------------------------------------------
// Determinism.

/// A run with writes, a partition and a join; returns every message sent,
/// in order, with when, from and to.
fn scripted_run(seed: u64) -> Vec<(Time, PeerId, PeerId, Vec<u8>)> {
    let (mut mesh, ids) = Mesh::running(5, seed);
    mesh.run_for(ms(300));
    mesh.execute(ids[0], &put_frontend("a", 80));
    mesh.run_for(ms(5));
    mesh.execute(ids[3], &put_frontend("b", 81));
    mesh.isolated.insert(ids[2]);
    mesh.run_for(ms(700));
    mesh.execute(ids[2], &put_frontend("c", 82));
    mesh.execute(ids[1], &delete_frontend("a"));
    mesh.run_for(ms(600));
    mesh.isolated.clear();
    let newcomer = mesh.add(5, 6);
    let now = mesh.now;
    mesh.node_mut(newcomer).join(now, ids[4]);
    mesh.drain(newcomer);
    mesh.run_for(Duration::from_secs(3));
    mesh.effects
        .into_iter()
        .filter_map(|e| match e.output {
            Output::Send { to, bytes } => Some((e.at, e.node, to, bytes)),
            Output::Persist(_) | Output::Revoked(_) => None,
        })
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_messages() {
    let first = scripted_run(12);
    let second = scripted_run(12);
    assert!(first.len() > 100, "a busy run: {} messages", first.len());
    assert!(
        first == second,
        "two runs from seed 12 sent different bytes"
    );
    // And the seed matters (it drives SWIM and anti-entropy choices).
    assert!(scripted_run(13) != first);
}

/// A test peer's identity; the mesh routes by peer id, so the address is a
/// label only (distinct per peer, so that a mix-up would show).
fn member_id(peer: PeerId, generation: u32) -> MemberId {
    let port = 1024 + u16::try_from(peer.0 % 60_000).expect("below 60000");
    MemberId {
        peer,
        generation,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

// ---------------------------------------------------------------------------
// A hostile member: a peer holding a genuine certificate (it is a member)
// that forges what it sends.

/// A broadcast from `forger`'s connection whose change claims `claimed`
/// (a context, no entries), addressed to everyone.
fn forged_broadcast(forger: PeerId, id: Dot, claimed: ConfigDelta) -> Vec<u8> {
    wire::encode(&Message::Broadcast {
        id,
        range: RingRange {
            after: forger,
            before: forger,
        },
        delta: claimed,
    })
    .expect("encodes")
}

/// A context claiming `replica`'s dots `1..=last`.
fn claim_up_to(replica: ReplicaId, last: u64) -> ConfigDelta {
    let mut delta = ConfigDelta::default();
    delta.context.insert_interval(replica, 1..=last);
    delta
}

#[test]
fn a_context_claiming_a_replicas_dots_up_to_the_counter_limit_is_refused_and_deletes_nothing() {
    let (mut mesh, ids) = Mesh::running(3, 41);
    mesh.run_for(ms(50));
    let (victim, receiver, forger) = (ids[0], ids[1], ids[2]);
    mesh.execute(victim, &put_frontend("web", 80));
    mesh.run_until(mesh.now + ms(100), Mesh::converged)
        .expect("the mesh converges");

    let poison = claim_up_to(replica_id(0), Dot::COUNTER_MAX);
    let id = Dot::new(replica_id(2), 1_000).expect("valid");
    let before = mesh.node(receiver).stats();
    mesh.inject(forger, receiver, &forged_broadcast(forger, id, poison));
    let after = mesh.node(receiver).stats();
    assert_eq!(
        after.deltas_implausible_dots,
        before.deltas_implausible_dots + 1
    );
    assert!(mesh.has_frontend(receiver, "web"), "nothing deleted");

    mesh.execute(victim, &put_frontend("api", 81));
    mesh.run_until(mesh.now + Duration::from_secs(1), |mesh| {
        ids.iter()
            .all(|&p| mesh.has_frontend(p, "api") && mesh.has_frontend(p, "web"))
    })
    .expect("the victim's next write reaches every peer within a second");
}

/// A running mesh of `n` in which peer 0 wrote frontend "web" and every
/// peer took it; with the highest counter peer 0's replica issued.
fn mesh_after_one_write(n: u64, seed: u64) -> (Mesh, Vec<PeerId>, u64) {
    let (mut mesh, ids) = Mesh::running(n, seed);
    mesh.run_for(ms(50));
    mesh.execute(ids[0], &put_frontend("web", 80));
    mesh.run_until(mesh.now + ms(100), Mesh::converged)
        .expect("the mesh converges");
    let issued = mesh
        .node(ids[0])
        .replica()
        .context()
        .max_counter(replica_id(0));
    (mesh, ids, issued)
}

#[test]
fn a_plausible_claim_on_a_replicas_future_dots_loses_none_of_its_writes() {
    let (mut mesh, ids, issued) = mesh_after_one_write(3, 42);
    let (victim, receiver, forger) = (ids[0], ids[1], ids[2]);

    // Just beyond what the victim issued: no receiver can tell it from the
    // victim's own writes it has not seen yet, so the receiver takes it
    // (as a removal of the victim's "web"). Sent as anti-entropy, it is not
    // relayed: the victim hears of it only later.
    let claim = claim_up_to(replica_id(0), issued + 1_000);
    let bytes = wire::encode(&Message::SyncDelta {
        delta: claim,
        reply_to: None,
        sender_digest: Digest(0),
    })
    .expect("encodes");
    mesh.inject(forger, receiver, &bytes);
    assert!(!mesh.has_frontend(receiver, "web"));

    // Meanwhile the victim writes, with a dot the receiver takes as seen.
    mesh.execute(victim, &put_frontend("api", 81));
    mesh.run_for(ms(5));
    assert!(
        !mesh.has_frontend(receiver, "api"),
        "the receiver took the victim's write as seen"
    );
    mesh.run_until(mesh.now + Duration::from_secs(5), |mesh| {
        ids.iter()
            .all(|&p| mesh.has_frontend(p, "api") && mesh.has_frontend(p, "web"))
            && mesh.converged()
    })
    .expect("once the claim reaches the victim, it writes its values again, and all converge");
    assert!(mesh.node(victim).stats().own_dots_claimed > 0);
    assert!(
        mesh.node(victim)
            .replica()
            .context()
            .max_counter(replica_id(0))
            > issued + 1_000,
        "the victim's counter resumed after the claim"
    );
}

#[test]
fn data_from_a_peer_that_is_not_a_member_is_dropped_and_counted() {
    let (mut mesh, ids) = Mesh::running(3, 43);
    let stranger = peer(9);
    let mut write = ConfigDelta::default();
    let dot = Dot::new(replica_id(9), 1).expect("valid");
    write.context.insert(dot);
    write.insert_entry(
        ObjectKey::Frontend(frontend_name("stranger")),
        FieldId::Mode,
        dot,
        Stamped {
            hlc: Hlc {
                wall_ms: mesh.wall_ms(),
                logical: 0,
            },
            value: FieldValue::Mode(Mode::Tcp),
        },
    );
    let messages = [
        forged_broadcast(stranger, dot, write.clone()),
        wire::encode(&Message::SyncDelta {
            delta: write,
            reply_to: None,
            sender_digest: Digest(0),
        })
        .expect("encodes"),
        wire::encode(&Message::Digest { digest: Digest(0) }).expect("encodes"),
    ];
    let before = mesh.node(ids[0]).stats().data_from_non_members;
    for bytes in &messages {
        mesh.inject(stranger, ids[0], bytes);
    }
    assert_eq!(
        mesh.node(ids[0]).stats().data_from_non_members,
        before + messages.len() as u64
    );
    assert!(
        mesh.take_outputs(ids[0]).is_empty(),
        "no answer, nothing persisted"
    );
    assert!(!mesh.has_frontend(ids[0], "stranger"));
}

#[test]
fn a_member_declaring_another_peer_down_only_makes_the_receiver_probe_it() {
    use foca::{Codec, Header, Member, PostcardCodec};

    let (mut mesh, ids) = Mesh::running(3, 44);
    mesh.run_for(ms(100));
    let (target, victim, forger) = (ids[0], ids[1], ids[2]);
    let header = Header {
        src: mesh.node(forger).identity(),
        src_incarnation: 0,
        dst: mesh.node(target).identity(),
        message: foca::Message::Ping(7),
    };
    let mut packet = Vec::new();
    let mut codec = PostcardCodec;
    codec.encode_header(&header, &mut packet).expect("encodes");
    packet.extend_from_slice(&1u16.to_be_bytes());
    let down = Member::new(mesh.node(victim).identity(), u16::MAX, foca::State::Down);
    codec.encode_member(&down, &mut packet).expect("encodes");
    let bytes = wire::encode(&Message::Swim(packet)).expect("encodes");

    mesh.inject(forger, target, &bytes);
    assert_eq!(mesh.node(target).stats().swim_downs_taken_as_suspicion, 1);
    assert!(
        mesh.members(target).contains(&victim),
        "a suspect is still a member"
    );
    mesh.run_for(Duration::from_secs(10));
    assert!(
        mesh.members(target).contains(&victim),
        "the victim answered the target's own probes"
    );
    assert!(mesh.fully_meshed());
}

/// A SWIM gossip packet from `forger` to `target` (as they run) carrying
/// `update`, in a wire message.
fn swim_gossip(
    mesh: &Mesh,
    forger: PeerId,
    target: PeerId,
    update: &foca::Member<MemberId>,
) -> Vec<u8> {
    use foca::{Codec, Header, PostcardCodec};

    let header = Header {
        src: mesh.node(forger).identity(),
        src_incarnation: 0,
        dst: mesh.node(target).identity(),
        message: foca::Message::Gossip,
    };
    let mut packet = Vec::new();
    let mut codec = PostcardCodec;
    codec.encode_header(&header, &mut packet).expect("encodes");
    packet.extend_from_slice(&1u16.to_be_bytes());
    codec.encode_member(update, &mut packet).expect("encodes");
    wire::encode(&Message::Swim(packet)).expect("encodes")
}

/// A running mesh of three (seed `seed`) in which the third peer, a
/// forger, told the first that `usurped` (an index) runs at the highest
/// generation and another address: an identity that would win SWIM's
/// conflict rule against every one that peer can take. Returns the mesh
/// 10 s later, its ids, and the usurped peer's genuine identity.
fn after_usurping(seed: u64, usurped: usize) -> (Mesh, Vec<PeerId>, MemberId) {
    let (mut mesh, ids) = Mesh::running(3, seed);
    mesh.run_for(ms(100));
    let (target, forger) = (ids[0], ids[2]);
    let genuine = mesh.node(ids[usurped]).identity();
    let usurper = MemberId {
        generation: u32::MAX,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        ..genuine
    };
    let forged = swim_gossip(&mesh, forger, target, &foca::Member::alive(usurper));
    mesh.inject(forger, target, &forged);
    assert_eq!(mesh.node(target).stats().swim_identities_refused, 1);
    mesh.run_for(Duration::from_secs(10));
    (mesh, ids, genuine)
}

#[test]
fn a_member_announcing_another_peer_under_a_new_identity_is_ignored() {
    let (mesh, ids, genuine) = after_usurping(45, 1);
    let (target, victim) = (ids[0], ids[1]);
    assert!(mesh.members(target).contains(&victim));
    assert_eq!(
        mesh.node(victim).identity(),
        genuine,
        "the victim never had to renew"
    );
    assert!(mesh.fully_meshed());
}

#[test]
fn a_member_announcing_the_receiver_itself_under_a_new_identity_is_ignored() {
    let (mesh, ids, genuine) = after_usurping(46, 0);
    let target = ids[0];
    for other in &ids[1..] {
        assert!(mesh.members(*other).contains(&target));
    }
    assert_eq!(mesh.node(target).identity(), genuine);
    assert!(mesh.fully_meshed());
}

// ---------------------------------------------------------------------------
// Revocations.

/// What the fake CA puts before the signed bytes to make a signature.
const FAKE_CA: &[u8] = b"signed by the fake CA:";

/// The shell's verifier stands in the core's tests for a CA: a revocation
/// is genuine when its signature is [`FAKE_CA`] then its signed bytes.
struct FakeCa;

impl RevocationVerifier for FakeCa {
    fn verify(&self, revocation: &Revocation) -> bool {
        revocation.signature == [FAKE_CA, &revocation.signed_bytes()].concat()
    }
}

/// A revocation of `name` the fake CA signed.
fn revocation_of(name: &str, not_before_up_to: u64) -> Revocation {
    let mut revocation = Revocation {
        name: name.to_owned(),
        not_before_up_to,
        revoked_at: not_before_up_to + 3600,
        signature: Vec::new(),
    };
    revocation.signature = [FAKE_CA, &revocation.signed_bytes()].concat();
    revocation
}

/// A running mesh of `n` whose nodes all check revocations with [`FakeCa`].
fn mesh_checking_revocations(n: u64, seed: u64) -> (Mesh, Vec<PeerId>) {
    let (mut mesh, ids) = Mesh::running(n, seed);
    for id in &ids {
        mesh.node_mut(*id).set_revocation_verifier(Box::new(FakeCa));
    }
    (mesh, ids)
}

fn holds(mesh: &Mesh, node: PeerId, revocation: &Revocation) -> bool {
    mesh.node(node).revocations().any(|r| r == revocation)
}

/// The revocations `node` emitted for persistence and enforcement.
fn revoked_outputs(mesh: &Mesh, node: PeerId) -> Vec<Revocation> {
    mesh.effects
        .iter()
        .filter(|e| e.node == node)
        .filter_map(|e| match &e.output {
            Output::Revoked(revocation) => Some(revocation.clone()),
            _ => None,
        })
        .collect()
}

/// A revocations message from a peer, encoded.
fn revocations_message(list: Vec<Revocation>) -> Vec<u8> {
    wire::encode(&Message::Revocations(RevocationExchange::Set {
        list,
        answer: false,
    }))
    .expect("encodes")
}

#[test]
fn a_revocation_given_to_one_node_is_emitted_before_it_is_sent_and_reaches_every_node_at_once() {
    let (mut mesh, ids) = mesh_checking_revocations(5, 1);
    let revocation = revocation_of("mallory", 1_000);

    assert_eq!(mesh.node_mut(ids[0]).revoke(revocation.clone()), Ok(true));
    let outputs = mesh.take_outputs(ids[0]);
    assert_eq!(outputs.first(), Some(&Output::Revoked(revocation.clone())));
    assert_eq!(
        outputs.len(),
        ids.len(),
        "one output to persist, one push per other node: {outputs:?}"
    );
    for output in outputs {
        mesh.dispatch(ids[0], output);
    }
    let reached = mesh.run_until(Time::ZERO + ms(5), |mesh| {
        ids.iter().all(|id| holds(mesh, *id, &revocation))
    });

    assert!(reached.is_some(), "not everyone holds it after one hop");
    for id in &ids {
        assert_eq!(revoked_outputs(&mesh, *id), vec![revocation.clone()]);
    }
}

#[test]
fn a_node_that_missed_the_push_learns_the_revocation_by_anti_entropy() {
    let (mut mesh, ids) = mesh_checking_revocations(4, 2);
    let revocation = revocation_of("mallory", 1_000);
    mesh.isolated.insert(ids[3]);
    mesh.node_mut(ids[0])
        .revoke(revocation.clone())
        .expect("genuine");
    mesh.drain(ids[0]);
    mesh.run_for(ms(50));
    assert!(!holds(&mesh, ids[3], &revocation));

    mesh.isolated.clear();
    let limit = mesh.now + Duration::from_secs(10);
    let learned = mesh.run_until(limit, |mesh| holds(mesh, ids[3], &revocation));

    assert!(
        learned.is_some(),
        "the node that missed it never learned it"
    );
}

#[test]
fn a_node_that_comes_up_without_the_revocations_asks_the_first_member_it_sees_at_once() {
    let (mut mesh, ids) = mesh_checking_revocations(2, 8);
    mesh.run_for(Duration::from_secs(1));
    let revocation = revocation_of("mallory", 1_000);
    mesh.node_mut(ids[0])
        .revoke(revocation.clone())
        .expect("genuine");
    mesh.drain(ids[0]);
    mesh.run_for(ms(50));
    // What the members offer of their own accord (a push to a peer that
    // came up, an anti-entropy round) is lost: only an answer gets through.
    let back = peer(2);
    mesh.drop_rule = Some(Box::new(move |_, to, m| {
        to == back && matches!(m, Message::Revocations(RevocationExchange::Digest(_)))
    }));

    let id = mesh.add(2, 3);
    mesh.node_mut(id).set_revocation_verifier(Box::new(FakeCa));
    let now = mesh.now;
    mesh.node_mut(id).join(now, ids[0]);
    mesh.drain(id);
    let learned = mesh.run_until(now + ms(100), |mesh| holds(mesh, id, &revocation));

    assert!(learned.is_some(), "it waited for a round of its own");
}

#[test]
fn a_forged_revocation_from_a_member_is_refused_counted_and_ends_its_message() {
    let (mut mesh, ids) = mesh_checking_revocations(3, 3);
    let mut forged = revocation_of("peer-b", 1_000);
    forged.signature = b"signed by mallory".to_vec();
    let genuine_after_it = revocation_of("peer-c", 1_000);

    mesh.inject(
        ids[1],
        ids[0],
        &revocations_message(vec![forged.clone(), genuine_after_it.clone()]),
    );

    let node = mesh.node(ids[0]);
    assert_eq!(node.revocations().count(), 0);
    assert_eq!(node.stats().revocations_refused, 1);
    assert!(revoked_outputs(&mesh, ids[0]).is_empty());
    assert_eq!(
        mesh.node_mut(ids[0]).revoke(forged),
        Err(RevocationError::NotGenuine)
    );
}

#[test]
fn a_member_that_sent_a_forged_revocation_is_not_heard_on_revocations_until_its_cooldown_ends() {
    let (mut mesh, ids) = mesh_checking_revocations(3, 7);
    let mut forged = revocation_of("peer-b", 1_000);
    forged.signature = b"signed by mallory".to_vec();
    let genuine = revocation_of("mallory", 1_000);
    mesh.inject(ids[1], ids[0], &revocations_message(vec![forged]));

    mesh.inject(ids[1], ids[0], &revocations_message(vec![genuine.clone()]));
    assert_eq!(mesh.node(ids[0]).revocations().count(), 0);
    assert_eq!(mesh.node(ids[0]).stats().revocations_ignored, 1);
    mesh.inject(
        ids[2],
        ids[0],
        &revocations_message(vec![revocation_of("eve", 1_000)]),
    );
    assert_eq!(
        mesh.node(ids[0]).revocations().count(),
        1,
        "another member is heard"
    );

    mesh.now = mesh.now + REVOCATION_SENDER_COOLDOWN;
    mesh.inject(ids[1], ids[0], &revocations_message(vec![genuine.clone()]));
    let held: Vec<&Revocation> = mesh.node(ids[0]).revocations().collect();
    assert!(
        held.contains(&&genuine),
        "heard again after the cooldown: {held:?}"
    );
}

#[test]
fn a_genuine_revocation_refused_because_the_set_is_full_does_not_silence_its_sender() {
    let (mut mesh, ids) = mesh_checking_revocations(2, 9);
    let full: Vec<Revocation> = (0..REVOCATIONS_MAX)
        .map(|i| revocation_of(&format!("node-{i}"), 1_000))
        .collect();
    mesh.inject(ids[1], ids[0], &revocations_message(full));
    assert_eq!(mesh.node(ids[0]).revocations().count(), REVOCATIONS_MAX);

    let one_more = revocation_of("one-more", 1_000);
    let covering_more = revocation_of("node-0", 2_000);
    mesh.inject(
        ids[1],
        ids[0],
        &revocations_message(vec![one_more, covering_more.clone()]),
    );

    let node = mesh.node(ids[0]);
    assert_eq!(node.stats().revocations_refused, 1);
    assert_eq!(node.stats().revocations_ignored, 0);
    assert!(
        node.revocations().any(|r| *r == covering_more),
        "the rest of the message is read"
    );
}

#[test]
fn a_revocation_given_again_or_covered_by_one_held_changes_nothing() {
    let (mut mesh, ids) = mesh_checking_revocations(2, 4);
    let later = revocation_of("mallory", 2_000);
    let earlier = revocation_of("mallory", 1_000);
    mesh.node_mut(ids[0])
        .revoke(later.clone())
        .expect("genuine");
    mesh.drain(ids[0]);

    assert_eq!(mesh.node_mut(ids[0]).revoke(later.clone()), Ok(false));
    assert_eq!(mesh.node_mut(ids[0]).revoke(earlier), Ok(false));
    assert_eq!(mesh.take_outputs(ids[0]), Vec::new());
    let held: Vec<&Revocation> = mesh.node(ids[0]).revocations().collect();
    assert_eq!(held, vec![&later]);
}

#[test]
fn a_node_without_a_verifier_takes_no_revocation() {
    let (mut mesh, ids) = Mesh::running(2, 5);

    let refused = mesh
        .node_mut(ids[0])
        .revoke(revocation_of("mallory", 1_000));

    assert_eq!(refused, Err(RevocationError::NotGenuine));
    assert_eq!(mesh.node(ids[0]).revocations().count(), 0);
}

#[test]
fn a_revocation_of_a_member_takes_it_out_of_the_active_members_at_once_when_evicted() {
    let (mut mesh, ids) = mesh_checking_revocations(3, 6);
    assert!(mesh.members(ids[0]).contains(&ids[2]));

    let now = mesh.now;
    mesh.node_mut(ids[0]).evict(now, ids[2]);
    mesh.drain(ids[0]);

    assert!(!mesh.members(ids[0]).contains(&ids[2]));
}

/// A delta carrying `frontend`'s mode under `dot` (a forged write).
fn forged_value(frontend: &str, dot: Dot, wall_ms: u64) -> ConfigDelta {
    let mut delta = ConfigDelta::default();
    delta.context.insert(dot);
    delta.insert_entry(
        ObjectKey::Frontend(frontend_name(frontend)),
        FieldId::Mode,
        dot,
        Stamped {
            hlc: Hlc {
                wall_ms,
                logical: 0,
            },
            value: FieldValue::Mode(Mode::Tcp),
        },
    );
    delta
}

/// Whether every one of `ids` shows frontends "api" and "web", and none
/// holds anything of "evil".
fn api_and_web_everywhere_evil_nowhere(mesh: &Mesh, ids: &[PeerId]) -> bool {
    ids.iter()
        .all(|&p| mesh.has_frontend(p, "api") && mesh.has_frontend(p, "web"))
        && !anyone_holds(mesh, ids, "evil")
}

/// Whether any of `ids` holds an object named `frontend` at all.
fn anyone_holds(mesh: &Mesh, ids: &[PeerId], frontend: &str) -> bool {
    let key = ObjectKey::Frontend(frontend_name(frontend));
    ids.iter().any(|&p| {
        mesh.node(p)
            .replica()
            .full_state()
            .entries()
            .any(|(k, _, _, _)| *k == key)
    })
}

#[test]
fn a_value_forged_under_a_dot_the_replica_issued_is_removed_and_the_genuine_write_survives() {
    let (mut mesh, ids, issued) = mesh_after_one_write(3, 45);
    let (victim, receiver, forger) = (ids[0], ids[1], ids[2]);

    // The victim writes; its change is slow to reach the receiver, which
    // first takes a value forged under the victim's very dot, and passes
    // it on to everyone: the victim learns of it. Peers holding one value
    // refuse the other as a reused dot, until the victim writes its value
    // again under a fresh dot and removes the forged one.
    mesh.drop_rule = Some(Box::new(move |_, to, m| {
        to == receiver && matches!(m, Message::Broadcast { .. } | Message::SyncDelta { .. })
    }));
    mesh.execute(victim, &put_frontend("api", 81));
    mesh.run_for(ms(20));
    mesh.drop_rule = None;
    let next = Dot::new(replica_id(0), issued + 1).expect("valid");
    let id = Dot::new(replica_id(2), 1_000).expect("valid");
    let forged = forged_value("evil", next, mesh.wall_ms());
    mesh.inject(forger, receiver, &forged_broadcast(forger, id, forged));
    assert!(anyone_holds(&mesh, &[receiver], "evil"));

    mesh.run_until(mesh.now + Duration::from_secs(5), |mesh| {
        api_and_web_everywhere_evil_nowhere(mesh, &ids) && mesh.converged()
    })
    .expect("the genuine write everywhere, the forged value nowhere, and all converge");
    assert!(mesh.node(victim).stats().own_dots_claimed > 0);
}

#[test]
fn a_value_forged_under_a_replicas_unissued_dot_is_removed_by_that_replica() {
    let (mut mesh, ids, issued) = mesh_after_one_write(3, 46);
    let (victim, receiver, forger) = (ids[0], ids[1], ids[2]);
    let ahead = Dot::new(replica_id(0), issued + 100).expect("valid");
    let mut forged = forged_value("evil", ahead, mesh.wall_ms());
    forged
        .context
        .insert_interval(replica_id(0), issued + 1..=issued + 100);
    let id = Dot::new(replica_id(2), 1_000).expect("valid");
    mesh.inject(forger, receiver, &forged_broadcast(forger, id, forged));
    mesh.run_until(mesh.now + Duration::from_secs(5), |mesh| {
        mesh.node(victim).stats().own_dots_claimed > 0
            && !anyone_holds(mesh, &ids, "evil")
            && ids.iter().all(|&p| mesh.has_frontend(p, "web"))
            && mesh.converged()
    })
    .expect("the victim removes the value forged in its name everywhere");
}

/// Whether any of `ids` holds a value under `dot`.
fn anyone_holds_dot(mesh: &Mesh, ids: &[PeerId], dot: Dot) -> bool {
    ids.iter().any(|&p| {
        mesh.node(p)
            .replica()
            .full_state()
            .entries()
            .any(|(_, _, held, _)| held == dot)
    })
}

/// An anti-entropy answer carrying `delta`, which nobody relays.
fn sync_delta(delta: ConfigDelta) -> Vec<u8> {
    wire::encode(&Message::SyncDelta {
        delta,
        reply_to: None,
        sender_digest: Digest(0),
    })
    .expect("encodes")
}

#[test]
fn a_value_forged_under_a_replicas_next_dot_sent_to_one_peer_does_not_fork_the_mesh() {
    let (mut mesh, ids, issued) = mesh_after_one_write(5, 47);
    let (victim, receiver, forger) = (ids[0], ids[1], ids[4]);

    // The receiver takes a value under the victim's next dot, stamped
    // ahead of the victim's coming write (within the skew) so that it wins
    // wherever the two meet; then the victim writes under that very dot,
    // and every other peer takes the genuine value. Anti-entropy never
    // ships an entry for a dot both sides have seen: only the peers that
    // meet both values can end the fork.
    let next = Dot::new(replica_id(0), issued + 1).expect("valid");
    let forged = forged_value("evil", next, mesh.wall_ms() + 50);
    mesh.inject(forger, receiver, &sync_delta(forged));
    mesh.drain(receiver);
    assert!(anyone_holds(&mesh, &[receiver], "evil"));
    mesh.execute(victim, &put_frontend("api", 81));

    mesh.run_until(mesh.now + Duration::from_secs(5), |mesh| {
        api_and_web_everywhere_evil_nowhere(mesh, &ids)
            && !anyone_holds_dot(mesh, &ids, next)
            && mesh.converged()
    })
    .expect("the victim's write everywhere, nothing under the contested dot, and all converge");
    assert!(mesh.node(receiver).stats().dot_conflicts_resolved > 0);
    assert!(mesh.node(victim).stats().own_dots_claimed > 0);
}

#[test]
fn a_value_forged_under_a_replicas_next_dot_that_loses_to_its_write_is_dropped_where_taken() {
    let (mut mesh, ids, issued) = mesh_after_one_write(5, 48);
    let (victim, receiver, forger) = (ids[0], ids[1], ids[4]);

    // Stamped before the victim's coming write: the genuine value wins.
    let next = Dot::new(replica_id(0), issued + 1).expect("valid");
    let forged = forged_value("evil", next, mesh.wall_ms() - 1_000);
    mesh.inject(forger, receiver, &sync_delta(forged));
    mesh.drain(receiver);
    assert!(anyone_holds(&mesh, &[receiver], "evil"));
    mesh.execute(victim, &put_frontend("api", 81));

    mesh.run_until(mesh.now + Duration::from_secs(5), |mesh| {
        api_and_web_everywhere_evil_nowhere(mesh, &ids) && mesh.converged()
    })
    .expect("the victim's write everywhere, the forged value nowhere, and all converge");
    assert!(mesh.node(receiver).stats().dot_conflicts_resolved > 0);
}

#[test]
fn a_peer_meeting_two_values_under_one_dot_tells_the_sender_and_three_members_once() {
    let (mut mesh, ids) = Mesh::running(6, 49);
    mesh.run_for(ms(50));
    let (victim, receiver, forger) = (ids[0], ids[1], ids[5]);
    let written = mesh.execute(victim, &put_frontend("web", 80));
    mesh.run_until(mesh.now + ms(100), Mesh::converged)
        .expect("the mesh converges");
    let (_, _, dot, _) = written
        .entries()
        .find(|(_, field, _, _)| **field == FieldId::Mode)
        .expect("a frontend has a mode");
    let held = mesh
        .node(receiver)
        .replica()
        .live_entry(dot)
        .expect("the receiver holds the genuine mode");

    // Stamped before the genuine value: the receiver keeps its own.
    let forged = forged_value("evil", dot, WALL_EPOCH_MS);
    mesh.inject(forger, receiver, &sync_delta(forged.clone()));
    let told: BTreeSet<PeerId> = sends_in(&mesh.take_outputs(receiver))
        .into_iter()
        .filter_map(|(to, message)| match message {
            Message::SyncDelta {
                delta,
                reply_to: None,
                ..
            } if delta == held => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 4, "the sender and three others: {told:?}");
    assert!(told.contains(&forger));
    assert!(!told.contains(&receiver));
    assert_eq!(mesh.node(receiver).replica().live_entry(dot), Some(held));
    assert_eq!(mesh.node(receiver).stats().dot_conflicts_resolved, 1);

    mesh.inject(forger, receiver, &sync_delta(forged));
    assert!(
        sends_in(&mesh.take_outputs(receiver)).is_empty(),
        "a dot's conflict is announced once"
    );
    assert_eq!(mesh.node(receiver).stats().dot_conflicts_resolved, 2);
}
