#!/usr/bin/env python3
"""Checks a running Prometheus that scrapes one rcrt-server under job rcrt-secrets with
rules.yaml loaded (test.sh starts both). Standard library only.

Usage: prom_check.py PROMETHEUS_URL CHECK DASHBOARD_JSON, CHECK one of:
  dashboard  every query of the Grafana dashboard runs and returns data
  rules      every rule of rules.yaml evaluates without error and none is pending or firing
  down       RCRTKEKNotConfigured is pending or firing (run after stopping the server)
  k8s        (a Prometheus on prometheus-kubernetes.yml's relabelling, k8s_sd_standin.py) the
             active targets are exactly those in the JSON of $RCRT_K8S_EXPECT (scrapeUrl ->
             labels, "health" included when given), and rcrt_kek_configured is 1 under
             job="rcrt-secrets" for the pod that is up
Retries for up to 60 s (Prometheus needs a few scrapes); exits non-zero saying what failed.
"""
import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request


def get(prom, path, **params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def exprs(v):
    if isinstance(v, dict):
        if isinstance(v.get("expr"), str):
            yield v["expr"]
        for x in v.values():
            yield from exprs(x)
    elif isinstance(v, list):
        for x in v:
            yield from exprs(x)


def dashboard_queries(prom, dashboard):
    with open(dashboard, encoding="utf-8") as f:
        queries = list(exprs(json.load(f)))
    if len(queries) < 9:
        return f"expected at least 9 dashboard queries, found {len(queries)}"
    for q in queries:
        r = get(prom, "/api/v1/query", query=q)
        if r["status"] != "success":
            return f"dashboard query failed: {q}: {r}"
        if not r["data"]["result"]:
            return f"dashboard query returned no data: {q}"
    print(f"{len(queries)} dashboard queries return data")
    return None


def rules_in_file():
    """The number of alerts in rules.yaml (beside this script), counted without a YAML parser."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules.yaml")
    with open(path, encoding="utf-8") as f:
        return len(re.findall(r"^\s*- alert: ", f.read(), re.MULTILINE))


def rules_quiet(prom, _dashboard):
    groups = get(prom, "/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    want = rules_in_file()
    if want < 4 or len(rules) != want:
        return f"expected the {want} rules of rules.yaml loaded, got {len(rules)}"
    for r in rules:
        if r["health"] != "ok" or r.get("lastError"):
            return f"rule {r['name']} does not evaluate: {r.get('lastError')}"
        if r["state"] != "inactive":
            return f"rule {r['name']} is {r['state']} on a healthy server"
    print(f"{len(rules)} rules evaluate, none active")
    return None


def kek_alert_raised(prom, _dashboard):
    alerts = get(prom, "/api/v1/alerts")["data"]["alerts"]
    if not any(
        a["labels"].get("alertname") == "RCRTKEKNotConfigured"
        and a["state"] in ("pending", "firing")
        for a in alerts
    ):
        return f"RCRTKEKNotConfigured not raised with the server down: {alerts}"
    print("RCRTKEKNotConfigured pending with the server down")
    return None


def k8s_targets(prom, _dashboard):
    expect = json.loads(os.environ["RCRT_K8S_EXPECT"])
    active = get(prom, "/api/v1/targets", state="active")["data"]["activeTargets"]
    got = {t["scrapeUrl"]: t for t in active}
    if set(got) != set(expect):
        return f"active targets {sorted(got)}, expected {sorted(expect)}"
    for url, want in expect.items():
        t = got[url]
        for k, v in want.items():
            have = t["health"] if k == "health" else t["labels"].get(k)
            if have != v:
                return f"target {url}: {k} is {have!r}, expected {v!r} ({t})"
    up = [w["pod"] for w in expect.values() if w.get("health") == "up"]
    for pod in up:
        q = f'rcrt_kek_configured{{job="rcrt-secrets", pod="{pod}"}}'
        r = get(prom, "/api/v1/query", query=q)["data"]["result"]
        if [x["value"][1] for x in r] != ["1"]:
            return f"{q}: {r}"
    print(f"{len(got)} targets discovered as expected, job rcrt-secrets; rcrt_kek_configured 1 on {up}")
    return None


CHECKS = {"dashboard": dashboard_queries, "rules": rules_quiet, "down": kek_alert_raised,
          "k8s": k8s_targets}


def main():
    prom, what, dashboard = sys.argv[1:4]
    check = CHECKS[what]
    deadline = time.time() + 60
    while True:
        try:
            problem = check(prom, dashboard)
        except OSError as e:  # Prometheus still starting
            problem = f"{type(e).__name__}: {e}"
        if problem is None:
            return
        if time.time() > deadline:
            sys.exit(f"FAIL: {problem}")
        time.sleep(1)


if __name__ == "__main__":
    main()
