#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this script).
# Needs only the Rust toolchain with rustfmt and clippy; it installs the
# system packages the suite needs (HAProxy, for the tests that drive real
# HAProxy processes; Chromium and chromedriver, for the dashboard's browser
# tests; iproute2 and nftables, for the partition tests, which run as root in
# network namespaces they create) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

with_browser=1
with_netns=1
source scripts/system-packages.sh

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz targets' entry points (feature `fuzzing`): only fuzz/ builds them,
# so lint them here to keep them compiling.
cargo clippy --lib --features fuzzing --locked -- -D warnings

step "build the tests"
cargo test --workspace --locked --no-run

# After the build above, so that its dependencies seed this one and only
# the aqueduct crate of the previous release compiles.
step "the previous release, for the mixed-version and rolling-upgrade tests"
AQUEDUCT_PREVIOUS_BIN=$(bash scripts/build-previous.sh | tail -n 1)
export AQUEDUCT_PREVIOUS_BIN
echo "$AQUEDUCT_PREVIOUS_BIN"

step "tests (unit, property, dson oracle, tidy, simulator smoke matrix, rolling upgrade)"
cargo test --workspace --locked

step "benchmarks compile and run once"
cargo bench --bench crdt --locked -- --test
cargo bench --bench render --locked -- --test

step "simulator, release build: one chaos run at 100 peers"
cargo run --release --locked -p aqueduct-sim -- --seed 1 --peers 100 --profile chaos --writes 200 --json | tail -n 1
