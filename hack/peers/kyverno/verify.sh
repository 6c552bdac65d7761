#!/usr/bin/env bash
# Runs Kyverno's admission controller out of cluster against a throwaway local control
# plane (etcd + kube-apiserver from hack/controlplane) and checks that policy.yaml
# denies a matching Secret and admits a non-matching one. Prints Kyverno's startup
# time and memory. Stops everything it started and removes its directory on exit
# (KEEP=1 keeps the directory, with kyverno.log, for a look afterwards;
# KYVERNO_EXTRA_ARGS adds flags to Kyverno's command line).
#
# See README.md for the same steps by hand.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)

cp_bin=$("$repo/hack/controlplane/build.sh")
kyv_bin=$("$here/build.sh")
kyv_src=$(cd "$here" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' github.com/kyverno/kyverno)
[[ -d "$kyv_src/config/crds" ]] || { echo "Kyverno's module source not found ($kyv_src)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kyverno-peer.XXXXXX")
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

# --- certificates and kubeconfig ---------------------------------------------------
cd "$work"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=kyverno-peer-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >apiserver.ext
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >admin.ext
openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile admin.ext -out admin.crt 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
webhook_port=$(free_port); metrics_port=$(free_port)
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
  [[ $i == 120 ]] && { log "kube-apiserver not ready after 60 s; see $work/apiserver.log"; KEEP=1; exit 1; }
  sleep 0.5
done
log "control plane ready: $(k version -o json | jq -r .serverVersion.gitVersion) at https://127.0.0.1:$api_port"

# --- Kyverno's CRDs, namespace and ConfigMaps -------------------------------------
log "applying Kyverno's CRDs (config/crds) and its Namespace + ConfigMaps (config/install-latest-testing.yaml)"
k apply --server-side -f "$kyv_src/config/crds/kyverno" -f "$kyv_src/config/crds/policies.kyverno.io" \
  -f "$kyv_src/config/crds/reports" -f "$kyv_src/config/crds/policyreport" >/dev/null
k wait --for condition=Established --timeout=60s crd --all >/dev/null
awk '/^---$/ { if (keep) printf "%s", doc; doc = "---\n"; keep = 0; next }
     { doc = doc $0 "\n" }
     /^kind: (Namespace|ConfigMap)$/ { keep = 1 }
     END { if (keep) printf "%s", doc }' "$kyv_src/config/install-latest-testing.yaml" >kyverno-config.yaml
k apply -f kyverno-config.yaml

# --- Kyverno ---------------------------------------------------------------------
export KYVERNO_NAMESPACE=kyverno KYVERNO_SERVICEACCOUNT_NAME=kyverno-admission-controller \
  KYVERNO_ROLE_NAME=kyverno:admission-controller KYVERNO_DEPLOYMENT=kyverno-admission-controller \
  KYVERNO_POD_NAME=kyverno-local KYVERNO_SVC=kyverno-svc INIT_CONFIG=kyverno METRICS_CONFIG=kyverno-metrics
kyverno_args=(
  --kubeconfig "$work/kubeconfig"
  --serverIP "127.0.0.1:$webhook_port"
  --webhookServerHost 127.0.0.1 --webhookServerPort "$webhook_port"
  --caSecretName kyverno-svc.kyverno.svc.kyverno-tls-ca
  --tlsSecretName kyverno-svc.kyverno.svc.kyverno-tls-pair
  --disableMetrics --metricsHost 127.0.0.1 --metricsPort "$metrics_port"
  --controllerRuntimeMetricsAddress 0
  --admissionReports=false
  --generateValidatingAdmissionPolicy=false --generateMutatingAdmissionPolicy=false
  --omitEvents=PolicyApplied,PolicySkipped
  --loggingFormat=text --disableLogColor --v=2
)
# Extra flags for experiments, e.g. KYVERNO_EXTRA_ARGS="--tlsKeyAlgorithm=ECDSA" (word-split).
# shellcheck disable=SC2206
kyverno_args+=(${KYVERNO_EXTRA_ARGS:-})
log "starting kyverno: $kyv_bin/kyverno ${kyverno_args[*]}"
t0=$(now)
"$kyv_bin/kyverno" "${kyverno_args[@]}" >kyverno.log 2>&1 &
kpid=$!
pids+=("$kpid")
for i in $(seq 600); do
  kill -0 "$kpid" 2>/dev/null || { log "kyverno exited; last lines of its log:"; tail -20 kyverno.log >&2; KEEP=1; exit 1; }
  curl -skf "https://127.0.0.1:$webhook_port/health/readiness" >/dev/null 2>&1 && break
  [[ $i == 600 ]] && { log "kyverno not ready after 120 s"; tail -20 kyverno.log >&2; KEEP=1; exit 1; }
  sleep 0.2
done
t_serving=$(since "$t0")
for i in $(seq 600); do
  k get validatingwebhookconfiguration kyverno-resource-validating-webhook-cfg >/dev/null 2>&1 && break
  [[ $i == 600 ]] && { log "kyverno registered no resource webhook after 120 s"; tail -20 kyverno.log >&2; KEEP=1; exit 1; }
  sleep 0.2
done
t_registered=$(since "$t0")
log "kyverno (pid $kpid) serving /health/readiness after ${t_serving}s, resource webhook registered after ${t_registered}s"

# --- policy + checks -------------------------------------------------------------
t1=$(now)
k apply -f "$here/policy.yaml"
k wait --for condition=Ready --timeout=120s clusterpolicy/bench-guarded-secrets >/dev/null
t_policy=$(since "$t1")
log "policy Ready after ${t_policy}s; webhook rules:"
k get validatingwebhookconfiguration kyverno-resource-validating-webhook-cfg -o json |
  jq -c '.webhooks[] | {name, url: .clientConfig.url, rules: [.rules[] | {resources, operations}]}' >&2

k create namespace bench >/dev/null
fail=0
echo "--- matching Secret (guarded, no team label): expect denied"
if out=$(k -n bench create secret generic guarded-no-team --from-literal=k=v --dry-run=client -o yaml |
  k label --local -f - bench.signoff.dev/guarded=true -o yaml | k create -f - 2>&1); then
  echo "$out"; echo "UNEXPECTED: admitted"; fail=1
else
  echo "$out"
fi
echo "--- Secret without the guarded label: expect admitted"
k -n bench create secret generic plain --from-literal=k=v || fail=1
echo "--- matching Secret with a team label: expect admitted"
k -n bench create secret generic guarded-with-team --from-literal=k=v --dry-run=client -o yaml |
  k label --local -f - bench.signoff.dev/guarded=true team=payments -o yaml | k create -f - || fail=1

echo "--- kyverno $(awk '$1 == "github.com/kyverno/kyverno" { print $2 }' "$here/go.mod") (pid $kpid)"
echo "startup: serving after ${t_serving}s, resource webhook registered after ${t_registered}s; policy Ready ${t_policy}s after apply"
grep -E '^(VmRSS|VmHWM|Threads)' "/proc/$kpid/status"
[[ $fail == 0 ]] && echo "OK" || { echo "FAILED"; exit 1; }
