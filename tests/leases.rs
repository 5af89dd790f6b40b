//! The registry's leases: what the owning peer writes for the heartbeats it
//! takes (`LeaseKeeper`), and how every peer judges a registration live
//! (`Owners::live_until_ms`).

use aqueduct::crdt::model::{
    CLOCK_SKEW_MS, ConfigView, FieldId, Host, LEASE_RENEWAL_MS, Lease, Meta, ObjectKey, OwnerId,
    Owners, Port, Registration, RegistrationKey, ServiceName, Version,
};
use aqueduct::crdt::{Command, LeaseKeeper, Replica, ReplicaId};

const ME: OwnerId = OwnerId(1);
const OTHER: OwnerId = OwnerId(2);
const TTL: u32 = 10_000;
const T0: u64 = 1_800_000_000_000;

fn key(port: u16) -> RegistrationKey {
    RegistrationKey {
        service: ServiceName::new("myapp").unwrap(),
        version: Version::new("1.0.0").unwrap(),
        host: Host::new("10.0.0.1").unwrap(),
        port: Port::new(i64::from(port)).unwrap(),
    }
}

fn heartbeat_body(meta: &str) -> Registration {
    Registration {
        meta: serde_json::from_value::<Meta>(serde_json::json!(meta)).unwrap(),
        lease: Lease::new(0, TTL).unwrap(),
    }
}

/// A replica that executes what the keeper asks, as the peer does.
struct Peer {
    replica: Replica,
    keeper: LeaseKeeper,
}

impl Peer {
    fn new() -> Peer {
        let replica = Replica::new(ReplicaId::new(9).unwrap());
        let keeper = LeaseKeeper::new(ME, &replica.view(), T0);
        Peer { replica, keeper }
    }

    /// A heartbeat at `now`: whether it was written.
    fn heartbeat(&mut self, port: u16, meta: &str, now: u64) -> bool {
        let view = self.replica.view();
        let command = self.keeper.heartbeat(
            key(port),
            heartbeat_body(meta),
            view.registrations.get(&key(port)),
            now,
        );
        self.run(command.into_iter().collect(), now)
    }

    fn tick(&mut self, now: u64) -> Vec<Command> {
        let replica = &self.replica;
        let contested = |key: &RegistrationKey| {
            let object = ObjectKey::Registration(key.clone());
            replica.concurrent_values(&object, FieldId::Lease) > 1
        };
        let commands = self.keeper.tick(&replica.view(), now, contested);
        self.run(commands.clone(), now);
        commands
    }

    fn run(&mut self, commands: Vec<Command>, now: u64) -> bool {
        let wrote = !commands.is_empty();
        for command in commands {
            self.replica.execute(&command, now).unwrap();
        }
        wrote
    }

    fn lease(&self, port: u16) -> Option<Lease> {
        self.replica
            .view()
            .registrations
            .get(&key(port))
            .map(|r| r.lease)
    }
}

#[test]
fn a_first_heartbeat_is_written_with_this_peer_as_owner() {
    let mut peer = Peer::new();
    assert!(peer.heartbeat(8080, "{}", T0));
    let lease = peer.lease(8080).unwrap();
    assert_eq!((lease.owner(), lease.renewed_at_ms()), (Some(ME), T0));
}

#[test]
fn heartbeats_that_change_nothing_are_not_written() {
    let mut peer = Peer::new();
    peer.heartbeat(8080, "{}", T0);
    for i in 1..=50 {
        assert!(!peer.heartbeat(8080, "{}", T0 + i * 2_000), "heartbeat {i}");
    }
}

#[test]
fn a_heartbeat_with_new_meta_is_written() {
    let mut peer = Peer::new();
    peer.heartbeat(8080, "{}", T0);
    assert!(peer.heartbeat(8080, r#"{"zone":"b"}"#, T0 + 2_000));
}

#[test]
fn an_instance_whose_heartbeats_stop_is_removed_one_lease_after_the_last() {
    let mut peer = Peer::new();
    peer.heartbeat(8080, "{}", T0);
    peer.heartbeat(8080, "{}", T0 + 4_000);
    assert!(peer.tick(T0 + 4_000 + u64::from(TTL)).is_empty());
    assert!(peer.lease(8080).is_some());
    let commands = peer.tick(T0 + 4_001 + u64::from(TTL));
    assert!(matches!(commands.as_slice(), [Command::Deregister { .. }]));
    assert!(peer.lease(8080).is_none());
}

#[test]
fn kept_leases_are_renewed_in_one_batch_at_the_renewal_rate() {
    let mut peer = Peer::new();
    for port in [8080, 8081, 8082] {
        peer.heartbeat(port, "{}", T0);
    }
    let mut renewals = Vec::new();
    // Heartbeats every 2 s for a minute; the keeper is asked every second.
    for second in 1..=60u64 {
        let now = T0 + second * 1_000;
        if second % 2 == 0 {
            for port in [8080, 8081, 8082] {
                peer.heartbeat(port, "{}", now);
            }
        }
        renewals.extend(peer.tick(now));
    }
    assert_eq!(renewals.len(), 4, "one batch every 15 s");
    assert!(
        renewals
            .iter()
            .all(|c| matches!(c, Command::RenewLeases { leases } if leases.len() == 3))
    );
    let renewed = peer.lease(8080).unwrap().renewed_at_ms();
    assert!(renewed >= T0 + 60_000 - LEASE_RENEWAL_MS / 2, "{renewed}");
}

#[test]
fn an_instance_another_peer_took_over_is_forgotten_not_removed() {
    let mut peer = Peer::new();
    peer.heartbeat(8080, "{}", T0);
    let moved = Registration {
        lease: Lease::new(T0 + 1_000, TTL).unwrap().owned_by(OTHER),
        ..heartbeat_body("{}")
    };
    peer.replica
        .execute(
            &Command::Register {
                key: key(8080),
                registration: moved,
            },
            T0 + 1_000,
        )
        .unwrap();
    assert!(peer.tick(T0 + 60_000).is_empty());
    assert_eq!(peer.lease(8080).unwrap().owner(), Some(OTHER));
    assert_eq!(peer.keeper.owned(), 0);
}

#[test]
fn an_instance_another_peer_wrote_in_this_peers_name_expires_one_lease_after_its_renewal() {
    let mut peer = Peer::new();
    // Written elsewhere with this peer as owner, which took no heartbeat
    // for it: every peer treats it as live while this one is up, so only
    // this one can expire it.
    let forged = Registration {
        lease: Lease::new(T0 + 1_000, TTL).unwrap().owned_by(ME),
        ..heartbeat_body("{}")
    };
    peer.replica
        .execute(
            &Command::Register {
                key: key(8080),
                registration: forged,
            },
            T0 + 1_000,
        )
        .unwrap();
    assert!(
        peer.tick(T0 + 5_000).is_empty(),
        "not adopted before a sweep"
    );
    assert!(peer.tick(T0 + 10_000).is_empty(), "adopted at the sweep");
    assert_eq!(peer.keeper.owned(), 1);
    // As after a restart: its last heartbeat is taken to have come one
    // renewal period after the replicated renewal, at the latest now.
    let expires = (T0 + 10_000).min(T0 + 1_000 + LEASE_RENEWAL_MS / 2) + u64::from(TTL);
    let deregisters = |commands: &[Command]| {
        commands
            .iter()
            .any(|c| matches!(c, Command::Deregister { .. }))
    };
    assert!(!deregisters(&peer.tick(expires)));
    let commands = peer.tick(expires + 1);
    assert!(matches!(commands.as_slice(), [Command::Deregister { .. }]));
    assert!(peer.lease(8080).is_none());
}

#[test]
fn after_a_short_restart_owned_instances_keep_the_rest_of_their_lease() {
    let mut peer = Peer::new();
    peer.heartbeat(8080, "{}", T0);
    let restart = T0 + 3_000;
    peer.keeper = LeaseKeeper::new(ME, &peer.replica.view(), restart);
    // The last heartbeat is taken to be as recent as it can have been.
    assert!(peer.tick(restart + u64::from(TTL)).is_empty());
    assert!(matches!(
        peer.tick(restart + u64::from(TTL) + 1).as_slice(),
        [Command::Deregister { .. }]
    ));
}

#[test]
fn after_a_long_outage_owned_instances_whose_lease_ran_out_are_removed_at_once() {
    let mut peer = Peer::new();
    peer.heartbeat(8080, "{}", T0);
    let restart = T0 + 3_600_000;
    peer.keeper = LeaseKeeper::new(ME, &peer.replica.view(), restart);
    assert!(matches!(
        peer.tick(restart).as_slice(),
        [Command::Deregister { .. }]
    ));
}

#[test]
fn the_lowest_up_peer_sweeps_registrations_their_silent_owner_abandoned() {
    let mut peer = Peer::new();
    let abandoned = Registration {
        lease: Lease::new(T0, TTL).unwrap().owned_by(OTHER),
        ..heartbeat_body("{}")
    };
    peer.replica
        .execute(
            &Command::Register {
                key: key(8080),
                registration: abandoned,
            },
            T0,
        )
        .unwrap();
    let silent_since = T0 + 1_000;
    let swept_after = silent_since + u64::from(TTL) + aqueduct::crdt::ABANDONED_AFTER_MS;
    let judge = |now: u64, owners: Owners, peer: &mut Peer| {
        let view = ConfigView {
            owners,
            ..peer.replica.view()
        };
        peer.keeper.tick(&view, now, |_| false)
    };
    // Not yet abandoned long enough; then not this peer's job while a
    // lower peer is up; then swept.
    assert!(
        judge(
            swept_after,
            owners(&[], &[(OTHER, silent_since)]),
            &mut peer
        )
        .is_empty()
    );
    let lower = OwnerId(0);
    assert!(
        judge(
            swept_after + 20_000,
            owners(&[lower], &[(OTHER, silent_since)]),
            &mut peer
        )
        .is_empty()
    );
    let swept = judge(
        swept_after + 40_000,
        owners(&[], &[(OTHER, silent_since)]),
        &mut peer,
    );
    assert!(
        matches!(swept.as_slice(), [Command::Deregister { .. }]),
        "{swept:?}"
    );
}

fn owners(up: &[OwnerId], silent: &[(OwnerId, u64)]) -> Owners {
    Owners {
        me: Some(ME),
        up: up.iter().copied().collect(),
        silent_since_ms: silent.iter().copied().collect(),
        unknown_up: false,
    }
}

fn lease_of(owner: Option<OwnerId>) -> Lease {
    let lease = Lease::new(T0, TTL).unwrap();
    owner.map_or(lease, |owner| lease.owned_by(owner))
}

#[test]
fn an_up_owner_vouches_for_its_instances_whatever_the_time() {
    assert_eq!(
        owners(&[OTHER], &[]).live_until_ms(lease_of(Some(OTHER))),
        None
    );
    assert_eq!(owners(&[], &[]).live_until_ms(lease_of(Some(ME))), None);
}

#[test]
fn a_silent_owners_instances_live_one_lease_from_when_it_was_last_heard() {
    let last_heard = T0 + 45_000;
    assert_eq!(
        owners(&[], &[(OTHER, last_heard)]).live_until_ms(lease_of(Some(OTHER))),
        Some(last_heard + u64::from(TTL))
    );
}

#[test]
fn an_unknown_owners_instances_live_while_their_renewal_is_recent() {
    let until = T0 + u64::from(TTL) + LEASE_RENEWAL_MS + CLOCK_SKEW_MS;
    assert_eq!(
        owners(&[], &[]).live_until_ms(lease_of(Some(OTHER))),
        Some(until)
    );
    assert_eq!(owners(&[], &[]).live_until_ms(lease_of(None)), Some(until));
}

#[test]
fn the_live_set_follows_what_this_peer_knows_of_owners() {
    let mut view = ConfigView::default();
    view.registrations.insert(
        key(8080),
        Registration {
            lease: lease_of(Some(OTHER)),
            ..heartbeat_body("{}")
        },
    );
    let now = T0 + 3_600_000;
    let live = |owners: Owners| {
        let view = ConfigView {
            owners,
            ..view.clone()
        };
        aqueduct::crdt::model::LiveRegistrations::new(&view, now)
            .all()
            .count()
    };
    assert_eq!(live(owners(&[OTHER], &[])), 1);
    assert_eq!(live(owners(&[], &[(OTHER, now - 5_000)])), 1);
    assert_eq!(live(owners(&[], &[(OTHER, now - 20_000)])), 0);
    assert_eq!(live(owners(&[], &[])), 0);
}

#[test]
fn an_expired_lease_that_holds_another_owners_concurrent_value_is_forgotten_not_removed() {
    // The instance moved to another peer while this one renewed its lease:
    // both values stand side by side, and this peer's may outrank the
    // other's. Removing would remove the other peer's registration too.
    let mut peer = Peer::new();
    peer.heartbeat(8080, "{}", T0);
    let mut other = Replica::new(ReplicaId::new(10).unwrap());
    let moved = Command::Register {
        key: key(8080),
        registration: Registration {
            lease: Lease::new(T0 - 1_000, TTL).unwrap().owned_by(OTHER),
            ..heartbeat_body("{}")
        },
    };
    let delta = other.execute(&moved, T0 - 1_000).unwrap();
    peer.replica.join(&delta).unwrap();

    assert!(peer.tick(T0 + u64::from(TTL) + 1).is_empty());
    assert_eq!(peer.keeper.owned(), 0);
    assert!(peer.lease(8080).is_some());
}
