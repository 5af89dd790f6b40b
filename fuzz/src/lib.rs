//! What the fuzz targets share: the properties every rendered
//! configuration must have, checked as an independent oracle (it reads the
//! text HAProxy would read, not the renderer's own structures).

use std::collections::BTreeMap;
use std::net::IpAddr;

use aqueduct::crdt::model::{
    AclValue, Backend, BackendType, Balance, Binds, CfgWord, ConfigView, Frontend, Health, Host,
    Keepalive, Lease, LogTarget, Member, Meta, Mode, Name, Natives, Port, Registration,
    RegistrationKey, Rule, RuleOperation, Rules, SECTION_KEYWORDS, ServiceName, Version,
};
use aqueduct::crdt::{Command, Replica, ReplicaId};
use aqueduct::haproxy::render::{
    Plan, Privileges, Rendered, Settings, StatsListener, plan, render,
};

/// Peer settings with every optional part of the preamble present (a log
/// target, a stats listener, a privilege drop), so that they are rendered
/// too; `bind_host` replaces `*` in frontend binds.
pub fn settings(bind_host: Option<IpAddr>) -> Settings {
    let word = |w: &str| CfgWord::new(w).expect("a valid setting");
    Settings {
        log: Some(LogTarget::new("127.0.0.1:514 local0").expect("a valid log target")),
        stats: Some(StatsListener {
            bind: "127.0.0.1:8404".parse().expect("an address"),
            user: word("admin"),
            password: word("secret"),
        }),
        bind_host,
        privileges: Some(Privileges {
            user: word("haproxy"),
            group: word("haproxy"),
            chroot: word("/run/aqueduct/chroot"),
        }),
        ..Settings::new(
            word("/run/aqueduct/admin.sock"),
            word("/run/aqueduct/state"),
        )
    }
}

/// Renders `view` at `now_ms` and checks the rendering properties:
/// - deterministic: rendering twice gives the same sections and bytes;
/// - no value breaks out of its line: no `\r` or NUL anywhere, and every
///   line that opens a section (its first word a section keyword, at any
///   indentation) is one the view calls for — `global`, `defaults`, the
///   stats `listen`, then `frontend <key>` for each frontend and
///   `backend <key>` for each backend of the view, in key order;
/// - runtime commands planned from `previous` (if any) to this rendering
///   are single lines, and a runtime plan is exactly what gets HAProxy from
///   `previous` to this rendering without a reload.
pub fn check_render(view: &ConfigView, now_ms: u64, previous: Option<&Rendered>) -> Rendered {
    check_render_with(&settings(None), view, now_ms, previous)
}

/// [`check_render`] with the given peer settings.
pub fn check_render_with(
    settings: &Settings,
    view: &ConfigView,
    now_ms: u64,
    previous: Option<&Rendered>,
) -> Rendered {
    let rendered = render(view, settings, now_ms);
    let again = render(view, settings, now_ms);
    assert_eq!(rendered, again, "rendering is not deterministic");
    let text = rendered.text();
    assert_eq!(text, again.text(), "rendered text is not deterministic");
    assert!(
        !text.contains(['\r', '\0']),
        "a control character in:\n{text}"
    );

    let opened: Vec<&str> = text
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|word| SECTION_KEYWORDS.contains(&word))
        })
        .map(str::trim)
        .collect();
    let mut expected = vec![
        "global".to_owned(),
        "defaults".to_owned(),
        "listen _aqueduct_stats".to_owned(),
    ];
    expected.extend(view.frontends.keys().map(|key| format!("frontend {key}")));
    expected.extend(view.backends.keys().map(|key| format!("backend {key}")));
    assert_eq!(opened, expected, "sections opened by:\n{text}");

    if let Some(previous) = previous {
        match plan(previous, &rendered) {
            Plan::Unchanged => assert_eq!(previous, &rendered),
            Plan::Reload => assert_ne!(previous, &rendered),
            Plan::Runtime(changes) => {
                assert_eq!(
                    previous.with_runtime_servers_of(&rendered),
                    rendered,
                    "a runtime plan that does not reach the next configuration"
                );
                for change in &changes {
                    for command in change.commands() {
                        assert!(
                            !command.line.contains(['\n', '\r', '\0', ';']),
                            "runtime command spans lines: {:?}",
                            command.line
                        );
                    }
                }
            }
        }
    }
    rendered
}

/// A wall-clock time within the stamps' range, to write and judge leases at.
pub const NOW_MS: u64 = 1_800_000_000_000;

/// A replica holding one of each kind of object (a frontend with a rule, a
/// static backend with a member, a dynamic backend and a registration it
/// follows), written by replica `id`: something for a peer's delta to
/// overwrite, remove or clash with.
pub fn populated(id: u64) -> Replica {
    let name = |n: &str| Name::new(n).expect("a valid name");
    let host = |h: &str| Host::new(h).expect("a valid host");
    let port = |p: i64| Port::new(p).expect("a valid port");
    let service = ServiceName::new("app").expect("a valid service");
    let version = Version::new("1.0.0").expect("a valid version");
    let rule = Rule::new(
        RuleOperation::PathBeg,
        None,
        AclValue::new("/api").expect("a valid value"),
        name("dyn"),
    )
    .expect("a valid rule");
    let commands = [
        Command::PutBackend {
            name: name("static"),
            backend: Backend {
                kind: BackendType::Static,
                service: None,
                version: None,
                balance: Balance::default(),
                host: Some(host("example.com")),
                mode: Mode::Http,
                natives: Natives::default(),
                health: Health::default(),
                members: [((host("10.0.0.1"), port(8080)), Member::default())].into(),
            },
        },
        Command::PutBackend {
            name: name("dyn"),
            backend: Backend {
                kind: BackendType::Dynamic,
                service: Some(service.clone()),
                version: Some(version.clone()),
                balance: Balance::Leastconn,
                host: None,
                mode: Mode::Http,
                natives: Natives::default(),
                health: Health::default(),
                members: BTreeMap::new(),
            },
        },
        Command::PutFrontend {
            name: name("web"),
            frontend: Frontend {
                bind: Binds::parse("*:8080").expect("a valid bind"),
                backend: name("static"),
                mode: Mode::Http,
                keepalive: Keepalive::default(),
                rules: Rules::try_from(vec![rule]).expect("one rule"),
                natives: Natives::default(),
            },
        },
        Command::Register {
            key: RegistrationKey {
                service,
                version,
                host: host("10.0.0.2"),
                port: port(9000),
            },
            registration: Registration {
                meta: Meta::new("{}").expect("valid meta"),
                lease: Lease::new(NOW_MS, 10_000).expect("a valid lease"),
            },
        },
    ];
    let mut replica = Replica::new(ReplicaId::new(id).expect("non-zero"));
    for command in &commands {
        replica
            .execute(command, NOW_MS)
            .expect("the sample commands apply");
    }
    replica
}
