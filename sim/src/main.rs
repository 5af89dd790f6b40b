//! CLI of the simulator. The flags and the JSON field names of the last
//! line are a contract used by benchmarks and reviewers:
//! `cargo run --release -p aqueduct-sim -- --seed S --peers N --profile lan|wan|chaos --writes W --json`

use std::process::ExitCode;

use aqueduct_sim::{Options, Profile, run};
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
    let report = run(&Options {
        seed: cli.seed,
        peers: cli.peers,
        profile: cli.profile,
        writes: cli.writes,
        trace_lines: cli.trace_lines,
        swim,
    });
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
            "reproduce: cargo run --release -p aqueduct-sim -- --seed {} --peers {} --profile {} --writes {} --swim {}",
            report.seed,
            report.peers,
            report.profile,
            report.writes,
            if report.swim { "on" } else { "off" }
        );
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("reports always serialize")
        );
    } else {
        println!("{report:#?}");
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
