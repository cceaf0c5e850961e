#!/usr/bin/env bash
# Runs the simulated probe flood (mau-simrt/tests/probe_flood.rs) against the
# code before issue 15's fix (7193607^), to show that it fails there.
#
#   scripts/probe-flood-before-fix.sh [SEED...]      (default: 1 2)
#
# It makes a scratch worktree of 7193607^ (removed on exit), copies
# mau-simrt as of ad0db4f (the revision the patch was made for: later
# mau-simrt needs later mau-net, e.g. Runtime::seed; override with
# SIMRT_REV) into it and applies probe-flood-before-fix.patch:
# Runtime::now on the old mau-net (its core clock, hyper's timer and the
# server's deadlines read it, as 8c8cd46 did later; nothing of the fix) and
# mau-simrt trimmed to the old Runtime trait (no UDP, shared ports or
# calendar clock; ring's provider, so TLS bytes do not replay there).
# Builds into this checkout's target directory. Exits 0 when every seed
# fails (the bug is reproduced), 1 otherwise. If the patch no longer
# applies, mau-simrt has moved on: regenerate it as docs/simulation.md says.
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
dir=$(mktemp -d "${TMPDIR:-/tmp}/mau-before-fix.XXXXXX")
rmdir "$dir"
git -C "$repo" worktree add --quiet --detach "$dir" 7193607^
trap 'git -C "$repo" worktree remove --force "$dir"' EXIT
git -C "$repo" archive "${SIMRT_REV:-ad0db4f}" mau-simrt | tar -x -C "$dir"
git -C "$dir" apply "$repo/scripts/probe-flood-before-fix.patch"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
reproduced=1
for seed in "${@:-1 2}"; do
    for s in $seed; do
        if (cd "$dir" && MAU_SIMRT_SEED=$s cargo test -p mau-simrt --test probe_flood -- --nocapture); then
            echo "seed $s: the flood did NOT break the node before the fix"
            reproduced=0
        else
            echo "seed $s: failed before the fix, as expected"
        fi
    done
done
[ "$reproduced" = 1 ]
