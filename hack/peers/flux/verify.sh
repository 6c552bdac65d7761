#!/usr/bin/env bash
# Runs Flux's source-controller and kustomize-controller out of cluster against a
# throwaway local control plane (etcd + kube-apiserver from hack/controlplane), serves a
# local git repository over smart HTTP (git-http.py), and checks that a GitRepository +
# Kustomization apply its ConfigMap, then that a second commit reaches the cluster.
# Prints the controllers' startup times, commit -> applied times and memory. Stops
# everything it started and removes its directory on exit (KEEP=1 keeps the directory,
# with the logs, for a look afterwards).
#
# Knobs: FLUX_GIT_INTERVAL (GitRepository spec.interval, default 10s),
# FLUX_KS_INTERVAL (Kustomization spec.interval, 1m), FLUX_RETRY_INTERVAL
# (Kustomization spec.retryInterval, 10s), SC_EXTRA_ARGS / KC_EXTRA_ARGS (flags added to
# source-controller's / kustomize-controller's command line, word-split).
#
# See README.md for the same steps by hand.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
git_interval=${FLUX_GIT_INTERVAL:-10s}
ks_interval=${FLUX_KS_INTERVAL:-1m}
retry_interval=${FLUX_RETRY_INTERVAL:-10s}

cp_bin=$("$repo/hack/controlplane/build.sh")
flux_bin=$("$here/build.sh")
crds=$("$here/crds.sh")

work=$(mktemp -d "${TMPDIR:-/tmp}/flux-peer.XXXXXX")
pids=()
cleanup() {
  local p i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p=${pids[$i]}
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [[ "${KEEP:-}" == 1 ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
log() { echo "[$(date +%T)] $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
die() { log "$*"; KEEP=1; exit 1; }

# --- certificates and kubeconfig (as in ../kyverno/verify.sh) ----------------------
cd "$work"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=flux-peer-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >apiserver.ext
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >admin.ext
openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile admin.ext -out admin.crt 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
storage_port=$(free_port)
sc_health=$(free_port); sc_metrics=$(free_port); kc_health=$(free_port); kc_metrics=$(free_port)
cat >kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$work/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$work/admin.crt", client-key: "$work/admin.key"}
contexts:
- name: admin
  context: {cluster: local, user: admin}
current-context: admin
EOF
export KUBECONFIG=$work/kubeconfig
k() { "$cp_bin/kubectl" "$@"; }

# --- etcd + kube-apiserver (flags as in /work/shared/CONTROL-PLANE.md) --------------
log "starting etcd and kube-apiserver"
"$cp_bin/etcd" --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn \
  >etcd.log 2>&1 &
pids+=($!)
for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$etcd_port") 2>/dev/null && break; sleep 0.2; done
"$cp_bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file apiserver.crt --tls-private-key-file apiserver.key --client-ca-file ca.crt \
  --service-cluster-ip-range 10.96.0.0/16 --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file sa.pub --service-account-signing-key-file sa.key \
  --authorization-mode RBAC --disable-admission-plugins ServiceAccount --v 1 \
  >apiserver.log 2>&1 &
pids+=($!)
for i in $(seq 120); do
  [[ "$(k get --raw /readyz 2>/dev/null)" == ok ]] && break
  [[ $i == 120 ]] && die "kube-apiserver not ready after 60 s; see $work/apiserver.log"
  sleep 0.5
done
log "control plane ready: $(k version -o json | jq -r .serverVersion.gitVersion) at https://127.0.0.1:$api_port"

# --- Flux's CRDs and namespace -------------------------------------------------------
log "applying Flux's CRDs ($crds: $(cd "$crds" && echo *.yaml | wc -w) files)"
t=$(now)
k apply --server-side -f "$crds" >/dev/null
k wait --for condition=Established --timeout=60s crd --all >/dev/null
log "CRDs established after $(since "$t")s"
k create namespace flux-system >/dev/null

# --- the git repository and its server ----------------------------------------------
mkdir -p git/app storage sc-tmp kc-tmp
g() { git -C "$work/git/app" -c user.name=verify -c user.email=verify@localhost "$@"; }
manifest() { # $1: the ConfigMap's data.commit value
  cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: flux-demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: flux-verify
  namespace: flux-demo
data:
  commit: "$1"
EOF
}
g init -q -b main
manifest one >git/app/app.yaml
g add app.yaml
g commit -q -m one
python3 "$here/git-http.py" --root "$work/git" >git-http.port 2>git-http.log &
pids+=($!)
for i in $(seq 50); do [[ -s git-http.port ]] && break; [[ $i == 50 ]] && die "git-http.py did not start"; sleep 0.1; done
git_port=$(head -1 git-http.port)
git_url="http://127.0.0.1:$git_port/app"
git ls-remote "$git_url" >/dev/null || die "git ls-remote $git_url failed; see $work/git-http.log"
log "git repository served at $git_url (commit $(g rev-parse --short HEAD))"

# --- the two controllers -------------------------------------------------------------
# Out of cluster: no --kubeconfig flag (Flux parses pflag only; controller-runtime
# reads KUBECONFIG); every listener on 127.0.0.1; leader election off; RUNTIME_NAMESPACE
# is where in-cluster Flux runs (only used with --watch-all-namespaces=false and for
# SOPS settings); TMPDIR keeps their scratch dirs (and kustomize-controller's purge of
# stale ones at startup) inside $work.
sc_args=(
  --storage-path "$work/storage"
  --storage-addr "127.0.0.1:$storage_port" --storage-adv-addr "127.0.0.1:$storage_port"
  --metrics-addr "127.0.0.1:$sc_metrics" --health-addr "127.0.0.1:$sc_health"
  --enable-leader-election=false --watch-all-namespaces=true
  --log-encoding=console --log-level=info
)
kc_args=(
  --metrics-addr "127.0.0.1:$kc_metrics" --health-addr "127.0.0.1:$kc_health"
  --enable-leader-election=false --watch-all-namespaces=true
  --no-remote-bases=true
  --log-encoding=console --log-level=info
)
# shellcheck disable=SC2206
sc_args+=(${SC_EXTRA_ARGS:-}); kc_args+=(${KC_EXTRA_ARGS:-})
export RUNTIME_NAMESPACE=flux-system
log "starting source-controller: ${sc_args[*]}"
log "starting kustomize-controller: ${kc_args[*]}"
t0=$(now)
TMPDIR="$work/sc-tmp" "$flux_bin/source-controller" "${sc_args[@]}" >source-controller.log 2>&1 &
sc_pid=$!
pids+=("$sc_pid")
TMPDIR="$work/kc-tmp" "$flux_bin/kustomize-controller" "${kc_args[@]}" >kustomize-controller.log 2>&1 &
kc_pid=$!
pids+=("$kc_pid")
wait_ready() { # $1 name, $2 pid, $3 health port
  for i in $(seq 600); do
    kill -0 "$2" 2>/dev/null || { log "$1 exited; last lines of its log:"; tail -20 "$1.log" >&2; die "$1 failed"; }
    curl -sf "http://127.0.0.1:$3/readyz" >/dev/null 2>&1 && return 0
    [[ $i == 600 ]] && { tail -20 "$1.log" >&2; die "$1 not ready after 120 s"; }
    sleep 0.2
  done
}
wait_ready source-controller "$sc_pid" "$sc_health"; t_sc=$(since "$t0")
for i in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$storage_port/" && break
  [[ $i == 100 ]] && die "source-controller's artifact server not listening on 127.0.0.1:$storage_port"
  sleep 0.1
done
t_storage=$(since "$t0")
wait_ready kustomize-controller "$kc_pid" "$kc_health"; t_kc=$(since "$t0")
log "ready after: source-controller ${t_sc}s (artifact server ${t_storage}s), kustomize-controller ${t_kc}s"

# --- GitRepository + Kustomization ---------------------------------------------------
cm_commit() { k -n flux-demo get configmap flux-verify -o jsonpath='{.data.commit}' 2>/dev/null || true; }
wait_commit() { # $1 expected data.commit, $2 timeout in seconds
  local i n=$(( $2 * 5 ))
  for ((i = 1; i <= n; i++)); do
    [[ "$(cm_commit)" == "$1" ]] && return 0
    sleep 0.2
  done
  k -n flux-system get gitrepository,kustomization -o wide >&2 || true
  tail -20 source-controller.log kustomize-controller.log >&2
  die "ConfigMap flux-demo/flux-verify never had data.commit=$1 (${2}s)"
}
t1=$(now)
k apply -f - >&2 <<EOF
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: app
  namespace: flux-system
spec:
  interval: $git_interval
  url: $git_url
  ref:
    branch: main
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: app
  namespace: flux-system
spec:
  interval: $ks_interval
  retryInterval: $retry_interval
  path: ./
  prune: false
  sourceRef:
    kind: GitRepository
    name: app
EOF
k -n flux-system wait --for condition=Ready --timeout=120s gitrepository/app >/dev/null ||
  { tail -20 source-controller.log >&2; die "GitRepository not Ready"; }
t_source=$(since "$t1")
wait_commit one 120
t_applied=$(since "$t1")
k -n flux-system wait --for condition=Ready --timeout=60s kustomization/app >/dev/null ||
  { tail -20 kustomize-controller.log >&2; die "Kustomization not Ready"; }
t_ks_ready=$(since "$t1")
log "first sync: GitRepository Ready ${t_source}s, ConfigMap applied ${t_applied}s, Kustomization Ready ${t_ks_ready}s after kubectl apply"
k -n flux-system get gitrepository/app kustomization/app >&2

# --- a second commit: poll latency (GitRepository interval $git_interval) ----------
manifest two >git/app/app.yaml
g commit -q -a -m two
t2=$(now)
rev=$(g rev-parse HEAD)
wait_commit two 180
t_commit=$(since "$t2")
for i in $(seq 300); do
  [[ "$(k -n flux-system get kustomization app -o jsonpath='{.status.lastAppliedRevision}')" == *"$rev" ]] &&
    [[ "$(k -n flux-system get kustomization app -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] && break
  [[ $i == 300 ]] && die "Kustomization did not report revision $rev as applied and Ready"
  sleep 0.2
done
t_commit_ready=$(since "$t2")
log "second commit ${rev:0:7}: ConfigMap updated ${t_commit}s after the commit, Kustomization Ready at it ${t_commit_ready}s"

# --- a third commit, with a reconcile request instead of waiting for the poll -------
# What `flux reconcile source git app` does: set reconcile.fluxcd.io/requestedAt. The
# Kustomization follows the new artifact through its watch on the GitRepository.
manifest three >git/app/app.yaml
g commit -q -a -m three
t3=$(now)
k -n flux-system annotate --overwrite gitrepository/app "reconcile.fluxcd.io/requestedAt=$(date +%s.%N)" >/dev/null
wait_commit three 60
t_request=$(since "$t3")
log "third commit $(g rev-parse --short HEAD) + reconcile request: ConfigMap updated ${t_request}s after the commit"

echo "--- flux source-controller $(awk '$1 == "github.com/fluxcd/source-controller" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod") (pid $sc_pid), kustomize-controller $(awk '$1 == "github.com/fluxcd/kustomize-controller" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod") (pid $kc_pid)"
echo "startup: source-controller ready ${t_sc}s, kustomize-controller ready ${t_kc}s after exec"
echo "first sync (GitRepository interval $git_interval, Kustomization interval $ks_interval, retryInterval $retry_interval): source Ready ${t_source}s, ConfigMap applied ${t_applied}s, Kustomization Ready ${t_ks_ready}s after kubectl apply"
echo "commit -> applied: ${t_commit}s by polling (Kustomization Ready at the new revision ${t_commit_ready}s); ${t_request}s with a reconcile request"
for p in source-controller:$sc_pid kustomize-controller:$kc_pid; do
  echo "${p%%:*}: $(grep -E '^(VmHWM|VmRSS)' "/proc/${p#*:}/status" | tr -s ' \t' ' ' | paste -sd, -)"
done
echo "OK"
