#!/usr/bin/env bash
# The peer daemon's targets of BENCHMARKS.md, measured on real processes on
# loopback: each benchmark runs RUNS times (default 3) and prints one JSON
# line per run; BENCHMARKS.md reports the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
cargo build --release --locked -p aqueduct
target="${CARGO_TARGET_DIR:-target}"
bench() {
  for run in $(seq "$runs"); do
    "$target/release/aqueduct" bench --json "$@"
  done
}
bench latency --writes 1000
bench throughput --clients 32 --writes 20000
bench throughput --clients 32 --writes 20000 --peers 3
bench footprint --backends 10000 --members 10
bench heartbeats --instances 1000 --interval 2 --ttl 10 --seconds 30
