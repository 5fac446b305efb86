"""One real mesh for the whole integration run: etcd, the six services (two
coordinator replicas), Envoy and a loopback OTLP receiver, on free loopback
ports under a temp folder; torn down at the end. Tests isolate by tenant."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from deploy.client import MeshClient, MeshConnection
from deploy.mesh import Mesh
from healing_guard.tenancy.v1 import tenancy_pb2
from services.common.tokens import load_signer
from tests.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("mesh")
    mesh = Mesh(run_dir=base / "run", pki_dir=base / "pki", envoy_base_id=(os.getpid() % 50000) + 5000,
                extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200",
                           "HG_SETTING_LEASE_TTL_SECONDS": "3"})
    try:
        mesh.up()
        yield mesh
    finally:
        mesh.down()
        logs = os.environ.get("HG_KEEP_LOGS")
        if logs:
            shutil.copytree(mesh.log_dir, Path(logs), dirs_exist_ok=True)


@pytest.fixture(scope="session")
def connection(mesh: Mesh) -> MeshConnection:
    return MeshConnection(gateway=mesh.gateway_address, cacert=mesh.pki.ca, cert=mesh.pki.cert("operator"),
                          key=mesh.pki.key("operator"), token=mesh.operator_token)


@pytest.fixture(scope="session")
def signer(mesh: Mesh):  # type: ignore[no-untyped-def]
    return load_signer(mesh.pki.signing_key, mesh.pki.jwks)


@pytest.fixture(scope="session")
def admin(connection: MeshConnection, mesh: Mesh) -> Iterator[MeshClient]:
    with MeshClient(connection, token=mesh.admin_token) as client:
        yield client


@pytest.fixture()
def tenant(admin: MeshClient) -> str:
    """A fresh tenant per test, so tests never see each other's data."""
    tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    admin.tenancy.CreateTenant(tenancy_pb2.CreateTenantRequest(tenant_id=tenant_id, plan="team"),
                               metadata=admin.metadata, timeout=10)
    return tenant_id


@pytest.fixture()
def operator(connection: MeshConnection, signer, tenant: str) -> Iterator[MeshClient]:  # type: ignore[no-untyped-def]
    token = signer.mint(subject="ci-bot", tenant=tenant, roles=["operator", "viewer"], ttl_seconds=3600)
    with MeshClient(connection, token=token) as client:
        yield client


def grpcurl(mesh: Mesh, *args: str, token: str | None = None, service: str | None = None) -> list[str]:
    argv = [str(VENV_BIN / "grpcurl"), "-cacert", str(mesh.pki.ca), "-cert", str(mesh.pki.cert("operator")),
            "-key", str(mesh.pki.key("operator"))]
    if token:
        argv += ["-H", f"authorization: Bearer {token}"]
    if service:
        argv += ["-H", f"x-hg-service: {service}"]
    return argv + [mesh.gateway_address, *args]


def status_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK
