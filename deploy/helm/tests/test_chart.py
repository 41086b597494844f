"""Tests of the Helm chart (deploy/helm/tollgate), the alert rules and the dashboard.

Run by scripts/test-helm.sh (part of scripts/test.sh) in the virtualenv .venv-helm/:
- `helm_python` (PyPI `helm-python-sdk`) embeds Helm's own Go engine: `lint` is `helm lint`,
  `Chart.render` is `helm template` (values.schema.json included);
- `kubernetes_validate` checks every rendered object against the Kubernetes OpenAPI schema
  (strict: unknown fields are errors) of a fixed Kubernetes version;
- with TOLLGATE_BIN set (scripts/test.sh sets it), the rendered config files go through the real
  `tollgate check-config`.

The keys Tollgate accepts and its metric names are read from the Rust sources
(server/src/config/*.rs, server/src/metrics.rs), so the chart cannot drift from them silently.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "tollgate"
ALERTS = ROOT / "deploy" / "prometheus" / "tollgate-alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tollgate-dashboard.json"
KUBE_VERSION = "1.30.0"
RELEASE = "tg"
NAMESPACE = "gates"
FULLNAME = "tg-tollgate"
# Custom resources: kubernetes-validate has no schema for them; their shape is checked below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


# --- what Tollgate accepts, from its sources -------------------------------------------------


def _rust_struct_fields(source: str, struct: str) -> set[str]:
    m = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", source, re.S)
    assert m, f"struct {struct} not found in server/src/config/*.rs"
    return set(re.findall(r"^\s*pub (\w+):", m.group(1), re.M))


# The config contract's sources (its module splits by section: mod, parse, server, store, ...).
CONFIG_RS = "\n".join(
    f.read_text()
    for f in sorted((ROOT / "server" / "src" / "config").glob("*.rs"))
    if f.name != "tests.rs"
)
assert "pub struct ServerConfig" in CONFIG_RS, "server/src/config/*.rs not found"
_known = re.search(r"const KNOWN: \[&str; \d+\] = \[(.*?)\];", CONFIG_RS, re.S)
assert _known, "the KNOWN top-level keys list was not found in server/src/config/*.rs"
TOP_KEYS = set(re.findall(r'"(\w+)"', _known.group(1)))
SERVER_KEYS = _rust_struct_fields(CONFIG_RS, "ServerConfig")
STORE_KEYS = _rust_struct_fields(CONFIG_RS, "StoreConfig")
STORE_TLS_KEYS = _rust_struct_fields(CONFIG_RS, "StoreTlsConfig")
BREAKER_KEYS = _rust_struct_fields(CONFIG_RS, "CircuitBreakerConfig")
# server.tls (listener TLS: cert_file, key_file, client_ca_file) arrives with the listener-TLS
# work; the chart renders it only with tls.enabled. Accepted here whether or not this checkout's
# ServerConfig has it yet.
SERVER_TLS_KEYS = {"cert_file", "key_file", "client_ca_file"}
_server_body = re.search(r"pub struct ServerConfig \{(.*?)\n\}", CONFIG_RS, re.S)
_server_tls = _server_body and re.search(r"^\s*pub tls: Option<(\w+)>", _server_body.group(1), re.M)
if _server_tls:  # once the sources have it, they are the reference
    SERVER_TLS_KEYS = _rust_struct_fields(CONFIG_RS, _server_tls.group(1))
SERVER_KEYS_WITH_TLS = SERVER_KEYS | {"tls"}

METRICS_RS = (ROOT / "server" / "src" / "metrics.rs").read_text()
METRICS = set(re.findall(r'pub const \w+: &str = "(tollgate_\w+)";', METRICS_RS))

# The configuration reference (the README's table before the docs book).
README = (ROOT / "docs" / "reference" / "configuration.md").read_text()


def test_sources_parsed():
    # Guards the parsing above: a refactor of the Rust files must not make the checks vacuous.
    assert {"server", "store", "failure_mode", "apis", "usage_plans", "api_keys"} <= TOP_KEYS
    assert {"grpc_addr", "admin_addr", "metrics_addr", "admin_tokens_file"} <= SERVER_KEYS
    assert {"kind", "url", "master_name", "username", "password", "tls", "timeout"} <= STORE_KEYS
    assert {"ca_file", "cert_file", "key_file"} == STORE_TLS_KEYS
    assert {"failures", "open_for"} == BREAKER_KEYS
    assert len(METRICS) >= 20 and "tollgate_checks_total" in METRICS


# --- rendering ---------------------------------------------------------------------------------

_CHART = helm.Chart.load(CHART)


def render(values: dict | None = None) -> dict:
    """Renders the chart: {"objects": [manifest dicts], "notes": str}."""
    out = _CHART.render(values=values or {}, name=RELEASE, namespace=NAMESPACE)
    objects, notes = [], ""
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return {"objects": objects, "notes": notes}


def objs(rendered: dict, kind: str) -> list[dict]:
    return [o for o in rendered["objects"] if o["kind"] == kind]


def one(rendered: dict, kind: str) -> dict:
    found = objs(rendered, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def deployment(rendered: dict) -> dict:
    return one(rendered, "Deployment")


def container(rendered: dict) -> dict:
    containers = deployment(rendered)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def tollgate_config(rendered: dict) -> dict:
    cms = [c for c in objs(rendered, "ConfigMap") if c["metadata"]["name"] == FULLNAME]
    assert len(cms) == 1
    return yaml.safe_load(cms[0]["data"]["tollgate.yaml"])


def env(rendered: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(rendered).get("env", [])}


def checksum(values: dict) -> str:
    ann = deployment(render(values))["spec"]["template"]["metadata"]["annotations"]
    return ann["checksum/config"]


def merged(*layers: dict) -> dict:
    out: dict = {}
    for layer in layers:
        out = _deep_merge(out, layer)
    return out


def _deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# A self-contained Tollgate config (no files named), valid for `tollgate check-config`.
SAMPLE_CONFIG = {
    "failure_mode": "open",
    "server": {"region": "eu-west-1", "shutdown_grace": "15s"},
    "store": {"timeout": "40ms", "pool_size": 16, "circuit_breaker": {"failures": 3, "open_for": "2s"}},
    "apis": [
        {
            "id": "petstore",
            "stages": [
                {
                    "name": "prod",
                    "throttle": {"rate_limit": 1000, "burst_limit": 500},
                    "routes": [
                        {"method": "GET", "path": "/pets", "api_key_required": True},
                        {"method": "POST", "path": "/pets", "api_key_required": True,
                         "throttle": {"rate_limit": 100, "burst_limit": 50}},
                    ],
                }
            ],
        }
    ],
    "usage_plans": [
        {
            "id": "free",
            "name": "Free",
            "throttle": {"rate_limit": 2, "burst_limit": 5},
            "quota": {"limit": 1000, "period": "DAY", "offset": 0},
            "api_stages": [{"api_id": "petstore", "stage": "prod",
                            "method_throttle": {"/pets/POST": {"rate_limit": 0.5, "burst_limit": 1}}}],
        },
        {
            "id": "firehose",
            "throttle": {"rate_limit": 50000, "burst_limit": 10000},
            "quota": {"limit": 1000000000, "period": "MONTH"},
            "local_lease": {"units": 100, "max_age": "500ms"},
            "api_stages": [{"api_id": "petstore", "stage": "prod"}],
        },
    ],
    "api_keys": [
        {"id": "demo", "name": "Demo", "value": "demo-key-0123456789abcdef", "enabled": True,
         "usage_plans": ["free"]},
    ],
}

STANDALONE = {
    "replicaCount": 3,
    "redis": {"enabled": True, "url": "redis://redis-master.data.svc:6379/0", "password": "s3cret-redis-pw"},
    "admin": {"token": "s3cret-admin-token-0123456789"},
    "config": SAMPLE_CONFIG,
}
SENTINEL = {
    "replicaCount": 2,
    "redis": {
        "enabled": True,
        "mode": "sentinel",
        "sentinel": {"urls": ["redis://sentinel-0.data:26379", "redis://sentinel-1.data:26379",
                              "redis://sentinel-2.data:26379"], "masterName": "tollgate"},
        "username": "tollgate",
        "existingSecret": "redis-creds",
        "existingSecretPasswordKey": "password",
    },
    "admin": {"existingSecret": "tollgate-admin", "existingSecretTokensFileKey": "tokens"},
    "config": {"failure_mode": "closed"},
}
CLUSTER = {
    "redis": {
        "enabled": True,
        "mode": "cluster",
        "cluster": {"nodes": ["rediss://redis-0.data:6380", "rediss://redis-1.data:6380",
                              "rediss://redis-2.data:6380"]},
        "existingSecret": "redis-creds",
        "tls": {"existingSecret": "redis-tls", "caKey": "ca.crt", "certKey": "tls.crt", "keyKey": "tls.key"},
    },
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                    "targetMemoryUtilizationPercentage": 80},
    "podDisruptionBudget": {"minAvailable": 2},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}, "interval": "15s"},
    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
    "grafanaDashboard": {"enabled": True},
    "tls": {"enabled": True, "secretName": "tollgate-tls", "clientAuth": True},
    "service": {"exposeAdmin": False},
    "image": {"repository": "registry.example/tollgate", "digest": "sha256:" + "a" * 64},
    "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    "extraEnv": [{"name": "TOLLGATE_DEMO_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "demo"}}}],
    "extraVolumes": [{"name": "jwks", "configMap": {"name": "jwks"}}],
    "extraVolumeMounts": [{"name": "jwks", "mountPath": "/etc/tollgate/jwks", "readOnly": True}],
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gateway", "effect": "NoSchedule"}],
    "priorityClassName": "high",
}
MINIMAL_OFF = {
    "podDisruptionBudget": {"enabled": False},
    "serviceAccount": {"create": False},
    "topologySpread": {"enabled": False},
    "probes": {"startup": {"enabled": False}},
    "listenAddress": "[::]",
    "service": {"exposeAdmin": False},
}

VALUE_SETS = {
    "defaults": {},
    "standalone": STANDALONE,
    "sentinel": SENTINEL,
    "cluster": CLUSTER,
    "minimal": MINIMAL_OFF,
}
RENDERED = {name: render(values) for name, values in VALUE_SETS.items()}


# --- lint and Kubernetes schema ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_strict(name):
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, kube_version="v" + KUBE_VERSION)
    # Findings are data, not exceptions: under --strict every warning is an error. Severity
    # 1 (info) is only "icon is recommended".
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not bad and not report["errors"], report
    assert report["total_charts_linted"] == 1


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_manifest_is_valid_kubernetes(name):
    rendered = RENDERED[name]
    assert rendered["objects"], "nothing rendered"
    for o in rendered["objects"]:
        if o["kind"] in CRD_KINDS:
            assert o["apiVersion"] == "monitoring.coreos.com/v1"
            assert o["metadata"]["name"] and o["metadata"]["namespace"]
            continue
        try:
            kubernetes_validate.validate(o, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{o['kind']}/{o['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}")
        assert o["metadata"].get("namespace") == NAMESPACE, o["kind"]
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_notes_render(name):
    notes = RENDERED[name]["notes"]
    assert FULLNAME in notes and "grpc.health.v1.Health/Check" in notes


def test_notes_admin_command_follows_tls():
    # With tls.enabled the admin listener speaks TLS as well (server.tls covers it): the NOTES'
    # http:// command failed against it ("h2 protocol error").
    plain = render({"admin": {"token": "x" * 24}})["notes"]
    assert "TOLLGATE_ADMIN_ADDR=http://127.0.0.1:50052" in plain and "--ca-file" not in plain
    mtls = render({"admin": {"token": "x" * 24},
                   "tls": {"enabled": True, "secretName": "t", "clientAuth": True}})["notes"]
    assert "TOLLGATE_ADMIN_ADDR=https://127.0.0.1:50052" in mtls and "http://127.0.0.1:50052" not in mtls
    assert "--ca-file ca.crt --cert-file client.crt --key-file client.key" in mtls
    tls = render({"admin": {"token": "x" * 24}, "tls": {"enabled": True, "secretName": "t"}})["notes"]
    assert "--ca-file ca.crt" in tls and "--cert-file" not in tls


def test_default_objects():
    kinds = sorted(o["kind"] for o in RENDERED["defaults"]["objects"])
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]


# --- Deployment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_security_context(name):
    pod = deployment(RENDERED[name])["spec"]["template"]["spec"]
    c = container(RENDERED[name])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    # Every mount is read-only: the server writes nothing.
    assert all(m.get("readOnly") for m in c["volumeMounts"]), c["volumeMounts"]


def test_deployment_shape():
    d = deployment(RENDERED["standalone"])
    spec = d["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "tollgate", "app.kubernetes.io/instance": RELEASE}
    pod = spec["template"]["spec"]
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for t in pod["topologySpreadConstraints"]:
        assert t["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    c = container(RENDERED["standalone"])
    assert c["args"] == ["serve", "--config", "/etc/tollgate/config/tollgate.yaml"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert c["image"] == "tollgate:0.1.0"
    # The config is mounted as a directory (not subPath), so ConfigMap updates reach the file.
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/tollgate/config" and "subPath" not in mount
    assert pod["terminationGracePeriodSeconds"] > 15  # > shutdown_grace of SAMPLE_CONFIG
    assert "topologySpreadConstraints" not in deployment(RENDERED["minimal"])["spec"]["template"]["spec"]
    assert container(RENDERED["cluster"])["image"] == "registry.example/tollgate@sha256:" + "a" * 64


def _ports(rendered):
    return {p["name"]: p["containerPort"] for p in container(rendered)["ports"]}


@pytest.mark.parametrize("name", ["defaults", "standalone", "sentinel"])
def test_probes_are_grpc_health_on_the_grpc_port(name):
    c = container(RENDERED[name])
    grpc_port = _ports(RENDERED[name])["grpc"]
    assert c["readinessProbe"]["grpc"] == {"port": grpc_port, "service": ""}
    assert "tcpSocket" not in c["readinessProbe"]
    assert c["livenessProbe"]["failureThreshold"] >= 3
    assert c["readinessProbe"]["periodSeconds"] <= 10


def test_liveness_does_not_follow_the_store():
    # failure_mode open: health stays SERVING whatever Redis does → gRPC liveness.
    for name in ("defaults", "standalone"):
        c = container(RENDERED[name])
        assert c["livenessProbe"]["grpc"]["port"] == 50051
        assert c["startupProbe"]["grpc"]["port"] == 50051
    # failure_mode closed: health is NOT_SERVING while Redis is down → liveness (and startup) by
    # TCP, so a Redis outage does not restart every pod; readiness still follows the store.
    c = container(RENDERED["sentinel"])
    assert c["livenessProbe"] == {**c["livenessProbe"], "tcpSocket": {"port": "grpc"}}
    assert "grpc" not in c["livenessProbe"] and "grpc" not in c["startupProbe"]
    assert c["readinessProbe"]["grpc"]["port"] == 50051
    # Forced modes.
    c = container(render(merged(SENTINEL, {"probes": {"liveness": {"mode": "grpc"}}})))
    assert c["livenessProbe"]["grpc"]["port"] == 50051
    c = container(render({"probes": {"liveness": {"mode": "tcp"}}}))
    assert c["livenessProbe"]["tcpSocket"] == {"port": "grpc"}


def test_tls_switches_probes_to_tcp_and_renders_server_tls():
    rendered = RENDERED["cluster"]
    c = container(rendered)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["tcpSocket"] == {"port": "grpc"}, probe
        assert "grpc" not in c[probe]
    cfg = tollgate_config(rendered)
    assert cfg["server"]["tls"] == {
        "cert_file": "/etc/tollgate/tls/tls.crt",
        "key_file": "/etc/tollgate/tls/tls.key",
        "client_ca_file": "/etc/tollgate/tls/ca.crt",
    }
    assert set(cfg["server"]["tls"]) <= SERVER_TLS_KEYS
    vols = {v["name"]: v for v in deployment(rendered)["spec"]["template"]["spec"]["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == "tollgate-tls"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["tls"] == "/etc/tollgate/tls"
    # Without client auth, no client CA.
    cfg = tollgate_config(render({"tls": {"enabled": True, "secretName": "t"}}))
    assert "client_ca_file" not in cfg["server"]["tls"]
    assert "tls" not in tollgate_config(RENDERED["defaults"])["server"]


def test_probes_can_be_turned_off():
    c = container(RENDERED["minimal"])
    assert "startupProbe" not in c and "readinessProbe" in c


# --- Service and listeners ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "standalone", "sentinel"])
def test_service_named_ports(name):
    rendered = RENDERED[name]
    svc = one(rendered, "Service")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {"grpc", "admin", "metrics"}
    container_ports = _ports(rendered)
    for pname, p in ports.items():
        assert p["targetPort"] == pname and p["port"] == container_ports[pname]
    assert svc["spec"]["selector"] == deployment(rendered)["spec"]["selector"]["matchLabels"]
    cfg = tollgate_config(rendered)
    assert cfg["server"]["grpc_addr"] == "0.0.0.0:50051"
    assert cfg["server"]["admin_addr"] == "0.0.0.0:50052"
    assert cfg["server"]["metrics_addr"] == "0.0.0.0:9090"


def test_admin_not_exposed():
    for name, loopback in (("cluster", "127.0.0.1"), ("minimal", "[::1]")):
        rendered = RENDERED[name]
        svc_ports = {p["name"] for p in one(rendered, "Service")["spec"]["ports"]}
        assert svc_ports == {"grpc", "metrics"}
        assert "admin" not in _ports(rendered)
        assert tollgate_config(rendered)["server"]["admin_addr"] == f"{loopback}:50052"
    assert tollgate_config(RENDERED["minimal"])["server"]["grpc_addr"] == "[::]:50051"


def test_custom_ports():
    rendered = render({"ports": {"grpc": 8081, "admin": 8082, "metrics": 8083}})
    cfg = tollgate_config(rendered)
    assert (cfg["server"]["grpc_addr"], cfg["server"]["admin_addr"], cfg["server"]["metrics_addr"]) == (
        "0.0.0.0:8081", "0.0.0.0:8082", "0.0.0.0:8083")
    assert container(rendered)["readinessProbe"]["grpc"]["port"] == 8081
    assert {p["name"]: p["port"] for p in one(rendered, "Service")["spec"]["ports"]} == {
        "grpc": 8081, "admin": 8082, "metrics": 8083}


# --- the config file -------------------------------------------------------------------------------


def _assert_known_keys(cfg: dict):
    assert set(cfg) <= TOP_KEYS, set(cfg) - TOP_KEYS
    assert set(cfg["server"]) <= SERVER_KEYS_WITH_TLS, set(cfg["server"]) - SERVER_KEYS_WITH_TLS
    assert set(cfg["store"]) <= STORE_KEYS, set(cfg["store"]) - STORE_KEYS
    assert set(cfg["store"].get("tls", {})) <= STORE_TLS_KEYS
    assert set(cfg["store"].get("circuit_breaker", {})) <= BREAKER_KEYS
    # And every server/store key the chart writes is in the configuration reference's table.
    for section in ("server", "store"):
        for key in cfg[section]:
            if section == "server" and key == "tls":
                continue  # documented with the listener-TLS work
            assert f"`{section}.{key}`" in README or f"`{section}.{key}`, " in README, (section, key)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_config_has_only_keys_tollgate_accepts(name):
    cfg = tollgate_config(RENDERED[name])
    _assert_known_keys(cfg)
    assert "password" not in cfg["store"]


def test_redis_modes():
    cfg = tollgate_config(RENDERED["defaults"])
    assert cfg["store"]["kind"] == "memory" and "url" not in cfg["store"]

    cfg = tollgate_config(RENDERED["standalone"])
    assert cfg["store"]["kind"] == "redis"
    assert cfg["store"]["url"] == "redis://redis-master.data.svc:6379/0"
    assert "master_name" not in cfg["store"]

    cfg = tollgate_config(RENDERED["sentinel"])
    assert cfg["store"]["kind"] == "redis-sentinel"
    assert cfg["store"]["url"] == SENTINEL["redis"]["sentinel"]["urls"]
    assert cfg["store"]["master_name"] == "tollgate"
    assert cfg["store"]["username"] == "tollgate"
    assert cfg["failure_mode"] == "closed"

    cfg = tollgate_config(RENDERED["cluster"])
    assert cfg["store"]["kind"] == "redis-cluster"
    assert cfg["store"]["url"] == CLUSTER["redis"]["cluster"]["nodes"]
    assert "master_name" not in cfg["store"]
    assert cfg["store"]["tls"] == {
        "ca_file": "/etc/tollgate/redis-tls/ca.crt",
        "cert_file": "/etc/tollgate/redis-tls/tls.crt",
        "key_file": "/etc/tollgate/redis-tls/tls.key",
    }
    vols = {v["name"]: v for v in deployment(RENDERED["cluster"])["spec"]["template"]["spec"]["volumes"]}
    assert vols["redis-tls"]["secret"]["secretName"] == "redis-tls"


def test_user_config_passes_through():
    cfg = tollgate_config(RENDERED["standalone"])
    for key in ("apis", "usage_plans", "api_keys", "failure_mode"):
        assert cfg[key] == SAMPLE_CONFIG[key], key
    assert cfg["server"]["region"] == "eu-west-1" and cfg["server"]["shutdown_grace"] == "15s"
    assert cfg["store"]["timeout"] == "40ms" and cfg["store"]["circuit_breaker"] == {"failures": 3, "open_for": "2s"}
    # Large integers survive the template round trip (no 1e+09).
    text = next(c for c in objs(RENDERED["standalone"], "ConfigMap"))["data"]["tollgate.yaml"]
    assert "1000000000" in text and "e+" not in text


def test_checksum_rolls_pods_on_config_change():
    base = checksum(STANDALONE)
    assert checksum(STANDALONE) == base  # deterministic
    plans = copy.deepcopy(STANDALONE)
    plans["config"]["usage_plans"][0]["throttle"]["rate_limit"] = 3
    assert checksum(plans) != base
    assert checksum(merged(STANDALONE, {"redis": {"url": "redis://other:6379/0"}})) != base
    assert checksum(merged(STANDALONE, {"config": {"store": {"timeout": "80ms"}}})) != base
    # Not the config: no roll.
    assert checksum(merged(STANDALONE, {"replicaCount": 5})) == base


def test_checksum_without_roll_on_config_change():
    # rollOnConfigChange false: plans, keys and APIs reload from the mounted file, but server,
    # store and failure_mode changes (which need a restart) still roll the pods.
    quiet = merged(STANDALONE, {"rollOnConfigChange": False})
    base = checksum(quiet)
    plans = copy.deepcopy(quiet)
    plans["config"]["usage_plans"][0]["throttle"]["rate_limit"] = 3
    assert checksum(plans) == base
    assert checksum(merged(quiet, {"config": {"store": {"timeout": "80ms"}}})) != base
    assert checksum(merged(quiet, {"config": {"failure_mode": "closed"}})) != base
    assert checksum(merged(quiet, {"redis": {"url": "redis://other:6379/0"}})) != base
    assert checksum(merged(quiet, {"ports": {"grpc": 6000}})) != base


# --- secrets -----------------------------------------------------------------------------------------


def test_inline_secrets_go_into_a_chart_secret():
    rendered = RENDERED["standalone"]
    secret = one(rendered, "Secret")
    assert secret["metadata"]["name"] == FULLNAME
    assert set(secret["data"]) == {"redis-password", "admin-token"}
    e = env(rendered)
    assert e["TOLLGATE_STORE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": FULLNAME, "key": "redis-password"}
    assert e["TOLLGATE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": FULLNAME, "key": "admin-token"}
    # The values appear nowhere but in the Secret (base64).
    for o in rendered["objects"]:
        if o["kind"] != "Secret":
            text = json.dumps(o)
            assert "s3cret-redis-pw" not in text and "s3cret-admin-token" not in text, o["kind"]
    # No hash of the secret values either: an annotation sha256 of the rendered Secret (all of
    # it public text but the values) let anyone who can read pods confirm password guesses
    # offline (a weak redis.password was recovered from checksum/secret by rendering guesses).
    # Nothing in the pod template changes when only a secret value changes.
    ann = deployment(rendered)["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in ann
    other = merged(STANDALONE, {"redis": {"password": "another-pw"}, "admin": {"token": "another-token-0123456789"}})
    assert deployment(render(other))["spec"]["template"] == deployment(rendered)["spec"]["template"]


def test_existing_secrets_are_referenced_not_created():
    rendered = RENDERED["sentinel"]
    assert objs(rendered, "Secret") == []
    e = env(rendered)
    assert e["TOLLGATE_STORE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-creds", "key": "password"}
    ref = e["TOLLGATE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "tollgate-admin" and ref["key"] == "admin-token"
    # The tokens file: mounted from the Secret, named in the config.
    assert tollgate_config(rendered)["server"]["admin_tokens_file"] == "/etc/tollgate/admin/tokens"
    vols = {v["name"]: v for v in deployment(rendered)["spec"]["template"]["spec"]["volumes"]}
    assert vols["admin-tokens"]["secret"] == {
        "secretName": "tollgate-admin", "items": [{"key": "tokens", "path": "tokens"}]}
    assert "checksum/secret" not in deployment(rendered)["spec"]["template"]["metadata"]["annotations"]
    # Defaults: no secret at all, no secret env.
    assert objs(RENDERED["defaults"], "Secret") == []
    assert {"TOLLGATE_STORE_PASSWORD", "TOLLGATE_ADMIN_TOKEN"}.isdisjoint(env(RENDERED["defaults"]))
    # Only the admin token inline: the Secret holds only it.
    secret = one(render({"admin": {"token": "x" * 24}}), "Secret")
    assert set(secret["data"]) == {"admin-token"}


def test_extra_env_and_volumes():
    rendered = RENDERED["cluster"]
    assert env(rendered)["TOLLGATE_DEMO_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "keys"
    assert {"name": "jwks", "mountPath": "/etc/tollgate/jwks", "readOnly": True} in container(rendered)["volumeMounts"]
    assert env(rendered)["TOLLGATE_LOG_JSON"]["value"] == "true"


# --- optional objects ---------------------------------------------------------------------------------


def test_hpa_only_when_enabled():
    assert objs(RENDERED["standalone"], "HorizontalPodAutoscaler") == []
    hpa = one(RENDERED["cluster"], "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    resources = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert resources == {"cpu": 70, "memory": 80}
    # The HPA owns the replica count.
    assert "replicas" not in deployment(RENDERED["cluster"])["spec"]


def test_pdb_only_when_enabled():
    assert one(RENDERED["defaults"], "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    pdb = one(RENDERED["cluster"], "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment(RENDERED["cluster"])["spec"]["selector"]["matchLabels"]
    assert objs(RENDERED["minimal"], "PodDisruptionBudget") == []


def test_service_monitor_only_when_enabled():
    for name in ("defaults", "standalone", "sentinel", "minimal"):
        assert objs(RENDERED[name], "ServiceMonitor") == [] and objs(RENDERED[name], "PrometheusRule") == []
    sm = one(RENDERED["cluster"], "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    # The ServiceMonitor selects the chart's Service by its labels.
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= one(RENDERED["cluster"], "Service")["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s"}]


def test_prometheus_rule_and_dashboard_only_when_enabled():
    rule = one(RENDERED["cluster"], "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    dashboards = [c for c in objs(RENDERED["cluster"], "ConfigMap") if c["metadata"]["name"] == f"{FULLNAME}-dashboard"]
    assert len(dashboards) == 1
    assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboards[0]["data"]["tollgate-dashboard.json"]) == json.loads(DASHBOARD.read_text())
    assert [c["metadata"]["name"] for c in objs(RENDERED["defaults"], "ConfigMap")] == [FULLNAME]


def test_service_account():
    assert one(RENDERED["defaults"], "ServiceAccount")["automountServiceAccountToken"] is False
    assert objs(RENDERED["minimal"], "ServiceAccount") == []
    assert deployment(RENDERED["minimal"])["spec"]["template"]["spec"]["serviceAccountName"] == "default"


# --- refusals: schema and guards ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, where",
    [
        ({"replicaCount": "x"}, "/replicaCount"),
        ({"replicaCount": -1}, "/replicaCount"),
        ({"replicas": 3}, "replicas"),
        ({"redis": {"mode": "bogus"}}, "/redis/mode"),
        ({"redis": {"enabled": True, "url": "http://redis:6379"}}, "/redis/url"),
        ({"redis": {"cluster": {"nodes": ["redis-0:6379"]}}}, "/redis/cluster/nodes/0"),
        ({"redis": {"hosts": ["x"]}}, "hosts"),
        ({"ports": {"grpc": 70000}}, "/ports/grpc"),
        ({"probes": {"liveness": {"mode": "exec"}}}, "/probes/liveness/mode"),
        ({"config": {"failure_mode": "maybe"}}, "/config/failure_mode"),
        ({"config": {"usage_plan": []}}, "usage_plan"),
        ({"autoscaling": {"enabled": "yes"}}, "/autoscaling/enabled"),
        ({"podDisruptionBudget": {"maxUnavailable": "half"}}, "/podDisruptionBudget/maxUnavailable"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"service": {"type": "Ingress"}}, "/service/type"),
    ],
)
def test_schema_rejects(values, where):
    with pytest.raises(helm.HelmValuesError) as e:
        _CHART.render(values=values, name=RELEASE, namespace=NAMESPACE)
    assert where in str(e.value), str(e.value)
    # `helm lint` reports it as an error too.
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"], report


@pytest.mark.parametrize(
    "values, message",
    [
        ({"replicaCount": 3}, "embedded memory store"),
        ({"autoscaling": {"enabled": True}}, "embedded memory store"),
        ({"redis": {"enabled": True}}, "needs redis.url"),
        ({"redis": {"enabled": True, "mode": "cluster"}}, "needs redis.cluster.nodes"),
        ({"redis": {"enabled": True, "mode": "sentinel", "sentinel": {"urls": ["redis://s:26379"]}}},
         "needs redis.sentinel.masterName"),
        ({"redis": {"enabled": True, "mode": "sentinel", "sentinel": {"masterName": "m"}}},
         "needs redis.sentinel.urls"),
        ({"redis": {"enabled": True, "url": "redis://r:6379", "password": "p", "existingSecret": "s"}},
         "one of redis.password and redis.existingSecret"),
        ({"redis": {"enabled": True, "url": "rediss://r:6379", "tls": {"existingSecret": "t", "certKey": "tls.crt"}}},
         "go together"),
        ({"admin": {"token": "t", "existingSecret": "s"}}, "one of admin.token and admin.existingSecret"),
        ({"admin": {"existingSecretTokensFileKey": "tokens"}}, "set admin.existingSecret too"),
        ({"tls": {"enabled": True}}, "tls.enabled needs tls.secretName"),
        ({"ports": {"admin": 50051}}, "must differ"),
        ({"config": {"store": {"kind": "redis"}}}, "config.store.kind is set by the chart"),
        ({"config": {"store": {"url": "redis://r:6379"}}}, "config.store.url is set by the chart"),
        ({"config": {"store": {"password": "p"}}}, "config.store.password is set by the chart"),
        ({"config": {"server": {"grpc_addr": "0.0.0.0:1"}}}, "config.server.grpc_addr is set by the chart"),
        ({"config": {"server": {"admin_addr": "0.0.0.0:50051"}}}, "config.server.admin_addr is set by the chart"),
    ],
)
def test_guards(values, message):
    with pytest.raises(helm.HelmRenderError) as e:
        _CHART.render(values=values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(e.value), str(e.value)


def test_recreate_strategy():
    # docs/operations/upgrades.md: upgrades that must not mix versions use Recreate (rollingUpdate nulled).
    d = deployment(render({"strategy": {"type": "Recreate", "rollingUpdate": None}}))
    assert d["spec"]["strategy"] == {"type": "Recreate"}


def test_values_schema():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    # The schema's `config` sections are exactly Tollgate's top-level keys: a key Tollgate adds
    # must be added here too, and the schema never lets through a key Tollgate would refuse.
    assert set(schema["properties"]["config"]["properties"]) == TOP_KEYS
    assert schema["properties"]["config"]["additionalProperties"] is False
    # Every default value is described by the schema (no value outside it).
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"])
    jsonschema.Draft7Validator(schema).validate(defaults)


def test_memory_store_guard_allows_one_replica_and_redis_allows_many():
    assert deployment(render({"replicaCount": 1}))["spec"]["replicas"] == 1
    assert deployment(render({"replicaCount": 0}))["spec"]["replicas"] == 0
    many = render({"replicaCount": 5, "redis": {"enabled": True, "url": "redis://r:6379/0"}})
    assert deployment(many)["spec"]["replicas"] == 5


# --- the real binary ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "standalone", "sentinel", "minimal", "docs-example"])
def test_rendered_config_passes_tollgate_check_config(name):
    binary = os.environ.get("TOLLGATE_BIN")
    if not binary:
        pytest.skip("TOLLGATE_BIN is not set: `tollgate check-config` of the rendered configs not run")
    if not Path(binary).is_file():
        pytest.fail(f"TOLLGATE_BIN={binary} does not exist")
    if name == "docs-example":  # docs/guides/helm-kubernetes.md's my-values.yaml, with a petstore API and a plan
        rendered = render(yaml.safe_load(DOC_VALUE_BLOCKS[0]))
        assert tollgate_config(rendered)["usage_plans"]
    else:
        rendered = RENDERED[name]
    text = next(c for c in objs(rendered, "ConfigMap") if c["metadata"]["name"] == FULLNAME)["data"]["tollgate.yaml"]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tollgate.yaml"
        path.write_text(text)
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        r = subprocess.run([binary, "check-config", str(path)], env=clean_env,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n--- config ---\n{text}"


def test_check_config_rejects_a_bad_config():
    # The check above can fail: an unknown key makes `tollgate check-config` exit 64.
    binary = os.environ.get("TOLLGATE_BIN")
    if not binary:
        pytest.skip("TOLLGATE_BIN is not set")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tollgate.yaml"
        path.write_text("store:\n  kind: redis\n  nonsense: 1\n")
        r = subprocess.run([binary, "check-config", str(path)], capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")})
    assert r.returncode == 64, r


# --- the docs' examples ------------------------------------------------------------------------------

DOC_VALUE_BLOCKS = re.findall(
    r"```yaml helm\n(.*?)```", (ROOT / "docs" / "guides" / "helm-kubernetes.md").read_text(), re.S
)


@pytest.mark.parametrize("index", range(len(DOC_VALUE_BLOCKS)))
def test_docs_values_examples_render(index):
    # Each values example of docs/guides/helm-kubernetes.md renders (fragments over a minimal Redis setup)
    # into valid objects.
    block = yaml.safe_load(DOC_VALUE_BLOCKS[index])
    base = {"redis": {"enabled": True, "url": "redis://redis.data.svc:6379/0"}}
    rendered = render(merged(base, block))
    for o in rendered["objects"]:
        if o["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(o, KUBE_VERSION, strict=True)
    _assert_known_keys(tollgate_config(rendered))


def test_docs_kubectl_names_match_the_release_of_their_helm_install():
    # docs/guides/helm-kubernetes.md installs with `helm install tollgate ...`: the Deployment is then
    # `tollgate` (the release name contains the chart name), so `deploy/<release>-tollgate`
    # named a Deployment that does not exist.
    docs = "".join(
        (ROOT / "docs" / page).read_text()
        for page in ("guides/helm-kubernetes.md", "operations/upgrades.md", "operations/capacity.md",
                     "operations/monitoring.md")
    )
    assert re.findall(r"helm install (\S+) deploy/helm/tollgate", docs) and all(
        r == "tollgate" for r in re.findall(r"helm install (\S+) deploy/helm/tollgate", docs))
    out = _CHART.render(values={}, name="tollgate", namespace=NAMESPACE)
    name = yaml.safe_load(next(t for p, t in out.items() if p.endswith("/deployment.yaml")))["metadata"]["name"]
    refs = re.findall(r"kubectl [^`\n]*?deploy/([\w<>.-]+)", docs)
    assert refs and all(r == name for r in refs), (name, refs)
    # With TLS on, the probes are TCP connects; the doc says how the handshake counter treats them.
    assert "tollgate_tls_handshake_failures_total" in docs.split("### TLS on Tollgate's listeners")[1].split("###")[0]


def test_docs_have_values_examples():
    assert len(DOC_VALUE_BLOCKS) >= 5


# --- alert rules and dashboard ------------------------------------------------------------------------

_SUFFIXES = ("_bucket", "_count", "_sum")


def _metric_names(expr: str) -> set[str]:
    names = set()
    for m in re.findall(r"\btollgate_[a-z_]+", expr):
        for s in _SUFFIXES:
            if m.endswith(s) and m[: -len(s)] in METRICS:
                m = m[: -len(s)]
        names.add(m)
    return names


def _balanced(expr: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"[^"]*"', '""', expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in pairs:
            depth[pairs[ch]] -= 1
            if depth[pairs[ch]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def test_alert_rules():
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    alerts = {}
    for group in doc["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"] not in alerts
            alerts[rule["alert"]] = rule
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert _balanced(rule["expr"]), rule["alert"]
            if "for" in rule:
                assert re.fullmatch(r"\d+[smh]", rule["for"])
            names = _metric_names(rule["expr"])
            assert names and names <= METRICS, (rule["alert"], names - METRICS)
    # The issue's alerts: store errors, circuit open, p99 latency, authorizer errors.
    exprs = {name: r["expr"] for name, r in alerts.items()}
    assert "tollgate_store_errors_total" in exprs["TollgateStoreErrors"]
    assert "tollgate_store_circuit_open" in exprs["TollgateStoreCircuitOpen"]
    assert "tollgate_store_up" in exprs["TollgateStoreDown"]
    assert "histogram_quantile(0.99" in exprs["TollgateCheckLatencyHigh"]
    assert "tollgate_check_duration_seconds_bucket" in exprs["TollgateCheckLatencyHigh"]
    assert "tollgate_authorizer_errors_total" in exprs["TollgateAuthorizerErrors"]
    assert 'result="rejected"' in exprs["TollgateConfigReloadRejected"]
    # The chart's copy is the same file.
    assert (CHART / "files" / "tollgate-alerts.yaml").read_text() == ALERTS.read_text()


def test_latency_metrics_are_histograms():
    # The alert and dashboard use *_bucket series: the recorder must keep histogram buckets
    # (not summaries) for the *_duration_seconds metrics.
    assert 'set_buckets_for_metric(Matcher::Suffix("duration_seconds".into())' in METRICS_RS


def test_dashboard():
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    used = set()
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}"
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert _balanced(t["expr"]), (p["title"], t["expr"])
            names = _metric_names(t["expr"])
            assert names <= METRICS, (p["title"], names - METRICS)
            used |= names
    # Every metric Tollgate exports is on the dashboard.
    assert used == METRICS, METRICS - used
    titles = " ".join(p["title"] for p in panels).lower()
    for word in ("decision", "latency", "store errors", "store up", "circuit", "authorizer", "cache hit", "lease", "config reloads"):
        assert word in titles, word
    assert (CHART / "files" / "tollgate-dashboard.json").read_text() == DASHBOARD.read_text()
