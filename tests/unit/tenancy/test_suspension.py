"""Suspending and resuming a tenant: what tenancy stores, publishes and records."""

from __future__ import annotations

import asyncio
import json
import os
from types import SimpleNamespace
from typing import Any

import pytest

from healing_guard.tenancy.v1 import tenancy_pb2
from services.common.envelope import Envelope, LocalMasterKey
from services.common.errors import InvalidArgument, PermissionDenied, Unavailable
from services.common.security import TENANT_PREFIX, Refusal, RevocationList, suspension_key, suspension_message
from services.tenancy.keys import KeyRing, new_signing_key
from services.tenancy.response import SUSPENDED_USE_KIND, Publisher, ThreatResponder
from services.tenancy.server import TenancyServicer
from services.tenancy.store import TenancyStore
from services.tenancy.threats import ThreatDetector
from tests.unit.tenancy.conftest import Clock, Recorder, act_as, platform_admin

ACTIVE, SUSPENDED = tenancy_pb2.TENANT_STATE_ACTIVE, tenancy_pb2.TENANT_STATE_SUSPENDED


class FakeKV:
    """The slice of etcd3aio's KV the publisher uses, in memory; `down` makes every call fail."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("etcd unreachable")

    async def put(self, key: str, value: str, lease: Any = None, timeout: float | None = None) -> None:
        self._check()
        self.data[key] = value

    async def delete(self, key: str, timeout: float | None = None) -> None:
        self._check()
        self.data.pop(key, None)

    async def get(self, key: str, range_end: Any = None, keys_only: bool = False, timeout: float | None = None):  # type: ignore[no-untyped-def]
        self._check()
        found = [k for k in sorted(self.data) if (k.startswith(key) if range_end else k == key)]
        return SimpleNamespace(kvs=[SimpleNamespace(key=k.encode(), value=self.data[k].encode()) for k in found])


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.fixture()
def etcd() -> SimpleNamespace:
    return SimpleNamespace(kv=FakeKV())


@pytest.fixture()
def revocations() -> RevocationList:
    return RevocationList()


@pytest.fixture()
def servicer(store: TenancyStore, clock: Clock, etcd: SimpleNamespace, revocations: RevocationList) -> TenancyServicer:
    envelope = Envelope(LocalMasterKey([os.urandom(32)]), store)
    publisher = Publisher(etcd, revocations)
    return TenancyServicer(store, KeyRing([new_signing_key(clock())]), Recorder(), envelope, publisher, clock=clock)  # type: ignore[arg-type]


def suspend(servicer: TenancyServicer, tenant_id: str = "acme", reason: str = "unpaid invoice") -> Any:
    platform_admin()
    return run(servicer.SuspendTenant(tenancy_pb2.SuspendTenantRequest(tenant_id=tenant_id, reason=reason), None))


def update_state(servicer: TenancyServicer, state: int, tenant_id: str = "acme") -> Any:
    request = tenancy_pb2.UpdateTenantRequest(tenant=tenancy_pb2.Tenant(tenant_id=tenant_id, state=state))
    return run(servicer.UpdateTenant(request, None))


@pytest.fixture(autouse=True)
def tenants(servicer: TenancyServicer) -> None:
    platform_admin()
    for tenant_id in ("acme", "globex"):
        run(servicer.CreateTenant(tenancy_pb2.CreateTenantRequest(tenant_id=tenant_id, plan="team"), None))


def test_suspension_is_published_for_every_service_and_applied_locally_at_once(
    servicer: TenancyServicer, etcd: SimpleNamespace, revocations: RevocationList
) -> None:
    shown = suspend(servicer)
    assert shown.state == SUSPENDED and shown.suspended_reason == "unpaid invoice"
    assert json.loads(etcd.kv.data[suspension_key("acme")])["reason"] == "unpaid invoice"
    assert revocations.suspension("acme") == "unpaid invoice"
    assert revocations.suspension("globex") is None


def test_update_tenant_resumes_a_suspended_tenant(
    servicer: TenancyServicer, etcd: SimpleNamespace, revocations: RevocationList
) -> None:
    suspend(servicer)
    shown = update_state(servicer, ACTIVE)
    assert (shown.state, shown.suspended_reason) == (ACTIVE, "")
    assert suspension_key("acme") not in etcd.kv.data
    assert revocations.suspension("acme") is None
    kind, _, _, payload = servicer.audit.entries[-1]  # type: ignore[union-attr]
    assert kind == "ADMIN_CHANGE" and payload["fields"] == ["state"]


def test_update_tenant_cannot_suspend_and_a_tenant_admin_cannot_resume(
    servicer: TenancyServicer, store: TenancyStore
) -> None:
    platform_admin()
    with pytest.raises(InvalidArgument, match="tenant.state: UpdateTenant can only resume"):
        update_state(servicer, SUSPENDED)
    with pytest.raises(InvalidArgument, match="tenant.state: must be TENANT_STATE_ACTIVE"):
        update_state(servicer, 7)
    assert store.get_tenant("acme").state.name == "TENANT_STATE_ACTIVE"
    suspend(servicer)
    act_as("acme", "admin")
    with pytest.raises(PermissionDenied, match="resuming a suspended tenant needs a platform admin"):
        update_state(servicer, ACTIVE)
    assert store.get_tenant("acme").state.name == "TENANT_STATE_SUSPENDED"


def test_unchanged_state_in_a_read_modify_write_changes_nothing(servicer: TenancyServicer) -> None:
    suspend(servicer)
    shown = update_state(servicer, SUSPENDED)  # echoing the current state back
    assert shown.state == SUSPENDED and shown.suspended_reason == "unpaid invoice"


def test_a_suspension_etcd_did_not_take_is_unavailable_and_a_retry_publishes_it(
    servicer: TenancyServicer, etcd: SimpleNamespace, store: TenancyStore
) -> None:
    etcd.kv.down = True
    with pytest.raises(Unavailable, match="tenant 'acme' is suspended in tenancy's store.*retry SuspendTenant"):
        suspend(servicer)
    assert store.get_tenant("acme").state.name == "TENANT_STATE_SUSPENDED"
    etcd.kv.down = False
    suspend(servicer)
    assert suspension_key("acme") in etcd.kv.data


def test_reconcile_at_start_makes_etcd_match_the_store(
    servicer: TenancyServicer, store: TenancyStore, etcd: SimpleNamespace
) -> None:
    etcd.kv.down = True
    with pytest.raises(Unavailable):
        suspend(servicer)  # stored, never published
    etcd.kv.down = False
    etcd.kv.data[suspension_key("resumed-while-etcd-was-away")] = json.dumps({"reason": "old"})
    fresh = RevocationList()  # a restarted tenancy
    run(Publisher(etcd, fresh).reconcile_suspensions(store.suspended_tenants(), 1.0))
    assert sorted(k for k in etcd.kv.data if k.startswith(TENANT_PREFIX)) == [suspension_key("acme")]
    assert fresh.suspension("acme") == "unpaid invoice"


def refused(subject: str, at: float, tenant: str = "acme") -> Refusal:
    return Refusal(
        "planner", "GetPolicy", "PERMISSION_DENIED", suspension_message(tenant, "unpaid invoice"),
        "10.0.0.1", tenant, subject, f"jti-{subject}", False, at,
    )


def test_refused_use_of_a_suspended_tenant_is_a_security_event_once_per_subject_per_minute(
    store: TenancyStore, servicer: TenancyServicer
) -> None:
    audit = Recorder()
    responder = ThreatResponder(ThreatDetector(), store, Publisher(None, None), audit.record)
    for at, subject in [(100.0, "ci-bot"), (101.0, "ci-bot"), (102.0, "other-bot"), (161.0, "ci-bot")]:
        assert run(responder.handle(refused(subject, at))) is None
    events = store.security_events("acme", 0.0, 100)
    assert [(e["kind"], e["response"]) for e in events] == [(SUSPENDED_USE_KIND, "refused")] * 3
    assert "suspended tenant 'acme' presented to planner.GetPolicy" in str(events[0]["detail"])
    assert [entry[0] for entry in audit.entries] == ["SECURITY_EVENT"] * 3
    assert store.security_events("globex", 0.0, 100) == []


def test_a_revocation_etcd_did_not_take_is_unavailable_recorded_and_a_retry_publishes_it(
    servicer: TenancyServicer, etcd: SimpleNamespace, store: TenancyStore, revocations: RevocationList
) -> None:
    class FakeLease:
        async def grant(self, ttl: int, timeout: float | None = None) -> Any:
            etcd.kv._check()
            return SimpleNamespace(ID=7)

    etcd.lease = FakeLease()
    act_as("acme", "admin", "viewer", subject="alice")
    issued = run(servicer.IssueToken(
        tenancy_pb2.IssueTokenRequest(subject="ci-bot", roles=["viewer"], ttl_seconds=600), None))
    etcd.kv.down = True
    request = tenancy_pb2.RevokeTokenRequest(token_id=issued.token_id, reason="leaked")
    with pytest.raises(Unavailable, match="retry RevokeToken"):  # not INTERNAL: etcd is a dependency
        run(servicer.RevokeToken(request, None))
    assert store.is_revoked(issued.token_id) and revocations.is_revoked(issued.token_id)
    assert [e[0] for e in servicer.audit.entries].count("TOKEN_REVOKED") == 1  # type: ignore[attr-defined]
    etcd.kv.down = False
    run(servicer.RevokeToken(request, None))
    assert any(key.endswith(issued.token_id) for key in etcd.kv.data)
