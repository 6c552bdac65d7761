#!/usr/bin/env bash
# Runs Argo CD's application controller and repo server (build.sh, the version in go.mod)
# out of cluster against a throwaway local control plane (etcd + kube-apiserver from
# hack/controlplane), with Redis from the Debian package and a local git repository
# served over smart HTTP (../flux/git-http.py). Then:
#   1. creates an Application with automated sync for a path holding a Namespace and a
#      ConfigMap, and waits until the ConfigMap exists and the Application is Synced and
#      Healthy;
#   2. turns automated sync off, commits a change, and checks that the
#      `argocd.argoproj.io/refresh: normal` annotation alone only makes the Application
#      OutOfSync: the ConfigMap keeps its old data;
#   3. times a sync operation on that one resource, as a merge patch of the
#      Application's `operation` field (what signoff would write), until the ConfigMap
#      carries the new data;
#   4. deletes the ConfigMap in the cluster and times the same operation until it is back.
# Prints the timings. Stops everything it started and removes its directory on exit
# (KEEP=1 keeps the directory, with the logs).
#
# Knobs: ARGOCD_DEST=in-cluster (default: the built-in https://kubernetes.default.svc
# destination, with ARGOCD_FAKE_IN_CLUSTER=true so the controller builds its client
# from KUBECONFIG) or ARGOCD_DEST=secret (a cluster Secret for https://127.0.0.1:PORT
# with the admin client certificate); ARGOCD_NETNS=auto|0 (auto: run in a private
# network namespace, see below); ARGOCD_OBSERVE (seconds to watch that a refresh does
# not apply, default 10); CTRL_EXTRA_ARGS / RS_EXTRA_ARGS (added to the command lines).
#
# The application controller listens for metrics on 0.0.0.0:--metrics-port (hard-coded
# address, controller/appcontroller.go). So that nothing listens beyond loopback, the
# script re-runs itself under `unshare -n` (a network namespace holding only `lo`) when
# it can; ARGOCD_NETNS=0 runs it in the host namespace instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
observe=${ARGOCD_OBSERVE:-10}
dest_mode=${ARGOCD_DEST:-in-cluster}
[[ "$dest_mode" == in-cluster || "$dest_mode" == secret ]] ||
  { echo "ARGOCD_DEST=$dest_mode: expected in-cluster or secret" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

if [[ -z "${_ARGOCD_VERIFY_INNER:-}" ]]; then
  # Everything that may need the network (builds, module downloads, apt) happens here,
  # before the network namespace.
  "$repo/hack/controlplane/build.sh" >/dev/null
  "$here/build.sh" >/dev/null
  version=$(awk '$1 == "github.com/argoproj/argo-cd/v3" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
  ARGOCD_VERSION=$version "$here/crds.sh" >/dev/null
  if ! command -v redis-server >/dev/null; then
    log "redis-server not found: apt-get install -y redis-server"
    if [[ $(id -u) == 0 ]]; then apt-get install -y redis-server >&2
    else sudo apt-get install -y redis-server >&2; fi
  fi
  export _ARGOCD_VERIFY_INNER=1
  if [[ "${ARGOCD_NETNS:-auto}" != 0 ]]; then
    if unshare -n true 2>/dev/null; then
      exec unshare -n -- "$0" "$@"
    elif unshare -rn true 2>/dev/null; then
      exec unshare -rn -- "$0" "$@"
    fi
    log "unshare -n not permitted: running in the host network namespace (the controller's metrics port listens on 0.0.0.0)"
  fi
  exec "$0" "$@"
fi

netns=host
if [[ "$(readlink /proc/self/ns/net)" != "$(readlink /proc/1/ns/net 2>/dev/null || true)" ]]; then
  netns=private
  ip link set lo up 2>/dev/null || python3 - <<'EOF' || true
import fcntl, socket, struct
s = socket.socket()
ifr = struct.pack("16sH", b"lo", 0)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, ifr))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))
EOF
fi

cp_bin=$("$repo/hack/controlplane/build.sh" 2>/dev/null)
argocd_bin=$("$here/build.sh" 2>/dev/null)
version=$(awk '$1 == "github.com/argoproj/argo-cd/v3" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
crds=$(ARGOCD_VERSION=$version "$here/crds.sh" 2>/dev/null)

work=$(mktemp -d "${TMPDIR:-/tmp}/argocd-peer.XXXXXX")
pids=()
names=()
cleanup() {
  local p i rc=$?
  if [[ $rc != 0 ]]; then
    for i in "${names[@]}"; do
      [[ -f "$work/$i.log" ]] || continue
      echo "--- last lines of $i.log" >&2
      tail -15 "$work/$i.log" >&2
    done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p=${pids[$i]}
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [[ "${KEEP:-}" == 1 ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
started() { pids+=("$1"); names+=("$2"); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
die() { log "$*"; KEEP=1; exit 1; }
wait_port() { # $1 port, $2 pid, $3 name
  for i in $(seq 300); do
    kill -0 "$2" 2>/dev/null || die "$3 exited"
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    [[ $i == 300 ]] && die "$3 not listening on 127.0.0.1:$1 after 60 s"
    sleep 0.2
  done
}

# --- certificates and kubeconfig (as in ../flux/verify.sh) ---------------------------
cd "$work"
log "work directory $work (network namespace: $netns)"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=argocd-peer-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >apiserver.ext
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >admin.ext
openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile admin.ext -out admin.crt 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
redis_port=$(free_port); rs_port=$(free_port); rs_metrics=$(free_port); ctrl_metrics=$(free_port)
api_url="https://127.0.0.1:$api_port"
cat >kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$api_url", certificate-authority: "$work/ca.crt"}
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

# --- etcd + kube-apiserver -----------------------------------------------------------
# --advertise-address: in the network namespace there is no default route to pick an
# address from; no endpoint reconciler: nothing needs the `kubernetes` Service's
# endpoints, and a loopback address would not be valid in them.
log "starting etcd and kube-apiserver"
"$cp_bin/etcd" --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn \
  >etcd.log 2>&1 &
started $! etcd
wait_port "$etcd_port" "$!" etcd
"$cp_bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --endpoint-reconciler-type none \
  --secure-port "$api_port" \
  --tls-cert-file apiserver.crt --tls-private-key-file apiserver.key --client-ca-file ca.crt \
  --service-cluster-ip-range 10.96.0.0/16 --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file sa.pub --service-account-signing-key-file sa.key \
  --authorization-mode RBAC --disable-admission-plugins ServiceAccount --v 1 \
  >apiserver.log 2>&1 &
started $! apiserver
api_pid=$!
for i in $(seq 120); do
  kill -0 "$api_pid" 2>/dev/null || die "kube-apiserver exited"
  [[ "$(k get --raw /readyz 2>/dev/null)" == ok ]] && break
  [[ $i == 120 ]] && die "kube-apiserver not ready after 60 s"
  sleep 0.5
done
log "control plane ready: $(k version -o json | jq -r .serverVersion.gitVersion) at $api_url"

# --- Redis: loopback, no persistence --------------------------------------------------
mkdir -p redis
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  --dir "$work/redis" --daemonize no --protected-mode yes --logfile '' >redis.log 2>&1 &
started $! redis
wait_port "$redis_port" "$!" redis-server
log "redis $(redis-server --version | sed -E 's/.* v=([^ ]+).*/\1/') on 127.0.0.1:$redis_port"

# --- CRDs, namespace, settings, project ----------------------------------------------
log "applying Argo CD $version CRDs from $crds"
t=$(now)
k apply --server-side -f "$crds" >/dev/null
# (retried: right after the apply kubectl wait can fail on a CRD without
# status.conditions yet, "accessor error: <nil> is of the type <nil>")
for i in $(seq 30); do
  k wait --for condition=Established --timeout=60s crd --all >/dev/null 2>&1 && break
  [[ $i == 30 ]] && die "CRDs not Established"
  sleep 0.5
done
log "CRDs established after $(since "$t")s"
k create namespace argocd >/dev/null
# argocd-cm is required (without it the controller exits: `error loading cache
# settings: configmap "argocd-cm" not found`) and must carry
# app.kubernetes.io/part-of=argocd: the settings manager's ConfigMap informer only sees
# labelled ones. argocd-secret is not needed by the controller (a run without it synced
# the same); it is here as an install has it, with the server.secretkey the API server
# would want. argocd-rbac-cm is only read by the API server.
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels: {app.kubernetes.io/name: argocd-cm, app.kubernetes.io/part-of: argocd}
data: {}
---
apiVersion: v1
kind: Secret
metadata:
  name: argocd-secret
  namespace: argocd
  labels: {app.kubernetes.io/name: argocd-secret, app.kubernetes.io/part-of: argocd}
stringData:
  server.secretkey: "$(openssl rand -base64 32)"
---
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: default
  namespace: argocd
spec:
  sourceRepos: ["*"]
  destinations: [{server: "*", namespace: "*"}]
  clusterResourceWhitelist: [{group: "*", kind: "*"}]
EOF
if [[ "$dest_mode" == secret ]]; then
  dest_server=$api_url
  config=$(jq -cn --arg ca "$(base64 -w0 ca.crt)" --arg cert "$(base64 -w0 admin.crt)" --arg key "$(base64 -w0 admin.key)" \
    '{tlsClientConfig: {insecure: false, caData: $ca, certData: $cert, keyData: $key}}')
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: cluster-local
  namespace: argocd
  labels: {argocd.argoproj.io/secret-type: cluster}
stringData:
  name: local
  server: "$api_url"
  config: '$config'
EOF
else
  dest_server=https://kubernetes.default.svc
fi

# --- the git repository and its server -----------------------------------------------
mkdir -p git/app rs-tmp ctrl-tmp
g() { git -C "$work/git/app" -c user.name=verify -c user.email=verify@localhost "$@"; }
manifest() { # $1: the ConfigMap's data.commit value
  cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: argocd-demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-verify
  namespace: argocd-demo
data:
  commit: "$1"
EOF
}
g init -q -b main
mkdir -p git/app/deploy
manifest one >git/app/deploy/app.yaml
g add deploy/app.yaml
g commit -q -m one
python3 "$repo/hack/peers/flux/git-http.py" --root "$work/git" >git-http.port 2>git-http.log &
started $! git-http
for i in $(seq 50); do [[ -s git-http.port ]] && break; [[ $i == 50 ]] && die "git-http.py did not start"; sleep 0.1; done
git_url="http://127.0.0.1:$(head -1 git-http.port)/app"
git ls-remote "$git_url" >/dev/null || die "git ls-remote $git_url failed"
log "git repository served at $git_url (commit $(g rev-parse --short HEAD))"

# --- repo server and application controller ------------------------------------------
# Repo server: gRPC without TLS on 127.0.0.1; GPG off (else it initialises a keyring
# from /app/config/gpg); askpass socket and clones (TMPDIR/_argocd-repo) inside $work.
rs_args=(
  --address 127.0.0.1 --port "$rs_port" --disable-tls
  --metrics-address 127.0.0.1 --metrics-port "$rs_metrics"
  --redis "127.0.0.1:$redis_port"
  --logformat text --loglevel info
)
# Controller: namespace from --namespace (no env for it; otherwise the kubeconfig
# context's namespace); KUBECONFIG for its own client; plaintext to the repo server.
ctrl_args=(
  --namespace argocd
  --repo-server "127.0.0.1:$rs_port" --repo-server-plaintext
  --redis "127.0.0.1:$redis_port"
  --metrics-port "$ctrl_metrics"
  --logformat text --loglevel info
)
# shellcheck disable=SC2206
rs_args+=(${RS_EXTRA_ARGS:-}); ctrl_args+=(${CTRL_EXTRA_ARGS:-})
log "starting argocd-repo-server ${rs_args[*]}"
t0=$(now)
ARGOCD_GPG_ENABLED=false ARGOCD_ASK_PASS_SOCK="$work/askpass.sock" TMPDIR="$work/rs-tmp" \
  "$argocd_bin/argocd-repo-server" "${rs_args[@]}" >repo-server.log 2>&1 &
rs_pid=$!
started $rs_pid repo-server
log "starting argocd-application-controller ${ctrl_args[*]}"
ctrl_env=(TMPDIR="$work/ctrl-tmp")
[[ "$dest_mode" == in-cluster ]] && ctrl_env+=(ARGOCD_FAKE_IN_CLUSTER=true)
env "${ctrl_env[@]}" "$argocd_bin/argocd-application-controller" "${ctrl_args[@]}" >application-controller.log 2>&1 &
ctrl_pid=$!
started $ctrl_pid application-controller
wait_ready() { # $1 name, $2 pid, $3 port
  for i in $(seq 600); do
    kill -0 "$2" 2>/dev/null || die "$1 exited"
    curl -sf "http://127.0.0.1:$3/healthz" >/dev/null 2>&1 && return 0
    [[ $i == 600 ]] && die "$1 not healthy after 120 s"
    sleep 0.2
  done
}
wait_ready repo-server "$rs_pid" "$rs_metrics"; t_rs=$(since "$t0")
wait_ready application-controller "$ctrl_pid" "$ctrl_metrics"; t_ctrl=$(since "$t0")
log "healthy after: repo-server ${t_rs}s, application-controller ${t_ctrl}s"

# --- helpers ---------------------------------------------------------------------------
app() { k -n argocd get application demo -o json; }
cm_commit() { k -n argocd-demo get configmap argocd-verify -o jsonpath='{.data.commit}' 2>/dev/null || true; }
show_app() {
  app | jq -r '"sync=\(.status.sync.status) revision=\(.status.sync.revision // "-" | .[0:7]) health=\(.status.health.status) operation=\(.status.operationState.phase // "-"): \(.status.operationState.message // "")", (.status.conditions // [] | .[] | "condition \(.type): \(.message)")' >&2 || true
}
wait_for() { # $1 description, $2 timeout seconds, $3... command that succeeds when done
  local what=$1 n=$(( $2 * 10 )) i
  shift 2
  for ((i = 1; i <= n; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  show_app
  die "timed out after ${n}ds waiting for $what"
}
app_is() { # $1 jq expression that must be true
  [[ "$(app 2>/dev/null | jq -r "$1" 2>/dev/null)" == true ]]
}

# --- 1. Application with automated sync -------------------------------------------------
t1=$(now)
k apply -f - >/dev/null <<EOF
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: demo
  namespace: argocd
spec:
  project: default
  source:
    repoURL: $git_url
    targetRevision: main
    path: deploy
  destination:
    server: $dest_server
    namespace: argocd-demo
  syncPolicy:
    automated: {prune: false, selfHeal: false}
EOF
wait_for "ConfigMap argocd-demo/argocd-verify with commit=one" 180 bash -c "[[ \$('$cp_bin/kubectl' -n argocd-demo get configmap argocd-verify -o jsonpath='{.data.commit}' 2>/dev/null) == one ]]"
t_applied=$(since "$t1")
wait_for "Application Synced and Healthy" 120 app_is '.status.sync.status == "Synced" and .status.health.status == "Healthy" and .status.operationState.phase == "Succeeded"'
t_synced=$(since "$t1")
log "automated sync: ConfigMap applied ${t_applied}s, Application Synced+Healthy ${t_synced}s after kubectl apply"
show_app

# --- 2. automated sync off; a commit; refresh=normal only ------------------------------
k -n argocd patch application demo --type merge -p '{"spec":{"syncPolicy":null}}' >/dev/null
wait_for "syncPolicy removed" 10 app_is '.spec.syncPolicy == null'
manifest two >git/app/deploy/app.yaml
g commit -q -a -m two
rev2=$(g rev-parse HEAD)
t2=$(now)
k -n argocd annotate application demo argocd.argoproj.io/refresh=normal --overwrite >/dev/null
wait_for "OutOfSync at ${rev2:0:7} after refresh=normal" 120 app_is ".status.sync.status == \"OutOfSync\" and .status.sync.revision == \"$rev2\""
t_refresh=$(since "$t2")
wait_for "refresh annotation removed by the controller" 30 app_is '(.metadata.annotations // {})["argocd.argoproj.io/refresh"] == null'
log "refresh=normal: OutOfSync at ${rev2:0:7} after ${t_refresh}s; watching ${observe}s that nothing is applied"
sleep "$observe"
[[ "$(cm_commit)" == one ]] || die "the ConfigMap changed to '$(cm_commit)' without a sync operation"
app_is '.status.sync.status == "OutOfSync" and .status.operationState.syncResult.revision != "'"$rev2"'"' ||
  { show_app; die "Application not OutOfSync at the old operation's revision"; }
refresh_ok="ConfigMap still commit=one ${observe}s after the refresh, Application OutOfSync"
log "$refresh_ok"
show_app

# --- 3. sync operation on the one resource --------------------------------------------
op='{"operation":{"initiatedBy":{"username":"signoff"},"sync":{"resources":[{"group":"","kind":"ConfigMap","name":"argocd-verify","namespace":"argocd-demo"}]}}}'
t3=$(now)
k -n argocd patch application demo --type merge -p "$op" >/dev/null
wait_for "ConfigMap commit=two after the sync operation" 120 bash -c "[[ \$('$cp_bin/kubectl' -n argocd-demo get configmap argocd-verify -o jsonpath='{.data.commit}' 2>/dev/null) == two ]]"
t_op_applied=$(since "$t3")
wait_for "operation Succeeded and Synced" 120 app_is ".status.operationState.phase == \"Succeeded\" and .status.operationState.syncResult.revision == \"$rev2\" and .status.sync.status == \"Synced\""
t_op_synced=$(since "$t3")
log "sync operation (commit ${rev2:0:7}): applied ${t_op_applied}s, operation Succeeded + Synced ${t_op_synced}s after the patch"
show_app

# --- 4. delete in the cluster, then the same operation ---------------------------------
t4=$(now)
k -n argocd-demo delete configmap argocd-verify --wait=true >/dev/null
wait_for "OutOfSync after the delete" 60 app_is '.status.sync.status == "OutOfSync"'
t_del_oos=$(since "$t4")
[[ -z "$(cm_commit)" ]] || die "the ConfigMap came back without a sync operation"
t5=$(now)
k -n argocd patch application demo --type merge -p "$op" >/dev/null
wait_for "ConfigMap recreated by the sync operation" 120 bash -c "[[ \$('$cp_bin/kubectl' -n argocd-demo get configmap argocd-verify -o jsonpath='{.data.commit}' 2>/dev/null) == two ]]"
t_re_applied=$(since "$t5")
wait_for "operation Succeeded and Synced" 120 app_is '.status.operationState.phase == "Succeeded" and .status.sync.status == "Synced"'
t_re_synced=$(since "$t5")
log "after delete: OutOfSync ${t_del_oos}s after the delete; recreated ${t_re_applied}s, Synced ${t_re_synced}s after the patch"

echo "--- argo cd $version: application-controller (pid $ctrl_pid), repo-server (pid $rs_pid); destination $dest_server ($dest_mode); network namespace $netns"
echo "startup: repo-server healthy ${t_rs}s, application-controller healthy ${t_ctrl}s after exec"
echo "automated sync: ConfigMap applied ${t_applied}s, Synced+Healthy ${t_synced}s after the Application was created"
echo "refresh=normal after commit ${rev2:0:7}: OutOfSync after ${t_refresh}s; $refresh_ok (not applied)"
echo "operation patch (sync.resources = the ConfigMap), repo changed: applied ${t_op_applied}s, Succeeded+Synced ${t_op_synced}s"
echo "operation patch, ConfigMap deleted in the cluster (OutOfSync ${t_del_oos}s after the delete): recreated ${t_re_applied}s, Succeeded+Synced ${t_re_synced}s"
for p in application-controller:$ctrl_pid repo-server:$rs_pid; do
  echo "${p%%:*}: $(grep -E '^(VmHWM|VmRSS)' "/proc/${p#*:}/status" | tr -s ' \t' ' ' | paste -sd, -)"
done
echo "OK"
