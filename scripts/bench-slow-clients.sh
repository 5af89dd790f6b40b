#!/usr/bin/env bash
# Slow clients against one peer's API (BENCHMARKS.md "Slow clients"): 1,000
# connections with unfinished heads from 127.0.0.2 while 127.0.0.3 probes
# /health, then 200 idle event streams from 127.0.0.4 and a dashboard's
# stream from 127.0.0.5. Each setting runs RUNS times (default 3), one JSON
# line per run. The peer starts with systemd's default soft limit of 1024
# open files (it raises its soft limit to the hard one itself).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
cargo build --release --locked -p aqueduct
target="${CARGO_TARGET_DIR:-target}"
bench() {
  for run in $(seq "$runs"); do
    (ulimit -Sn 1024 && "$target/release/aqueduct" bench --json slow-clients "$@")
  done
}
echo "# defaults: per-IP cap 64, global cap 512, header timeout 10 s"
bench --partial 1000 --streams 200
echo "# every partial connection held: per-IP cap 1000, global cap 2000"
AQUEDUCT_API_MAX_CONNECTIONS_PER_IP=1000 AQUEDUCT_API_MAX_CONNECTIONS=2000 \
  bench --partial 1000 --streams 200
