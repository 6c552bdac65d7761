#!/usr/bin/env bash
# Prints the directory holding `dex` (github.com/dexidp/dex/cmd/dex, release in go.mod),
# an OIDC provider run as a plain process on loopback (memory storage, static
# passwords) to issue real ID tokens for the local control plane. See README.md.
#
# - DEX_DIR set: use the binary there (nothing is built).
# - Otherwise build it from the Go module proxy into a cache outside the clone, keyed
#   on this module's go.mod, go.sum and this script, so a second run reuses it.
#   Progress goes to stderr, the path to stdout.
#
# The build runs at the lowest priority on one core (nice 19, GOMAXPROCS=1, -p 1): it
# shares the machine with cargo builds and timing-sensitive tests. DEX_BUILD_JOBS=N
# (e.g. in CI with nothing else running) raises GOMAXPROCS and -p to N.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module=github.com/dexidp/dex

if [[ -n "${DEX_DIR:-}" ]]; then
  [[ -x "$DEX_DIR/dex" ]] || {
    echo "DEX_DIR=$DEX_DIR has no executable dex; unset it to build Dex from Go modules" >&2
    exit 1
  }
  echo "$DEX_DIR"
  exit 0
fi

# go.mod names the release (`// dex-release: vX = module pseudo-version`) next to the
# pseudo-version it requires; refuse to build if the two drifted apart.
release=$(awk '$1 == "//" && $2 == "dex-release:" { print $3; exit }' "$here/go.mod")
pseudo=$(awk '$1 == "//" && $2 == "dex-release:" { print $6; exit }' "$here/go.mod")
required=$(awk -v m="$module" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
[[ -n "$release" && "$pseudo" == "$required" ]] || {
  echo "go.mod: the dex-release comment ($release = $pseudo) does not match the required $module $required" >&2
  exit 1
}
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache_root=${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}
out="$cache_root/peers/dex-$release-$key"

if [[ -x "$out/dex" ]]; then
  echo "dex $release: using cached binary in $out" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go not found: install Go >= 1.25 (Dex's go.mod needs it) to build Dex (or set DEX_DIR)" >&2; exit 1; }
jobs=${DEX_BUILD_JOBS:-1}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "DEX_BUILD_JOBS=$jobs: expected a positive integer" >&2; exit 1; }
echo "dex $release ($required): building from Go modules into $out" >&2
echo "  (first time only: about 2 minutes at nice 19 on one core; later runs reuse the cache)" >&2
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

# CGO_ENABLED=0 leaves out the sqlite3 storage (it needs cgo); memory storage is used.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOMAXPROCS=$jobs
cd "$here"
start=$(date +%s)
nice -n 19 go build -p "$jobs" -trimpath -ldflags "-s -w -X main.version=$release" \
  -o "$tmp/dex" "$module/cmd/dex"
[[ -x "$tmp/dex" ]] || { echo "go build produced no dex" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "dex $release: built in $(( $(date +%s) - start ))s (GOMAXPROCS=$jobs, -p $jobs), ready in $out" >&2
echo "$out"
