#!/usr/bin/env python3
"""Makes prometheus-kubernetes.yml runnable on a Prometheus without Kubernetes discovery.

Debian's Prometheus (what deploy/prometheus/test.sh runs) is built without
kubernetes_sd_configs, and no cluster runs here. This script checks the discovery part of
prometheus-kubernetes.yml (role pod, namespace rcrt-system, the rcrt-server label selector),
then writes a copy whose kubernetes_sd_configs is replaced by a file_sd_configs, and the targets
file for it: the labels Kubernetes pod discovery gives (__address__ as pod IP and container
port, __meta_kubernetes_*) for pods made from deploy/k8s/base/deployment.yaml's pod template.
Everything else (relabel_configs, job name, timeouts) is the file's own, so a real Prometheus
applies exactly the shipped relabelling.

The pods (pod IP 127.0.0.1, the manifest's annotations except where said):
  rcrt-server-a      Running; prometheus.io/port is SERVER_PORT (a real server): kept, scraped
  rcrt-server-tls    Running; scheme https, port CLOSED_PORT: kept, scraped over https
  rcrt-server-new    Pending: dropped
  rcrt-server-quiet  prometheus.io/scrape "false": dropped
  and a sidecar container port on rcrt-server-a: dropped

Usage: k8s_sd_standin.py PROMETHEUS_K8S_YML DEPLOYMENT_YAML RULES_YAML OUT_DIR SERVER_PORT CLOSED_PORT
Prints the expected targets as JSON (scrapeUrl -> labels) for prom_check.py's k8s check.
"""
import json
import os
import sys

import yaml


def main():
    config_path, deployment_path, rules, out, server_port, closed_port = sys.argv[1:7]
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "rcrt-secrets", job["job_name"]
    (sd,) = job.pop("kubernetes_sd_configs")
    assert sd["role"] == "pod", sd
    assert sd["namespaces"] == {"names": ["rcrt-system"]}, sd
    assert sd["selectors"] == [{"role": "pod", "label": "app.kubernetes.io/name=rcrt-server"}], sd

    with open(deployment_path, encoding="utf-8") as f:
        dep = yaml.safe_load(f)
    tpl = dep["spec"]["template"]
    assert tpl["metadata"]["labels"]["app.kubernetes.io/name"] == "rcrt-server"
    annotations = tpl["metadata"]["annotations"]
    (container,) = tpl["spec"]["containers"]

    def pod(name, phase, overrides):
        labels = {
            "__meta_kubernetes_namespace": "rcrt-system",
            "__meta_kubernetes_pod_name": name,
            "__meta_kubernetes_pod_phase": phase,
            "__meta_kubernetes_pod_ip": "127.0.0.1",
            "__meta_kubernetes_pod_label_app_kubernetes_io_name": "rcrt-server",
            "__meta_kubernetes_pod_container_name": container["name"],
        }
        for k, v in {**annotations, **overrides}.items():
            key = "".join(c if c.isalnum() else "_" for c in k)
            labels[f"__meta_kubernetes_pod_annotation_{key}"] = v
        groups = []
        for port in container["ports"]:
            groups.append({
                "targets": [f"127.0.0.1:{port['containerPort']}"],
                "labels": {**labels,
                           "__meta_kubernetes_pod_container_port_name": port["name"],
                           "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                           "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP")},
            })
        return groups

    targets = (
        pod("rcrt-server-a", "Running", {"prometheus.io/port": server_port})
        + pod("rcrt-server-tls", "Running",
              {"prometheus.io/port": closed_port, "prometheus.io/scheme": "https"})
        + pod("rcrt-server-new", "Pending", {"prometheus.io/port": server_port})
        + pod("rcrt-server-quiet", "Running",
              {"prometheus.io/port": server_port, "prometheus.io/scrape": "false"})
    )
    # A second container's port on the scraped pod (say a sidecar): not the server's.
    sidecar = json.loads(json.dumps(targets[0]))
    sidecar["targets"] = ["127.0.0.1:9999"]
    sidecar["labels"]["__meta_kubernetes_pod_container_name"] = "sidecar"
    sidecar["labels"]["__meta_kubernetes_pod_container_port_name"] = "http"
    targets.append(sidecar)

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "targets.json"), "w", encoding="utf-8") as f:
        json.dump(targets, f)
    job["file_sd_configs"] = [{"files": [os.path.join(out, "targets.json")], "refresh_interval": "1s"}]
    job["scrape_interval"] = "1s"
    job["scrape_timeout"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [rules]
    with open(os.path.join(out, "prometheus.yml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    path = annotations["prometheus.io/path"]
    expect = {
        f"http://127.0.0.1:{server_port}{path}": {"job": "rcrt-secrets", "namespace": "rcrt-system",
                                                  "pod": "rcrt-server-a", "health": "up"},
        f"https://127.0.0.1:{closed_port}{path}": {"job": "rcrt-secrets", "namespace": "rcrt-system",
                                                   "pod": "rcrt-server-tls"},
    }
    print(json.dumps(expect))


if __name__ == "__main__":
    main()
