#!/usr/bin/env bash
# Prints the path of a helm binary built from this module (helm.sh/helm/v3, version in go.mod).
#
# - HELM set: use that binary (nothing is built); HELM_DIR: a directory holding `helm`.
# - Otherwise build it from the Go module proxy into a cache outside the clone, keyed
#   on this module's go.mod, go.sum, this script and hack/go-build.sh, so later runs (and CI on the same
#   machine) reuse it. Progress goes to stderr, the path to stdout. At nice 19 on
#   HELM_BUILD_JOBS cores (default 1; make uses 2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../go-build.sh"

if [[ -n "${HELM:-}" ]]; then
  [[ -x "$HELM" ]] || { echo "HELM=$HELM is not executable; unset it to build helm from Go modules" >&2; exit 1; }
  echo "$HELM"
  exit 0
fi

version=$(awk '$1 == "helm.sh/helm/v3" { print $2 }' "$here/go.mod")
# helm's default Kubernetes version (helm template, helm lint) is the client-go it is built with.
client_go=$(awk '$1 == "k8s.io/client-go" { print $2 }' "$here/go.mod")
k8s_minor=$(echo "$client_go" | cut -d. -f2)
dir=$(go_build_cached helm "helm $version" "helm/$version" HELM_DIR HELM_BUILD_JOBS 3 helm -- \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor" \
  helm.sh/helm/v3/cmd/helm)
echo "$dir/helm"
