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


def _refusal_within(call, bound_s: float, what: str) -> tuple[grpc.RpcError, float]:  # type: ignore[no-untyped-def]
    """Poll `call` until it is refused; give up after `bound_s` saying what still answered."""
    started = time.monotonic()
    while True:
        try:
            call()
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.PERMISSION_DENIED:
                raise
            return error, time.monotonic() - started
        if time.monotonic() - started > bound_s:
            raise AssertionError(f"{what} still answered {bound_s:.0f} s after SuspendTenant")
        time.sleep(0.1)


def test_a_suspended_tenants_tokens_are_refused_by_every_service_within_the_staleness_bound(
    admin, connection, signer, tenant: str, operator
) -> None:  # type: ignore[no-untyped-def]
    from deploy.client import MeshClient
    from healing_guard.audit.v1 import audit_pb2
    from healing_guard.detector.v1 import detector_pb2
    from services.common.security import RESYNC_INTERVAL_S

    other_tenant = f"t-{uuid.uuid4().hex[:10]}"
    admin.tenancy.CreateTenant(
        tenancy_pb2.CreateTenantRequest(tenant_id=other_tenant, plan="team"), metadata=admin.metadata, timeout=10
    )

    def calls(client: MeshClient) -> dict[str, object]:
        md = client.metadata
        return {
            "detector.ListClusters": lambda: client.detector.ListClusters(
                detector_pb2.ListClustersRequest(), metadata=md, timeout=10
            ),
            "planner.GetPolicy": lambda: client.planner.GetPolicy(
                planner_pb2.GetPolicyRequest(), metadata=md, timeout=10
            ),
            "audit.GetSignedTreeHead": lambda: client.audit.GetSignedTreeHead(
                audit_pb2.GetSignedTreeHeadRequest(), metadata=md, timeout=10
            ),
        }

    suspended_calls = calls(operator)
    for call in suspended_calls.values():
        call()  # admitted before the suspension (and now in every verifier's cache)
    since = time.time()
    admin.tenancy.SuspendTenant(
        tenancy_pb2.SuspendTenantRequest(tenant_id=tenant, reason="unpaid invoice 42"),
        metadata=admin.metadata,
        timeout=10,
    )
    # The stated bound: one watch event normally; a resync interval plus one etcd read at worst.
    bound = RESYNC_INTERVAL_S + 5.0
    for name, call in suspended_calls.items():
        error, _ = _refusal_within(call, bound, f"{name} for suspended tenant {tenant}")
        assert f"tenant {tenant!r} is suspended: unpaid invoice 42" in error.details(), name

    other_token = signer.mint(subject="ci-bot", tenant=other_tenant, roles=["operator", "viewer"], ttl_seconds=600)
    with MeshClient(connection, token=other_token) as other:
        for call in calls(other).values():
            call()  # another tenant is untouched

    deadline = time.monotonic() + 15
    while True:
        events = admin.tenancy.ListSecurityEvents(
            tenancy_pb2.ListSecurityEventsRequest(tenant_id=tenant, since=timestamp(since - 1)),
            metadata=admin.metadata,
            timeout=10,
        ).events
        recorded = [e for e in events if e.kind == "suspended_tenant_use"]
        if recorded:
            break
        assert time.monotonic() < deadline, f"no suspended_tenant_use security event for {tenant} within 15 s"
        time.sleep(0.3)
    assert "ci-bot" in recorded[0].detail and recorded[0].response == "refused"

    resumed = admin.tenancy.UpdateTenant(
        tenancy_pb2.UpdateTenantRequest(
            tenant=tenancy_pb2.Tenant(tenant_id=tenant, state=tenancy_pb2.TENANT_STATE_ACTIVE)
        ),
        metadata=admin.metadata,
        timeout=10,
    )
    assert resumed.state == tenancy_pb2.TENANT_STATE_ACTIVE and resumed.suspended_reason == ""
    deadline = time.monotonic() + bound
    while True:
        try:
            suspended_calls["planner.GetPolicy"]()
            break
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.PERMISSION_DENIED
            assert time.monotonic() < deadline, f"tenant {tenant} still refused {bound:.0f} s after resuming"
            time.sleep(0.1)
