#!/usr/bin/env bash
# Prints a directory holding Argo CD's CRDs (application-crd.yaml, appproject-crd.yaml,
# applicationset-crd.yaml), copied from manifests/crds/ of the module
# github.com/argoproj/argo-cd/v3 as the Go module proxy serves it (the module zip
# carries them). Apply with
#   kubectl apply --server-side -f "$(hack/peers/argocd/crds.sh)"
# (server-side: applicationset-crd.yaml is 1.4 MB, too large for client-side apply's
# last-applied annotation).
#
# ARGOCD_VERSION picks the version (default below). Cached outside the clone under
# ${SIGNOFF_CACHE:-~/.cache/signoff}/peers/, keyed on the version and this script; needs
# only a `go mod download`, no build. Progress to stderr, path to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Newest v3 release whose module the proxy serves and Go 1.26 accepts: v3.6.x's go.mod
# says go 1.27.0, so `go mod download` refuses it with GOTOOLCHAIN=local. (build.sh here
# builds v3.2.11, the newest whose controller builds; ARGOCD_VERSION=v3.2.11 gives the
# CRDs of exactly that release.)
version=${ARGOCD_VERSION:-v3.5.8}
module=github.com/argoproj/argo-cd/v3

key=$(cat "$here/crds.sh" | sha256sum | cut -c1-16)
cache_root=${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}
out="$cache_root/peers/argocd-crds-$version-$key"

if compgen -G "$out/*-crd.yaml" >/dev/null; then
  echo "argocd $version CRDs: using cached copies in $out" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go not found: needed to fetch Argo CD's module source" >&2; exit 1; }
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
# Outside any module, so this directory's go.mod (if any) plays no part.
cd "$tmp"
json=$(GOTOOLCHAIN=local GOFLAGS=-mod=mod GO111MODULE=on go mod download -json "$module@$version") || {
  echo "go mod download $module@$version failed:" >&2
  echo "$json" | jq -r '.Error // empty' >&2
  exit 1
}
dir=$(echo "$json" | jq -r .Dir)
compgen -G "$dir/manifests/crds/*-crd.yaml" >/dev/null ||
  { echo "no manifests/crds/*-crd.yaml in $dir" >&2; exit 1; }
cp "$dir"/manifests/crds/*-crd.yaml "$tmp/"
chmod u+w "$tmp"/*.yaml # the module cache is read-only
echo "argocd $version CRDs: $(cd "$tmp" && echo *-crd.yaml) from $dir/manifests/crds" >&2
mkdir -p "$(dirname "$out")"
cd /
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
