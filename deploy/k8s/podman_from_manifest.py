#!/usr/bin/env python3
"""Runs a rendered Deployment's container with podman the way a kubelet would run it.

deploy/k8s/test.sh has no cluster, so it takes the manifest that `kubectl kustomize` rendered and
turns its pod template into one `podman run`: the same image, command, args, working directory,
environment (plain values and secretKeyRef values taken from the rendered Secrets), Secret
volumes at the same paths, read-only (written as the kubelet writes them: `..data` symlinks,
defaultMode, owner root, group fsGroup and group-readable when fsGroup is set), the same user,
groups, read-only root filesystem, capabilities, no-new-privileges and resource limits. The
image's VOLUME and HEALTHCHECK are ignored, as Kubernetes ignores them.

Everything is derived from the manifest, so a change there changes the run; anything in the pod
template this script does not know how to reproduce stops it with an error instead of being
skipped. Only two things are replaced, both printed: BIND_ADDR's address (127.0.0.1 and the port
given, so several replicas share the host network) and the image's registry (podman's
`localhost/` for an unqualified name).

Secret values never reach a command line: podman gets `--env NAME` and takes the value from its
own environment (`os.execvpe`). The argv is printed to stderr, and holds no value of a Secret.

Usage:
  podman_from_manifest.py run MANIFEST --state DIR --name NAME --port PORT [--image IMAGE]
  podman_from_manifest.py facts MANIFEST --port PORT
      JSON: the probes (as URLs on 127.0.0.1:PORT), the grace period, the preStop sleep and the
      memory limit in bytes, for the test to probe, stop and measure as Kubernetes would
"""

import argparse
import base64
import json
import os
import re
import sys

import yaml

CONTAINER = "rcrt"
DEPLOYMENT = "rcrt-server"


class Unsupported(Exception):
    """The pod template asks for something this script cannot reproduce faithfully."""


def load(manifest):
    with open(manifest, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    deployments = [d for d in docs if d.get("kind") == "Deployment"
                   and d["metadata"]["name"] == DEPLOYMENT]
    if len(deployments) != 1:
        raise Unsupported(f"expected one Deployment {DEPLOYMENT}, found {len(deployments)}")
    dep = deployments[0]
    namespace = dep["metadata"].get("namespace", "default")
    objects = {}
    for d in docs:
        if d.get("kind") in ("Secret", "ConfigMap"):
            if d["metadata"].get("namespace", "default") == namespace:
                objects[(d["kind"], d["metadata"]["name"])] = d
    return dep, objects


def secret_data(objects, name):
    """A rendered Secret's keys and decoded bytes (data is base64, which kustomize wraps over
    several lines and the API server reads whole; stringData is plain)."""
    secret = objects.get(("Secret", name))
    if secret is None:
        raise Unsupported(f"Secret {name} is not in the rendered manifest")
    out = {k: base64.b64decode("".join(v.split()), validate=True)
           for k, v in (secret.get("data") or {}).items()}
    for k, v in (secret.get("stringData") or {}).items():
        out[k] = v.encode()
    return out


def the_container(pod):
    known = {"serviceAccountName", "automountServiceAccountToken", "enableServiceLinks",
             "terminationGracePeriodSeconds", "securityContext", "topologySpreadConstraints",
             "affinity", "containers", "volumes", "nodeSelector", "tolerations",
             "priorityClassName"}
    extra = set(pod) - known
    if extra:
        raise Unsupported(f"pod spec fields not reproduced: {sorted(extra)}")
    if pod.get("automountServiceAccountToken", True) is not False:
        raise Unsupported("automountServiceAccountToken must be false (no token is simulated)")
    containers = pod["containers"]
    if len(containers) != 1 or containers[0]["name"] != CONTAINER:
        raise Unsupported(f"expected exactly one container named {CONTAINER}")
    return containers[0]


def named_port(container, port):
    """A probe's port: a number, or a name from the container's ports."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise Unsupported(f"port {port!r} is not a named container port")


def bind_port(container):
    for e in container.get("env", []):
        if e["name"] == "BIND_ADDR":
            m = re.fullmatch(r"(.+):(\d+)", e.get("value", ""))
            if not m:
                raise Unsupported("BIND_ADDR is not host:port")
            return int(m.group(2))
    raise Unsupported("BIND_ADDR is not set: the server would listen on loopback only")


def memory_bytes(q):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+)([KMG]i?)?", str(q))
    if not m:
        raise Unsupported(f"memory quantity {q!r}")
    return int(m.group(1)) * units.get(m.group(2) or "", 1)


def cpus(q):
    q = str(q)
    return str(int(q[:-1]) / 1000) if q.endswith("m") else q


def write_secret_volume(path, files, default_mode, fs_group):
    """Writes a Secret volume as the kubelet's atomic writer does: the files in a timestamped
    directory, `..data` pointing at it, and each key a symlink through `..data`. With fsGroup,
    the kubelet makes files group fsGroup and adds group read (0440) to their mode."""
    os.makedirs(path)
    stamp = os.path.join(path, "..2026_01_01_00_00_00.000000000")
    os.makedirs(stamp)
    for rel, (content, mode) in files.items():
        target = os.path.join(stamp, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        if fs_group is not None:
            os.chown(target, 0, fs_group)
            mode |= 0o440
        os.chmod(target, mode)
    os.symlink(os.path.basename(stamp), os.path.join(path, "..data"))
    for rel in files:
        top = rel.split("/")[0]
        link = os.path.join(path, top)
        if not os.path.lexists(link):
            os.symlink(os.path.join("..data", top), link)
    for d in (path, stamp):
        if fs_group is not None:
            os.chown(d, 0, fs_group)
            os.chmod(d, 0o2755)
        else:
            os.chmod(d, 0o755)


def build(args):
    dep, objects = load(args.manifest)
    pod = dep["spec"]["template"]["spec"]
    c = the_container(pod)
    known = {"name", "image", "imagePullPolicy", "command", "args", "workingDir", "ports", "env",
             "envFrom", "volumeMounts", "startupProbe", "readinessProbe", "livenessProbe",
             "lifecycle", "resources", "securityContext"}
    extra = set(c) - known
    if extra:
        raise Unsupported(f"container fields not reproduced: {sorted(extra)}")
    if c.get("envFrom"):
        raise Unsupported("envFrom is not reproduced")

    argv = ["podman", "run", "--detach", "--pull", "never", "--name", args.name,
            "--hostname", args.name, "--network", "host",
            # Kubernetes ignores an image's VOLUME declarations: no volume unless the pod has one.
            "--image-volume", "ignore",
            # ... and its HEALTHCHECK: the pod's probes are what count.
            "--no-healthcheck"]
    env = {}

    # Security context: the container's fields override the pod's.
    sc = dict(pod.get("securityContext") or {})
    csc = c.get("securityContext") or {}
    for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile"):
        if k in csc:
            sc[k] = csc[k]
    user, group = sc.get("runAsUser"), sc.get("runAsGroup")
    if user is None or group is None:
        raise Unsupported("runAsUser and runAsGroup must be set (numeric)")
    if sc.get("runAsNonRoot") and user == 0:
        raise Unsupported("runAsNonRoot with runAsUser 0: the kubelet would refuse to start it")
    argv += ["--user", f"{user}:{group}"]
    fs_group = sc.get("fsGroup")
    for g in ([fs_group] if fs_group is not None else []) + sc.get("supplementalGroups", []):
        argv += ["--group-add", str(g)]
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        raise Unsupported(f"seccompProfile {seccomp!r} (only RuntimeDefault, podman's default)")
    if csc.get("privileged"):
        raise Unsupported("privileged")
    if csc.get("readOnlyRootFilesystem"):
        # No tmpfs on /tmp, /run, ... either: Kubernetes gives none.
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if csc.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    caps = csc.get("capabilities") or {}
    for cap in caps.get("drop", []):
        argv += ["--cap-drop", cap.lower()]
    for cap in caps.get("add", []):
        argv += ["--cap-add", cap.lower()]

    limits = (c.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        argv += ["--memory", str(memory_bytes(limits["memory"]))]
    if "cpu" in limits:
        argv += ["--cpus", cpus(limits["cpu"])]

    port = bind_port(c)
    if port != named_port(c, "http"):
        raise Unsupported(f"BIND_ADDR port {port} is not the container port named http")
    for e in c.get("env", []):
        name = e["name"]
        if "value" in e:
            value = str(e["value"])
            if "$(" in value:
                raise Unsupported(f"{name}: $(VAR) expansion is not reproduced")
            if name == "BIND_ADDR":
                value = f"127.0.0.1:{args.port}"
                print(f"replaced: BIND_ADDR={e['value']} -> {value}", file=sys.stderr)
        elif "secretKeyRef" in (e.get("valueFrom") or {}):
            ref = e["valueFrom"]["secretKeyRef"]
            data = secret_data(objects, ref["name"])
            if ref["key"] not in data:
                raise Unsupported(f"{name}: Secret {ref['name']} has no key {ref['key']}")
            value = data[ref["key"]].decode()
        else:
            raise Unsupported(f"{name}: valueFrom {sorted(e.get('valueFrom') or {})}")
        env[name] = value
        argv += ["--env", name]

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        if set(m) - {"name", "mountPath", "readOnly"}:
            raise Unsupported(f"volumeMount fields {sorted(set(m) - {'name', 'mountPath', 'readOnly'})}")
        v = volumes.get(m["name"])
        if v is None or set(v) != {"name", "secret"}:
            raise Unsupported(f"volume {m['name']}: only Secret volumes are reproduced")
        s = v["secret"]
        data = secret_data(objects, s["secretName"])
        mode = s.get("defaultMode", 0o644)
        items = s.get("items") or [{"key": k, "path": k} for k in data]
        files = {}
        for it in items:
            if it["key"] not in data:
                raise Unsupported(f"Secret {s['secretName']} has no key {it['key']}")
            files[it["path"]] = (data[it["key"]], it.get("mode", mode))
        host = os.path.join(args.state, args.name, "volumes", m["name"])
        write_secret_volume(host, files, mode, fs_group)
        ro = ":ro" if m.get("readOnly") else ""
        argv += ["--volume", f"{host}:{m['mountPath']}{ro}"]

    if c.get("workingDir"):
        argv += ["--workdir", c["workingDir"]]
    if c.get("command"):
        argv += ["--entrypoint", json.dumps(c["command"])]
    image = c["image"]
    if "/" not in image.split(":")[0]:
        image = "localhost/" + image
    if args.image:
        image = args.image
    if image != c["image"]:
        print(f"replaced: image {c['image']} -> {image}", file=sys.stderr)
    argv.append(image)
    argv += [str(a) for a in c.get("args", [])]
    return argv, env


def facts(args):
    dep, _ = load(args.manifest)
    pod = dep["spec"]["template"]["spec"]
    c = the_container(pod)
    out = {"terminationGracePeriodSeconds": pod.get("terminationGracePeriodSeconds", 30)}
    pre = ((c.get("lifecycle") or {}).get("preStop") or {})
    out["preStopSleepSeconds"] = (pre.get("sleep") or {}).get("seconds", 0)
    limits = (c.get("resources") or {}).get("limits") or {}
    out["memoryLimitBytes"] = memory_bytes(limits["memory"]) if "memory" in limits else None
    bound = bind_port(c)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(kind)
        if p is None:
            continue
        get = p.get("httpGet")
        if get is None:
            raise Unsupported(f"{kind}: only httpGet probes are reproduced")
        port = named_port(c, get["port"])
        if port != bound:
            raise Unsupported(f"{kind} probes port {port}, the server listens on {bound}")
        scheme = get.get("scheme", "HTTP").lower()
        out[kind] = {
            "url": f"{scheme}://127.0.0.1:{args.port}{get.get('path', '/')}",
            "timeoutSeconds": p.get("timeoutSeconds", 1),
            "periodSeconds": p.get("periodSeconds", 10),
            "failureThreshold": p.get("failureThreshold", 3),
        }
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("manifest")
    run.add_argument("--state", required=True, help="directory for the Secret volumes")
    run.add_argument("--name", required=True, help="container name")
    run.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    run.add_argument("--image", help="image instead of the manifest's")
    pr = sub.add_parser("facts")
    pr.add_argument("manifest")
    pr.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        if args.cmd == "facts":
            facts(args)
            return
        argv, env = build(args)
    except Unsupported as e:
        sys.exit(f"podman_from_manifest: {e}")
    print("podman_from_manifest: " + " ".join(argv), file=sys.stderr)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, {**os.environ, **env})


if __name__ == "__main__":
    main()
