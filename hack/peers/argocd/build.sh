#!/usr/bin/env bash
# Prints the directory holding `argocd`, Argo CD's multi-call binary
# (github.com/argoproj/argo-cd/v3/cmd, version in go.mod) and the symlinks
# `argocd-application-controller` and `argocd-repo-server` to it: the binary picks the
# component by the name it runs as (argv[0]). Built only, not run here yet: the
# application controller also wants a repo server and Redis. See README.md; crds.sh
# prints the CRDs.
#
# - ARGOCD_DIR set: use the binary there (nothing is built).
# - Otherwise build it from the Go module proxy into a cache outside the clone, keyed
#   on this module's go.mod, go.sum and this script, so a second run reuses it.
#   Progress goes to stderr, the path to stdout.
#
# The build runs at the lowest priority on one core (nice 19, GOMAXPROCS=1, -p 1);
# ARGOCD_BUILD_JOBS=N raises GOMAXPROCS and -p to N.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
links=(argocd-application-controller argocd-repo-server)

if [[ -n "${ARGOCD_DIR:-}" ]]; then
  [[ -x "$ARGOCD_DIR/argocd" ]] || {
    echo "ARGOCD_DIR=$ARGOCD_DIR has no executable argocd; unset it to build Argo CD from Go modules" >&2
    exit 1
  }
  echo "$ARGOCD_DIR"
  exit 0
fi

version=$(awk '$1 == "github.com/argoproj/argo-cd/v3" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache_root=${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}
out="$cache_root/peers/argocd-$version-$key"

if [[ -x "$out/argocd" ]]; then
  echo "argocd $version: using cached binary in $out" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go not found: install Go >= 1.25.5 to build Argo CD (or set ARGOCD_DIR)" >&2; exit 1; }
jobs=${ARGOCD_BUILD_JOBS:-1}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "ARGOCD_BUILD_JOBS=$jobs: expected a positive integer" >&2; exit 1; }
echo "argocd $version: building from Go modules into $out" >&2
echo "  (first time only: about 8 minutes at nice 19 on one core; later runs reuse the cache)" >&2
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOMAXPROCS=$jobs
cd "$here"
start=$(date +%s)
# As Argo CD's Makefile does; without these `argocd version` says v99.99.99+unknown.
pkg=github.com/argoproj/argo-cd/v3/common
nice -n 19 go build -p "$jobs" -trimpath \
  -ldflags "-s -w -X $pkg.version=${version#v} -X $pkg.gitTag=$version -X $pkg.gitTreeState=clean" \
  -o "$tmp/argocd" github.com/argoproj/argo-cd/v3/cmd
for l in "${links[@]}"; do ln -s argocd "$tmp/$l"; done
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "argocd $version: built in $(( $(date +%s) - start ))s (GOMAXPROCS=$jobs, -p $jobs), ready in $out" >&2
echo "$out"
