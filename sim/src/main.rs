//! CLI of the simulator. The flags and the JSON field names of the last
//! line are a contract used by benchmarks and reviewers:
//! `cargo run --release -p aqueduct-sim -- --seed S --peers N --profile lan|wan|chaos --writes W --json`
//! (`--hostile H` adds hostile members; `--seeds A-B --jobs J` sweeps a
//! range of seeds and ends with a summary line instead).

use std::process::ExitCode;

use aqueduct_sim::{Forgery, Options, Profile, Report, run, sweep};
use clap::Parser;

/// Deterministic whole-mesh simulator for the Aqueduct replication core.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Seed of every random choice; the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of peers.
    #[arg(long, default_value_t = 50)]
    peers: usize,
    /// Network and fault profile.
    #[arg(long, value_enum, default_value_t = Profile::Lan)]
    profile: Profile,
    /// Acknowledged writes to issue.
    #[arg(long, default_value_t = 100)]
    writes: usize,
    /// Print the report as one JSON line (always the last line printed).
    #[arg(long)]
    json: bool,
    /// Trace lines kept for a failure report.
    #[arg(long, default_value_t = 400)]
    trace_lines: usize,
    /// Membership by SWIM (`on`), or static member lists (`off`: no
    /// probes, no failure detection; for meshes of many thousands of peers,
    /// whose full-membership SWIM is O(N²) memory and O(N³) time in one
    /// simulator process). Refused with the chaos profile.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    swim: String,
    /// Hostile members among the peers: each joined normally, never writes,
    /// and forges contexts, stamps, leases, reports and membership updates
    /// at random until the final heal. The checkers judge the others.
    #[arg(long, default_value_t = 0)]
    hostile: usize,
    /// Only these kinds of forgery (comma-separated; default: all), to
    /// tell which one a failing seed needs.
    #[arg(long, value_enum, value_delimiter = ',')]
    forgeries: Vec<Forgery>,
    /// Runs every seed of an inclusive range `FIRST-LAST` instead of
    /// `--seed`; prints each failure, with `--json` each run's report, and
    /// last a summary of the sweep.
    #[arg(long, value_parser = parse_seeds, conflicts_with = "seed")]
    seeds: Option<(u64, u64)>,
    /// Threads for `--seeds` (runs stay deterministic; only their order
    /// varies).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

fn parse_seeds(text: &str) -> Result<(u64, u64), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not FIRST-LAST"))?;
    let parse = |n: &str| n.parse::<u64>().map_err(|e| format!("{n:?}: {e}"));
    let (first, last) = (parse(first)?, parse(last)?);
    if first > last {
        return Err(format!("{first} is after {last}"));
    }
    Ok((first, last))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.peers < 1 {
        eprintln!("--peers must be at least 1");
        return ExitCode::from(2);
    }
    let swim = cli.swim == "on";
    if !swim && cli.profile == Profile::Chaos {
        eprintln!(
            "--swim off needs a fault-free profile: crashes and partitions need failure detection"
        );
        return ExitCode::from(2);
    }
    if cli.hostile > 0 && cli.peers < cli.hostile + 2 {
        eprintln!("--hostile needs at least two honest peers besides the hostile ones");
        return ExitCode::from(2);
    }
    let options = Options {
        seed: cli.seed,
        peers: cli.peers,
        profile: cli.profile,
        writes: cli.writes,
        trace_lines: cli.trace_lines,
        swim,
        hostile: cli.hostile,
        forgeries: cli.forgeries,
    };
    if let Some((first, last)) = cli.seeds {
        let (reports, summary) = sweep(&options, first..=last, cli.jobs);
        for report in &reports {
            print_failures(report, &options.forgeries);
            if cli.json {
                print_result(report, true);
            }
        }
        print_result(&summary, cli.json);
        return exit_code(summary.failing_seeds.is_empty());
    }
    let report = run(&options);
    print_failures(&report, &options.forgeries);
    print_result(&report, cli.json);
    exit_code(report.failures.is_empty())
}

/// Prints a report or a sweep's summary: one JSON line, or pretty.
fn print_result<T: serde::Serialize + std::fmt::Debug>(result: &T, json: bool) {
    if json {
        let line = serde_json::to_string(result).expect("reports always serialize");
        println!("{line}");
    } else {
        println!("{result:#?}");
    }
}

fn exit_code(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What a failed run found, its last events and how to reproduce it, on
/// standard error.
fn print_failures(report: &Report, forgeries: &[Forgery]) {
    if !report.failures.is_empty() {
        eprintln!(
            "FAILED: seed {} ({} peers, {:?}, {} writes)",
            report.seed, report.peers, report.profile, report.writes
        );
        for failure in &report.failures {
            eprintln!("  - {failure}");
        }
        eprintln!("last events before the end:");
        for line in &report.trace {
            eprintln!("  {line}");
        }
        eprintln!(
            "reproduce: cargo run --release -p aqueduct-sim -- --seed {} --peers {} --profile {} --writes {} --swim {} --hostile {}{}",
            report.seed,
            report.peers,
            report.profile,
            report.writes,
            if report.swim { "on" } else { "off" },
            report.hostile.as_ref().map_or(0, |h| h.members),
            if forgeries.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = forgeries.iter().map(|f| f.name()).collect();
                format!(" --forgeries {}", names.join(","))
            }
        );
    }
}
