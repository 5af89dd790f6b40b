//! The [`Replica`] facade: one peer's copy of the configuration document.
//!
//! Owns the translation of API-level [`Command`]s into deltas, the checks a
//! remote delta must pass before it is joined, and the read views. Must not
//! do I/O: wall-clock time comes in as an argument.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::dot::{Dot, DotSet, ReplicaId};
use super::hlc::Hlc;
use super::model::{
    Backend, ConfigView, FieldId, FieldValue, Frontend, Lease, Member, MemberKey, Name, ObjectKey,
    Registration, RegistrationKey, ResolvedFields, ServiceName, Version,
};
use super::store::{Delta, DotStore, JoinError, Register, Stamped, SyncChunk, SyncSummary};

/// A delta of the configuration document (also used for full states).
pub type ConfigDelta = Delta<ObjectKey, FieldId, FieldValue>;

/// Part of what a peer lacks, see [`Replica::missing_for_peer`].
pub type ConfigChunk = SyncChunk<ObjectKey, FieldId, FieldValue>;

/// The registers of one object's fields.
type Fields = BTreeMap<FieldId, Register<FieldValue>>;

/// A part of the document to read with [`Replica::view_of`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewPart {
    /// Every frontend.
    Frontends,
    /// One frontend.
    Frontend(Name),
    /// One backend and its static members.
    Backend(Name),
    /// Every registration of one service.
    Service(ServiceName),
    /// One registration.
    Registration(RegistrationKey),
    /// Every registration.
    Registrations,
}

/// A kind of object whose number [`Replica::usage`] counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Frontends.
    Frontends,
    /// Backends.
    Backends,
    /// Registrations, live or not yet swept.
    Registrations,
    /// Registrations of one service, live or not yet swept.
    RegistrationsOf(ServiceName),
}

/// How much of the document is in use, for quotas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Objects of the kind asked for (0 when none was).
    pub objects: usize,
    /// Encoded size of the live entries (see [`Replica::document_bytes`]).
    pub document_bytes: u64,
}

/// A 128-bit digest of a replica's live entries and causal context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub u128);

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A change requested through the API, already validated by type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create or fully replace a frontend.
    PutFrontend {
        /// Its key.
        name: Name,
        /// Its settings.
        frontend: Frontend,
    },
    /// Remove a frontend.
    DeleteFrontend {
        /// Its key.
        name: Name,
    },
    /// Create or fully replace a backend, including its static members.
    PutBackend {
        /// Its key.
        name: Name,
        /// Its settings and members.
        backend: Backend,
    },
    /// Remove a backend and its static members.
    DeleteBackend {
        /// Its key.
        name: Name,
    },
    /// Point a dynamic backend at another service version (the A/B switch).
    SwitchBackend {
        /// The backend's key.
        name: Name,
        /// A new service name, if it changes.
        service: Option<ServiceName>,
        /// The version to follow.
        version: Version,
    },
    /// Add or update one static member.
    PutMember {
        /// The member's backend and address.
        key: MemberKey,
        /// Its settings.
        member: Member,
    },
    /// Remove one static member.
    DeleteMember {
        /// The member's backend and address.
        key: MemberKey,
    },
    /// Register a service instance, or renew its lease.
    Register {
        /// The instance.
        key: RegistrationKey,
        /// Its metadata and lease.
        registration: Registration,
    },
    /// Remove a service instance.
    Deregister {
        /// The instance.
        key: RegistrationKey,
    },
    /// Renew the leases of registered instances (the heartbeats one peer
    /// took since its last renewal, in one delta). Instances no longer
    /// registered are left alone.
    RenewLeases {
        /// Each instance and its renewed lease; at most
        /// [`RENEWALS_PER_COMMAND_MAX`].
        leases: Vec<(RegistrationKey, Lease)>,
    },
}

/// Renewals one [`Command::RenewLeases`] may carry, so that its delta stays
/// well under the wire's message size.
pub const RENEWALS_PER_COMMAND_MAX: usize = 1_000;

/// Why a command was refused. The replica is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The object to remove or switch does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The A/B switch was asked of a static backend.
    #[error("backend {0} is static; only dynamic backends follow a service version")]
    NotDynamic(Name),
    /// A batch larger than its bound.
    #[error("{0} renewals in one command; at most {RENEWALS_PER_COMMAND_MAX}")]
    TooMany(usize),
}

/// Why a remote delta was refused. The replica is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteDeltaError {
    /// An entry puts a field on an object kind that has no such field, or a
    /// value under the wrong field.
    #[error("entry {dot} puts field {field:?} on {key:?}, which is not allowed")]
    InvalidEntry {
        /// The entry's dot.
        dot: Dot,
        /// The object.
        key: Box<ObjectKey>,
        /// The field.
        field: FieldId,
    },
    /// The delta claims a dot no replica can have issued yet: a counter
    /// above [`Plausibility::counter_max`].
    #[error("delta claims dot {0}, beyond what any replica can have issued by now")]
    ImplausibleDot(Dot),
    /// An entry is stamped further ahead of the receiver's clock than the
    /// skew it allows.
    #[error("entry {dot} is stamped {ahead_ms} ms ahead of this peer's clock")]
    StampAhead {
        /// The entry's dot.
        dot: Dot,
        /// How far ahead of the receiver's clock.
        ahead_ms: u64,
    },
    /// A lease says it was renewed further ahead of the receiver's clock
    /// than the skew it allows.
    #[error("lease {dot} was renewed {ahead_ms} ms ahead of this peer's clock")]
    LeaseAhead {
        /// The entry's dot.
        dot: Dot,
        /// How far ahead of the receiver's clock.
        ahead_ms: u64,
    },
    /// The dot store refused it.
    #[error(transparent)]
    Join(#[from] JoinError),
}

/// Dots a replica may issue per millisecond of wall-clock time, on
/// average since 1970, before its counters look forged. Honest counters
/// grow by one per change, so they stay far below this; the bound exists
/// so that a forger cannot claim a replica's dots up to
/// [`Dot::COUNTER_MAX`] and leave it no counter to write with.
pub const DOTS_PER_MS: u64 = 1024;

/// What a receiver holds a remote delta's claims against: its own wall
/// clock and the clock skew it allows between peers.
///
/// A dot's counter is plausible up to [`Plausibility::counter_max`], which
/// needs no knowledge of the replica (a peer may have heard nothing of a
/// replica for days and still take its full state), and grows with time,
/// so a forger can push a replica's counter at most to where the clock
/// lets everyone's go. Stamps and lease renewals may be at most the skew
/// ahead of the receiver's clock. A refusal is not final: a peer whose
/// clock is ahead has its change taken once the receiver's clock has
/// caught up (anti-entropy offers it again), so honest peers within the
/// skew converge, and a forged far-future value never gets in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plausibility {
    /// The receiver's wall clock, in ms since the Unix epoch.
    pub wall_ms: u64,
    /// How far ahead of it another peer's clock may be, in ms.
    pub skew_max_ms: u64,
}

impl Plausibility {
    /// The latest wall-clock ms a remote stamp or renewal may carry.
    pub fn wall_max_ms(self) -> u64 {
        self.wall_ms.saturating_add(self.skew_max_ms)
    }

    /// The highest counter a remote delta may claim for any replica. Twice
    /// the skew: the replica's own clock may be that far ahead, and a
    /// plausible claim that pushed its counter was measured by a clock up
    /// to the skew ahead again.
    pub fn counter_max(self) -> u64 {
        self.wall_ms
            .saturating_add(self.skew_max_ms.saturating_mul(2))
            .saturating_mul(DOTS_PER_MS)
            .min(Dot::COUNTER_MAX)
    }
}

/// What [`Replica::join_attributed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJoin {
    /// Whether the state changed.
    pub changed: bool,
    /// The objects the join wrote to or removed values from.
    pub touched: BTreeSet<ObjectKey>,
    /// What [`Replica::dot_conflicts`] said of the delta before the join.
    pub conflicts: Vec<Dot>,
}

/// One peer's replica of the document. See the module documentation.
#[derive(Clone, Debug)]
pub struct Replica {
    id: ReplicaId,
    store: DotStore<ObjectKey, FieldId, FieldValue>,
    /// The highest stamp issued or observed, so new writes order after
    /// everything this replica has seen.
    clock: Hlc,
    /// Remote deltas joined that claimed dots of this replica it had not
    /// issued (see [`Replica::join`]).
    own_dots_claimed: u64,
    /// Values of this replica's own that such a delta removed, to be
    /// written again ([`Replica::rewrite_claimed`]). Bounded by the live
    /// entries of the document.
    claimed_away: Vec<(ObjectKey, FieldValue)>,
    /// Dots of this replica's own that a remote delta carried a value under
    /// that this replica did not write, to be removed everywhere
    /// ([`Replica::rewrite_claimed`]). Bounded like the deltas joined.
    forged_own: Vec<Dot>,
}

impl Replica {
    /// An empty replica with a fresh id (the caller draws it at random once
    /// per data directory and persists it).
    pub fn new(id: ReplicaId) -> Self {
        Replica {
            id,
            store: DotStore::default(),
            clock: Hlc::default(),
            own_dots_claimed: 0,
            claimed_away: Vec::new(),
            forged_own: Vec::new(),
        }
    }

    /// A replica restored from its persisted state (a full state or any
    /// sequence of persisted deltas joined together). Its counter resumes
    /// after the highest dot of its own it has seen, so no dot is reused.
    pub fn restore(id: ReplicaId, persisted: &[ConfigDelta]) -> Result<Self, RemoteDeltaError> {
        let mut replica = Replica::new(id);
        for delta in persisted {
            replica.check_entries(delta)?;
            replica.store.join(delta)?;
            replica.observe_clock(delta);
        }
        Ok(replica)
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// Every dot this replica has seen.
    pub fn context(&self) -> &DotSet {
        self.store.context()
    }

    /// Digest of the live entries and the causal context.
    pub fn digest(&self) -> Digest {
        Digest(self.store.digest())
    }

    /// Number of live register entries (a size measure).
    pub fn entry_count(&self) -> usize {
        self.store.entry_count()
    }

    /// The document's size: the encoded bytes of its live entries (keys,
    /// fields, stamps and values), kept up to date by the store as entries
    /// come and go, so reading it costs nothing. It leaves out the causal
    /// context (a few intervals per replica) and the in-memory overhead of
    /// the maps, which grows with it.
    pub fn document_bytes(&self) -> u64 {
        self.store.entries_bytes()
    }

    /// The number of objects of the kind asked for (none: 0) and the
    /// document's size. Counting walks the ordered keys of that kind only
    /// (no members, no other kind), so its cost grows with what is counted,
    /// not with the document.
    pub fn usage(&self, counted: Option<Counted>) -> Usage {
        let objects = self.store.objects();
        let objects = match counted {
            None => 0,
            Some(Counted::Frontends) => objects
                .keys()
                .take_while(|key| matches!(key, ObjectKey::Frontend(_)))
                .count(),
            Some(Counted::Backends) => objects
                .range(ObjectKey::first_backend()..)
                .take_while(|(key, _)| matches!(key, ObjectKey::Backend(_)))
                .count(),
            Some(Counted::Registrations) => {
                objects.range(ObjectKey::first_registration()..).count()
            }
            Some(Counted::RegistrationsOf(service)) => objects
                .range(ObjectKey::first_registration_of(&service)..)
                .take_while(
                    |(key, _)| matches!(key, ObjectKey::Registration(r) if r.service == service),
                )
                .count(),
        };
        Usage {
            objects,
            document_bytes: self.document_bytes(),
        }
    }

    /// Executes a local command at wall-clock time `now_ms` and returns the
    /// delta to persist and disseminate. An empty delta means the command
    /// changed nothing (for example a PUT identical to the current state).
    pub fn execute(&mut self, command: &Command, now_ms: u64) -> Result<ConfigDelta, CommandError> {
        let mut ops = Ops::default();
        match command {
            Command::PutFrontend { name, frontend } => {
                let key = ObjectKey::Frontend(name.clone());
                ops.write(&key, FieldValue::Bind(frontend.bind.clone()));
                ops.write(&key, FieldValue::DefaultBackend(frontend.backend.clone()));
                ops.write(&key, FieldValue::Mode(frontend.mode));
                ops.write(&key, FieldValue::Keepalive(frontend.keepalive));
                ops.write(&key, FieldValue::Rules(frontend.rules.clone()));
                ops.write(&key, FieldValue::Natives(frontend.natives.clone()));
            }
            Command::DeleteFrontend { name } => {
                let key = ObjectKey::Frontend(name.clone());
                self.require(&key)?;
                ops.remove_object(key);
            }
            Command::PutBackend { name, backend } => {
                let key = ObjectKey::Backend(name.clone());
                ops.write(&key, FieldValue::BackendType(backend.kind));
                ops.write_or_remove(
                    &key,
                    FieldId::Service,
                    backend.service.clone().map(FieldValue::Service),
                );
                ops.write_or_remove(
                    &key,
                    FieldId::Version,
                    backend.version.clone().map(FieldValue::Version),
                );
                ops.write(&key, FieldValue::Balance(backend.balance));
                ops.write_or_remove(
                    &key,
                    FieldId::HostHeader,
                    backend.host.clone().map(FieldValue::HostHeader),
                );
                ops.write(&key, FieldValue::Mode(backend.mode));
                ops.write(&key, FieldValue::Natives(backend.natives.clone()));
                ops.write(&key, FieldValue::Health(backend.health.clone()));
                for old in self.member_keys(name) {
                    if !backend.members.contains_key(&(old.host.clone(), old.port)) {
                        ops.remove_object(ObjectKey::Member(old));
                    }
                }
                for ((host, port), member) in &backend.members {
                    let key = MemberKey {
                        backend: name.clone(),
                        host: host.clone(),
                        port: *port,
                    };
                    ops.put_member(key, member);
                }
            }
            Command::DeleteBackend { name } => {
                let key = ObjectKey::Backend(name.clone());
                self.require(&key)?;
                ops.remove_object(key);
                for member in self.member_keys(name) {
                    ops.remove_object(ObjectKey::Member(member));
                }
            }
            Command::SwitchBackend {
                name,
                service,
                version,
            } => {
                let key = ObjectKey::Backend(name.clone());
                match self.resolved_field(&key, FieldId::BackendType) {
                    None => return Err(CommandError::NotFound(format!("backend {name}"))),
                    Some(FieldValue::BackendType(super::model::BackendType::Dynamic)) => {}
                    Some(_) => return Err(CommandError::NotDynamic(name.clone())),
                }
                if let Some(service) = service {
                    ops.write(&key, FieldValue::Service(service.clone()));
                }
                ops.write(&key, FieldValue::Version(version.clone()));
            }
            Command::PutMember { key, member } => ops.put_member(key.clone(), member),
            Command::DeleteMember { key } => {
                let key = ObjectKey::Member(key.clone());
                self.require(&key)?;
                ops.remove_object(key);
            }
            Command::Register { key, registration } => {
                let key = ObjectKey::Registration(key.clone());
                ops.write(&key, FieldValue::Meta(registration.meta.clone()));
                ops.write(&key, FieldValue::Lease(registration.lease));
            }
            Command::Deregister { key } => {
                let key = ObjectKey::Registration(key.clone());
                self.require(&key)?;
                ops.remove_object(key);
            }
            Command::RenewLeases { leases } => {
                if leases.len() > RENEWALS_PER_COMMAND_MAX {
                    return Err(CommandError::TooMany(leases.len()));
                }
                for (key, lease) in leases {
                    let key = ObjectKey::Registration(key.clone());
                    if self.resolved_field(&key, FieldId::Lease).is_some() {
                        ops.write(&key, FieldValue::Lease(*lease));
                    }
                }
            }
        }
        Ok(self.commit(ops, now_ms))
    }

    /// Turns collected operations into one delta and joins it locally.
    fn commit(&mut self, ops: Ops, now_ms: u64) -> ConfigDelta {
        let mut delta = ConfigDelta::default();
        let mut counter = self.store.context().max_counter(self.id);
        let mut mint = || {
            counter += 1;
            Dot::new(self.id, counter).expect("counter starts at 1")
        };
        for (key, value) in ops.writes {
            let field = value.field();
            let current: Vec<Dot> = self.store.field_dots(&key, &field).collect();
            let unchanged = current.len() == 1
                && self.store.objects()[&key][&field][&current[0]].value == value;
            if unchanged {
                continue;
            }
            let dot = mint();
            self.clock = Hlc::next(self.clock, now_ms);
            delta.context.insert(dot);
            delta.context.union_with(&current.into_iter().collect());
            let stamped = Stamped {
                hlc: self.clock,
                value,
            };
            delta.insert_entry(key, field, dot, stamped);
        }
        for (key, field) in ops.field_removals {
            delta
                .context
                .union_with(&self.store.field_dots(&key, &field).collect());
        }
        for key in ops.object_removals {
            delta
                .context
                .union_with(&self.store.object_dots(&key).collect());
        }
        for dot in ops.dot_removals {
            delta.context.insert(dot);
        }
        if delta.objects.is_empty() && !delta.context.is_empty() {
            // A pure removal still mints a dot, so every change has an
            // identity of its own (used to deduplicate its broadcast).
            delta.context.insert(mint());
        }
        self.store
            .join(&delta)
            .expect("a locally built delta is valid");
        delta
    }

    fn require(&self, key: &ObjectKey) -> Result<(), CommandError> {
        if self.store.objects().contains_key(key) {
            Ok(())
        } else {
            Err(CommandError::NotFound(key.to_string()))
        }
    }

    fn member_keys(&self, backend: &Name) -> Vec<MemberKey> {
        self.store
            .objects()
            .range(ObjectKey::first_member_of(backend)..)
            .map_while(|(key, _)| match key {
                ObjectKey::Member(m) if &m.backend == backend => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// Joins a delta received from a peer, after checking it against the
    /// model (and, first, [`Replica::check_plausible`]). Returns whether the
    /// state changed.
    ///
    /// A delta may claim dots of this replica that it never issued: only a
    /// forger (or a copy of this peer's data directory running elsewhere)
    /// makes such a claim, but refusing it would leave this replica the one
    /// peer that refuses what every other peer took, refusing their
    /// anti-entropy for good, and every later write of its own would be
    /// ignored by the others as already seen. So the claim is joined like
    /// any other and counted ([`Replica::own_dots_claimed`]); since this
    /// replica's counter resumes after the highest dot of its own in its
    /// context, its next writes carry dots nobody has claimed.
    ///
    /// Such a claim also covers this replica's values, of before the claim
    /// was made and of writes made while it travelled here (which every
    /// peer holding the claim took as already seen): the join removes them,
    /// and they wait to be written again with fresh dots
    /// ([`Replica::rewrite_claimed`]), so that no write of this replica is
    /// lost to a forger.
    ///
    /// A value under a dot of this replica that it did not write there is
    /// forged too. One under a dot it never issued is joined (it came with
    /// a plausible claim) and waits to be removed everywhere. One under a
    /// dot it issued for another value is left out of the join (other peers
    /// keep whichever of the two outranks the other, see
    /// [`Replica::dot_conflicts`]; this replica never adopts a value under
    /// its own dot): the join removes this replica's value under that dot,
    /// which waits to be written again under a fresh dot, and the dot to be
    /// removed everywhere, which ends the conflict on every peer.
    pub fn join(&mut self, delta: &ConfigDelta) -> Result<bool, RemoteDeltaError> {
        self.join_attributed(delta).map(|joined| joined.changed)
    }

    /// [`Replica::join`], also telling which objects the join wrote to or
    /// removed values from (for attribution) and its dot conflicts, with
    /// no lookup beyond the join's.
    pub fn join_attributed(&mut self, delta: &ConfigDelta) -> Result<RemoteJoin, RemoteDeltaError> {
        self.check_entries(delta)?;
        let own_max = self.store.context().max_counter(self.id);
        let claims_own = delta.context.max_counter(self.id) > own_max;
        let (reused_own, conflicts): (Vec<Dot>, Vec<Dot>) = self
            .store
            .contested_by(delta)
            .partition(|dot| dot.replica == self.id);
        // A dot issued and since removed is not listed: the store ignores
        // its value.
        let never_issued_own: Vec<Dot> = delta
            .entries()
            .map(|(_, _, dot, _)| dot)
            .filter(|dot| dot.replica == self.id && !self.store.context().contains(*dot))
            .collect();
        let filtered;
        let delta = if reused_own.is_empty() {
            delta
        } else {
            let mut without = delta.clone();
            for dot in &reused_own {
                without.remove_entry(*dot);
            }
            filtered = without;
            &filtered
        };
        let joined = self.store.join(delta)?;
        self.observe_clock(delta);
        let mut touched: BTreeSet<ObjectKey> = delta.objects.keys().cloned().collect();
        let mut own_removed = Vec::new();
        for (key, _, dot, stamped) in joined.removed {
            if dot.replica == self.id && (claims_own || reused_own.contains(&dot)) {
                own_removed.push((key.clone(), stamped.value));
            }
            touched.insert(key);
        }
        if claims_own || !reused_own.is_empty() || !never_issued_own.is_empty() {
            self.own_dots_claimed += 1;
            self.claimed_away.extend(own_removed);
            self.forged_own.extend(reused_own);
            self.forged_own.extend(never_issued_own);
        }
        Ok(RemoteJoin {
            changed: joined.changed,
            touched,
            conflicts,
        })
    }

    /// The dots of other replicas under which `delta` carries an entry
    /// this replica holds live with another key, field or value: two values
    /// under one dot, which only a forger (or a replica that lost its data)
    /// makes. The join keeps whichever outranks the other (the later stamp,
    /// then the greater encoding), alike on every peer; the peers holding
    /// the loser learn of it only if told ([`Replica::live_entry`]), since
    /// anti-entropy never ships an entry for a dot both sides have seen.
    pub fn dot_conflicts(&self, delta: &ConfigDelta) -> Vec<Dot> {
        self.store
            .contested_by(delta)
            .filter(|dot| dot.replica != self.id)
            .collect()
    }

    /// The live entry under `dot` as a delta of its own, if it is live.
    pub fn live_entry(&self, dot: Dot) -> Option<ConfigDelta> {
        let (key, field, stamped) = self.store.entry(dot)?;
        let mut delta = ConfigDelta::default();
        delta.context.insert(dot);
        delta.insert_entry(key.clone(), *field, dot, stamped.clone());
        Some(delta)
    }

    /// Writes again, at wall-clock `now_ms`, the values of this replica's
    /// own that a claim on its unissued dots removed (see
    /// [`Replica::join`]), where their field holds no other value since,
    /// and removes every value forged under a dot of its own; the delta to
    /// persist and disseminate like a local change (empty when there is
    /// nothing to do).
    pub fn rewrite_claimed(&mut self, now_ms: u64) -> ConfigDelta {
        let mut ops = Ops::default();
        for (key, value) in std::mem::take(&mut self.claimed_away) {
            if self.store.field_dots(&key, &value.field()).next().is_none() {
                ops.write(&key, value);
            }
        }
        ops.dot_removals = std::mem::take(&mut self.forged_own);
        self.commit(ops, now_ms)
    }

    /// Refuses a remote delta that claims what no honest peer can have
    /// written by `bounds`: a dot above [`Plausibility::counter_max`], a
    /// stamp or a lease renewal beyond [`Plausibility::wall_max_ms`].
    /// Costs time proportional to the delta.
    pub fn check_plausible(
        delta: &ConfigDelta,
        bounds: Plausibility,
    ) -> Result<(), RemoteDeltaError> {
        let counter_max = bounds.counter_max();
        if let Some((replica, claimed)) = delta
            .context
            .ranges()
            .find(|(_, range)| *range.end() > counter_max)
        {
            let dot = Dot::new(replica, *claimed.end()).expect("decoded dots are in range");
            return Err(RemoteDeltaError::ImplausibleDot(dot));
        }
        let wall_max = bounds.wall_max_ms();
        for (_, _, dot, stamped) in delta.entries() {
            let stamp_ms = stamped.hlc.wall_ms;
            if stamp_ms > wall_max {
                return Err(RemoteDeltaError::StampAhead {
                    dot,
                    ahead_ms: stamp_ms - bounds.wall_ms,
                });
            }
            if let FieldValue::Lease(lease) = &stamped.value
                && lease.renewed_at_ms() > wall_max
            {
                return Err(RemoteDeltaError::LeaseAhead {
                    dot,
                    ahead_ms: lease.renewed_at_ms() - bounds.wall_ms,
                });
            }
        }
        Ok(())
    }

    /// How many joined remote deltas claimed dots of this replica that it
    /// had not issued.
    pub fn own_dots_claimed(&self) -> u64 {
        self.own_dots_claimed
    }

    fn check_entries(&self, delta: &ConfigDelta) -> Result<(), RemoteDeltaError> {
        for (key, field, dot, stamped) in delta.entries() {
            if !field.allowed_in(key) || stamped.value.field() != *field {
                return Err(RemoteDeltaError::InvalidEntry {
                    dot,
                    key: Box::new(key.clone()),
                    field: *field,
                });
            }
        }
        Ok(())
    }

    fn observe_clock(&mut self, delta: &ConfigDelta) {
        if let Some(max) = delta.entries().map(|(_, _, _, s)| s.hlc).max() {
            self.clock = self.clock.max(max);
        }
    }

    /// What a peer with causal context `peer` is missing, removals included.
    pub fn missing_for(&self, peer: &DotSet) -> ConfigDelta {
        self.store.missing_for(peer)
    }

    /// What a peer that sent `summary` is missing, removals included, but
    /// only for the parts where its live dots differ from this replica's
    /// (see [`super::SyncSummary`]), and at most about `budget` bytes of it
    /// (see [`super::SyncChunk`]).
    pub fn missing_for_peer(&self, summary: &SyncSummary, budget: usize) -> ConfigChunk {
        self.store.missing_for_peer(summary, budget)
    }

    /// This replica's causal context and live-dot summary, for a peer to
    /// answer with what this replica lacks.
    pub fn summary(&self) -> SyncSummary {
        self.store.summary()
    }

    /// The whole state as a delta.
    pub fn full_state(&self) -> ConfigDelta {
        self.store.full_state()
    }

    /// One value per field: of concurrent values, the one with the highest
    /// (stamp, dot) wins — the same choice on every peer.
    pub fn resolved_fields(&self) -> ResolvedFields {
        self.store
            .objects()
            .iter()
            .map(|(key, fields)| (key.clone(), resolve(fields)))
            .collect()
    }

    fn resolved_field(&self, key: &ObjectKey, field: FieldId) -> Option<&FieldValue> {
        self.store.objects().get(key)?.get(&field).map(winner)
    }

    /// How many concurrent values `field` of `key` holds (0 when absent;
    /// more than 1 while writes not seen by each other stand side by side).
    pub fn concurrent_values(&self, key: &ObjectKey, field: FieldId) -> usize {
        self.store
            .objects()
            .get(key)
            .and_then(|fields| fields.get(&field))
            .map_or(0, |register| register.len())
    }

    /// Fields that currently hold more than one concurrent value, with all
    /// of them (winner first). Useful to show operators a conflict.
    pub fn conflicts(&self) -> Vec<(ObjectKey, FieldId, Vec<FieldValue>)> {
        let mut out = Vec::new();
        for (key, fields) in self.store.objects() {
            for (field, register) in fields {
                if register.len() > 1 {
                    let mut values: Vec<(&Dot, &Stamped<FieldValue>)> = register.iter().collect();
                    values.sort_by_key(|entry| std::cmp::Reverse(rank(*entry)));
                    out.push((
                        key.clone(),
                        *field,
                        values.into_iter().map(|(_, s)| s.value.clone()).collect(),
                    ));
                }
            }
        }
        out
    }

    /// The typed, sorted view used by the API and by rendering.
    pub fn view(&self) -> ConfigView {
        ConfigView::from_fields(&self.resolved_fields())
    }

    /// The view of only the `parts` named: what [`Replica::view`] shows of
    /// them, at a cost proportional to their size rather than the
    /// document's (the API reads one object per request this way).
    pub fn view_of(&self, parts: &[ViewPart]) -> ConfigView {
        let objects = self.store.objects();
        let mut fields = ResolvedFields::new();
        let mut take = |range: &mut dyn Iterator<Item = (&ObjectKey, &Fields)>| {
            for (key, object) in range {
                fields.insert(key.clone(), resolve(object));
            }
        };
        for part in parts {
            match part {
                ViewPart::Frontends => take(
                    &mut objects
                        .iter()
                        .take_while(|(key, _)| matches!(key, ObjectKey::Frontend(_))),
                ),
                ViewPart::Frontend(name) => {
                    let key = ObjectKey::Frontend(name.clone());
                    take(&mut objects.get_key_value(&key).into_iter());
                }
                ViewPart::Backend(name) => {
                    let key = ObjectKey::Backend(name.clone());
                    take(&mut objects.get_key_value(&key).into_iter());
                    take(
                        &mut objects
                            .range(ObjectKey::first_member_of(name)..)
                            .take_while(|(key, _)| {
                                matches!(key, ObjectKey::Member(m) if &m.backend == name)
                            }),
                    );
                }
                ViewPart::Service(service) => take(
                    &mut objects
                        .range(ObjectKey::first_registration_of(service)..)
                        .take_while(|(key, _)| {
                            matches!(key, ObjectKey::Registration(r) if &r.service == service)
                        }),
                ),
                ViewPart::Registration(key) => {
                    let key = ObjectKey::Registration(key.clone());
                    take(&mut objects.get_key_value(&key).into_iter());
                }
                ViewPart::Registrations => {
                    take(&mut objects.range(ObjectKey::first_registration()..));
                }
            }
        }
        ConfigView::from_fields(&fields)
    }

    /// Canonical bytes of the resolved view: two replicas showing the same
    /// configuration produce the same bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.resolved_fields()).expect("the view always encodes")
    }
}

/// The fields of one object, resolved to one value each.
fn resolve(object: &Fields) -> BTreeMap<FieldId, FieldValue> {
    object
        .iter()
        .map(|(field, register)| (*field, winner(register).clone()))
        .collect()
}

/// The order of concurrent values of one field: stamp, then dot. The
/// highest wins, on every peer.
fn rank((dot, stamped): (&Dot, &Stamped<FieldValue>)) -> (Hlc, Dot) {
    (stamped.hlc, *dot)
}

fn winner(register: &super::store::Register<FieldValue>) -> &FieldValue {
    let (_, stamped) = register
        .iter()
        .max_by_key(|entry| rank(*entry))
        .expect("registers in the store are never empty");
    &stamped.value
}

/// Operations collected while executing one command.
#[derive(Default)]
struct Ops {
    writes: Vec<(ObjectKey, FieldValue)>,
    field_removals: Vec<(ObjectKey, FieldId)>,
    object_removals: Vec<ObjectKey>,
    /// Single dots to remove whatever value they hold, anywhere.
    dot_removals: Vec<Dot>,
}

impl Ops {
    fn write(&mut self, key: &ObjectKey, value: FieldValue) {
        self.writes.push((key.clone(), value));
    }

    fn write_or_remove(&mut self, key: &ObjectKey, field: FieldId, value: Option<FieldValue>) {
        match value {
            Some(value) => self.write(key, value),
            None => self.field_removals.push((key.clone(), field)),
        }
    }

    fn remove_object(&mut self, key: ObjectKey) {
        self.object_removals.push(key);
    }

    fn put_member(&mut self, key: MemberKey, member: &Member) {
        let key = ObjectKey::Member(key);
        self.write(&key, FieldValue::Weight(member.weight));
        self.write(&key, FieldValue::State(member.state));
    }
}
