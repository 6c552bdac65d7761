#!/usr/bin/env bash
# Prints the directory holding `source-controller` and `kustomize-controller`, Flux's
# two controllers for GitRepository -> Kustomization (github.com/fluxcd/source-controller
# and github.com/fluxcd/kustomize-controller, versions in go.mod), built to run out of
# cluster against the local control plane. See README.md; crds.sh prints their CRDs.
#
# - FLUX_DIR set: use the binaries there (nothing is built).
# - Otherwise build them from the Go module proxy into a cache outside the clone, keyed
#   on this module's go.mod, go.sum and this script, so a second run reuses them.
#   Progress goes to stderr, the path to stdout.
#
# The build runs at the lowest priority on one core (nice 19, GOMAXPROCS=1, -p 1): it
# shares the machine with cargo builds and timing-sensitive tests. FLUX_BUILD_JOBS=N
# (e.g. in CI with nothing else running) raises GOMAXPROCS and -p to N.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binaries=(source-controller kustomize-controller)

if [[ -n "${FLUX_DIR:-}" ]]; then
  for b in "${binaries[@]}"; do
    [[ -x "$FLUX_DIR/$b" ]] || {
      echo "FLUX_DIR=$FLUX_DIR has no executable $b; unset it to build Flux from Go modules" >&2
      exit 1
    }
  done
  echo "$FLUX_DIR"
  exit 0
fi

sc_version=$(awk '$1 == "github.com/fluxcd/source-controller" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
kc_version=$(awk '$1 == "github.com/fluxcd/kustomize-controller" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache_root=${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}
out="$cache_root/peers/flux-sc-$sc_version-kc-$kc_version-$key"
what="flux source-controller $sc_version, kustomize-controller $kc_version"

complete=1
for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || complete=0; done
if [[ $complete == 1 ]]; then
  echo "$what: using cached binaries in $out" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go not found: install Go >= 1.26 (the controllers' go.mod need it) to build Flux (or set FLUX_DIR)" >&2; exit 1; }
jobs=${FLUX_BUILD_JOBS:-1}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "FLUX_BUILD_JOBS=$jobs: expected a positive integer" >&2; exit 1; }
echo "$what: building from Go modules into $out" >&2
echo "  (first time only: about 8 minutes at nice 19 on one core; later runs reuse the cache)" >&2
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOMAXPROCS=$jobs
cd "$here"
start=$(date +%s)
# One go build for both: the packages they share (client-go, controller-runtime, the
# fluxcd/pkg modules) compile once. With -o DIR/ each binary is named after its
# package's last path element. Neither controller injects a version with -X.
nice -n 19 go build -p "$jobs" -trimpath -ldflags "-s -w" \
  -o "$tmp/" github.com/fluxcd/source-controller github.com/fluxcd/kustomize-controller
for b in "${binaries[@]}"; do [[ -x "$tmp/$b" ]] || { echo "go build produced no $b" >&2; exit 1; }; done
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$what: built in $(( $(date +%s) - start ))s (GOMAXPROCS=$jobs, -p $jobs), ready in $out" >&2
echo "$out"
