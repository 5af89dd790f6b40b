//! Membership: SWIM through `foca` (join through any seed, failure
//! detection, graceful leave, rejoin after restart).
//!
//! Owns the foca instance, its timer queue and the set of active peers.
//! Must not do I/O: foca's sends and timers come out as values that the node
//! turns into outputs and deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use foca::{
    AccumulatingRuntime, Codec, Foca, Member, NoCustomBroadcast, OwnedNotification, PostcardCodec,
    Timer,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{PeerId, PeerState, Time};

/// A peer's identity in the membership protocol: its stable peer id plus a
/// generation that grows on every restart (and whenever the peer finds it
/// was declared down), so a restarted peer is never confused with its
/// previous run, and the address it accepts gossip on, so that SWIM spreads
/// how to reach every peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId {
    /// The stable peer id (from the peer's certificate in the shell).
    pub peer: PeerId,
    /// Restart generation.
    pub generation: u32,
    /// Where the peer accepts gossip connections. Only the shell reads it;
    /// the transport still checks the certificate of whoever answers there.
    pub addr: SocketAddr,
}

/// The address put into identities that are not known yet (a seed before
/// it answered): the receiver accepts announces by peer id alone.
const UNKNOWN_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

impl foca::Identity for MemberId {
    type Addr = PeerId;

    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            generation: self.generation.wrapping_add(1),
            ..*self
        })
    }

    fn addr(&self) -> PeerId {
        self.peer
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // The same generation at two addresses (a misconfiguration) still
        // has one winner, the same on every peer.
        (self.generation, self.addr) > (adversary.generation, adversary.addr)
    }
}

/// Addresses remembered beyond the active peers before the others are
/// forgotten (foca forgets down peers only after a day, silently).
const ADDRESSES_MAX: usize = 65_536;

type Swim = Foca<MemberId, PostcardCodec, ChaCha8Rng, NoCustomBroadcast>;

/// The SWIM member list of one node. See the module documentation.
pub(super) struct Membership {
    foca: Swim,
    runtime: AccumulatingRuntime<MemberId>,
    /// foca's timers, fired in (time, submission) order as foca requires.
    timers: BTreeMap<(Time, u64), Timer<MemberId>>,
    timer_seq: u64,
    active: BTreeSet<PeerId>,
    /// The latest identity (generation, gossip address) of every peer foca
    /// announced (bounded, see [`ADDRESSES_MAX`]). Down peers stay: rejoin
    /// announces go to them.
    identities: BTreeMap<PeerId, MemberId>,
    /// Packets refused (not from their sender; foca's refusals: malformed,
    /// from ourselves, too big).
    pub(super) refused_packets: u64,
    /// Updates declaring another peer down, taken as suspicion only.
    pub(super) downs_taken_as_suspicion: u64,
    /// Updates giving a known peer (or this node) an identity other than
    /// the one known, from another peer: dropped.
    pub(super) identities_refused: u64,
    /// Peers that came up (or back, renewed) since the node last took them
    /// ([`Membership::take_came_up`]); bounded by the packets handled in
    /// between, since the node takes them after each.
    came_up: Vec<PeerId>,
    /// Errors of local foca calls, see [`Membership::note`].
    pub(super) local_errors: u64,
}

impl Membership {
    pub(super) fn new(me: MemberId, config: foca::Config, seed: u64) -> Self {
        Membership {
            foca: Foca::new(me, config, ChaCha8Rng::seed_from_u64(seed), PostcardCodec),
            runtime: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            active: BTreeSet::new(),
            identities: BTreeMap::new(),
            refused_packets: 0,
            downs_taken_as_suspicion: 0,
            identities_refused: 0,
            came_up: Vec::new(),
            local_errors: 0,
        }
    }

    /// The peers currently believed alive (not suspect-then-down), without
    /// this node.
    pub(super) fn active(&self) -> &BTreeSet<PeerId> {
        &self.active
    }

    /// Where `peer` accepts gossip, if SWIM told us.
    pub(super) fn address_of(&self, peer: PeerId) -> Option<SocketAddr> {
        self.identities.get(&peer).map(|id| id.addr)
    }

    /// The generation an active peer runs as (`None` for a peer not
    /// active).
    pub(super) fn generation_of(&self, peer: PeerId) -> Option<u32> {
        self.active
            .contains(&peer)
            .then(|| self.identities.get(&peer).map(|id| id.generation))
            .flatten()
    }

    /// Every peer foca knows of, with its SWIM state.
    pub(super) fn states(&self) -> impl Iterator<Item = (MemberId, PeerState)> + '_ {
        self.foca.iter_membership_state().map(|member| {
            let state = match member.state() {
                foca::State::Alive => PeerState::Alive,
                foca::State::Suspect => PeerState::Suspect,
                foca::State::Down => PeerState::Down,
            };
            (*member.id(), state)
        })
    }

    /// This node's current identity (its generation may have been renewed).
    pub(super) fn identity(&self) -> MemberId {
        *self.foca.identity()
    }

    /// Asks `seed` to let this node join.
    pub(super) fn announce(&mut self, now: Time, seed: PeerId) -> Vec<(PeerId, Vec<u8>)> {
        // The seed's generation is unknown; foca addresses by identity but
        // the receiver accepts announces to its address.
        let target = MemberId {
            peer: seed,
            generation: 0,
            addr: UNKNOWN_ADDR,
        };
        let result = self.foca.announce(target, &mut self.runtime);
        self.note(result);
        self.drain(now)
    }

    /// Takes `peers` as alive members without any exchange (a node starting
    /// from a known member list). Only `probed` of them are handed to SWIM
    /// for failure detection; see [`super::Node::assume_members`].
    pub(super) fn assume_alive(
        &mut self,
        now: Time,
        peers: &[MemberId],
        probed: &[MemberId],
    ) -> Vec<(PeerId, Vec<u8>)> {
        let me = self.identity().peer;
        for id in peers.iter().filter(|id| id.peer != me) {
            self.active.insert(id.peer);
            self.remember(id);
        }
        let members = probed.iter().map(|&id| Member::alive(id));
        let result = self.foca.apply_many(members, false, &mut self.runtime);
        self.note(result);
        self.drain(now)
    }

    /// Leaves the cluster: tells peers at once instead of waiting to be
    /// suspected.
    ///
    /// foca tells a few peers and relies on them to pass it on; but a peer
    /// passing on that another is down is taken as a suspicion only (see
    /// [`third_party_updates_checked`]), so the goodbye goes from this
    /// node to every member it knows, in a gossip packet of foca's format.
    pub(super) fn leave(&mut self, now: Time) -> Vec<(PeerId, Vec<u8>)> {
        let me = self.identity();
        let members: Vec<MemberId> = self
            .foca
            .iter_members()
            .map(|member| *member.id())
            .collect();
        let result = self.foca.leave_cluster(&mut self.runtime);
        self.note(result);
        let mut sends = self.drain(now);
        let told: BTreeSet<PeerId> = sends.iter().map(|(to, _)| *to).collect();
        let mut codec = PostcardCodec;
        for member in members.into_iter().filter(|m| !told.contains(&m.peer)) {
            let header = foca::Header {
                src: me,
                src_incarnation: 0,
                dst: member,
                message: foca::Message::Gossip,
            };
            let mut packet = Vec::new();
            let encoded = codec
                .encode_header(&header, &mut packet)
                .and_then(|()| append_updates(&mut packet, &[Member::down(me)]));
            match encoded {
                Ok(()) => sends.push((member.peer, packet)),
                Err(_) => self.local_errors += 1,
            }
        }
        sends
    }

    /// Feeds a membership packet from `from` (authenticated by the
    /// transport). A packet whose sender identity is not `from` is refused:
    /// a peer speaks only for itself, whatever its payload claims. Of its
    /// updates about *another* peer, those giving it an identity other than
    /// the one known are dropped, and those declaring it down are taken as
    /// suspicion only (see [`third_party_updates_checked`]).
    pub(super) fn handle_packet(
        &mut self,
        now: Time,
        from: PeerId,
        packet: &[u8],
    ) -> Vec<(PeerId, Vec<u8>)> {
        let me = self.identity();
        let known = |peer: PeerId| {
            if peer == me.peer {
                Some(me)
            } else {
                self.identities.get(&peer).copied()
            }
        };
        let accepted = match third_party_updates_checked(from, packet, known) {
            Ok(filtered) => {
                self.downs_taken_as_suspicion += filtered.downs_taken_as_suspicion;
                self.identities_refused += filtered.identities_refused;
                let packet = filtered.packet.as_deref().unwrap_or(packet);
                self.foca.handle_data(packet, &mut self.runtime).is_ok()
            }
            Err(()) => false,
        };
        if !accepted {
            self.refused_packets += 1;
        }
        self.drain(now)
    }

    /// Declares every identity of `peer` SWIM holds down (and spreads that),
    /// for a peer whose certificate was revoked: it drops out of the active
    /// peers at once instead of after SWIM's suspicion timeout. A peer of
    /// that name with a certificate issued after the revocation comes back
    /// under a renewed identity, as after any restart.
    pub(super) fn declare_down(&mut self, now: Time, peer: PeerId) -> Vec<(PeerId, Vec<u8>)> {
        let identities: Vec<MemberId> = self
            .foca
            .iter_membership_state()
            .filter(|member| member.id().peer == peer && member.state() != foca::State::Down)
            .map(|member| *member.id())
            .collect();
        let result = self.foca.apply_many(
            identities.into_iter().map(Member::down),
            true,
            &mut self.runtime,
        );
        self.note(result);
        self.drain(now)
    }

    /// The peers that came up (or back) since the last call.
    pub(super) fn take_came_up(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.came_up)
    }

    /// Fires every timer due at `now`.
    pub(super) fn handle_timeout(&mut self, now: Time) -> Vec<(PeerId, Vec<u8>)> {
        let mut sends = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let result = self.foca.handle_timer(timer, &mut self.runtime);
            self.note(result);
            sends.extend(self.drain(now));
        }
        sends
    }

    /// When the next timer is due.
    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Number of pending timers (a bounded queue: foca keeps a fixed set of
    /// timers per member).
    pub(super) fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Counts an error of a local foca call (announce, timer, leave). These
    /// occur only in states foca handles itself (e.g. a timer of an
    /// identity since renewed), change nothing, and need no action.
    fn note(&mut self, result: Result<(), foca::Error>) {
        if result.is_err() {
            self.local_errors += 1;
        }
    }

    fn remember(&mut self, id: &MemberId) {
        self.identities.insert(id.peer, *id);
        if self.identities.len() > ADDRESSES_MAX {
            let active = &self.active;
            self.identities.retain(|peer, _| active.contains(peer));
        }
    }

    fn drain(&mut self, now: Time) -> Vec<(PeerId, Vec<u8>)> {
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    self.active.insert(id.peer);
                    self.remember(&id);
                    self.came_up.push(id.peer);
                }
                OwnedNotification::MemberDown(id) => {
                    self.active.remove(&id.peer);
                }
                OwnedNotification::Rename(_, new) => {
                    self.active.insert(new.peer);
                    self.remember(&new);
                    self.came_up.push(new.peer);
                }
                _ => {}
            }
        }
        let mut sends = Vec::new();
        while let Some((to, bytes)) = self.runtime.to_send() {
            sends.push((to.peer, bytes.to_vec()));
        }
        sends
    }
}

/// A membership packet with its updates checked.
struct FilteredPacket {
    /// The packet rewritten, if an update had to change.
    packet: Option<Vec<u8>>,
    /// How many updates declared another peer down.
    downs_taken_as_suspicion: u64,
    /// How many updates gave a known peer another identity (dropped).
    identities_refused: u64,
}

/// Checks that `packet` comes from `from`, drops each of its updates that
/// gives a peer other than the sender an identity that would replace the
/// one `known` says (this node's own included), and rewrites each that declares a peer other
/// than the sender down into a suspicion of that peer (same incarnation).
///
/// Why the identities: a peer's identity (generation, address) is its own
/// to change, and foca lets the greater one replace the other everywhere
/// ([`MemberId`]'s `win_addr_conflict`). Taken from a third party, an
/// identity of the highest generation at an address where nobody answers
/// would replace the victim's for good: its own packets ignored as from a
/// stale identity, probes of the forged one failing until it is declared
/// down, so its data refused as from a non-member for as long as foca
/// remembers down peers (a day). Sent to the victim itself, foca would
/// declare "its previous identity" down and spread that as the victim's own
/// word. A genuine new identity (a restart) still reaches each peer from
/// the peer itself (its announce, probes and gossip); a peer not known yet
/// is still learned from others.
///
/// Why: in SWIM a peer that failed to reach another, directly and through
/// others (indirect probes), suspects it, and declares it down when the
/// suspicion is not refuted in time; everyone else takes that declaration
/// on trust, so one member holding a certificate could declare any peer
/// down, as often as it likes, and every peer would drop it. Taken as a
/// suspicion, the claim makes the receiver probe that peer itself: a live
/// peer answers and refutes it, and a dead one is declared down by each
/// peer's own probes (foca probes suspects too), only later than on trust.
/// A peer declaring itself down (a graceful leave) is taken as it is.
/// `Err` for a packet not from `from` or that does not parse.
fn third_party_updates_checked(
    from: PeerId,
    packet: &[u8],
    known: impl Fn(PeerId) -> Option<MemberId>,
) -> Result<FilteredPacket, ()> {
    let mut codec = PostcardCodec;
    let mut rest = packet;
    let header = Codec::<MemberId>::decode_header(&mut codec, &mut rest).map_err(|_| ())?;
    if header.src.peer != from {
        return Err(());
    }
    let unchanged = FilteredPacket {
        packet: None,
        downs_taken_as_suspicion: 0,
        identities_refused: 0,
    };
    // foca's layout after the header: for every message but custom
    // broadcasts (which this mesh does not use), a big-endian count of
    // updates and the updates, when at least two bytes follow.
    if rest.len() < 2 || header.message == foca::Message::Broadcast {
        return Ok(unchanged);
    }
    let header_len = packet.len() - rest.len();
    let count = u16::from_be_bytes([rest[0], rest[1]]);
    rest = &rest[2..];
    let mut updates = Vec::with_capacity(usize::from(count).min(64));
    let mut downs = 0;
    let mut identities_refused = 0;
    for _ in 0..count {
        let update: Member<MemberId> = codec.decode_member(&mut rest).map_err(|_| ())?;
        let about = update.id().peer;
        // Only an identity that would replace the known one is dropped: one
        // that loses the conflict changes nothing (foca discards it, or
        // declares a stale identity of this node's down, as it should).
        let usurps = |known: MemberId| {
            known != *update.id() && !foca::Identity::win_addr_conflict(&known, update.id())
        };
        if about != from && known(about).is_some_and(usurps) {
            identities_refused += 1;
        } else if update.state() == foca::State::Down && about != from {
            downs += 1;
            updates.push(Member::new(
                *update.id(),
                update.incarnation(),
                foca::State::Suspect,
            ));
        } else {
            updates.push(update);
        }
    }
    if downs == 0 && identities_refused == 0 {
        return Ok(unchanged);
    }
    let mut rewritten = Vec::with_capacity(packet.len());
    rewritten.extend_from_slice(&packet[..header_len]);
    append_updates(&mut rewritten, &updates).map_err(|_| ())?;
    rewritten.extend_from_slice(rest);
    Ok(FilteredPacket {
        packet: Some(rewritten),
        downs_taken_as_suspicion: downs,
        identities_refused,
    })
}

/// Appends foca's update section to `packet`, after its header: the number
/// of updates (u16, big-endian), then each update. The one place this
/// crate (and the simulator's forger) writes foca's layout by hand.
pub fn append_updates(
    packet: &mut Vec<u8>,
    updates: &[Member<MemberId>],
) -> Result<(), postcard::Error> {
    let count = u16::try_from(updates.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
    packet.extend_from_slice(&count.to_be_bytes());
    let mut codec = PostcardCodec;
    for update in updates {
        codec.encode_member(update, &mut *packet)?;
    }
    Ok(())
}

/// SWIM settings derived from foca's LAN or WAN presets, with down members
/// remembered long and re-announced to often, so that the two sides of a
/// healed partition find each other within about `rejoin_interval`.
///
/// Every peer also announces itself to one member every four
/// `rejoin_interval`s. Why: a peer's new identity (a restart, a certificate
/// re-issued after a revocation) is taken only from the peer itself (see
/// [`third_party_updates_checked`]); foca would otherwise tell it only to
/// the seed it joined through and the members it happens to probe, and a
/// member holding the old identity as down never probes it. The announce's
/// reply (a feed of members) also gives the renewed peer the members the
/// seed did not list.
pub(super) fn swim_config(base: foca::Config, rejoin_interval: Duration) -> foca::Config {
    let mut config = base;
    config.remove_down_after = Some(Duration::from_secs(24 * 3600));
    config.periodic_announce = Some(foca::PeriodicParams {
        frequency: rejoin_interval.saturating_mul(4),
        num_members: std::num::NonZeroUsize::MIN,
    });
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: rejoin_interval,
        num_members: std::num::NonZeroUsize::MIN.saturating_add(1),
    });
    config
}
