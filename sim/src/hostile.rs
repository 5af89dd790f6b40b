//! The hostile member: a peer that joined the mesh normally, with its own
//! identity, and relays like any other, but never writes through the API
//! and, at random times, sends honest peers forged messages — each a valid
//! wire message built with the crate's own types and `wire::encode`, and
//! for membership foca's own packet format.
//!
//! Owns what each kind of forgery looks like and the per-kind counts the
//! report shows. Must not decide when, from whom or to whom a forgery goes,
//! nor touch the world: the world draws those and hands in a [`Scene`]
//! (what an attacker could have learnt: identities, replica ids, counters).

use std::collections::BTreeMap;
use std::time::Duration;

use aqueduct::crdt::model::{Lease, Meta, ObjectKey, OwnerId};
use aqueduct::crdt::{ConfigDelta, Digest, Dot, DotSet, Hlc, ReplicaId, Stamped};
use aqueduct::gossip::wire::{self, Message, RingRange};
use aqueduct::gossip::{ApplyReport, MemberId, PeerReport, append_updates};
use foca::{Codec, Header, Member, PostcardCodec, State};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::workload;

/// The smallest counter a far claim uses: above the plausibility ceiling
/// (wall ms + twice the skew bound, times 1024) of any wall clock before
/// the year 2100, so that a far claim is never plausible.
pub const FAR_CLAIM_MIN: u64 = 1 << 52;

/// A near claim reaches at most this far beyond the victim's counter.
const NEAR_CLAIM_MAX: u64 = 64;

/// How far ahead a far-future stamp or renewal lies, at least.
const FUTURE_MIN: Duration = Duration::from_secs(24 * 3600);

/// How far ahead, at most (about 30 years); sometimes the latest stamp
/// that decodes at all is used instead.
const FUTURE_MAX: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// How often one hostile member forges a message: a uniform draw in this
/// range (ms) between two forgeries.
pub const FORGE_EVERY_MS: std::ops::RangeInclusive<u64> = 5..=40;

/// The text of every forged HAProxy report: what the original attack made
/// honest peers show about a forked victim.
pub const FORGED_REPORT_ERROR: &str = "all good";

/// A kind of forged message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
#[clap(rename_all = "snake_case")]
pub enum Forgery {
    /// A delta whose causal context claims an honest replica's dots far
    /// beyond anything it can have issued (up to 2^62), with or without an
    /// entry attributed to it.
    FarContext,
    /// A delta claiming an honest replica's next few never-issued dots
    /// (plausible), with or without an entry attributed to it.
    NearContext,
    /// An entry, under the hostile member's own replica, stamped years
    /// ahead.
    FutureStamp,
    /// A registration whose lease was renewed years ahead.
    FutureLease,
    /// Reports about honest peers: the highest (generation, sequence), a
    /// fake digest, an HAProxy that is "all good".
    Report,
    /// SWIM gossip declaring an honest member down.
    SwimDown,
    /// SWIM gossip declaring an honest member suspect.
    SwimSuspect,
}

impl Forgery {
    /// Every kind, in report order.
    pub const ALL: [Forgery; 7] = [
        Forgery::FarContext,
        Forgery::NearContext,
        Forgery::FutureStamp,
        Forgery::FutureLease,
        Forgery::Report,
        Forgery::SwimDown,
        Forgery::SwimSuspect,
    ];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Forgery::FarContext => "far_context",
            Forgery::NearContext => "near_context",
            Forgery::FutureStamp => "future_stamp",
            Forgery::FutureLease => "future_lease",
            Forgery::Report => "report",
            Forgery::SwimDown => "swim_down",
            Forgery::SwimSuspect => "swim_suspect",
        }
    }
}

/// What the forger knows when it forges: its own identity and replica,
/// the receiver's identity, and an honest victim's identity, replica and
/// current counter.
pub struct Scene {
    /// The hostile member's current SWIM identity.
    pub hostile: MemberId,
    /// The hostile member's replica id (its own writes would carry it).
    pub hostile_replica: ReplicaId,
    /// The last counter of `hostile_replica` the forger used.
    pub hostile_counter: u64,
    /// The honest peer the forgery goes to.
    pub receiver: MemberId,
    /// The honest peer the forgery is about.
    pub victim: MemberId,
    /// The victim's replica id.
    pub victim_replica: ReplicaId,
    /// The highest counter the victim has issued.
    pub victim_counter: u64,
    /// The forger's wall clock (ms).
    pub wall_ms: u64,
}

/// A forgery ready to send.
pub struct Forged {
    /// The encoded wire message.
    pub bytes: Vec<u8>,
    /// Counters of the hostile replica it used up.
    pub counters_used: u64,
    /// The fake digests of forged reports, to recognise them if an honest
    /// peer ever shows one.
    pub report_digests: Vec<Digest>,
    /// What it claims, for the trace.
    pub claims: String,
}

/// Builds one forgery of `kind`.
pub fn forge(kind: Forgery, scene: &Scene, rng: &mut ChaCha8Rng) -> Forged {
    let mut forged = Forged {
        bytes: Vec::new(),
        counters_used: 0,
        report_digests: Vec::new(),
        claims: String::new(),
    };
    let message = match kind {
        Forgery::FarContext => {
            let far = rng.random_range(FAR_CLAIM_MIN..=Dot::COUNTER_MAX);
            let first = if rng.random_bool(0.5) {
                1
            } else {
                scene.victim_counter + 1
            };
            claim(scene, first, far, &mut forged, rng)
        }
        Forgery::NearContext => {
            let near = scene.victim_counter + rng.random_range(1..=NEAR_CLAIM_MAX);
            claim(scene, scene.victim_counter + 1, near, &mut forged, rng)
        }
        Forgery::FutureStamp => {
            let dot = own_dot(scene, &mut forged);
            let (key, value) = workload::field_write(rng);
            let stamp = Hlc {
                wall_ms: future_ms(scene.wall_ms, rng),
                logical: 0,
            };
            let mut delta = ConfigDelta::default();
            delta.context.insert(dot);
            delta.insert_entry(key, value.field(), dot, Stamped { hlc: stamp, value });
            carry(dot, delta, rng)
        }
        Forgery::FutureLease => {
            let key = ObjectKey::Registration(workload::registration_key(rng));
            let renewed = future_ms(scene.wall_ms, rng);
            let mut lease = Lease::new(renewed, 10_000).expect("a valid length");
            if rng.random_bool(0.5) {
                lease = lease.owned_by(OwnerId(scene.hostile.peer.0));
            }
            let stamp = Hlc {
                wall_ms: scene.wall_ms,
                logical: 0,
            };
            let mut delta = ConfigDelta::default();
            let meta = aqueduct::crdt::model::FieldValue::Meta(Meta::new("{}").expect("valid"));
            let lease = aqueduct::crdt::model::FieldValue::Lease(lease);
            let mut last = None;
            for value in [meta, lease] {
                let dot = own_dot(scene, &mut forged);
                delta.context.insert(dot);
                delta.insert_entry(
                    key.clone(),
                    value.field(),
                    dot,
                    Stamped { hlc: stamp, value },
                );
                last = Some(dot);
            }
            carry(last.expect("two entries"), delta, rng)
        }
        Forgery::Report => {
            let (generation, seq) = if rng.random_bool(0.5) {
                (u32::MAX, u64::MAX)
            } else {
                (scene.victim.generation, rng.random_range(1_000..u64::MAX))
            };
            let digest = Digest(rng.random());
            forged.report_digests.push(digest);
            let report = PeerReport {
                peer: scene.victim.peer,
                generation,
                seq,
                digest,
                haproxy: Some(ApplyReport {
                    managed: true,
                    running: true,
                    last_error: Some(FORGED_REPORT_ERROR.to_owned()),
                    ..ApplyReport::default()
                }),
            };
            Message::Reports {
                reports: vec![report],
            }
        }
        Forgery::SwimDown => swim(scene, Member::down(scene.victim)),
        Forgery::SwimSuspect => {
            let incarnation = if rng.random_bool(0.5) {
                u16::MAX
            } else {
                rng.random()
            };
            swim(
                scene,
                Member::new(scene.victim, incarnation, State::Suspect),
            )
        }
    };
    forged.bytes = wire::encode(&message).expect("forgeries are small");
    forged
}

/// A delta claiming the victim's counters `first..=last`, half of the
/// time with a value written under the last of them.
fn claim(
    scene: &Scene,
    first: u64,
    last: u64,
    forged: &mut Forged,
    rng: &mut ChaCha8Rng,
) -> Message {
    let top = Dot::new(scene.victim_replica, last).expect("claims stay within COUNTER_MAX");
    let mut delta = ConfigDelta {
        context: interval(scene.victim_replica, first, last),
        ..ConfigDelta::default()
    };
    if rng.random_bool(0.5) {
        let (key, value) = workload::field_write(rng);
        let stamp = Hlc {
            wall_ms: scene.wall_ms,
            logical: 0,
        };
        delta.insert_entry(key, value.field(), top, Stamped { hlc: stamp, value });
    }
    forged.claims = format!(
        "dots {}:{first}..={last}{}",
        scene.victim_replica,
        if delta.objects.is_empty() {
            ""
        } else {
            " with a value at the last"
        }
    );
    carry(top, delta, rng)
}

/// The dots `first..=last` of `replica`, built through the wire form (the
/// only public way to make an interval without listing every dot).
fn interval(replica: ReplicaId, first: u64, last: u64) -> DotSet {
    let wire = vec![(replica.get(), vec![(first, last)])];
    let bytes = postcard::to_stdvec(&wire).expect("encodes");
    postcard::from_bytes(&bytes).expect("a valid interval")
}

/// Half of the time a broadcast (to be relayed to everyone), otherwise an
/// unsolicited anti-entropy answer.
fn carry(id: Dot, delta: ConfigDelta, rng: &mut ChaCha8Rng) -> Message {
    if rng.random_bool(0.5) {
        let anyone = aqueduct::gossip::PeerId(rng.random());
        Message::Broadcast {
            id,
            range: RingRange {
                after: anyone,
                before: anyone,
            },
            delta,
        }
    } else {
        Message::SyncDelta {
            delta,
            reply_to: None,
            sender_digest: Digest(rng.random()),
        }
    }
}

fn own_dot(scene: &Scene, forged: &mut Forged) -> Dot {
    forged.counters_used += 1;
    Dot::new(
        scene.hostile_replica,
        scene.hostile_counter + forged.counters_used,
    )
    .expect("counter >= 1")
}

fn future_ms(wall_ms: u64, rng: &mut ChaCha8Rng) -> u64 {
    if rng.random_bool(0.2) {
        return Hlc::WALL_MS_MAX;
    }
    let ahead = rng.random_range(FUTURE_MIN.as_millis() as u64..=FUTURE_MAX.as_millis() as u64);
    wall_ms.saturating_add(ahead).min(Hlc::WALL_MS_MAX)
}

/// A SWIM gossip packet from the hostile member to the receiver carrying
/// one membership update, in foca's format: header, update count (u16,
/// big-endian), updates.
fn swim(scene: &Scene, update: Member<MemberId>) -> Message {
    let header = Header {
        src: scene.hostile,
        src_incarnation: 0,
        dst: scene.receiver,
        message: foca::Message::Gossip,
    };
    let mut packet = Vec::new();
    let mut codec = PostcardCodec;
    codec
        .encode_header(&header, &mut packet)
        .expect("a header encodes");
    append_updates(&mut packet, &[update]).expect("a member encodes");
    Message::Swim(packet)
}

/// Forgeries of one kind: sent, delivered to a live honest peer, and how
/// many deliveries moved one of the receiver's refusal counters (by
/// counter).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KindCounts {
    /// Sent by a hostile member.
    pub sent: u64,
    /// Delivered to a live honest peer (after loss, partitions, duplicates).
    pub delivered: u64,
    /// Deliveries the receiver refused (a refusal counter moved).
    pub refused: u64,
    /// How much each counter moved (refusals, `own_dots_claimed`: a
    /// plausible claim on the receiver's own dots, joined, and
    /// `dot_conflicts_resolved`: a value under a dot held with another).
    pub counters: BTreeMap<&'static str, u64>,
}

impl KindCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &KindCounts) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.refused += other.refused;
        for (name, n) in &other.counters {
            *self.counters.entry(name).or_default() += n;
        }
    }
}

/// What the hostile members did in a run (or a sweep), per kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HostileReport {
    /// Hostile members in the mesh.
    pub members: usize,
    /// Per kind, by name.
    pub forged: BTreeMap<&'static str, KindCounts>,
}

impl HostileReport {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &HostileReport) {
        self.members = self.members.max(other.members);
        for (name, counts) in &other.forged {
            self.forged.entry(name).or_default().add(counts);
        }
    }

    pub(crate) fn kind(&mut self, kind: Forgery) -> &mut KindCounts {
        self.forged.entry(kind.name()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aqueduct::gossip::PeerId;
    use rand::SeedableRng;

    fn member(peer: u64) -> MemberId {
        MemberId {
            peer: PeerId(peer),
            generation: 3,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7946)),
        }
    }

    fn scene() -> Scene {
        Scene {
            hostile: member(1),
            hostile_replica: ReplicaId::new(11).expect("non-zero"),
            hostile_counter: 0,
            receiver: member(2),
            victim: member(3),
            victim_replica: ReplicaId::new(33).expect("non-zero"),
            victim_counter: 40,
            wall_ms: 1_767_225_600_000,
        }
    }

    fn forge_many(kind: Forgery) -> Vec<Message> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        (0..50)
            .map(|_| {
                let forged = forge(kind, &scene(), &mut rng);
                wire::decode(&forged.bytes).expect("every forgery is a valid wire message")
            })
            .collect()
    }

    fn deltas(messages: &[Message]) -> Vec<&ConfigDelta> {
        messages
            .iter()
            .map(|m| match m {
                Message::Broadcast { delta, .. } | Message::SyncDelta { delta, .. } => delta,
                other => panic!("a delta forgery sent {other:?}"),
            })
            .collect()
    }

    #[test]
    fn far_claims_reach_beyond_the_plausibility_ceiling() {
        let victim = scene().victim_replica;
        for delta in deltas(&forge_many(Forgery::FarContext)) {
            assert!(delta.context.max_counter(victim) >= FAR_CLAIM_MIN);
        }
    }

    #[test]
    fn near_claims_start_right_after_the_victims_counter() {
        let victim = scene().victim_replica;
        for delta in deltas(&forge_many(Forgery::NearContext)) {
            let (replica, range) = delta.context.ranges().next().expect("a claim");
            assert_eq!(replica, victim);
            assert_eq!(*range.start(), 41);
            assert!(*range.end() <= 40 + NEAR_CLAIM_MAX);
        }
    }

    #[test]
    fn future_stamps_and_leases_lie_at_least_a_day_ahead() {
        let day_ahead = scene().wall_ms + FUTURE_MIN.as_millis() as u64;
        for delta in deltas(&forge_many(Forgery::FutureStamp)) {
            assert!(
                delta
                    .entries()
                    .all(|(_, _, _, s)| s.hlc.wall_ms >= day_ahead)
            );
        }
        for delta in deltas(&forge_many(Forgery::FutureLease)) {
            let renewed = delta.entries().find_map(|(_, _, _, s)| match &s.value {
                aqueduct::crdt::model::FieldValue::Lease(lease) => Some(lease.renewed_at_ms()),
                _ => None,
            });
            assert!(renewed.expect("a lease") >= day_ahead);
        }
    }

    #[test]
    fn forged_reports_speak_for_the_victim() {
        for message in forge_many(Forgery::Report) {
            let Message::Reports { reports } = message else {
                panic!("a report forgery sent {message:?}");
            };
            assert_eq!(reports[0].peer, scene().victim.peer);
        }
    }

    #[test]
    fn forged_swim_packets_come_from_the_hostile_member_and_name_the_victim() {
        for message in forge_many(Forgery::SwimDown) {
            let Message::Swim(packet) = message else {
                panic!("a SWIM forgery sent {message:?}");
            };
            let mut rest = packet.as_slice();
            let header = Codec::<MemberId>::decode_header(&mut PostcardCodec, &mut rest)
                .expect("a foca header");
            assert_eq!(
                (header.src, header.dst),
                (scene().hostile, scene().receiver)
            );
            assert_eq!(u16::from_be_bytes([rest[0], rest[1]]), 1);
            let update = Codec::<MemberId>::decode_member(&mut PostcardCodec, &rest[2..])
                .expect("a foca member");
            assert_eq!(
                (*update.id(), update.state()),
                (scene().victim, State::Down)
            );
        }
    }
}
