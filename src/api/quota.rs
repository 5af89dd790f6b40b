//! Quotas on what API writers can store: objects per kind, registrations in
//! total and per name, a registration's meta and lease, natives per object
//! and the whole document's size.
//!
//! Owns [`Quotas`] (each limit, its default and the option that sets it),
//! the one rule of each quota, and the count of refusals per quota that
//! `/metrics` shows. Must not read the document itself: the handlers pass
//! what this peer's view holds when the request arrives (views and
//! [`crate::peer::Handle::usage`]), as they do for references, so a check
//! costs what those reads cost.
//!
//! Only new writes are checked, and only for what they add: a replacement
//! that adds no object, a heartbeat that repeats what is stored, or a
//! delete is never refused, and state already above a quota (written
//! before the quota was lowered, or by concurrent writes on other peers)
//! keeps decoding and rendering.

use std::fmt::Display;

use axum::http::StatusCode;
use serde::Serialize;

use super::error::ApiError;
use super::refusals::{Reason, Tally};
use crate::crdt::model::{Backend, Lease, Meta, NATIVES_MAX, NativeLine, Natives, Registration};

/// The limits on what API writers can store. The defaults fit a large
/// fleet (README, "Quotas"); each is set by a `--quota-*` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Frontends.
    pub frontends: usize,
    /// Backends.
    pub backends: usize,
    /// Static members of one backend (at most [`Backend::MEMBERS_MAX`]).
    pub members_per_backend: usize,
    /// Registrations, live or not yet swept.
    pub registrations: usize,
    /// Registrations of one service name, all versions.
    pub registrations_per_name: usize,
    /// A registration's meta, in bytes of JSON (at most [`Meta::BYTES_MAX`]).
    pub meta_bytes: usize,
    /// The longest lease (`secondsToExpire`), in seconds (at most a day).
    pub lease_max_seconds: u32,
    /// Natives lines of one frontend or backend (at most [`NATIVES_MAX`]).
    pub natives_lines: usize,
    /// Natives bytes of one frontend or backend (the lines' lengths).
    pub natives_bytes: usize,
    /// The document's encoded size
    /// ([`crate::crdt::Replica::document_bytes`]).
    pub document_bytes: u64,
}

/// The most [`Quotas::document_bytes`] may be set to (see
/// [`Quotas::max_of`]).
pub const DOCUMENT_BYTES_MOST: usize = 512 << 20;

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            frontends: 1_000,
            backends: 10_000,
            members_per_backend: Backend::MEMBERS_MAX,
            registrations: 10_000,
            registrations_per_name: 2_000,
            meta_bytes: 1_024,
            lease_max_seconds: 3_600,
            natives_lines: NATIVES_MAX,
            natives_bytes: 8 * 1024,
            document_bytes: 16 << 20,
        }
    }
}

impl Quotas {
    /// The largest value each quota may be set to: the bounds of decoding,
    /// which a quota can only tighten, and for the document what one
    /// anti-entropy message can carry to a new peer with room to spare.
    pub fn max_of(quota: Quota) -> u64 {
        let max = match quota {
            // Beyond a million, the document's quota binds first anyway.
            Quota::Frontends
            | Quota::Backends
            | Quota::Registrations
            | Quota::RegistrationsPerName => 1_000_000,
            Quota::MembersPerBackend => Backend::MEMBERS_MAX,
            Quota::MetaBytes => Meta::BYTES_MAX,
            Quota::LeaseMax => return u64::from(Lease::TTL_MAX_MS / 1000),
            Quota::NativesLines => NATIVES_MAX,
            Quota::NativesBytes => NATIVES_MAX * NativeLine::BYTES_MAX,
            // Anti-entropy carries a document of any size in parts; what
            // binds is the store, which keeps its snapshot as one value:
            // half of redb's limit on a value (about 1 GiB) leaves room for
            // the causal context and for writes other peers let through
            // concurrently.
            Quota::DocumentBytes => DOCUMENT_BYTES_MOST,
        };
        max as u64
    }

    /// The value of `quota`.
    pub fn limit(&self, quota: Quota) -> u64 {
        match quota {
            Quota::Frontends => self.frontends as u64,
            Quota::Backends => self.backends as u64,
            Quota::MembersPerBackend => self.members_per_backend as u64,
            Quota::Registrations => self.registrations as u64,
            Quota::RegistrationsPerName => self.registrations_per_name as u64,
            Quota::MetaBytes => self.meta_bytes as u64,
            Quota::LeaseMax => u64::from(self.lease_max_seconds),
            Quota::NativesLines => self.natives_lines as u64,
            Quota::NativesBytes => self.natives_bytes as u64,
            Quota::DocumentBytes => self.document_bytes,
        }
    }
}

/// One quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// [`Quotas::frontends`].
    Frontends,
    /// [`Quotas::backends`].
    Backends,
    /// [`Quotas::members_per_backend`].
    MembersPerBackend,
    /// [`Quotas::registrations`].
    Registrations,
    /// [`Quotas::registrations_per_name`].
    RegistrationsPerName,
    /// [`Quotas::meta_bytes`].
    MetaBytes,
    /// [`Quotas::lease_max_seconds`].
    LeaseMax,
    /// [`Quotas::natives_lines`].
    NativesLines,
    /// [`Quotas::natives_bytes`].
    NativesBytes,
    /// [`Quotas::document_bytes`].
    DocumentBytes,
}

impl Quota {
    /// Every quota, in the order `/metrics` lists them.
    pub const ALL: [Quota; 10] = [
        Quota::Frontends,
        Quota::Backends,
        Quota::MembersPerBackend,
        Quota::Registrations,
        Quota::RegistrationsPerName,
        Quota::MetaBytes,
        Quota::LeaseMax,
        Quota::NativesLines,
        Quota::NativesBytes,
        Quota::DocumentBytes,
    ];

    /// Its name: the `quota` label in `/metrics` and in error details.
    pub fn name(self) -> &'static str {
        self.option()
            .strip_prefix("quota-")
            .expect("every option starts with quota-")
    }

    /// The option that sets it, without its dashes (`quota-backends`: the
    /// flag `--quota-backends`, `AQUEDUCT_QUOTA_BACKENDS`, the TOML key
    /// `quota_backends`).
    pub fn option(self) -> &'static str {
        match self {
            Quota::Frontends => "quota-frontends",
            Quota::Backends => "quota-backends",
            Quota::MembersPerBackend => "quota-members-per-backend",
            Quota::Registrations => "quota-registrations",
            Quota::RegistrationsPerName => "quota-registrations-per-name",
            Quota::MetaBytes => "quota-meta-bytes",
            Quota::LeaseMax => "quota-lease-max",
            Quota::NativesLines => "quota-natives-lines",
            Quota::NativesBytes => "quota-natives-bytes",
            Quota::DocumentBytes => "quota-document-bytes",
        }
    }

    /// The answer to a write beyond it: 409 for a count (the document
    /// holds as many as it may: a conflict with its state), 413 for a size
    /// (the value, or the document with it, is too large), 400 for the
    /// lease (a value out of this peer's range, answered like the model's
    /// own bound of a day on the same field). Never 429: nothing here is
    /// a rate, and waiting frees nothing.
    fn status(self) -> StatusCode {
        match self {
            Quota::Frontends
            | Quota::Backends
            | Quota::MembersPerBackend
            | Quota::Registrations
            | Quota::RegistrationsPerName => StatusCode::CONFLICT,
            Quota::MetaBytes | Quota::NativesLines | Quota::NativesBytes | Quota::DocumentBytes => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Quota::LeaseMax => StatusCode::BAD_REQUEST,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Quota::MetaBytes | Quota::NativesBytes | Quota::DocumentBytes => " bytes",
            Quota::LeaseMax => " s",
            _ => "",
        }
    }

    /// The body field the quota is about, if one.
    fn field(self) -> Option<&'static str> {
        match self {
            Quota::MetaBytes => Some("meta"),
            Quota::LeaseMax => Some("secondsToExpire"),
            Quota::NativesLines | Quota::NativesBytes => Some("natives"),
            _ => None,
        }
    }
}

/// A write refused by a quota; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: the quota is {limit}{} (--{})", quota.unit(), quota.option())]
pub(crate) struct OverQuota {
    quota: Quota,
    limit: u64,
    /// What the write would exceed (`too many backends`).
    what: String,
}

impl OverQuota {
    pub(crate) fn status(&self) -> StatusCode {
        self.quota.status()
    }

    pub(crate) fn details(&self) -> serde_json::Value {
        let mut details = serde_json::json!({
            "quota": self.quota.name(),
            "option": format!("--{}", self.quota.option()),
            "limit": self.limit,
        });
        if let Some(field) = self.quota.field() {
            details["field"] = field.into();
        }
        details
    }
}

impl Reason for Quota {
    const ALL: &'static [Quota] = &Quota::ALL;
}

/// The quotas and their refusal counts, shared by every handler.
#[derive(Debug, Clone)]
pub(crate) struct QuotaGuard {
    quotas: Quotas,
    refusals: Tally<Quota>,
}

impl QuotaGuard {
    pub(crate) fn new(quotas: Quotas) -> Self {
        QuotaGuard {
            quotas,
            refusals: Tally::default(),
        }
    }

    /// Refusals so far, per quota.
    pub(crate) fn refusals(&self) -> impl Iterator<Item = (Quota, u64)> + '_ {
        self.refusals.counts()
    }

    fn refuse(&self, quota: Quota, what: impl Display) -> ApiError {
        self.refusals.count(quota);
        ApiError::OverQuota(OverQuota {
            quota,
            limit: self.quotas.limit(quota),
            what: what.to_string(),
        })
    }

    /// A count quota: `held` objects are stored, `after` would be once the
    /// write is made. Refused only if the write adds one beyond the quota,
    /// so a replacement, or any write to a kind already above its quota
    /// that adds nothing, passes.
    pub(crate) fn count(
        &self,
        quota: Quota,
        held: usize,
        after: usize,
        what: impl Display,
    ) -> Result<(), ApiError> {
        if after > held && after as u64 > self.quotas.limit(quota) {
            return Err(self.refuse(quota, format!("too many {what}")));
        }
        Ok(())
    }

    /// The natives of one frontend or backend, as written.
    pub(crate) fn natives(&self, natives: &Natives) -> Result<(), ApiError> {
        let lines = natives.as_slice();
        if lines.len() > self.quotas.natives_lines {
            return Err(self.refuse(
                Quota::NativesLines,
                format!("{} natives lines are too many", lines.len()),
            ));
        }
        let bytes: usize = lines.iter().map(|line| line.as_str().len()).sum();
        if bytes > self.quotas.natives_bytes {
            return Err(self.refuse(
                Quota::NativesBytes,
                format!("natives of {bytes} bytes are too large"),
            ));
        }
        Ok(())
    }

    /// A registration's meta and lease, as a heartbeat writes them.
    pub(crate) fn registration(&self, registration: &Registration) -> Result<(), ApiError> {
        let bytes = registration.meta.as_str().len();
        if bytes > self.quotas.meta_bytes {
            return Err(self.refuse(
                Quota::MetaBytes,
                format!("meta of {bytes} bytes is too large"),
            ));
        }
        let seconds = registration.lease.ttl_ms().div_ceil(1000);
        if seconds > self.quotas.lease_max_seconds {
            return Err(self.refuse(
                Quota::LeaseMax,
                format!("secondsToExpire: a lease of {seconds} s is too long"),
            ));
        }
        Ok(())
    }

    /// The document, `document_bytes` large now, after a write that
    /// replaces `old` (absent: a new object under `key`) with `new`.
    ///
    /// The growth is estimated as the encoded size of what changes (the
    /// key of a new object, the values), without the stamps and repeated
    /// keys that the store keeps per field: a write can pass the quota by
    /// that overhead, and the next one sees the real size. A write that
    /// does not grow the document is never refused.
    pub(crate) fn document<T: Serialize>(
        &self,
        document_bytes: u64,
        key: &impl Serialize,
        old: Option<&T>,
        new: &T,
    ) -> Result<(), ApiError> {
        let (before, added) = match old {
            Some(old) => (encoded_len(old), encoded_len(new)),
            None => (0, encoded_len(key) + encoded_len(new)),
        };
        let growth = added.saturating_sub(before);
        let after = document_bytes.saturating_add(growth);
        if growth > 0 && after > self.quotas.document_bytes {
            return Err(self.refuse(
                Quota::DocumentBytes,
                format!("the document would grow to {after} bytes"),
            ));
        }
        Ok(())
    }
}

/// Whether a heartbeat repeats what is `stored` for its instance: the same
/// meta, which carries the lease. No quota refuses one, so lowering a
/// quota does not expire running instances; their next change must fit.
pub(crate) fn repeats(registration: &Registration, stored: Option<&Registration>) -> bool {
    stored.is_some_and(|stored| stored.meta == registration.meta)
}

fn encoded_len(value: &impl Serialize) -> u64 {
    postcard::to_stdvec(value).map_or(0, |bytes| bytes.len() as u64)
}
