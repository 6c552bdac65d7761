#!/usr/bin/env bash
# Starts a real node against a running control plane (e.g. `make dev`):
# containerd (Debian's), a busybox sandbox image built with umoci (nothing is
# pulled), the CNI bridge plugin, kubelet, kube-scheduler and kube-proxy from build.sh.
#   [NODE_IP=10.200.0.1] hack/node/start.sh KUBECONFIG NODE_DIR [IMAGE.oci.tar NAME]...
# KUBECONFIG must name an admin context as its current one. NODE_IP is the node's
# address (kubelet --node-ip); each IMAGE archive is imported into the runtime as
# NAME (e.g. ghcr.io/signoff-dev/signoff). Stops with Ctrl-C or SIGTERM.
# Needs root and Debian's containerd, runc, containernetworking-plugins,
# busybox-static and umoci (installed here if missing). See README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kubeconfig=$(realpath "${1:?usage: start.sh KUBECONFIG NODE_DIR}")
dir=$(realpath -m "${2:?usage: start.sh KUBECONFIG NODE_DIR}")
shift 2
(($# % 2 == 0)) || { echo "start.sh: images come in pairs: IMAGE.oci.tar NAME" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "start.sh: kubelet and containerd need root" >&2; exit 1; }
"$here/deps.sh"
bin=$("$here/build.sh")
mkdir -p "$dir/cni" "$dir/img"
sed "s#NODE_DIR#$dir#g" "$here/containerd.toml" > "$dir/containerd.toml"
sed "s#NODE_DIR#$dir#g" "$here/kubelet.yaml" > "$dir/kubelet.yaml"
sed "s#KUBECONFIG#$kubeconfig#g" "$here/kube-proxy.yaml" > "$dir/kube-proxy.yaml"
cp "$here/10-bridge.conflist" "$dir/cni/"

# The pod sandbox ("pause") image: busybox sleeping, as an OCI image.
if [[ ! -f "$dir/sandbox.tar" ]]; then
  (cd "$dir/img" && rm -rf sandbox bundle && umoci init --layout sandbox && umoci new --image sandbox:1 \
    && umoci unpack --rootless --image sandbox:1 bundle \
    && mkdir -p bundle/rootfs/bin && cp "$(command -v busybox)" bundle/rootfs/bin/busybox \
    && ln -sf busybox bundle/rootfs/bin/sleep && ln -sf busybox bundle/rootfs/bin/sh \
    && umoci repack --image sandbox:1 bundle \
    && umoci config --image sandbox:1 --config.entrypoint /bin/sleep --config.cmd 2147483647 \
    && tar -C sandbox -cf ../sandbox.tar .) >&2
fi

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 & pids+=($!)
for _ in $(seq 1 50); do [[ -S "$dir/containerd.sock" ]] && break; sleep 0.2; done
ctr -a "$dir/containerd.sock" -n k8s.io images import --base-name signoff.dev/sandbox "$dir/sandbox.tar" >&2
while (($#)); do
  ctr -a "$dir/containerd.sock" -n k8s.io images import --base-name "$2" "$1" >&2
  shift 2
done
node_ip=()
[[ -n "${NODE_IP:-}" ]] && node_ip=(--node-ip "$NODE_IP")
"$bin/kubelet" --config "$dir/kubelet.yaml" --kubeconfig "$kubeconfig" --hostname-override signoff-node "${node_ip[@]}" \
  --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki" >"$dir/kubelet.log" 2>&1 & pids+=($!)
"$bin/kube-scheduler" --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" \
  --authorization-kubeconfig "$kubeconfig" --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false \
  >"$dir/scheduler.log" 2>&1 & pids+=($!)
"$bin/kube-proxy" --config "$dir/kube-proxy.yaml" >"$dir/kube-proxy.log" 2>&1 & pids+=($!)
# The local control plane runs without the node lifecycle controller: lift the
# not-ready taint once the kubelet reports Ready.
for _ in $(seq 1 60); do
  if kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready node/signoff-node --timeout=2s >/dev/null 2>&1; then
    kubectl --kubeconfig "$kubeconfig" taint node signoff-node node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
    echo "start.sh: node signoff-node Ready (logs in $dir)" >&2
    break
  fi
  sleep 1
done
wait
