#!/usr/bin/env bash
# Loopback soak: 100 real nodes in one process on 127.0.0.1 (mutual TLS,
# Kademlia, discovery off), 20% of them stopped and restarted over the run
# while lookups run at 10/s; prints lookups, success, hops, latency and the
# fd / RSS / table samples, and exits non-zero on < 99% success, a panic or
# fd / RSS growth (the rule is in mau-cli/src/devnet.rs, `growth`).
#
#   scripts/soak.sh [SECONDS] [--debug] [more `mau devnet` flags, e.g. --json]
#
# SECONDS defaults to 600. Without --debug it builds and runs the release
# binary; --debug runs the debug binary instead (what CI does after
# `cargo test --workspace` built it: no release build of the whole tree).
# Environment: MAU_SOAK_NODES (100), MAU_SOAK_CHURN (0.2), MAU_SOAK_RATE (10).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=600
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi
profile=release
args=()
for a in "$@"; do
    if [ "$a" = "--debug" ]; then profile=debug; else args+=("$a"); fi
done

if [ "$profile" = release ]; then
    cargo build --release -q -p mau-cli
else
    cargo build -q -p mau-cli # a no-op when `cargo test` built it already
fi
bin="${CARGO_TARGET_DIR:-target}/$profile/mau"
# One process holds both ends of every connection of 100 nodes: up to ~20,000
# descriptors at the join. Raise the soft limit (often 1024) to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cmd=("$bin" devnet --nodes "${MAU_SOAK_NODES:-100}" --soak-seconds "$secs"
    --churn "${MAU_SOAK_CHURN:-0.2}" --lookup-rate "${MAU_SOAK_RATE:-10}" ${args[@]+"${args[@]}"})
echo "soak ($profile, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)): ${cmd[*]}"
exec "${cmd[@]}"
