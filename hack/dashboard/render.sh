#!/usr/bin/env bash
# Renders docs/img/dashboard.png from a real run (make dashboard-picture): signoff on
# a local control plane, a Prometheus built from Go modules scraping it, a load of
# held, approved, rejected and expiring changes (tests/dashboard_picture.rs), then
# render.py draws every panel of charts/signoff/files/dashboards/signoff.json from
# that Prometheus. DASHBOARD_SECONDS sets the load's length (default 150).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if ! /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  echo "installing Debian's python3-matplotlib for render.py" >&2
  apt-get install -y -q python3-matplotlib >/dev/null || {
    echo "could not install python3-matplotlib (apt-get install python3-matplotlib as root)" >&2; exit 1; }
fi
PROMETHEUS_DIR=$(hack/peers/prometheus/build.sh)
export PROMETHEUS_DIR
mkdir -p docs/img
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(hack/target-dir.sh)}
cargo test --locked --test dashboard_picture -- --ignored --nocapture
echo "docs/img/dashboard.png written" >&2
