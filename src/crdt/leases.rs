//! The heartbeats this peer takes, turned into the few writes the other
//! peers need.
//!
//! Owns the registry's lease rule on the owning side. A heartbeat that
//! changes nothing others can see (same meta, same lease length, this peer
//! already the owner) is kept in memory only: while this peer is up, every
//! peer treats the registrations it owns as live ([`Owners`]). What
//! travels: a new or changed registration at once; the expiry, decided
//! here with this peer's clock alone when heartbeats stop; and, at a
//! bounded rate, one batch renewing the replicated leases (for peers that
//! do not know this one, and for restarts). Pure: time comes in as
//! wall-clock ms, and it returns [`Command`]s for the caller to execute.
//!
//! [`Owners`]: super::model::Owners

use std::collections::BTreeMap;

use super::model::{ConfigView, LEASE_RENEWAL_MS, Lease, OwnerId, Registration, RegistrationKey};
use super::replica::{Command, RENEWALS_PER_COMMAND_MAX};

/// How often owned leases are renewed in the replicated state: half the
/// renewal bound others allow for, so one late batch does not expire
/// anything.
const RENEW_EVERY_MS: u64 = LEASE_RENEWAL_MS / 2;

/// How long past its last live instant an ownerless registration stays in
/// the replicated state before a peer sweeps it away.
pub const ABANDONED_AFTER_MS: u64 = 60_000;
/// Removals one sweep writes at most (the rest wait for the next tick).
const SWEEP_PER_TICK_MAX: usize = 1_000;
/// How often the keeper looks for abandoned registrations.
const SWEEP_EVERY_MS: u64 = 10_000;

/// One registration this peer owns.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owned {
    /// Wall-clock ms of the last heartbeat taken (or of adoption).
    last_heartbeat_ms: u64,
    /// The lease as last written to the replicated state.
    replicated: Lease,
}

/// The registrations this peer takes heartbeats for.
#[derive(Clone, Debug)]
pub struct LeaseKeeper {
    me: OwnerId,
    owned: BTreeMap<RegistrationKey, Owned>,
    next_renewal_ms: u64,
    next_sweep_ms: u64,
}

impl LeaseKeeper {
    /// Starts with the registrations `view` says this peer owns. Heartbeats
    /// taken before a restart are not remembered; the last one came at most
    /// one renewal period after the last replicated renewal, which is when
    /// each lease is taken to run from (an instance whose lease ran out
    /// while this peer was down is removed at the first tick, one whose
    /// lease still runs gets the rest of it).
    pub fn new(me: OwnerId, view: &ConfigView, now_ms: u64) -> LeaseKeeper {
        let mut keeper = LeaseKeeper {
            me,
            owned: BTreeMap::new(),
            next_renewal_ms: now_ms + RENEW_EVERY_MS,
            next_sweep_ms: now_ms + SWEEP_EVERY_MS,
        };
        keeper.adopt(view, now_ms, |_| false);
        keeper
    }

    /// Takes on every registration `view` says this peer owns that it does
    /// not hold (none but `contested` ones), as if its last heartbeat came
    /// one renewal period after the last replicated renewal: at start, the
    /// registrations of its previous run; later, any that another peer
    /// wrote in this peer's name. Only this peer expires what it owns, so
    /// without this a registration forged with this peer as its owner would
    /// be live for good; adopted, it expires one lease after its renewal
    /// time, which plausibility checks keep within the clock skew of now.
    fn adopt(
        &mut self,
        view: &ConfigView,
        now_ms: u64,
        contested: impl Fn(&RegistrationKey) -> bool,
    ) {
        let me = self.me;
        for (key, registration) in &view.registrations {
            let lease = registration.lease;
            if lease.owner() != Some(me) || self.owned.contains_key(key) || contested(key) {
                continue;
            }
            let owned = Owned {
                last_heartbeat_ms: now_ms.min(lease.renewed_at_ms() + RENEW_EVERY_MS),
                replicated: lease,
            };
            self.owned.insert(key.clone(), owned);
        }
    }

    /// Takes a heartbeat for `key` (its lease renewed at `now_ms`).
    /// `current` is the registration as the replicated state has it.
    /// Returns the write others need, if any.
    pub fn heartbeat(
        &mut self,
        key: RegistrationKey,
        registration: Registration,
        current: Option<&Registration>,
        now_ms: u64,
    ) -> Option<Command> {
        let lease = registration.lease.owned_by(self.me).renewed_at(now_ms);
        let unchanged = current.is_some_and(|current| {
            current.meta == registration.meta
                && current.lease.ttl_ms() == lease.ttl_ms()
                && current.lease.owner() == Some(self.me)
        });
        let replicated = match current {
            Some(current) if unchanged => current.lease,
            _ => lease,
        };
        self.owned.insert(
            key.clone(),
            Owned {
                last_heartbeat_ms: now_ms,
                replicated,
            },
        );
        (!unchanged).then_some(Command::Register {
            key,
            registration: Registration {
                meta: registration.meta,
                lease,
            },
        })
    }

    /// Forgets `key` (deregistered).
    pub fn forget(&mut self, key: &RegistrationKey) {
        self.owned.remove(key);
    }

    /// What is due at `now_ms`: a removal for each owned registration whose
    /// heartbeats stopped for a whole lease, and, every [`RENEW_EVERY_MS`],
    /// renewals of the leases heartbeats have kept alive. Every
    /// [`SWEEP_EVERY_MS`], registrations in this peer's name that it does
    /// not hold are adopted (see [`LeaseKeeper::adopt`]), and abandoned ones
    /// swept. Registrations
    /// `view` shows removed or owned by another peer (the instance moved)
    /// are forgotten, never removed; so are those whose lease is
    /// `contested` (it holds a concurrent value, such as another peer's
    /// registration that this peer's renewal happens to outrank: removing
    /// would remove that too).
    pub fn tick(
        &mut self,
        view: &ConfigView,
        now_ms: u64,
        contested: impl Fn(&RegistrationKey) -> bool,
    ) -> Vec<Command> {
        let me = self.me;
        if now_ms >= self.next_sweep_ms {
            self.adopt(view, now_ms, &contested);
        }
        self.owned.retain(|key, _| {
            view.registrations
                .get(key)
                .is_some_and(|r| r.lease.owner() == Some(me))
        });
        let expired: Vec<RegistrationKey> = self
            .owned
            .iter()
            .filter(|(_, owned)| {
                now_ms > owned.last_heartbeat_ms + u64::from(owned.replicated.ttl_ms())
            })
            .map(|(key, _)| key.clone())
            .collect();
        let mut commands: Vec<Command> = expired
            .into_iter()
            .filter_map(|key| {
                self.owned.remove(&key);
                (!contested(&key)).then_some(Command::Deregister { key })
            })
            .collect();
        if now_ms >= self.next_sweep_ms {
            self.next_sweep_ms = now_ms + SWEEP_EVERY_MS;
            commands.extend(self.sweep(view, now_ms));
        }
        if now_ms >= self.next_renewal_ms {
            self.next_renewal_ms = now_ms + RENEW_EVERY_MS;
            let mut renewals = Vec::new();
            for (key, owned) in &mut self.owned {
                if owned.last_heartbeat_ms > owned.replicated.renewed_at_ms() {
                    owned.replicated = owned.replicated.renewed_at(owned.last_heartbeat_ms);
                    renewals.push((key.clone(), owned.replicated));
                }
            }
            commands.extend(renewals.chunks(RENEWALS_PER_COMMAND_MAX).map(|leases| {
                Command::RenewLeases {
                    leases: leases.to_vec(),
                }
            }));
        }
        commands
    }

    /// Removes registrations no owner will ever remove — their owner has
    /// been silent, or unknown, for [`ABANDONED_AFTER_MS`] past their last
    /// live instant — so that the replicated state does not keep every
    /// instance a dead peer ever took. One peer sweeps: the up peer with
    /// the lowest id, as far as `view.owners` knows (two peers that both
    /// think so remove the same objects, which is harmless). A heartbeat
    /// that reaches any peer concurrently wins over the removal.
    fn sweep(&self, view: &ConfigView, now_ms: u64) -> Vec<Command> {
        let owners = &view.owners;
        let sweeper = owners.up.iter().chain(owners.me.iter()).min();
        if sweeper != Some(&self.me) {
            return Vec::new();
        }
        view.registrations
            .iter()
            .filter(|(_, registration)| registration.lease.owner() != Some(self.me))
            .filter(|(_, registration)| {
                owners
                    .live_until_ms(registration.lease)
                    .is_some_and(|until| now_ms > until.saturating_add(ABANDONED_AFTER_MS))
            })
            .take(SWEEP_PER_TICK_MAX)
            .map(|(key, _)| Command::Deregister { key: key.clone() })
            .collect()
    }

    /// When [`LeaseKeeper::tick`] next has something to do (wall-clock ms).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let expiry = self
            .owned
            .values()
            .map(|owned| owned.last_heartbeat_ms + u64::from(owned.replicated.ttl_ms()) + 1)
            .min();
        let renewal = (!self.owned.is_empty()).then_some(self.next_renewal_ms);
        expiry
            .into_iter()
            .chain(renewal)
            .chain([self.next_sweep_ms])
            .min()
    }

    /// How many registrations this peer owns.
    pub fn owned(&self) -> usize {
        self.owned.len()
    }
}
