//! End-of-run checkers: identical peers, no lost acknowledged write, no
//! resurrection, bounded queues; against hostile members, no implausible
//! claim and no far-future value joined.

use std::collections::BTreeMap;

use aqueduct::crdt::model::{FieldId, FieldValue, ObjectKey};
use aqueduct::crdt::{ConfigDelta, Digest, Dot, DotSet, Replica, ReplicaId};

/// What the simulator remembers of one acknowledged write.
#[derive(Debug, Clone)]
pub struct WriteRecord {
    /// The write's own dot (its broadcast id).
    pub id: Dot,
    /// Simulated microseconds of its acknowledgment.
    pub acked_at_us: u64,
    /// The values it wrote: dot, object, value.
    pub written: Vec<(Dot, ObjectKey, FieldValue)>,
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

/// The lost writes (by index, with the first value of each that is gone:
/// its index in `written`, or `None` when the write's own dot was never
/// seen) and the number of resurrections, against a converged replica.
///
/// A written value is lost if the replica never saw its dot, or no longer
/// holds it although no acknowledged write superseded it, and its replica
/// did not write it again: the same value in the same field under a later
/// dot of its own (what a replica does with its values that a forged claim
/// on its dots removed) that is live or that an acknowledged write
/// superseded. `persisted` is every delta any peer persisted, where such
/// writes-again are found. A value is resurrected if an acknowledged write
/// superseded it and it is live.
pub fn lost_and_resurrected<'a>(
    writes: &[WriteRecord],
    replica: &Replica,
    persisted: impl IntoIterator<Item = &'a ConfigDelta>,
) -> (Vec<(usize, Option<usize>)>, usize) {
    let state = replica.full_state();
    let live: DotSet = state.entries().map(|(_, _, dot, _)| dot).collect();
    let mut values_by_replica: BTreeMap<
        (ObjectKey, FieldId, ReplicaId),
        BTreeMap<Dot, FieldValue>,
    > = BTreeMap::new();
    for delta in persisted {
        for (key, field, dot, stamped) in delta.entries() {
            values_by_replica
                .entry((key.clone(), *field, dot.replica))
                .or_default()
                .insert(dot, stamped.value.clone());
        }
    }
    let superseded: DotSet = writes
        .iter()
        .filter(|w| !w.lost_with_disk)
        .flat_map(|w| w.superseded.iter().copied())
        .collect();
    let written_again = |dot: Dot, key: &ObjectKey, value: &FieldValue| {
        values_by_replica
            .get(&(key.clone(), value.field(), dot.replica))
            .is_some_and(|values| {
                values.range(dot..).any(|(again, held)| {
                    *again != dot
                        && held == value
                        && (live.contains(*again) || superseded.contains(*again))
                })
            })
    };
    let lost = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| !w.lost_with_disk)
        .filter_map(|(i, w)| {
            if !replica.context().contains(w.id) {
                return Some((i, None));
            }
            let gone = w.written.iter().position(|(dot, key, value)| {
                !live.contains(*dot)
                    && !superseded.contains(*dot)
                    && !written_again(*dot, key, value)
            })?;
            Some((i, Some(gone)))
        })
        .collect();
    let resurrected = state
        .entries()
        .filter(|(_, _, dot, _)| superseded.contains(*dot))
        .count();
    (lost, resurrected)
}

/// The highest claimed dot of every replica in `context` whose counter is
/// at least `at_least`: claims no replica can have issued.
pub fn implausible_claims(context: &DotSet, at_least: u64) -> Vec<Dot> {
    let mut claims: BTreeMap<_, Dot> = BTreeMap::new();
    for (replica, range) in context.ranges() {
        if *range.end() >= at_least {
            let top = Dot::new(replica, *range.end()).expect("a valid counter");
            claims.insert(replica, top);
        }
    }
    claims.into_values().collect()
}

/// Live values of `replica` stamped, or (leases) renewed, after wall time
/// `bound_ms`.
pub fn future_values(replica: &Replica, bound_ms: u64) -> usize {
    replica
        .full_state()
        .entries()
        .filter(|(_, _, _, stamped)| {
            let renewed = match &stamped.value {
                FieldValue::Lease(lease) => lease.renewed_at_ms(),
                _ => 0,
            };
            stamped.hlc.wall_ms > bound_ms || renewed > bound_ms
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aqueduct::crdt::model::{Keepalive, Name};
    use aqueduct::crdt::{Command, ReplicaId};

    fn replica_with_writes(count: usize) -> (Replica, Vec<WriteRecord>) {
        let mut replica = Replica::new(ReplicaId::new(1).expect("non-zero"));
        let mut records = Vec::new();
        for i in 0..count {
            let command = Command::PutFrontend {
                name: Name::new(&format!("fe{i}")).expect("valid"),
                frontend: aqueduct::crdt::model::Frontend {
                    bind: aqueduct::crdt::model::Binds::parse("*:80").expect("valid"),
                    backend: Name::new("be").expect("valid"),
                    mode: Default::default(),
                    keepalive: Keepalive::Default,
                    rules: Default::default(),
                    natives: Default::default(),
                },
            };
            let delta = replica.execute(&command, 1_000).expect("valid command");
            let written: Vec<(Dot, ObjectKey, FieldValue)> = delta
                .entries()
                .map(|(key, _, dot, stamped)| (dot, key.clone(), stamped.value.clone()))
                .collect();
            records.push(WriteRecord {
                id: written.last().expect("a put writes").0,
                acked_at_us: 0,
                written,
                superseded: Vec::new(),
                lost_with_disk: false,
            });
        }
        (replica, records)
    }

    #[test]
    fn a_write_missing_without_a_superseding_write_counts_as_lost() {
        let (replica, mut records) = replica_with_writes(2);
        assert_eq!(
            lost_and_resurrected(&records, &replica, &[replica.full_state()]),
            (Vec::new(), 0)
        );
        let never_applied = Dot::new(ReplicaId::new(9).expect("non-zero"), 1).expect("valid");
        records[1].id = never_applied;
        records[1].written[0].0 = never_applied;
        records[1].written.truncate(1);
        assert_eq!(
            lost_and_resurrected(&records, &replica, &[replica.full_state()]).0,
            vec![(1, None)]
        );
        records[1].lost_with_disk = true;
        assert!(
            lost_and_resurrected(&records, &replica, &[replica.full_state()])
                .0
                .is_empty()
        );
    }

    #[test]
    fn a_value_its_replica_wrote_again_under_a_later_dot_is_not_lost() {
        let (mut replica, mut records) = replica_with_writes(2);
        // Remove fe0: its dots (the first write's) are gone from the state.
        let delete = Command::DeleteFrontend {
            name: Name::new("fe0").expect("valid"),
        };
        replica.execute(&delete, 1_000).expect("fe0 exists");
        let gone = records[0].written[0].0;
        // Pretend the second write's first value (fe1's bind) had been
        // written under that gone dot: fe1 still holds it, under a later
        // dot of the same replica.
        records[0].written = vec![(
            gone,
            records[1].written[0].1.clone(),
            records[1].written[0].2.clone(),
        )];
        assert!(
            lost_and_resurrected(&records, &replica, &[replica.full_state()])
                .0
                .is_empty()
        );
        // Another value in that field is lost.
        let other = aqueduct::crdt::model::FieldValue::Mode(aqueduct::crdt::model::Mode::Tcp);
        records[0].written[0].2 = other;
        assert_eq!(
            lost_and_resurrected(&records, &replica, &[replica.full_state()]).0,
            vec![(0, Some(0))]
        );
    }

    #[test]
    fn a_value_written_again_then_superseded_by_an_acknowledged_write_is_not_lost() {
        let (mut replica, mut records) = replica_with_writes(2);
        records[0].written.truncate(1);
        let (gone, key, value) = records[0].written[0].clone();
        // Written again under a later dot (persisted), then overwritten by
        // a write that had seen that later dot.
        let again = replica.full_state();
        let delete = Command::DeleteFrontend {
            name: Name::new("fe0").expect("valid"),
        };
        replica.execute(&delete, 1_000).expect("fe0 exists");
        let mut rewrite = again.clone();
        let later = Dot::new(gone.replica, 1_000).expect("valid");
        rewrite.insert_entry(
            key.clone(),
            value.field(),
            later,
            aqueduct::crdt::Stamped {
                hlc: aqueduct::crdt::Hlc::default(),
                value: value.clone(),
            },
        );
        assert_eq!(
            lost_and_resurrected(&records, &replica, &[rewrite.clone()]).0,
            vec![(0, Some(0))],
            "written again but neither live nor superseded"
        );
        records[1].superseded = vec![later];
        assert!(
            lost_and_resurrected(&records, &replica, &[rewrite])
                .0
                .is_empty()
        );
    }

    #[test]
    fn a_live_value_that_a_write_superseded_counts_as_resurrected() {
        let (replica, mut records) = replica_with_writes(2);
        records[1].superseded = vec![records[0].written[0].0];
        assert_eq!(
            lost_and_resurrected(&records, &replica, &[replica.full_state()]).1,
            1
        );
    }

    #[test]
    fn divergence_is_counted_against_the_most_common_digest() {
        let a = aqueduct::crdt::Digest(1);
        let b = aqueduct::crdt::Digest(2);
        assert_eq!(divergent_peers(&[a, a, b, a]), 1);
        assert_eq!(divergent_peers(&[a, a]), 0);
    }

    #[test]
    fn only_claims_at_or_above_the_bound_are_implausible() {
        let dot = |replica, counter| {
            Dot::new(ReplicaId::new(replica).expect("non-zero"), counter).expect("valid")
        };
        let context: DotSet = [dot(1, 5), dot(2, 1 << 52), dot(2, 3), dot(3, (1 << 52) - 1)]
            .into_iter()
            .collect();
        assert_eq!(implausible_claims(&context, 1 << 52), vec![dot(2, 1 << 52)]);
    }

    #[test]
    fn values_stamped_or_leases_renewed_after_the_bound_are_future_values() {
        let (mut replica, _) = replica_with_writes(1);
        assert_eq!(future_values(&replica, 1_000), 0);
        assert_eq!(future_values(&replica, 999), replica.entry_count());
        let renewed_later = aqueduct::crdt::model::Registration {
            meta: aqueduct::crdt::model::Meta::new("{}").expect("valid"),
            lease: aqueduct::crdt::model::Lease::new(5_000, 10_000).expect("valid"),
        };
        let key = aqueduct::crdt::model::RegistrationKey {
            service: aqueduct::crdt::model::ServiceName::new("svc").expect("valid"),
            version: aqueduct::crdt::model::Version::new("1.0.0").expect("valid"),
            host: aqueduct::crdt::model::Host::new("10.0.0.1").expect("valid"),
            port: aqueduct::crdt::model::Port::new(80).expect("valid"),
        };
        let command = Command::Register {
            key,
            registration: renewed_later,
        };
        replica.execute(&command, 1_000).expect("valid command");
        assert_eq!(future_values(&replica, 1_000), 1);
    }
}
