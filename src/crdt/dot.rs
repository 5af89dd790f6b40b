//! Dots and causal contexts: the causal bookkeeping of the document.
//!
//! Owns [`ReplicaId`], [`Dot`] and [`DotSet`] (a set of dots stored as
//! per-replica interval sets, used both as a replica's causal context and as
//! the context carried by a delta). Must not know anything about objects,
//! fields or values.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use rangemap::RangeInclusiveSet;
use serde::{Deserialize, Serialize};

use super::DecodeError;

/// Identity of one replica of the document: a random 64-bit number chosen
/// once per data directory, never 0 (0 is reserved so that a zeroed or
/// garbage id is recognisably invalid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct ReplicaId(u64);

impl ReplicaId {
    /// A replica id from a raw number; `None` for the reserved 0.
    pub fn new(raw: u64) -> Option<Self> {
        (raw != 0).then_some(Self(raw))
    }

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for ReplicaId {
    type Error = DecodeError;
    fn try_from(raw: u64) -> Result<Self, DecodeError> {
        Self::new(raw).ok_or(DecodeError::ZeroReplicaId)
    }
}

impl From<ReplicaId> for u64 {
    fn from(id: ReplicaId) -> u64 {
        id.0
    }
}

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One event of one replica: the replica's id and its counter, starting at 1.
/// Every write (and every removal) mints a fresh dot; a dot is never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "(ReplicaId, u64)", into = "(ReplicaId, u64)")]
pub struct Dot {
    /// The replica that minted the dot.
    pub replica: ReplicaId,
    /// The replica's counter for this event, 1-based.
    pub counter: u64,
}

impl Dot {
    /// The largest valid counter. Far beyond any real count of writes; it
    /// bounds what a peer may claim, so counter arithmetic never overflows.
    pub const COUNTER_MAX: u64 = 1 << 62;

    /// A dot; `None` for the invalid counter 0 or one above
    /// [`Dot::COUNTER_MAX`].
    pub fn new(replica: ReplicaId, counter: u64) -> Option<Self> {
        (1..=Self::COUNTER_MAX)
            .contains(&counter)
            .then_some(Self { replica, counter })
    }
}

impl TryFrom<(ReplicaId, u64)> for Dot {
    type Error = DecodeError;
    fn try_from((replica, counter): (ReplicaId, u64)) -> Result<Self, DecodeError> {
        Self::new(replica, counter).ok_or(DecodeError::CounterOutOfRange)
    }
}

impl From<Dot> for (ReplicaId, u64) {
    fn from(dot: Dot) -> Self {
        (dot.replica, dot.counter)
    }
}

impl std::fmt::Display for Dot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.replica, self.counter)
    }
}

/// A set of dots, per replica a set of counter intervals. Compact when the
/// dots are mostly contiguous, which is the normal state of a causal context
/// (everything up to some counter, plus a few out-of-order dots).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DotSetWire", into = "DotSetWire")]
pub struct DotSet {
    by_replica: BTreeMap<ReplicaId, RangeInclusiveSet<u64>>,
}

/// Wire form of a [`DotSet`]: per replica, `(first, last)` counter pairs.
/// Decoding validates every pair (1 ≤ first ≤ last), so hostile input cannot
/// reach the interval set's panicking constructors.
#[derive(Serialize, Deserialize)]
struct DotSetWire(Vec<(ReplicaId, Vec<(u64, u64)>)>);

impl TryFrom<DotSetWire> for DotSet {
    type Error = DecodeError;
    fn try_from(wire: DotSetWire) -> Result<Self, DecodeError> {
        let mut set = DotSet::default();
        for (replica, ranges) in wire.0 {
            for (first, last) in ranges {
                if first == 0 || first > last || last > Dot::COUNTER_MAX {
                    return Err(DecodeError::BadInterval { first, last });
                }
                set.insert_interval(replica, first..=last);
            }
        }
        Ok(set)
    }
}

impl From<DotSet> for DotSetWire {
    fn from(set: DotSet) -> Self {
        DotSetWire(
            set.by_replica
                .into_iter()
                .map(|(replica, ranges)| {
                    (
                        replica,
                        ranges.iter().map(|r| (*r.start(), *r.end())).collect(),
                    )
                })
                .collect(),
        )
    }
}

impl DotSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `dot` is in the set.
    pub fn contains(&self, dot: Dot) -> bool {
        self.by_replica
            .get(&dot.replica)
            .is_some_and(|ranges| ranges.contains(&dot.counter))
    }

    /// Adds one dot.
    pub fn insert(&mut self, dot: Dot) {
        self.insert_interval(dot.replica, dot.counter..=dot.counter);
    }

    /// Adds the counters `range` of `replica`.
    ///
    /// # Panics
    /// If the range is empty or not within 1 to [`Dot::COUNTER_MAX`].
    pub fn insert_interval(&mut self, replica: ReplicaId, range: RangeInclusive<u64>) {
        assert!(
            *range.start() >= 1 && range.start() <= range.end() && *range.end() <= Dot::COUNTER_MAX,
            "a dot interval within 1 to Dot::COUNTER_MAX"
        );
        self.by_replica.entry(replica).or_default().insert(range);
    }

    /// Adds every dot of `other`.
    pub fn union_with(&mut self, other: &DotSet) {
        for (replica, range) in other.ranges() {
            self.insert_interval(replica, range);
        }
    }

    /// The highest counter of `replica` in the set (0 when none).
    pub fn max_counter(&self, replica: ReplicaId) -> u64 {
        self.by_replica
            .get(&replica)
            .and_then(|ranges| ranges.last())
            .map_or(0, |r| *r.end())
    }

    /// Every `(replica, counter interval)` of the set, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (ReplicaId, RangeInclusive<u64>)> + '_ {
        self.by_replica
            .iter()
            .flat_map(|(replica, ranges)| ranges.iter().map(move |r| (*replica, r.clone())))
    }

    /// Number of intervals (the encoded size is proportional to it).
    pub fn interval_count(&self) -> usize {
        self.by_replica.values().map(RangeInclusiveSet::len).sum()
    }

    /// Whether the set holds no dot.
    pub fn is_empty(&self) -> bool {
        self.by_replica.is_empty()
    }

    /// The dots of `self` that are not in `other`.
    pub fn difference(&self, other: &DotSet) -> DotSet {
        let mut out = DotSet::new();
        for (replica, mine) in &self.by_replica {
            match other.by_replica.get(replica) {
                None => {
                    out.by_replica.insert(*replica, mine.clone());
                }
                Some(theirs) => {
                    for range in mine.iter() {
                        for gap in theirs.gaps(range) {
                            out.insert_interval(*replica, gap);
                        }
                    }
                }
            }
        }
        out
    }

    /// The dots that are in both `self` and `other`.
    pub fn intersection(&self, other: &DotSet) -> DotSet {
        let mut out = DotSet::new();
        for (replica, mine) in &self.by_replica {
            if let Some(theirs) = other.by_replica.get(replica) {
                for range in mine.intersection(theirs) {
                    out.insert_interval(*replica, range);
                }
            }
        }
        out
    }

    /// Whether every dot of `self` is in `other`.
    pub fn is_subset_of(&self, other: &DotSet) -> bool {
        self.difference(other).is_empty()
    }
}

impl FromIterator<Dot> for DotSet {
    fn from_iter<I: IntoIterator<Item = Dot>>(iter: I) -> Self {
        let mut set = DotSet::new();
        for dot in iter {
            set.insert(dot);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(replica: u64, counter: u64) -> Dot {
        Dot::new(ReplicaId::new(replica).unwrap(), counter).unwrap()
    }

    #[test]
    fn contiguous_dots_collapse_into_one_interval() {
        let set: DotSet = (1..=100).map(|c| dot(7, c)).collect();
        assert_eq!(set.interval_count(), 1);
        assert_eq!(set.max_counter(ReplicaId::new(7).unwrap()), 100);
    }

    #[test]
    fn difference_and_intersection_partition_a_set() {
        let a: DotSet = [dot(1, 1), dot(1, 2), dot(1, 5), dot(2, 1)]
            .into_iter()
            .collect();
        let b: DotSet = [dot(1, 2), dot(1, 3), dot(2, 1)].into_iter().collect();
        let only_a = a.difference(&b);
        let both = a.intersection(&b);
        assert_eq!(only_a, [dot(1, 1), dot(1, 5)].into_iter().collect());
        assert_eq!(both, [dot(1, 2), dot(2, 1)].into_iter().collect());
        let mut rebuilt = only_a.clone();
        rebuilt.union_with(&both);
        assert_eq!(rebuilt, a);
    }

    #[test]
    fn decoding_rejects_empty_and_zero_intervals() {
        let bad = postcard::to_stdvec(&DotSetWire(vec![(
            ReplicaId::new(1).unwrap(),
            vec![(5, 4)],
        )]))
        .unwrap();
        assert!(postcard::from_bytes::<DotSet>(&bad).is_err());
        let zero = postcard::to_stdvec(&DotSetWire(vec![(
            ReplicaId::new(1).unwrap(),
            vec![(0, 4)],
        )]))
        .unwrap();
        assert!(postcard::from_bytes::<DotSet>(&zero).is_err());
    }

    #[test]
    fn decoding_rejects_replica_zero() {
        let bytes = postcard::to_stdvec(&(0u64, 1u64)).unwrap();
        assert!(postcard::from_bytes::<Dot>(&bytes).is_err());
    }
}
