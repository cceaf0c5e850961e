#!/usr/bin/env bash
# The sync bench (tests/benches/sync.rs) on a freshly made ext4, once per
# run, as docs/sync.md's "fresh ext4" figures were measured.
#
#   sudo scripts/sync-bench-fresh.sh [runs] [bench binary...]
#
# Why: a long-lived file system ages within a session (thousands of files
# created and deleted, ext4 then skipping recently freed inodes), and the
# small-file figures of both the sync and curl drift by 3-4x. Each run gets
# a new 4 GiB ext4 image on a loop device (direct I/O, so the image's own
# page cache does not count twice), mounted and used as TMPDIR, then
# removed. With several binaries (e.g. an old build copied aside), each run
# alternates them, each on its own fresh file system. MAU_BENCH_* settings
# pass through. Needs root (losetup, mount) and mkfs.ext4; the image lives
# in $BENCH_IMG_DIR (default /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
shift || true
if [ "$(id -u)" != 0 ]; then
    echo "needs root (losetup, mount)" >&2
    exit 2
fi
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
    bin=$(cargo bench -p mau-tests --bench sync --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [ -n "$bin" ] || { echo "could not build the sync bench" >&2; exit 1; }
    bins=("$bin")
fi
img=$(mktemp -p "${BENCH_IMG_DIR:-/var/tmp}" mau-sync-bench.XXXXXX)
mnt=$(mktemp -d)
dev=""
cleanup() {
    umount "$mnt" 2>/dev/null || true
    if [ -n "$dev" ]; then losetup -d "$dev" 2>/dev/null || true; fi
    rm -f "$img"
    rmdir "$mnt" 2>/dev/null || true
}
trap cleanup EXIT
fresh() {
    umount "$mnt" 2>/dev/null || true
    if [ -n "$dev" ]; then losetup -d "$dev"; dev=""; fi
    rm -f "$img"
    fallocate -l 4G "$img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
    dev=$(losetup --direct-io=on -f --show "$img")
    mount "$dev" "$mnt"
}
for run in $(seq 1 "$runs"); do
    for bin in "${bins[@]}"; do
        fresh
        echo "== run $run: $bin (load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%H:%M:%S) UTC)"
        TMPDIR="$mnt" "$bin" --bench
    done
done
