"""Tenancy servicer: translates the Tenancy contract to the domain and the store."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from healing_guard.tenancy.v1 import tenancy_pb2, tenancy_pb2_grpc
from services.common import auth
from services.common.audit_trail import AuditTrail
from services.common.config import ServiceConfig
from services.common.convert import enum_field, seconds, timestamp
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.runtime import Assembly, Runtime
from services.common.server import ServiceDefinition
from services.common.tokens import TokenSigner, load_signer
from services.tenancy import quotas, tenants
from services.tenancy.access import ACCESS
from services.tenancy.store import QuotaState, TenancyStore

MIN_TTL_S, MAX_TTL_S, DEFAULT_TTL_S = 60, 86_400, 3_600
PAGE_SIZE_MAX = 500


def _require_platform_admin(action: str) -> None:
    principal = auth.current_principal()
    if principal.tenant != auth.PLATFORM_TENANT:
        raise PermissionDenied(f"{action} needs a platform admin token (tenant {auth.PLATFORM_TENANT!r})")


def _tenant_message(tenant: tenants.Tenant) -> tenancy_pb2.Tenant:
    return tenancy_pb2.Tenant(
        tenant_id=tenant.tenant_id, display_name=tenant.display_name, plan=tenant.plan, state=int(tenant.state),
        created_at=timestamp(tenant.created_at), config=tenant.config, suspended_reason=tenant.suspended_reason,
    )


def _quota_message(state: QuotaState) -> tenancy_pb2.Quota:
    return tenancy_pb2.Quota(
        tenant_id=state.tenant_id, resource=int(state.resource), limit=state.limit, used=state.used,
        window_start=timestamp(state.window_start), window_end=timestamp(state.window_end),
    )


class TenancyServicer(tenancy_pb2_grpc.TenancyServicer):
    def __init__(self, store: TenancyStore, signer: TokenSigner | None, audit: AuditTrail | None) -> None:
        self.store = store
        self.signer = signer
        self.audit = audit

    async def _record(self, kind: str, tenant: str, subject: str, payload: dict) -> None:
        if self.audit is not None:
            await self.audit.record(kind, tenant, subject, payload)

    async def CreateTenant(self, request, context):  # type: ignore[no-untyped-def]
        _require_platform_admin("CreateTenant")
        tenant = tenants.new_tenant(request.tenant_id, request.display_name, request.plan, time.time())
        self.store.create_tenant(tenant)
        await self._record("ADMIN_CHANGE", tenant.tenant_id, f"tenant/{tenant.tenant_id}",
                           {"change": "create_tenant", "plan": tenant.plan, "by": auth.current_principal().subject})
        return _tenant_message(tenant)

    async def GetTenant(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        return _tenant_message(self.store.get_tenant(tenant_id))

    async def ListTenants(self, request, context):  # type: ignore[no-untyped-def]
        _require_platform_admin("ListTenants")
        size = request.page_size or 100
        if not 0 < size <= PAGE_SIZE_MAX:
            raise InvalidArgument("page_size", f"must be between 1 and {PAGE_SIZE_MAX}, got {size}")
        found = self.store.list_tenants(request.page_token, size)
        next_token = found[-1].tenant_id if len(found) == size else ""
        return tenancy_pb2.ListTenantsResponse(tenants=[_tenant_message(t) for t in found], next_page_token=next_token)

    async def UpdateTenant(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant.tenant_id, "tenant.tenant_id")
        current = self.store.get_tenant(tenant_id)
        if request.tenant.plan and request.tenant.plan != current.plan:
            _require_platform_admin("changing a tenant's plan")
            if request.tenant.plan not in tenants.PLANS:
                raise InvalidArgument("tenant.plan", f"must be one of {', '.join(tenants.PLANS)}")
            current.plan = request.tenant.plan
        if request.tenant.display_name:
            current.display_name = request.tenant.display_name
        current.config.update(dict(request.tenant.config))
        self.store.update_tenant(current)
        await self._record("ADMIN_CHANGE", tenant_id, f"tenant/{tenant_id}",
                           {"change": "update_tenant", "by": auth.current_principal().subject})
        return _tenant_message(current)

    async def SuspendTenant(self, request, context):  # type: ignore[no-untyped-def]
        _require_platform_admin("SuspendTenant")
        tenants.validate_tenant_id(request.tenant_id)
        tenant = self.store.get_tenant(request.tenant_id)
        tenant.state = tenants.TenantState.TENANT_STATE_SUSPENDED
        tenant.suspended_reason = request.reason or "suspended by a platform admin"
        self.store.update_tenant(tenant)
        await self._record("ADMIN_CHANGE", tenant.tenant_id, f"tenant/{tenant.tenant_id}",
                           {"change": "suspend_tenant", "reason": tenant.suspended_reason})
        return _tenant_message(tenant)

    async def IssueToken(self, request, context):  # type: ignore[no-untyped-def]
        if self.signer is None:
            raise InvalidArgument("tenant_id", "this tenancy replica has no signing key; set HG_SETTING_SIGNING_KEY")
        tenant_id = auth.tenant_for(request.tenant_id)
        principal = auth.current_principal()
        asked = list(request.roles)
        if not asked:
            raise InvalidArgument("roles", "name at least one role: viewer, operator, admin")
        for index, role in enumerate(asked):
            if role not in {"viewer", "operator", "admin"}:
                raise InvalidArgument(f"roles[{index}]", f"must be viewer, operator or admin, got {role!r}")
        if not auth.acts_for_any_tenant(principal):
            missing = sorted(set(asked) - set(principal.roles))
            if missing:
                raise PermissionDenied(f"cannot issue roles you do not hold: {', '.join(missing)}")
        ttl = request.ttl_seconds or DEFAULT_TTL_S
        if not MIN_TTL_S <= ttl <= MAX_TTL_S:
            raise InvalidArgument("ttl_seconds", f"must be between {MIN_TTL_S} and {MAX_TTL_S}, got {ttl}")
        if not request.subject:
            raise InvalidArgument("subject", "is required (who the token is for)")
        self.store.get_tenant(tenant_id)  # the tenant must exist
        issued = self.signer.issue(request.subject, tenant_id, asked, ttl_seconds=ttl)
        await self._record("TOKEN_ISSUED", tenant_id, f"token/{issued.token_id}",
                           {"subject": request.subject, "roles": asked, "expires_at": issued.expires_at,
                            "by": principal.subject})
        return tenancy_pb2.IssueTokenResponse(token=issued.token, token_id=issued.token_id,
                                              expires_at=timestamp(issued.expires_at))

    async def RevokeToken(self, request, context):  # type: ignore[no-untyped-def]
        if not request.token_id:
            raise InvalidArgument("token_id", "is required (the token's jti)")
        principal = auth.current_principal()
        self.store.revoke(request.token_id, request.reason or "revoked", time.time())
        await self._record("TOKEN_REVOKED", principal.tenant, f"token/{request.token_id}",
                           {"reason": request.reason, "by": principal.subject})
        return tenancy_pb2.RevokeTokenResponse()

    async def GetJwks(self, request, context):  # type: ignore[no-untyped-def]
        import json

        keys = [self.signer.public_jwk()] if self.signer is not None else []
        return tenancy_pb2.GetJwksResponse(jwks_json=json.dumps({"keys": keys}))

    async def SetQuota(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        if not auth.acts_for_any_tenant(auth.current_principal()):
            raise PermissionDenied("SetQuota needs a platform admin token: tenants cannot raise their own quotas")
        resource = quotas.parse_resource(request.resource)
        state = self.store.set_quota(tenant_id, resource, quotas.validate_limit(request.limit), time.time())
        await self._record("QUOTA", tenant_id, f"quota/{tenant_id}/{resource.name}",
                           {"change": "set_quota", "limit": request.limit})
        return _quota_message(state)

    async def ConsumeQuota(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        resource = quotas.parse_resource(request.resource)
        amount = quotas.validate_amount(request.amount)
        if not request.request_id:
            raise InvalidArgument("request_id", "is required: it makes a retried call consume once")
        state, duplicate = self.store.consume(tenant_id, resource, amount, request.request_id, time.time())
        return tenancy_pb2.ConsumeQuotaResponse(quota=_quota_message(state), duplicate=duplicate)

    async def GetUsage(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        start, end = _period(request.period_start, request.period_end)
        usage = self.store.usage(tenant_id, start, end)
        return tenancy_pb2.GetUsageResponse(
            usage=[tenancy_pb2.UsageLine(resource=int(r), amount=a) for r, a in usage.items()]
        )

    async def BillingReport(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        start, end = _period(request.period_start, request.period_end)
        tenant = self.store.get_tenant(tenant_id)
        usage = self.store.usage(tenant_id, start, end)
        prices = PRICES.get(tenant.plan, PRICES["free"])
        lines = [
            tenancy_pb2.BillingLine(resource=int(r), quantity=q, unit_price_usd=prices[r],
                                    amount_usd=round(q * prices[r], 4))
            for r, q in usage.items()
        ]
        return tenancy_pb2.BillingReportResponse(
            tenant_id=tenant_id, plan=tenant.plan, lines=lines, total_usd=round(sum(l.amount_usd for l in lines), 4)
        )

    async def ListSecurityEvents(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        limit = request.limit or 100
        if not 0 < limit <= 1000:
            raise InvalidArgument("limit", f"must be between 1 and 1000, got {limit}")
        since = seconds(request.since) if request.HasField("since") else 0.0
        events = self.store.security_events(tenant_id, since, limit)
        return tenancy_pb2.ListSecurityEventsResponse(events=[
            tenancy_pb2.SecurityEvent(event_id=e["event_id"], tenant_id=e["tenant_id"], kind=e["kind"],
                                      source=e["source"], detail=e["detail"], response=e["response"],
                                      at=timestamp(e["at"]))
            for e in events
        ])


PRICES: dict[str, dict[quotas.Resource, float]] = {
    "free": {quotas.Resource.RESOURCE_FAILURES_PER_MINUTE: 0.0, quotas.Resource.RESOURCE_ACTIONS_PER_DAY: 0.0,
             quotas.Resource.RESOURCE_RUNNER_MINUTES_PER_MONTH: 0.0},
    "team": {quotas.Resource.RESOURCE_FAILURES_PER_MINUTE: 0.002, quotas.Resource.RESOURCE_ACTIONS_PER_DAY: 0.01,
             quotas.Resource.RESOURCE_RUNNER_MINUTES_PER_MONTH: 0.008},
    "enterprise": {quotas.Resource.RESOURCE_FAILURES_PER_MINUTE: 0.001,
                   quotas.Resource.RESOURCE_ACTIONS_PER_DAY: 0.005,
                   quotas.Resource.RESOURCE_RUNNER_MINUTES_PER_MONTH: 0.006},
}


def _period(start_ts, end_ts) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    if not start_ts.seconds and not end_ts.seconds:
        raise InvalidArgument("period_start", "is required (and period_end)")
    start, end = seconds(start_ts), seconds(end_ts)
    if end <= start:
        raise InvalidArgument("period_end", "must be after period_start")
    return start, end


async def build(config: ServiceConfig, runtime: Runtime) -> Assembly:
    store = TenancyStore(config.database_path)
    signing_key = config.settings.get("signing_key")
    signer = load_signer(Path(signing_key), config.jwks_path) if signing_key and config.jwks_path else None
    servicer = TenancyServicer(store, signer, AuditTrail(runtime.peers))
    definition = ServiceDefinition(
        name="tenancy",
        register=lambda server: tenancy_pb2_grpc.add_TenancyServicer_to_server(servicer, server),
        access=ACCESS,
    )
    return Assembly(definition=definition, on_stop=lambda: _close(store))


async def _close(store: TenancyStore) -> None:
    store.db.close()
