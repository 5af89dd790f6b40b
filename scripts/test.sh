#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this script).
# Needs only the Rust toolchain with rustfmt and clippy; it installs the
# system packages the suite needs (HAProxy, for the tests that drive real
# HAProxy processes) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v haproxy >/dev/null; then
    step "system packages: haproxy"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq haproxy >/dev/null
fi
haproxy -v | head -n 1

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (unit, property, dson oracle, tidy, simulator smoke matrix)"
cargo test --workspace --locked

step "benchmarks compile and run once"
cargo bench --bench crdt --locked -- --test

step "simulator, release build: one chaos run at 100 peers"
cargo run --release --locked -p aqueduct-sim -- --seed 1 --peers 100 --profile chaos --writes 200 --json | tail -n 1
