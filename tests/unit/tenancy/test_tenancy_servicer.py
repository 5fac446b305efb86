"""The Tenancy servicer against a real (temporary) store, called as the Guard would leave it."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from healing_guard.tenancy.v1 import tenancy_pb2
from services.common.convert import timestamp
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
)
from services.common.tokens import TokenVerifier
from tests.unit.tenancy.conftest import act_as, platform_admin

RES = tenancy_pb2.RESOURCE_ACTIONS_PER_DAY


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def create(servicer, tenant_id: str = "acme", plan: str = "team"):  # type: ignore[no-untyped-def]
    platform_admin()
    return run(servicer.CreateTenant(tenancy_pb2.CreateTenantRequest(tenant_id=tenant_id, plan=plan), None))


def rows(store, table: str) -> int:  # type: ignore[no-untyped-def]
    with store.db.read() as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_create_get_and_duplicate_tenant(servicer, store) -> None:  # type: ignore[no-untyped-def]
    assert create(servicer).plan == "team"
    with pytest.raises(AlreadyExists, match="'acme' already exists"):
        create(servicer)
    assert rows(store, "tenants") == 1
    act_as("acme", "viewer")
    assert run(servicer.GetTenant(tenancy_pb2.GetTenantRequest(), None)).tenant_id == "acme"
    with pytest.raises(PermissionDenied, match="does not match your token's tenant"):
        run(servicer.GetTenant(tenancy_pb2.GetTenantRequest(tenant_id="globex"), None))


@pytest.mark.parametrize(
    ("tenant_id", "plan", "field"),
    [
        ("", "team", "tenant_id"),
        ("Bad_Id", "team", "tenant_id"),
        ("platform", "team", "tenant_id"),
        ("ok-id", "gold", "plan"),
    ],
)
def test_bad_tenants_name_the_field_and_store_nothing(servicer, store, tenant_id, plan, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as caught:
        create(servicer, tenant_id, plan)
    assert caught.value.field == field
    assert rows(store, "tenants") == 0


def test_unknown_tenant_is_not_found(servicer) -> None:  # type: ignore[no-untyped-def]
    platform_admin()
    with pytest.raises(NotFound, match="'ghost' not found"):
        run(servicer.GetTenant(tenancy_pb2.GetTenantRequest(tenant_id="ghost"), None))
    with pytest.raises(NotFound):
        run(servicer.SetQuota(tenancy_pb2.SetQuotaRequest(tenant_id="ghost", resource=RES, limit=5), None))


@pytest.mark.parametrize("limit", [-5, 10**13])
def test_negative_or_absurd_quota_is_refused_and_nothing_changes(servicer, store, limit) -> None:  # type: ignore[no-untyped-def]
    create(servicer)
    with pytest.raises(InvalidArgument, match=f"limit: must be between 0 and 1000000000000, got {limit}"):
        run(servicer.SetQuota(tenancy_pb2.SetQuotaRequest(tenant_id="acme", resource=RES, limit=limit), None))
    assert rows(store, "quota_limits") == 0


def test_tenants_cannot_raise_their_own_quota(servicer, store) -> None:  # type: ignore[no-untyped-def]
    create(servicer)
    act_as("acme", "admin")
    with pytest.raises(PermissionDenied, match="cannot raise their own quotas"):
        run(servicer.SetQuota(tenancy_pb2.SetQuotaRequest(resource=RES, limit=10**9), None))
    assert rows(store, "quota_limits") == 0


def test_consume_quota_is_idempotent_and_says_when_to_retry(servicer, store, clock) -> None:  # type: ignore[no-untyped-def]
    create(servicer)
    run(servicer.SetQuota(tenancy_pb2.SetQuotaRequest(tenant_id="acme", resource=RES, limit=3), None))
    act_as("*", "service", subject="detector")
    def ask(rid: str, n: int = 1):  # type: ignore[no-untyped-def]
        request = tenancy_pb2.ConsumeQuotaRequest(tenant_id="acme", resource=RES, amount=n, request_id=rid)
        return run(servicer.ConsumeQuota(request, None))
    assert ask("a", 2).quota.used == 2
    again = ask("a", 2)
    assert again.duplicate and again.quota.used == 2
    with pytest.raises(QuotaExceeded) as caught:
        ask("b", 2)
    assert caught.value.retry_after_seconds > 0 and "2 of 3 used, 2 more asked" in caught.value.message
    assert ask("c", 1).quota.used == 3


def test_issue_token_only_for_roles_held_and_the_token_verifies(servicer, store) -> None:  # type: ignore[no-untyped-def]
    create(servicer)
    act_as("acme", "admin", "viewer", subject="acme-admin")
    with pytest.raises(PermissionDenied, match="cannot issue roles you do not hold: operator"):
        run(servicer.IssueToken(tenancy_pb2.IssueTokenRequest(subject="bot", roles=["operator"]), None))
    with pytest.raises(InvalidArgument, match=r"roles\[0\]"):
        run(servicer.IssueToken(tenancy_pb2.IssueTokenRequest(subject="bot", roles=["service"]), None))
    assert rows(store, "issued_tokens") == 0
    issued = run(
        servicer.IssueToken(
            tenancy_pb2.IssueTokenRequest(subject="bot", roles=["viewer"], ttl_seconds=600), None
        )
    )
    jwks = json.loads(run(servicer.GetJwks(tenancy_pb2.GetJwksRequest(), None)).jwks_json)
    principal = TokenVerifier(jwks, clock=servicer.clock).verify(issued.token)
    assert (principal.tenant, principal.roles) == ("acme", frozenset({"viewer"}))
    assert servicer.audit.entries[-1][0] == "TOKEN_ISSUED"


def test_suspended_tenants_get_no_tokens(servicer) -> None:  # type: ignore[no-untyped-def]
    create(servicer)
    run(servicer.SuspendTenant(tenancy_pb2.SuspendTenantRequest(tenant_id="acme", reason="unpaid"), None))
    with pytest.raises(FailedPrecondition, match="suspended: unpaid"):
        run(
            servicer.IssueToken(
                tenancy_pb2.IssueTokenRequest(tenant_id="acme", subject="b", roles=["viewer"]), None
            )
        )


def test_a_tenant_admin_cannot_revoke_another_tenants_token(servicer, store) -> None:  # type: ignore[no-untyped-def]
    create(servicer, "acme")
    create(servicer, "globex")
    issued = run(
        servicer.IssueToken(
            tenancy_pb2.IssueTokenRequest(tenant_id="globex", subject="b", roles=["viewer"]), None
        )
    )
    act_as("acme", "admin")
    with pytest.raises(PermissionDenied, match="was not issued to tenant 'acme'"):
        run(servicer.RevokeToken(tenancy_pb2.RevokeTokenRequest(token_id=issued.token_id), None))
    assert not store.is_revoked(issued.token_id)
    act_as("globex", "admin")
    run(servicer.RevokeToken(tenancy_pb2.RevokeTokenRequest(token_id=issued.token_id, reason="leaked"), None))
    assert store.is_revoked(issued.token_id)
    assert servicer.publisher.revocations.is_revoked(issued.token_id)
    assert servicer.audit.entries[-1][0] == "TOKEN_REVOKED"


def test_tenant_secrets_are_sealed_at_rest_and_never_returned(servicer, store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    create(servicer)
    act_as("acme", "admin")
    change = tenancy_pb2.Tenant(config={"secret.github_token": "ghp_supersecret123", "region": "eu"})
    answer = run(servicer.UpdateTenant(tenancy_pb2.UpdateTenantRequest(tenant=change), None))
    assert answer.config["secret.github_token"] == "(encrypted)" and answer.config["region"] == "eu"
    store.db.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("tenancy.sqlite3*"))
    assert b"ghp_supersecret123" not in raw
    reopened = sqlite3.connect(tmp_path / "tenancy.sqlite3")
    sealed = reopened.execute("SELECT sealed FROM tenant_secrets").fetchone()[0]
    assert (
        servicer.envelope.decrypt("acme", sealed, b"tenant-secret:secret.github_token")
        == b"ghp_supersecret123"
    )
    reopened.close()


def test_bad_config_changes_store_nothing(servicer, store) -> None:  # type: ignore[no-untyped-def]
    create(servicer)
    act_as("acme", "admin")
    with pytest.raises(InvalidArgument, match="tenant.config"):
        run(
            servicer.UpdateTenant(
                tenancy_pb2.UpdateTenantRequest(
                    tenant=tenancy_pb2.Tenant(config={"secret.ok": "x", "Bad Key": "y"})
                ),
                None,
            )
        )
    assert rows(store, "tenant_secrets") == 0
    with pytest.raises(PermissionDenied, match="plan"):
        run(
            servicer.UpdateTenant(
                tenancy_pb2.UpdateTenantRequest(tenant=tenancy_pb2.Tenant(plan="enterprise")), None
            )
        )
    platform_admin()
    assert run(servicer.GetTenant(tenancy_pb2.GetTenantRequest(tenant_id="acme"), None)).plan == "team"


def test_billing_period_that_ends_before_it_starts_is_refused(servicer) -> None:  # type: ignore[no-untyped-def]
    create(servicer)
    act_as("acme", "admin")
    request = tenancy_pb2.BillingReportRequest(period_start=timestamp(2000.0), period_end=timestamp(1000.0))
    with pytest.raises(InvalidArgument, match="period_end: must be after period_start"):
        run(servicer.BillingReport(request, None))


def test_billing_report_is_reproducible_from_stored_events(servicer, store, clock) -> None:  # type: ignore[no-untyped-def]
    create(servicer)
    act_as("*", "service", subject="detector")
    for index in range(5):
        clock.now += 1
        run(
            servicer.ConsumeQuota(
                tenancy_pb2.ConsumeQuotaRequest(
                    tenant_id="acme", resource=RES, amount=2, request_id=f"r{index}"
                ),
                None,
            )
        )
    act_as("acme", "admin")
    period = dict(period_start=timestamp(clock.now - 100), period_end=timestamp(clock.now + 1))
    first = run(servicer.BillingReport(tenancy_pb2.BillingReportRequest(**period), None))
    second = run(servicer.BillingReport(tenancy_pb2.BillingReportRequest(**period), None))
    assert first == second and len(first.events_digest) == 64
    assert [(line.quantity, line.amount_usd) for line in first.lines] == [(10, 0.1)]
    usage = run(servicer.GetUsage(tenancy_pb2.GetUsageRequest(**period), None))
    assert [(u.resource, u.amount) for u in usage.usage] == [(RES, 10)]


def test_consume_quota_does_not_block_the_event_loop(servicer, store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # ConsumeQuota runs on every reported failure; its fsync'd write must not stall
    # every other call the process is serving.
    import asyncio
    import threading

    from healing_guard.tenancy.v1 import tenancy_pb2 as pb
    from services.common import auth as _auth
    from services.common.tokens import Principal as _Principal

    _auth.set_principal(_Principal("platform-admin", _auth.PLATFORM_TENANT, frozenset({"admin"}), "j", 2e9))
    asyncio.run(servicer.CreateTenant(pb.CreateTenantRequest(tenant_id="slowdisk", plan="team"), None))
    real = store.consume
    loop_kept_running = threading.Event()

    def slow_consume(*args, **kwargs):  # type: ignore[no-untyped-def]
        # A disk that stays slow until the event loop has served five other ticks: if the
        # write ran on the loop, no tick could happen and this wait would give up.
        assert loop_kept_running.wait(10), "the event loop made no progress during the quota write"
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "consume", slow_consume)

    async def scenario() -> int:
        _auth.set_principal(_Principal("detector", "*", frozenset({"service"}), "js", 2e9))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
                if ticks >= 5:
                    loop_kept_running.set()

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        await servicer.ConsumeQuota(pb.ConsumeQuotaRequest(
            tenant_id="slowdisk", resource=pb.RESOURCE_FAILURES_PER_MINUTE, amount=1, request_id="r1"), None)
        task.cancel()
        return ticks

    assert asyncio.run(scenario()) >= 5
