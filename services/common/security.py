"""Zero-trust plumbing every service shares: the revocation list, subject lockouts,
the published JWKS, and reporting of refused calls to the threat detector.

All of it travels through etcd, so it needs no RPC of its own:

- `/healing-guard/revoked/jti/<jti>`: a revoked token (value: JSON reason, times),
  put by tenancy under a lease that ends when the token would have expired anyway,
  so the list never grows beyond the live tokens.
- `/healing-guard/revoked/subject/<tenant>/<subject>`: a temporary lockout (threat
  response), under a lease of the lockout's length.
- `/healing-guard/revoked/tenant/<tenant>`: a suspended tenant (value: JSON reason,
  time), put by tenancy's SuspendTenant with no lease and deleted when a platform
  admin resumes the tenant (UpdateTenant with state ACTIVE). Every token of that
  tenant is refused by every service; platform admins (tenant "platform") and
  service tokens (tenant "*") are never suspended this way.
- `/healing-guard/jwks`: the JWKS tenancy publishes when it rotates signing keys;
  services trust its keys in addition to the JWKS file they started with.
- `/healing-guard/security/reports/<service>/<ns>-<rand>`: batches of refused
  calls (UNAUTHENTICATED / PERMISSION_DENIED) that tenancy's threat rules read.

Bounded staleness: every service watches the revocation prefix (a revocation or
suspension applies within one watch event, milliseconds on loopback) and re-reads
the whole prefix every `RESYNC_INTERVAL_S`, so even a silently stalled watch (or a
watch event overtaken by a resync's older snapshot) lets a revoked token or a
suspended tenant through for at most that long plus one etcd read (5 s timeout).
While etcd is unreachable a service keeps its last list and logs; tokens are
short-lived (at most a day, one hour by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from services.common.auth import PLATFORM_TENANT
from services.common.errors import HealingGuardError, PermissionDenied, Unauthenticated
from services.common.tokens import Principal, TokenVerifier

log = logging.getLogger(__name__)

REVOKED_PREFIX = "/healing-guard/revoked/"
JTI_PREFIX = REVOKED_PREFIX + "jti/"
SUBJECT_PREFIX = REVOKED_PREFIX + "subject/"
TENANT_PREFIX = REVOKED_PREFIX + "tenant/"
JWKS_KEY = "/healing-guard/jwks"
REPORTS_PREFIX = "/healing-guard/security/reports/"

RESYNC_INTERVAL_S = 5.0  # the staleness bound if a watch stalls
REPORT_FLUSH_S = 1.0  # refused calls are batched this long before reaching etcd
REPORT_TTL_S = 120  # report batches expire from etcd after this
REPORT_BATCH_MAX = 500  # at most this many refusals per batch; the rest are counted

SERVICE_TENANT = "*"  # the tenant claim of service tokens (deploy/mesh.py mints them)
# Suspension is a tenant's state; platform admins and services are not tenants and must
# stay able to act (not least to resume the tenant), whatever etcd says.
NEVER_SUSPENDED = frozenset({PLATFORM_TENANT, SERVICE_TENANT})
SUSPENDED_PHRASE = " is suspended: "  # in the refusal message; how tenancy recognises the refusal


def lockout_key(tenant: str, subject: str) -> str:
    return f"{SUBJECT_PREFIX}{tenant}/{subject}"


def suspension_key(tenant: str) -> str:
    return f"{TENANT_PREFIX}{tenant}"


def suspension_message(tenant: str, reason: str) -> str:
    return (
        f"tenant {tenant!r}{SUSPENDED_PHRASE}{reason}; every token of the tenant is refused "
        "until a platform admin resumes it"
    )


class RevocationList:
    """Revoked token ids and locked-out subjects, as last read from etcd. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._jtis: dict[str, float] = {}  # jti -> when it may be forgotten (0 = never)
        self._lockouts: dict[str, float] = {}  # "tenant/subject" -> locked until
        self._suspended: dict[str, str] = {}  # tenant -> reason
        self.synced_at = 0.0

    def is_revoked(self, jti: str) -> bool:
        with self._lock:
            return jti in self._jtis

    def locked_until(self, tenant: str, subject: str) -> float | None:
        with self._lock:
            until = self._lockouts.get(f"{tenant}/{subject}")
        if until is None or until <= self._clock():
            return None
        return until

    def suspension(self, tenant: str) -> str | None:
        """Why `tenant` is suspended, or None if it is not (never for platform or services)."""
        if tenant in NEVER_SUSPENDED:
            return None
        with self._lock:
            return self._suspended.get(tenant)

    def suspend(self, tenant: str, reason: str) -> None:
        with self._lock:
            self._suspended[tenant] = reason

    def resume(self, tenant: str) -> None:
        with self._lock:
            self._suspended.pop(tenant, None)

    def revoke(self, jti: str, forget_after: float = 0.0) -> None:
        with self._lock:
            self._jtis[jti] = forget_after

    def lock_out(self, tenant: str, subject: str, until: float) -> None:
        with self._lock:
            self._lockouts[f"{tenant}/{subject}"] = until

    def apply(self, key: str, value: bytes | None) -> None:
        """Apply one etcd key under REVOKED_PREFIX (value None: deleted)."""
        if key.startswith(JTI_PREFIX):
            jti = key[len(JTI_PREFIX) :]
            with self._lock:
                if value is None:
                    self._jtis.pop(jti, None)
                else:
                    self._jtis[jti] = 0.0
        elif key.startswith(SUBJECT_PREFIX):
            who = key[len(SUBJECT_PREFIX) :]
            with self._lock:
                if value is None:
                    self._lockouts.pop(who, None)
                else:
                    self._lockouts[who] = float(_json(value).get("until", 0.0))
        elif key.startswith(TENANT_PREFIX):
            tenant = key[len(TENANT_PREFIX) :]
            with self._lock:
                if value is None:
                    self._suspended.pop(tenant, None)
                else:
                    # An unreadable value still suspends: fail closed, say so.
                    reason = _json(value).get("reason")
                    self._suspended[tenant] = str(reason)[:500] if reason else "no reason recorded"

    def replace(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Replace everything with a full read of the prefix (the periodic resync)."""
        fresh = RevocationList(self._clock)
        for key, value in items:
            fresh.apply(key, value)
        with self._lock:
            # Keep local revocations not yet seen in etcd (tenancy applies its own at once).
            now = self._clock()
            pending = {j: t for j, t in self._jtis.items() if t and t > now and j not in fresh._jtis}
            self._jtis = {**fresh._jtis, **pending}
            self._lockouts = fresh._lockouts
            self._suspended = fresh._suspended
            self.synced_at = now


class GuardedVerifier(TokenVerifier):
    """A TokenVerifier that also refuses revoked tokens, suspended tenants and locked-out subjects."""

    def __init__(self, *args: Any, revocations: RevocationList, **kwargs: Any) -> None:
        # args never reach is_revoked's position: callers pass the JWKS (and options by keyword)
        super().__init__(*args, is_revoked=revocations.is_revoked, **kwargs)  # type: ignore[misc]
        self.revocations = revocations
        self._file_jwks: Mapping[str, Any] = {"keys": []}

    @classmethod
    def from_file(cls, path: Any, revocations: RevocationList, **kwargs: Any) -> GuardedVerifier:
        jwks = json.loads(open(path).read())
        verifier = cls(jwks, revocations=revocations, **kwargs)
        verifier._file_jwks = jwks
        return verifier

    def trust_published(self, published: Mapping[str, Any] | None) -> None:
        """Trust the file's keys plus tenancy's published ones (rotation overlap)."""
        keys = {k["kid"]: k for k in self._file_jwks.get("keys", []) if "kid" in k}
        for jwk in (published or {}).get("keys", []):
            if isinstance(jwk, dict) and jwk.get("kid"):
                keys.setdefault(jwk["kid"], jwk)
        self.update_jwks({"keys": list(keys.values())})

    def verify(self, token: str) -> Principal:
        principal = super().verify(token)
        reason = self.revocations.suspension(principal.tenant)
        if reason is not None:
            # PERMISSION_DENIED, not UNAUTHENTICATED: the token is authentic and says who
            # is calling; what is refused is the tenant acting at all. A fresh token cannot
            # help (IssueToken refuses suspended tenants), so clients must not be invited to
            # re-authenticate, and these refusals must not count as failed authentications
            # in the threat rules. Lockouts answer the same way.
            raise PermissionDenied(suspension_message(principal.tenant, reason))
        until = self.revocations.locked_until(principal.tenant, principal.subject)
        if until is not None:
            raise PermissionDenied(
                f"{principal.subject!r} of tenant {principal.tenant!r} is locked out until "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))} after suspicious activity"
            )
        return principal


# --- refused calls ---------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """One refused call, as the threat rules see it."""

    service: str
    method: str
    status: str  # UNAUTHENTICATED or PERMISSION_DENIED
    reason: str  # the message the caller got
    source: str  # client address (x-forwarded-for behind the gateway)
    tenant: str  # the token's tenant claim ("" if none; unverified when UNAUTHENTICATED)
    subject: str
    jti: str
    verified: bool  # claims come from a token that verified
    at: float

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Refusal:
        return cls(**{name: data.get(name, "") for name in cls.__dataclass_fields__})  # type: ignore[arg-type]


def is_suspension_refusal(refusal: Refusal) -> bool:
    """Was this call refused because the token's tenant is suspended?"""
    return (
        refusal.status == "PERMISSION_DENIED"
        and bool(refusal.tenant)
        and refusal.reason.startswith(f"tenant {refusal.tenant!r}{SUSPENDED_PHRASE}")
    )


def refusal_of(
    service: str,
    method_path: str,
    peer: str,
    error: HealingGuardError,
    metadata: Sequence[tuple[str, Any]] | None,
    principal: Principal | None,
    now: float | None = None,
) -> Refusal:
    """Describe a refused call; claims of an unverified token are read but marked so."""
    headers = {key: (value.decode() if isinstance(value, bytes) else value) for key, value in metadata or ()}
    forwarded = headers.get("x-forwarded-for", "").split(",")[0].strip()
    source = forwarded or _host(peer)
    tenant = subject = jti = ""
    verified = principal is not None
    if principal is not None:
        tenant, subject, jti = principal.tenant, principal.subject, principal.token_id
    else:
        claims = _unverified_claims(headers.get("authorization", ""))
        tenant, subject, jti = (str(claims.get(k, ""))[:128] for k in ("tenant", "sub", "jti"))
    status = "UNAUTHENTICATED" if isinstance(error, Unauthenticated) else "PERMISSION_DENIED"
    return Refusal(
        service,
        method_path.rsplit("/", 1)[-1],
        status,
        error.message[:300],
        source,
        tenant,
        subject,
        jti,
        verified,
        time.time() if now is None else now,
    )


def _host(peer: str) -> str:
    # grpc peers look like "ipv4:127.0.0.1:5555" or "ipv6:[::1]:5555"
    _, _, rest = peer.partition(":")
    return rest.rsplit(":", 1)[0] if rest else peer


def _unverified_claims(authorization: str) -> dict[str, Any]:
    _, _, token = authorization.partition(" ")
    try:
        claims = jwt.decode(token.strip(), options={"verify_signature": False})
    except Exception:  # garbage is garbage: nothing to attribute
        return {}
    return claims if isinstance(claims, dict) else {}


class RefusalReporter:
    """Buffers refused calls and writes them to etcd in batches (never blocks a call)."""

    def __init__(self, service: str, replica: str) -> None:
        self.service = service
        self.replica = replica
        self._buffer: list[Refusal] = []
        self._dropped = 0
        self._lock = threading.Lock()
        self.listeners: list[Callable[[Refusal], None]] = []

    def report(self, refusal: Refusal) -> None:
        for listener in self.listeners:
            listener(refusal)
        with self._lock:
            if len(self._buffer) < REPORT_BATCH_MAX:
                self._buffer.append(refusal)
            else:
                self._dropped += 1

    def take(self) -> tuple[list[Refusal], int]:
        with self._lock:
            batch, dropped = self._buffer, self._dropped
            self._buffer, self._dropped = [], 0
        return batch, dropped

    async def flush(self, etcd: Any) -> None:
        batch, dropped = self.take()
        if not batch:
            return
        lease = await etcd.lease.grant(REPORT_TTL_S, timeout=5)
        key = f"{REPORTS_PREFIX}{self.replica}/{time.time_ns()}-{os.urandom(4).hex()}"
        body = {"service": self.service, "dropped": dropped, "refusals": [r.to_json() for r in batch]}
        await etcd.kv.put(key, json.dumps(body, separators=(",", ":")), lease=lease.ID, timeout=5)


# --- wiring into one service -------------------------------------------------------------


@dataclass
class SecurityPlumbing:
    """What `runtime` builds for every service and the Guard uses."""

    service: str
    revocations: RevocationList
    reporter: RefusalReporter
    verifier: GuardedVerifier | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def on_auth_failure(
        self,
        method_path: str,
        peer: str,
        error: HealingGuardError,
        metadata: Sequence[tuple[str, Any]] | None,
        principal: Principal | None,
    ) -> None:
        self.reporter.report(refusal_of(self.service, method_path, peer, error, metadata, principal))

    async def start(self, etcd: Any | None) -> None:
        if etcd is None:
            return
        await self._resync(etcd)
        self.tasks = [
            asyncio.create_task(self._watch(etcd), name="revocation-watch"),
            asyncio.create_task(self._periodic(etcd), name="revocation-resync"),
        ]

    async def _resync(self, etcd: Any) -> None:
        from etcd3aio.kv import prefix_range_end

        response = await etcd.kv.get(REVOKED_PREFIX, range_end=prefix_range_end(REVOKED_PREFIX), timeout=5)
        self.revocations.replace([(kv.key.decode(), kv.value) for kv in response.kvs])
        published = await etcd.kv.get(JWKS_KEY, timeout=5)
        if self.verifier is not None and published.kvs:
            jwks = _json(published.kvs[0].value)
            if jwks.get("keys"):
                self.verifier.trust_published(jwks)
        self._revision = response.header.revision

    async def _watch(self, etcd: Any) -> None:
        from etcd3aio.kv import prefix_range_end

        while True:
            try:
                async for response in etcd.watch.watch(
                    REVOKED_PREFIX,
                    range_end=prefix_range_end(REVOKED_PREFIX),
                    start_revision=self._revision + 1,
                ):
                    for event in response.events:
                        deleted = event.type == 1
                        self.revocations.apply(event.kv.key.decode(), None if deleted else event.kv.value)
                        self._revision = max(self._revision, event.kv.mod_revision)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "revocation watch interrupted; the %.0f s resync covers it",
                    RESYNC_INTERVAL_S,
                    exc_info=True,
                )
                await asyncio.sleep(1.0)

    async def _periodic(self, etcd: Any) -> None:
        next_resync = time.monotonic() + RESYNC_INTERVAL_S
        while True:
            await asyncio.sleep(REPORT_FLUSH_S)
            try:
                await self.reporter.flush(etcd)
                if time.monotonic() >= next_resync:
                    next_resync = time.monotonic() + RESYNC_INTERVAL_S
                    await self._resync(etcd)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("security sync with etcd failed; keeping the last revocation list", exc_info=True)

    async def stop(self, etcd: Any | None = None) -> None:
        if etcd is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reporter.flush(etcd), 2)
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _json(value: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}
