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

The response fits the evidence. Revocation is for strong signals (calls beyond the
token's roles, configurable for any rule); a request naming another tenant is most
often a typo in a shared operator's script, so by default it answers with an alert
and a lockout that starts short (`first_lockout_seconds`, 5 s) and doubles with each
repetition by the same subject, up to `lockout_seconds` (300 s); a subject quiet for
`repeat_memory_seconds` (an hour) starts again from the short one.
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
    lockout_seconds: float = 300.0  # the longest lockout, reached by repetition
    first_lockout_seconds: float = 5.0  # a subject's first lockout; each repetition doubles it
    repeat_memory_seconds: float = 3600.0  # how long a lockout counts as a repetition for the next

    def lockout_for(self, repetition: int) -> float:
        """Length of a subject's lockout number `repetition` (1-based) within the memory."""
        return min(self.first_lockout_seconds * 2.0 ** (repetition - 1), self.lockout_seconds)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ThreatPolicy:
        """{"lockout_seconds": 300, "first_lockout_seconds": 5, "repeat_memory_seconds": 3600,
        "rules": {"privilege_probe": {"threshold": 5, "window_seconds": 60,
        "responses": ["alert", "revocation"]}}}; missing parts keep defaults."""
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
        first = float(data.get("first_lockout_seconds", min(5.0, lockout)))
        if not 1 <= first <= lockout:
            raise InvalidArgument(
                "threat_policy.first_lockout_seconds",
                f"must be between 1 and lockout_seconds ({lockout:g}), got {first:g}",
            )
        memory = float(data.get("repeat_memory_seconds", 3600.0))
        if not 1 <= memory <= 7 * 86_400:
            raise InvalidArgument(
                "threat_policy.repeat_memory_seconds", f"must be between 1 and 604800, got {memory:g}"
            )
        return cls(rules, lockout, first, memory)


DEFAULT_RULES: dict[ThreatKind, Rule] = {
    ThreatKind.AUTH_FAILURE_BURST: Rule(20, 60.0, (Response.ALERT,)),
    ThreatKind.REVOKED_TOKEN_USE: Rule(1, 60.0, (Response.ALERT,)),
    # Likely a typo in a shared identity's script: alert and a short, growing lockout, no revocation.
    ThreatKind.CROSS_TENANT_PROBE: Rule(3, 60.0, (Response.ALERT, Response.LOCKOUT)),
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
        self._lockouts: dict[tuple[str, str], tuple[int, float]] = {}  # (tenant, subject) -> (count, last at)
        self._observed = 0

    def tracked_keys(self) -> int:
        """How many (rule, key) counters are held (bounded: quiet keys are forgotten)."""
        return len(self._seen.keys() | self._fired_until.keys()) + len(self._lockouts)

    def _forget_quiet(self, now: float) -> None:
        """Drop counters whose window has passed (keys come from callers: sources, claims)."""
        for name in list(self._seen):
            times = self._seen[name]
            if not times or times[-1] <= now - self.policy.rules[name[0]].window_seconds:
                del self._seen[name]
        for name, until in list(self._fired_until.items()):
            if until <= now:
                del self._fired_until[name]
        for who, (_, last) in list(self._lockouts.items()):
            if last <= now - self.policy.repeat_memory_seconds:
                del self._lockouts[who]

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
        detection = self._detection(kind, refusal, rule, count)
        if detection.lockout_until:
            # The next burst after the lockout is a repetition: it may fire (and lock out longer) at once.
            self._fired_until[(kind, key)] = detection.lockout_until
        return detection

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
            who = (refusal.tenant, refusal.subject)
            previous, last = self._lockouts.get(who, (0, float("-inf")))
            repetition = previous + 1 if refusal.at - last < self.policy.repeat_memory_seconds else 1
            self._lockouts[who] = (repetition, refusal.at)
            seconds = self.policy.lockout_for(repetition)
            detection = replace(
                detection,
                lockout_until=refusal.at + seconds,
                detail=f"{detail}; locked out for {seconds:g} s (lockout {repetition} of this subject "
                f"within {self.policy.repeat_memory_seconds:g} s)",
            )
        return detection
