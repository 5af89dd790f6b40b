//! Criterion benchmarks of the renderer (`aqueduct::haproxy::render`) at
//! the size of the daemon's footprint benchmark: 10,000 static backends ×
//! 10 members, plus one frontend per 100 backends with a few routing rules,
//! built directly from model values (no replica, no API).
//!
//! Run with `cargo bench --bench render`; `cargo bench --bench render --
//! --test` runs every routine once as a smoke test. Results and targets:
//! BENCHMARKS.md, section "HAProxy driver".
//!
//! What the driver does on every change is measured apart: `render` (the
//! view to sections), `text` (the sections to `haproxy.cfg`), both together,
//! and `plan` between the running configuration and the next one. Views and
//! rendered configurations are built outside the measured region.

use std::hint::black_box;
use std::time::Duration;

use aqueduct::crdt::model::{
    AclValue, Backend, BackendType, Balance, Binds, CfgWord, ConfigView, Frontend, Health, Host,
    Keepalive, Member, Mode, Name, Port, Rule, RuleOperation, Rules,
};
use aqueduct::haproxy::render::{Plan, Settings, plan, render};
use criterion::Criterion;

/// Backends in the configuration.
const BACKENDS: usize = 10_000;
/// Static members per backend.
const MEMBERS: usize = 10;
/// One frontend per this many backends.
const BACKENDS_PER_FRONTEND: usize = 100;
/// Routing rules per frontend.
const RULES: usize = 4;
/// Registrations are not rendered here; any clock will do.
const NOW_MS: u64 = 1_750_000_000_000;

fn name(text: &str) -> Name {
    Name::new(text).expect("valid name")
}

fn backend_name(i: usize) -> Name {
    name(&format!("be-{i:05}"))
}

/// Member `m` of backend `i`: a distinct address per backend.
fn member_address(i: usize, m: usize) -> (Host, Port) {
    let host = format!("10.{}.{}.{}", i / 65_536 % 256, i / 256 % 256, i % 256);
    (
        Host::new(&host).expect("valid host"),
        Port::new(8000 + i64::try_from(m).expect("small")).expect("valid port"),
    )
}

fn backend(i: usize) -> Backend {
    Backend {
        kind: BackendType::Static,
        service: None,
        version: None,
        balance: Balance::Roundrobin,
        host: None,
        mode: Mode::Http,
        natives: Default::default(),
        health: Health::default(),
        members: (0..MEMBERS)
            .map(|m| (member_address(i, m), Member::default()))
            .collect(),
    }
}

/// Frontend `f`: `*:PORT`, its block's first backend by default, and
/// path rules to the next few.
fn frontend(f: usize) -> Frontend {
    let first = f * BACKENDS_PER_FRONTEND;
    let rules = (1..=RULES)
        .map(|r| {
            Rule::new(
                RuleOperation::PathBeg,
                None,
                AclValue::new(&format!("/api/v{r}")).expect("valid acl"),
                backend_name(first + r),
            )
            .expect("valid rule")
        })
        .collect::<Vec<_>>();
    Frontend {
        bind: Binds::parse(&format!("*:{}", 10_000 + f)).expect("valid bind"),
        backend: backend_name(first),
        mode: Mode::Http,
        keepalive: Keepalive::Default,
        rules: Rules::try_from(rules).expect("few rules"),
        natives: Default::default(),
    }
}

fn view() -> ConfigView {
    ConfigView {
        frontends: (0..BACKENDS / BACKENDS_PER_FRONTEND)
            .map(|f| (name(&format!("fe-{f:03}")), frontend(f)))
            .collect(),
        backends: (0..BACKENDS)
            .map(|i| (backend_name(i), backend(i)))
            .collect(),
        ..ConfigView::default()
    }
}

fn settings() -> Settings {
    let mut settings = Settings::new(
        CfgWord::new("/var/lib/aqueduct/haproxy/admin.sock").expect("valid path"),
        CfgWord::new("/var/lib/aqueduct/haproxy/server-state").expect("valid path"),
    );
    settings.bind_host = Some("127.0.0.2".parse().expect("valid address"));
    settings
}

fn benches(c: &mut Criterion) {
    let settings = settings();
    let before = view();
    let mut after = before.clone();
    after
        .backends
        .get_mut(&backend_name(BACKENDS / 2))
        .expect("exists")
        .members
        .insert(member_address(BACKENDS / 2, MEMBERS), Member::default());
    let running = render(&before, &settings, NOW_MS);
    let next = render(&after, &settings, NOW_MS);
    assert!(
        matches!(plan(&running, &next), Plan::Runtime(ref changes) if changes.len() == 1),
        "one added member is one runtime change"
    );

    let mut group = c.benchmark_group("render_10k_backends_x10");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("render_to_text", |b| {
        b.iter(|| render(black_box(&before), &settings, NOW_MS).text());
    });
    group.bench_function("render", |b| {
        b.iter(|| render(black_box(&before), &settings, NOW_MS));
    });
    group.bench_function("text", |b| b.iter(|| black_box(&running).text()));
    group.bench_function("plan_one_member_added", |b| {
        b.iter(|| plan(black_box(&running), black_box(&next)));
    });
    group.bench_function("plan_unchanged", |b| {
        b.iter(|| plan(black_box(&running), black_box(&running)));
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().without_plots().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
