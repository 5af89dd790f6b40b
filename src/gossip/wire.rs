//! The wire format between peers: postcard-encoded [`Message`]s inside a
//! versioned [`Envelope`].
//!
//! Owns encoding and decoding and their bounds. Decoding never panics: bytes
//! from a peer become a message or a [`WireError`] (the caller drops and
//! counts them). API boundary: changing a message's shape is a protocol
//! change; add variants at the end and bump the minor version, or bump the
//! major version (and the ALPN string) for anything incompatible.

use serde::{Deserialize, Serialize};

use crate::crdt::{ConfigDelta, Digest, Dot, SyncSummary};

use super::PeerId;
use super::reports::PeerReport;
use super::revocations::RevocationExchange;

/// Protocol major version: peers only talk within one major version
/// (and the previous one, for rolling upgrades, once there is one).
pub const PROTOCOL_MAJOR: u16 = 2;
/// Protocol minor version: additive changes.
pub const PROTOCOL_MINOR: u16 = 2;
/// ALPN protocol name carried by the TLS handshake.
pub const ALPN: &[u8] = b"aqueduct/2";

/// The largest message accepted or produced, in bytes. Anti-entropy
/// answers for a far-behind peer are the largest messages; 32 MiB holds a
/// full state of roughly 300,000 fields.
pub const MESSAGE_BYTES_MAX: usize = 32 << 20;

/// Every message travels in an envelope that names the protocol version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender's protocol major version.
    pub major: u16,
    /// Sender's protocol minor version.
    pub minor: u16,
    /// The message.
    pub message: Message,
}

/// A ring interval of peer ids: every id strictly after `after` and strictly
/// before `before`, walking upwards and wrapping at the top. `after ==
/// before` means every id except that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingRange {
    /// Exclusive lower end.
    pub after: PeerId,
    /// Exclusive upper end.
    pub before: PeerId,
}

/// A peer-to-peer message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// A SWIM (foca) membership packet, opaque here.
    Swim(Vec<u8>),
    /// A change on its way through the broadcast tree: join `delta`, then
    /// pass it on to every peer in `range`.
    Broadcast {
        /// Identity of the change: the dot its origin minted for it.
        id: Dot,
        /// Which peers the receiver is responsible for.
        range: RingRange,
        /// The change.
        delta: ConfigDelta,
    },
    /// Receipt of a broadcast, so the sender stops retransmitting.
    BroadcastAck {
        /// The broadcast received.
        id: Dot,
    },
    /// Anti-entropy, step 1: "this is my state's digest".
    Digest {
        /// The sender's digest.
        digest: Digest,
    },
    /// Anti-entropy, step 2 (digests differed): "this is everything I have
    /// seen; send me what I miss".
    SyncRequest {
        /// The requester's causal context and live-dot summary.
        summary: SyncSummary,
    },
    /// Anti-entropy, step 3: what the requester missed (removals included),
    /// or a part of it (at most `Config::sync_chunk_bytes` of it, about).
    /// With `reply_to` set, the receiver answers with what the sender
    /// misses in turn, unless its digest after joining equals
    /// `sender_digest` (then both sides are equal); and if the sender's
    /// context is still not covered by its own (the delta was a part), it
    /// asks for the rest with a new `SyncRequest` (peers of releases that
    /// never cut an answer do not ask: they get the rest in later rounds). An answer to
    /// an answer carries `reply_to` only when it is a part, for the same
    /// reason.
    SyncDelta {
        /// What the receiver misses.
        delta: ConfigDelta,
        /// The sender's summary, to compute the way back.
        reply_to: Option<SyncSummary>,
        /// The sender's digest after producing `delta`.
        sender_digest: Digest,
    },
    /// Peer reports (since 2.1): the sender's own, then the latest it knows
    /// of the peers it believes alive. Peers of 2.0 drop it as garbage.
    Reports {
        /// At most [`super::reports::REPORTS_MAX`].
        reports: Vec<PeerReport>,
    },
    /// Certificate revocations (since 2.2): a digest of the sender's set, or
    /// revocations. Peers of 2.1 and older drop it as garbage: revocations
    /// then reach only upgraded peers (and 2.1 peers keep accepting the
    /// revoked certificate).
    Revocations(RevocationExchange),
}

/// Why bytes did not decode into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Larger than [`MESSAGE_BYTES_MAX`].
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Not a valid envelope or message (postcard's reason).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// From a protocol major version this peer does not speak.
    #[error("unsupported protocol major version {0}")]
    UnsupportedVersion(u16),
    /// Valid message, but trailing bytes after it.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Encodes a message in the current protocol version.
pub fn encode(message: &Message) -> Result<Vec<u8>, WireError> {
    // A tuple of the envelope's fields encodes exactly like an `Envelope`,
    // without cloning the message into one.
    let bytes = postcard::to_stdvec(&(PROTOCOL_MAJOR, PROTOCOL_MINOR, message))
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(WireError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Decodes and validates a message from a peer.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(WireError::TooLarge(bytes.len()));
    }
    // Read the version first, so a future major version is reported as
    // such rather than as garbage.
    let (major, _): (u16, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if major != PROTOCOL_MAJOR {
        return Err(WireError::UnsupportedVersion(major));
    }
    let (envelope, rest): (Envelope, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(envelope.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::ReplicaId;

    fn sample() -> Message {
        let dot = Dot::new(ReplicaId::new(9).unwrap(), 3).unwrap();
        Message::BroadcastAck { id: dot }
    }

    #[test]
    fn messages_round_trip() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn another_major_version_is_refused_by_name() {
        let mut bytes = encode(&sample()).unwrap();
        let other = PROTOCOL_MAJOR + 1;
        bytes[0] = u8::try_from(other).unwrap();
        assert_eq!(decode(&bytes), Err(WireError::UnsupportedVersion(other)));
    }

    #[test]
    fn truncations_and_garbage_are_errors_not_panics() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(decode(&extra), Err(WireError::TrailingBytes(1)));
        assert!(decode(&vec![0xff; MESSAGE_BYTES_MAX + 1]).is_err());
    }
}
