#!/usr/bin/env bash
# The main job on a fresh machine. Until the peer daemon lands (issue 3),
# the runnable product is the replication core, shown through the
# deterministic simulator: a 100-peer mesh under partitions, crashes and
# clock skew, healed, checked, and summarised.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p aqueduct-sim
for profile in lan wan chaos; do
  printf '\n==> %s, 100 peers, 200 writes\n' "$profile"
  ./target/release/aqueduct-sim --seed "${SEED:-1}" --peers 100 --profile "$profile" --writes 200 --json | tail -n 1
done
