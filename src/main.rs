//! The `aqueduct` binary. The peer daemon (`aqueduct run`, `aqueduct demo`,
//! `aqueduct ctl`) is issue 3; until it lands the binary only reports what
//! it is, so that scripts fail loudly instead of silently doing nothing.

use std::process::ExitCode;

fn main() -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("-V") => {
            println!("aqueduct {version}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "aqueduct {version}: the peer daemon is not built yet; \
                 the replication core and its simulator are (`cargo run --release -p aqueduct-sim -- --help`)"
            );
            ExitCode::from(2)
        }
    }
}
