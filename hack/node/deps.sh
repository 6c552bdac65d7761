#!/usr/bin/env bash
# Installs what a node needs from Debian's packages when missing: containerd, runc,
# the CNI plugins, iptables and conntrack (kube-proxy), busybox-static and umoci
# (the sandbox image), iproute2. Needs root; run it before entering a network
# namespace without a route out (tests/cluster.rs does).
set -euo pipefail
missing=()
for p in containerd:containerd runc:runc umoci:umoci busybox:busybox-static iptables:iptables \
  conntrack:conntrack ip:iproute2 ctr:containerd; do
  command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
done
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
if ((${#missing[@]})); then
  echo "node: installing ${missing[*]} from Debian's packages" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
