//! Random API-level commands over a deliberately small key space, so that
//! writes at different peers conflict: concurrent PUTs of one object,
//! deletes racing updates, members added to backends being deleted, A/B
//! switches, registrations and deregistrations.

use std::collections::BTreeMap;

use aqueduct::crdt::Command;
use aqueduct::crdt::model::{
    AclValue, Backend, BackendType, Balance, Binds, Frontend, HeaderName, Health, Host, Keepalive,
    Lease, Member, MemberKey, MemberState, Meta, Mode, Name, Natives, Port, Registration,
    RegistrationKey, Rule, RuleOperation, Rules, ServiceName, Version, Weight,
};
use aqueduct::crdt::model::{FieldValue, ObjectKey};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

const OBJECTS: usize = 6;
const HOSTS: usize = 4;
const VERSIONS: [&str; 2] = ["1.0.0", "2.0.0"];

fn name(prefix: &str, i: usize) -> Name {
    Name::new(&format!("{prefix}{i}")).expect("generated names are valid")
}

fn host(i: usize) -> Host {
    Host::new(&format!("10.0.0.{}", i + 1)).expect("generated hosts are valid")
}

fn port(rng: &mut ChaCha8Rng) -> Port {
    Port::new(8080 + rng.random_range(0..3)).expect("generated ports are valid")
}

fn member_key(rng: &mut ChaCha8Rng) -> MemberKey {
    MemberKey {
        backend: name("be", rng.random_range(0..OBJECTS)),
        host: host(rng.random_range(0..HOSTS)),
        port: port(rng),
    }
}

/// A random registration of the workload's key space.
pub fn registration_key(rng: &mut ChaCha8Rng) -> RegistrationKey {
    RegistrationKey {
        service: ServiceName::new(&format!("svc{}", rng.random_range(0..3))).expect("valid"),
        version: Version::new(VERSIONS[rng.random_range(0..VERSIONS.len())]).expect("valid"),
        host: host(rng.random_range(0..HOSTS)),
        port: port(rng),
    }
}

fn frontend(rng: &mut ChaCha8Rng) -> Frontend {
    let mut rules = Vec::new();
    if rng.random_bool(0.5) {
        rules.push(
            Rule::new(
                RuleOperation::HdrDom,
                Some(HeaderName::new("host").expect("valid")),
                AclValue::new("staged.example.com").expect("valid"),
                name("be", rng.random_range(0..OBJECTS)),
            )
            .expect("valid rule"),
        );
    }
    Frontend {
        bind: Binds::parse(&format!("*:{}", 8000 + rng.random_range(0..4))).expect("valid"),
        backend: name("be", rng.random_range(0..OBJECTS)),
        mode: if rng.random_bool(0.8) {
            Mode::Http
        } else {
            Mode::Tcp
        },
        keepalive: [Keepalive::Default, Keepalive::Close, Keepalive::ServerClose]
            [rng.random_range(0..3)],
        rules: Rules::try_from(rules).expect("within bound"),
        natives: Natives::default(),
    }
}

fn backend(rng: &mut ChaCha8Rng) -> Backend {
    let dynamic = rng.random_bool(0.4);
    let mut members = BTreeMap::new();
    if !dynamic {
        for _ in 0..rng.random_range(0..4) {
            members.insert((host(rng.random_range(0..HOSTS)), port(rng)), member(rng));
        }
    }
    Backend {
        kind: if dynamic {
            BackendType::Dynamic
        } else {
            BackendType::Static
        },
        service: dynamic.then(|| ServiceName::new("svc0").expect("valid")),
        version: dynamic.then(|| Version::new(VERSIONS[rng.random_range(0..2)]).expect("valid")),
        balance: [Balance::Roundrobin, Balance::Leastconn][rng.random_range(0..2)],
        host: rng
            .random_bool(0.3)
            .then(|| Host::new("app.example.com").expect("valid")),
        mode: Mode::Http,
        natives: Natives::default(),
        health: Health::default(),
        members,
    }
}

fn member(rng: &mut ChaCha8Rng) -> Member {
    Member {
        weight: Weight::new(rng.random_range(0..=4) * 25).expect("valid"),
        state: [MemberState::Ready, MemberState::Drain, MemberState::Maint][rng.random_range(0..3)],
    }
}

/// The next random command. Wall-clock `now_ms` feeds registration leases.
pub fn next_command(rng: &mut ChaCha8Rng, now_ms: u64) -> Command {
    match rng.random_range(0..100) {
        0..20 => Command::PutFrontend {
            name: name("fe", rng.random_range(0..OBJECTS)),
            frontend: frontend(rng),
        },
        20..28 => Command::DeleteFrontend {
            name: name("fe", rng.random_range(0..OBJECTS)),
        },
        28..43 => Command::PutBackend {
            name: name("be", rng.random_range(0..OBJECTS)),
            backend: backend(rng),
        },
        43..50 => Command::DeleteBackend {
            name: name("be", rng.random_range(0..OBJECTS)),
        },
        50..58 => Command::SwitchBackend {
            name: name("be", rng.random_range(0..OBJECTS)),
            service: None,
            version: Version::new(VERSIONS[rng.random_range(0..2)]).expect("valid"),
        },
        58..73 => Command::PutMember {
            key: member_key(rng),
            member: member(rng),
        },
        73..80 => Command::DeleteMember {
            key: member_key(rng),
        },
        80..95 => Command::Register {
            key: registration_key(rng),
            registration: Registration {
                meta: Meta::new("{}").expect("valid"),
                lease: Lease::new(now_ms, 10_000).expect("valid"),
            },
        },
        _ => Command::Deregister {
            key: registration_key(rng),
        },
    }
}

/// One field value of an object in the workload's key space (a frontend's
/// default backend, a backend's balance, or a member's weight), for a
/// hostile member to write under a forged dot or stamp.
pub fn field_write(rng: &mut ChaCha8Rng) -> (ObjectKey, FieldValue) {
    match rng.random_range(0..3) {
        0 => (
            ObjectKey::Frontend(name("fe", rng.random_range(0..OBJECTS))),
            FieldValue::DefaultBackend(name("be", rng.random_range(0..OBJECTS))),
        ),
        1 => (
            ObjectKey::Backend(name("be", rng.random_range(0..OBJECTS))),
            FieldValue::Balance(Balance::Leastconn),
        ),
        _ => (
            ObjectKey::Member(member_key(rng)),
            FieldValue::Weight(Weight::new(1).expect("valid")),
        ),
    }
}
