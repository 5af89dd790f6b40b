//! The simulator's smoke matrix, run by `cargo test`: 20 seeds × 50 peers
//! in each profile must converge with every checker passing, and a run must
//! be reproducible from its seed.

use aqueduct_sim::{Options, Profile, Report, run};

const PEERS: usize = 50;
const WRITES: usize = 60;
const SEEDS: std::ops::RangeInclusive<u64> = 1..=20;

fn simulate(seed: u64, profile: Profile) -> Report {
    run(&Options {
        seed,
        peers: PEERS,
        profile,
        writes: WRITES,
        trace_lines: 200,
        swim: true,
        hostile: 0,
        forgeries: Vec::new(),
    })
}

fn assert_clean(report: &Report) {
    assert!(
        report.failures.is_empty()
            && report.converged
            && report.lost_writes == 0
            && report.resurrections == 0,
        "seed {} ({}) failed: {:?}\nlast events:\n{}",
        report.seed,
        report.profile,
        report.failures,
        report.trace.join("\n")
    );
}

#[test]
fn lan_meshes_converge_on_twenty_seeds() {
    for seed in SEEDS {
        assert_clean(&simulate(seed, Profile::Lan));
    }
}

#[test]
fn wan_meshes_converge_on_twenty_seeds() {
    for seed in SEEDS {
        assert_clean(&simulate(seed, Profile::Wan));
    }
}

#[test]
fn chaos_meshes_heal_and_converge_without_losing_writes_on_twenty_seeds() {
    for seed in SEEDS {
        let report = simulate(seed, Profile::Chaos);
        assert_clean(&report);
        assert!(
            report.faults.crashes > 0,
            "seed {seed}: the chaos profile injected no crash"
        );
    }
}

#[test]
fn the_same_seed_gives_a_byte_identical_run() {
    let first = simulate(7, Profile::Chaos);
    let second = simulate(7, Profile::Chaos);
    assert_eq!(first.fingerprint, second.fingerprint);
    assert_eq!(first.events, second.events);
    assert_eq!(first.convergence_ms, second.convergence_ms);
    let other = simulate(8, Profile::Chaos);
    assert_ne!(first.fingerprint, other.fingerprint);
}
