#!/usr/bin/env bash
# Prints the directory holding `dex` (github.com/dexidp/dex/cmd/dex, release in go.mod),
# an OIDC provider run as a plain process on loopback (memory storage, static
# passwords) to issue real ID tokens for the local control plane. See README.md.
#
# - DEX_DIR set: use the binary there (nothing is built).
# - Otherwise build it from the Go module proxy into a cache outside the clone, keyed
#   on this module's go.mod, go.sum, this script and hack/go-build.sh, so a second run reuses it.
#   Progress goes to stderr, the path to stdout.
#
# The build runs at the lowest priority on one core (nice 19, GOMAXPROCS=1, -p 1): it
# shares the machine with cargo builds and timing-sensitive tests. DEX_BUILD_JOBS=N
# (e.g. in CI with nothing else running) raises GOMAXPROCS and -p to N.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../go-build.sh"
module=github.com/dexidp/dex

# go.mod names the release (`// dex-release: vX = module pseudo-version`) next to the
# pseudo-version it requires; refuse to build if the two drifted apart.
release=$(awk '$1 == "//" && $2 == "dex-release:" { print $3; exit }' "$here/go.mod")
pseudo=$(awk '$1 == "//" && $2 == "dex-release:" { print $6; exit }' "$here/go.mod")
required=$(awk -v m="$module" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
[[ -n "$release" && "$pseudo" == "$required" ]] || {
  echo "go.mod: the dex-release comment ($release = $pseudo) does not match the required $module $required" >&2
  exit 1
}
# CGO_ENABLED=0 leaves out the sqlite3 storage (it needs cgo); memory storage is used.
go_build_cached dex "dex $release" "peers/dex-$release" DEX_DIR DEX_BUILD_JOBS 2 dex -- \
  -ldflags "-s -w -X main.version=$release" "$module/cmd/dex"
