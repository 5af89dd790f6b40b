#!/usr/bin/env bash
# Builds the `aqueduct` binary of the previous release (the rev pinned in
# tests/fixtures/previous-release.txt, or the rev given as $1) for the
# mixed-version and rolling-upgrade tests (tests/rolling_upgrade.rs), and
# prints its path on the last line of stdout.
#
# The source comes from `git archive` (no worktree is registered, so the
# clone's git metadata stays as it was) into target/previous/REV/, and is
# built there with its own target directory seeded from this checkout's
# target/debug (dependencies hard-linked, fingerprints copied), so only the
# aqueduct crate itself recompiles. Idempotent: a binary already built for
# that rev is reused. The extracted source is removed after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rev=${1:-$(tr -d '[:space:]' < tests/fixtures/previous-release.txt)}
commit=$(git rev-parse --verify --quiet "$rev^{commit}") || {
    echo "build-previous: $rev is not a commit of this clone (a shallow clone? fetch its history)" >&2
    exit 1
}
out=$root/target/previous/$commit
bin=$out/target/debug/aqueduct
if [ -x "$bin" ] && [ "$(cat "$out/built" 2>/dev/null)" = "$commit" ]; then
    echo "$bin"
    exit 0
fi

echo "build-previous: building aqueduct at ${commit:0:12} into $out" >&2
rm -rf "$out/src-tree" "$out/built"
mkdir -p "$out/src-tree" "$out/target/debug"
if [ -d target/debug/deps ] && [ ! -d "$out/target/debug/deps" ]; then
    # Hard links: no copy of the ~7 GB of dependencies. The aqueduct
    # crate's own artifacts are unlinked from the copy, so that rebuilding
    # them writes new files rather than into inodes this checkout shares.
    cp -al target/debug/deps target/debug/build "$out/target/debug/"
    cp -a target/debug/.fingerprint "$out/target/debug/"
    rm -rf "$out"/target/debug/deps/*aqueduct* "$out"/target/debug/.fingerprint/aqueduct-* \
        "$out"/target/debug/build/aqueduct-*
fi
# Extracted after the seeding, with the current time (-m): newer than any
# fingerprint, so the aqueduct crate is rebuilt from this source, never
# taken for the build of this checkout that the seed holds.
git archive "$commit" | tar -x -m -C "$out/src-tree"
(cd "$out/src-tree" && CARGO_TARGET_DIR="$out/target" \
    cargo build --locked --features shell --bin aqueduct >&2)
rm -rf "$out/src-tree"
echo "$commit" > "$out/built"
echo "$bin"
