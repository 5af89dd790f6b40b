//! The laws of the replicated document (DESIGN.md, "Data model and merge
//! semantics"), as property tests.
//!
//! Two levels are exercised:
//! - the generic [`DotStore`] over a tiny key space (objects `0..3`, fields
//!   `0..3`, `u32` values), driven by [`Node`], a test helper that builds
//!   deltas exactly as `Replica::commit` does: one fresh dot in the context
//!   plus every live dot the operation overwrites or removes;
//! - the real [`Replica`], driven by API [`Command`]s over a tiny key space
//!   (frontends `f0..f2`, backends `b0..b1` and their members, two
//!   registrations).
//!
//! Histories of 3–5 replicas issue random operations while deltas are
//! delivered in random order, duplicated or dropped; every delta and every
//! anti-entropy answer travels through the postcard wire format. Every
//! proptest run uses a fixed seed, so a run is reproducible; failure
//! persistence is off so that a failing run leaves no files behind (the fixed
//! seed reproduces it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::ops::Range;

use aqueduct::crdt::model::{
    Backend, BackendType, Balance, Binds, FieldId, FieldValue, Frontend, Health, Host, Keepalive,
    Lease, Member, MemberKey, MemberState, Meta, Mode, Name, Natives, ObjectKey, Port,
    Registration, RegistrationKey, Rules, ServiceName, Version, Weight,
};
use aqueduct::crdt::{
    Command, ConfigDelta, DOTS_PER_MS, Delta, Digest, Dot, DotSet, DotStore, Hlc, JoinError,
    Plausibility, Register, RemoteDeltaError, Replica, ReplicaId, Stamped, ViewPart,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{RngSeed, TestCaseError};
use serde::Serialize;
use serde::de::DeserializeOwned;

// ---------------------------------------------------------------------------
// Shared machinery: configuration, a seeded shuffler, the wire, a mesh.
// ---------------------------------------------------------------------------

/// Proptest's default configuration with a fixed seed and a capped number of
/// cases (the whole file must run in well under a minute in a debug build).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x00a9_0edc_7c2d_7001),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// SplitMix64: the delivery orders a test derives from its drawn seed.
struct Shuffler(u64);

impl Shuffler {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Turns a refusal that the property says cannot happen into a test failure.
fn accepted<T, E: Debug>(result: Result<T, E>, what: &str) -> Result<T, TestCaseError> {
    result.map_err(|e| TestCaseError::fail(format!("{what} was refused: {e:?}")))
}

/// Sends a value through the wire format (postcard) and back.
fn over_the_wire<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    value: &T,
) -> Result<T, TestCaseError> {
    let bytes = postcard::to_stdvec(value)
        .map_err(|e| TestCaseError::fail(format!("encoding failed: {e}")))?;
    let decoded: T = postcard::from_bytes(&bytes)
        .map_err(|e| TestCaseError::fail(format!("decoding a valid encoding failed: {e}")))?;
    prop_assert_eq!(&decoded, value, "the wire format changed the value");
    Ok(decoded)
}

fn replica_id(n: u64) -> ReplicaId {
    ReplicaId::new(n).expect("test replica ids are non-zero")
}

fn dot(replica: u64, counter: u64) -> Dot {
    Dot::new(replica_id(replica), counter).expect("test counters are non-zero")
}

/// What the delivery machinery needs from a replica, at either level.
trait Peer {
    type Delta: Clone + Debug + PartialEq + Serialize + DeserializeOwned;
    fn context(&self) -> &DotSet;
    fn accept(&mut self, delta: &Self::Delta) -> Result<bool, String>;
    fn missing_for(&self, peer: &DotSet) -> Self::Delta;
}

/// The fate of one delta at one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Not delivered yet.
    Pending,
    /// Delivered at least once (the origin counts as delivered).
    Delivered,
    /// Lost: only anti-entropy can bring its effect.
    Dropped,
}

/// One step of a history: a replica acts, or the network does something.
#[derive(Clone, Debug)]
enum Step<A> {
    Act { at: Index, action: A },
    Net(Net),
}

#[derive(Clone, Debug)]
enum Net {
    /// Deliver one pending delta to `to`.
    Deliver { to: Index, pick: Index },
    /// Deliver again a delta `to` already has (a duplicate).
    Redeliver { to: Index, pick: Index },
    /// Lose one pending delta on its way to `to`.
    Drop { to: Index, pick: Index },
}

fn net() -> impl Strategy<Value = Net> {
    prop_oneof![
        6 => (any::<Index>(), any::<Index>()).prop_map(|(to, pick)| Net::Deliver { to, pick }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(to, pick)| Net::Redeliver { to, pick }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(to, pick)| Net::Drop { to, pick }),
    ]
}

fn steps<A: Clone + Debug>(
    action: impl Strategy<Value = A>,
    len: Range<usize>,
) -> impl Strategy<Value = Vec<Step<A>>> {
    prop::collection::vec(
        prop_oneof![
            (any::<Index>(), action).prop_map(|(at, action)| Step::Act { at, action }),
            net().prop_map(Step::Net),
        ],
        len,
    )
}

/// Replicas, every delta they issued, and each delta's fate at each replica.
struct Mesh<P: Peer> {
    peers: Vec<P>,
    log: Vec<(usize, P::Delta)>,
    fate: Vec<Vec<Fate>>,
    shuffler: Shuffler,
}

impl<P: Peer> Mesh<P> {
    fn new(peers: Vec<P>, seed: u64) -> Self {
        let fate = vec![Vec::new(); peers.len()];
        Mesh {
            peers,
            log: Vec::new(),
            fate,
            shuffler: Shuffler(seed),
        }
    }

    /// Records a delta issued (and already applied) at `origin`; it goes
    /// through the wire once, and every delivery uses the decoded copy.
    fn broadcast(&mut self, origin: usize, delta: &P::Delta) -> Result<(), TestCaseError> {
        let decoded = over_the_wire(delta)?;
        for (replica, fates) in self.fate.iter_mut().enumerate() {
            fates.push(if replica == origin {
                Fate::Delivered
            } else {
                Fate::Pending
            });
        }
        self.log.push((origin, decoded));
        Ok(())
    }

    fn pick(&self, to: usize, pick: &Index, fate: Fate) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.log.len())
            .filter(|&i| self.fate[to][i] == fate)
            .collect();
        (!candidates.is_empty()).then(|| candidates[pick.index(candidates.len())])
    }

    fn deliver(&mut self, to: usize, i: usize) -> Result<bool, TestCaseError> {
        let changed = accepted(self.peers[to].accept(&self.log[i].1), "a delivered delta")?;
        self.fate[to][i] = Fate::Delivered;
        Ok(changed)
    }

    fn network(&mut self, net: &Net) -> Result<(), TestCaseError> {
        let n = self.peers.len();
        match net {
            Net::Deliver { to, pick } => {
                let to = to.index(n);
                if let Some(i) = self.pick(to, pick, Fate::Pending) {
                    self.deliver(to, i)?;
                }
            }
            Net::Redeliver { to, pick } => {
                let to = to.index(n);
                if let Some(i) = self.pick(to, pick, Fate::Delivered) {
                    let changed = self.deliver(to, i)?;
                    prop_assert!(!changed, "a duplicate delivery changed the state");
                }
            }
            Net::Drop { to, pick } => {
                let to = to.index(n);
                if let Some(i) = self.pick(to, pick, Fate::Pending) {
                    self.fate[to][i] = Fate::Dropped;
                }
            }
        }
        Ok(())
    }

    /// Delivers every pending (not dropped) delta, each replica in its own
    /// random order.
    fn deliver_pending(&mut self) -> Result<(), TestCaseError> {
        for to in 0..self.peers.len() {
            let mut pending: Vec<usize> = (0..self.log.len())
                .filter(|&i| self.fate[to][i] == Fate::Pending)
                .collect();
            self.shuffler.shuffle(&mut pending);
            for i in pending {
                self.deliver(to, i)?;
            }
        }
        Ok(())
    }

    /// Anti-entropy: every replica asks every other for `missing_for(its
    /// context)`, in random pair order, until nothing changes. Returns the
    /// number of rounds that changed something.
    fn anti_entropy(&mut self) -> Result<usize, TestCaseError> {
        let n = self.peers.len();
        let mut pairs: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (0..n).map(move |b| (a, b)))
            .filter(|(a, b)| a != b)
            .collect();
        for round in 0..=n {
            self.shuffler.shuffle(&mut pairs);
            let mut changed = false;
            for &(from, to) in &pairs {
                let answer =
                    over_the_wire(&self.peers[from].missing_for(self.peers[to].context()))?;
                changed |= accepted(self.peers[to].accept(&answer), "an anti-entropy answer")?;
            }
            if !changed {
                return Ok(round);
            }
        }
        Err(TestCaseError::fail("anti-entropy did not reach a fixpoint"))
    }

    /// Every issued delta, shuffled, with about a third of them duplicated.
    fn shuffled_with_duplicates(&mut self) -> Vec<P::Delta> {
        let mut all: Vec<P::Delta> = self.log.iter().map(|(_, d)| d.clone()).collect();
        let extra: Vec<P::Delta> = all
            .iter()
            .filter(|_| self.shuffler.chance(33))
            .cloned()
            .collect();
        all.extend(extra);
        self.shuffler.shuffle(&mut all);
        all
    }
}

// ---------------------------------------------------------------------------
// Generic level: DotStore<u8, u8, u32> and the Node helper.
// ---------------------------------------------------------------------------

type Store = DotStore<u8, u8, u32>;
type StoreDelta = Delta<u8, u8, u32>;

const OBJECTS: u8 = 3;
const FIELDS: u8 = 3;

/// An operation on the generic store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Write {
        obj: u8,
        field: u8,
        value: u32,
    },
    RemoveField {
        obj: u8,
        field: u8,
    },
    /// Removes every field of the object; a later write re-creates it.
    RemoveObject {
        obj: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..OBJECTS, 0..FIELDS, 0..4u32)
            .prop_map(|(obj, field, value)| Op::Write { obj, field, value }),
        2 => (0..OBJECTS, 0..FIELDS).prop_map(|(obj, field)| Op::RemoveField { obj, field }),
        2 => (0..OBJECTS).prop_map(|obj| Op::RemoveObject { obj }),
    ]
}

/// One replica of the generic store.
#[derive(Clone, Debug)]
struct Node {
    id: ReplicaId,
    store: Store,
    clock: Hlc,
}

/// What an issued operation was, as its issuer saw it.
#[derive(Clone, Debug)]
struct Issued {
    op: Op,
    /// The dot the operation minted (a pure removal mints one too).
    dot: Dot,
    /// Every dot the issuer had seen just before issuing.
    issuer_context: DotSet,
    /// The live dots the operation overwrote or removed.
    superseded: DotSet,
}

impl Node {
    fn new(n: u64) -> Self {
        Node {
            id: replica_id(n),
            store: Store::default(),
            clock: Hlc::default(),
        }
    }

    /// Issues `op` the way `Replica::commit` builds a delta, and joins it
    /// locally. `None` when there is nothing to remove.
    fn issue(&mut self, op: Op) -> Result<Option<(StoreDelta, Issued)>, JoinError> {
        let superseded: DotSet = match op {
            Op::Write { obj, field, .. } | Op::RemoveField { obj, field } => {
                self.store.field_dots(&obj, &field).collect()
            }
            Op::RemoveObject { obj } => self.store.object_dots(&obj).collect(),
        };
        if superseded.is_empty() && !matches!(op, Op::Write { .. }) {
            return Ok(None);
        }
        let issuer_context = self.store.context().clone();
        let next = self.store.context().max_counter(self.id) + 1;
        let dot = Dot::new(self.id, next).expect("a counter plus one is never 0");
        let mut delta = StoreDelta {
            context: superseded.clone(),
            ..StoreDelta::default()
        };
        delta.context.insert(dot);
        if let Op::Write { obj, field, value } = op {
            self.clock = Hlc::next(self.clock, 0);
            delta.insert_entry(
                obj,
                field,
                dot,
                Stamped {
                    hlc: self.clock,
                    value,
                },
            );
        }
        self.store.join(&delta)?;
        let issued = Issued {
            op,
            dot,
            issuer_context,
            superseded,
        };
        Ok(Some((delta, issued)))
    }

    /// Issues an operation in a targeted test, where it must succeed.
    fn run(&mut self, op: Op) -> StoreDelta {
        self.issue(op)
            .expect("a locally built delta is valid")
            .expect("the operation has something to do")
            .0
    }

    fn receive(&mut self, delta: &StoreDelta) {
        self.store.join(delta).expect("a valid delta is accepted");
    }

    /// The values of `obj.field`, all concurrent ones.
    fn values(&self, obj: u8, field: u8) -> BTreeSet<u32> {
        self.store
            .objects()
            .get(&obj)
            .and_then(|fields| fields.get(&field))
            .map(|register| register.values().map(|s| s.value).collect())
            .unwrap_or_default()
    }

    fn fields(&self, obj: u8) -> BTreeSet<u8> {
        self.store
            .objects()
            .get(&obj)
            .map(|fields| fields.keys().copied().collect())
            .unwrap_or_default()
    }
}

impl Peer for Node {
    type Delta = StoreDelta;
    fn context(&self) -> &DotSet {
        self.store.context()
    }
    fn accept(&mut self, delta: &StoreDelta) -> Result<bool, String> {
        self.store
            .join(delta)
            .map(|joined| joined.changed)
            .map_err(|e| e.to_string())
    }
    fn missing_for(&self, peer: &DotSet) -> StoreDelta {
        self.store.missing_for(peer)
    }
}

/// A random history over the generic store.
#[derive(Clone, Debug)]
struct Script {
    replicas: usize,
    steps: Vec<Step<Op>>,
    seed: u64,
}

fn script() -> impl Strategy<Value = Script> {
    (3usize..=5, steps(op(), 10..70), any::<u64>()).prop_map(|(replicas, steps, seed)| Script {
        replicas,
        steps,
        seed,
    })
}

/// A played history: the mesh, and what each logged delta was
/// (`issued[i]` describes `mesh.log[i]`).
struct History {
    mesh: Mesh<Node>,
    issued: Vec<Issued>,
}

impl History {
    fn play(script: &Script) -> Result<History, TestCaseError> {
        Self::play_checking(script, |_| Ok(()))
    }

    /// Plays `script`, calling `check` after every step.
    fn play_checking(
        script: &Script,
        mut check: impl FnMut(&History) -> Result<(), TestCaseError>,
    ) -> Result<History, TestCaseError> {
        let nodes = (1..=script.replicas as u64).map(Node::new).collect();
        let mut history = History {
            mesh: Mesh::new(nodes, script.seed),
            issued: Vec::new(),
        };
        for step in &script.steps {
            match step {
                Step::Act { at, action } => {
                    let at = at.index(script.replicas);
                    let issued =
                        accepted(history.mesh.peers[at].issue(*action), "a local operation")?;
                    if let Some((delta, issued)) = issued {
                        history.mesh.broadcast(at, &delta)?;
                        history.issued.push(issued);
                    }
                }
                Step::Net(net) => history.mesh.network(net)?,
            }
            check(&history)?;
        }
        Ok(history)
    }

    fn store(&self, i: usize) -> &Store {
        &self.mesh.peers[i].store
    }
}

/// A store's observable state: entries and context, and its digest.
fn state(store: &Store) -> (StoreDelta, u128) {
    (store.full_state(), store.digest())
}

/// `a ⊔ b`, as a full-state join.
fn join(a: &Store, b: &Store) -> Result<Store, TestCaseError> {
    let mut out = a.clone();
    accepted(out.join(&b.full_state()), "a full state")?;
    Ok(out)
}

/// A delta as a state of its own (the lattice element it stands for).
fn as_store(delta: &StoreDelta) -> Result<Store, TestCaseError> {
    let mut store = Store::default();
    accepted(store.join(delta), "a delta into an empty store")?;
    Ok(store)
}

/// Live entries as `(object, field) -> dot -> value`.
fn entries(store: &Store) -> BTreeMap<(u8, u8), BTreeMap<Dot, u32>> {
    let mut out: BTreeMap<(u8, u8), BTreeMap<Dot, u32>> = BTreeMap::new();
    for (obj, fields) in store.objects() {
        for (field, register) in fields {
            for (dot, stamped) in register {
                out.entry((*obj, *field))
                    .or_default()
                    .insert(*dot, stamped.value);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn state_join_is_commutative(script in script()) {
        let h = History::play(&script)?;
        let (a, b) = (h.store(0), h.store(1));
        prop_assert_eq!(state(&join(a, b)?), state(&join(b, a)?));
    }

    #[test]
    fn state_join_is_associative(script in script()) {
        let h = History::play(&script)?;
        let (a, b, c) = (h.store(0), h.store(1), h.store(2));
        prop_assert_eq!(state(&join(&join(a, b)?, c)?), state(&join(a, &join(b, c)?)?));
    }

    #[test]
    fn state_join_is_idempotent(script in script()) {
        let h = History::play(&script)?;
        for node in &h.mesh.peers {
            let mut again = node.store.clone();
            let joined = accepted(again.join(&node.store.full_state()), "a store's own state")?;
            prop_assert!(!joined.changed, "joining a store with itself reported a change");
            prop_assert_eq!(state(&again), state(&node.store));
        }
    }

    #[test]
    fn delta_join_is_commutative(script in script(), d1: Index, d2: Index) {
        let h = History::play(&script)?;
        prop_assume!(!h.mesh.log.is_empty());
        let (d1, d2) = (&h.mesh.log[d1.index(h.mesh.log.len())].1, &h.mesh.log[d2.index(h.mesh.log.len())].1);
        let base = h.store(0);
        let mut one_two = base.clone();
        let mut two_one = base.clone();
        accepted(one_two.join(d1), "d1")?;
        accepted(one_two.join(d2), "d2")?;
        accepted(two_one.join(d2), "d2")?;
        accepted(two_one.join(d1), "d1")?;
        prop_assert_eq!(state(&one_two), state(&two_one));
    }

    #[test]
    fn delta_join_is_associative(script in script(), picks: [Index; 3]) {
        let h = History::play(&script)?;
        prop_assume!(!h.mesh.log.is_empty());
        let [d1, d2, d3] = picks.map(|p| &h.mesh.log[p.index(h.mesh.log.len())].1);
        let base = h.store(0);
        // (((s ⊔ d1) ⊔ d2) ⊔ d3) against (s ⊔ d1) ⊔ (d2 ⊔ d3).
        let mut left = base.clone();
        for d in [d1, d2, d3] {
            accepted(left.join(d), "a delta")?;
        }
        let mut right = base.clone();
        accepted(right.join(d1), "d1")?;
        let d2_d3 = join(&as_store(d2)?, &as_store(d3)?)?;
        let right = join(&right, &d2_d3)?;
        prop_assert_eq!(state(&left), state(&right));
    }

    #[test]
    fn a_join_reports_exactly_the_live_entries_it_removed(script in script(), pick: Index) {
        let h = History::play(&script)?;
        prop_assume!(!h.mesh.log.is_empty());
        let delta = &h.mesh.log[pick.index(h.mesh.log.len())].1;
        for node in &h.mesh.peers {
            let mut store = node.store.clone();
            let before = store.full_state();
            let joined = accepted(store.join(delta), "a delta")?;
            let mut removed = joined.removed;
            removed.sort_by_key(|(_, _, dot, _)| *dot);
            let mut gone: Vec<_> = before
                .entries()
                .filter(|(_, _, dot, _)| store.entry(*dot).is_none())
                .map(|(key, field, dot, stamped)| (*key, *field, dot, stamped.clone()))
                .collect();
            gone.sort_by_key(|(_, _, dot, _)| *dot);
            prop_assert_eq!(removed, gone);
        }
    }

    #[test]
    fn delta_join_is_idempotent(script in script(), pick: Index) {
        let h = History::play(&script)?;
        prop_assume!(!h.mesh.log.is_empty());
        let delta = &h.mesh.log[pick.index(h.mesh.log.len())].1;
        for node in &h.mesh.peers {
            let mut once = node.store.clone();
            accepted(once.join(delta), "a delta")?;
            let mut twice = once.clone();
            let joined = accepted(twice.join(delta), "the same delta again")?;
            prop_assert!(!joined.changed, "a redelivered delta reported a change");
            prop_assert_eq!(state(&once), state(&twice));
        }
    }

    #[test]
    fn the_running_size_is_the_encoded_size_of_the_live_entries(script in script()) {
        let h = History::play(&script)?;
        for node in &h.mesh.peers {
            let mut encoded = 0;
            for (key, fields) in node.store.objects() {
                for (field, register) in fields {
                    for (dot, stamped) in register.iter() {
                        let entry = postcard::to_stdvec(&(key, field, dot, stamped))
                            .expect("entries encode");
                        encoded += entry.len() as u64;
                    }
                }
            }
            prop_assert_eq!(node.store.entries_bytes(), encoded);
            let rebuilt = as_store(&node.store.full_state())?;
            prop_assert_eq!(rebuilt.entries_bytes(), encoded);
        }
    }

    #[test]
    fn digest_depends_only_on_the_state_not_on_how_it_was_reached(script in script()) {
        let h = History::play(&script)?;
        for node in &h.mesh.peers {
            let rebuilt = as_store(&node.store.full_state())?;
            prop_assert_eq!(rebuilt.digest(), node.store.digest());
        }
    }

    #[test]
    fn deltas_in_any_order_with_duplicates_give_the_full_state_join_of_all_replicas(
        script in script(),
    ) {
        let mut h = History::play(&script)?;
        let mut everything = Store::default();
        for node in &h.mesh.peers {
            everything = join(&everything, &node.store)?;
        }
        for _ in 0..3 {
            let mut fresh = Store::default();
            for delta in h.mesh.shuffled_with_duplicates() {
                accepted(fresh.join(&delta), "a delta")?;
            }
            prop_assert_eq!(state(&fresh), state(&everything));
        }
    }

    #[test]
    fn anti_entropy_alone_repairs_drops_and_converges(script in script()) {
        let mut h = History::play(&script)?;
        let mut everything = Store::default();
        for node in &h.mesh.peers {
            everything = join(&everything, &node.store)?;
        }
        // No pending delta is delivered: missing_for exchanges only.
        h.mesh.anti_entropy()?;
        for node in &h.mesh.peers {
            prop_assert_eq!(state(&node.store), state(&everything));
        }
    }

    #[test]
    fn missing_for_repairs_exactly_like_a_full_state_join(script in script()) {
        let h = History::play(&script)?;
        let n = h.mesh.peers.len();
        for from in 0..n {
            for to in 0..n {
                let (source, target) = (h.store(from), h.store(to));
                let mut repaired = target.clone();
                let answer = over_the_wire(&source.missing_for(target.context()))?;
                accepted(repaired.join(&answer), "a missing_for answer")?;
                prop_assert_eq!(state(&repaired), state(&join(target, source)?));
            }
        }
    }

    #[test]
    fn missing_for_peer_repairs_exactly_like_a_full_state_join(script in script()) {
        let h = History::play(&script)?;
        let n = h.mesh.peers.len();
        for from in 0..n {
            for to in 0..n {
                let (source, target) = (h.store(from), h.store(to));
                let mut repaired = target.clone();
                let summary = over_the_wire(&target.summary())?;
                let answer = over_the_wire(&source.missing_for_peer(&summary, usize::MAX).delta)?;
                accepted(repaired.join(&answer), "a missing_for_peer answer")?;
                prop_assert_eq!(state(&repaired), state(&join(target, source)?));
            }
        }
    }

    /// The dot oracle: after convergence, a write survives iff no operation
    /// issued at a replica that had observed the write's dot overwrote or
    /// removed it.
    #[test]
    fn a_write_survives_iff_no_operation_that_saw_it_replaced_it(script in script()) {
        let mut h = History::play(&script)?;
        h.mesh.deliver_pending()?;
        h.mesh.anti_entropy()?;
        let superseded: DotSet = h.issued.iter().fold(DotSet::new(), |mut all, i| {
            all.union_with(&i.superseded);
            all
        });
        let mut expected: BTreeMap<(u8, u8), BTreeMap<Dot, u32>> = BTreeMap::new();
        for issued in &h.issued {
            if let Op::Write { obj, field, value } = issued.op
                && !superseded.contains(issued.dot)
            {
                expected.entry((obj, field)).or_default().insert(issued.dot, value);
            }
        }
        for node in &h.mesh.peers {
            prop_assert_eq!(&entries(&node.store), &expected);
        }
    }

    /// At every moment, a replica that has received a removal (or
    /// overwrite) never shows a value that removal took away; after
    /// anti-entropy, no replica does. (Merely knowing the removal's dot is
    /// not enough: a later delta's context may name it without carrying
    /// its effect, which arrives with the delta itself or by anti-entropy.)
    #[test]
    fn removed_values_never_come_back(script in script()) {
        let check = |h: &History, converged: bool| -> Result<(), TestCaseError> {
            for (k, issued) in h.issued.iter().enumerate() {
                for (n, node) in h.mesh.peers.iter().enumerate() {
                    if !converged && h.mesh.fate[n][k] != Fate::Delivered {
                        continue;
                    }
                    for (_, reg) in entries(&node.store) {
                        for dot in reg.keys() {
                            prop_assert!(
                                !issued.superseded.contains(*dot),
                                "replica {} saw {:?} ({}) yet shows the value {} it removed",
                                n, issued.op, issued.dot, dot
                            );
                        }
                    }
                }
            }
            Ok(())
        };
        let mut h = History::play_checking(&script, |h| check(h, false))?;
        h.mesh.anti_entropy()?;
        check(&h, true)?;
    }

    /// After convergence, an object its remover had fully seen stays gone;
    /// what remains of a removed object comes only from writes the remover
    /// had not seen (concurrent or later).
    #[test]
    fn a_removed_object_reappears_only_through_writes_its_remover_had_not_seen(
        script in script(),
    ) {
        let mut h = History::play(&script)?;
        h.mesh.deliver_pending()?;
        h.mesh.anti_entropy()?;
        let live = entries(h.store(0));
        for issued in &h.issued {
            let Op::RemoveObject { obj } = issued.op else { continue };
            for ((o, field), register) in &live {
                if *o != obj {
                    continue;
                }
                for dot in register.keys() {
                    prop_assert!(
                        !issued.issuer_context.contains(*dot),
                        "object {} field {} came back with {}, which its remover {} had seen",
                        obj, field, dot, issued.dot
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Generic level: targeted semantics.
// ---------------------------------------------------------------------------

#[test]
fn concurrent_writes_to_different_fields_both_survive() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    let from_a = a.run(Op::Write {
        obj: 0,
        field: 0,
        value: 10,
    });
    let from_b = b.run(Op::Write {
        obj: 0,
        field: 1,
        value: 20,
    });
    a.receive(&from_b);
    b.receive(&from_a);
    for node in [&a, &b] {
        assert_eq!(node.values(0, 0), BTreeSet::from([10]));
        assert_eq!(node.values(0, 1), BTreeSet::from([20]));
    }
    assert_eq!(state(&a.store), state(&b.store));
}

#[test]
fn concurrent_writes_to_one_field_are_all_kept_until_a_write_that_saw_them() {
    let (mut a, mut b, mut c) = (Node::new(1), Node::new(2), Node::new(3));
    let from_a = a.run(Op::Write {
        obj: 0,
        field: 0,
        value: 10,
    });
    let from_b = b.run(Op::Write {
        obj: 0,
        field: 0,
        value: 20,
    });
    a.receive(&from_b);
    b.receive(&from_a);
    assert_eq!(a.values(0, 0), BTreeSet::from([10, 20]));
    assert_eq!(b.values(0, 0), BTreeSet::from([10, 20]));

    // C has seen only A's write: its overwrite leaves B's concurrent value.
    c.receive(&from_a);
    let from_c = c.run(Op::Write {
        obj: 0,
        field: 0,
        value: 30,
    });
    b.receive(&from_c);
    assert_eq!(b.values(0, 0), BTreeSet::from([20, 30]));

    // A write that has seen both collapses the register.
    let from_b2 = b.run(Op::Write {
        obj: 0,
        field: 0,
        value: 40,
    });
    for delta in [&from_c, &from_b2] {
        a.receive(delta);
    }
    for delta in [&from_b, &from_b2] {
        c.receive(delta);
    }
    for node in [&a, &b, &c] {
        assert_eq!(node.values(0, 0), BTreeSet::from([40]));
    }
}

#[test]
fn a_field_removal_concurrent_with_a_write_to_it_keeps_the_write() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    let first = a.run(Op::Write {
        obj: 0,
        field: 0,
        value: 1,
    });
    b.receive(&first);
    let removal = a.run(Op::RemoveField { obj: 0, field: 0 });
    let write = b.run(Op::Write {
        obj: 0,
        field: 0,
        value: 2,
    });
    a.receive(&write);
    b.receive(&removal);
    for node in [&a, &b] {
        assert_eq!(node.values(0, 0), BTreeSet::from([2]));
    }
}

#[test]
fn an_object_removal_concurrent_with_a_field_write_keeps_only_the_written_field() {
    let (mut a, mut b, mut late) = (Node::new(1), Node::new(2), Node::new(3));
    let f0 = a.run(Op::Write {
        obj: 0,
        field: 0,
        value: 1,
    });
    let f1 = a.run(Op::Write {
        obj: 0,
        field: 1,
        value: 1,
    });
    let f2 = a.run(Op::Write {
        obj: 0,
        field: 2,
        value: 1,
    });
    for delta in [&f0, &f1, &f2] {
        b.receive(delta);
    }
    let removal = a.run(Op::RemoveObject { obj: 0 });
    let update = b.run(Op::Write {
        obj: 0,
        field: 1,
        value: 2,
    });
    a.receive(&update);
    b.receive(&removal);
    // A replica that hears of the removal before anything else.
    for delta in [&removal, &update, &f2, &f1, &f0] {
        late.receive(delta);
    }
    for node in [&a, &b, &late] {
        assert_eq!(node.fields(0), BTreeSet::from([1]));
        assert_eq!(node.values(0, 1), BTreeSet::from([2]));
    }
    assert_eq!(state(&a.store), state(&b.store));
    assert_eq!(state(&b.store), state(&late.store));
}

#[test]
fn a_replica_that_missed_a_removal_is_repaired_by_missing_for_alone() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    let write = a.run(Op::Write {
        obj: 0,
        field: 0,
        value: 1,
    });
    b.receive(&write);
    let _lost = a.run(Op::RemoveObject { obj: 0 });
    let answer = a.store.missing_for(b.store.context());
    assert!(answer.objects.is_empty(), "nothing live is missing");
    b.receive(&answer);
    assert!(
        b.fields(0).is_empty(),
        "the missed removal was not repaired"
    );
    assert_eq!(state(&a.store), state(&b.store));
}

#[test]
fn a_replica_that_missed_an_overwrite_is_repaired_by_missing_for_alone() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    let write = a.run(Op::Write {
        obj: 0,
        field: 0,
        value: 1,
    });
    b.receive(&write);
    let _seen_by_b_only = b.run(Op::Write {
        obj: 0,
        field: 1,
        value: 7,
    });
    let _lost = a.run(Op::Write {
        obj: 0,
        field: 0,
        value: 2,
    });
    b.receive(&a.store.missing_for(b.store.context()));
    a.receive(&b.store.missing_for(a.store.context()));
    assert_eq!(b.values(0, 0), BTreeSet::from([2]));
    assert_eq!(a.values(0, 1), BTreeSet::from([7]));
    assert_eq!(state(&a.store), state(&b.store));
}

/// Under out-of-order delivery two replicas can have the same causal context
/// and still differ: here B learns of A's second write only through the
/// context of A's third, which does not name the first. Anti-entropy must
/// therefore not stop at equal contexts; `missing_for` repairs this case.
#[test]
fn missing_for_repairs_a_replica_whose_context_already_covers_everything() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    let first = a.run(Op::Write {
        obj: 0,
        field: 0,
        value: 1,
    });
    b.receive(&first);
    let _lost = a.run(Op::Write {
        obj: 0,
        field: 0,
        value: 2,
    });
    let third = a.run(Op::Write {
        obj: 0,
        field: 0,
        value: 3,
    });
    b.receive(&third);
    assert_eq!(a.store.context(), b.store.context());
    assert_eq!(b.values(0, 0), BTreeSet::from([1, 3]));
    assert_ne!(
        a.store.digest(),
        b.store.digest(),
        "the digest tells them apart"
    );

    let answer = a.store.missing_for(b.store.context());
    b.receive(&answer);
    assert_eq!(b.values(0, 0), BTreeSet::from([3]));
    assert_eq!(state(&a.store), state(&b.store));
}

// ---------------------------------------------------------------------------
// Generic level: invalid input never enters the state.
// ---------------------------------------------------------------------------

/// What a forged delta changes while reusing a live dot.
#[derive(Clone, Copy, Debug)]
enum Forgery {
    Value,
    Field,
    Object,
}

fn forgery() -> impl Strategy<Value = Forgery> {
    prop_oneof![
        Just(Forgery::Value),
        Just(Forgery::Field),
        Just(Forgery::Object),
    ]
}

/// The `(object, field, value)` the `i`-th forgery puts under a dot that
/// holds `value` at `at` (two forgeries of one kind differ).
fn forged_entry((obj, field): (u8, u8), value: u32, forgery: Forgery, i: usize) -> (u8, u8, u32) {
    let step = u8::try_from(i).expect("a few forgeries") + 1;
    match forgery {
        Forgery::Value => (obj, field, value + u32::from(step)),
        Forgery::Field => (obj, (field + step) % FIELDS, value),
        Forgery::Object => ((obj + step) % OBJECTS, field, value),
    }
}

/// A delta carrying one entry under `dot`.
fn entry_under(dot: Dot, (obj, field, value): (u8, u8, u32), hlc: Hlc) -> StoreDelta {
    let mut delta = StoreDelta::default();
    delta.context.insert(dot);
    delta.insert_entry(obj, field, dot, Stamped { hlc, value });
    delta
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn two_entries_under_one_dot_resolve_to_the_same_state_in_any_order(
        script in script(),
        pick: Index,
        forgeries in proptest::array::uniform2((forgery(), 0..3u32)),
    ) {
        let h = History::play(&script)?;
        let store = h.store(0);
        let live: Vec<((u8, u8), Dot, u32)> = entries(store)
            .into_iter()
            .flat_map(|(at, reg)| reg.into_iter().map(move |(d, v)| (at, d, v)))
            .collect();
        prop_assume!(!live.is_empty());
        let (at, reused, value) = live[pick.index(live.len())];
        let held = store.objects()[&at.0][&at.1][&reused].hlc;
        // Two forged entries under the dot, each stamped just before, at or
        // just after the genuine one: every way the order can go.
        let forged: Vec<StoreDelta> = forgeries
            .iter()
            .enumerate()
            .map(|(i, &(forgery, shift))| {
                let hlc = Hlc {
                    wall_ms: held.wall_ms,
                    logical: (held.logical + shift).saturating_sub(1),
                };
                entry_under(reused, forged_entry(at, value, forgery, i), hlc)
            })
            .collect();
        let genuine = store.full_state();
        let all = [genuine.clone(), forged[0].clone(), forged[1].clone()];
        let expected = all
            .iter()
            .map(|delta| delta.entries().find(|e| e.2 == reused).expect("carried"))
            .max_by_key(|&(obj, field, _, stamped)| {
                let bytes = postcard::to_stdvec(&(obj, field, stamped.value)).expect("encodes");
                (stamped.hlc, bytes)
            })
            .map(|(obj, field, _, stamped)| ((*obj, *field), stamped.value))
            .expect("three entries");

        let mut states = Vec::new();
        for order in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let mut target = Store::default();
            for i in order {
                accepted(target.join(&all[i]), "a conflicting entry")?;
            }
            for delta in &all {
                prop_assert_eq!(target.join(delta).map(|joined| joined.changed), Ok(false), "joining again changes nothing");
            }
            states.push(state(&target));
        }
        prop_assert!(states.windows(2).all(|w| w[0] == w[1]), "every order gives one state");
        let mut resolved = Store::default();
        accepted(resolved.join(&states[0].0), "the resolved state")?;
        let under: Vec<((u8, u8), u32)> = entries(&resolved)
            .into_iter()
            .flat_map(|(at, reg)| reg.into_iter().filter(|(d, _)| *d == reused).map(move |(_, v)| (at, v)))
            .collect();
        prop_assert_eq!(under, vec![expected], "the entry that outranks the others, alone");
        prop_assert_eq!(resolved.context(), store.context());
    }

    #[test]
    fn a_value_under_a_dot_seen_and_removed_is_ignored(
        script in script(),
        forgery in forgery(),
    ) {
        let h = History::play(&script)?;
        let store = h.store(0);
        let live: BTreeSet<Dot> = entries(store).into_values().flat_map(BTreeMap::into_keys).collect();
        let removed = store
            .context()
            .ranges()
            .flat_map(|(replica, range)| range.map(move |counter| dot(replica.get(), counter)))
            .find(|dot| !live.contains(dot));
        prop_assume!(removed.is_some());
        let removed = removed.expect("checked");
        let latest = Hlc { wall_ms: Hlc::WALL_MS_MAX, logical: u32::MAX };
        let forged = entry_under(removed, forged_entry((0, 0), 0, forgery, 0), latest);
        let mut target = store.clone();
        prop_assert_eq!(target.join(&forged).map(|joined| joined.changed), Ok(false));
        prop_assert_eq!(state(&target), state(store));
    }

    #[test]
    fn a_delta_with_an_entry_outside_its_context_is_refused_and_changes_nothing(
        script in script(),
        pick: Index,
    ) {
        let h = History::play(&script)?;
        prop_assume!(!h.mesh.log.is_empty());
        let (_, delta) = &h.mesh.log[pick.index(h.mesh.log.len())];
        let Some((_, _, carried, _)) = delta.entries().next() else {
            return Ok(());
        };
        // Keep the entry, drop its dot from the context (and also remove
        // everything the delta would have removed, to tempt a half-apply).
        let mut forged = delta.clone();
        forged.context = delta.context.difference(&[carried].into_iter().collect());
        for node in &h.mesh.peers {
            let mut target = node.store.clone();
            prop_assert_eq!(target.join(&forged), Err(JoinError::EntryOutsideContext(carried)));
            prop_assert_eq!(state(&target), state(&node.store));
        }
    }

    #[test]
    fn random_bytes_decode_to_an_error_or_to_a_delta_that_joins_cleanly(
        script in script(),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let h = History::play(&script)?;
        if let Ok(delta) = postcard::from_bytes::<StoreDelta>(&bytes) {
            for node in &h.mesh.peers {
                joins_cleanly_or_changes_nothing(&node.store, &delta)?;
            }
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_of_a_valid_store_delta_is_refused_or_joins_cleanly(
        script in script(),
        pick: Index,
    ) {
        let h = History::play(&script)?;
        prop_assume!(!h.mesh.log.is_empty());
        let (_, delta) = &h.mesh.log[pick.index(h.mesh.log.len())];
        let bytes = postcard::to_stdvec(delta).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for variant in truncations_and_bit_flips(&bytes) {
            if let Ok(decoded) = postcard::from_bytes::<StoreDelta>(&variant) {
                joins_cleanly_or_changes_nothing(h.store(1), &decoded)?;
            }
        }
    }
}

/// Every proper prefix of `bytes`, and `bytes` with each single bit flipped.
fn truncations_and_bit_flips(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let truncations = (0..bytes.len()).map(|len| bytes[..len].to_vec());
    let flips = (0..bytes.len() * 8).map(|bit| {
        let mut flipped = bytes.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        flipped
    });
    truncations.chain(flips)
}

/// Joining `delta` into a copy of `store` either fails leaving the state
/// exactly as it was, or succeeds leaving a consistent store (its digest
/// matches its contents, and joining again changes nothing).
fn joins_cleanly_or_changes_nothing(
    store: &Store,
    delta: &StoreDelta,
) -> Result<(), TestCaseError> {
    let mut target = store.clone();
    match target.join(delta) {
        Err(_) => prop_assert_eq!(
            state(&target),
            state(store),
            "a refused delta changed the store"
        ),
        Ok(_) => {
            prop_assert_eq!(as_store(&target.full_state())?.digest(), target.digest());
            let mut again = target.clone();
            prop_assert_eq!(again.join(delta).map(|joined| joined.changed), Ok(false));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Replica level: commands over a tiny key space.
// ---------------------------------------------------------------------------

fn name(text: &str) -> Name {
    Name::new(text).expect("valid name literal")
}

fn host(text: &str) -> Host {
    Host::new(text).expect("valid host literal")
}

fn port(number: i64) -> Port {
    Port::new(number).expect("valid port literal")
}

fn frontend(backend: u8, listen: u16, tcp: bool) -> Frontend {
    Frontend {
        bind: Binds::parse(&format!("*:{listen}")).expect("valid bind literal"),
        backend: name(&format!("b{backend}")),
        mode: if tcp { Mode::Tcp } else { Mode::Http },
        keepalive: Keepalive::Default,
        rules: Rules::default(),
        natives: Natives::default(),
    }
}

fn member(weight: i64, state: MemberState) -> Member {
    Member {
        weight: Weight::new(weight).expect("valid weight literal"),
        state,
    }
}

fn member_key(backend: u8, h: u8) -> MemberKey {
    MemberKey {
        backend: name(&format!("b{backend}")),
        host: host(&format!("10.0.0.{}", h + 1)),
        port: port(80),
    }
}

fn registration_key(h: u8) -> RegistrationKey {
    RegistrationKey {
        service: ServiceName::new("svc").expect("valid service literal"),
        version: Version::new("1.0.0").expect("valid version literal"),
        host: host(&format!("10.0.1.{}", h + 1)),
        port: port(8080),
    }
}

fn put_frontend(f: u8, backend: u8, listen: u16, tcp: bool) -> Command {
    Command::PutFrontend {
        name: name(&format!("f{f}")),
        frontend: frontend(backend, listen, tcp),
    }
}

fn put_backend(b: u8, dynamic: bool, members: u8, weight: i64) -> Command {
    let members = (0..2u8)
        .filter(|h| members & (1 << h) != 0)
        .map(|h| {
            let key = member_key(b, h);
            ((key.host, key.port), member(weight, MemberState::Ready))
        })
        .collect();
    Command::PutBackend {
        name: name(&format!("b{b}")),
        backend: Backend {
            kind: if dynamic {
                BackendType::Dynamic
            } else {
                BackendType::Static
            },
            service: dynamic.then(|| ServiceName::new("svc").expect("valid service literal")),
            version: dynamic.then(|| Version::new("1.0.0").expect("valid version literal")),
            balance: Balance::Roundrobin,
            host: None,
            mode: Mode::Http,
            natives: Natives::default(),
            health: Health::default(),
            members,
        },
    }
}

fn command() -> impl Strategy<Value = Command> {
    let state = prop_oneof![
        Just(MemberState::Ready),
        Just(MemberState::Drain),
        Just(MemberState::Maint)
    ];
    prop_oneof![
        4 => (0..3u8, 0..2u8, 80..82u16, any::<bool>())
            .prop_map(|(f, b, listen, tcp)| put_frontend(f, b, listen, tcp)),
        2 => (0..3u8).prop_map(|f| Command::DeleteFrontend { name: name(&format!("f{f}")) }),
        2 => (0..2u8, any::<bool>(), 0..4u8, 0..3i64)
            .prop_map(|(b, dynamic, members, weight)| put_backend(b, dynamic, members, weight)),
        1 => (0..2u8).prop_map(|b| Command::DeleteBackend { name: name(&format!("b{b}")) }),
        1 => (0..2u8, prop::option::of(Just(())), prop_oneof![Just("1.0.0"), Just("2.0.0")])
            .prop_map(|(b, service, version)| Command::SwitchBackend {
                name: name(&format!("b{b}")),
                service: service.map(|()| ServiceName::new("svc2").expect("valid service literal")),
                version: Version::new(version).expect("valid version literal"),
            }),
        3 => (0..2u8, 0..2u8, 0..4i64, state)
            .prop_map(|(b, h, weight, state)| Command::PutMember {
                key: member_key(b, h),
                member: member(weight, state),
            }),
        2 => (0..2u8, 0..2u8).prop_map(|(b, h)| Command::DeleteMember { key: member_key(b, h) }),
        3 => (0..2u8, 0..3u64).prop_map(|(h, renewed)| Command::Register {
            key: registration_key(h),
            registration: Registration {
                meta: Meta::new("{}").expect("valid meta literal"),
                lease: Lease::new(renewed * 1_000, 10_000).expect("valid lease literal"),
            },
        }),
        2 => (0..2u8).prop_map(|h| Command::Deregister { key: registration_key(h) }),
    ]
}

impl Peer for Replica {
    type Delta = ConfigDelta;
    fn context(&self) -> &DotSet {
        Replica::context(self)
    }
    fn accept(&mut self, delta: &ConfigDelta) -> Result<bool, String> {
        self.join(delta).map_err(|e| e.to_string())
    }
    fn missing_for(&self, peer: &DotSet) -> ConfigDelta {
        Replica::missing_for(self, peer)
    }
}

#[derive(Clone, Debug)]
struct CommandScript {
    replicas: usize,
    steps: Vec<Step<Command>>,
    seed: u64,
}

fn command_script() -> impl Strategy<Value = CommandScript> {
    (3usize..=5, steps(command(), 10..60), any::<u64>()).prop_map(|(replicas, steps, seed)| {
        CommandScript {
            replicas,
            steps,
            seed,
        }
    })
}

/// Plays a command history. Wall clocks advance 5 ms a step and are skewed
/// by 3 ms per replica, so stamps collide now and then. A command the
/// replica refuses (deleting what it does not have, switching a static
/// backend) is simply not issued.
fn play_commands(script: &CommandScript) -> Result<Mesh<Replica>, TestCaseError> {
    let replicas = (1..=script.replicas as u64)
        .map(|n| Replica::new(replica_id(n)))
        .collect();
    let mut mesh = Mesh::new(replicas, script.seed);
    for (step_no, step) in script.steps.iter().enumerate() {
        match step {
            Step::Act { at, action } => {
                let at = at.index(script.replicas);
                let now_ms = 1_000 + step_no as u64 * 5 + at as u64 * 3;
                if let Ok(delta) = mesh.peers[at].execute(action, now_ms)
                    && !delta.is_empty()
                {
                    mesh.broadcast(at, &delta)?;
                }
            }
            Step::Net(net) => mesh.network(net)?,
        }
    }
    Ok(mesh)
}

/// A replica's observable state.
fn replica_state(replica: &Replica) -> (ConfigDelta, Digest, Vec<u8>) {
    (
        replica.full_state(),
        replica.digest(),
        replica.canonical_bytes(),
    )
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn replicas_converge_to_identical_digests_bytes_and_views(script in command_script()) {
        let mut mesh = play_commands(&script)?;
        mesh.deliver_pending()?;
        mesh.anti_entropy()?;
        let first = &mesh.peers[0];
        for replica in &mesh.peers[1..] {
            prop_assert_eq!(replica.digest(), first.digest());
            prop_assert_eq!(replica.canonical_bytes(), first.canonical_bytes());
            prop_assert_eq!(replica.view(), first.view());
            prop_assert_eq!(replica.full_state(), first.full_state());
        }
    }

    #[test]
    fn a_partial_view_shows_exactly_what_the_whole_view_shows_of_those_parts(
        script in command_script()
    ) {
        let mesh = play_commands(&script)?;
        for replica in &mesh.peers {
            let whole = replica.view();
            let frontends = replica.view_of(&[ViewPart::Frontends]);
            prop_assert_eq!(&frontends.frontends, &whole.frontends);
            prop_assert!(frontends.backends.is_empty() && frontends.registrations.is_empty());
            for b in 0..4u8 {
                let key = name(&format!("b{b}"));
                let part = replica.view_of(&[ViewPart::Backend(key.clone())]);
                prop_assert_eq!(part.backends.get(&key), whole.backends.get(&key));
                prop_assert!(part.backends.len() <= 1 && part.frontends.is_empty());
            }
            for f in 0..4u8 {
                let key = name(&format!("f{f}"));
                let part = replica.view_of(&[ViewPart::Frontend(key.clone())]);
                prop_assert_eq!(part.frontends.get(&key), whole.frontends.get(&key));
            }
            let all = replica.view_of(&[ViewPart::Registrations]);
            prop_assert_eq!(&all.registrations, &whole.registrations);
            let service = ServiceName::new("svc").expect("valid service literal");
            let of_service = replica.view_of(&[ViewPart::Service(service)]);
            prop_assert_eq!(&of_service.registrations, &whole.registrations);
        }
    }

    #[test]
    fn replicas_repaired_by_anti_entropy_alone_converge(script in command_script()) {
        let mut mesh = play_commands(&script)?;
        mesh.anti_entropy()?;
        let first = replica_state(&mesh.peers[0]);
        for replica in &mesh.peers[1..] {
            prop_assert_eq!(replica_state(replica), first.clone());
        }
    }

    #[test]
    fn a_fresh_replica_fed_every_delta_in_any_order_matches_the_converged_ones(
        script in command_script(),
    ) {
        let mut mesh = play_commands(&script)?;
        mesh.anti_entropy()?;
        let mut fresh = Replica::new(replica_id(99));
        for delta in mesh.shuffled_with_duplicates() {
            accepted(fresh.join(&delta), "a delta")?;
        }
        prop_assert_eq!(replica_state(&fresh), replica_state(&mesh.peers[0]));
    }

    #[test]
    fn a_restored_replica_continues_its_counter_and_never_reuses_a_dot(
        script in command_script(),
        who: Index,
    ) {
        let mesh = play_commands(&script)?;
        let k = who.index(mesh.peers.len());
        let original = &mesh.peers[k];
        let persisted = over_the_wire(&original.full_state())?;
        let mut restored = accepted(Replica::restore(original.id(), &[persisted]), "a restore")?;
        prop_assert_eq!(replica_state(&restored), replica_state(original));

        let issued_before = original.context().max_counter(original.id());
        let delta = accepted(
            restored.execute(&put_frontend(9, 0, 90, false), 1_000_000),
            "a command after restore",
        )?;
        prop_assert!(!delta.is_empty());
        for (replica, range) in delta.context.ranges() {
            if replica == original.id() {
                prop_assert!(
                    *range.start() > issued_before,
                    "restored replica re-minted counter {} (had issued up to {})",
                    range.start(), issued_before
                );
            }
        }
        // Every other peer accepts it: no dot of it collides with one they hold.
        for (i, peer) in mesh.peers.iter().enumerate() {
            if i != k {
                let mut peer = peer.clone();
                accepted(peer.join(&delta), "the restored replica's first delta")?;
            }
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_of_a_valid_config_delta_is_refused_or_joins_cleanly(
        script in command_script(),
        pick: Index,
    ) {
        let mesh = play_commands(&script)?;
        prop_assume!(!mesh.log.is_empty());
        let (origin, delta) = &mesh.log[pick.index(mesh.log.len())];
        let bytes = postcard::to_stdvec(delta).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let targets = [&mesh.peers[(origin + 1) % mesh.peers.len()], &Replica::new(replica_id(99))];
        for variant in truncations_and_bit_flips(&bytes) {
            if let Ok(decoded) = postcard::from_bytes::<ConfigDelta>(&variant) {
                for target in targets {
                    replica_joins_cleanly_or_changes_nothing(target, &decoded)?;
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_a_replica_or_half_apply(
        script in command_script(),
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mesh = play_commands(&script)?;
        if let Ok(delta) = postcard::from_bytes::<ConfigDelta>(&bytes) {
            replica_joins_cleanly_or_changes_nothing(&mesh.peers[0], &delta)?;
        }
    }
}

fn replica_joins_cleanly_or_changes_nothing(
    replica: &Replica,
    delta: &ConfigDelta,
) -> Result<(), TestCaseError> {
    let mut target = replica.clone();
    match target.join(delta) {
        Err(_) => prop_assert_eq!(
            replica_state(&target),
            replica_state(replica),
            "a refused delta changed the replica"
        ),
        Ok(_) => {
            let mut again = target.clone();
            prop_assert_eq!(again.join(delta), Ok(false));
            prop_assert_eq!(replica_state(&again), replica_state(&target));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Replica level: targeted semantics.
// ---------------------------------------------------------------------------

fn replica(n: u64) -> Replica {
    Replica::new(replica_id(n))
}

fn run(replica: &mut Replica, command: &Command, now_ms: u64) -> ConfigDelta {
    replica
        .execute(command, now_ms)
        .expect("the command applies")
}

fn receive(replica: &mut Replica, delta: &ConfigDelta) {
    replica.join(delta).expect("a valid delta is accepted");
}

fn frontend_key(f: u8) -> ObjectKey {
    ObjectKey::Frontend(name(&format!("f{f}")))
}

#[test]
fn every_replica_picks_the_same_winner_among_concurrent_writes() {
    // Same millisecond on every replica: the stamps tie, the dot decides.
    // Then distinct milliseconds: the latest stamp decides.
    for (times, winner) in [([1_000, 1_000, 1_000], 2u8), ([1_300, 1_100, 1_200], 0)] {
        let mut replicas = [replica(1), replica(2), replica(3)];
        let deltas: Vec<ConfigDelta> = (0..3u8)
            .map(|i| {
                run(
                    &mut replicas[i as usize],
                    &put_frontend(0, i, 80, false),
                    times[i as usize],
                )
            })
            .collect();
        for (i, r) in replicas.iter_mut().enumerate() {
            for (j, delta) in deltas.iter().enumerate() {
                if i != j {
                    receive(r, delta);
                }
            }
        }
        for r in &replicas {
            let view = r.view();
            assert_eq!(
                view.frontends[&name("f0")].backend,
                name(&format!("b{winner}"))
            );
            let conflict = r
                .conflicts()
                .into_iter()
                .find(|(key, field, _)| {
                    *key == frontend_key(0) && *field == FieldId::DefaultBackend
                })
                .expect("the three concurrent backends are all kept");
            assert_eq!(conflict.2.len(), 3);
            assert_eq!(r.canonical_bytes(), replicas[0].canonical_bytes());
        }
        // A write that has seen all three leaves one value.
        let later = run(&mut replicas[1], &put_frontend(0, 1, 81, false), 2_000);
        receive(&mut replicas[0], &later);
        assert!(replicas[0].conflicts().is_empty());
    }
}

#[test]
fn conflicts_list_the_resolved_winner_first() {
    let (mut a, mut b) = (replica(1), replica(2));
    let from_a = run(&mut a, &put_frontend(0, 0, 80, false), 1_000);
    let from_b = run(&mut b, &put_frontend(0, 1, 80, false), 1_000);
    receive(&mut a, &from_b);
    receive(&mut b, &from_a);
    let resolved = a.resolved_fields();
    for (key, field, values) in a.conflicts() {
        assert_eq!(
            Some(&values[0]),
            resolved[&key].get(&field),
            "conflicts() does not list the winner of {key:?}.{field:?} first"
        );
    }
}

#[test]
fn a_member_delete_concurrent_with_a_weight_change_keeps_only_the_weight() {
    let (mut a, mut b) = (replica(1), replica(2));
    let backend = run(&mut a, &put_backend(0, false, 0, 1), 1_000);
    let key = member_key(0, 0);
    let put = Command::PutMember {
        key: key.clone(),
        member: member(1, MemberState::Drain),
    };
    let created = run(&mut a, &put, 1_001);
    receive(&mut b, &backend);
    receive(&mut b, &created);
    let delete = run(&mut a, &Command::DeleteMember { key: key.clone() }, 1_002);
    // B changes the weight only: the state field is not rewritten.
    let reweigh = Command::PutMember {
        key: key.clone(),
        member: member(5, MemberState::Drain),
    };
    let update = run(&mut b, &reweigh, 1_003);
    receive(&mut a, &update);
    receive(&mut b, &delete);
    for r in [&a, &b] {
        let fields = &r.resolved_fields()[&ObjectKey::Member(key.clone())];
        assert_eq!(
            fields.keys().copied().collect::<Vec<_>>(),
            vec![FieldId::Weight],
            "the remover's seen state field is gone, the written weight survives"
        );
        let view = r.view();
        let members = &view.backends[&name("b0")].members;
        assert_eq!(
            members[&(key.host.clone(), key.port)],
            member(5, MemberState::Ready)
        );
    }
    assert_eq!(replica_state(&a), replica_state(&b));
}

#[test]
fn missing_for_repairs_a_replica_that_missed_a_delete() {
    let (mut a, mut b) = (replica(1), replica(2));
    let put = run(&mut a, &put_frontend(0, 0, 80, false), 1_000);
    receive(&mut b, &put);
    let _lost = run(&mut a, &Command::DeleteFrontend { name: name("f0") }, 1_001);
    assert!(b.view().frontends.contains_key(&name("f0")));
    let answer = a.missing_for(b.context());
    receive(&mut b, &answer);
    assert!(b.view().frontends.is_empty());
    assert_eq!(replica_state(&a), replica_state(&b));
}

#[test]
fn a_restored_replica_with_an_overwritten_last_write_still_continues_its_counter() {
    let (mut a, mut b) = (replica(1), replica(2));
    let put = run(&mut a, &put_frontend(0, 0, 80, false), 1_000);
    receive(&mut b, &put);
    // B deletes what A wrote: none of A's dots stays live.
    let delete = run(&mut b, &Command::DeleteFrontend { name: name("f0") }, 1_001);
    receive(&mut a, &delete);
    assert_eq!(
        a.full_state()
            .entries()
            .filter(|e| e.2.replica == a.id())
            .count(),
        0
    );
    let mut restored = Replica::restore(a.id(), &[a.full_state()]).expect("a valid state");
    let next = run(&mut restored, &put_frontend(1, 0, 82, false), 1_002);
    receive(&mut b, &next);
    assert!(
        next.entries()
            .all(|(_, _, d, _)| d.counter > a.context().max_counter(a.id()))
    );
}

// ---------------------------------------------------------------------------
// Replica level: invalid input never enters the state.
// ---------------------------------------------------------------------------

/// A one-entry delta from a foreign replica.
fn single_entry(
    key: ObjectKey,
    field: FieldId,
    value: FieldValue,
    at: Dot,
    hlc: Hlc,
) -> ConfigDelta {
    let mut delta = ConfigDelta::default();
    delta.context.insert(at);
    delta.insert_entry(key, field, at, Stamped { hlc, value });
    delta
}

/// A replica with some state, to check that refusals leave it untouched.
fn populated_replica() -> Replica {
    let mut r = replica(1);
    run(&mut r, &put_frontend(0, 0, 80, false), 1_000);
    run(&mut r, &put_backend(0, false, 3, 2), 1_001);
    r
}

#[test]
fn a_replica_refuses_a_field_its_object_kind_does_not_have() {
    let r = populated_replica();
    let forged = single_entry(
        frontend_key(1),
        FieldId::Weight,
        FieldValue::Weight(Weight::new(3).expect("valid weight")),
        dot(7, 1),
        Hlc::default(),
    );
    let mut target = r.clone();
    assert!(matches!(
        target.join(&forged),
        Err(RemoteDeltaError::InvalidEntry {
            field: FieldId::Weight,
            ..
        })
    ));
    assert_eq!(replica_state(&target), replica_state(&r));
}

#[test]
fn a_replica_refuses_a_value_filed_under_another_field() {
    let r = populated_replica();
    let forged = single_entry(
        frontend_key(1),
        FieldId::Bind,
        FieldValue::Mode(Mode::Tcp),
        dot(7, 1),
        Hlc::default(),
    );
    let mut target = r.clone();
    assert!(matches!(
        target.join(&forged),
        Err(RemoteDeltaError::InvalidEntry {
            field: FieldId::Bind,
            ..
        })
    ));
    assert_eq!(replica_state(&target), replica_state(&r));
}

#[test]
fn a_replica_joins_a_claim_on_its_own_unissued_dots_and_writes_after_it() {
    let r = populated_replica();
    let own_max = r.context().max_counter(r.id());
    let claimed = Dot::new(r.id(), own_max + 1_000).expect("non-zero");
    let mut forged = ConfigDelta::default();
    forged
        .context
        .insert_interval(r.id(), own_max + 1..=claimed.counter);
    let mut victim = r.clone();
    assert_eq!(victim.join(&forged), Ok(true), "its context grew");
    assert_eq!(victim.own_dots_claimed(), 1);
    assert_eq!(replica_state(&victim), {
        let mut expected = r.clone();
        expected.join(&forged).expect("joins");
        replica_state(&expected)
    });

    // Its next write carries a dot beyond the claim, so it reaches a peer
    // that took the forged claim too instead of being ignored as seen.
    let delta = run(&mut victim, &put_frontend(9, 0, 81, false), 2_000);
    assert!(delta.context.max_counter(r.id()) > claimed.counter);
    let mut peer = replica(2);
    peer.join(&r.full_state()).expect("joins");
    peer.join(&forged).expect("joins");
    assert!(peer.join(&delta).expect("joins"), "the write is news");
    assert_eq!(peer.view(), victim.view());
}

/// Bounds as a receiver whose clock reads `wall_ms` with a skew of 10 s.
fn bounds_at(wall_ms: u64) -> Plausibility {
    Plausibility {
        wall_ms,
        skew_max_ms: 10_000,
    }
}

#[test]
fn a_claim_beyond_what_the_clock_allows_any_replica_is_implausible() {
    let bounds = bounds_at(1_000_000);
    let limit = bounds.counter_max();
    assert_eq!(limit, (1_000_000 + 20_000) * DOTS_PER_MS);
    let victim = ReplicaId::new(7).expect("non-zero");
    let mut at_limit = ConfigDelta::default();
    at_limit.context.insert_interval(victim, 1..=limit);
    assert_eq!(Replica::check_plausible(&at_limit, bounds), Ok(()));
    let mut beyond = ConfigDelta::default();
    beyond.context.insert_interval(victim, 1..=Dot::COUNTER_MAX);
    assert_eq!(
        Replica::check_plausible(&beyond, bounds),
        Err(RemoteDeltaError::ImplausibleDot(
            Dot::new(victim, Dot::COUNTER_MAX).expect("in range")
        ))
    );
}

#[test]
fn a_stamp_further_ahead_than_the_skew_is_refused() {
    let bounds = bounds_at(1_000_000);
    let dot = Dot::new(ReplicaId::new(7).expect("non-zero"), 1).expect("non-zero");
    let stamped_at = |wall_ms| {
        single_entry(
            frontend_key(1),
            FieldId::Mode,
            FieldValue::Mode(Mode::Tcp),
            dot,
            Hlc::try_from((wall_ms, 0)).expect("valid stamp"),
        )
    };
    assert_eq!(
        Replica::check_plausible(&stamped_at(1_010_000), bounds),
        Ok(())
    );
    assert_eq!(
        Replica::check_plausible(&stamped_at(1_010_001), bounds),
        Err(RemoteDeltaError::StampAhead {
            dot,
            ahead_ms: 10_001
        })
    );
}

#[test]
fn a_lease_renewed_further_ahead_than_the_skew_is_refused() {
    let bounds = bounds_at(1_000_000);
    let dot = Dot::new(ReplicaId::new(7).expect("non-zero"), 1).expect("non-zero");
    let renewed_at = |wall_ms| {
        single_entry(
            ObjectKey::Registration(registration_key(1)),
            FieldId::Lease,
            FieldValue::Lease(Lease::new(wall_ms, 10_000).expect("valid lease")),
            dot,
            Hlc::try_from((1_000_000, 0)).expect("valid stamp"),
        )
    };
    assert_eq!(
        Replica::check_plausible(&renewed_at(1_010_000), bounds),
        Ok(())
    );
    assert_eq!(
        Replica::check_plausible(&renewed_at(3_000_000), bounds),
        Err(RemoteDeltaError::LeaseAhead {
            dot,
            ahead_ms: 2_000_000
        })
    );
}

/// A value other than what `r` holds under its live mode's dot: a forged
/// entry reusing that dot, and the dot.
fn forged_over_mode(r: &Replica) -> (ConfigDelta, Dot) {
    let (key, field, live, stamped) = r
        .full_state()
        .entries()
        .find(|(_, f, _, _)| **f == FieldId::Mode)
        .map(|(k, f, d, s)| (k.clone(), *f, d, s.clone()))
        .expect("the frontend has a mode");
    let other = if stamped.value == FieldValue::Mode(Mode::Tcp) {
        Mode::Http
    } else {
        Mode::Tcp
    };
    let forged = single_entry(key, field, FieldValue::Mode(other), live, stamped.hlc);
    (forged, live)
}

#[test]
fn a_replica_keeps_the_same_of_two_values_under_a_dot_of_another_replica_whatever_came_first() {
    let r = populated_replica();
    let (forged, live) = forged_over_mode(&r);
    let mut genuine_first = replica(2);
    genuine_first.join(&r.full_state()).expect("joins");
    assert_eq!(genuine_first.dot_conflicts(&forged), vec![live]);
    genuine_first
        .join(&forged)
        .expect("the conflict is resolved, not refused");
    let mut forged_first = replica(3);
    forged_first.join(&forged).expect("joins");
    assert_eq!(forged_first.dot_conflicts(&r.full_state()), vec![live]);
    forged_first.join(&r.full_state()).expect("joins");

    assert_eq!(forged_first.digest(), genuine_first.digest());
    assert_eq!(
        forged_first.canonical_bytes(),
        genuine_first.canonical_bytes()
    );
    let winner = genuine_first
        .live_entry(live)
        .expect("one value stays under the dot");
    assert!(winner == forged || winner == r.live_entry(live).expect("live"));
    for replica in [&mut genuine_first, &mut forged_first] {
        assert_eq!(
            replica.join(&forged),
            Ok(false),
            "the loser is dropped for good"
        );
        assert_eq!(replica.join(&r.full_state()), Ok(false));
        assert!(replica.dot_conflicts(&winner).is_empty());
    }
}

#[test]
fn a_replica_leaves_out_a_value_forged_under_its_own_dot_and_writes_its_own_again() {
    let r = populated_replica();
    let (forged, live) = forged_over_mode(&r);
    let mut victim = r.clone();
    assert_eq!(
        victim.join(&forged),
        Ok(true),
        "its own value under the dot is gone"
    );
    assert_eq!(victim.own_dots_claimed(), 1);
    let repair = victim.rewrite_claimed(5_000);
    assert!(
        repair.context.contains(live),
        "the dot is removed everywhere"
    );
    assert_eq!(
        victim.view(),
        r.view(),
        "its own value is back, under a fresh dot"
    );
    let mut holder = replica(2);
    holder.join(&r.full_state()).expect("joins");
    holder
        .join(&repair)
        .expect("the repair joins where the genuine value was");
    assert_eq!(holder.view(), r.view());
}

#[test]
fn a_replica_that_left_out_a_value_forged_under_its_own_dot_restores_from_its_log() {
    let mut victim = replica(1);
    let log = vec![
        run(&mut victim, &put_frontend(0, 0, 80, false), 1_000),
        run(&mut victim, &put_backend(0, false, 3, 2), 1_001),
    ];
    let (forged, _) = forged_over_mode(&victim);
    victim.join(&forged).expect("joins");
    // The node persists the delta as received, forged entry included, then
    // the repair.
    let repair = victim.rewrite_claimed(5_000);
    let log = [log, vec![forged, repair]].concat();
    let restored = Replica::restore(victim.id(), &log).expect("the log restores");
    assert_eq!(replica_state(&restored), replica_state(&victim));
}

// ---------------------------------------------------------------------------
// Hostile extremes: counters and stamps at the bounds peers may send.
// ---------------------------------------------------------------------------

#[test]
fn a_peer_cannot_claim_a_counter_beyond_the_counter_bound() {
    assert!(Dot::new(replica_id(77), Dot::COUNTER_MAX).is_some());
    assert!(Dot::new(replica_id(77), Dot::COUNTER_MAX + 1).is_none());
    let on_the_wire = postcard::to_stdvec(&(77u64, u64::MAX)).expect("encodes");
    assert!(postcard::from_bytes::<Dot>(&on_the_wire).is_err());
}

#[test]
fn missing_for_survives_a_live_dot_with_the_largest_counter() {
    let (mut a, mut b) = (replica(1), replica(2));
    let edge = single_entry(
        frontend_key(0),
        FieldId::Mode,
        FieldValue::Mode(Mode::Tcp),
        dot(77, Dot::COUNTER_MAX),
        Hlc::default(),
    );
    receive(&mut a, &edge);
    receive(&mut b, &edge);
    let answer = a.missing_for(b.context());
    receive(&mut b, &answer);
    assert_eq!(replica_state(&a), replica_state(&b));
}

#[test]
fn a_peer_stamp_beyond_the_year_10000_is_refused_on_decoding() {
    let late = postcard::to_stdvec(&(Hlc::WALL_MS_MAX + 1, 0u32)).expect("encodes");
    assert!(postcard::from_bytes::<Hlc>(&late).is_err());
    let latest = postcard::to_stdvec(&(Hlc::WALL_MS_MAX, 0u32)).expect("encodes");
    assert!(postcard::from_bytes::<Hlc>(&latest).is_ok());
}

#[test]
fn local_writes_after_the_latest_accepted_stamp_still_order_after_it() {
    let mut r = replica(1);
    let latest = Hlc {
        wall_ms: Hlc::WALL_MS_MAX,
        logical: 7,
    };
    let edge = single_entry(
        frontend_key(0),
        FieldId::Mode,
        FieldValue::Mode(Mode::Tcp),
        dot(77, 1),
        latest,
    );
    receive(&mut r, &edge);
    let delta = r
        .execute(&put_frontend(1, 0, 80, false), 1_000)
        .expect("a valid command");
    assert!(delta.entries().all(|(_, _, _, s)| s.hlc > latest));
}

#[test]
fn local_writes_stay_decodable_after_adopting_the_last_possible_stamp() {
    let mut r = replica(1);
    let last = Hlc {
        wall_ms: Hlc::WALL_MS_MAX,
        logical: u32::MAX,
    };
    let edge = single_entry(
        frontend_key(0),
        FieldId::Mode,
        FieldValue::Mode(Mode::Tcp),
        dot(77, 1),
        last,
    );
    receive(&mut r, &edge);
    let delta = r
        .execute(&put_frontend(1, 0, 80, false), 1_000)
        .expect("a valid command");
    let bytes = postcard::to_stdvec(&delta).expect("encodes");
    let decoded: ConfigDelta = postcard::from_bytes(&bytes).expect("a peer can decode it");
    assert_eq!(decoded, delta);
}

/// Writes `overwrites` successive values of one field at `a`, all delivered
/// to `b`: two replicas in sync whose contexts hold thousands of removed
/// dots, spread over several summary buckets.
fn in_sync_after_overwrites(overwrites: u64) -> (Replica, Replica) {
    let (mut a, mut b) = (replica(1), replica(2));
    for i in 0..overwrites {
        let delta = run(
            &mut a,
            &put_frontend(0, (i % 2) as u8, 80 + (i % 1000) as u16, false),
            1_000 + i,
        );
        receive(&mut b, &delta);
    }
    (a, b)
}

#[test]
fn an_answer_to_a_peer_in_sync_carries_no_removals_however_many_values_were_overwritten() {
    let (a, b) = in_sync_after_overwrites(3_000);
    assert_eq!(a.digest(), b.digest());
    let every_removal = a.missing_for(b.context());
    assert!(
        every_removal.context.interval_count() > 0,
        "the plain answer lists the removed dots"
    );
    let answer = a.missing_for_peer(&b.summary(), usize::MAX).delta;
    assert!(
        answer.is_empty(),
        "{} intervals sent to a peer in sync",
        answer.context.interval_count()
    );
}

#[test]
fn a_removal_missed_in_an_old_bucket_is_still_repaired_by_missing_for_peer() {
    let (mut a, mut b) = in_sync_after_overwrites(2_500);
    // Overwrite f1, whose first value sits in an old bucket, without telling b.
    let first = run(&mut a, &put_frontend(1, 0, 80, false), 10_000);
    receive(&mut b, &first);
    for i in 0..1_500 {
        let delta = run(
            &mut a,
            &put_frontend(2, 0, 80 + (i % 1000) as u16, false),
            20_000 + i,
        );
        receive(&mut b, &delta);
    }
    let _missed = run(&mut a, &put_frontend(1, 1, 81, true), 30_000);
    let answer = a.missing_for_peer(&b.summary(), usize::MAX).delta;
    receive(&mut b, &answer);
    assert_eq!(replica_state(&a), replica_state(&b));
}

/// A context-only delta claiming a vast range of another replica's counters
/// (which decoding allows: they are valid dots) must not make anti-entropy
/// answers cost time in proportion to the claimed history.
#[test]
fn a_vast_claimed_history_does_not_make_anti_entropy_walk_it() {
    let (mut a, mut b) = in_sync_after_overwrites(10);
    let wire: Vec<(u64, Vec<(u64, u64)>)> = vec![(77, vec![(1, 1 << 44)])];
    let context: DotSet =
        postcard::from_bytes(&postcard::to_stdvec(&wire).expect("encodes")).expect("valid dots");
    let claim = ConfigDelta {
        objects: Default::default(),
        context,
    };
    receive(&mut a, &claim);
    receive(&mut b, &claim);
    let answer = a.missing_for_peer(&b.summary(), usize::MAX).delta;
    assert!(answer.is_empty());
    let plain = a.missing_for(b.context());
    assert!(plain.context.interval_count() < 100);
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_register_encodes_exactly_as_a_map_of_dots_to_values_and_decodes_back(
        entries in prop::collection::vec((1u64..4, 1u64..50, any::<u32>()), 0..12)
    ) {
        let mut register = Register::default();
        let mut map = BTreeMap::new();
        for (replica, counter, value) in entries {
            let stamped = Stamped { hlc: Hlc { wall_ms: 1, logical: 0 }, value };
            register.insert(dot(replica, counter), stamped.clone());
            map.insert(dot(replica, counter), stamped);
        }
        let bytes = postcard::to_stdvec(&register).expect("encodes");
        prop_assert_eq!(&bytes, &postcard::to_stdvec(&map).expect("encodes"));
        let back: Register<u32> = postcard::from_bytes(&bytes).expect("decodes");
        prop_assert_eq!(back, register);
    }
}

#[test]
fn a_register_decoded_from_an_unsorted_map_with_a_repeated_dot_is_sorted_and_keeps_the_last() {
    let stamped = |value| Stamped {
        hlc: Hlc {
            wall_ms: 1,
            logical: 0,
        },
        value,
    };
    // A hand-made map encoding: three entries, out of order, one dot twice.
    let entries = [
        (dot(2, 1), stamped(1u32)),
        (dot(1, 1), stamped(2)),
        (dot(2, 1), stamped(3)),
    ];
    let mut bytes = vec![3u8];
    for entry in &entries {
        bytes.extend(postcard::to_stdvec(entry).expect("encodes"));
    }
    let register: Register<u32> = postcard::from_bytes(&bytes).expect("decodes");
    let decoded: Vec<(Dot, u32)> = register.iter().map(|(d, s)| (*d, s.value)).collect();
    assert_eq!(decoded, vec![(dot(1, 1), 2), (dot(2, 1), 3)]);
}

proptest! {
    // Each case walks every pair of replicas chunk by chunk.
    #![proptest_config(config(48))]

    #[test]
    fn an_answer_in_chunks_repairs_exactly_like_a_full_state_join(
        script in script(),
        budget in 1usize..1_500,
    ) {
        let h = History::play(&script)?;
        let n = h.mesh.peers.len();
        for from in 0..n {
            for to in 0..n {
                let (source, target) = (h.store(from), h.store(to));
                let mut repaired = target.clone();
                let mut chunks = 0;
                loop {
                    let summary = over_the_wire(&repaired.summary())?;
                    let chunk = source.missing_for_peer(&summary, budget);
                    let entry_bytes = postcard::to_stdvec(&chunk.delta.objects).expect("encodes").len();
                    prop_assert!(
                        entry_bytes <= budget || chunk.delta.entries().count() == 1,
                        "{} bytes of entries for a budget of {}", entry_bytes, budget
                    );
                    accepted(repaired.join(&over_the_wire(&chunk.delta)?), "a chunk")?;
                    chunks += 1;
                    prop_assert!(chunks <= 10_000, "chunks never end");
                    if chunk.complete {
                        break;
                    }
                }
                prop_assert_eq!(state(&repaired), state(&join(target, source)?));
            }
        }
    }
}
