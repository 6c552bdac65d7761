#!/usr/bin/env bash
# Prints the directory holding `kyverno`, Kyverno's admission controller
# (github.com/kyverno/kyverno/cmd/kyverno, version in go.mod), for the side-by-side
# latency benchmark (issue 11, bench-peers). See README.md for how to run it.
#
# - KYVERNO_DIR set: use the binary there (nothing is built).
# - Otherwise build it from the Go module proxy into a cache outside the clone, keyed
#   on this module's go.mod, go.sum, this script and hack/go-build.sh, so a second run reuses it.
#   Progress goes to stderr, the path to stdout.
#
# The build runs at the lowest priority on one core (nice 19, GOMAXPROCS=1, -p 1):
# it shares the machine with cargo builds and timing-sensitive tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../go-build.sh"

version=$(awk '$1 == "github.com/kyverno/kyverno" { print $2 }' "$here/go.mod")
# BuildVersion: as a dependency, Kyverno's fallback (the main module's version) would be "(devel)".
go_build_cached kyverno "kyverno $version" "peers/kyverno-$version" KYVERNO_DIR "" 25 kyverno -- \
  -ldflags "-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=$version" \
  github.com/kyverno/kyverno/cmd/kyverno
