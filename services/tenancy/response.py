"""Tenancy's side of the shared security state: what it publishes to etcd and how it
answers detected threats.

- Tenant plan, state, limits and (non-secret) config go to
  `/healing-guard/config/tenants/<tenant>/{plan,state,limits,config}` on every change,
  for services that watch them (LiveConfig-style JSON values).
- Revocations go to `/healing-guard/revoked/jti/<jti>` under a lease that ends a
  minute after the token would have expired; lockouts to
  `/healing-guard/revoked/subject/<tenant>/<subject>` under a lease of the lockout's
  length. Suspended tenants go to `/healing-guard/revoked/tenant/<tenant>` with no
  lease (deleted on resume; reconciled with the store at every start). All are
  applied to tenancy's own list at once, too.
- The JWKS (current key and keys in their overlap window) goes to `/healing-guard/jwks`.
- `ThreatResponder` follows `/healing-guard/security/reports/`, runs the rules of
  `threats.py` and carries out the responses, each detection a security event and a
  SECURITY_EVENT audit entry. A call refused because its tenant is suspended is
  recorded the same way (kind `suspended_tenant_use`, once per subject per minute).

Without etcd (unit tests, a lone process) publication is skipped; local state still
changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from services.common.security import (
    JTI_PREFIX,
    JWKS_KEY,
    REPORTS_PREFIX,
    TENANT_PREFIX,
    Refusal,
    RevocationList,
    is_suspension_refusal,
    lockout_key,
    suspension_key,
)
from services.tenancy.store import TenancyStore
from services.tenancy.tenants import Tenant
from services.tenancy.threats import Detection, Response, ThreatDetector

log = logging.getLogger(__name__)

TENANT_CONFIG_PREFIX = "/healing-guard/config/tenants/"
UNKNOWN_EXPIRY_TTL_S = 8 * 86_400  # tokens tenancy did not issue (CLI-minted) live at most 7 days
ETCD_TIMEOUT_S = 5.0
SUSPENDED_USE_WINDOW_S = 60.0  # one security event per suspended subject per window
SUSPENDED_USE_KIND = "suspended_tenant_use"

Record = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


class Publisher:
    def __init__(self, etcd: Any | None, revocations: RevocationList | None) -> None:
        self.etcd = etcd
        self.revocations = revocations or RevocationList()

    async def tenant(self, tenant: Tenant, limits: Mapping[Any, int]) -> None:
        if self.etcd is None:
            return
        prefix = f"{TENANT_CONFIG_PREFIX}{tenant.tenant_id}/"
        values = {
            "plan": json.dumps(tenant.plan),
            "state": json.dumps(tenant.state.name),
            "limits": json.dumps({r.name: limit for r, limit in limits.items()}, sort_keys=True),
            "config": json.dumps(tenant.config, sort_keys=True),
        }
        for name, value in values.items():
            await self.etcd.kv.put(prefix + name, value, timeout=ETCD_TIMEOUT_S)

    async def revoke(self, token_id: str, reason: str, expires_at: float, now: float) -> None:
        ttl = max(60, int(expires_at - now) + 60) if expires_at else UNKNOWN_EXPIRY_TTL_S
        self.revocations.revoke(token_id, forget_after=now + ttl)
        if self.etcd is None:
            return
        lease = await self.etcd.lease.grant(ttl, timeout=ETCD_TIMEOUT_S)
        body = json.dumps({"reason": reason, "revoked_at": now, "expires_at": expires_at})
        await self.etcd.kv.put(JTI_PREFIX + token_id, body, lease=lease.ID, timeout=ETCD_TIMEOUT_S)

    async def lock_out(self, tenant: str, subject: str, until: float, now: float, reason: str) -> None:
        self.revocations.lock_out(tenant, subject, until)
        if self.etcd is None:
            return
        lease = await self.etcd.lease.grant(max(1, int(until - now) + 1), timeout=ETCD_TIMEOUT_S)
        await self.etcd.kv.put(
            lockout_key(tenant, subject),
            json.dumps({"until": until, "reason": reason}),
            lease=lease.ID,
            timeout=ETCD_TIMEOUT_S,
        )

    async def suspend(self, tenant: str, reason: str, now: float) -> None:
        """Refuse every token of `tenant` everywhere (no lease: it lasts until resumed)."""
        self.revocations.suspend(tenant, reason)
        if self.etcd is None:
            return
        body = json.dumps({"reason": reason, "suspended_at": now})
        await self.etcd.kv.put(suspension_key(tenant), body, timeout=ETCD_TIMEOUT_S)

    async def resume(self, tenant: str) -> None:
        self.revocations.resume(tenant)
        if self.etcd is not None:
            await self.etcd.kv.delete(suspension_key(tenant), timeout=ETCD_TIMEOUT_S)

    async def reconcile_suspensions(self, suspended: Mapping[str, str], now: float) -> None:
        """Make etcd's suspended tenants exactly the store's (a change may have missed etcd)."""
        for tenant, reason in suspended.items():
            await self.suspend(tenant, reason, now)
        if self.etcd is None:
            return
        from etcd3aio.kv import prefix_range_end

        found = await self.etcd.kv.get(
            TENANT_PREFIX, range_end=prefix_range_end(TENANT_PREFIX), keys_only=True, timeout=ETCD_TIMEOUT_S
        )
        for kv in found.kvs:
            tenant = kv.key.decode()[len(TENANT_PREFIX) :]
            if tenant not in suspended:
                await self.resume(tenant)

    async def jwks(self, jwks: Mapping[str, Any]) -> None:
        if self.etcd is not None:
            await self.etcd.kv.put(JWKS_KEY, json.dumps(jwks, sort_keys=True), timeout=ETCD_TIMEOUT_S)


class ThreatResponder:
    """Refusals in, detections and responses out."""

    def __init__(
        self,
        detector: ThreatDetector,
        store: TenancyStore,
        publisher: Publisher,
        record: Record,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.detector = detector
        self.store = store
        self.publisher = publisher
        self.record = record
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._suspended_seen: dict[tuple[str, str], float] = {}  # (tenant, subject) -> recorded at

    async def handle(self, refusal: Refusal) -> Detection | None:
        if is_suspension_refusal(refusal):
            await self._suspended_use(refusal)
            return None
        detection = self.detector.observe(refusal)
        if detection is None:
            return None
        done: list[str] = []
        for response in detection.responses:
            try:
                if response is Response.REVOCATION and detection.token_id:
                    issued = self.store.issued(detection.token_id)
                    expires = float(issued["expires_at"]) if issued else 0.0  # type: ignore[arg-type]
                    if self.store.revoke(
                        detection.token_id,
                        f"threat response: {detection.kind.value}",
                        detection.at,
                        detection.tenant,
                        expires,
                    ):
                        await self.publisher.revoke(
                            detection.token_id, detection.kind.value, expires, self.clock()
                        )
                    done.append("revocation")
                elif response is Response.LOCKOUT and detection.subject and detection.lockout_until:
                    await self.publisher.lock_out(
                        detection.tenant,
                        detection.subject,
                        detection.lockout_until,
                        self.clock(),
                        detection.kind.value,
                    )
                    done.append("lockout")
                elif response is Response.ALERT:
                    log.warning(
                        "SECURITY %s tenant=%r subject=%r source=%s: %s",
                        detection.kind.value,
                        detection.tenant,
                        detection.subject,
                        detection.source,
                        detection.detail,
                    )
                    done.append("alert")
            except Exception:
                log.exception("threat response %s for %s failed", response.value, detection.kind.value)
        await self._event(
            detection.tenant,
            detection.kind.value,
            detection.source,
            detection.subject,
            detection.token_id,
            detection.detail,
            done,
            detection.at,
        )
        return detection

    async def _suspended_use(self, refusal: Refusal) -> None:
        """A suspended tenant's token was presented: one event per subject per window.

        The refusal's claims are marked unverified (the verifier refused before the guard
        knew the principal), but only a token whose signature verified reaches the
        suspension check, so its tenant and subject are the token's own.
        """
        key = (refusal.tenant, refusal.subject)
        last = self._suspended_seen.get(key)
        if last is not None and refusal.at - last < SUSPENDED_USE_WINDOW_S:
            return
        self._suspended_seen = {
            k: t for k, t in self._suspended_seen.items() if refusal.at - t < SUSPENDED_USE_WINDOW_S
        }
        self._suspended_seen[key] = refusal.at
        detail = (
            f"token {refusal.jti[:40]!r} of subject {refusal.subject[:64]!r} of suspended tenant "
            f"{refusal.tenant!r} presented to {refusal.service}.{refusal.method}"
        )
        await self._event(
            refusal.tenant, SUSPENDED_USE_KIND, refusal.source, refusal.subject, refusal.jti, detail, ["refused"],
            refusal.at,
        )

    async def _event(
        self,
        tenant: str,
        kind: str,
        source: str,
        subject: str,
        token_id: str,
        detail: str,
        responses: list[str],
        at: float,
    ) -> None:
        """A security event in the store (ListSecurityEvents) and a SECURITY_EVENT audit entry."""
        event_id = uuid.uuid4().hex
        self.store.add_security_event(event_id, tenant, kind, source, detail, ",".join(responses), at)
        await self.record(
            "SECURITY_EVENT",
            tenant or "platform",
            f"security/{event_id}",
            {
                "kind": kind,
                "source": source,
                "subject": subject,
                "token_id": token_id,
                "detail": detail,
                "responses": responses,
            },
        )

    async def follow(self, etcd: Any) -> None:
        """Read every report batch under REPORTS_PREFIX from now on, and delete what was read."""
        from etcd3aio.kv import prefix_range_end

        start = (
            await etcd.kv.get(
                REPORTS_PREFIX,
                range_end=prefix_range_end(REPORTS_PREFIX),
                count_only=True,
                timeout=ETCD_TIMEOUT_S,
            )
        ).header.revision + 1
        while True:
            try:
                async for response in etcd.watch.watch(
                    REPORTS_PREFIX, range_end=prefix_range_end(REPORTS_PREFIX), start_revision=start
                ):
                    for event in response.events:
                        start = max(start, event.kv.mod_revision + 1)
                        if event.type == 1:  # deletions: batches we consumed, or lease expiry
                            continue
                        await self._batch(event.kv.value)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("security report watch interrupted; resuming", exc_info=True)
                await asyncio.sleep(1.0)

    async def _batch(self, value: bytes) -> None:
        try:
            body = json.loads(value)
            refusals = [Refusal.from_json(item) for item in body.get("refusals", [])]
        except (ValueError, TypeError, AttributeError):
            log.warning("ignoring a malformed security report batch")
            return
        for refusal in refusals:
            await self.handle(refusal)

    def start(self, etcd: Any | None) -> None:
        if etcd is not None:
            self._task = asyncio.create_task(self.follow(etcd), name="threat-responder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
