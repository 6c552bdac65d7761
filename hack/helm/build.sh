#!/usr/bin/env bash
# Prints the path of a helm binary built from this module (helm.sh/helm/v3, version in go.mod).
#
# - HELM set: use that binary (nothing is built).
# - Otherwise build it from the Go module proxy into a cache outside the clone, keyed
#   on this module's go.mod, go.sum and this script, so later runs (and CI on the same
#   machine) reuse it. Progress goes to stderr, the path to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [[ -n "${HELM:-}" ]]; then
  [[ -x "$HELM" ]] || { echo "HELM=$HELM is not executable; unset it to build helm from Go modules" >&2; exit 1; }
  echo "$HELM"
  exit 0
fi

version=$(awk '$1 == "helm.sh/helm/v3" { print $2 }' "$here/go.mod")
# helm's default Kubernetes version (helm template, helm lint) is the client-go it is built with.
client_go=$(awk '$1 == "k8s.io/client-go" { print $2 }' "$here/go.mod")
k8s_minor=$(echo "$client_go" | cut -d. -f2)
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache_root=${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}
out="$cache_root/helm/$version-$key"

if [[ -x "$out/helm" ]]; then
  echo "helm $version: using cached binary in $out" >&2
  echo "$out/helm"
  exit 0
fi

command -v go >/dev/null || { echo "go not found: install Go >= 1.25 to build helm (or set HELM)" >&2; exit 1; }
echo "helm $version: building from Go modules into $out (first time only: about 1.5 minutes)" >&2
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cd "$here"
start=$(date +%s)
go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor" \
  -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "helm $version: built in $(( $(date +%s) - start ))s, ready in $out" >&2
echo "$out/helm"
