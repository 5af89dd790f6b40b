#!/usr/bin/env bash
# The main job on a fresh machine: a local mesh of three peers on loopback
# (`aqueduct demo`), loaded with the example configuration
# (examples/mesh.json), each peer with its own HAProxy (installed with apt if
# missing) listening on 127.0.0.1, 127.0.0.2 and 127.0.0.3 port 8080,
# in front of stand-in services on 127.0.0.1:8081-8083 and 8091-8092, until
# Ctrl-C. The peers' data and logs go to ./aqueduct-demo; ports 10000-10021
# must be free (override with `BASE_PORT=20000 bash scripts/run.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/system-packages.sh
cargo build --release --locked -p aqueduct
exec "${CARGO_TARGET_DIR:-target}/release/aqueduct" demo --base-port "${BASE_PORT:-10000}"
