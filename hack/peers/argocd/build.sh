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
#   on this module's go.mod, go.sum, this script and hack/go-build.sh, so a second run reuses it.
#   Progress goes to stderr, the path to stdout.
#
# The build runs at the lowest priority on one core (nice 19, GOMAXPROCS=1, -p 1);
# ARGOCD_BUILD_JOBS=N raises GOMAXPROCS and -p to N.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../go-build.sh"
links=(argocd-application-controller argocd-repo-server)

version=$(awk '$1 == "github.com/argoproj/argo-cd/v3" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
# The package is .../cmd: go names the binary `cmd`; the components are links to it.
go_build_after() {
  mv "$1/cmd" "$1/argocd" && for l in "${links[@]}"; do ln -s argocd "$1/$l" || return 1; done
}
# As Argo CD's Makefile does; without these `argocd version` says v99.99.99+unknown.
pkg=github.com/argoproj/argo-cd/v3/common
go_build_cached argocd "argocd $version" "peers/argocd-$version" ARGOCD_DIR ARGOCD_BUILD_JOBS 8 argocd "${links[@]}" -- \
  -ldflags "-s -w -X $pkg.version=${version#v} -X $pkg.gitTag=$version -X $pkg.gitTreeState=clean" \
  github.com/argoproj/argo-cd/v3/cmd
