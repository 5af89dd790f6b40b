//! The transport between two in-process peers on 127.0.0.1: messages carry
//! the sender's certificate identity, simultaneous dials settle on one
//! connection, a peer answering with the wrong certificate gets nothing, and
//! a shutdown delivers what was queued.

mod support;

use std::time::Duration;

use aqueduct::certs::{self, NodeName, TlsIdentity};
use aqueduct::gossip::PeerId;
use aqueduct::transport::{Event, Transport};
use support::TempDir;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

struct Side {
    transport: Transport,
    events: mpsc::Receiver<Event>,
    id: PeerId,
}

/// Two peers of one cluster CA, listening on ephemeral ports.
fn pair(dir: &TempDir) -> (Side, Side) {
    let ca = dir.path().join("ca");
    certs::init_ca(&ca).expect("CA");
    let side = |name: &str| {
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
    };
    (side("peer-a"), side("peer-b"))
}

/// The next message `side` receives (connection events skipped).
async fn next_message(side: &mut Side) -> (PeerId, Vec<u8>) {
    loop {
        match tokio::time::timeout(WAIT, side.events.recv()).await {
            Ok(Some(Event::Message { from, bytes, .. })) => return (from, bytes),
            Ok(Some(Event::Connected { .. })) => continue,
            other => panic!("no message: {other:?}"),
        }
    }
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
