"""Tenancy in the real mesh: parallel ConsumeQuota over gRPC, RetryInfo, tenant state in
etcd, issued tokens working through the gateway, bad input refused with nothing stored."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from deploy.mesh import Mesh
from healing_guard.planner.v1 import planner_pb2
from healing_guard.tenancy.v1 import tenancy_pb2, tenancy_pb2_grpc
from services.common.convert import timestamp
from tests.integration.conftest import VENV_BIN

pytestmark = pytest.mark.integration
RES = tenancy_pb2.RESOURCE_ACTIONS_PER_DAY


def detector_identity(mesh: Mesh) -> tuple[grpc.Channel, tuple[tuple[str, str], ...]]:
    """What the detector itself uses to call tenancy: its cert, its service token."""
    credentials = grpc.ssl_channel_credentials(
        mesh.pki.ca.read_bytes(),
        mesh.pki.key("detector").read_bytes(),
        mesh.pki.cert("detector").read_bytes(),
    )
    channel = grpc.secure_channel(
        f"127.0.0.1:{mesh.ports['tenancy']}",
        credentials,
        options=[("grpc.ssl_target_name_override", "tenancy.healing-guard.local")],
    )
    token = (mesh.run_dir / "tokens" / "detector.jwt").read_text().strip()
    return channel, (("authorization", f"Bearer {token}"),)


def test_parallel_consume_quota_over_grpc_never_overspends(mesh: Mesh, admin, tenant: str) -> None:  # type: ignore[no-untyped-def]
    admin.tenancy.SetQuota(
        tenancy_pb2.SetQuotaRequest(tenant_id=tenant, resource=RES, limit=30),
        metadata=admin.metadata,
        timeout=10,
    )
    channel, metadata = detector_identity(mesh)
    stub = tenancy_pb2_grpc.TenancyStub(channel)
    outcomes: list[str] = []
    retry_delays: list[float] = []
    lock = threading.Lock()

    def consumer() -> None:
        for _ in range(10):
            request = tenancy_pb2.ConsumeQuotaRequest(
                tenant_id=tenant, resource=RES, amount=1, request_id=uuid.uuid4().hex
            )
            try:
                stub.ConsumeQuota(request, metadata=metadata, timeout=20)
                result = "granted"
            except grpc.RpcError as error:
                result = error.code().name
                status = rpc_status.from_call(error)
                for detail in status.details if status else []:
                    if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                        info = error_details_pb2.RetryInfo()
                        detail.Unpack(info)
                        with lock:
                            retry_delays.append(info.retry_delay.seconds)
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=consumer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    channel.close()
    assert not any(thread.is_alive() for thread in threads)
    assert outcomes.count("granted") == 30
    assert outcomes.count("RESOURCE_EXHAUSTED") == 50
    assert len(retry_delays) == 50 and all(0 < delay <= 86_400 for delay in retry_delays)
    end = time.time() + 60
    usage = admin.tenancy.GetUsage(
        tenancy_pb2.GetUsageRequest(
            tenant_id=tenant, period_start=timestamp(end - 3600), period_end=timestamp(end)
        ),
        metadata=admin.metadata,
        timeout=10,
    )
    assert [(u.resource, u.amount) for u in usage.usage] == [(RES, 30)]
    bill = admin.tenancy.BillingReport(
        tenancy_pb2.BillingReportRequest(
            tenant_id=tenant, period_start=timestamp(end - 3600), period_end=timestamp(end)
        ),
        metadata=admin.metadata,
        timeout=10,
    )
    assert bill.plan == "team" and round(bill.total_usd, 6) == 0.3 and len(bill.events_digest) == 64


def _etcd_get(mesh: Mesh, key: str) -> str:
    result = subprocess.run(
        [
            str(VENV_BIN / "etcdctl"),
            f"--endpoints=127.0.0.1:{mesh.ports['etcd']}",
            "get",
            key,
            "--print-value-only",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_tenant_plan_limits_and_config_are_published_to_etcd(mesh: Mesh, admin, tenant: str) -> None:  # type: ignore[no-untyped-def]
    admin.tenancy.UpdateTenant(
        tenancy_pb2.UpdateTenantRequest(
            tenant=tenancy_pb2.Tenant(
                tenant_id=tenant, config={"region": "eu-west", "secret.gitlab_token": "glpat-very-secret"}
            )
        ),
        metadata=admin.metadata,
        timeout=10,
    )
    admin.tenancy.SetQuota(
        tenancy_pb2.SetQuotaRequest(tenant_id=tenant, resource=RES, limit=77),
        metadata=admin.metadata,
        timeout=10,
    )
    prefix = f"/healing-guard/config/tenants/{tenant}/"
    assert json.loads(_etcd_get(mesh, prefix + "plan")) == "team"
    assert json.loads(_etcd_get(mesh, prefix + "limits"))["RESOURCE_ACTIONS_PER_DAY"] == 77
    config = json.loads(_etcd_get(mesh, prefix + "config"))
    assert config == {"region": "eu-west"}  # secrets never leave tenancy's sealed table
    shown = admin.tenancy.GetTenant(
        tenancy_pb2.GetTenantRequest(tenant_id=tenant), metadata=admin.metadata, timeout=10
    )
    assert shown.config["secret.gitlab_token"] == "(encrypted)"


def test_an_issued_token_works_through_the_gateway_and_jwks_is_published(
    admin, connection, tenant: str
) -> None:  # type: ignore[no-untyped-def]
    from deploy.client import MeshClient

    issued = admin.tenancy.IssueToken(
        tenancy_pb2.IssueTokenRequest(
            tenant_id=tenant, subject="release-bot", roles=["viewer"], ttl_seconds=300
        ),
        metadata=admin.metadata,
        timeout=10,
    )
    with MeshClient(connection, token=issued.token) as client:
        policy = client.planner.GetPolicy(
            planner_pb2.GetPolicyRequest(), metadata=client.metadata, timeout=10
        )
    assert policy.tenant_id == tenant
    jwks = json.loads(
        admin.tenancy.GetJwks(tenancy_pb2.GetJwksRequest(), metadata=admin.metadata, timeout=10).jwks_json
    )
    assert jwks["keys"] and all(k["alg"] == "EdDSA" and "d" not in k for k in jwks["keys"])


@pytest.mark.parametrize(
    ("make_request", "method", "code", "field"),
    [
        (
            lambda t: tenancy_pb2.CreateTenantRequest(tenant_id=t, plan="team"),
            "CreateTenant",
            grpc.StatusCode.ALREADY_EXISTS,
            "already exists",
        ),
        (
            lambda t: tenancy_pb2.GetTenantRequest(tenant_id="t-does-not-exist"),
            "GetTenant",
            grpc.StatusCode.NOT_FOUND,
            "not found",
        ),
        (
            lambda t: tenancy_pb2.SetQuotaRequest(tenant_id=t, resource=RES, limit=-5),
            "SetQuota",
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit: must be between 0 and",
        ),
        (
            lambda t: tenancy_pb2.SetQuotaRequest(tenant_id=t, resource=RES, limit=10**15),
            "SetQuota",
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit: must be between 0 and",
        ),
        (
            lambda t: tenancy_pb2.BillingReportRequest(
                tenant_id=t, period_start=timestamp(2e9), period_end=timestamp(1e9)
            ),
            "BillingReport",
            grpc.StatusCode.INVALID_ARGUMENT,
            "period_end: must be after period_start",
        ),
        (
            lambda t: tenancy_pb2.IssueTokenRequest(tenant_id=t, subject="x", roles=["service"]),
            "IssueToken",
            grpc.StatusCode.INVALID_ARGUMENT,
            "roles[0]",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(
    admin,
    tenant: str,
    make_request,  # type: ignore[no-untyped-def]
    method: str,
    code,
    field: str,
) -> None:
    before = admin.tenancy.GetTenant(
        tenancy_pb2.GetTenantRequest(tenant_id=tenant), metadata=admin.metadata, timeout=10
    )
    with pytest.raises(grpc.RpcError) as caught:
        getattr(admin.tenancy, method)(make_request(tenant), metadata=admin.metadata, timeout=10)
    assert caught.value.code() is code and field in caught.value.details()
    after = admin.tenancy.GetTenant(
        tenancy_pb2.GetTenantRequest(tenant_id=tenant), metadata=admin.metadata, timeout=10
    )
    assert after == before
    end = time.time() + 60
    usage = admin.tenancy.GetUsage(
        tenancy_pb2.GetUsageRequest(
            tenant_id=tenant, period_start=timestamp(end - 3600), period_end=timestamp(end)
        ),
        metadata=admin.metadata,
        timeout=10,
    )
    assert list(usage.usage) == []


def test_a_token_request_for_roles_the_caller_does_not_hold_is_refused(
    connection, signer, tenant: str
) -> None:  # type: ignore[no-untyped-def]
    from deploy.client import MeshClient

    tenant_admin = signer.mint("acme-admin", tenant, ["admin", "viewer"])
    with MeshClient(connection, token=tenant_admin) as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.tenancy.IssueToken(
                tenancy_pb2.IssueTokenRequest(subject="bot", roles=["operator"]),
                metadata=client.metadata,
                timeout=10,
            )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "cannot issue roles you do not hold: operator" in caught.value.details()
