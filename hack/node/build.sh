#!/usr/bin/env bash
# Prints the directory holding kubelet, kube-scheduler and kube-proxy, built from the
# Go module proxy at the Kubernetes version of hack/controlplane (go.mod), cached
# outside the clone keyed on go.mod, go.sum and this script. NODE_BUILD_JOBS=N (default
# 1) sets GOMAXPROCS and -p. Progress to stderr, the path to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binaries=(kubelet kube-scheduler kube-proxy)
version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
out="${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}/peers/node-$version-$key"
complete=1
for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || complete=0; done
if [[ $complete == 1 ]]; then echo "node $version: using cached binaries in $out" >&2; echo "$out"; exit 0; fi
command -v go >/dev/null || { echo "go not found: install Go >= 1.25 to build the node binaries" >&2; exit 1; }
jobs=${NODE_BUILD_JOBS:-1}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "NODE_BUILD_JOBS=$jobs: expected a positive integer" >&2; exit 1; }
echo "node $version: building kubelet, kube-scheduler, kube-proxy into $out" >&2
tmp="$out.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"; trap 'rm -rf "$tmp"' EXIT
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOMAXPROCS=$jobs
cd "$here"
start=$(date +%s)
nice -n 19 go build -p "$jobs" -trimpath -ldflags "-s -w" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
mkdir -p "$(dirname "$out")"; rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "node $version: built in $(( $(date +%s) - start ))s, ready in $out" >&2
echo "$out"
