#!/usr/bin/env bash
# Checks the Prometheus rules and a real server's /metrics with promtool:
#   1. `promtool check rules` and `promtool check config` on rules.yaml and prometheus.yml;
#   2. `promtool test rules` on rules.test.yaml (each alert firing and silent);
#   3. starts a real rcrt-server ($RCRT_SERVER_BIN, default target/debug/rcrt-server) on a free
#      loopback port with a fresh KEK and a temporary SQLite file, makes traffic (create, decrypt,
#      failing requests), scrapes /metrics and runs `promtool check metrics` on it: the only
#      finding allowed is the guide's counter `rcrt_secret_decrypt_failures` without `_total`
#      (kept on purpose: the guide's alert uses that name);
#   4. starts a real Prometheus (same package) scraping that server every second with
#      rules.yaml loaded (prom_check.py): every query of the Grafana dashboard
#      (deploy/grafana) runs and returns data, every rule evaluates without error and none is
#      active; after the server is stopped, RCRTKEKNotConfigured becomes pending (up == 0).
#   5. prometheus-kubernetes.yml: its discovery part checked (k8s_sd_standin.py: role pod,
#      namespace rcrt-system, label selector), then a copy with file discovery of stand-in pods
#      (the labels Kubernetes pod discovery gives, from deploy/k8s/base's pod template) through
#      `promtool check config` and a second real Prometheus: only the running, annotated pods'
#      server port are targets, with job="rcrt-secrets", the annotations' scheme, path and port,
#      and the one pointing at the real server reports rcrt_kek_configured 1.
# Stops only the server it started. Needs promtool (Debian package `prometheus`; installed here
# when run as root), curl, openssl and python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

if ! command -v promtool >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]]; then
        echo "promtool missing: installing the Debian package prometheus" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
    else
        fail "promtool is needed: install the Debian package 'prometheus' (apt-get install prometheus) or put promtool on PATH"
    fi
fi
for tool in curl openssl python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed: install it (apt-get install $tool)"
done

cd "$here"
echo "== promtool check rules"
promtool check rules rules.yaml
echo "== promtool check config"
promtool check config prometheus.yml
# Kubernetes: Debian's promtool and Prometheus are built without kubernetes_sd_configs, so
# k8s_sd_standin.py checks that part (role pod, namespace rcrt-system, the label selector) and
# writes a copy discovering stand-in pods through a file instead; promtool checks that copy
# (everything else, relabelling included, as shipped), and a real Prometheus runs it below.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml || fail "pip install pyyaml"
echo "== promtool test rules"
promtool test rules rules.test.yaml

server_bin="${RCRT_SERVER_BIN:-$root/target/debug/rcrt-server}"
[[ -x "$server_bin" ]] || fail "no server binary at $server_bin: run 'cargo build -p rcrt-server' or set RCRT_SERVER_BIN"

work="$(mktemp -d)"
server_pid=""
prom_pid=""
k8s_prom_pid=""
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    [[ -z "$server_pid" ]] || stop "$server_pid"
    [[ -z "$prom_pid" ]] || stop "$prom_pid"
    [[ -z "$k8s_prom_pid" ]] || stop "$k8s_prom_pid"
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port="$(free_port)"
base="http://127.0.0.1:$port"

echo "== starting $server_bin on 127.0.0.1:$port"
(
    # In its own directory, so no .env of the caller's is read; the KEK goes by environment only.
    cd "$work"
    unset LOCAL_KEK_BASE64_FILE LOCAL_KEK_BASE64_OLD LOCAL_KEK_BASE64_OLD_FILE DATABASE_URL \
        TLS_CERT_FILE TLS_KEY_FILE
    LOCAL_KEK_BASE64="$(openssl rand -base64 32)"
    export LOCAL_KEK_BASE64
    export DB_URL="$work/rcrt.db" BIND_ADDR="127.0.0.1:$port" AUTH_MODE=disabled
    exec "$server_bin"
) >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 150); do
    if curl -fsS "$base/health" >/dev/null 2>&1; then
        break
    fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; fail "rcrt-server exited"; }
    sleep 0.2
done
curl -fsS "$base/health" >/dev/null || { cat "$work/server.log" >&2; fail "rcrt-server not healthy after 30 s"; }

echo "== traffic"
value="metrics-check-$(openssl rand -hex 12)"
id="$(curl -fsS -X POST "$base/secrets" -H 'Content-Type: application/json' \
    -d "{\"name\":\"PROMTOOL_CHECK\",\"value\":\"$value\",\"scope_type\":\"global\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
got="$(curl -fsS -X POST "$base/secrets/$id/decrypt" -H 'X-Access-Reason: promtool check' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["value"])')"
[[ "$got" == "$value" ]] || fail "decrypt returned another value"
# Failing requests: a decrypt without a reason (400) and an unknown secret (404).
status="$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$base/secrets/$id/decrypt")"
[[ "$status" == 400 ]] || fail "decrypt without a reason answered $status, expected 400"
missing="$(python3 -c 'import uuid; print(uuid.uuid4())')"
status="$(curl -sS -o /dev/null -w '%{http_code}' "$base/secrets/$missing")"
[[ "$status" == 404 ]] || fail "unknown secret answered $status, expected 404"

echo "== promtool check metrics"
curl -fsS "$base/metrics" >"$work/metrics.txt"
for name in rcrt_secret_decrypt_failures rcrt_secret_decrypt_success_total rcrt_kek_unavailable_total rcrt_kek_configured \
    rcrt_kek_rewrap_remaining rcrt_kek_rewrapped_total rcrt_http_requests_total \
    rcrt_http_request_duration_seconds_bucket rcrt_audit_write_failures_total \
    rcrt_store_pool_connections rcrt_store_pool_max_connections rcrt_build_info; do
    grep -q "^${name}[{ ]" "$work/metrics.txt" || fail "/metrics has no $name"
done
grep -qx 'rcrt_kek_configured 1' "$work/metrics.txt" || fail "rcrt_kek_configured is not 1"
grep -qx 'rcrt_secret_decrypt_success_total 1' "$work/metrics.txt" ||
    fail "rcrt_secret_decrypt_success_total is not 1"
grep -q '^rcrt_http_requests_total{route="/secrets/{id}/decrypt",method="POST",status="400"} 1$' \
    "$work/metrics.txt" || fail "the 400 decrypt is not counted under its route template"
if grep -q -e "$id" -e "$missing" -e "$value" "$work/metrics.txt"; then
    fail "/metrics contains a secret id or value"
fi

# Exit status 3 means lint findings; anything else non-zero is a parse error.
lint_status=0
lint="$(promtool check metrics <"$work/metrics.txt" 2>&1)" || lint_status=$?
expected='rcrt_secret_decrypt_failures counter metrics should have "_total" suffix'
echo "$lint"
if [[ "$lint" != "$expected" ]]; then
    fail "promtool check metrics found more than the guide's counter without _total (status $lint_status)"
fi
[[ "$lint_status" == 3 ]] || fail "promtool check metrics exited $lint_status, expected 3 (lint findings)"

command -v prometheus >/dev/null 2>&1 || fail "prometheus is needed: install the Debian package 'prometheus'"
prom_port="$(free_port)"
prom="http://127.0.0.1:$prom_port"
mkdir "$work/prometheus"
cat >"$work/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $here/rules.yaml
scrape_configs:
  - job_name: rcrt-secrets
    static_configs:
      - targets: ["127.0.0.1:$port"]
EOF
echo "== starting prometheus on 127.0.0.1:$prom_port"
prometheus --config.file="$work/prometheus/prometheus.yml" \
    --storage.tsdb.path="$work/prometheus/data" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!

prom_check() {
    python3 "$here/prom_check.py" "$prom" "$1" "$root/deploy/grafana/rcrt-dashboard.json"
}
echo "== dashboard queries and rules on a real Prometheus"
prom_check dashboard || { cat "$work/prometheus.log" >&2; fail "dashboard queries"; }
prom_check rules || fail "rules on a healthy server"
echo "== prometheus-kubernetes.yml: Kubernetes pod discovery's labels, relabelled as shipped"
closed_port="$(free_port)"
k8s_expect="$(python3 "$here/k8s_sd_standin.py" "$here/prometheus-kubernetes.yml" \
    "$root/deploy/k8s/base/deployment.yaml" "$here/rules.yaml" "$work/k8s-sd" "$port" "$closed_port")" ||
    fail "prometheus-kubernetes.yml: discovery part"
promtool check config "$work/k8s-sd/prometheus.yml" || fail "promtool check config: prometheus-kubernetes.yml (file discovery in place of Kubernetes)"
k8s_prom_port="$(free_port)"
prometheus --config.file="$work/k8s-sd/prometheus.yml" --storage.tsdb.path="$work/k8s-sd/data" \
    --web.listen-address="127.0.0.1:$k8s_prom_port" >"$work/prometheus-k8s.log" 2>&1 &
k8s_prom_pid=$!
RCRT_K8S_EXPECT="$k8s_expect" python3 "$here/prom_check.py" "http://127.0.0.1:$k8s_prom_port" k8s \
    "$root/deploy/grafana/rcrt-dashboard.json" || { cat "$work/prometheus-k8s.log" >&2; fail "prometheus-kubernetes.yml targets"; }
stop "$k8s_prom_pid"
k8s_prom_pid=""

echo "== stopping the server: RCRTKEKNotConfigured must go pending"
stop "$server_pid"
server_pid=""
prom_check down || fail "RCRTKEKNotConfigured with the target down"

echo "PASS: rules checked and unit-tested; /metrics of a real server parses and its only lint finding is the guide's rcrt_secret_decrypt_failures; on a real Prometheus the dashboard's queries return data, the rules stay quiet while the server runs and RCRTKEKNotConfigured goes pending when it stops; prometheus-kubernetes.yml's relabelling gives the expected job=\"rcrt-secrets\" targets"
