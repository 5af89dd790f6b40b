//! An in-memory stand-in for the peer task: a [`Replica`] behind a real
//! [`Handle`], for tests that drive the REST API without processes.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aqueduct::certs::{CertificateInfo, NodeName};
use aqueduct::crdt::{Command, Replica};
use aqueduct::gossip::{ApplyReport, NodeStats, PeerId, PeerReport, PeerState, RevocationError};
use aqueduct::peer::{
    Counters, FirstSync, Handle, PeerStatus, Request as PeerRequest, Status, WriteError,
};
use aqueduct::tls_reload::{ApiCertificate, Reloads, TlsStatus};
use tokio::sync::mpsc;

/// When the fake peer's own certificate expires (Unix seconds)...
pub const OWN_CERTIFICATE_NOT_AFTER: i64 = 1_800_000_000;
/// ...the certificate of its one connected peer, peer-b...
pub const PEER_B_CERTIFICATE_NOT_AFTER: i64 = 1_900_000_000;
/// ...and its API's HTTPS certificate.
pub const API_CERTIFICATE_NOT_AFTER: i64 = 1_850_000_000;

/// Wall-clock ms, as the peer stamps writes.
pub fn wall_clock_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit in u64")
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Works,
    Fails,
}

/// Runs a fake peer task owning `replica` and returns its handle.
pub fn spawn_peer(mut replica: Replica, store: Store) -> Handle {
    let (requests, mut inbox) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut counters = Counters::default();
        while let Some(request) = inbox.recv().await {
            match request {
                PeerRequest::Write { command, reply } => {
                    let outcome = match store {
                        Store::Fails => Err(WriteError::Store("disk on fire".to_owned())),
                        Store::Works => replica
                            .execute(&command, wall_clock_ms())
                            .map(|_| ())
                            .map_err(WriteError::from),
                    };
                    match outcome {
                        Ok(()) => counters.writes_acknowledged += 1,
                        Err(_) => counters.writes_refused += 1,
                    }
                    // The API may have given up on the answer; nothing to do.
                    let _ = reply.send(outcome);
                }
                PeerRequest::View { parts, reply } => {
                    let view = match parts {
                        None => replica.view(),
                        Some(parts) => replica.view_of(&parts),
                    };
                    let _ = reply.send(Arc::new(view));
                }
                // No lease keeping here: every heartbeat is written.
                PeerRequest::Heartbeat {
                    key,
                    registration,
                    reply,
                } => {
                    let command = Command::Register { key, registration };
                    let outcome = replica
                        .execute(&command, wall_clock_ms())
                        .map(|_| ())
                        .map_err(WriteError::from);
                    let _ = reply.send(outcome);
                }
                PeerRequest::Usage { counted, reply } => {
                    let _ = reply.send(replica.usage(counted));
                }
                PeerRequest::Status { reply } => {
                    let _ = reply.send(status_of(&replica, &counters));
                }
                // Alone: there is no mesh to report to.
                PeerRequest::HaproxyReport(_) => {}
                // No CA to check a signature against: like a peer that
                // finds none genuine.
                PeerRequest::Revoke { reply, .. } => {
                    let refused = WriteError::Revocation(RevocationError::NotGenuine);
                    let _ = reply.send(Err(refused));
                }
                PeerRequest::Revocations { reply } => {
                    let _ = reply.send(Vec::new());
                }
            }
        }
    });
    Handle::new(requests)
}

fn status_of(replica: &Replica, counters: &Counters) -> Status {
    let peer = |id, name: &str, state, connected| PeerStatus {
        peer_id: PeerId(id),
        name: Some(name.to_owned()),
        addr: "127.0.0.1:7001".parse().expect("address"),
        generation: 1,
        state,
        connected,
        certificate_not_after: connected.then_some(PEER_B_CERTIFICATE_NOT_AFTER),
        report: None,
        revoked_at: None,
    };
    // peer-b has reported: converged, with an HAProxy that reloaded twice.
    let reported = PeerStatus {
        report: Some((
            PeerReport {
                peer: PeerId(2),
                generation: 1,
                seq: 7,
                digest: replica.digest(),
                haproxy: Some(ApplyReport {
                    managed: true,
                    running: true,
                    reloads: 2,
                    ..ApplyReport::default()
                }),
            },
            0.5,
        )),
        ..peer(2, "peer-b", PeerState::Alive, true)
    };
    Status {
        name: "peer-a".to_owned(),
        peer_id: PeerId(0xabc),
        generation: 3,
        replica_id: replica.id(),
        gossip_addr: "127.0.0.1:7000".parse().expect("address"),
        digest: replica.digest(),
        version_vector: vec![(replica.id(), replica.context().max_counter(replica.id()))],
        // peer-c's certificate was revoked.
        peers: vec![
            reported,
            PeerStatus {
                revoked_at: Some(1_767_225_600),
                ..peer(3, "peer-c", PeerState::Suspect, false)
            },
        ],
        node: NodeStats {
            messages_sent: 10,
            bytes_sent: 1000,
            messages_received: 12,
            bytes_received: 1200,
            ..NodeStats::default()
        },
        counters: counters.clone(),
        convergence_lag_seconds: Some(0.5),
        uptime_seconds: 12.0,
        document_bytes: replica.document_bytes(),
        first_sync: FirstSync::Done,
        // Reloaded twice and refused once; the API's reloaded once.
        tls: TlsStatus {
            certificate: CertificateInfo {
                name: NodeName::new("peer-a").expect("a valid name"),
                peer: PeerId(0xabc),
                serial: "01".to_owned(),
                not_before: OWN_CERTIFICATE_NOT_AFTER - 365 * 24 * 60 * 60,
                not_after: OWN_CERTIFICATE_NOT_AFTER,
            },
            reloads: Reloads { ok: 2, refused: 1 },
            api: Some(ApiCertificate {
                not_after: API_CERTIFICATE_NOT_AFTER,
                reloads: Reloads { ok: 1, refused: 0 },
            }),
        },
    }
}
