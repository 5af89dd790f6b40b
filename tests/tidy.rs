//! Architecture invariants that a compiler cannot see, checked over the
//! source text: the deterministic core (`src/crdt`, `src/gossip`, `src/haproxy/render`) does no
//! I/O, reads no clock, environment or OS randomness, and iterates no hash
//! maps; and every module opens with a doc comment saying what it owns.

use std::fs;
use std::path::{Path, PathBuf};

/// What the core must never name, and why.
const FORBIDDEN_IN_CORE: &[(&str, &str)] = &[
    ("Instant::now", "reads the clock"),
    ("SystemTime", "reads the clock"),
    ("std::time::Instant", "reads the clock"),
    ("std::fs", "touches the disk"),
    ("std::io", "does I/O"),
    ("std::env", "reads the environment"),
    ("std::thread", "spawns or sleeps threads"),
    ("std::process", "spawns processes"),
    ("TcpStream", "touches the network"),
    ("TcpListener", "touches the network"),
    ("UdpSocket", "touches the network"),
    ("tokio", "needs a runtime"),
    ("quinn", "touches the network"),
    ("axum", "serves HTTP"),
    ("HashMap", "iterates in a random order"),
    ("HashSet", "iterates in a random order"),
    ("thread_rng", "uses OS randomness"),
    ("OsRng", "uses OS randomness"),
    ("rand::rng()", "uses OS randomness"),
    ("getrandom", "uses OS randomness"),
    ("from_entropy", "uses OS randomness"),
    ("println!", "writes to stdout"),
    ("eprintln!", "writes to stderr"),
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_core_does_no_io_reads_no_clock_and_uses_no_os_randomness() {
    let mut violations = Vec::new();
    for dir in ["src/crdt", "src/gossip", "src/haproxy/render"] {
        for file in rust_files(&root().join(dir)) {
            let text = fs::read_to_string(&file).expect("readable source");
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for (pattern, why) in FORBIDDEN_IN_CORE {
                    if code.contains(pattern) {
                        violations.push(format!(
                            "{}:{}: `{pattern}` {why}",
                            file.display(),
                            number + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "core invariant broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_module_opens_with_a_doc_comment_saying_what_it_owns() {
    let mut missing = Vec::new();
    for dir in ["src", "sim/src", "tests", "sim/tests", "benches"] {
        for file in rust_files(&root().join(dir)) {
            let text = fs::read_to_string(&file).expect("readable source");
            if !text.trim_start().starts_with("//!") {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules without a leading `//!` doc comment:\n{}",
        missing.join("\n")
    );
}
