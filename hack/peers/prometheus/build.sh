#!/usr/bin/env bash
# Prints the directory holding `promtool` and `prometheus` (github.com/prometheus/prometheus,
# version in go.mod), built from the Go module proxy: promtool checks and unit-tests the
# chart's PrometheusRule (tests/metrics.rs), prometheus scrapes a real run for the
# dashboard picture in docs/operations.md (hack/dashboard).
#
# - PROMETHEUS_DIR set: use the binaries there (nothing is built).
# - Otherwise build into a cache outside the clone, keyed on go.mod, go.sum and this
#   script (and hack/go-build.sh), at nice 19 on PROMETHEUS_BUILD_JOBS cores (default 1). Progress goes to
#   stderr, the path to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../go-build.sh"
module=github.com/prometheus/prometheus

version=$(awk -v m="$module" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
# The web UI's assets are not embedded (no builtinassets tag): only the HTTP API is used.
go_build_cached prometheus "prometheus $version" "peers/prometheus-$version" PROMETHEUS_DIR PROMETHEUS_BUILD_JOBS 8 \
  promtool prometheus -- \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=${version#v}" \
  "$module/cmd/promtool" "$module/cmd/prometheus"
