#!/usr/bin/env bash
# The main job on a fresh machine: a local mesh of three peers on loopback
# (`aqueduct demo`), loaded with the example configuration
# (examples/mesh.json), until Ctrl-C. The peers' data and logs go to
# ./aqueduct-demo; ports 10000-10021 must be free (override with
# `BASE_PORT=20000 bash scripts/run.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p aqueduct
exec ./target/release/aqueduct demo --base-port "${BASE_PORT:-10000}"
