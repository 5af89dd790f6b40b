#!/usr/bin/env bash
# Measures the simulator targets of BENCHMARKS.md and prints medians.
#   bash scripts/bench-sim.sh            # lan/wan 1000 peers x 3 seeds, chaos 100 peers seeds 1..1000
#   CHAOS_SEEDS=100 bash scripts/bench-sim.sh   # fewer chaos seeds
#   BIG=1 bash scripts/bench-sim.sh      # also one 10,000-peer run (about 24 GB machines only)
# Every run is bounded: the simulator stops 120 simulated seconds after the
# last write, and each process gets a wall-clock timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p aqueduct-sim >&2
sim=./target/release/aqueduct-sim
out=$(mktemp -d)
echo "raw reports: $out" >&2

for profile in lan wan; do
  for seed in 1 2 3; do
    timeout 600 $sim --seed "$seed" --peers 1000 --profile "$profile" --writes 200 --json | tail -n 1 >> "$out/$profile.jsonl"
  done
done
for seed in $(seq 1 "${CHAOS_SEEDS:-1000}"); do
  timeout 120 $sim --seed "$seed" --peers 100 --profile chaos --writes 200 --json 2>/dev/null | tail -n 1 >> "$out/chaos.jsonl" \
    || echo "{\"seed\": $seed, \"failed\": true}" >> "$out/chaos.jsonl"
done
if [ "${BIG:-0}" = 1 ]; then
  timeout 3600 $sim --seed 1 --peers 10000 --profile lan --writes 50 --json | tail -n 1 >> "$out/big.jsonl"
fi

python3 - "$out" <<'PY'
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
def load(name):
    p = out / name
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []
def med(rows, f):
    return statistics.median(f(r) for r in rows)
for profile in ("lan", "wan"):
    rows = load(f"{profile}.jsonl")
    if not rows: continue
    print(f"{profile}, 1000 peers, 200 writes, seeds {[r['seed'] for r in rows]} (median of runs):")
    print(f"  convergence_ms p50 {med(rows, lambda r: r['convergence_ms']['p50']):.1f}  p99 {med(rows, lambda r: r['convergence_ms']['p99']):.1f}  max {med(rows, lambda r: r['convergence_ms']['max']):.1f}")
    print(f"  msgs_per_write_per_peer {med(rows, lambda r: r['msgs_per_write_per_peer']):.2f}  bytes_per_write_per_peer {med(rows, lambda r: r['bytes_per_write_per_peer']):.0f}")
    print(f"  idle_bytes_per_peer_per_s {med(rows, lambda r: r['idle_bytes_per_peer_per_s']):.0f}  wall_ms {med(rows, lambda r: r['wall_ms']):.0f}")
    print(f"  all converged: {all(r['converged'] for r in rows)}  lost writes: {sum(r['lost_writes'] for r in rows)}")
rows = load("chaos.jsonl")
if rows:
    ok = [r for r in rows if not r.get("failed")]
    bad = [r["seed"] for r in rows if r.get("failed") or r["failures"] or not r["converged"] or r["lost_writes"]]
    heal = sorted(r["heal_convergence_ms"] for r in ok if r.get("heal_convergence_ms") is not None)
    q = lambda p: heal[min(len(heal) - 1, int(p * len(heal)))]
    print(f"chaos, 100 peers, 200 writes, {len(rows)} seeds: failing seeds {bad}")
    print(f"  lost writes {sum(r['lost_writes'] for r in ok)}  writes lost with a wiped disk {sum(r['writes_lost_with_disk'] for r in ok)}")
    print(f"  heal_convergence_ms p50 {q(0.5):.0f}  p99 {q(0.99):.0f}  max {heal[-1]:.0f}  seeds over 2000: {[r['seed'] for r in ok if (r.get('heal_convergence_ms') or 0) > 2000]}")
    print(f"  faults: partitions {sum(r['faults']['partitions'] for r in ok)} crashes {sum(r['faults']['crashes'] for r in ok)} wipes {sum(r['faults']['wipes'] for r in ok)}")
for r in load("big.jsonl"):
    print(f"lan, {r['peers']} peers, {r['writes']} writes: converged {r['converged']} p50 {r['convergence_ms']['p50']:.1f} p99 {r['convergence_ms']['p99']:.1f} msgs/write/peer {r['msgs_per_write_per_peer']:.2f} idle B/peer/s {r['idle_bytes_per_peer_per_s']:.0f} wall {r['wall_ms']/1000:.0f} s")
PY
