#!/usr/bin/env bash
# Prints the directory holding `kyverno`, Kyverno's admission controller
# (github.com/kyverno/kyverno/cmd/kyverno, version in go.mod), for the side-by-side
# latency benchmark (issue 11, bench-peers). See README.md for how to run it.
#
# - KYVERNO_DIR set: use the binary there (nothing is built).
# - Otherwise build it from the Go module proxy into a cache outside the clone, keyed
#   on this module's go.mod, go.sum and this script, so a second run reuses it.
#   Progress goes to stderr, the path to stdout.
#
# The build runs at the lowest priority on one core (nice 19, GOMAXPROCS=1, -p 1):
# it shares the machine with cargo builds and timing-sensitive tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [[ -n "${KYVERNO_DIR:-}" ]]; then
  [[ -x "$KYVERNO_DIR/kyverno" ]] || {
    echo "KYVERNO_DIR=$KYVERNO_DIR has no executable kyverno; unset it to build Kyverno from Go modules" >&2
    exit 1
  }
  echo "$KYVERNO_DIR"
  exit 0
fi

version=$(awk '$1 == "github.com/kyverno/kyverno" { print $2 }' "$here/go.mod")
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache_root=${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}
out="$cache_root/peers/kyverno-$version-$key"

if [[ -x "$out/kyverno" ]]; then
  echo "kyverno $version: using cached binary in $out" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go not found: install Go >= 1.26.6 (Kyverno's go.mod needs it) to build Kyverno (or set KYVERNO_DIR)" >&2; exit 1; }
echo "kyverno $version: building from Go modules into $out" >&2
echo "  (first time only: about 25 minutes at nice 19 on one core; later runs reuse the cache)" >&2
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOMAXPROCS=1
cd "$here"
start=$(date +%s)
# BuildVersion: as a dependency, Kyverno's fallback (the main module's version) would be "(devel)".
nice -n 19 go build -p 1 -trimpath \
  -ldflags "-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=$version" \
  -o "$tmp/kyverno" github.com/kyverno/kyverno/cmd/kyverno
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "kyverno $version: built in $(( $(date +%s) - start ))s, ready in $out" >&2
echo "$out"
