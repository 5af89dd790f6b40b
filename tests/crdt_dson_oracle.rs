//! Differential test: our causal dot store against `dson` 0.3 as an oracle
//! (DESIGN.md, "Data model and merge semantics": dson converges and has the
//! intended observed-remove semantics; it is too slow and too fragile to be
//! the engine, but good enough to check ours).
//!
//! Random small histories — 3 replicas, 20–60 operations (fewer when a
//! drawn removal finds nothing to remove) over 3 objects × 3
//! fields, values `u64` or strings — run on both our generic [`DotStore`]
//! and dson's `CausalDotStore<OrMap<String>>` with multi-value registers.
//! Every delta is delivered to both in the same random order, with
//! duplicates; the lossy variant also drops deltas and repairs them, on our
//! side with `missing_for` answers only, on dson's side with full-state joins
//! (dson's own anti-entropy helper does not carry removals). After every step
//! and at the end, each replica's *set of values per field* (the whole
//! multi-value register, not a winner) and its set of present objects must be
//! identical on both sides.
//!
//! dson's limits respected here: node ids fit in a `u8`, and it is never fed
//! a reused dot (it panics on one).
//!
//! Seeded: proptest with a fixed seed, 320 + 240 histories.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use aqueduct::crdt::{Delta, Dot, DotSet, DotStore, Hlc, ReplicaId, Stamped};
use dson::crdts::NoExtensionTypes;
use dson::crdts::mvreg::MvRegValue;
use dson::sentinel::DummySentinel;
use dson::{CausalDotStore, Identifier, OrMap};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{RngSeed, TestCaseError};
use serde::{Deserialize, Serialize};

const REPLICAS: usize = 3;
const OBJECTS: u8 = 3;
const FIELDS: u8 = 3;

/// Proptest's default configuration, with a fixed seed, a capped number of
/// cases, and no failure files (the fixed seed reproduces a failure).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x0d50_0a7c_1e00_0003),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A register value: both sides store the same ones.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Value {
    Number(u64),
    Text(String),
}

impl Value {
    fn to_dson(&self) -> MvRegValue {
        match self {
            Value::Number(n) => MvRegValue::U64(*n),
            Value::Text(s) => MvRegValue::String(s.clone()),
        }
    }

    fn from_dson(value: &MvRegValue) -> Result<Value, TestCaseError> {
        match value {
            MvRegValue::U64(n) => Ok(Value::Number(*n)),
            MvRegValue::String(s) => Ok(Value::Text(s.clone())),
            other => Err(TestCaseError::fail(format!(
                "dson holds a value never written: {other:?}"
            ))),
        }
    }
}

/// What a replica shows: object → field → every value in its register.
type View = BTreeMap<String, BTreeMap<String, BTreeSet<Value>>>;

fn object_name(obj: u8) -> String {
    format!("o{obj}")
}

fn field_name(field: u8) -> String {
    format!("f{field}")
}

// ---------------------------------------------------------------------------
// Our side.
// ---------------------------------------------------------------------------

type Store = DotStore<u8, u8, Value>;
type StoreDelta = Delta<u8, u8, Value>;

/// One replica of our store, building deltas as `Replica::commit` does: a
/// fresh dot plus every live dot the operation overwrites or removes (a pure
/// removal mints a dot too).
#[derive(Clone, Debug)]
struct Ours {
    id: ReplicaId,
    store: Store,
    clock: Hlc,
}

impl Ours {
    fn new(replica: usize) -> Self {
        Ours {
            id: ReplicaId::new(replica as u64 + 1).expect("non-zero replica id"),
            store: Store::default(),
            clock: Hlc::default(),
        }
    }

    fn issue(&mut self, action: &Action) -> Result<StoreDelta, TestCaseError> {
        let mut delta = StoreDelta::default();
        let superseded: DotSet = match action {
            Action::Set { obj, field, .. } | Action::RemoveField { obj, field } => {
                self.store.field_dots(obj, field).collect()
            }
            Action::RemoveObject { obj } => self.store.object_dots(obj).collect(),
        };
        delta.context = superseded;
        let next = self.store.context().max_counter(self.id) + 1;
        let dot = Dot::new(self.id, next).expect("a counter plus one is never 0");
        delta.context.insert(dot);
        if let Action::Set { obj, field, value } = action {
            self.clock = Hlc::next(self.clock, 0);
            delta.insert_entry(
                *obj,
                *field,
                dot,
                Stamped {
                    hlc: self.clock,
                    value: value.clone(),
                },
            );
        }
        self.join(&delta, "a locally built delta")?;
        Ok(delta)
    }

    fn join(&mut self, delta: &StoreDelta, what: &str) -> Result<(), TestCaseError> {
        self.store
            .join(delta)
            .map(|_| ())
            .map_err(|e| TestCaseError::fail(format!("{what} was refused: {e}")))
    }

    /// Every object in the store, with no filtering: an empty object or
    /// field left behind would show up as a difference.
    fn view(&self) -> View {
        self.store
            .objects()
            .iter()
            .map(|(obj, fields)| {
                let fields = fields
                    .iter()
                    .map(|(field, register)| {
                        let values = register.values().map(|s| s.value.clone()).collect();
                        (field_name(*field), values)
                    })
                    .collect();
                (object_name(*obj), fields)
            })
            .collect()
    }
}

/// Sends a delta through the wire format (postcard) and back.
fn over_the_wire(delta: &StoreDelta) -> Result<StoreDelta, TestCaseError> {
    let bytes = postcard::to_stdvec(delta)
        .map_err(|e| TestCaseError::fail(format!("encoding failed: {e}")))?;
    let decoded: StoreDelta = postcard::from_bytes(&bytes)
        .map_err(|e| TestCaseError::fail(format!("decoding failed: {e}")))?;
    prop_assert_eq!(&decoded, delta);
    Ok(decoded)
}

// ---------------------------------------------------------------------------
// dson's side, through its raw delta API.
// ---------------------------------------------------------------------------

type Doc = CausalDotStore<OrMap<String, NoExtensionTypes>>;

fn dson_id(replica: usize) -> Identifier {
    Identifier::new(u8::try_from(replica).expect("dson node ids fit in a u8"), 0)
}

fn dson_join(doc: &mut Doc, delta: &Doc) {
    if let Err(never) = doc.join_with(delta.store.clone(), &delta.context, &mut DummySentinel) {
        match never {}
    }
}

/// Issues `action` on a dson document and joins the delta locally.
fn dson_issue(doc: &mut Doc, who: Identifier, action: &Action) -> Doc {
    let delta = match action {
        Action::Set { obj, field, value } => {
            let (field, value) = (field_name(*field), value.to_dson());
            doc.store.apply_to_map(
                move |map, cc, id| {
                    map.apply_to_register(
                        move |register, cc, id| register.write(value, cc, id),
                        field,
                        cc,
                        id,
                    )
                },
                object_name(*obj),
                &doc.context,
                who,
            )
        }
        Action::RemoveField { obj, field } => {
            let field = field_name(*field);
            doc.store.apply_to_map(
                move |map, cc, id| map.remove(&field, cc, id),
                object_name(*obj),
                &doc.context,
                who,
            )
        }
        Action::RemoveObject { obj } => doc.store.remove(&object_name(*obj), &doc.context, who),
    };
    dson_join(doc, &delta);
    delta
}

/// What a dson document shows; objects and fields without any value are
/// left out (dson may keep such empty shells).
fn dson_view(doc: &Doc) -> Result<View, TestCaseError> {
    let mut view = View::new();
    for (obj, object) in doc.store.inner().iter() {
        let mut fields = BTreeMap::new();
        for (field, inner) in object.map.inner().iter() {
            let values = inner
                .reg
                .0
                .values()
                .map(Value::from_dson)
                .collect::<Result<BTreeSet<_>, _>>()?;
            if !values.is_empty() {
                fields.insert(field.clone(), values);
            }
        }
        if !fields.is_empty() {
            view.insert(obj.clone(), fields);
        }
    }
    Ok(view)
}

// ---------------------------------------------------------------------------
// Histories.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Action {
    Set { obj: u8, field: u8, value: Value },
    RemoveField { obj: u8, field: u8 },
    RemoveObject { obj: u8 },
}

#[derive(Clone, Debug)]
enum Step {
    /// A replica acts (a removal of something absent is skipped).
    Act { at: Index, action: Action },
    /// One pending delta reaches `to`.
    Deliver { to: Index, pick: Index },
    /// `to` receives again a delta it already has.
    Redeliver { to: Index, pick: Index },
    /// A pending delta to `to` is lost.
    Drop { to: Index, pick: Index },
    /// Anti-entropy from `from` to `to`: our `missing_for`, dson's full state.
    Sync { from: Index, to: Index },
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..4u64).prop_map(Value::Number),
        (0..4u8).prop_map(|i| Value::Text(format!("s{i}"))),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0..OBJECTS, 0..FIELDS, value())
            .prop_map(|(obj, field, value)| Action::Set { obj, field, value }),
        2 => (0..OBJECTS, 0..FIELDS).prop_map(|(obj, field)| Action::RemoveField { obj, field }),
        2 => (0..OBJECTS).prop_map(|obj| Action::RemoveObject { obj }),
    ]
}

fn pair() -> impl Strategy<Value = (Index, Index)> {
    (any::<Index>(), any::<Index>())
}

/// 20–60 operations, each followed by up to three network steps:
/// deliveries and duplicates, and with `lossy` also drops and anti-entropy
/// syncs.
fn history(lossy: bool) -> impl Strategy<Value = (Vec<Step>, u64)> {
    let network = if lossy {
        prop_oneof![
            5 => pair().prop_map(|(to, pick)| Step::Deliver { to, pick }),
            2 => pair().prop_map(|(to, pick)| Step::Redeliver { to, pick }),
            2 => pair().prop_map(|(to, pick)| Step::Drop { to, pick }),
            1 => pair().prop_map(|(from, to)| Step::Sync { from, to }),
        ]
        .boxed()
    } else {
        prop_oneof![
            7 => pair().prop_map(|(to, pick)| Step::Deliver { to, pick }),
            3 => pair().prop_map(|(to, pick)| Step::Redeliver { to, pick }),
        ]
        .boxed()
    };
    let operation = (any::<Index>(), action()).prop_map(|(at, action)| Step::Act { at, action });
    let rounds = prop::collection::vec((operation, prop::collection::vec(network, 0..=3)), 20..=60);
    let steps = rounds.prop_map(|rounds| {
        rounds
            .into_iter()
            .flat_map(|(op, net)| std::iter::once(op).chain(net))
            .collect()
    });
    (steps, any::<u64>())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Pending,
    Delivered,
    Dropped,
}

/// The same replicas on both sides, and every delta issued, in both forms.
struct Twins {
    ours: Vec<Ours>,
    theirs: Vec<Doc>,
    log: Vec<(StoreDelta, Doc)>,
    fate: [Vec<Fate>; REPLICAS],
}

impl Twins {
    fn new() -> Self {
        Twins {
            ours: (0..REPLICAS).map(Ours::new).collect(),
            theirs: (0..REPLICAS).map(|_| Doc::new()).collect(),
            log: Vec::new(),
            fate: Default::default(),
        }
    }

    /// Replica `r` shows the same objects, fields and register contents on
    /// both sides.
    fn agree(&self, r: usize, when: &str) -> Result<(), TestCaseError> {
        let ours = self.ours[r].view();
        let theirs = dson_view(&self.theirs[r])?;
        prop_assert_eq!(ours, theirs, "replica {} differs from dson {}", r, when);
        Ok(())
    }

    fn present(&self, r: usize, action: &Action) -> bool {
        let objects = self.ours[r].store.objects();
        match action {
            Action::Set { .. } => true,
            Action::RemoveField { obj, field } => {
                objects.get(obj).is_some_and(|f| f.contains_key(field))
            }
            Action::RemoveObject { obj } => objects.contains_key(obj),
        }
    }

    fn act(&mut self, at: usize, action: &Action) -> Result<(), TestCaseError> {
        if !self.present(at, action) {
            return Ok(());
        }
        let ours = over_the_wire(&self.ours[at].issue(action)?)?;
        let theirs = dson_issue(&mut self.theirs[at], dson_id(at), action);
        self.log.push((ours, theirs));
        for (r, fates) in self.fate.iter_mut().enumerate() {
            fates.push(if r == at {
                Fate::Delivered
            } else {
                Fate::Pending
            });
        }
        self.agree(at, &format!("after issuing {action:?}"))
    }

    fn pick(&self, to: usize, pick: &Index, fate: Fate) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.log.len())
            .filter(|&i| self.fate[to][i] == fate)
            .collect();
        (!candidates.is_empty()).then(|| candidates[pick.index(candidates.len())])
    }

    fn deliver(&mut self, to: usize, i: usize) -> Result<(), TestCaseError> {
        let (ours, theirs) = &self.log[i];
        self.ours[to].join(ours, "a delivered delta")?;
        dson_join(&mut self.theirs[to], theirs);
        self.fate[to][i] = Fate::Delivered;
        self.agree(to, &format!("after delivery of delta {i}"))
    }

    fn sync(&mut self, from: usize, to: usize) -> Result<(), TestCaseError> {
        let answer = over_the_wire(
            &self.ours[from]
                .store
                .missing_for(self.ours[to].store.context()),
        )?;
        self.ours[to].join(&answer, "a missing_for answer")?;
        let full = self.theirs[from].clone();
        dson_join(&mut self.theirs[to], &full);
        self.agree(to, &format!("after a sync from replica {from}"))
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Act { at, action } => self.act(at.index(REPLICAS), action)?,
            Step::Deliver { to, pick } => {
                let to = to.index(REPLICAS);
                if let Some(i) = self.pick(to, pick, Fate::Pending) {
                    self.deliver(to, i)?;
                }
            }
            Step::Redeliver { to, pick } => {
                let to = to.index(REPLICAS);
                if let Some(i) = self.pick(to, pick, Fate::Delivered) {
                    self.deliver(to, i)?;
                }
            }
            Step::Drop { to, pick } => {
                let to = to.index(REPLICAS);
                if let Some(i) = self.pick(to, pick, Fate::Pending) {
                    self.fate[to][i] = Fate::Dropped;
                }
            }
            Step::Sync { from, to } => {
                let (from, to) = (from.index(REPLICAS), to.index(REPLICAS));
                if from != to {
                    self.sync(from, to)?;
                }
            }
        }
        Ok(())
    }

    /// Delivers every pending delta, each replica in its own order drawn
    /// from `seed`.
    fn deliver_pending(&mut self, mut seed: u64) -> Result<(), TestCaseError> {
        for to in 0..REPLICAS {
            let mut pending: Vec<usize> = (0..self.log.len())
                .filter(|&i| self.fate[to][i] == Fate::Pending)
                .collect();
            // Fisher–Yates with an LCG: deterministic, and enough here.
            for i in (1..pending.len()).rev() {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                pending.swap(i, (seed >> 33) as usize % (i + 1));
            }
            for i in pending {
                self.deliver(to, i)?;
            }
        }
        Ok(())
    }

    /// Everyone converges: replica 0 pulls from all, then all pull from it.
    fn full_exchange(&mut self) -> Result<(), TestCaseError> {
        for other in 1..REPLICAS {
            self.sync(other, 0)?;
        }
        for other in 1..REPLICAS {
            self.sync(0, other)?;
        }
        Ok(())
    }

    /// All replicas show the same thing, on both sides, and our digests
    /// agree.
    fn converged(&self) -> Result<(), TestCaseError> {
        let first = self.ours[0].view();
        for r in 0..REPLICAS {
            self.agree(r, "at the end")?;
            prop_assert_eq!(
                &self.ours[r].view(),
                &first,
                "replica {} did not converge",
                r
            );
            prop_assert_eq!(self.ours[r].store.digest(), self.ours[0].store.digest());
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config(320))]

    /// Reordered and duplicated delivery: both sides agree at every step and
    /// converge to the same registers once everything is delivered.
    #[test]
    fn registers_and_objects_match_dson_under_reordering_and_duplication(
        (steps, seed) in history(false),
    ) {
        let mut twins = Twins::new();
        for step in &steps {
            twins.step(step)?;
        }
        twins.deliver_pending(seed)?;
        twins.converged()?;
    }
}

proptest! {
    #![proptest_config(config(240))]

    /// Drops too, repaired on our side only by `missing_for` answers and on
    /// dson's by full-state joins: both sides still agree at every step and
    /// at the end.
    #[test]
    fn registers_and_objects_match_dson_when_drops_are_repaired_by_anti_entropy(
        (steps, seed) in history(true),
    ) {
        let mut twins = Twins::new();
        for step in &steps {
            twins.step(step)?;
        }
        twins.deliver_pending(seed)?;
        twins.full_exchange()?;
        twins.converged()?;
    }
}

/// The targeted scenario of `reference/dson-check.md` (T7): B writes a field
/// then removes it while C writes it concurrently; in every delivery order
/// both sides end with C's value alone.
#[test]
fn a_removal_racing_a_concurrent_write_agrees_with_dson_in_every_order() {
    let set = |value: u64| Action::Set {
        obj: 0,
        field: 0,
        value: Value::Number(value),
    };
    let orders: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        let mut twins = Twins::new();
        twins.act(1, &set(12)).expect("B writes");
        twins
            .act(1, &Action::RemoveField { obj: 0, field: 0 })
            .expect("B removes");
        twins.act(2, &set(13)).expect("C writes");
        for i in order {
            twins
                .deliver(0, i)
                .expect("A agrees with dson after each delivery");
        }
        let view = twins.ours[0].view();
        assert_eq!(
            view["o0"]["f0"],
            BTreeSet::from([Value::Number(13)]),
            "order {order:?}"
        );
    }
}
