#!/usr/bin/env python3
"""Static checks of everything under deploy/, for CI (no container runtime needed).

Checks, each failing with the file and the reason:
- every YAML file parses (all documents);
- Dockerfile: multi-stage, pinned base images, a non-root USER in the final stage,
  the binary copied from the build stage, an ENTRYPOINT, EXPOSE;
- docker-compose.yml: the services an installation needs (ClickHouse, an S3 store,
  PostgreSQL, two Logport replicas, Prometheus), pinned images, files it mounts exist,
  replicas share one PostgreSQL job store and one S3 bucket;
- Kubernetes manifests: apiVersion/kind/metadata.name, the kinds we ship, selectors
  that match the pod labels, probes on ports that exist, non-root security context,
  envFrom names that exist, the HPA and PDB pointing at the Deployment;
- systemd unit: sections and keys, not root; `systemd-analyze verify` when present;
- Prometheus: config and rules parse, and every logport_* metric the alerts use is
  one the code registers;
- every LOGPORT_* variable any of these files sets is one config.rs reads;
- every logport_* metric in the code is documented in docs/operations.md.
"""

import configparser
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.environ.get("LOGPORT_DEPLOY_DIR") or os.path.join(ROOT, "deploy")
errors = []


def fail(path, msg):
    errors.append(f"{os.path.relpath(path, ROOT)}: {msg}")


def load_all(path):
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        fail(path, f"YAML does not parse: {e}")
        return []


def known_env():
    """The LOGPORT_* variables config.rs reads."""
    with open(os.path.join(ROOT, "crates/logport/src/config.rs")) as f:
        text = f.read()
    names = set(re.findall(r'"(LOGPORT_[A-Z0-9_]+)"', text))
    # Read by the binary outside config.rs (clap `env`, failpoints).
    names |= {"LOGPORT_CONFIG"}
    return names


def metric_names():
    names = set()
    for path in glob.glob(os.path.join(ROOT, "crates/**/*.rs"), recursive=True):
        with open(path) as f:
            names |= set(re.findall(r'"(logport_[a-z0-9_]+)"', f.read()))
    return names


def check_env(path, keys):
    known = known_env()
    for k in keys:
        if k.startswith("LOGPORT_") and k not in known:
            fail(path, f"{k} is not a variable logport reads (crates/logport/src/config.rs)")


def pinned(image):
    return ":" in image and not image.endswith(":latest")


def check_dockerfile(path):
    with open(path) as f:
        lines = [l.strip() for l in f if l.strip() and not l.strip().startswith("#")]
    args = dict(
        re.match(r"ARG\s+(\w+)=(\S+)", l).groups() for l in lines if re.match(r"ARG\s+\w+=", l)
    )
    stages = [l for l in lines if l.upper().startswith("FROM ")]
    if len(stages) < 2:
        fail(path, "must be a multi-stage build (a build stage and a runtime stage)")
    for s in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), "?"), s.split()[1])
        if not pinned(image):
            fail(path, f"base image `{image}` must carry a fixed tag")
    final = lines[lines.index(stages[-1]):] if stages else lines
    users = [l.split(None, 1)[1] for l in final if l.upper().startswith("USER ")]
    if not users:
        fail(path, "the final stage sets no USER (it would run as root)")
    elif users[-1].split(":")[0] in ("root", "0"):
        fail(path, "the final stage runs as root")
    if not any(l.upper().startswith("COPY --FROM=") for l in final):
        fail(path, "the final stage must copy the binary from the build stage")
    if not any(l.upper().startswith("ENTRYPOINT") for l in final):
        fail(path, "no ENTRYPOINT")
    if not any(l.upper().startswith("EXPOSE") for l in final):
        fail(path, "no EXPOSE")
    if any(re.search(r"apt-get install(?!.*--no-install-recommends)", l) for l in final):
        fail(path, "apt-get install without --no-install-recommends bloats the image")


def check_compose(path):
    docs = load_all(path)
    if len(docs) != 1:
        return fail(path, "expected one YAML document")
    c = docs[0]
    services = c.get("services") or {}
    need = {"clickhouse", "postgres", "minio", "logport-1", "logport-2", "prometheus"}
    for s in sorted(need - set(services)):
        fail(path, f"missing service `{s}`")
    logports = [n for n in services if n.startswith("logport")]
    stores = set()
    buckets = set()
    for name, svc in services.items():
        if not isinstance(svc, dict):
            fail(path, f"service `{name}` is not a mapping")
            continue
        if "image" not in svc and "build" not in svc:
            fail(path, f"service `{name}` has neither image nor build")
        if "image" in svc and "build" not in svc and not pinned(svc["image"]):
            fail(path, f"service `{name}`: image `{svc['image']}` must carry a fixed tag")
        if "build" in svc:
            b = svc["build"]
            ctx = os.path.normpath(os.path.join(DEPLOY, b.get("context", ".")))
            if not os.path.exists(os.path.join(ctx, b.get("dockerfile", "Dockerfile"))):
                fail(path, f"service `{name}`: no Dockerfile at {b.get('dockerfile')}")
        for v in svc.get("volumes", []) or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("./") or src.startswith("../"):
                if not os.path.exists(os.path.join(DEPLOY, src)):
                    fail(path, f"service `{name}` mounts {src}, which does not exist")
        for dep in svc.get("depends_on", []) or []:
            if dep not in services:
                fail(path, f"service `{name}` depends on unknown `{dep}`")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        check_env(path, env.keys())
        if name in logports:
            stores.add(env.get("LOGPORT_JOB_STORE_URL", ""))
            buckets.add(env.get("LOGPORT_OBJECT_STORE_URL", ""))
    if len(logports) >= 2:
        if len(stores) != 1 or not next(iter(stores)).startswith("postgres://"):
            fail(path, f"replicas must share one PostgreSQL job store, have {stores}")
        if len(buckets) != 1 or not next(iter(buckets)).startswith("s3://"):
            fail(path, f"replicas must share one S3 bucket, have {buckets}")


def check_k8s(paths):
    objs = []
    for p in paths:
        for d in load_all(p):
            if not isinstance(d, dict):
                fail(p, "a document is not a mapping")
                continue
            for k in ("apiVersion", "kind"):
                if not d.get(k):
                    fail(p, f"document without {k}")
            if not (d.get("metadata") or {}).get("name"):
                fail(p, "document without metadata.name")
            objs.append((p, d))
    by_kind = {}
    for p, d in objs:
        by_kind.setdefault(d.get("kind"), []).append((p, d))
    for kind in ("Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler"):
        if kind not in by_kind:
            fail(os.path.join(DEPLOY, "k8s"), f"no {kind}")
    names = {(d["kind"], d["metadata"]["name"]) for _, d in objs if d.get("metadata")}
    deployments = {}
    for p, d in by_kind.get("Deployment", []):
        spec = d.get("spec", {})
        tmpl = spec.get("template", {})
        labels = tmpl.get("metadata", {}).get("labels", {})
        sel = spec.get("selector", {}).get("matchLabels", {})
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            fail(p, "selector.matchLabels does not match the pod template labels")
        deployments[d["metadata"]["name"]] = labels
        pod = tmpl.get("spec", {})
        psc = pod.get("securityContext", {})
        for c in pod.get("containers", []):
            csc = c.get("securityContext", {})
            if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
                fail(p, f"container {c.get('name')}: runAsNonRoot is not set")
            if csc.get("allowPrivilegeEscalation") is not False:
                fail(p, f"container {c.get('name')}: allowPrivilegeEscalation must be false")
            if not pinned(c.get("image", "")):
                fail(p, f"container {c.get('name')}: image must carry a fixed tag")
            if "resources" not in c or "requests" not in c["resources"]:
                fail(p, f"container {c.get('name')}: no resource requests")
            ports = {pt.get("name") for pt in c.get("ports", [])} | {
                pt.get("containerPort") for pt in c.get("ports", [])
            }
            for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                pr = c.get(probe)
                if not pr:
                    fail(p, f"container {c.get('name')}: no {probe}")
                    continue
                get = pr.get("httpGet", {})
                if get.get("path") != want:
                    fail(p, f"{probe} must GET {want}")
                if get.get("port") not in ports:
                    fail(p, f"{probe} port {get.get('port')} is not a container port")
            for ef in c.get("envFrom", []):
                for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if ref in ef and (kind, ef[ref].get("name")) not in names:
                        fail(p, f"envFrom {ref} `{ef[ref].get('name')}` is not defined")
            check_env(p, [e.get("name", "") for e in c.get("env", [])])
    for kind in ("Service", "PodDisruptionBudget"):
        for p, d in by_kind.get(kind, []):
            spec = d.get("spec", {})
            sel = spec.get("selector", {})
            sel = sel.get("matchLabels", sel) if kind == "PodDisruptionBudget" else sel
            if not any(all(l.get(k) == v for k, v in sel.items()) for l in deployments.values()):
                fail(p, f"{kind} selector {sel} matches no Deployment's pods")
    for p, d in by_kind.get("HorizontalPodAutoscaler", []):
        ref = d.get("spec", {}).get("scaleTargetRef", {})
        if ref.get("kind") != "Deployment" or ref.get("name") not in deployments:
            fail(p, f"scaleTargetRef {ref} is not one of the Deployments")
        spec = d.get("spec", {})
        if spec.get("minReplicas", 1) < 2:
            fail(p, "minReplicas below 2 leaves no replica during a rollout")
    for kind in ("ConfigMap", "Secret"):
        for p, d in by_kind.get(kind, []):
            keys = list((d.get("data") or {}).keys()) + list((d.get("stringData") or {}).keys())
            check_env(p, keys)


def check_systemd(path):
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    try:
        cp.read(path)
    except configparser.Error as e:
        return fail(path, f"does not parse: {e}")
    for section, keys in (("Unit", ["Description"]), ("Service", ["ExecStart", "User"]),
                          ("Install", ["WantedBy"])):
        if section not in cp:
            fail(path, f"no [{section}]")
            continue
        for k in keys:
            if k not in cp[section]:
                fail(path, f"[{section}] has no {k}")
    if cp.has_option("Service", "User") and cp["Service"]["User"] in ("root", "0"):
        fail(path, "runs as root")
    if shutil.which("systemd-analyze"):
        # verify wants the ExecStart binary to exist: check the unit with /bin/true.
        with open(path) as f:
            text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", f.read(), flags=re.M)
        with tempfile.TemporaryDirectory() as d:
            unit = os.path.join(d, os.path.basename(path))
            with open(unit, "w") as f:
                f.write(text)
            r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True,
                               text=True)
            out = (r.stdout + r.stderr).strip()
            # Units it references (clickhouse-server, postgresql) need not exist here.
            problems = [l for l in out.splitlines() if l and "not found" not in l
                        and "Failed to create" not in l]
            if r.returncode != 0 and problems:
                fail(path, "systemd-analyze verify: " + "; ".join(problems))


def check_prometheus():
    cfg = os.path.join(DEPLOY, "prometheus/prometheus.yml")
    docs = load_all(cfg)
    if docs and not docs[0].get("scrape_configs"):
        fail(cfg, "no scrape_configs")
    rules = os.path.join(DEPLOY, "prometheus/alerts.yml")
    known = metric_names()
    for d in load_all(rules):
        for g in d.get("groups", []):
            for r in g.get("rules", []):
                if "alert" not in r or "expr" not in r:
                    fail(rules, f"rule without alert or expr: {r}")
                    continue
                for m in re.findall(r"\b(logport_[a-z0-9_]+)", r["expr"]):
                    base = re.sub(r"_(bucket|count|sum)$", "", m)
                    if m not in known and base not in known:
                        fail(rules, f"alert {r['alert']}: metric {m} is not registered anywhere")


def check_metric_docs():
    """Every metric the code registers is explained in docs/operations.md."""
    doc = os.path.join(ROOT, "docs/operations.md")
    with open(doc) as f:
        text = f.read()
    for m in sorted(metric_names()):
        if f"`{m}`" not in text:
            fail(doc, f"metric {m} is not in the metrics table")


def main():
    for p in glob.glob(os.path.join(DEPLOY, "**/*.y*ml"), recursive=True):
        load_all(p)
    check_dockerfile(os.path.join(DEPLOY, "Dockerfile"))
    check_compose(os.path.join(DEPLOY, "docker-compose.yml"))
    check_k8s(sorted(glob.glob(os.path.join(DEPLOY, "k8s/*.yaml"))))
    check_systemd(os.path.join(DEPLOY, "systemd/logport.service"))
    check_prometheus()
    check_metric_docs()
    if errors:
        print("deploy/ lint failed:", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)
        return 1
    print("deploy/ lint: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
