//! An arbitrary sequence of commands on two replicas, with syncs between
//! them, time passing and renderings: the path from API writes (and
//! concurrent writes on other peers) to `haproxy.cfg` and runtime commands.
//!
//! Commands are built from the fuzzer's input through the model's
//! validating constructors (values are picked from a small pool, so that
//! objects meet, or taken raw); an input a constructor refuses is dropped,
//! as the API would refuse it. Properties: nothing panics; every rendering
//! has `check_render`'s properties (deterministic, no value opens a
//! section or breaks a line, plans reach the next configuration); after a
//! sync both ways the replicas have the same digest and render the same
//! bytes.

#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aqueduct::crdt::model::{
    AclValue, Backend, BackendType, Balance, Binds, Frontend, HeaderName, Health, HealthMethod,
    Host, HttpPath, HttpVersion, Keepalive, Lease, Member, MemberKey, MemberState, Meta, Mode,
    Name, NativeLine, Natives, OwnerId, Port, Registration, RegistrationKey, Rule, RuleOperation,
    Rules, ServiceName, Version, Weight,
};
use aqueduct::crdt::{Command, Hlc, Replica, ReplicaId};
use aqueduct::haproxy::render::Rendered;
use aqueduct_fuzz::{check_render, check_render_with, settings};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

/// A value: one of a small pool (so that commands meet on the same
/// objects), or raw text for the validating constructor to judge.
#[derive(Arbitrary, Debug)]
enum Text {
    Pick(u8),
    Raw(String),
}

impl Text {
    fn get(&self, pool: &[&str]) -> String {
        match self {
            Text::Pick(i) => pool[usize::from(*i) % pool.len()].to_owned(),
            Text::Raw(raw) => raw.clone(),
        }
    }
}

const NAMES: &[&str] = &["web", "api", "b1", "b-2", "x.y:z", "0"];
const HOSTS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "::1",
    "fe80::2",
    "app.internal",
    "localhost",
];
const SERVICES: &[&str] = &["app", "svc"];
const VERSIONS: &[&str] = &["1.0.0", "2.0.0", "2.0.0-rc.1+b5"];
const BINDS: &[&str] = &[
    "*:80",
    "127.0.0.1:8080",
    "[::1]:443",
    ":81,10.0.0.1:82",
    "app.internal:80",
];
const VALUES: &[&str] = &["/api", "example.com", "^/v[0-9]+/", "a"];
const HEADERS: &[&str] = &["host", "x-canary"];
const URIS: &[&str] = &["/", "/health", "/a?b=c"];
const NATIVES: &[&str] = &[
    "option forwardfor",
    "timeout server 5s",
    "default-server inter 3s",
    "http-request deny if { path_beg /admin }",
    "use_backend api if { path_beg /api }",
];

fn name(t: &Text) -> Option<Name> {
    Name::new(&t.get(NAMES)).ok()
}
fn host(t: &Text) -> Option<Host> {
    Host::new(&t.get(HOSTS)).ok()
}
fn port(p: u16) -> Option<Port> {
    // Mostly a few ports, so that members and registrations meet.
    Port::new(i64::from(if p < 0xff00 { 8080 + p % 4 } else { p & 0xff })).ok()
}
fn service(t: &Text) -> Option<ServiceName> {
    ServiceName::new(&t.get(SERVICES)).ok()
}
fn version(t: &Text) -> Option<Version> {
    Version::new(&t.get(VERSIONS)).ok()
}
fn natives(lines: &[Text]) -> Option<Natives> {
    let lines = lines
        .iter()
        .map(|l| NativeLine::new(&l.get(NATIVES)).ok())
        .collect::<Option<Vec<_>>>()?;
    Natives::try_from(lines).ok()
}
/// An optional value: absent, or present and valid (`None` if refused).
fn optional<T>(t: &Option<Text>, valid: impl Fn(&Text) -> Option<T>) -> Option<Option<T>> {
    match t {
        None => Some(None),
        Some(t) => valid(t).map(Some),
    }
}
fn mode(tcp: bool) -> Mode {
    if tcp { Mode::Tcp } else { Mode::Http }
}
fn pick<T: Copy>(i: u8, all: &[T]) -> T {
    all[usize::from(i) % all.len()]
}
fn member_state(i: u8) -> MemberState {
    pick(
        i,
        &[MemberState::Ready, MemberState::Drain, MemberState::Maint],
    )
}

#[derive(Arbitrary, Debug)]
struct RuleIn {
    operation: u8,
    header: Option<Text>,
    value: Text,
    backend: Text,
}

impl RuleIn {
    fn model(&self) -> Option<Rule> {
        use RuleOperation::*;
        let operation = pick(
            self.operation,
            &[
                Path, PathBeg, PathReg, Url, UrlBeg, UrlReg, Hdr, HdrBeg, HdrEnd, HdrDom, HdrSub,
                HdrReg,
            ],
        );
        let header = match &self.header {
            Some(h) => Some(HeaderName::new(&h.get(HEADERS)).ok()?),
            None => None,
        };
        let value = AclValue::new(&self.value.get(VALUES)).ok()?;
        Rule::new(operation, header, value, name(&self.backend)?).ok()
    }
}

#[derive(Arbitrary, Debug)]
struct HealthIn {
    post: bool,
    uri: Text,
    http11: bool,
    interval_ms: u32,
}

#[derive(Arbitrary, Debug)]
struct RegistrationIn {
    service: Text,
    version: Text,
    host: Text,
    port: u16,
}

impl RegistrationIn {
    fn key(&self) -> Option<RegistrationKey> {
        Some(RegistrationKey {
            service: service(&self.service)?,
            version: version(&self.version)?,
            host: host(&self.host)?,
            port: port(self.port)?,
        })
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    PutFrontend {
        name: Text,
        bind: Text,
        backend: Text,
        tcp: bool,
        keepalive: u8,
        rules: Vec<RuleIn>,
        natives: Vec<Text>,
    },
    DeleteFrontend(Text),
    PutBackend {
        name: Text,
        dynamic: bool,
        service: Option<Text>,
        version: Option<Text>,
        balance: u8,
        host: Option<Text>,
        tcp: bool,
        natives: Vec<Text>,
        health: Option<HealthIn>,
        members: Vec<(Text, u16, u16, u8)>,
    },
    DeleteBackend(Text),
    Switch {
        name: Text,
        service: Option<Text>,
        version: Text,
    },
    PutMember {
        backend: Text,
        host: Text,
        port: u16,
        weight: u16,
        state: u8,
    },
    DeleteMember {
        backend: Text,
        host: Text,
        port: u16,
    },
    Register {
        key: RegistrationIn,
        meta: String,
        ttl_ms: u32,
        owner: Option<u8>,
    },
    Deregister(RegistrationIn),
    RenewLeases(Vec<(RegistrationIn, u32, Option<u8>)>),
}

impl Op {
    /// The command, or `None` where a constructor refuses a value.
    fn command(&self, now_ms: u64) -> Option<Command> {
        Some(match self {
            Op::PutFrontend {
                name: key,
                bind,
                backend,
                tcp,
                keepalive,
                rules,
                natives: lines,
            } => {
                let rules = rules
                    .iter()
                    .map(RuleIn::model)
                    .collect::<Option<Vec<_>>>()?;
                Command::PutFrontend {
                    name: name(key)?,
                    frontend: Frontend {
                        bind: Binds::parse(&bind.get(BINDS)).ok()?,
                        backend: name(backend)?,
                        mode: mode(*tcp),
                        keepalive: pick(
                            *keepalive,
                            &[Keepalive::Default, Keepalive::Close, Keepalive::ServerClose],
                        ),
                        rules: Rules::try_from(rules).ok()?,
                        natives: natives(lines)?,
                    },
                }
            }
            Op::DeleteFrontend(key) => Command::DeleteFrontend { name: name(key)? },
            Op::PutBackend {
                name: key,
                dynamic,
                service: followed,
                version: at,
                balance,
                host: host_header,
                tcp,
                natives: lines,
                health,
                members,
            } => {
                use Balance::*;
                let health = match health {
                    None => Health::default(),
                    Some(h) => Health::new(
                        if h.post {
                            HealthMethod::Post
                        } else {
                            HealthMethod::Get
                        },
                        HttpPath::new(&h.uri.get(URIS)).ok()?,
                        if h.http11 {
                            HttpVersion::Http11
                        } else {
                            HttpVersion::Http10
                        },
                        h.interval_ms,
                    )
                    .ok()?,
                };
                let members = members
                    .iter()
                    .map(|(h, p, weight, state)| {
                        let member = Member {
                            weight: Weight::new(i64::from(*weight)).ok()?,
                            state: member_state(*state),
                        };
                        Some(((host(h)?, port(*p)?), member))
                    })
                    .collect::<Option<BTreeMap<_, _>>>()?;
                Command::PutBackend {
                    name: name(key)?,
                    backend: Backend {
                        kind: if *dynamic {
                            BackendType::Dynamic
                        } else {
                            BackendType::Static
                        },
                        service: optional(followed, service)?,
                        version: optional(at, version)?,
                        balance: pick(
                            *balance,
                            &[Roundrobin, StaticRr, Leastconn, First, Source, Uri, Random],
                        ),
                        host: optional(host_header, host)?,
                        mode: mode(*tcp),
                        natives: natives(lines)?,
                        health,
                        members,
                    },
                }
            }
            Op::DeleteBackend(key) => Command::DeleteBackend { name: name(key)? },
            Op::Switch {
                name: key,
                service: followed,
                version: to,
            } => Command::SwitchBackend {
                name: name(key)?,
                service: optional(followed, service)?,
                version: version(to)?,
            },
            Op::PutMember {
                backend,
                host: h,
                port: p,
                weight,
                state,
            } => Command::PutMember {
                key: MemberKey {
                    backend: name(backend)?,
                    host: host(h)?,
                    port: port(*p)?,
                },
                member: Member {
                    weight: Weight::new(i64::from(*weight)).ok()?,
                    state: member_state(*state),
                },
            },
            Op::DeleteMember {
                backend,
                host: h,
                port: p,
            } => Command::DeleteMember {
                key: MemberKey {
                    backend: name(backend)?,
                    host: host(h)?,
                    port: port(*p)?,
                },
            },
            Op::Register {
                key,
                meta,
                ttl_ms,
                owner,
            } => Command::Register {
                key: key.key()?,
                registration: Registration {
                    meta: Meta::new(meta).ok()?,
                    lease: lease(now_ms, *ttl_ms, *owner)?,
                },
            },
            Op::Deregister(key) => Command::Deregister { key: key.key()? },
            Op::RenewLeases(leases) => Command::RenewLeases {
                leases: leases
                    .iter()
                    .map(|(key, ttl_ms, owner)| Some((key.key()?, lease(now_ms, *ttl_ms, *owner)?)))
                    .collect::<Option<Vec<_>>>()?,
            },
        })
    }
}

fn lease(now_ms: u64, ttl_ms: u32, owner: Option<u8>) -> Option<Lease> {
    let lease = Lease::new(now_ms, ttl_ms).ok()?;
    Some(match owner {
        Some(owner) => lease.owned_by(OwnerId(u64::from(owner % 4))),
        None => lease,
    })
}

/// What the rendering peer knows of registration owners (ids 0–3).
#[derive(Arbitrary, Debug)]
struct OwnersIn {
    me: Option<u8>,
    up: Vec<u8>,
    silent_since: Vec<(u8, u32)>,
    unknown_up: bool,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// A command on replica A (or B).
    Execute { on_b: bool, op: Op },
    /// Anti-entropy both ways: afterwards both replicas are equal.
    Sync,
    /// The wall clock moves on (leases run out).
    Wait(u32),
    /// Replica A renders; the driver plans from its last rendering. With
    /// a bind host (IPv4 127.0.0.x or IPv6 ::x) in place of `*`.
    Render {
        owners: OwnersIn,
        bind_host: Option<(bool, u8)>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    start_ms: u64,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let mut now_ms = input.start_ms % Hlc::WALL_MS_MAX;
    let mut a = Replica::new(ReplicaId::new(1).expect("non-zero"));
    let mut b = Replica::new(ReplicaId::new(2).expect("non-zero"));
    let mut last: Option<Rendered> = None;
    for step in &input.steps {
        match step {
            Step::Execute { on_b, op } => {
                if let Some(command) = op.command(now_ms) {
                    let replica = if *on_b { &mut b } else { &mut a };
                    // Refusals (not found, not dynamic, too many) are fine.
                    let _ = replica.execute(&command, now_ms);
                }
            }
            Step::Sync => {
                let for_a = b.missing_for_peer(&a.summary());
                a.join(&for_a).expect("a peer's anti-entropy answer joins");
                let for_b = a.missing_for_peer(&b.summary());
                b.join(&for_b).expect("a peer's anti-entropy answer joins");
                assert_eq!(
                    a.digest(),
                    b.digest(),
                    "not converged after a sync both ways"
                );
                assert_eq!(
                    check_render(&a.view(), now_ms, None).text(),
                    check_render(&b.view(), now_ms, None).text(),
                    "equal replicas render differently"
                );
            }
            Step::Wait(ms) => now_ms = now_ms.saturating_add(u64::from(*ms)),
            Step::Render { owners, bind_host } => {
                let mut view = a.view();
                let id = |i: u8| OwnerId(u64::from(i % 4));
                view.owners.me = owners.me.map(id);
                view.owners.up = owners.up.iter().copied().map(id).collect();
                view.owners.silent_since_ms = owners
                    .silent_since
                    .iter()
                    .map(|(i, ago)| (id(*i), now_ms.saturating_sub(u64::from(*ago))))
                    .collect();
                view.owners.unknown_up = owners.unknown_up;
                let bind_host = bind_host.map(|(v6, x)| -> IpAddr {
                    if v6 {
                        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, u16::from(x)).into()
                    } else {
                        Ipv4Addr::new(127, 0, 0, x).into()
                    }
                });
                let settings = settings(bind_host);
                last = Some(check_render_with(&settings, &view, now_ms, last.as_ref()));
            }
        }
    }
});
