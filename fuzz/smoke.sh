#!/usr/bin/env bash
# Fuzz smoke test: runs every cargo-fuzz target for a bounded time.
#
#   fuzz/smoke.sh [SECONDS_PER_TARGET]   (default 20)
#
# Starts from the seed corpus in fuzz/corpus/<target>/ without writing to it
# (new inputs go to a temporary directory). Exits non-zero if any target
# crashes; the reproducer is in fuzz/artifacts/<target>/ (replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`).
# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP=1 lets stable accept them.
set -euo pipefail

secs="${1:-20}"
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Sanitizer: none by default (MAU_FUZZ_SANITIZER=address for ASan). Our
# crates forbid unsafe code, and a few seconds per target find no memory
# bug ASan would; what the smoke proves is that every target builds, replays
# its corpus and survives fresh inputs. Without ASan every dependency
# (sequoia, rustls) compiles much faster. Long runs (docs/fuzzing.md) use ASan.
san=(--sanitizer "${MAU_FUZZ_SANITIZER:-none}")

start=$(date +%s)
cargo fuzz build "${san[@]}"
echo "fuzz build: $(( $(date +%s) - start )) s"

status=0
failed=()
for target in $(cargo fuzz list); do
    work=$(mktemp -d)
    echo "=== $target: ${secs} s"
    if ! cargo fuzz run "${san[@]}" "$target" "$work" "corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        status=1
        failed+=("$target")
    fi
    rm -rf "$work"
done

if [ "$status" -ne 0 ]; then
    echo "FINDINGS in: ${failed[*]} (see fuzz/artifacts/)" >&2
else
    echo "fuzz smoke: no finding (${secs} s per target, $(( $(date +%s) - start )) s in all)"
fi
exit "$status"
