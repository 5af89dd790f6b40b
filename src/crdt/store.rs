//! The causal dot store: objects → fields → multi-value registers, with one
//! causal context — the delta-state CRDT of DESIGN.md.
//!
//! Owns [`DotStore`], [`Delta`] and the join. Generic over key, field and
//! value types so that it knows nothing of HAProxy; the model-level rules
//! (which fields an object may have, which values a field may hold) are
//! checked by the caller before a delta reaches [`DotStore::join`].
//!
//! Architecture invariant: applying a delta touches only the dots and keys
//! the delta names (ordered-index range lookups), never the whole document.
//! A join either applies completely or returns an error having changed
//! nothing.
//!
//! Per dot, the states form a chain: unseen, then every entry that may sit
//! under it (ordered by `outranks`), then seen-but-removed. The join takes
//! the greater per dot, so two different entries under one dot (only a
//! forger, or a replica that lost its data, makes them) resolve alike on
//! every peer in whatever order they arrive, and a removal still beats
//! every value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use super::dot::{Dot, DotSet, ReplicaId};
use super::hlc::Hlc;

/// A value in a register, with the stamp that orders it against concurrent
/// values of the same field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<V> {
    /// When (in hybrid logical time) the value was written.
    pub hlc: Hlc,
    /// The value.
    pub value: V,
}

/// A multi-value register: every value not yet overwritten by a write that
/// had seen it, keyed by the dot of the write that created it.
///
/// Almost every register holds one value, so it is a short vector sorted by
/// dot rather than a B-tree, whose smallest node reserves room for eleven
/// entries: a tenfold difference in memory for a large configuration.
/// Encoded as a map, exactly as a `BTreeMap<Dot, Stamped<V>>` would be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register<V>(Vec<(Dot, Stamped<V>)>);

impl<V> Default for Register<V> {
    fn default() -> Self {
        Register(Vec::new())
    }
}

impl<V> Register<V> {
    fn position(&self, dot: &Dot) -> Result<usize, usize> {
        self.0.binary_search_by(|(held, _)| held.cmp(dot))
    }

    /// The value written by `dot`, if live.
    pub fn get(&self, dot: &Dot) -> Option<&Stamped<V>> {
        self.position(dot).ok().map(|i| &self.0[i].1)
    }

    /// Whether `dot`'s value is live here.
    pub fn contains_key(&self, dot: &Dot) -> bool {
        self.position(dot).is_ok()
    }

    /// Puts `dot`'s value, returning the one it replaces.
    pub fn insert(&mut self, dot: Dot, stamped: Stamped<V>) -> Option<Stamped<V>> {
        match self.position(&dot) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, stamped)),
            Err(i) => {
                if self.0.is_empty() {
                    // Room for exactly the usual single value.
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, (dot, stamped));
                None
            }
        }
    }

    /// Takes `dot`'s value out.
    pub fn remove(&mut self, dot: &Dot) -> Option<Stamped<V>> {
        self.position(dot).ok().map(|i| self.0.remove(i).1)
    }

    /// Number of concurrent values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no value is live.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values with their dots, in dot order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Dot, &Stamped<V>)> + ExactSizeIterator {
        self.into_iter()
    }

    /// The dots, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Dot> + ExactSizeIterator {
        self.0.iter().map(|(dot, _)| dot)
    }

    /// The values, in dot order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Stamped<V>> + ExactSizeIterator {
        self.0.iter().map(|(_, stamped)| stamped)
    }
}

impl<'a, V> IntoIterator for &'a Register<V> {
    type Item = (&'a Dot, &'a Stamped<V>);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Dot, Stamped<V>)>,
        fn(&'a (Dot, Stamped<V>)) -> (&'a Dot, &'a Stamped<V>),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(dot, stamped)| (dot, stamped))
    }
}

impl<V> std::ops::Index<&Dot> for Register<V> {
    type Output = Stamped<V>;

    fn index(&self, dot: &Dot) -> &Stamped<V> {
        self.get(dot)
            .expect("no value for this dot in the register")
    }
}

impl<V: Serialize> Serialize for Register<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Register<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<V>(std::marker::PhantomData<V>);

        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
            type Value = Register<V>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map from dots to stamped values")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Register<V>, A::Error> {
                // The same outcome as decoding into a BTreeMap: sorted, and a
                // repeated dot keeps its last value; in O(n log n) whatever
                // the order sent. The size hint is capped: it comes from the
                // sender.
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(1).min(16));
                while let Some(entry) = map.next_entry::<Dot, Stamped<V>>()? {
                    entries.push(entry);
                }
                entries.reverse();
                entries.sort_by_key(|(dot, _)| *dot);
                entries.dedup_by_key(|(dot, _)| *dot);
                entries.shrink_to_fit();
                Ok(Register(entries))
            }
        }

        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// Objects → fields → registers: the shape of both a store and a delta.
pub type Objects<K, F, V> = BTreeMap<K, BTreeMap<F, Register<V>>>;

/// A delta (or a full state): some register entries plus the causal context
/// they are known under. A dot in `context` that has no entry in `objects`
/// means "this event was seen and its value is gone": that is how removals
/// and overwrites travel, with no tombstones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, F: Serialize, V: Serialize",
    deserialize = "K: Deserialize<'de> + Ord, F: Deserialize<'de> + Ord, V: Deserialize<'de>"
))]
pub struct Delta<K, F, V> {
    /// The register entries carried.
    pub objects: Objects<K, F, V>,
    /// Every dot the delta speaks for: its entries' dots and the dots it
    /// removes.
    pub context: DotSet,
}

impl<K, F, V> Default for Delta<K, F, V> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            context: DotSet::new(),
        }
    }
}

impl<K, F, V> Delta<K, F, V> {
    /// The same delta with every value passed through `f`, or `f`'s first
    /// error: for values stored in an older encoding (a store migration).
    pub fn try_map_values<W, E>(
        self,
        mut f: impl FnMut(V) -> Result<W, E>,
    ) -> Result<Delta<K, F, W>, E>
    where
        K: Ord,
        F: Ord,
    {
        let mut objects = BTreeMap::new();
        for (key, fields) in self.objects {
            let mut mapped = BTreeMap::new();
            for (field, register) in fields {
                let entries = register
                    .0
                    .into_iter()
                    .map(|(dot, Stamped { hlc, value })| {
                        Ok((
                            dot,
                            Stamped {
                                hlc,
                                value: f(value)?,
                            },
                        ))
                    })
                    .collect::<Result<_, E>>()?;
                mapped.insert(field, Register(entries));
            }
            objects.insert(key, mapped);
        }
        Ok(Delta {
            objects,
            context: self.context,
        })
    }

    /// Every entry as `(key, field, dot, stamped value)`, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&K, &F, Dot, &Stamped<V>)> {
        self.objects.iter().flat_map(|(k, fields)| {
            fields
                .iter()
                .flat_map(move |(f, reg)| reg.iter().map(move |(dot, s)| (k, f, *dot, s)))
        })
    }

    /// Adds one register entry (its dot must also be put in `context`).
    pub fn insert_entry(&mut self, key: K, field: F, dot: Dot, stamped: Stamped<V>)
    where
        K: Ord,
        F: Ord,
    {
        put(&mut self.objects, key, field, dot, stamped);
    }

    /// Removes the entry of `dot` (kept in `context`: the delta still
    /// speaks for it, so joining it removes whatever value a store holds
    /// under that dot).
    pub fn remove_entry(&mut self, dot: Dot)
    where
        K: Ord + Clone,
        F: Ord + Clone,
    {
        let found = self
            .entries()
            .find(|(_, _, d, _)| *d == dot)
            .map(|(k, f, _, _)| (k.clone(), f.clone()));
        let Some((key, field)) = found else {
            return;
        };
        let fields = self.objects.get_mut(&key).expect("found above");
        let register = fields.get_mut(&field).expect("found above");
        register.remove(&dot);
        if register.is_empty() {
            fields.remove(&field);
        }
        if fields.is_empty() {
            self.objects.remove(&key);
        }
    }

    /// Whether the delta carries nothing at all.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.context.is_empty()
    }
}

/// What joining a delta did to a [`DotStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined<K, F, V> {
    /// Whether the store changed (an entry or its context).
    pub changed: bool,
    /// The live entries the delta removed (it had seen them and did not
    /// carry them), as they were.
    pub removed: Vec<(K, F, Dot, Stamped<V>)>,
}

/// Why a delta was refused. In every case the store is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// An entry's dot is missing from the delta's own context.
    #[error("entry {0} is not covered by the delta's context")]
    EntryOutsideContext(Dot),
    /// One dot names two different entries inside the delta.
    #[error("dot {0} appears twice in the delta")]
    DuplicateDot(Dot),
}

/// The replicated document's state. See the module documentation.
#[derive(Clone, Debug)]
pub struct DotStore<K, F, V> {
    objects: Objects<K, F, V>,
    /// Where each live dot sits, for in-place removal by dot.
    index: BTreeMap<Dot, (K, F)>,
    context: DotSet,
    /// Order-independent hash of the live entries (wrapping sum of
    /// per-entry hashes), maintained incrementally.
    entries_hash: u128,
    /// Encoded size of the live entries (key, field, dot, stamp and value
    /// each), maintained with the hash from the same encoding: the
    /// document's size at no cost per write beyond the entries it touches.
    entries_bytes: u64,
    /// Which dots are live, summarised per bucket, maintained incrementally.
    live: LiveSummary,
}

impl<K, F, V> Default for DotStore<K, F, V> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            index: BTreeMap::new(),
            context: DotSet::new(),
            entries_hash: 0,
            entries_bytes: 0,
            live: LiveSummary::default(),
        }
    }
}

/// Counters per bucket of a [`LiveSummary`].
const BUCKET_COUNTERS: u64 = 1024;

/// Which dots a store holds live, summarised per (replica, bucket of 1024
/// counters) as a count and an order-independent hash. Two stores whose
/// summaries agree on a bucket hold the same live dots in it, so an
/// anti-entropy answer can leave that bucket's removals out: this keeps the
/// answer to a peer that is in sync small however many values were ever
/// overwritten. Buckets without live dots are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSummary(BTreeMap<(ReplicaId, u64), (u32, u64)>);

impl LiveSummary {
    fn bucket(dot: Dot) -> (ReplicaId, u64) {
        (dot.replica, dot.counter / BUCKET_COUNTERS)
    }

    fn dot_hash(dot: Dot) -> u64 {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&dot.replica.get().to_le_bytes());
        bytes[8..].copy_from_slice(&dot.counter.to_le_bytes());
        xxh3_64(&bytes)
    }

    fn add(&mut self, dot: Dot) {
        let (count, hash) = self.0.entry(Self::bucket(dot)).or_default();
        *count += 1;
        *hash = hash.wrapping_add(Self::dot_hash(dot));
    }

    fn remove(&mut self, dot: Dot) {
        let bucket = Self::bucket(dot);
        if let Some((count, hash)) = self.0.get_mut(&bucket) {
            *count -= 1;
            *hash = hash.wrapping_sub(Self::dot_hash(dot));
            if *count == 0 {
                self.0.remove(&bucket);
            }
        }
    }

    /// Number of buckets with live dots (the encoded size is proportional).
    pub fn bucket_count(&self) -> usize {
        self.0.len()
    }
}

/// What a peer tells about itself so that [`DotStore::missing_for_peer`]
/// can answer with exactly what it lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSummary {
    /// Every dot the peer has seen.
    pub context: DotSet,
    /// Which of them it holds live.
    pub live: LiveSummary,
}

/// Part of what a peer lacks ([`DotStore::missing_for_peer`]): a valid
/// delta of about the budget asked for at most, beyond it only by the
/// removals it carries (never cut) or by one entry larger than the budget
/// (which goes alone, so that every chunk makes progress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncChunk<K, F, V> {
    /// The delta to send.
    pub delta: Delta<K, F, V>,
    /// Whether it is all the peer lacks; if not, the peer's next summary
    /// (with this delta joined) gets the next part.
    pub complete: bool,
}

/// What one interval of a causal context adds to an encoded delta, at
/// most (replica id, two counters): what a chunk's budget counts for one.
const INTERVAL_BYTES: usize = 30;

impl<K, F, V> DotStore<K, F, V>
where
    K: Ord + Clone + Debug + Serialize,
    F: Ord + Clone + Debug + Serialize,
    V: Clone + Eq + Debug + Serialize,
{
    /// Every dot this store has seen.
    pub fn context(&self) -> &DotSet {
        &self.context
    }

    /// The live objects.
    pub fn objects(&self) -> &Objects<K, F, V> {
        &self.objects
    }

    /// Number of live register entries.
    pub fn entry_count(&self) -> usize {
        self.index.len()
    }

    /// Encoded size of the live entries, in bytes (what a full state
    /// carries, less the causal context).
    pub fn entries_bytes(&self) -> u64 {
        self.entries_bytes
    }

    /// The dots currently live in the register of `key.field`.
    pub fn field_dots(&self, key: &K, field: &F) -> impl Iterator<Item = Dot> + '_ {
        self.objects
            .get(key)
            .and_then(|fields| fields.get(field))
            .into_iter()
            .flat_map(|reg| reg.keys().copied())
    }

    /// The dots currently live anywhere in object `key`.
    pub fn object_dots(&self, key: &K) -> impl Iterator<Item = Dot> + '_ {
        self.objects
            .get(key)
            .into_iter()
            .flat_map(|fields| fields.values().flat_map(|reg| reg.keys().copied()))
    }

    /// A 128-bit digest of the live entries and the causal context: equal
    /// digests mean equal states. The entry part is maintained
    /// incrementally; the context part costs one pass over its intervals.
    pub fn digest(&self) -> u128 {
        let context = postcard::to_stdvec(&self.context).expect("a dot set always encodes");
        let mut bytes = self.entries_hash.to_le_bytes().to_vec();
        bytes.extend_from_slice(&context);
        xxh3_128(&bytes)
    }

    /// Joins `delta` into the store (the lattice join: commutative,
    /// associative, idempotent). Returns whether anything changed.
    ///
    /// An entry under a dot this store holds live with another key, field
    /// or value replaces the held one if it outranks it (the later stamp,
    /// then the greater encoding), and is dropped
    /// otherwise: see the module documentation.
    pub fn join(&mut self, delta: &Delta<K, F, V>) -> Result<Joined<K, F, V>, JoinError> {
        self.check(delta)?;
        let removed: Vec<_> = self
            .removed_by(delta)
            .into_iter()
            .filter_map(|dot| {
                let (key, field, stamped) = self.remove_entry(dot)?;
                Some((key, field, dot, stamped))
            })
            .collect();
        let mut changed = !removed.is_empty();

        for (key, field, dot, stamped) in delta.entries() {
            if !self.context.contains(dot) {
                self.insert_entry(key, field, dot, stamped);
                changed = true;
            } else if self.entry(dot).is_some_and(|held| {
                held != (key, field, stamped) && outranks((key, field, stamped), held)
            }) {
                self.remove_entry(dot);
                self.insert_entry(key, field, dot, stamped);
                changed = true;
            }
        }

        if !delta.context.is_subset_of(&self.context) {
            self.context.union_with(&delta.context);
            changed = true;
        }
        Ok(Joined { changed, removed })
    }

    /// The live dots joining `delta` removes: every one it has seen but does
    /// not carry (under any key and field: one it carries elsewhere is a
    /// conflict, not a removal). The range lookup per context interval
    /// keeps this proportional to the delta (plus the live dots inside its
    /// intervals).
    fn removed_by(&self, delta: &Delta<K, F, V>) -> Vec<Dot> {
        // Built only once a live dot is covered: most deltas remove nothing.
        let mut carried: Option<BTreeSet<Dot>> = None;
        let mut removed = Vec::new();
        for (replica, range) in delta.context.ranges() {
            for (dot, _) in self.covered(replica, range) {
                let carried = carried
                    .get_or_insert_with(|| delta.entries().map(|(_, _, dot, _)| dot).collect());
                if !carried.contains(dot) {
                    removed.push(*dot);
                }
            }
        }
        removed
    }

    /// The dots `delta` carries an entry under that this store holds live
    /// with another key, field or value: the conflicts joining it resolves.
    pub fn contested_by<'a>(&'a self, delta: &'a Delta<K, F, V>) -> impl Iterator<Item = Dot> + 'a {
        delta
            .entries()
            .filter(|&(key, field, dot, stamped)| {
                self.entry(dot)
                    .is_some_and(|held| held != (key, field, stamped))
            })
            .map(|(_, _, dot, _)| dot)
    }

    /// The live dots of `replica` whose counters `range` covers, with their
    /// object and field: one range lookup in the index.
    fn covered(
        &self,
        replica: ReplicaId,
        range: std::ops::RangeInclusive<u64>,
    ) -> std::collections::btree_map::Range<'_, Dot, (K, F)> {
        let from = Dot {
            replica,
            counter: *range.start(),
        };
        let to = Dot {
            replica,
            counter: *range.end(),
        };
        self.index.range(from..=to)
    }

    /// The live entry of `dot`: its object, field and stamped value.
    pub fn entry(&self, dot: Dot) -> Option<(&K, &F, &Stamped<V>)> {
        let (key, field) = self.index.get(&dot)?;
        let stamped = self.objects.get(key)?.get(field)?.get(&dot)?;
        Some((key, field, stamped))
    }

    /// Read-only validation of a delta against itself.
    fn check(&self, delta: &Delta<K, F, V>) -> Result<(), JoinError> {
        let mut seen = DotSet::new();
        for (_, _, dot, _) in delta.entries() {
            if !delta.context.contains(dot) {
                return Err(JoinError::EntryOutsideContext(dot));
            }
            if seen.contains(dot) {
                return Err(JoinError::DuplicateDot(dot));
            }
            seen.insert(dot);
        }
        Ok(())
    }

    /// This store's [`SyncSummary`], for a peer to answer with what this
    /// store lacks.
    pub fn summary(&self) -> SyncSummary {
        SyncSummary {
            context: self.context.clone(),
            live: self.live.clone(),
        }
    }

    /// What a peer whose causal context is `peer` lacks: the entries it has
    /// not seen, and — so that removals it missed are repaired too — the
    /// context of everything it has not seen plus every dot both have seen
    /// that is no longer live here. All of it in one delta, whatever its
    /// size (for tests and tools; peers use [`DotStore::missing_for_peer`]).
    pub fn missing_for(&self, peer: &DotSet) -> Delta<K, F, V> {
        self.missing(peer, None, usize::MAX).delta
    }

    /// Like [`DotStore::missing_for`], but leaves out the removals of every
    /// bucket where the peer's live summary equals this store's (there the
    /// peer holds exactly the live dots this store holds), and stops at
    /// about `budget` bytes (see [`SyncChunk`]).
    pub fn missing_for_peer(&self, peer: &SyncSummary, budget: usize) -> SyncChunk<K, F, V> {
        self.missing(&peer.context, Some(&peer.live), budget)
    }

    /// Removals first: of every dot both have seen, those no longer live
    /// here, in the buckets where the peer's live dots may differ — never
    /// cut, since a peer whose removals were cut would be sent the same
    /// first ones again and again (they are computed from this side's live
    /// dots, and the peer's summary cannot say which it still holds); at
    /// most one interval per dot live here, plus one per bucket. Then the
    /// unseen dots, by replica and counter, cut where the next entry would
    /// pass `budget`: the delta then speaks for the dots up to the cut only
    /// (the context ends just before the first entry left out), so that it
    /// is a valid delta on its own and what is left is exactly what a later
    /// call finds missing.
    fn missing(
        &self,
        peer: &DotSet,
        peer_live: Option<&LiveSummary>,
        budget: usize,
    ) -> SyncChunk<K, F, V> {
        let mut delta = Delta::default();
        for (replica, range) in self.context.intersection(peer).ranges() {
            let Some(peer_live) = peer_live else {
                self.insert_holes(replica, range, &mut delta.context);
                continue;
            };
            // Only buckets where the peer holds live dots can need a
            // removal, and only those where its live dots differ from this
            // side's; walking just those keeps the cost to the live state,
            // not to the history.
            let lo = (replica, range.start() / BUCKET_COUNTERS);
            let hi = (replica, range.end() / BUCKET_COUNTERS);
            for (&(_, bucket), summary) in peer_live.0.range(lo..=hi) {
                if self.live.0.get(&(replica, bucket)) == Some(summary) {
                    continue;
                }
                let start = (*range.start()).max(bucket * BUCKET_COUNTERS);
                let end = (*range.end()).min(bucket * BUCKET_COUNTERS + BUCKET_COUNTERS - 1);
                self.insert_holes(replica, start..=end, &mut delta.context);
            }
        }
        let mut left = budget.saturating_sub(
            postcard::experimental::serialized_size(&delta.context)
                .expect("a dot set always encodes"),
        );
        let mut taken = false;
        for (replica, range) in self.context.difference(peer).ranges() {
            let start = *range.start();
            for (dot, (key, field)) in self.covered(replica, range.clone()) {
                let stamped = &self.objects[key][field][dot];
                let size = postcard::experimental::serialized_size(&(key, field, dot, stamped))
                    .expect("entries always encode");
                // An entry larger than the budget goes alone (the
                // removals do not count), so that every chunk makes
                // progress.
                if size.saturating_add(INTERVAL_BYTES) > left && taken {
                    if dot.counter > start {
                        delta
                            .context
                            .insert_interval(replica, start..=dot.counter - 1);
                    }
                    return SyncChunk {
                        delta,
                        complete: false,
                    };
                }
                left = left.saturating_sub(size);
                taken = true;
                delta.insert_entry(key.clone(), field.clone(), *dot, stamped.clone());
            }
            left = left.saturating_sub(INTERVAL_BYTES);
            taken = true;
            delta.context.insert_interval(replica, range);
        }
        SyncChunk {
            delta,
            complete: true,
        }
    }

    /// Adds to `context` the counters of `range` that are not live here.
    fn insert_holes(
        &self,
        replica: ReplicaId,
        range: std::ops::RangeInclusive<u64>,
        context: &mut DotSet,
    ) {
        let mut next = *range.start();
        let from = Dot {
            replica,
            counter: next,
        };
        let to = Dot {
            replica,
            counter: *range.end(),
        };
        for dot in self.index.range(from..=to).map(|(dot, _)| dot) {
            if dot.counter > next {
                context.insert_interval(replica, next..=dot.counter - 1);
            }
            next = dot.counter + 1;
        }
        if next <= *range.end() {
            context.insert_interval(replica, next..=*range.end());
        }
    }

    /// The whole state as a delta (for a new or far-behind peer, and for
    /// persistence).
    pub fn full_state(&self) -> Delta<K, F, V> {
        Delta {
            objects: self.objects.clone(),
            context: self.context.clone(),
        }
    }

    fn insert_entry(&mut self, key: &K, field: &F, dot: Dot, stamped: &Stamped<V>) {
        let (hash, bytes) = entry_hash(key, field, dot, stamped);
        self.entries_hash = self.entries_hash.wrapping_add(hash);
        self.entries_bytes += bytes;
        self.index.insert(dot, (key.clone(), field.clone()));
        self.live.add(dot);
        put(
            &mut self.objects,
            key.clone(),
            field.clone(),
            dot,
            stamped.clone(),
        );
    }

    /// Removes the live entry under `dot`, returning it.
    fn remove_entry(&mut self, dot: Dot) -> Option<(K, F, Stamped<V>)> {
        let (key, field) = self.index.remove(&dot)?;
        let fields = self
            .objects
            .get_mut(&key)
            .expect("index points at a live object");
        let register = fields
            .get_mut(&field)
            .expect("index points at a live field");
        let stamped = register.remove(&dot).expect("index points at a live entry");
        self.live.remove(dot);
        let (hash, bytes) = entry_hash(&key, &field, dot, &stamped);
        self.entries_hash = self.entries_hash.wrapping_sub(hash);
        self.entries_bytes -= bytes;
        if register.is_empty() {
            fields.remove(&field);
            if fields.is_empty() {
                self.objects.remove(&key);
            }
        }
        Some((key, field, stamped))
    }
}

/// Whether entry `a` wins over entry `b` under one dot: the later stamp,
/// then the greater encoding of (key, field, value). A total order every
/// peer computes alike, so a dot held with two entries resolves to the same
/// one everywhere. Equal entries outrank neither way.
fn outranks<K: Serialize, F: Serialize, V: Serialize>(
    a: (&K, &F, &Stamped<V>),
    b: (&K, &F, &Stamped<V>),
) -> bool {
    // The encodings only on a tie of stamps (a forger's copy): joining
    // entries already held, the common case, costs no encoding.
    let encoded = |(key, field, stamped): (&K, &F, &Stamped<V>)| {
        postcard::to_stdvec(&(key, field, &stamped.value)).expect("entries always encode")
    };
    a.2.hlc
        .cmp(&b.2.hlc)
        .then_with(|| encoded(a).cmp(&encoded(b)))
        .is_gt()
}

/// Puts one register entry into objects → fields → registers.
fn put<K: Ord, F: Ord, V>(
    objects: &mut Objects<K, F, V>,
    key: K,
    field: F,
    dot: Dot,
    stamped: Stamped<V>,
) {
    objects
        .entry(key)
        .or_default()
        .entry(field)
        .or_default()
        .insert(dot, stamped);
}

/// The hash of one live entry's encoding, and the encoding's length.
fn entry_hash<K: Serialize, F: Serialize, V: Serialize>(
    key: &K,
    field: &F,
    dot: Dot,
    stamped: &Stamped<V>,
) -> (u128, u64) {
    let bytes = postcard::to_stdvec(&(key, field, dot, stamped)).expect("entries always encode");
    (xxh3_128(&bytes), bytes.len() as u64)
}
