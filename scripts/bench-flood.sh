#!/usr/bin/env bash
# The write flood of BENCHMARKS.md ("Hostile peers and write flood"): three
# peers on loopback, CLIENTS clients writing to the first as fast as they
# can for SECONDS (default 30) seconds, sampled every second (each peer's
# VmRSS, replication lag of one write, a separate client's /health and
# /frontends latency). Each run prints one JSON line; BENCHMARKS.md reports
# the medians of RUNS (default 3) runs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
seconds="${SECONDS_FLOOD:-30}"
clients="${CLIENTS:-16}"
cargo build --release --locked -p aqueduct
target="${CARGO_TARGET_DIR:-target}"
for run in $(seq "$runs"); do
  "$target/release/aqueduct" bench --json flood --seconds "$seconds" --clients "$clients"
done
