#!/usr/bin/env bash
# Runs the Dex from build.sh on loopback (HTTPS with a throwaway CA, memory storage,
# two static password users) and checks what an OIDC client of it gets: the discovery
# document (PKCE S256), the claims of ID tokens from the password grant, refusals of an
# unknown user and a wrong password, and an authorization-code flow with PKCE through
# the login form (curl only; nothing listens on the redirect URI). Prints the claims.
# KEEP=1 keeps the directory (config, CA, log).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dex="$("$here/build.sh")/dex"
dir=$(mktemp -d /tmp/signoff-dex.XXXXXX)
pid=
cleanup() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; fi
  if [[ -n "${KEEP:-}" ]]; then echo "kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
cd "$dir"
fail() { echo "FAIL: $*" >&2; [[ -f dex.log ]] && tail -20 dex.log >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
issuer="https://127.0.0.1:$port/dex"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=signoff test OIDC CA" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout tls.key -out tls.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile ext.cnf -out tls.crt 2>/dev/null

# bcrypt of "password" (Dex's examples/config-dev.yaml); cost 10 is Dex's minimum.
hash='$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W'
cat >config.yaml <<EOF
issuer: $issuer
storage: {type: memory}
web:
  https: 127.0.0.1:$port
  tlsCert: $dir/tls.crt
  tlsKey: $dir/tls.key
telemetry: {http: ""}
logger: {level: info}
oauth2:
  passwordConnector: local
  skipApprovalScreen: true
enablePasswordDB: true
staticPasswords:
- {email: erin@signoff.test, hash: "$hash", username: erin, preferredUsername: erin,
   userID: 6c1e1d6a-erin, groups: [signoff-approvers, platform]}
- {email: bob@signoff.test, hash: "$hash", username: bob, userID: 1b0b-bob}
staticClients:
- id: signoff-ui
  name: signoff UI
  public: true
  redirectURIs: ["http://127.0.0.1:9999/callback"]
EOF

start=$(date +%s.%N)
"$dex" serve config.yaml >dex.log 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -sf --cacert ca.crt "$issuer/.well-known/openid-configuration" >discovery.json && break
  kill -0 "$pid" 2>/dev/null || fail "dex exited"
  sleep 0.1
done
[[ -s discovery.json ]] || fail "no discovery document after 10s"
echo "dex $("$dex" version | sed -n 's/^Dex Version: //p') ready after $(python3 -c "print(round($(date +%s.%N)-$start,2))")s at $issuer"
jq -c '{issuer, code_challenge_methods_supported, grant_types_supported, scopes_supported, claims_supported}' discovery.json
jq -e '.code_challenge_methods_supported | index("S256")' discovery.json >/dev/null || fail "no S256 PKCE"

token_ep=$(jq -r .token_endpoint discovery.json)
auth_ep=$(jq -r .authorization_endpoint discovery.json)
claims() { cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null | jq -c 'del(.iat, .exp)'; }
password_grant() { # user password -> token response JSON
  curl -s --cacert ca.crt "$token_ep" -d grant_type=password -d client_id=signoff-ui \
    --data-urlencode "username=$1" --data-urlencode "password=$2" \
    --data-urlencode "scope=openid email profile groups"
}
pad() { local s; s=$(cat); while (( ${#s} % 4 )); do s="$s="; done; printf %s "$s"; }

for user in erin@signoff.test bob@signoff.test; do
  resp=$(password_grant "$user" password)
  id_token=$(jq -r '.id_token // empty' <<<"$resp")
  [[ -n "$id_token" ]] || fail "password grant for $user: $resp"
  echo "password grant $user: $(cut -d. -f2 <<<"$id_token" | pad | claims)"
done
resp=$(password_grant mallory@signoff.test password)
jq -e '.error' <<<"$resp" >/dev/null || fail "unknown user got a token: $resp"
echo "unknown user refused: $resp"
resp=$(password_grant erin@signoff.test wrong)
jq -e '.error' <<<"$resp" >/dev/null || fail "wrong password got a token: $resp"
echo "wrong password refused: $resp"

# Authorization code + PKCE (S256) through the local login form.
verifier=$(openssl rand -base64 48 | tr -d '=+/\n' | cut -c1-64)
challenge=$(printf %s "$verifier" | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=')
redirect=http://127.0.0.1:9999/callback
jar=cookies.txt
location() { curl -s -o /dev/null -w '%{redirect_url}' --cacert ca.crt -b $jar -c $jar "$@"; }
loc=$(location -G "$auth_ep" -d client_id=signoff-ui -d response_type=code \
  --data-urlencode "redirect_uri=$redirect" --data-urlencode "scope=openid email profile groups" \
  -d state=st4te -d code_challenge="$challenge" -d code_challenge_method=S256)
# With one connector Dex redirects straight to it: /auth/local, then its login form.
[[ "$loc" == "$issuer/auth/local?"* ]] || fail "authorization endpoint redirected to '$loc'"
loc=$(location "$loc")
[[ "$loc" == "$issuer/auth/local/login?"* ]] || fail "login form at '$loc'"
loc=$(location "$loc" --data-urlencode login=erin@signoff.test --data-urlencode password=password)
# skipApprovalScreen: the login answers with the redirect to the client at once.
[[ "$loc" == "$redirect?"* ]] || fail "no redirect to the client: '$loc'"
code=$(sed -n 's/.*[?&]code=\([^&]*\).*/\1/p' <<<"$loc")
[[ "$loc" == *"state=st4te"* && -n "$code" ]] || fail "callback without code/state: $loc"
code_grant() {
  curl -s --cacert ca.crt "$token_ep" -d grant_type=authorization_code -d client_id=signoff-ui \
    --data-urlencode "redirect_uri=$redirect" -d code="$code" -d code_verifier="$1"
}
resp=$(code_grant "")
jq -e '.error' <<<"$resp" >/dev/null || fail "no code_verifier got a token: $resp"
echo "PKCE: missing code_verifier refused: $resp"
resp=$(code_grant "wrong-${verifier:6}")
jq -e '.error' <<<"$resp" >/dev/null || fail "a wrong code_verifier got a token: $resp"
echo "PKCE: wrong code_verifier refused: $resp"
resp=$(code_grant "$verifier")
id_token=$(jq -r '.id_token // empty' <<<"$resp")
[[ -n "$id_token" ]] || fail "code exchange with the right verifier: $resp"
echo "PKCE: code flow erin: $(cut -d. -f2 <<<"$id_token" | pad | claims)"
echo "dex RSS: $(grep VmRSS /proc/$pid/status | tr -s ' ')"
echo OK
