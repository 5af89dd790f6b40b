#!/usr/bin/env bash
# Fuzzing (issue 7): runs each cargo-fuzz target in fuzz/ for a set time and
# prints, per target, the executions run and the crashes found.
#
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh          # 5 minutes per target
#   FUZZ_TARGETS="render" bash scripts/fuzz.sh     # one target
#   FUZZ_ARGS="-dict=d.txt" bash scripts/fuzz.sh    # extra libFuzzer flags
#
# Not run by .ci/run: it takes minutes and needs a nightly toolchain
# (libFuzzer's instrumentation). It installs cargo-fuzz when missing.
#
# Each target runs in one process (libFuzzer's default: one job, one
# worker) and stops at its first crash; the crashing input lands in
# fuzz/artifacts/<target>/. Minimise it (`cargo +nightly fuzz tmin`), fix
# the bug, add a regression test to the normal suite, and keep the input in
# fuzz/regressions/<target>/: this script replays those first.
#
# Built without a sanitizer by default (FUZZ_SANITIZER=address to add
# one): the crate forbids unsafe code, and the fuzzers look for panics and
# broken properties, which ASan does not find, at several times the speed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
read -r -a targets <<<"${FUZZ_TARGETS:-wire_decode api_body render}"
sanitizer=${FUZZ_SANITIZER:-none}

step() { printf '\n==> %s\n' "$*"; }

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! command -v cargo-fuzz >/dev/null; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# `api_body` needs the API (the crate's `fuzzing` feature, which pulls in
# the shell); the other targets build from the core alone.
features() { if [[ $1 == api_body ]]; then echo "--features=api"; fi; }

fuzz() { cargo +nightly fuzz run --sanitizer "$sanitizer" --debug-assertions "$@"; }

step "seed corpora (fuzz/examples/seeds.rs)"
cargo +nightly run --quiet --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/corpus

summary=()
for target in "${targets[@]}"; do
    artifacts="fuzz/artifacts/$target"
    corpus="fuzz/corpus/$target"
    mkdir -p "$artifacts" "$corpus"
    # shellcheck disable=SC2046 # `features` is one word or none
    feature_args=($(features "$target"))

    if compgen -G "fuzz/regressions/$target/*" >/dev/null; then
        step "$target: replaying fuzz/regressions/$target"
        fuzz "${feature_args[@]}" "$target" fuzz/regressions/"$target"/* -- -runs=1
    fi

    step "$target: fuzzing for ${seconds}s"
    before=$(find "$artifacts" -type f | sort)
    log="$artifacts/last-run.log"
    set +e
    # shellcheck disable=SC2086 # FUZZ_ARGS: extra libFuzzer flags, split
    fuzz "${feature_args[@]}" "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=25 -print_final_stats=1 ${FUZZ_ARGS:-} 2>&1 |
        tee "$log" | grep --line-buffered -E 'DONE|pulse|panicked|ERROR|SUMMARY'
    status=${PIPESTATUS[0]}
    set -e

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f -name '*-*' ! -name '*.log' | sort) |
        grep -cE '/(crash|oom|timeout|leak)-' || true)
    summary+=("$(printf '%-12s %8s %14s %10s %8s %7s' "$target" "${seconds}s" "${runs:-?}" "${speed:-?}" "$new" "$status")")
done

step "summary (FUZZ_SECONDS=$seconds, sanitizer $sanitizer; crashes: new files in fuzz/artifacts/<target>/)"
printf '%-12s %8s %14s %10s %8s %7s\n' target time executions execs/s crashes status
printf '%s\n' "${summary[@]}"
