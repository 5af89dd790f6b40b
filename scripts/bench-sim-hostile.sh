#!/usr/bin/env bash
# The simulator's hostile-member target of BENCHMARKS.md: chaos plus hostile
# members on seeds 1..1000 (about two minutes on two cores), every honest peer
# converging with no honest write lost, and the forged messages sent,
# delivered and refused per kind.
#   bash scripts/bench-sim-hostile.sh                 # seeds 1-1000, 20 peers, 2 hostile
#   SEEDS=1-100 PEERS=50 HOSTILE=5 bash scripts/bench-sim-hostile.sh
#   FORGERIES=far_context,report bash scripts/bench-sim-hostile.sh   # only these kinds
# Every run is bounded: the simulator stops 120 simulated seconds after the
# last write.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p aqueduct-sim >&2
out=$(mktemp)
echo "raw reports: $out (one JSON line per seed, the sweep's summary last)" >&2
status=0
./target/release/aqueduct-sim --seeds "${SEEDS:-1-1000}" --peers "${PEERS:-20}" --hostile "${HOSTILE:-2}" \
  --profile chaos --writes "${WRITES:-100}" --jobs "${JOBS:-2}" ${FORGERIES:+--forgeries "$FORGERIES"} \
  --json > "$out" 2> "$out.failures" || status=$?
python3 - "$out" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
s = json.loads(lines[-1])
print(f"chaos, {s['peers']} peers of which {s['hostile']['members']} hostile, {s['writes']} writes, seeds {s['first_seed']}-{s['last_seed']}:")
print(f"  passed {s['passed']}, failing seeds {s['failing_seeds']}")
print(f"  lost writes {s['lost_writes']}  resurrections {s['resurrections']}  writes lost with a wiped disk {s['writes_lost_with_disk']}")
h = s['heal_convergence_ms']
print(f"  heal_convergence_ms p50 {h['p50']:.0f}  p99 {h['p99']:.0f}  max {h['max']:.0f}")
f = s['faults']
print(f"  faults: partitions {f['partitions']} crashes {f['crashes']} wipes {f['wipes']}  wall {s['wall_ms']/1000:.0f} s")
print(f"  {'forgery':<14}{'sent':>9}{'delivered':>11}{'refused':>9}  counters moved")
for kind, c in s['hostile']['forged'].items():
    counters = ", ".join(f"{k} {v}" for k, v in c['counters'].items())
    print(f"  {kind:<14}{c['sent']:>9}{c['delivered']:>11}{c['refused']:>9}  {counters}")
PY
if [ "$status" != 0 ]; then
  echo "failures (first 60 lines of $out.failures):" >&2
  head -n 60 "$out.failures" >&2
fi
exit "$status"
