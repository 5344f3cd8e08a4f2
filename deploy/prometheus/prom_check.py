#!/usr/bin/env python3
"""Checks a running Prometheus that scrapes one rcrt-server under job rcrt-secrets with
rules.yaml loaded (test.sh starts both). Standard library only.

Usage: prom_check.py PROMETHEUS_URL CHECK DASHBOARD_JSON, CHECK one of:
  dashboard  every query of the Grafana dashboard runs and returns data
  rules      the 4 rules of rules.yaml evaluate without error and none is pending or firing
  down       RCRTKEKNotConfigured is pending or firing (run after stopping the server)
Retries for up to 60 s (Prometheus needs a few scrapes); exits non-zero saying what failed.
"""
import json
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


def rules_quiet(prom, _dashboard):
    groups = get(prom, "/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    if len(rules) != 4:
        return f"expected 4 rules loaded, got {len(rules)}"
    for r in rules:
        if r["health"] != "ok" or r.get("lastError"):
            return f"rule {r['name']} does not evaluate: {r.get('lastError')}"
        if r["state"] != "inactive":
            return f"rule {r['name']} is {r['state']} on a healthy server"
    print("4 rules evaluate, none active")
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


CHECKS = {"dashboard": dashboard_queries, "rules": rules_quiet, "down": kek_alert_raised}


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
