//! Arbitrary bytes from a peer → `gossip::wire::decode` → the replica's
//! remote-delta path (`Replica::join`, as `Node::join_remote` calls it) and
//! the anti-entropy answer to a peer's summary.
//!
//! Properties: decoding never panics; whatever decodes re-encodes and
//! decodes to the same message; a decoded delta is refused or joined,
//! never a panic, by an empty replica and by one with content; joining it
//! again changes nothing; a joined state renders with `check_render`'s
//! properties, and its full state is accepted by a fresh peer; peer
//! reports are merged by a node (`Node::handle_message`), which keeps at
//! most one report per peer and never its own.

#![no_main]

use aqueduct::crdt::{ConfigDelta, Replica, ReplicaId};
use aqueduct::gossip::wire::{self, Message};
use aqueduct::gossip::{Config, MemberId, Node, PeerId, Time};
use aqueduct_fuzz::{NOW_MS, check_render, populated};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(message) = wire::decode(bytes) else {
        return;
    };
    let again = wire::encode(&message).expect("a decoded message encodes");
    assert_eq!(wire::decode(&again), Ok(message.clone()), "no round trip");

    match &message {
        Message::Broadcast { delta, .. } | Message::SyncDelta { delta, .. } => {
            join_checked(Replica::new(ReplicaId::new(1).expect("non-zero")), delta);
            join_checked(populated(1), delta);
        }
        Message::SyncRequest { summary } => {
            let _ = Replica::new(ReplicaId::new(1).expect("non-zero")).missing_for_peer(summary);
            let _ = populated(1).missing_for_peer(summary);
        }
        Message::Reports { reports } => {
            let me = PeerId(1);
            let identity = MemberId {
                peer: me,
                generation: 0,
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000)),
            };
            let replica = Replica::new(ReplicaId::new(1).expect("non-zero"));
            let mut node = Node::new(Config::lan(3), identity, replica, 1, Time::ZERO);
            node.handle_message(Time::ZERO, 0, PeerId(2), bytes);
            let kept: Vec<PeerId> = node.reports().map(|heard| heard.report.peer).collect();
            assert!(!kept.contains(&me), "a node keeps a report about itself");
            let mut unique = kept.clone();
            unique.dedup();
            assert_eq!(unique, kept, "two reports kept for one peer");
            assert!(
                kept.iter()
                    .all(|peer| reports.iter().any(|r| r.peer == *peer))
            );
        }
        Message::Swim(_) | Message::BroadcastAck { .. } | Message::Digest { .. } => {}
    }
});

fn join_checked(mut replica: Replica, delta: &ConfigDelta) {
    let before = replica.digest();
    let Ok(_) = replica.join(delta) else {
        assert_eq!(
            replica.digest(),
            before,
            "a refused delta changed the state"
        );
        return;
    };
    let digest = replica.digest();
    assert_eq!(
        replica.join(delta),
        Ok(false),
        "a second join changed the state"
    );
    assert_eq!(replica.digest(), digest);
    check_render(&replica.view(), NOW_MS, None);

    // The full state this replica would send a new peer is accepted by one.
    let fresh_id = (2..)
        .filter_map(ReplicaId::new)
        .find(|id| replica.context().max_counter(*id) == 0)
        .expect("some id is unused");
    let mut fresh = Replica::new(fresh_id);
    assert_eq!(fresh.join(&replica.full_state()).map(|_| ()), Ok(()));
    assert_eq!(
        fresh.digest(),
        replica.digest(),
        "a full state that does not copy"
    );
}
