//! The transport between two in-process peers on 127.0.0.1: messages carry
//! the sender's certificate identity, simultaneous dials settle on one
//! connection, a peer answering with the wrong certificate gets nothing, a
//! shutdown delivers what was queued, and a peer that fills its share of the
//! receive budget stops being read while the others' frames still arrive.

mod support;

use std::time::Duration;

use aqueduct::certs::{self, NodeName, TlsIdentity};
use aqueduct::gossip::PeerId;
use aqueduct::transport::{Event, Events, RECEIVE_PEER_QUEUE_MAX, ReceiveBudget, Transport};
use support::TempDir;

const WAIT: Duration = Duration::from_secs(20);

struct Side {
    transport: Transport,
    events: Events,
    id: PeerId,
}

/// Two peers of one cluster CA, listening on ephemeral ports.
fn pair(dir: &TempDir) -> (Side, Side) {
    let [a, b] = peers(dir, ["peer-a", "peer-b"]);
    (a, b)
}

/// Peers of one cluster CA named `names`, listening on ephemeral ports.
fn peers<const N: usize>(dir: &TempDir, names: [&str; N]) -> [Side; N] {
    let ca = dir.path().join("ca");
    certs::init_ca(&ca).expect("CA");
    names.map(|name| {
        let tls = dir.path().join(name);
        let name = NodeName::new(name).expect("valid name");
        certs::issue(&ca, &name, &tls).expect("issued");
        let identity = TlsIdentity::load(&tls).expect("loads");
        let (transport, events) =
            Transport::bind("127.0.0.1:0".parse().expect("addr"), &identity).expect("binds");
        Side {
            transport,
            events,
            id: identity.peer_id(),
        }
    })
}

/// The next message `side` receives (connection events skipped), with its
/// room in the receive budget (taken until it is dropped).
async fn next_held(side: &mut Side) -> (PeerId, Vec<u8>, ReceiveBudget) {
    loop {
        match tokio::time::timeout(WAIT, side.events.recv()).await {
            Ok(Some(Event::Message {
                from,
                bytes,
                budget,
                ..
            })) => return (from, bytes, budget),
            Ok(Some(Event::Connected { .. })) => continue,
            other => panic!("no message: {other:?}"),
        }
    }
}

/// The next message `side` receives, handled at once.
async fn next_message(side: &mut Side) -> (PeerId, Vec<u8>) {
    let (from, bytes, _handled) = next_held(side).await;
    (from, bytes)
}

/// Polls `check` every few milliseconds until it holds, or panics.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_message_arrives_tagged_with_the_senders_certificate_identity() {
    let dir = TempDir::new("transport-send");
    let (a, mut b) = pair(&dir);
    a.transport
        .send(b.id, b.transport.local_addr(), b"hello".to_vec());
    let (from, bytes) = next_message(&mut b).await;
    assert_eq!(from, a.id);
    assert_eq!(bytes, b"hello");
}

#[tokio::test]
async fn simultaneous_dials_settle_on_one_connection_that_carries_both_ways() {
    let dir = TempDir::new("transport-simultaneous");
    let (mut a, mut b) = pair(&dir);
    let (a_addr, b_addr) = (a.transport.local_addr(), b.transport.local_addr());
    a.transport.send(b.id, b_addr, b"a1".to_vec());
    b.transport.send(a.id, a_addr, b"b1".to_vec());
    assert_eq!(next_message(&mut b).await, (a.id, b"a1".to_vec()));
    assert_eq!(next_message(&mut a).await, (b.id, b"b1".to_vec()));
    until("one connection left on each side", || {
        a.transport.open_connections() == 1 && b.transport.open_connections() == 1
    })
    .await;
    a.transport.send(b.id, b_addr, b"a2".to_vec());
    b.transport.send(a.id, a_addr, b"b2".to_vec());
    assert_eq!(next_message(&mut b).await, (a.id, b"a2".to_vec()));
    assert_eq!(next_message(&mut a).await, (b.id, b"b2".to_vec()));
}

#[tokio::test]
async fn a_peer_answering_with_another_identity_gets_nothing() {
    let dir = TempDir::new("transport-wrong-peer");
    let (a, mut b) = pair(&dir);
    let someone_else = PeerId(b.id.0 ^ 1);
    a.transport.send(
        someone_else,
        b.transport.local_addr(),
        b"for someone else".to_vec(),
    );
    until("a to refuse b's certificate for that id", || {
        a.transport.stats().connections_refused >= 1
    })
    .await;
    a.transport
        .send(b.id, b.transport.local_addr(), b"for b".to_vec());
    // The first message b ever receives is the one addressed to it.
    assert_eq!(next_message(&mut b).await, (a.id, b"for b".to_vec()));
}

#[tokio::test]
async fn shutdown_delivers_what_was_queued_before_closing() {
    let dir = TempDir::new("transport-shutdown");
    let (a, mut b) = pair(&dir);
    let b_addr = b.transport.local_addr();
    a.transport.send(b.id, b_addr, b"first".to_vec());
    assert_eq!(next_message(&mut b).await.1, b"first");
    for i in 0..100u8 {
        a.transport.send(b.id, b_addr, vec![i; 1000]);
    }
    a.transport.shutdown(Duration::from_secs(5)).await;
    for i in 0..100u8 {
        assert_eq!(next_message(&mut b).await.1, vec![i; 1000]);
    }
}

#[tokio::test]
async fn a_peer_whose_share_is_full_stops_being_read_while_another_peers_frames_still_arrive() {
    let dir = TempDir::new("transport-fair");
    let [mut target, flooder, honest] = peers(&dir, ["target", "flooder", "honest"]);
    let addr = target.transport.local_addr();
    let flood = RECEIVE_PEER_QUEUE_MAX + 1000;
    for i in 0..flood {
        flooder
            .transport
            .send(target.id, addr, i.to_be_bytes().to_vec());
    }
    // The target's peer task takes the flooder's messages but never
    // finishes handling them: its share fills, and nothing more of its is
    // read.
    let mut held = Vec::new();
    for i in 0..RECEIVE_PEER_QUEUE_MAX {
        let (from, bytes, budget) = next_held(&mut target).await;
        assert_eq!((from, bytes), (flooder.id, i.to_be_bytes().to_vec()));
        held.push(budget);
    }
    honest.transport.send(target.id, addr, b"honest".to_vec());
    assert_eq!(
        next_message(&mut target).await,
        (honest.id, b"honest".to_vec())
    );
    // Once handled, the flooder is read again, from where it stopped.
    drop(held);
    for i in RECEIVE_PEER_QUEUE_MAX..flood {
        assert_eq!(
            next_message(&mut target).await,
            (flooder.id, i.to_be_bytes().to_vec())
        );
    }
}
