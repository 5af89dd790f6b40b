//! `aqueduct-sim`: a deterministic simulator of a whole Aqueduct mesh.
//!
//! One process, one thread, virtual time, an event queue ordered by (time,
//! sequence). Every peer is a real `aqueduct::gossip::Node`; every message
//! is encoded to bytes by the sender and decoded by the receiver. All
//! randomness — network, faults, workload, the nodes' own — derives from
//! one seed, so the same seed gives a byte-identical run.
//!
//! Depends on the core only (the `aqueduct` crate without its shell).

mod checker;
mod hostile;
mod network;
mod trace;
mod workload;
mod world;

use serde::Serialize;

pub use hostile::{Forgery, HostileReport, KindCounts};
pub use network::{LinkModel, Partition};
pub use world::run;

/// A network and fault profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[clap(rename_all = "lowercase")]
pub enum Profile {
    /// One-way 0.25–1 ms, 1% loss, 1% duplication, reordering.
    Lan,
    /// One-way 20–150 ms, 2% loss.
    Wan,
    /// `lan` plus partitions, crashes and restarts (with and without
    /// state), clock skew up to ±500 ms, then heal.
    Chaos,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Lan => "lan",
            Profile::Wan => "wan",
            Profile::Chaos => "chaos",
        })
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of peers.
    pub peers: usize,
    /// Network and fault profile.
    pub profile: Profile,
    /// Acknowledged writes to issue.
    pub writes: usize,
    /// Lines of event trace kept for a failure report.
    pub trace_lines: usize,
    /// Run SWIM (foca) for membership. Off, every node keeps the member
    /// list it started with: only for very large meshes without crashes,
    /// see `--swim`.
    pub swim: bool,
    /// Hostile members among `peers` (0: none). Each joined normally,
    /// relays honestly, never writes, and forges messages to honest peers
    /// until the final heal (see `hostile.rs`). The checkers then judge the
    /// honest peers only.
    pub hostile: usize,
    /// The kinds of forgery hostile members draw from (empty: all).
    pub forgeries: Vec<Forgery>,
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `values` (nearest rank); zeros when empty.
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let rank =
            |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Percentiles {
            p50: rank(0.50),
            p99: rank(0.99),
            max: values[values.len() - 1],
        }
    }
}

/// The result of one run. The CLI prints it as one JSON line; field names
/// are a contract (benchmarks and reviewers parse them).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Number of peers.
    pub peers: usize,
    /// The profile.
    pub profile: Profile,
    /// Acknowledged writes issued.
    pub writes: usize,
    /// Whether SWIM ran (false: static member lists).
    pub swim: bool,
    /// All live peers ended with identical digests and views.
    pub converged: bool,
    /// Peers whose digest differs from the most common one at the end.
    pub divergent_peers: usize,
    /// Acknowledged writes missing at the end without a later write that
    /// superseded them.
    pub lost_writes: usize,
    /// Acknowledged writes whose only copy was on a peer that lost its
    /// whole disk before any other peer received them (not counted as
    /// lost: no system can keep what only a destroyed disk held).
    pub writes_lost_with_disk: usize,
    /// Removed values that came back.
    pub resurrections: usize,
    /// Simulated time from a write's acknowledgment until every live peer
    /// had it. A write some live peer never received is left out; the run
    /// then fails `converged`.
    pub convergence_ms: Percentiles,
    /// Chaos: simulated time from the final heal until all peers were
    /// identical.
    pub heal_convergence_ms: Option<f64>,
    /// Messages sent from the first write until convergence, per write and
    /// peer (everything: dissemination, acks, anti-entropy, membership).
    pub msgs_per_write_per_peer: f64,
    /// Bytes of the same messages, per write and peer.
    pub bytes_per_write_per_peer: f64,
    /// Bytes each peer sends per second when nothing is written.
    pub idle_bytes_per_peer_per_s: f64,
    /// Faults injected (chaos).
    pub faults: FaultCounts,
    /// Peer garbage and refusals, summed over honest peers, leaving out
    /// those that forged messages caused (0 expected).
    pub refused: RefusedCounts,
    /// What the hostile members forged and what the honest peers refused,
    /// per kind (`None` without hostile members).
    pub hostile: Option<HostileReport>,
    /// High-water marks of the nodes' bounded queues.
    pub queues: QueueMarks,
    /// Simulated time the run covered.
    pub simulated_ms: f64,
    /// Events processed.
    pub events: u64,
    /// Hash of every message sent, in order: the same seed gives the same
    /// fingerprint (a byte-identical run).
    pub fingerprint: String,
    /// Wall-clock time of the run.
    pub wall_ms: f64,
    /// What the checkers found wrong (empty when all passed).
    pub failures: Vec<String>,
    /// The last events before the end, kept only when a checker failed.
    #[serde(skip)]
    pub trace: Vec<String>,
}

/// Faults injected during a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FaultCounts {
    /// Partitions started.
    pub partitions: usize,
    /// Peer crashes.
    pub crashes: usize,
    /// Restarts that lost the whole data directory.
    pub wipes: usize,
}

/// Refusals counted by the nodes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RefusedCounts {
    /// Messages that did not decode.
    pub garbage: u64,
    /// Deltas that failed validation.
    pub deltas: u64,
    /// Messages over the size limit.
    pub too_large: u64,
}

/// High-water marks, maximum over peers (and over their lives before a
/// crash). Checked against bounds at the end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueMarks {
    /// Broadcast sends left untracked because the pending-ack table was
    /// full (summed; must be 0).
    pub broadcasts_untracked: u64,
    /// Broadcast sends awaiting an ack.
    pub pending_acks: usize,
    /// Node output queue.
    pub outputs: usize,
    /// Membership timers.
    pub timers: usize,
}

/// What a sweep over a range of seeds found, summed or taken over its runs.
/// The CLI prints it as the last JSON line of `--seeds`; field names are a
/// contract like [`Report`]'s.
#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    /// First seed.
    pub first_seed: u64,
    /// Last seed.
    pub last_seed: u64,
    /// Number of peers in each run.
    pub peers: usize,
    /// The profile.
    pub profile: Profile,
    /// Acknowledged writes issued per run.
    pub writes: usize,
    /// Runs that passed every checker.
    pub passed: usize,
    /// Seeds with a failed checker.
    pub failing_seeds: Vec<u64>,
    /// Summed over runs.
    pub lost_writes: usize,
    /// Summed over runs.
    pub writes_lost_with_disk: usize,
    /// Summed over runs.
    pub resurrections: usize,
    /// Summed over runs.
    pub faults: FaultCounts,
    /// Over runs: each run's time from the final heal until all (honest)
    /// peers were identical.
    pub heal_convergence_ms: Percentiles,
    /// Forgeries per kind, summed over runs.
    pub hostile: Option<HostileReport>,
    /// Wall-clock time of the whole sweep.
    pub wall_ms: f64,
}

/// Runs `options` for every seed of `seeds`, on `jobs` threads (each run is
/// single-threaded and deterministic; only their order across threads
/// varies). Returns the reports in seed order and their summary.
pub fn sweep(
    options: &Options,
    seeds: std::ops::RangeInclusive<u64>,
    jobs: usize,
) -> (Vec<Report>, Sweep) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    let started = std::time::Instant::now();
    let next = AtomicU64::new(*seeds.start());
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed > *seeds.end() {
                        break;
                    }
                    let report = run(&Options {
                        seed,
                        ..options.clone()
                    });
                    reports.lock().expect("no run panics").push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().expect("no run panics");
    reports.sort_by_key(|r| r.seed);
    let mut faults = FaultCounts::default();
    let mut hostile: Option<HostileReport> = None;
    for r in &reports {
        faults.partitions += r.faults.partitions;
        faults.crashes += r.faults.crashes;
        faults.wipes += r.faults.wipes;
        if let Some(h) = &r.hostile {
            hostile.get_or_insert_with(HostileReport::default).add(h);
        }
    }
    let summary = Sweep {
        first_seed: *seeds.start(),
        last_seed: *seeds.end(),
        peers: options.peers,
        profile: options.profile,
        writes: options.writes,
        passed: reports.iter().filter(|r| r.failures.is_empty()).count(),
        failing_seeds: reports
            .iter()
            .filter(|r| !r.failures.is_empty())
            .map(|r| r.seed)
            .collect(),
        lost_writes: reports.iter().map(|r| r.lost_writes).sum(),
        writes_lost_with_disk: reports.iter().map(|r| r.writes_lost_with_disk).sum(),
        resurrections: reports.iter().map(|r| r.resurrections).sum(),
        faults,
        heal_convergence_ms: Percentiles::of(
            reports
                .iter()
                .filter_map(|r| r.heal_convergence_ms)
                .collect(),
        ),
        hostile,
        wall_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    (reports, summary)
}
