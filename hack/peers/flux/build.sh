#!/usr/bin/env bash
# Prints the directory holding `source-controller` and `kustomize-controller`, Flux's
# two controllers for GitRepository -> Kustomization (github.com/fluxcd/source-controller
# and github.com/fluxcd/kustomize-controller, versions in go.mod), built to run out of
# cluster against the local control plane. See README.md; crds.sh prints their CRDs.
#
# - FLUX_DIR set: use the binaries there (nothing is built).
# - Otherwise build them from the Go module proxy into a cache outside the clone, keyed
#   on this module's go.mod, go.sum, this script and hack/go-build.sh, so a second run reuses them.
#   Progress goes to stderr, the path to stdout.
#
# The build runs at the lowest priority on one core (nice 19, GOMAXPROCS=1, -p 1): it
# shares the machine with cargo builds and timing-sensitive tests. FLUX_BUILD_JOBS=N
# (e.g. in CI with nothing else running) raises GOMAXPROCS and -p to N.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../go-build.sh"

sc_version=$(awk '$1 == "github.com/fluxcd/source-controller" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
kc_version=$(awk '$1 == "github.com/fluxcd/kustomize-controller" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
# One go build for both: the packages they share (client-go, controller-runtime, the
# fluxcd/pkg modules) compile once. Neither controller injects a version with -X.
go_build_cached flux "flux source-controller $sc_version, kustomize-controller $kc_version" \
  "peers/flux-sc-$sc_version-kc-$kc_version" FLUX_DIR FLUX_BUILD_JOBS 8 source-controller kustomize-controller -- \
  -ldflags "-s -w" github.com/fluxcd/source-controller github.com/fluxcd/kustomize-controller
