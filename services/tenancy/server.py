"""Tenancy servicer: translates the Tenancy contract to the domain and the store.

Tenants, tokens and signing keys, quotas, usage and billing, tenant secrets
(sealed with services.common.envelope) and security events. Decisions live in the
domain modules (tenants, quotas, billing, keys, threats); publication to etcd and
threat responses in `response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from healing_guard.tenancy.v1 import tenancy_pb2, tenancy_pb2_grpc
from services.common import auth
from services.common.audit_trail import AuditTrail
from services.common.config import ServiceConfig
from services.common.convert import timestamp, timestamp_field
from services.common.envelope import Envelope, LocalMasterKey
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unavailable
from services.common.runtime import Assembly, Runtime
from services.common.server import ServiceDefinition
from services.common.tokens import load_signer
from services.tenancy import billing, quotas, tenants
from services.tenancy.access import ACCESS
from services.tenancy.keys import KeyRing, SigningKey, key_from_pem
from services.tenancy.response import Publisher, ThreatResponder
from services.tenancy.store import QuotaState, TenancyStore
from services.tenancy.threats import ThreatDetector, ThreatPolicy

log = logging.getLogger(__name__)

MIN_TTL_S, MAX_TTL_S, DEFAULT_TTL_S = 60, 86_400, 3_600
PAGE_SIZE_MAX = 500
ISSUABLE_ROLES = ("viewer", "operator", "admin")
PLATFORM_KEYS = auth.PLATFORM_TENANT  # the envelope tenant whose data key seals signing keys
LIVE_DEFAULTS: dict[str, Any] = {
    "signing_key_max_age_seconds": 30 * 86_400,
    "signing_key_overlap_seconds": MAX_TTL_S + 300,
}


def _require_platform_admin(action: str) -> None:
    principal = auth.current_principal()
    if principal.tenant != auth.PLATFORM_TENANT:
        raise PermissionDenied(f"{action} needs a platform admin token (tenant {auth.PLATFORM_TENANT!r})")


def _quota_message(state: QuotaState) -> tenancy_pb2.Quota:
    return tenancy_pb2.Quota(
        tenant_id=state.tenant_id,
        resource=cast(tenancy_pb2.Resource, int(state.resource)),
        limit=state.limit,
        used=state.used,
        window_start=timestamp(state.window_start),
        window_end=timestamp(state.window_end),
    )


def _period(request: Any) -> tuple[float, float]:
    return billing.validate_period(timestamp_field(request.period_start, "period_start"),
                                   timestamp_field(request.period_end, "period_end"))


class TenancyServicer(tenancy_pb2_grpc.TenancyServicer):
    def __init__(
        self,
        store: TenancyStore,
        keyring: KeyRing | None,
        audit: AuditTrail | None,
        envelope: Envelope | None = None,
        publisher: Publisher | None = None,
        issuer: str = "healing-guard",
        audience: str = "healing-guard",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.audit = audit
        self.envelope = envelope
        self.publisher = publisher or Publisher(None, None)
        self.issuer, self.audience = issuer, audience
        self.clock = clock

    async def _record(self, kind: str, tenant: str, subject: str, payload: dict[str, Any], *,
                      event_id: str | None = None, versioned: bool = False) -> None:
        if self.audit is not None:
            await self.audit.record(kind, tenant, subject, payload, event_id=event_id, versioned=versioned)

    def _tenant_message(self, tenant: tenants.Tenant) -> tenancy_pb2.Tenant:
        config = dict(tenant.config)
        config.update({name: tenants.SECRET_PLACEHOLDER for name in self.store.secrets(tenant.tenant_id)})
        return tenancy_pb2.Tenant(
            tenant_id=tenant.tenant_id,
            display_name=tenant.display_name,
            plan=tenant.plan,
            state=cast(tenancy_pb2.TenantState, int(tenant.state)),
            created_at=timestamp(tenant.created_at),
            config=config,
            suspended_reason=tenant.suspended_reason,
        )

    async def _publish(self, tenant: tenants.Tenant) -> None:
        try:
            await self.publisher.tenant(tenant, self.store.limits(tenant.tenant_id))
        except Exception:  # etcd briefly away: the store is the truth, the next change republishes
            log.warning("publishing tenant %s to etcd failed", tenant.tenant_id, exc_info=True)

    def _seal(self, tenant_id: str, secrets: dict[str, str]) -> dict[str, bytes | None]:
        if not secrets:
            return {}
        if self.envelope is None:
            raise FailedPrecondition(
                "tenant secrets need a master key: set HG_MASTER_KEY_FILE", reason="NO_MASTER_KEY"
            )
        return {
            name: (
                self.envelope.encrypt(tenant_id, value.encode(), f"tenant-secret:{name}".encode())
                if value
                else None
            )
            for name, value in secrets.items()
        }

    # -- tenants ---------------------------------------------------------------------------
    async def CreateTenant(self, request, context):  # type: ignore[no-untyped-def]
        _require_platform_admin("CreateTenant")
        tenant = tenants.new_tenant(request.tenant_id, request.display_name, request.plan, self.clock())
        self.store.create_tenant(tenant)
        await self._publish(tenant)
        await self._record(
            "ADMIN_CHANGE",
            tenant.tenant_id,
            f"tenant/{tenant.tenant_id}",
            {"change": "create_tenant", "plan": tenant.plan, "by": auth.current_principal().subject},
        )
        return self._tenant_message(tenant)

    async def GetTenant(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        return self._tenant_message(self.store.get_tenant(tenant_id))

    async def ListTenants(self, request, context):  # type: ignore[no-untyped-def]
        _require_platform_admin("ListTenants")
        size = request.page_size or 100
        if not 0 < size <= PAGE_SIZE_MAX:
            raise InvalidArgument("page_size", f"must be between 1 and {PAGE_SIZE_MAX}, got {size}")
        found = self.store.list_tenants(request.page_token, size)
        next_token = found[-1].tenant_id if len(found) == size else ""
        return tenancy_pb2.ListTenantsResponse(
            tenants=[self._tenant_message(t) for t in found], next_page_token=next_token
        )

    async def UpdateTenant(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant.tenant_id, "tenant.tenant_id")
        current = self.store.get_tenant(tenant_id)
        changes: list[str] = []
        if request.tenant.plan and request.tenant.plan != current.plan:
            _require_platform_admin("changing a tenant's plan")
            if request.tenant.plan not in tenants.PLANS:
                raise InvalidArgument(
                    "tenant.plan", f"must be one of {', '.join(tenants.PLANS)}; got {request.tenant.plan!r}"
                )
            current.plan = request.tenant.plan
            changes.append("plan")
        if request.tenant.display_name and request.tenant.display_name != current.display_name:
            if len(request.tenant.display_name) > 200:
                raise InvalidArgument(
                    "tenant.display_name",
                    f"must be at most 200 characters, got {len(request.tenant.display_name)}",
                )
            current.display_name = request.tenant.display_name
            changes.append("display_name")
        resuming = tenants.resumes(current, request.tenant.state)
        if resuming:
            _require_platform_admin("resuming a suspended tenant")
            current.state, current.suspended_reason = tenants.TenantState.TENANT_STATE_ACTIVE, ""
            changes.append("state")
        plain, secrets = tenants.split_config(dict(request.tenant.config))
        current.config = tenants.merge_config(current.config, plain)
        sealed = self._seal(tenant_id, secrets)  # everything validated before anything is stored
        self.store.update_tenant(current)
        if sealed:
            self.store.put_secrets(tenant_id, sealed, self.clock())
        changes += [f"config.{k}" for k in plain] + [f"{k} (secret)" for k in secrets]
        await self._publish(current)
        await self._record(
            "ADMIN_CHANGE",
            tenant_id,
            f"tenant/{tenant_id}",
            {"change": "update_tenant", "fields": changes, "by": auth.current_principal().subject},
        )
        if resuming:
            await self._publish_suspension(current)
        return self._tenant_message(current)

    async def SuspendTenant(self, request, context):  # type: ignore[no-untyped-def]
        _require_platform_admin("SuspendTenant")
        tenants.validate_tenant_id(request.tenant_id)
        if len(request.reason) > 500:
            raise InvalidArgument("reason", f"must be at most 500 characters, got {len(request.reason)}")
        tenant = self.store.get_tenant(request.tenant_id)
        tenant.state = tenants.TenantState.TENANT_STATE_SUSPENDED
        tenant.suspended_reason = request.reason or "suspended by a platform admin"
        self.store.update_tenant(tenant)
        await self._record(
            "ADMIN_CHANGE",
            tenant.tenant_id,
            f"tenant/{tenant.tenant_id}",
            {
                "change": "suspend_tenant",
                "reason": tenant.suspended_reason,
                "by": auth.current_principal().subject,
            },
        )
        await self._publish_suspension(tenant)
        await self._publish(tenant)
        return self._tenant_message(tenant)

    async def _publish_suspension(self, tenant: tenants.Tenant) -> None:
        """Tell every service (through etcd) to refuse, or again admit, the tenant's tokens.

        Unlike plan and config, this must not be skipped silently: if etcd is away the
        caller gets UNAVAILABLE and retries (both directions are idempotent); the store
        already holds the new state, and tenancy republishes it from the store at start.
        """
        suspended = tenant.state is tenants.TenantState.TENANT_STATE_SUSPENDED
        try:
            if suspended:
                await self.publisher.suspend(tenant.tenant_id, tenant.suspended_reason, self.clock())
            else:
                await self.publisher.resume(tenant.tenant_id)
        except Exception as error:
            log.warning("publishing the state of tenant %s to etcd failed", tenant.tenant_id, exc_info=True)
            action = "SuspendTenant" if suspended else "UpdateTenant (state ACTIVE)"
            raise Unavailable(
                f"tenant {tenant.tenant_id!r} is {'suspended' if suspended else 'active'} in tenancy's store, "
                f"but other services could not be told ({type(error).__name__}); retry {action}"
            ) from error

    # -- tokens ----------------------------------------------------------------------------
    async def IssueToken(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        principal = auth.current_principal()
        asked = list(request.roles)
        if not asked:
            raise InvalidArgument("roles", f"name at least one role: {', '.join(ISSUABLE_ROLES)}")
        for index, role in enumerate(asked):
            if role not in ISSUABLE_ROLES:
                raise InvalidArgument(
                    f"roles[{index}]", f"must be one of {', '.join(ISSUABLE_ROLES)}, got {role!r}"
                )
        if not auth.acts_for_any_tenant(principal):
            missing = sorted(set(asked) - set(principal.roles))
            if missing:
                raise PermissionDenied(f"cannot issue roles you do not hold: {', '.join(missing)}")
        ttl = request.ttl_seconds or DEFAULT_TTL_S
        if not MIN_TTL_S <= ttl <= MAX_TTL_S:
            raise InvalidArgument("ttl_seconds", f"must be between {MIN_TTL_S} and {MAX_TTL_S}, got {ttl}")
        if not request.subject or len(request.subject) > 200:
            raise InvalidArgument("subject", "is required (who the token is for), at most 200 characters")
        tenant = self.store.get_tenant(tenant_id)  # the tenant must exist
        if tenant.state is tenants.TenantState.TENANT_STATE_SUSPENDED:
            raise FailedPrecondition(
                f"tenant {tenant_id!r} is suspended: {tenant.suspended_reason}", reason="TENANT_SUSPENDED"
            )
        if self.keyring is None:
            raise FailedPrecondition("this tenancy replica has no signing key", reason="NO_SIGNING_KEY")
        issued = self.keyring.signer(self.issuer, self.audience).issue(
            request.subject, tenant_id, asked, ttl_seconds=ttl, now=self.clock()
        )
        self.store.record_issued(
            issued.token_id,
            tenant_id,
            request.subject,
            asked,
            issued.issued_at,
            issued.expires_at,
            principal.subject,
        )
        await self._record(
            "TOKEN_ISSUED",
            tenant_id,
            f"token/{issued.token_id}",
            {
                "subject": request.subject,
                "roles": sorted(asked),
                "expires_at": issued.expires_at,
                "kid": self.keyring.current.kid,
                "by": principal.subject,
            },
            event_id=issued.token_id,
        )
        return tenancy_pb2.IssueTokenResponse(
            token=issued.token, token_id=issued.token_id, expires_at=timestamp(issued.expires_at)
        )

    async def RevokeToken(self, request, context):  # type: ignore[no-untyped-def]
        if not request.token_id or len(request.token_id) > 128:
            raise InvalidArgument("token_id", "is required (the token's jti), at most 128 characters")
        if len(request.reason) > 500:
            raise InvalidArgument("reason", f"must be at most 500 characters, got {len(request.reason)}")
        principal = auth.current_principal()
        issued = self.store.issued(request.token_id)
        if not auth.acts_for_any_tenant(principal) and (
            issued is None or issued["tenant_id"] != principal.tenant
        ):
            # Same answer for "unknown" and "another tenant's": no probing for token ids.
            raise PermissionDenied(
                f"token_id {request.token_id[:40]!r} was not issued to tenant {principal.tenant!r}"
            )
        tenant_id = str(issued["tenant_id"]) if issued else ""
        expires = float(issued["expires_at"]) if issued else 0.0  # type: ignore[arg-type]
        now = self.clock()
        self.store.revoke(request.token_id, request.reason or "revoked", now, tenant_id, expires)
        await self._record(
            "TOKEN_REVOKED",
            tenant_id or principal.tenant,
            f"token/{request.token_id}",
            {"reason": request.reason, "by": principal.subject},
            event_id=request.token_id,
            versioned=True,  # revoking again with another reason is recorded too
        )
        try:
            await self.publisher.revoke(request.token_id, request.reason or "revoked", expires, now)
        except Exception as error:
            # Stored and recorded; the other services learn of it when the caller retries
            # (idempotent) or when tenancy republishes revocations at its next start.
            log.warning("publishing the revocation of %s to etcd failed", request.token_id, exc_info=True)
            raise Unavailable(
                f"token {request.token_id[:40]!r} is revoked in tenancy's store, but other services "
                f"could not be told ({type(error).__name__}); retry RevokeToken"
            ) from error
        return tenancy_pb2.RevokeTokenResponse()

    async def GetJwks(self, request, context):  # type: ignore[no-untyped-def]
        keys = self.keyring.jwks(self.clock()) if self.keyring is not None else {"keys": []}
        return tenancy_pb2.GetJwksResponse(jwks_json=json.dumps(keys, sort_keys=True))

    # -- quotas, usage, billing --------------------------------------------------------------
    async def SetQuota(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        if not auth.acts_for_any_tenant(auth.current_principal()):
            raise PermissionDenied(
                "SetQuota needs a platform admin token: tenants cannot raise their own quotas"
            )
        resource = quotas.parse_resource(request.resource)
        state = self.store.set_quota(tenant_id, resource, quotas.validate_limit(request.limit), self.clock())
        await self._publish(self.store.get_tenant(tenant_id))
        await self._record(
            "QUOTA",
            tenant_id,
            f"quota/{tenant_id}/{resource.name}",
            {"change": "set_quota", "limit": request.limit, "by": auth.current_principal().subject},
        )
        return _quota_message(state)

    async def ConsumeQuota(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        resource = quotas.parse_resource(request.resource)
        amount = quotas.validate_amount(request.amount)
        if not request.request_id or len(request.request_id) > 128:
            raise InvalidArgument(
                "request_id", "is required (at most 128 characters): it makes a retried call consume once"
            )
        # Every reported failure passes here: the fsync'd write runs off the event loop.
        state, duplicate = await asyncio.to_thread(
            self.store.consume, tenant_id, resource, amount, request.request_id, self.clock()
        )
        return tenancy_pb2.ConsumeQuotaResponse(quota=_quota_message(state), duplicate=duplicate)

    async def GetUsage(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        start, end = _period(request)
        totals = billing.usage_totals(self.store.usage_events(tenant_id, start, end))
        return tenancy_pb2.GetUsageResponse(
            usage=[tenancy_pb2.UsageLine(resource=int(r), amount=a) for r, a in totals.items()]
        )

    async def BillingReport(self, request, context):  # type: ignore[no-untyped-def]
        tenant_id = auth.tenant_for(request.tenant_id)
        start, end = _period(request)
        tenant = self.store.get_tenant(tenant_id)
        report = billing.billing_report(
            tenant_id, tenant.plan, start, end, self.store.usage_events(tenant_id, start, end)
        )
        lines = [
            tenancy_pb2.BillingLine(
                resource=int(line.resource),
                quantity=line.quantity,
                unit_price_usd=billing.usd(line.unit_price_micros),
                amount_usd=billing.usd(line.amount_micros),
            )
            for line in report.lines
        ]
        return tenancy_pb2.BillingReportResponse(
            tenant_id=tenant_id,
            plan=tenant.plan,
            lines=lines,
            total_usd=billing.usd(report.total_micros),
            events_digest=report.events_digest,
        )

    # -- security events -------------------------------------------------------------------
    async def ListSecurityEvents(self, request, context):  # type: ignore[no-untyped-def]
        principal = auth.current_principal()
        if not request.tenant_id and auth.acts_for_any_tenant(principal):
            tenant_id = ""  # platform admins see every tenant's events
        else:
            tenant_id = auth.tenant_for(request.tenant_id)
        limit = request.limit or 100
        if not 0 < limit <= 1000:
            raise InvalidArgument("limit", f"must be between 1 and 1000, got {limit}")
        since = timestamp_field(request.since, "since") if request.HasField("since") else 0.0
        events = self.store.security_events(tenant_id, since, limit)
        return tenancy_pb2.ListSecurityEventsResponse(
            events=[
                tenancy_pb2.SecurityEvent(
                    event_id=e["event_id"],
                    tenant_id=e["tenant_id"],
                    kind=e["kind"],
                    source=e["source"],
                    detail=e["detail"],
                    response=e["response"],
                    at=timestamp(e["at"]),
                )  # type: ignore[arg-type]
                for e in events
            ]
        )


# --- assembly --------------------------------------------------------------------------------


def load_keyring(
    store: TenancyStore, envelope: Envelope | None, config: ServiceConfig, now: float
) -> KeyRing | None:
    """Signing keys from the store (sealed), seeded from the PKI signing key on first start."""
    stored = store.signing_keys()
    if stored and envelope is not None:
        keys = [
            SigningKey(
                kid, envelope.decrypt(PLATFORM_KEYS, blob, f"signing-key:{kid}".encode()), created, retire
            )
            for kid, blob, created, retire in stored
        ]
        return KeyRing(keys)
    path = config.settings.get("signing_key") or (
        str(config.jwks_path.parent / "signing-key.pem") if config.jwks_path is not None else ""
    )
    if not path or not Path(path).exists() or config.jwks_path is None:
        return None
    signer = load_signer(Path(path), config.jwks_path)
    ring = KeyRing([key_from_pem(Path(path).read_bytes(), signer.kid, now)])
    save_keys(store, envelope, ring.keys)
    return ring


def save_keys(store: TenancyStore, envelope: Envelope | None, keys: list[SigningKey]) -> None:
    if envelope is None:
        return  # without a master key the ring lives in memory only (never a private key in clear on disk)
    store.save_signing_keys(
        [(k, envelope.encrypt(PLATFORM_KEYS, k.private_pem, f"signing-key:{k.kid}".encode())) for k in keys]
    )


async def rotate_when_due(
    servicer: TenancyServicer, runtime: Runtime, envelope: Envelope | None, interval_s: float = 60.0
) -> None:
    """Rotate the signing key when it is older than the live `signing_key_max_age_seconds`."""
    while True:
        ring = servicer.keyring
        now = servicer.clock()
        try:
            if ring is not None and ring.due_for_rotation(
                now, float(runtime.live.get("signing_key_max_age_seconds"))
            ):
                fresh, changed = ring.rotate(now, float(runtime.live.get("signing_key_overlap_seconds")))
                save_keys(servicer.store, envelope, changed)
                await servicer.publisher.jwks(ring.jwks(now))
                await servicer._record(
                    "KEY_ROTATED",
                    auth.PLATFORM_TENANT,
                    f"signing-key/{fresh.kid}",
                    {"kid": fresh.kid, "retiring": [k.kid for k in changed if k.retire_at]},
                    event_id=fresh.kid,
                )
        except Exception:
            log.exception("signing key rotation failed; the current key stays")
        await asyncio.sleep(interval_s)


async def build(config: ServiceConfig, runtime: Runtime) -> Assembly:
    store = TenancyStore(config.database_path)
    envelope = (
        Envelope(LocalMasterKey.from_file(config.master_key_path), store)
        if config.master_key_path is not None and config.master_key_path.exists()
        else None
    )
    keyring = load_keyring(store, envelope, config, time.time())
    revocations = runtime.security.revocations if runtime.security is not None else None
    publisher = Publisher(runtime.etcd, revocations)
    audit = runtime.keep(AuditTrail(runtime.peers, config.data_dir / "audit-outbox.sqlite3"))
    servicer = TenancyServicer(store, keyring, audit, envelope, publisher, config.issuer, config.audience)
    detector = ThreatDetector(_policy(runtime.live.get("threat_policy")))
    responder = ThreatResponder(detector, store, publisher, servicer._record)

    def on_live_change(key: str, value: Any) -> None:
        if key == "threat_policy":
            try:
                detector.policy = ThreatPolicy.from_json(value)
            except InvalidArgument as error:
                log.warning("threat_policy refused, keeping the last one: %s", error.message)

    runtime.live.subscribe(on_live_change)
    tasks: list[asyncio.Task[None]] = []

    async def started(server: Any) -> None:
        now = time.time()
        try:  # a suspension or resume may have missed etcd: the store is the truth
            await publisher.reconcile_suspensions(store.suspended_tenants(), now)
        except Exception:
            log.warning("republishing suspended tenants to etcd failed", exc_info=True)
        for row in store.revoked_since(now):  # republish (leases may have lapsed while we were down)
            with contextlib.suppress(Exception):
                await publisher.revoke(
                    str(row["token_id"]), str(row["reason"]), float(cast("int | float", row["expires_at"])), now
                )
        if keyring is not None:
            with contextlib.suppress(Exception):
                await publisher.jwks(keyring.jwks(now))
        responder.start(runtime.etcd)
        tasks.append(asyncio.create_task(rotate_when_due(servicer, runtime, envelope), name="key-rotation"))

    async def stop() -> None:
        await responder.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        store.db.close()

    definition = ServiceDefinition(
        name="tenancy",
        register=lambda server: tenancy_pb2_grpc.add_TenancyServicer_to_server(servicer, server),
        access=ACCESS,
    )
    return Assembly(definition=definition, on_started=started, on_stop=stop, live_defaults=LIVE_DEFAULTS)


def _policy(value: Any) -> ThreatPolicy:
    try:
        return ThreatPolicy.from_json(value if isinstance(value, dict) else None)
    except InvalidArgument as error:
        log.warning("threat_policy refused, using defaults: %s", error.message)
        return ThreatPolicy()
