#!/usr/bin/env bash
# Partitions between real processes (BENCHMARKS.md, issue 7): runs
# tests/partitions.rs RUNS times (default 5), one test at a time, and prints
# each scenario's times per run, then their median and p90 (nearest rank).
# Five peers, each with its own HAProxy, each in a network namespace the
# test creates: needs root, `ip` and `nft`. About 40 s per run. HOLD_MS
# (default 0) holds the 2|3 split that much longer before it heals.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-5}"
export AQUEDUCT_PARTITION_HOLD_MS="${HOLD_MS:-0}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
cargo test --locked --test partitions --no-run 2>/dev/null
for run in $(seq "$runs"); do
  printf 'run %s/%s (load average %s)\n' "$run" "$runs" "$(cut -d' ' -f1-3 /proc/loadavg)"
  cargo test --locked --test partitions -- --nocapture --test-threads 1 2>/dev/null \
    | grep -o 'partitions: .*' | tee -a "$out"
done
# Median and p90 of the numbers following `key` on lines mentioning `label`.
stats() {
  local label="$1" key="$2"
  grep -F "$label" "$out" | grep -o "$key [0-9]*" | awk '{print $2}' | sort -n | awk -v what="$label $key" '
    { v[NR] = $1 }
    END {
      if (NR == 0) { printf "%s: no data\n", what; exit }
      m = v[int((NR + 1) / 2)]; p = v[int(NR * 0.9 + 0.999)]
      all = v[1]; for (i = 2; i <= NR; i++) all = all " " v[i]
      printf "%s: runs %d, median %d, p90 %d (sorted: %s)\n", what, NR, m, p, all
    }'
}
printf '\n'
stats 'split 2|3' heal-to-convergence-ms
stats 'isolated peer' heal-to-convergence-ms
stats 'one-way' heal-to-convergence-ms
stats '30% loss' last-write-to-convergence-ms
