#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver (chromedriver) when missing, for the
# browser tests (tests/ui.rs drives them headless). Needs root (apt-get), as
# hack/node/deps.sh. Prints nothing when both are there.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
  echo "browser: installing ${missing[*]} from Debian's packages" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
