//! Certificate revocations: statements signed by the cluster CA that the
//! certificates of one node name issued up to some time are no longer
//! members, held as a bounded set that every peer converges to.
//!
//! Owns the revocation value, the message bytes its signature covers, the
//! set (one revocation per name: the one covering the most wins, ties
//! broken by the whole value, so every peer keeps the same one) and its
//! digest, and the exchange that repairs the set between two peers. Must
//! not check signatures itself (the core has no cryptography): a
//! [`RevocationVerifier`] given by the shell does, and without one every
//! revocation is refused. Must not enforce anything: the shell refuses the
//! revoked certificates at the TLS handshake and closes their connections.
//!
//! A revocation names certificates, not a peer id: a peer's id is its
//! name's hash, so a certificate issued for the same name after the
//! revocation (notBefore later than [`Revocation::not_before_up_to`]) is a
//! member again under the same id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::PeerId;

/// The most names the set holds; a revocation of a further name is refused
/// (and counted). A mesh revokes a handful of certificates; the bound
/// keeps a flood of genuine revocations (a CA key gone rogue) from growing
/// memory and messages without end: 4096 of them are about 700 KiB.
pub const REVOCATIONS_MAX: usize = 4096;
/// The longest name a revocation may carry (a DNS label).
pub const REVOCATION_NAME_MAX: usize = 63;
/// The largest signature a revocation may carry (an ECDSA P-384 signature
/// is at most 104 bytes, RSA-4096 512).
pub const SIGNATURE_BYTES_MAX: usize = 512;

/// What the signature of a revocation covers starts with this, so that a
/// CA signature over anything else (a certificate's body starts with a DER
/// sequence tag) can never pass for a revocation.
const SIGNED_CONTEXT: &[u8] = b"aqueduct certificate revocation v1\0";

/// "The certificates of `name` whose notBefore is at or before
/// `not_before_up_to` are revoked", signed by the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Revocation {
    /// The node name (a certificate's common name).
    pub name: String,
    /// Unix seconds: certificates of `name` with a notBefore up to this one
    /// are revoked; later ones are not.
    pub not_before_up_to: u64,
    /// Unix seconds: when the revocation was signed (for people; the rule
    /// is `not_before_up_to`).
    pub revoked_at: u64,
    /// The cluster CA's signature over [`Revocation::signed_bytes`].
    pub signature: Vec<u8>,
}

impl Revocation {
    /// The bytes the CA signs: a fixed context, then the name and both
    /// times, postcard-encoded.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(&self.name, self.not_before_up_to, self.revoked_at)
    }

    /// The peer id of the name this revocation is about.
    pub fn peer(&self) -> PeerId {
        PeerId::of_name(&self.name)
    }

    /// Whether a certificate of this revocation's name with notBefore
    /// `not_before` (Unix seconds) is revoked by it.
    pub fn covers(&self, not_before: i64) -> bool {
        u64::try_from(not_before).map_or(true, |nb| nb <= self.not_before_up_to)
    }

    /// Within the sizes any genuine revocation has (checked before the
    /// signature is).
    fn well_formed(&self) -> bool {
        !self.name.is_empty()
            && self.name.len() <= REVOCATION_NAME_MAX
            && !self.signature.is_empty()
            && self.signature.len() <= SIGNATURE_BYTES_MAX
    }
}

/// The bytes a CA signs for a revocation of `name` (see
/// [`Revocation::signed_bytes`]); for whoever makes one.
pub fn signed_bytes(name: &str, not_before_up_to: u64, revoked_at: u64) -> Vec<u8> {
    let mut bytes = SIGNED_CONTEXT.to_vec();
    let body = postcard::to_stdvec(&(name, not_before_up_to, revoked_at))
        .expect("a string and two integers always encode");
    bytes.extend_from_slice(&body);
    bytes
}

/// Checks a revocation's signature against the cluster CA (and its name
/// against the node-name rules). Given to the node by the shell, which has
/// the cryptography and the CA certificate.
pub trait RevocationVerifier: Send {
    /// Whether `revocation` is genuine.
    fn verify(&self, revocation: &Revocation) -> bool;
}

/// Why a revocation was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// Empty or oversized name or signature.
    #[error("malformed revocation (empty or oversized name or signature)")]
    Malformed,
    /// Not signed by the cluster CA, or not a node name (or this node has
    /// no verifier).
    #[error("the revocation is not signed by this cluster's CA, or names no valid node")]
    NotGenuine,
    /// The set holds [`REVOCATIONS_MAX`] names already.
    #[error("already {REVOCATIONS_MAX} names revoked; no more are taken")]
    Full,
}

/// One step of the exchange that repairs the set between two peers.
///
/// In an anti-entropy round a peer with any revocation sends its
/// [`RevocationExchange::Digest`]; a receiver whose set differs answers
/// with its whole set (`answer: true`, possibly empty), and the first peer,
/// after taking it in, sends its own whole set back (`answer: false`) if the
/// two still differ. So at most three messages, however the sets differ,
/// and never a loop (an `answer: false` set is never answered). A new
/// revocation is pushed to every active member as a set of one, without
/// `answer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevocationExchange {
    /// "My set's digest is this": sent by a peer with a non-empty set in
    /// its anti-entropy rounds and to peers that come up, and by every peer
    /// to one whose own packet showed it come up.
    Digest(u64),
    /// Revocations: a whole set (after a digest) or new ones (a push).
    Set {
        /// At most [`REVOCATIONS_MAX`].
        list: Vec<Revocation>,
        /// Whether the sender wants the receiver's whole set back if the
        /// two still differ.
        answer: bool,
    },
}

/// The revocations a node knows, one per name. See the module
/// documentation.
#[derive(Default)]
pub struct Revocations {
    by_name: BTreeMap<String, Revocation>,
    verifier: Option<Box<dyn RevocationVerifier>>,
    /// The digest of `by_name`, computed when asked for after a change (a
    /// set of thousands taken one revocation at a time would otherwise be
    /// hashed whole once per revocation).
    digest: std::cell::Cell<Option<u64>>,
}

impl Revocations {
    /// Sets the verifier (until then, every revocation is refused).
    pub fn set_verifier(&mut self, verifier: Box<dyn RevocationVerifier>) {
        self.verifier = Some(verifier);
    }

    /// Checks `revocation` whole (form and signature), whatever the set
    /// holds: for one handed in through the API, which answers a forgery
    /// with a refusal even when a genuine revocation covers as much.
    pub fn check(&self, revocation: &Revocation) -> Result<(), RevocationError> {
        if !revocation.well_formed() {
            return Err(RevocationError::Malformed);
        }
        if !self.verifier.as_ref().is_some_and(|v| v.verify(revocation)) {
            return Err(RevocationError::NotGenuine);
        }
        Ok(())
    }

    /// Takes `revocation` if it is genuine and revokes more than what the
    /// set holds for its name: `Ok(true)` if the set changed, `Ok(false)`
    /// if it already covered it (a replay: the signature is not even
    /// checked).
    pub fn insert(&mut self, revocation: Revocation) -> Result<bool, RevocationError> {
        self.insert_with(revocation, true)
    }

    /// [`Revocations::insert`] of a revocation whose signature the caller
    /// has just checked, so that it is not checked twice.
    pub(super) fn insert_verified(
        &mut self,
        revocation: Revocation,
    ) -> Result<bool, RevocationError> {
        self.insert_with(revocation, false)
    }

    fn insert_with(
        &mut self,
        revocation: Revocation,
        verify: bool,
    ) -> Result<bool, RevocationError> {
        if !revocation.well_formed() {
            return Err(RevocationError::Malformed);
        }
        // Of two revocations of one name, the one covering later
        // certificates wins, then (equal coverage: one statement signed
        // twice, whose ECDSA signatures differ) the greater value, so that
        // every peer keeps the same one. The derived order compares the
        // name, then `not_before_up_to`, then the rest: exactly that.
        let held = self.by_name.get(&revocation.name);
        if held.is_some_and(|held| *held >= revocation) {
            return Ok(false);
        }
        if held.is_none() && self.by_name.len() >= REVOCATIONS_MAX {
            return Err(RevocationError::Full);
        }
        if verify {
            self.check(&revocation)?;
        }
        self.by_name.insert(revocation.name.clone(), revocation);
        self.digest.set(None);
        Ok(true)
    }

    /// Every revocation, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Revocation> + '_ {
        self.by_name.values()
    }

    /// How many names are revoked.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// A hash of the whole set (equal on peers that hold the same set).
    pub fn digest(&self) -> u64 {
        if self.by_name.is_empty() {
            return 0;
        }
        if let Some(digest) = self.digest.get() {
            return digest;
        }
        let digest = digest_of(self.by_name.values());
        self.digest.set(Some(digest));
        digest
    }
}

/// The digest of revocations listed in name order (a whole set as sent).
pub fn digest_of<'a>(list: impl IntoIterator<Item = &'a Revocation>) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for revocation in list {
        let bytes = postcard::to_stdvec(revocation).expect("a revocation always encodes");
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    hasher.digest()
}
