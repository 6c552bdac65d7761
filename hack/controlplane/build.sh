#!/usr/bin/env bash
# Prints the directory holding kube-apiserver, kube-controller-manager, kubectl and etcd.
#
# - KUBEBUILDER_ASSETS set: use the binaries there (nothing is built).
# - Otherwise build them from the Go module proxy into a cache outside the clone,
#   keyed on this module's go.mod, go.sum and this script, so a second run (or CI
#   on the same machine) reuses them. Progress goes to stderr, the path to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
k8s_version=v1.35.4
binaries=(kube-apiserver kube-controller-manager kubectl etcd)

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in kube-apiserver etcd kubectl; do
    if [[ ! -x "$KUBEBUILDER_ASSETS/$b" ]]; then
      echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $b; unset it to build the control plane from Go modules" >&2
      exit 1
    fi
  done
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" "$here/etcd/main.go" | sha256sum | cut -c1-16)
cache_root=${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}
out="$cache_root/controlplane/$k8s_version-$key"

complete=1
for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || complete=0; done
if [[ $complete == 1 ]]; then
  echo "control plane $k8s_version: using cached binaries in $out" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go not found: install Go >= 1.25 to build the local control plane (or set KUBEBUILDER_ASSETS)" >&2; exit 1; }
echo "control plane $k8s_version: building ${binaries[*]} from Go modules into $out" >&2
echo "  (first time only: about 7 minutes on 2 cores; later runs reuse the cache)" >&2
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
ver_pkg=k8s.io/component-base/version
minor=$(echo "$k8s_version" | cut -d. -f2)
ldflags="-s -w \
 -X $ver_pkg.gitVersion=$k8s_version -X $ver_pkg.gitMajor=1 -X $ver_pkg.gitMinor=$minor -X $ver_pkg.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitTreeState=clean"

cd "$here"
i=0
for b in "${binaries[@]}"; do
  i=$((i + 1))
  start=$(date +%s)
  case $b in
    etcd) pkg=./etcd ;;
    *) pkg=k8s.io/kubernetes/cmd/$b ;;
  esac
  echo "  [$i/${#binaries[@]}] go build $pkg ..." >&2
  go build -trimpath -ldflags "$ldflags" -o "$tmp/$b" "$pkg"
  echo "  [$i/${#binaries[@]}] $b built in $(( $(date +%s) - start ))s" >&2
done
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "control plane $k8s_version: ready in $out" >&2
echo "$out"
