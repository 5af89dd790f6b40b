//! Writes the seed corpora of `wire_decode` and `api_body` into the
//! directory given (`<dir>/wire_decode/`, `<dir>/api_body/`): valid inputs
//! of every kind, from which the fuzzer mutates its way into the deeper
//! checks instead of rediscovering the formats. `scripts/fuzz.sh` runs it
//! before fuzzing; `render` builds its input with `arbitrary` and needs
//! no seeds.

use std::fs;
use std::path::Path;

use aqueduct::crdt::{Dot, ReplicaId};
use aqueduct::gossip::wire::{self, Message, RingRange};
use aqueduct::gossip::{ApplyReport, PeerId, PeerReport};
use aqueduct_fuzz::populated;

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).expect("usage: seeds <corpus dir>");
    let dir = Path::new(&dir);

    let wire_dir = dir.join("wire_decode");
    fs::create_dir_all(&wire_dir)?;
    let replica = populated(7);
    let dot = Dot::new(ReplicaId::new(7).expect("non-zero"), 1).expect("a dot");
    let messages = [
        Message::Swim(vec![1, 2, 3]),
        Message::Broadcast {
            id: dot,
            range: RingRange {
                after: PeerId(1),
                before: PeerId(9),
            },
            delta: replica.full_state(),
        },
        Message::BroadcastAck { id: dot },
        Message::Digest {
            digest: replica.digest(),
        },
        Message::SyncRequest {
            summary: replica.summary(),
        },
        Message::SyncDelta {
            delta: replica.full_state(),
            reply_to: Some(replica.summary()),
            sender_digest: replica.digest(),
        },
        Message::Reports {
            reports: vec![
                PeerReport {
                    peer: PeerId(2),
                    generation: 1,
                    seq: 3,
                    digest: replica.digest(),
                    haproxy: Some(ApplyReport {
                        managed: true,
                        running: true,
                        reloads: 2,
                        last_error: Some("x".to_owned()),
                        ..ApplyReport::default()
                    }),
                },
                PeerReport {
                    peer: PeerId(3),
                    generation: 0,
                    seq: 0,
                    digest: replica.digest(),
                    haproxy: None,
                },
            ],
        },
    ];
    for (i, message) in messages.iter().enumerate() {
        fs::write(
            wire_dir.join(format!("seed-{i}")),
            wire::encode(message).expect("encodes"),
        )?;
    }

    // The first byte picks the body kind (see api_body.rs): 0 frontend,
    // 1 backend, 2 member, 3 registration, 4 switch.
    let api_dir = dir.join("api_body");
    fs::create_dir_all(&api_dir)?;
    let bodies: &[(u8, &str)] = &[
        (
            0,
            r#"{"bind":"*:8080,[::1]:8443","backend":"static","mode":"http","keepalive":"server-close","rules":[{"type":"header","header":"host","operation":"hdr_dom","value":"staged.example.com","backend":"dyn"},{"type":"path","operation":"path_beg","value":"/static","backend":"static"}],"natives":["option forwardfor"]}"#,
        ),
        (0, r#"{"key":"web","bind":"10.0.0.1:80","backend":"dyn"}"#),
        (
            1,
            r#"{"type":"static","balance":"static-rr","host":"example.com","members":[{"host":"127.0.0.1","port":8091,"weight":5,"state":"drain"},{"host":"::1","port":"8092"}],"natives":["timeout server 5s"],"health":{"method":"POST","uri":"/health","httpVersion":"HTTP/1.1","interval":500}}"#,
        ),
        (
            0x81,
            r#"{"type":"dynamic","name":"app","version":"2.0.0","mode":"tcp","balance":"source"}"#,
        ),
        (2, r#"{"weight":0,"state":"maint"}"#),
        (
            3,
            r#"{"secondsToExpire":60,"zone":"a","tags":["x",1,null]}"#,
        ),
        (3, ""),
        (4, r#"{"version":"2.0.0","name":"app","force":true}"#),
    ];
    for (i, (kind, body)) in bodies.iter().enumerate() {
        let mut bytes = vec![*kind];
        bytes.extend_from_slice(body.as_bytes());
        fs::write(api_dir.join(format!("seed-{i}")), bytes)?;
    }
    Ok(())
}
