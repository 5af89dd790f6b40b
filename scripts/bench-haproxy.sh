#!/usr/bin/env bash
# The HAProxy driver's targets of BENCHMARKS.md ("HAProxy driver"): real
# peers on loopback, each with its own HAProxy (needs `haproxy` on PATH),
# plus the renderer's criterion benchmark. Each `aqueduct bench` runs RUNS
# times (default 3) and prints one JSON line per run; BENCHMARKS.md reports
# the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p aqueduct
bench() {
  for run in $(seq "$runs"); do
    "$target/release/aqueduct" bench --json "$@"
  done
}
bench member-latency --iterations 200
bench member-churn --changes 1000
bench member-churn --changes 1000 --peers 3
bench haproxy-restart --kills 20
cargo bench --locked --bench render
