#!/usr/bin/env bash
# How long a graceful leave takes to be seen: SIGTERM to one of three peers
# until both others list it as down (`GET /mesh/peers`), measured by
# tests/mesh.rs's sigterm test over RUNS runs (default 7); prints each run
# and the median.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-7}
cargo test --locked --test mesh --no-run 2>/dev/null
times=()
for _ in $(seq "$runs"); do
    ms=$(cargo test --locked --test mesh sigterm_leaves_the_mesh -- --nocapture 2>/dev/null |
        sed -n 's/^leave: SIGTERM to down on both other peers in \([0-9]*\) ms$/\1/p')
    echo "run: ${ms} ms"
    times+=("$ms")
done
printf '%s\n' "${times[@]}" | sort -n |
    awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
        printf "leave seen as down: median %s ms over %d runs (min %s, max %s)\n", m, NR, v[1], v[NR] }'
