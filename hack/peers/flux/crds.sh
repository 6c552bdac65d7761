#!/usr/bin/env bash
# Prints a directory holding Flux's CRDs for the controllers build.sh builds: the
# config/crd/bases/*.yaml of github.com/fluxcd/source-controller (6: buckets,
# externalartifacts, gitrepositories, helmcharts, helmrepositories, ocirepositories)
# and of github.com/fluxcd/kustomize-controller (1: kustomizations), versions in go.mod,
# copied out of the module sources (both module zips carry them). Apply with
#   kubectl apply --server-side -f "$(hack/peers/flux/crds.sh)"
#
# Cached like build.sh (keyed on go.mod, go.sum and this script); needs only a
# `go mod download` of the two modules, no build. Progress to stderr, path to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
modules=(github.com/fluxcd/source-controller github.com/fluxcd/kustomize-controller)

key=$(cat "$here/go.mod" "$here/go.sum" "$here/crds.sh" | sha256sum | cut -c1-16)
cache_root=${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}
out="$cache_root/peers/flux-crds-$key"

if compgen -G "$out/*.yaml" >/dev/null; then
  echo "flux CRDs: using cached copies in $out" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go not found: needed to fetch Flux's module sources" >&2; exit 1; }
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
cd "$here"
for m in "${modules[@]}"; do
  dir=$(go list -m -f '{{.Dir}}' "$m")
  if [[ -z "$dir" ]]; then
    go mod download "$m" >&2
    dir=$(go list -m -f '{{.Dir}}' "$m")
  fi
  version=$(go list -m -f '{{.Version}}' "$m")
  compgen -G "$dir/config/crd/bases/*.yaml" >/dev/null ||
    { echo "no CRDs under $dir/config/crd/bases ($m $version)" >&2; exit 1; }
  cp "$dir"/config/crd/bases/*.yaml "$tmp/"
  chmod u+w "$tmp"/*.yaml # the module cache is read-only
  echo "flux CRDs: $(cd "$dir/config/crd/bases" && echo *.yaml | wc -w) from $m@$version" >&2
done
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
