//! Rendering `haproxy.cfg` and planning runtime changes versus reloads.
//!
//! Snapshot tests: each folder of `tests/fixtures/render/` holds
//! `requests.json` (API requests, `[method, path, body]`, loaded through the
//! real router into an in-memory peer) and `haproxy.cfg` (the expected
//! render, which must also pass `haproxy -c`). To accept new output, run
//! with `AQUEDUCT_UPDATE_SNAPSHOTS=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use aqueduct::api::{ApiOptions, router};
use aqueduct::crdt::model::{
    Backend, BackendType, Balance, Binds, CfgWord, ConfigView, Frontend, Health, Host, Keepalive,
    Member, MemberState, Mode, Name, NativeLine, Port, Weight,
};
use aqueduct::crdt::model::{NativesPolicy, Section};
use aqueduct::crdt::{Replica, ReplicaId};
use aqueduct::haproxy::render::{
    Change, Plan, Privileges, Rendered, Settings, StatsListener, left_out_natives,
    lines_in_section, plan, render,
};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

mod support;
use support::memory::{Store, spawn_peer, wall_clock_ms};

const UPDATE: &str = "AQUEDUCT_UPDATE_SNAPSHOTS";

/// The settings every fixture renders with.
fn settings() -> Settings {
    let mut settings = Settings::new(
        CfgWord::new("/var/lib/aqueduct/haproxy/admin.sock").unwrap(),
        CfgWord::new("/var/lib/aqueduct/haproxy/server-state").unwrap(),
    );
    settings.stats = Some(StatsListener {
        bind: "127.0.0.1:1988".parse().unwrap(),
        user: CfgWord::new("admin").unwrap(),
        password: CfgWord::new("secret").unwrap(),
    });
    settings
}

/// Loads `requests.json` through the API and returns the resulting view.
async fn view_of_fixture(dir: &Path) -> ConfigView {
    let text = std::fs::read_to_string(dir.join("requests.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let requests: Vec<(String, String, Option<Value>)> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let handle = spawn_peer(Replica::new(ReplicaId::new(7).unwrap()), Store::Works);
    let app = router(handle.clone(), ApiOptions::default());
    for (method, path, body) in requests {
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(&path)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let answer = app.clone().oneshot(request).await.unwrap();
        let status = answer.status();
        let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(
            status,
            StatusCode::OK,
            "{method} {path} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&bytes)
        );
    }
    handle.view().await.unwrap().as_ref().clone()
}

/// Checks one rendered text against `expected`, or rewrites it in update
/// mode; and checks that HAProxy accepts it.
fn check_snapshot(expected: &Path, text: &str) {
    if std::env::var_os(UPDATE).is_some() {
        std::fs::write(expected, text).unwrap();
    }
    let want = std::fs::read_to_string(expected).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with {UPDATE}=1 to create it)",
            expected.display()
        )
    });
    assert!(
        text == want,
        "{} differs (run with {UPDATE}=1 to accept):\n{}",
        expected.display(),
        line_diff(&want, text)
    );
    haproxy_accepts(expected);
}

fn line_diff(want: &str, got: &str) -> String {
    let (want, got): (Vec<_>, Vec<_>) = (want.lines().collect(), got.lines().collect());
    (0..want.len().max(got.len()))
        .filter(|&i| want.get(i) != got.get(i))
        .take(10)
        .map(|i| {
            format!(
                "line {}: want {:?}\n         got  {:?}",
                i + 1,
                want.get(i),
                got.get(i)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn haproxy_accepts(file: &Path) {
    let output = Process::new("haproxy")
        .args(["-c", "-q", "-f"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running haproxy -c (is HAProxy installed?): {e}"));
    assert!(
        output.status.success(),
        "haproxy -c refused {}:\n{}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn fixture_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/render");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixtures in {}", root.display());
    dirs
}

#[tokio::test]
async fn every_fixture_renders_its_expected_configuration_and_haproxy_accepts_it() {
    for dir in fixture_dirs() {
        let view = view_of_fixture(&dir).await;
        let text = render(&view, &settings(), wall_clock_ms()).text();
        check_snapshot(&dir.join("haproxy.cfg"), &text);
    }
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn static_backend(members: &[(&str, u16, Member)]) -> Backend {
    Backend {
        kind: BackendType::Static,
        service: None,
        version: None,
        balance: Balance::Roundrobin,
        host: None,
        mode: Mode::Http,
        natives: Default::default(),
        health: Health::default(),
        members: members
            .iter()
            .map(|(host, port, member)| {
                (
                    (
                        Host::new(host).unwrap(),
                        Port::new(i64::from(*port)).unwrap(),
                    ),
                    *member,
                )
            })
            .collect(),
    }
}

fn frontend(bind: &str, backend: &str) -> Frontend {
    Frontend {
        bind: Binds::parse(bind).unwrap(),
        backend: name(backend),
        mode: Mode::Http,
        keepalive: Keepalive::Default,
        rules: Default::default(),
        natives: Default::default(),
    }
}

fn ready() -> Member {
    Member::default()
}

/// One frontend `web` on `*:8080` in front of backend `app`.
fn view_with_app(app: Backend) -> ConfigView {
    ConfigView {
        frontends: BTreeMap::from([(name("web"), frontend("*:8080", "app"))]),
        backends: BTreeMap::from([(name("app"), app)]),
        ..ConfigView::default()
    }
}

fn rendered(view: &ConfigView) -> Rendered {
    render(view, &settings(), 0)
}

fn runtime_commands(plan: Plan) -> Vec<String> {
    match plan {
        Plan::Runtime(changes) => changes
            .iter()
            .flat_map(|c| c.commands())
            .map(|c| c.line)
            .collect(),
        other => panic!("expected runtime changes, got {other:?}"),
    }
}

#[test]
fn the_same_view_renders_the_same_bytes() {
    let a = view_with_app(static_backend(&[
        ("10.0.0.2", 80, ready()),
        ("10.0.0.1", 80, ready()),
    ]));
    let b = view_with_app(static_backend(&[
        ("10.0.0.1", 80, ready()),
        ("10.0.0.2", 80, ready()),
    ]));
    assert_eq!(rendered(&a).text(), rendered(&b).text());
}

#[test]
fn an_unchanged_view_plans_nothing() {
    let view = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));
    assert_eq!(plan(&rendered(&view), &rendered(&view)), Plan::Unchanged);
}

#[test]
fn adding_a_member_is_a_runtime_add_enabled_after_its_health_check() {
    let before = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));
    let after = view_with_app(static_backend(&[
        ("10.0.0.1", 80, ready()),
        ("10.0.0.2", 80, ready()),
    ]));
    assert_eq!(
        runtime_commands(plan(&rendered(&before), &rendered(&after))),
        [
            "add server app/10.0.0.2:80 10.0.0.2:80 weight 1 check inter 2000ms",
            "enable health app/10.0.0.2:80",
            "set server app/10.0.0.2:80 state ready",
        ]
    );
}

#[test]
fn removing_a_member_puts_it_in_maintenance_then_deletes_it() {
    let before = view_with_app(static_backend(&[
        ("10.0.0.1", 80, ready()),
        ("10.0.0.2", 80, ready()),
    ]));
    let after = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));
    assert_eq!(
        runtime_commands(plan(&rendered(&before), &rendered(&after))),
        [
            "set server app/10.0.0.2:80 state maint",
            "del server app/10.0.0.2:80",
        ]
    );
}

#[test]
fn reweighting_or_draining_a_member_is_a_runtime_update() {
    let before = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));
    let drained = Member {
        weight: Weight::new(5).unwrap(),
        state: MemberState::Drain,
    };
    let after = view_with_app(static_backend(&[("10.0.0.1", 80, drained)]));
    assert_eq!(
        runtime_commands(plan(&rendered(&before), &rendered(&after))),
        [
            "set server app/10.0.0.1:80 weight 5",
            "set server app/10.0.0.1:80 state drain",
        ]
    );
}

#[test]
fn a_draining_member_has_weight_zero_in_the_file_and_a_maintained_one_is_disabled() {
    let drain = Member {
        weight: Weight::new(5).unwrap(),
        state: MemberState::Drain,
    };
    let maint = Member {
        weight: Weight::new(5).unwrap(),
        state: MemberState::Maint,
    };
    let text = rendered(&view_with_app(static_backend(&[
        ("10.0.0.1", 80, drain),
        ("10.0.0.2", 80, maint),
    ])))
    .text();
    assert!(text.contains("server 10.0.0.1:80 10.0.0.1:80 weight 0 check inter 2000ms\n"));
    assert!(text.contains("server 10.0.0.2:80 10.0.0.2:80 weight 5 check inter 2000ms disabled\n"));
}

#[test]
fn a_frontend_change_reloads() {
    let before = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));
    let mut after = before.clone();
    after
        .frontends
        .insert(name("web"), frontend("*:8081", "app"));
    assert_eq!(plan(&rendered(&before), &rendered(&after)), Plan::Reload);
}

#[test]
fn a_member_change_in_a_static_rr_backend_reloads() {
    let mut backend = static_backend(&[("10.0.0.1", 80, ready())]);
    backend.balance = Balance::StaticRr;
    let before = view_with_app(backend.clone());
    backend.members.insert(
        (Host::new("10.0.0.2").unwrap(), Port::new(80).unwrap()),
        ready(),
    );
    let after = view_with_app(backend);
    assert_eq!(plan(&rendered(&before), &rendered(&after)), Plan::Reload);
}

#[test]
fn a_member_added_by_host_name_reloads_because_haproxy_resolves_names_at_load() {
    let before = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));
    let after = view_with_app(static_backend(&[
        ("10.0.0.1", 80, ready()),
        ("app.internal", 80, ready()),
    ]));
    assert_eq!(plan(&rendered(&before), &rendered(&after)), Plan::Reload);
}

#[test]
fn a_member_removed_by_host_name_is_still_a_runtime_change() {
    let before = view_with_app(static_backend(&[
        ("10.0.0.1", 80, ready()),
        ("app.internal", 80, ready()),
    ]));
    let after = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));
    let Plan::Runtime(changes) = plan(&rendered(&before), &rendered(&after)) else {
        panic!("expected a runtime change");
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].change, Change::Remove);
}

#[test]
fn a_reference_to_a_missing_or_other_mode_backend_is_left_out_and_haproxy_accepts_the_result() {
    // The API refuses both, but concurrent writes on two peers can produce
    // them; every peer must still render a loadable configuration.
    let mut view = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));
    let mut tcp = static_backend(&[("10.0.0.3", 5432, ready())]);
    tcp.mode = Mode::Tcp;
    view.backends.insert(name("db"), tcp);
    let mut web = frontend("*:8080", "gone");
    web.rules = vec![
        aqueduct::crdt::model::Rule::new(
            aqueduct::crdt::model::RuleOperation::PathBeg,
            None,
            aqueduct::crdt::model::AclValue::new("/db").unwrap(),
            name("db"),
        )
        .unwrap(),
    ]
    .try_into()
    .unwrap();
    view.frontends.insert(name("web"), web);
    let text = rendered(&view).text();
    assert!(text.contains("# default backend left out: backend gone does not exist"));
    assert!(text.contains("# rule rule_1_path_beg left out: backend db is in tcp mode"));
    let file = std::env::temp_dir().join(format!("aqueduct-render-{}.cfg", std::process::id()));
    std::fs::write(&file, &text).unwrap();
    haproxy_accepts(&file);
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn a_directive_in_natives_held_from_an_older_release_is_commented_out() {
    // The API refuses `.if`/`.endif` lines since 2.1, but 2.0 peers and
    // stores may hold some, and they still decode: an `.if 0` here and an
    // `.endif` in another object must not switch off what lies between.
    let mut app = static_backend(&[("10.0.0.1", 80, ready())]);
    app.natives = vec![NativeLine::new(".if 0").unwrap()].try_into().unwrap();
    let mut web = frontend("*:8080", "app");
    web.natives = vec![NativeLine::new(".endif").unwrap()].try_into().unwrap();
    let mut view = view_with_app(app);
    view.frontends.insert(name("web"), web);
    let text = rendered(&view).text();
    assert!(
        text.contains(
            r#"# left out, ".if" is not allowed in a backend (a configuration directive"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"# left out, ".endif" is not allowed in a frontend (a configuration directive"#
        ),
        "{text}"
    );
    let file = std::env::temp_dir().join(format!("aqueduct-render-dot-{}.cfg", std::process::id()));
    std::fs::write(&file, &text).unwrap();
    haproxy_accepts(&file);
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn a_section_keyword_added_in_2_1_decodes_but_is_commented_out() {
    // `log-forward` opens a section; 2.0 did not know it, so it may be
    // stored, and must still decode, but never reach HAProxy as a line.
    let line = NativeLine::new("log-forward sneaky").expect("decodes as in 2.0");
    let mut app = static_backend(&[("10.0.0.1", 80, ready())]);
    app.natives = vec![line].try_into().unwrap();
    let text = rendered(&view_with_app(app)).text();
    assert!(
        text.contains(
            r#"# left out, "log-forward" is not allowed in a backend (opens a new section): log-forward sneaky"#
        ),
        "{text}"
    );
}

/// Lines an older release took, which the allow-list refuses: each reads a
/// file, opens a listener or hides a word in quotes.
const REFUSED_STORED_LINES: [&str; 4] = [
    "filter spoe engine x config /etc/shadow",
    "http-request return status 200 content-type text/plain file /etc/passwd",
    "b\"in\"d 127.0.0.1:1",
    "acl x src -f /etc/passwd",
];

fn natives(lines: &[&str]) -> aqueduct::crdt::model::Natives {
    lines
        .iter()
        .map(|line| NativeLine::new(line).expect("decodes as in 2.0 and 2.1"))
        .collect::<Vec<_>>()
        .try_into()
        .unwrap()
}

#[test]
fn a_stored_natives_line_the_allow_list_refuses_is_a_comment_and_haproxy_loads_the_rest() {
    let mut app = static_backend(&[("10.0.0.1", 80, ready())]);
    app.natives = natives(&REFUSED_STORED_LINES);
    let mut view = view_with_app(app);
    view.frontends.get_mut(&name("web")).unwrap().natives = natives(&[
        REFUSED_STORED_LINES[1],
        "http-response set-header X-Test yes",
    ]);

    let text = rendered(&view).text();

    assert!(
        text.contains(
            "    # left out, \"filter\" is not allowed in a backend (loads a filter, which reads a \
             configuration file): filter spoe engine x config /etc/shadow\n"
        ),
        "{text}"
    );
    for line in REFUSED_STORED_LINES {
        assert!(
            !text.contains(&format!("    {line}\n")),
            "{line:?} rendered:\n{text}"
        );
    }
    assert!(
        text.contains("\n    http-response set-header X-Test yes\n"),
        "{text}"
    );
    let left_out = left_out_natives(&view, &settings());
    assert_eq!(
        left_out.len(),
        REFUSED_STORED_LINES.len() + 1,
        "{left_out:?}"
    );
    let file = std::env::temp_dir().join(format!(
        "aqueduct-render-refused-{}.cfg",
        std::process::id()
    ));
    std::fs::write(&file, &text).unwrap();
    haproxy_accepts(&file);
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn an_unrestricted_peer_renders_any_line_that_opens_no_section() {
    let mut app = static_backend(&[("10.0.0.1", 80, ready())]);
    app.natives = natives(&["errorfile 503 /dev/null", "log-forward sneaky"]);
    let mut unrestricted = settings();
    unrestricted.natives = NativesPolicy::Unrestricted;

    let text = render(&view_with_app(app), &unrestricted, 0).text();

    assert!(text.contains("\n    errorfile 503 /dev/null\n"), "{text}");
    assert!(text.contains("# left out, \"log-forward\""), "{text}");
}

#[test]
fn a_refusal_quotes_only_lines_of_the_written_section() {
    let mut app = static_backend(&[("10.0.0.1", 80, ready())]);
    app.natives = natives(&["timeout server 5s"]);
    let text = rendered(&view_with_app(app)).text();
    let every_line: Vec<usize> = (1..=text.lines().count()).collect();

    let quoted = lines_in_section(&text, Section::Backend, &name("app"), &every_line);

    assert_eq!(quoted.first().map(String::as_str), Some("backend app"));
    assert!(
        quoted.contains(&"timeout server 5s".to_owned()),
        "{quoted:?}"
    );
    // The stats listener's password and the frontend are other sections.
    assert!(
        quoted
            .iter()
            .all(|line| !line.contains("secret") && !line.contains("frontend")),
        "{quoted:?}"
    );
    assert!(lines_in_section(&text, Section::Frontend, &name("app"), &every_line).is_empty());
}

#[test]
fn bind_host_replaces_the_wildcard_only() {
    let mut view = view_with_app(static_backend(&[]));
    view.frontends
        .insert(name("web"), frontend("*:8080,10.1.1.1:8081", "app"));
    let mut settings = settings();
    settings.bind_host = Some("127.0.0.2".parse().unwrap());
    let text = render(&view, &settings, 0).text();
    assert!(
        text.contains("    bind 127.0.0.2:8080\n    bind 10.1.1.1:8081\n"),
        "{text}"
    );
}

#[test]
fn member_changes_leave_the_structure_key_alone_and_structure_changes_move_it() {
    let before = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));
    let members = view_with_app(static_backend(&[("10.0.0.2", 80, ready())]));
    let mut structure = before.clone();
    structure
        .frontends
        .insert(name("web"), frontend("*:8081", "app"));
    let key = rendered(&before).structure_key();
    assert_eq!(rendered(&members).structure_key(), key);
    assert_ne!(rendered(&structure).structure_key(), key);
}

#[test]
fn the_members_of_a_structure_that_cannot_run_still_reach_the_running_one() {
    let active = rendered(&view_with_app(static_backend(&[("10.0.0.1", 80, ready())])));
    let mut wanted = view_with_app(static_backend(&[
        ("10.0.0.1", 80, ready()),
        ("10.0.0.2", 80, ready()),
    ]));
    wanted
        .frontends
        .insert(name("web"), frontend("*:8081", "app"));
    let next = rendered(&wanted);
    assert_eq!(plan(&active, &next), Plan::Reload);

    let merged = active.with_runtime_servers_of(&next);

    assert_eq!(merged.structure_key(), active.structure_key());
    assert_eq!(
        runtime_commands(plan(&active, &merged))[0],
        "add server app/10.0.0.2:80 10.0.0.2:80 weight 1 check inter 2000ms"
    );
}

#[test]
fn a_backend_with_default_server_natives_takes_new_members_by_reload() {
    // Servers added at run time ignore `default-server`: they would differ
    // from the same servers loaded from the file.
    let mut backend = static_backend(&[("10.0.0.1", 80, ready())]);
    backend.natives =
        vec![aqueduct::crdt::model::NativeLine::new("default-server ssl verify none").unwrap()]
            .try_into()
            .unwrap();
    let before = view_with_app(backend.clone());
    backend.members.insert(
        (Host::new("10.0.0.2").unwrap(), Port::new(80).unwrap()),
        ready(),
    );
    assert_eq!(
        plan(&rendered(&before), &rendered(&view_with_app(backend))),
        Plan::Reload
    );
}

#[test]
fn an_acl_value_that_looks_like_a_flag_stays_a_value() {
    let mut view = view_with_app(static_backend(&[]));
    let mut web = frontend("*:8080", "app");
    web.rules = vec![
        aqueduct::crdt::model::Rule::new(
            aqueduct::crdt::model::RuleOperation::PathBeg,
            None,
            aqueduct::crdt::model::AclValue::new("-i").unwrap(),
            name("app"),
        )
        .unwrap(),
    ]
    .try_into()
    .unwrap();
    view.frontends.insert(name("web"), web);
    assert!(
        rendered(&view)
            .text()
            .contains("acl rule_1_path_beg path_beg -- -i\n")
    );
}

#[test]
fn replacing_every_member_adds_the_new_ones_before_removing_the_old() {
    // An A/B switch: the backend must never be without a server.
    let before = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));
    let after = view_with_app(static_backend(&[("10.0.0.2", 80, ready())]));
    let commands = runtime_commands(plan(&rendered(&before), &rendered(&after)));
    let added = commands
        .iter()
        .position(|c| c.starts_with("add server"))
        .unwrap();
    let removed = commands
        .iter()
        .position(|c| c.starts_with("del server"))
        .unwrap();
    assert!(added < removed, "{commands:?}");
}

#[test]
fn a_root_peers_haproxy_drops_to_its_user_and_group_in_its_chroot_and_haproxy_accepts_it() {
    let mut settings = settings();
    settings.privileges = Some(Privileges {
        user: CfgWord::new("haproxy").unwrap(),
        group: CfgWord::new("haproxy").unwrap(),
        chroot: CfgWord::new("/var/lib/aqueduct/haproxy/chroot").unwrap(),
    });
    let view = view_with_app(static_backend(&[("10.0.0.1", 80, ready())]));

    let text = render(&view, &settings, 0).text();

    assert!(
        text.contains(
            "global\n    master-worker\n    user haproxy\n    group haproxy\n    \
             chroot /var/lib/aqueduct/haproxy/chroot\n"
        ),
        "{text}"
    );
    // `haproxy -c` resolves the user and group (Debian's haproxy package
    // creates both); the chroot is entered only by a running worker.
    let file = std::env::temp_dir().join(format!(
        "aqueduct-render-privileges-{}.cfg",
        std::process::id()
    ));
    std::fs::write(&file, &text).unwrap();
    haproxy_accepts(&file);
    std::fs::remove_file(&file).unwrap();
}
