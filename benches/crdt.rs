//! Criterion benchmarks of the replicated document (`aqueduct::crdt`) at the
//! size of the dson 0.3 check (`/work/shared/reference/dson-check.md`):
//! 10,000 frontends × 6 fields, written through [`Replica::execute`] by 5
//! replicas that exchange every delta, so the causal context names 5
//! replicas.
//!
//! Run with `cargo bench --bench crdt`; `cargo bench --bench crdt -- --test`
//! (or `cargo test --benches`) runs every routine once as a smoke test.
//! Encoded sizes cannot be measured by criterion, so they are computed by
//! [`size_table`] and printed once, before the timings. Results and targets:
//! BENCHMARKS.md, section "CRDT (criterion)".
//!
//! Timing rules: clones of the document are made outside the measured
//! region (`iter_batched_ref`, or `iter_custom` with untimed preparation),
//! and every measured join changes the state (a stream of distinct deltas
//! applied in causal order), except where the benchmark name says
//! otherwise (`identical`, `duplicate`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use aqueduct::crdt::model::{
    AclValue, Binds, Frontend, Keepalive, Mode, Name, NativeLine, Natives, Rule, RuleOperation,
    Rules,
};
use aqueduct::crdt::{Command, ConfigDelta, Replica, ReplicaId};
use criterion::{BatchSize, Criterion, SamplingMode};

/// Objects in the document (each a frontend with 6 fields).
const OBJECTS: usize = 10_000;
/// Replicas that write the document.
const WRITERS: usize = 5;
/// Writes a peer lacks in the `missing_for` benchmarks.
const LAG: usize = 200;
/// A realistic wall clock (ms since the epoch), so that stamps encode at
/// their real size.
const T0_MS: u64 = 1_750_000_000_000;

/// A random-looking 64-bit replica id (ids are drawn at random in
/// production, so they encode as 9–10 byte varints; small ids would
/// flatter the sizes).
fn replica_id(n: u64) -> ReplicaId {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ReplicaId::new(z ^ (z >> 31)).expect("not zero")
}

fn name(text: &str) -> Name {
    Name::new(text).expect("valid name")
}

/// Frontend number `i`: one bind, a default backend, one path rule and one
/// natives line.
fn frontend(i: usize) -> (Name, Frontend) {
    let rule = Rule::new(
        RuleOperation::PathBeg,
        None,
        AclValue::new(&format!("/api/v{}", i % 7)).expect("valid acl"),
        name(&format!("be-{i:05}-canary")),
    )
    .expect("valid rule");
    let rules = Rules::try_from(vec![rule]).expect("one rule");
    let natives = Natives::try_from(vec![
        NativeLine::new("option forwardfor").expect("valid natives line"),
    ])
    .expect("one line");
    (
        name(&format!("fe-{i:05}")),
        Frontend {
            bind: Binds::parse(&format!("*:{}", 10_000 + i)).expect("valid bind"),
            backend: name(&format!("be-{i:05}")),
            mode: Mode::Http,
            keepalive: Keepalive::Default,
            rules,
            natives,
        },
    )
}

/// The frontends as the replicas currently hold them, and a source of
/// `PutFrontend` commands that each change exactly one field (keepalive) of
/// the next frontend, round robin. `execute` skips unchanged fields, so each
/// command yields a one-field delta.
#[derive(Clone)]
struct Editor {
    frontends: Vec<(Name, Frontend)>,
    next: usize,
    now_ms: u64,
}

impl Editor {
    fn new() -> Self {
        Editor {
            frontends: (0..OBJECTS).map(frontend).collect(),
            next: 0,
            now_ms: T0_MS + OBJECTS as u64,
        }
    }

    fn next_command(&mut self) -> (Command, u64) {
        let (name, frontend) = &mut self.frontends[self.next % OBJECTS];
        self.next += 1;
        self.now_ms += 1;
        frontend.keepalive = match frontend.keepalive {
            Keepalive::Default => Keepalive::Close,
            Keepalive::Close => Keepalive::ServerClose,
            Keepalive::ServerClose => Keepalive::Default,
        };
        let command = Command::PutFrontend {
            name: name.clone(),
            frontend: frontend.clone(),
        };
        (command, self.now_ms)
    }
}

/// Replicas `writers[w]` for `w` in `who` take turns to execute the next
/// `steps` edits; every delta is delivered to every replica in `writers`.
fn advance(writers: &mut [Replica], who: &[usize], editor: &mut Editor, steps: usize) {
    for step in 0..steps {
        let w = who[step % who.len()];
        let (command, now) = editor.next_command();
        let delta = writers[w].execute(&command, now).expect("valid command");
        assert_eq!(delta.entries().count(), 1, "a one-field edit");
        for (o, other) in writers.iter_mut().enumerate() {
            if o != w {
                other.join(&delta).expect("valid delta");
            }
        }
    }
}

/// Everything the benchmarks start from. Built once; each benchmark clones
/// what it mutates.
struct Fixture {
    /// The 5 writers after building the document, all in the same state.
    /// `writers[0]` is the document under test.
    writers: Vec<Replica>,
    /// The state the writers hold.
    editor: Editor,
    /// Two replicas holding disjoint halves of the document (5,000 objects
    /// each, from 3 writers each); joined they make `writers[0]`'s state.
    half_a: Replica,
    half_b: Replica,
    /// `writers[1]` after `LAG` more writes by writers 2–5 that
    /// `writers[0]` has not seen.
    ahead: Replica,
    /// `writers[0]` and `writers[1]` after every frontend had one field
    /// overwritten (10,000 writes spread over the 5 writers), in sync.
    churned: (Replica, Replica),
}

impl Fixture {
    fn build() -> Self {
        let started = Instant::now();
        let mut writers: Vec<Replica> = (1..=WRITERS as u64)
            .map(|n| Replica::new(replica_id(n)))
            .collect();
        let mut log: Vec<(usize, usize, ConfigDelta)> = Vec::with_capacity(OBJECTS);
        for i in 0..OBJECTS {
            let w = i % WRITERS;
            let (name, frontend) = frontend(i);
            let command = Command::PutFrontend { name, frontend };
            let delta = writers[w]
                .execute(&command, T0_MS + i as u64)
                .expect("valid command");
            for (o, other) in writers.iter_mut().enumerate() {
                if o != w {
                    other.join(&delta).expect("valid delta");
                }
            }
            log.push((i, w, delta));
        }
        let digest = writers[0].digest();
        assert!(writers.iter().all(|w| w.digest() == digest));
        assert_eq!(writers[0].entry_count(), OBJECTS * 6);
        assert_eq!(writers[0].context().interval_count(), WRITERS);

        // Halves: writers 1 and 2 plus the first half of writer 3's writes,
        // against the rest. Each side's context is contiguous per writer.
        let (a, b): (Vec<_>, Vec<_>) = log
            .into_iter()
            .partition(|(i, w, _)| *w < 2 || (*w == 2 && *i < OBJECTS / 2));
        let deltas = |side: Vec<(usize, usize, ConfigDelta)>| -> Vec<ConfigDelta> {
            side.into_iter().map(|(_, _, d)| d).collect()
        };
        let half_a = Replica::restore(replica_id(1), &deltas(a)).expect("valid deltas");
        let half_b = Replica::restore(replica_id(5), &deltas(b)).expect("valid deltas");
        assert_eq!(half_a.entry_count(), OBJECTS * 3);
        assert_eq!(half_b.entry_count(), OBJECTS * 3);
        let mut joined = half_a.clone();
        joined.join(&half_b.full_state()).expect("valid state");
        assert_eq!(joined.digest(), digest, "the halves make the document");
        drop(joined);

        let editor = Editor::new();

        let mut lagging = writers.clone();
        let mut ahead_editor = editor.clone();
        advance(&mut lagging[1..], &[0, 1, 2, 3], &mut ahead_editor, LAG);
        let ahead = lagging.swap_remove(1);
        drop(lagging);
        let mut caught_up = writers[0].clone();
        caught_up
            .join(&ahead.missing_for(writers[0].context()))
            .expect("valid delta");
        assert_eq!(caught_up.digest(), ahead.digest(), "missing_for repairs");
        drop(caught_up);

        let mut churn = writers.clone();
        let mut churn_editor = editor.clone();
        advance(&mut churn, &[0, 1, 2, 3, 4], &mut churn_editor, OBJECTS);
        let churned_b = churn.swap_remove(1);
        let churned_a = churn.swap_remove(0);
        drop(churn);
        assert_eq!(churned_a.digest(), churned_b.digest());

        eprintln!(
            "fixture: {OBJECTS} objects x 6 fields by {WRITERS} writers, built in {:.2?}",
            started.elapsed()
        );
        Fixture {
            writers,
            editor,
            half_a,
            half_b,
            ahead,
            churned: (churned_a, churned_b),
        }
    }
}

fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    postcard::to_stdvec(value).expect("encodes").len()
}

/// Encoded (postcard) sizes of the deltas and states the benchmarks use:
/// `(what, bytes, note)`. Not timed; printed once by `main`.
fn size_table(f: &Fixture) -> Vec<(String, usize, String)> {
    let mut rows = Vec::new();
    let mut writer = f.writers[1].clone();
    let mut editor = f.editor.clone();

    let (command, now) = editor.next_command();
    let delta = writer.execute(&command, now).expect("valid command");
    rows.push((
        "one-field delta (keepalive, enum)".to_owned(),
        encoded_len(&delta),
        format!(
            "{} entry, {} context intervals",
            delta.entries().count(),
            delta.context.interval_count()
        ),
    ));

    let (name, mut frontend) = editor.frontends[1].clone();
    frontend.backend = Name::new("be-00001-blue").expect("valid name");
    let command = Command::PutFrontend { name, frontend };
    let delta = writer.execute(&command, now + 1).expect("valid command");
    rows.push((
        "one-field delta (default backend, string)".to_owned(),
        encoded_len(&delta),
        format!("{} entry", delta.entries().count()),
    ));

    let command = Command::DeleteFrontend {
        name: editor.frontends[2].0.clone(),
    };
    let delta = writer.execute(&command, now + 2).expect("valid command");
    rows.push((
        "remove-object delta (DeleteFrontend)".to_owned(),
        encoded_len(&delta),
        format!(
            "0 entries, {} context intervals",
            delta.context.interval_count()
        ),
    ));

    let doc = &f.writers[0];
    let full = encoded_len(&doc.full_state());
    let fields = doc.entry_count();
    rows.push((
        "full state, 10k objects x 6 fields".to_owned(),
        full,
        format!("{fields} fields"),
    ));
    rows.push((
        "full state, per field".to_owned(),
        full / fields,
        format!("{:.1} B exact", full as f64 / fields as f64),
    ));
    rows.push((
        "causal context of the document".to_owned(),
        encoded_len(doc.context()),
        format!("{} intervals", doc.context().interval_count()),
    ));
    let missing = f.ahead.missing_for(doc.context());
    rows.push((
        format!("missing_for, peer lacks {LAG} writes"),
        encoded_len(&missing),
        format!(
            "{} entries, {} context intervals",
            missing.entries().count(),
            missing.context.interval_count()
        ),
    ));
    let in_sync = f.ahead.missing_for(f.ahead.context());
    rows.push((
        "missing_for, peer in sync".to_owned(),
        encoded_len(&in_sync),
        format!(
            "{} entries, {} context intervals",
            in_sync.entries().count(),
            in_sync.context.interval_count()
        ),
    ));
    let (churned, peer) = &f.churned;
    let churned_in_sync = churned.missing_for(peer.context());
    rows.push((
        "missing_for, in sync, after 10k overwrites".to_owned(),
        encoded_len(&churned_in_sync),
        format!(
            "{} entries, {} context intervals",
            churned_in_sync.entries().count(),
            churned_in_sync.context.interval_count()
        ),
    ));
    let summary = peer.summary();
    let churned_peer_answer = churned.missing_for_peer(&summary, usize::MAX).delta;
    rows.push((
        "missing_for_peer (with live summary), same case".to_owned(),
        encoded_len(&churned_peer_answer),
        format!(
            "{} entries, {} context intervals",
            churned_peer_answer.entries().count(),
            churned_peer_answer.context.interval_count()
        ),
    ));
    rows.push((
        "live summary sent with a sync request, same case".to_owned(),
        encoded_len(&summary.live),
        format!("{} buckets", summary.live.bucket_count()),
    ));
    rows.push((
        "causal context after 10k overwrites".to_owned(),
        encoded_len(churned.context()),
        format!("{} intervals", churned.context().interval_count()),
    ));
    rows
}

fn print_sizes(rows: &[(String, usize, String)]) {
    eprintln!();
    eprintln!("postcard sizes (bytes; not timed)");
    eprintln!("{:<45} {:>10}  note", "what", "bytes");
    eprintln!("{}", "-".repeat(90));
    for (what, bytes, note) in rows {
        eprintln!("{what:<45} {bytes:>10}  {note}");
    }
    eprintln!();
}

/// Benchmarks of microsecond-scale operations (one delta, one write).
fn small_ops(c: &mut Criterion, f: &Fixture) {
    // A remote one-field delta into the document. Every iteration joins a
    // new delta (the next write of writer 2, in causal order), so the join
    // does its real work: remove the overwritten dot, insert the new entry,
    // extend the context. The deltas are produced untimed.
    c.bench_function("join_one_delta_10k", |b| {
        let mut doc = f.writers[0].clone();
        let mut writer = f.writers[1].clone();
        let mut editor = f.editor.clone();
        b.iter_custom(|iters| {
            let deltas: Vec<ConfigDelta> = (0..iters)
                .map(|_| {
                    let (command, now) = editor.next_command();
                    writer.execute(&command, now).expect("valid command")
                })
                .collect();
            let start = Instant::now();
            for delta in &deltas {
                black_box(doc.join(black_box(delta)).expect("valid delta"));
            }
            let elapsed = start.elapsed();
            assert_eq!(doc.digest(), writer.digest(), "every join applied");
            elapsed
        });
    });

    // The same delta again: the idempotent path (duplicates are normal
    // under gossip).
    c.bench_function("join_duplicate_delta_10k", |b| {
        let mut doc = f.writers[0].clone();
        let mut writer = f.writers[1].clone();
        let mut editor = f.editor.clone();
        let (command, now) = editor.next_command();
        let delta = writer.execute(&command, now).expect("valid command");
        assert!(doc.join(&delta).expect("valid delta"));
        b.iter(|| {
            let changed = doc.join(black_box(&delta)).expect("valid delta");
            debug_assert!(!changed);
            changed
        });
    });

    // A local command that changes one field (a PutFrontend whose other 5
    // fields are unchanged), including building and joining its delta.
    // Commands are built untimed; the returned deltas are dropped untimed.
    c.bench_function("local_write_10k", |b| {
        let mut doc = f.writers[0].clone();
        let mut editor = f.editor.clone();
        b.iter_custom(|iters| {
            let commands: Vec<(Command, u64)> = (0..iters).map(|_| editor.next_command()).collect();
            let mut out = Vec::with_capacity(commands.len());
            let start = Instant::now();
            for (command, now) in &commands {
                out.push(
                    doc.execute(black_box(command), *now)
                        .expect("valid command"),
                );
            }
            let elapsed = start.elapsed();
            assert!(out.iter().all(|d| d.entries().count() == 1));
            elapsed
        });
    });
}

/// Benchmarks of whole-document operations (milliseconds).
fn large_ops(c: &mut Criterion, f: &Fixture) {
    let doc = &f.writers[0];
    let mut group = c.benchmark_group("full_state_join_10k");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    // Another writer's full state, equal to ours: nothing changes, so no
    // clone is needed.
    let same = f.writers[2].full_state();
    group.bench_function("identical", |b| {
        let mut doc = doc.clone();
        b.iter(|| {
            let changed = doc.join(black_box(&same)).expect("valid state");
            debug_assert!(!changed);
            changed
        });
    });

    // Two halves written by disjoint sets of writers; 30k entries each.
    let other_half = f.half_b.full_state();
    group.bench_function("divergent_halves", |b| {
        b.iter_batched_ref(
            || f.half_a.clone(),
            |half| half.join(black_box(&other_half)).expect("valid state"),
            BatchSize::PerIteration,
        );
    });

    // A full state that is ours plus LAG writes.
    let ahead = f.ahead.full_state();
    group.bench_function(format!("full_plus_{LAG}"), |b| {
        b.iter_batched_ref(
            || doc.clone(),
            |doc| doc.join(black_box(&ahead)).expect("valid state"),
            BatchSize::PerIteration,
        );
    });

    // Bootstrapping a new peer from a full state.
    let full = doc.full_state();
    group.bench_function("into_empty", |b| {
        b.iter_batched_ref(
            || Replica::new(replica_id(99)),
            |fresh| fresh.join(black_box(&full)).expect("valid state"),
            BatchSize::PerIteration,
        );
    });
    group.finish();

    let mut group = c.benchmark_group("missing_for_10k");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function(format!("lacks_{LAG}"), |b| {
        b.iter_with_large_drop(|| f.ahead.missing_for(black_box(doc.context())));
    });
    group.bench_function("in_sync", |b| {
        b.iter_with_large_drop(|| f.ahead.missing_for(black_box(f.ahead.context())));
    });
    let (churned, peer) = &f.churned;
    group.bench_function("in_sync_after_10k_overwrites", |b| {
        b.iter_with_large_drop(|| churned.missing_for(black_box(peer.context())));
    });
    let summary = peer.summary();
    group.bench_function("peer_in_sync_after_10k_overwrites", |b| {
        b.iter_with_large_drop(|| churned.missing_for_peer(black_box(&summary), usize::MAX));
    });
    // The receiving side of that answer: it changes nothing, so the same
    // peer can join it repeatedly without a clone.
    let answer = churned.missing_for(peer.context());
    group.bench_function("join_in_sync_answer_after_10k_overwrites", |b| {
        let mut peer = peer.clone();
        b.iter(|| {
            let changed = peer.join(black_box(&answer)).expect("valid delta");
            debug_assert!(!changed);
            changed
        });
    });
    group.finish();

    // For comparison with dson's "decode 57 ms, clone 88 ms".
    let mut group = c.benchmark_group("state_10k");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let bytes = postcard::to_stdvec(&full).expect("encodes");
    group.bench_function("decode_full_state", |b| {
        b.iter_with_large_drop(|| {
            postcard::from_bytes::<ConfigDelta>(black_box(&bytes)).expect("decodes")
        });
    });
    group.bench_function("encode_full_state", |b| {
        b.iter_with_large_drop(|| postcard::to_stdvec(black_box(&full)).expect("encodes"));
    });
    group.bench_function("clone_replica", |b| {
        b.iter_with_large_drop(|| black_box(doc).clone());
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
        .configure_from_args();
    let fixture = Fixture::build();
    print_sizes(&size_table(&fixture));
    small_ops(&mut criterion, &fixture);
    large_ops(&mut criterion, &fixture);
    criterion.final_summary();
}
