//! Counts of what the API refused, by reason, for `/metrics`: requests
//! refused before any handler ran ([`Refusal`]: no token, a read token on a
//! write, a foreign `Host` or `Origin`, a body that is not JSON) and writes
//! beyond a quota (`quota::Quota`), each in a [`Tally`].
//!
//! Owns the reasons of the first kind and the one counter type for both.
//! Must not decide a refusal: the middlewares and the quota checks do, and
//! count it here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A closed set of reasons, each counted in a [`Tally`].
pub(crate) trait Reason: Copy + PartialEq + 'static {
    /// Every reason, in the order `/metrics` lists them.
    const ALL: &'static [Self];
}

/// One counter per reason of `R`, shared by clones.
#[derive(Debug)]
pub(crate) struct Tally<R: Reason>(Arc<[AtomicU64]>, std::marker::PhantomData<R>);

impl<R: Reason> Clone for Tally<R> {
    fn clone(&self) -> Self {
        Tally(Arc::clone(&self.0), std::marker::PhantomData)
    }
}

impl<R: Reason> Default for Tally<R> {
    fn default() -> Self {
        Tally(
            R::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            std::marker::PhantomData,
        )
    }
}

impl<R: Reason> Tally<R> {
    /// Counts one refusal for `reason`.
    pub(crate) fn count(&self, reason: R) {
        if let Some(index) = R::ALL.iter().position(|r| *r == reason) {
            self.0[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Each reason with its count so far.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (R, u64)> + '_ {
        R::ALL
            .iter()
            .zip(self.0.iter())
            .map(|(reason, count)| (*reason, count.load(Ordering::Relaxed)))
    }
}

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

impl Reason for Refusal {
    const ALL: &'static [Refusal] = &[
        Refusal::NoToken,
        Refusal::ReadTokenOnWrite,
        Refusal::ForeignHost,
        Refusal::ForeignOrigin,
        Refusal::NotJson,
    ];
}

impl Refusal {
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

/// The requests refused before any handler, by reason.
pub(crate) type Refusals = Tally<Refusal>;
