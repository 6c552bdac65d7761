#!/usr/bin/env bash
# Prints the directory holding `promtool` and `prometheus` (github.com/prometheus/prometheus,
# version in go.mod), built from the Go module proxy: promtool checks and unit-tests the
# chart's PrometheusRule (tests/metrics.rs), prometheus scrapes a real run for the
# dashboard picture in docs/operations.md (hack/dashboard).
#
# - PROMETHEUS_DIR set: use the binaries there (nothing is built).
# - Otherwise build into a cache outside the clone, keyed on go.mod, go.sum and this
#   script, at nice 19 on PROMETHEUS_BUILD_JOBS cores (default 1). Progress goes to
#   stderr, the path to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binaries=(promtool prometheus)
module=github.com/prometheus/prometheus

if [[ -n "${PROMETHEUS_DIR:-}" ]]; then
  for b in "${binaries[@]}"; do
    [[ -x "$PROMETHEUS_DIR/$b" ]] || { echo "PROMETHEUS_DIR=$PROMETHEUS_DIR has no executable $b; unset it to build from Go modules" >&2; exit 1; }
  done
  echo "$PROMETHEUS_DIR"; exit 0
fi

version=$(awk -v m="$module" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
out="${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}/peers/prometheus-$version-$key"
if [[ -x "$out/promtool" && -x "$out/prometheus" ]]; then
  echo "prometheus $version: using cached binaries in $out" >&2
  echo "$out"; exit 0
fi

command -v go >/dev/null || { echo "go not found: install Go >= 1.26 to build promtool (or set PROMETHEUS_DIR)" >&2; exit 1; }
jobs=${PROMETHEUS_BUILD_JOBS:-1}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "PROMETHEUS_BUILD_JOBS=$jobs: expected a positive integer" >&2; exit 1; }
echo "prometheus $version: building promtool and prometheus from Go modules into $out" >&2
echo "  (first time only: a few minutes at nice 19; later runs reuse the cache)" >&2
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOMAXPROCS=$jobs
cd "$here"
start=$(date +%s)
# The web UI's assets are not embedded (no builtinassets tag): only the HTTP API is used.
nice -n 19 go build -p "$jobs" -trimpath \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=${version#v}" \
  -o "$tmp/" "$module/cmd/promtool" "$module/cmd/prometheus"
for b in "${binaries[@]}"; do [[ -x "$tmp/$b" ]] || { echo "go build produced no $b" >&2; exit 1; }; done
mkdir -p "$(dirname "$out")"; rm -rf "$out"; mv "$tmp" "$out"
trap - EXIT
echo "prometheus $version: built in $(( $(date +%s) - start ))s, ready in $out" >&2
echo "$out"
