//! Counts of requests the API refused before any handler ran (no token, a
//! read token on a write, a foreign `Host` or `Origin`, a body that is not
//! JSON), for `/metrics`.
//!
//! Owns the reasons and their counters. Must not decide a refusal: the
//! middlewares do, and count it here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a request was refused before it reached a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token, or one that is not configured (401).
    NoToken,
    /// A read token on a write (403).
    ReadTokenOnWrite,
    /// A `Host` that is none of the API's names (403).
    ForeignHost,
    /// An `Origin` that is not the API's own nor an allowed one (403).
    ForeignOrigin,
    /// A write whose body is not declared JSON (415).
    NotJson,
}

impl Refusal {
    /// Every reason, in the order `/metrics` lists them.
    pub(crate) const ALL: [Refusal; 5] = [
        Refusal::NoToken,
        Refusal::ReadTokenOnWrite,
        Refusal::ForeignHost,
        Refusal::ForeignOrigin,
        Refusal::NotJson,
    ];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::NoToken => "no_token",
            Refusal::ReadTokenOnWrite => "read_token_on_write",
            Refusal::ForeignHost => "foreign_host",
            Refusal::ForeignOrigin => "foreign_origin",
            Refusal::NotJson => "not_json",
        }
    }
}

/// One counter per [`Refusal`], shared by the middlewares and `/metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refusals(Arc<[AtomicU64; Refusal::ALL.len()]>);

impl Refusals {
    pub(crate) fn count(&self, refusal: Refusal) {
        self.0[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Each reason with its count so far.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL
            .into_iter()
            .map(|refusal| (refusal, self.0[refusal as usize].load(Ordering::Relaxed)))
    }
}
