"""Threat detection over refused calls: plain rules, no gRPC, no storage.

Every service reports the calls it refused (services.common.security.Refusal).
`ThreatDetector.observe` feeds them through four rules and returns detections:

- auth_failure_burst: many UNAUTHENTICATED refusals from one source, or naming one
  tenant, within a window (someone guessing or replaying tokens);
- revoked_token_use: a revoked token presented at all;
- cross_tenant_probe: a verified principal repeatedly asking for another tenant's data;
- privilege_probe: a verified principal repeatedly calling RPCs its roles do not allow.

What to do about each (alert, lockout of the subject, revocation of the token) is a
`ThreatPolicy`, configurable live (tenancy's `threat_policy` key in etcd). A rule
fires once per key per window, so one burst is one security event, not hundreds.
Lockouts and revocations only ever target a *verified* token's subject: a failed
authentication names a tenant nobody proved, and locking that tenant out on its
word would let anyone lock anyone out.
"""

from __future__ import annotations

import enum
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from services.common.errors import InvalidArgument
from services.common.security import Refusal


class ThreatKind(enum.Enum):
    AUTH_FAILURE_BURST = "auth_failure_burst"
    REVOKED_TOKEN_USE = "revoked_token_use"
    CROSS_TENANT_PROBE = "cross_tenant_probe"
    PRIVILEGE_PROBE = "privilege_probe"


class Response(enum.Enum):
    ALERT = "alert"
    LOCKOUT = "lockout"
    REVOCATION = "revocation"


@dataclass(frozen=True)
class Rule:
    threshold: int  # refusals within the window that make a detection
    window_seconds: float
    responses: tuple[Response, ...]


@dataclass(frozen=True)
class ThreatPolicy:
    rules: Mapping[ThreatKind, Rule] = field(default_factory=lambda: dict(DEFAULT_RULES))
    lockout_seconds: float = 300.0

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ThreatPolicy:
        """{"lockout_seconds": 300, "rules": {"privilege_probe": {"threshold": 5,
        "window_seconds": 60, "responses": ["alert", "revocation"]}}}; missing parts keep defaults."""
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidArgument("threat_policy", f"must be a JSON object, got {type(data).__name__}")
        rules = dict(DEFAULT_RULES)
        for name, spec in (data.get("rules") or {}).items():
            try:
                kind = ThreatKind(name)
            except ValueError:
                raise InvalidArgument(
                    "threat_policy.rules",
                    f"unknown rule {name!r}; known: {', '.join(k.value for k in ThreatKind)}",
                ) from None
            base = rules[kind]
            threshold = int(spec.get("threshold", base.threshold))
            window = float(spec.get("window_seconds", base.window_seconds))
            if not 1 <= threshold <= 100_000:
                raise InvalidArgument(
                    f"threat_policy.rules.{name}.threshold", f"must be between 1 and 100000, got {threshold}"
                )
            if not 1 <= window <= 86_400:
                raise InvalidArgument(
                    f"threat_policy.rules.{name}.window_seconds", f"must be between 1 and 86400, got {window}"
                )
            try:
                responses = tuple(
                    Response(r) for r in spec.get("responses", [r.value for r in base.responses])
                )
            except ValueError:
                raise InvalidArgument(
                    f"threat_policy.rules.{name}.responses", "each must be alert, lockout or revocation"
                ) from None
            rules[kind] = Rule(threshold, window, responses)
        lockout = float(data.get("lockout_seconds", 300.0))
        if not 1 <= lockout <= 86_400:
            raise InvalidArgument(
                "threat_policy.lockout_seconds", f"must be between 1 and 86400, got {lockout}"
            )
        return cls(rules, lockout)


DEFAULT_RULES: dict[ThreatKind, Rule] = {
    ThreatKind.AUTH_FAILURE_BURST: Rule(20, 60.0, (Response.ALERT,)),
    ThreatKind.REVOKED_TOKEN_USE: Rule(1, 60.0, (Response.ALERT,)),
    ThreatKind.CROSS_TENANT_PROBE: Rule(3, 60.0, (Response.ALERT, Response.REVOCATION, Response.LOCKOUT)),
    ThreatKind.PRIVILEGE_PROBE: Rule(5, 60.0, (Response.ALERT, Response.REVOCATION)),
}


@dataclass(frozen=True)
class Detection:
    kind: ThreatKind
    tenant: str  # the tenant concerned ("" when nobody proved one)
    source: str
    subject: str
    token_id: str
    detail: str
    responses: tuple[Response, ...]
    at: float
    lockout_until: float = 0.0


def classify(refusal: Refusal) -> tuple[ThreatKind, str] | None:
    """Which rule a refusal feeds, and the key it is counted under."""
    reason = refusal.reason
    if refusal.status == "UNAUTHENTICATED":
        if "revoked" in reason:
            return ThreatKind.REVOKED_TOKEN_USE, f"jti:{refusal.jti}"
        return (
            ThreatKind.AUTH_FAILURE_BURST,
            f"tenant:{refusal.tenant}" if refusal.tenant else f"source:{refusal.source}",
        )
    if not refusal.verified:
        return None
    who = f"{refusal.tenant}/{refusal.subject}"
    if "does not match your token's tenant" in reason:
        return ThreatKind.CROSS_TENANT_PROBE, who
    if (
        "needs role" in reason
        or "needs a platform admin" in reason
        or "not open to any role" in reason
        or "cannot issue roles" in reason
    ):
        return ThreatKind.PRIVILEGE_PROBE, who
    return None


SWEEP_EVERY = 1024  # observations between sweeps of quiet counters


class ThreatDetector:
    """Sliding-window counters per (rule, key). Not thread-safe: feed it from one task."""

    def __init__(self, policy: ThreatPolicy | None = None) -> None:
        self.policy = policy or ThreatPolicy()
        self._seen: dict[tuple[ThreatKind, str], deque[float]] = defaultdict(deque)
        self._fired_until: dict[tuple[ThreatKind, str], float] = {}
        self._observed = 0

    def tracked_keys(self) -> int:
        """How many (rule, key) counters are held (bounded: quiet keys are forgotten)."""
        return len(self._seen.keys() | self._fired_until.keys())

    def _forget_quiet(self, now: float) -> None:
        """Drop counters whose window has passed (keys come from callers: sources, claims)."""
        for name in list(self._seen):
            times = self._seen[name]
            if not times or times[-1] <= now - self.policy.rules[name[0]].window_seconds:
                del self._seen[name]
        for name, until in list(self._fired_until.items()):
            if until <= now:
                del self._fired_until[name]

    def observe(self, refusal: Refusal) -> Detection | None:
        found = classify(refusal)
        if found is None:
            return None
        kind, key = found
        rule = self.policy.rules[kind]
        now = refusal.at
        self._observed += 1
        if self._observed % SWEEP_EVERY == 0:
            self._forget_quiet(now)
        times = self._seen[(kind, key)]
        times.append(now)
        while times and times[0] <= now - rule.window_seconds:
            times.popleft()
        if len(times) < rule.threshold or self._fired_until.get((kind, key), 0.0) > now:
            return None
        self._fired_until[(kind, key)] = now + rule.window_seconds
        count = len(times)
        times.clear()
        return self._detection(kind, refusal, rule, count)

    def _detection(self, kind: ThreatKind, refusal: Refusal, rule: Rule, count: int) -> Detection:
        responses = rule.responses
        if not refusal.verified:
            # Nothing proven about who this is: never lock out or revoke on an unverified claim.
            responses = tuple(r for r in responses if r is Response.ALERT) or (Response.ALERT,)
        detail = {
            ThreatKind.AUTH_FAILURE_BURST: f"{count} failed authentications within "
            f"{rule.window_seconds:.0f} s "
            f"from {refusal.source or 'unknown source'}"
            + (f" naming tenant {refusal.tenant!r}" if refusal.tenant else ""),
            ThreatKind.REVOKED_TOKEN_USE: f"revoked token {refusal.jti[:40]!r} of subject "
            f"{refusal.subject[:64]!r} presented to {refusal.service}.{refusal.method}",
            ThreatKind.CROSS_TENANT_PROBE: f"{count} requests for another tenant's data within "
            f"{rule.window_seconds:.0f} s; last: {refusal.reason[:160]}",
            ThreatKind.PRIVILEGE_PROBE: f"{count} calls beyond the token's roles within "
            f"{rule.window_seconds:.0f} s; last: {refusal.reason[:160]}",
        }[kind]
        detection = Detection(
            kind,
            refusal.tenant if refusal.tenant != "*" else "",
            refusal.source,
            refusal.subject,
            refusal.jti,
            detail,
            responses,
            refusal.at,
        )
        if Response.LOCKOUT in responses:
            detection = replace(detection, lockout_until=refusal.at + self.policy.lockout_seconds)
        return detection
