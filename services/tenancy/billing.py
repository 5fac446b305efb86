"""Usage and billing: a report is a pure function of the stored usage events and a price plan.

Money is counted in integer micro-dollars, so a report computed twice from the same
events is the same to the last digit; `events_digest` (SHA-256 over the canonical
events, in order) lets anyone check that a report and a re-computation saw the
same events. No gRPC, no SQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.tenancy.quotas import Resource

MICROS_PER_USD = 1_000_000
MAX_PERIOD_SECONDS = 366 * 86_400

# Unit prices in micro-dollars per unit consumed (one failure reported, one action,
# one runner minute). "free" is metered, not charged.
PRICE_PLANS: dict[str, dict[Resource, int]] = {
    "free": {
        Resource.RESOURCE_FAILURES_PER_MINUTE: 0,
        Resource.RESOURCE_ACTIONS_PER_DAY: 0,
        Resource.RESOURCE_RUNNER_MINUTES_PER_MONTH: 0,
    },
    "team": {
        Resource.RESOURCE_FAILURES_PER_MINUTE: 2_000,
        Resource.RESOURCE_ACTIONS_PER_DAY: 10_000,
        Resource.RESOURCE_RUNNER_MINUTES_PER_MONTH: 8_000,
    },
    "enterprise": {
        Resource.RESOURCE_FAILURES_PER_MINUTE: 1_000,
        Resource.RESOURCE_ACTIONS_PER_DAY: 5_000,
        Resource.RESOURCE_RUNNER_MINUTES_PER_MONTH: 6_000,
    },
}


@dataclass(frozen=True)
class UsageEvent:
    request_id: str
    resource: Resource
    amount: int
    at: float


@dataclass(frozen=True)
class BillingLine:
    resource: Resource
    quantity: int
    unit_price_micros: int
    amount_micros: int


@dataclass(frozen=True)
class BillingReport:
    tenant_id: str
    plan: str
    period_start: float
    period_end: float
    lines: tuple[BillingLine, ...]
    total_micros: int
    events_digest: str
    event_count: int


def validate_period(start: float, end: float) -> tuple[float, float]:
    if start <= 0:
        raise InvalidArgument("period_start", "is required (seconds since the epoch, > 0)")
    if end <= start:
        raise InvalidArgument("period_end", f"must be after period_start ({start:.0f}), got {end:.0f}")
    if end - start > MAX_PERIOD_SECONDS:
        raise InvalidArgument(
            "period_end", f"a period spans at most 366 days, got {(end - start) / 86_400:.1f}"
        )
    return start, end


def events_digest(events: Iterable[UsageEvent]) -> str:
    """SHA-256 over the events in (time, request id) order, one canonical line each."""
    digest = hashlib.sha256()
    for event in sorted(events, key=lambda e: (e.at, e.request_id)):
        digest.update(f"{event.request_id}\t{int(event.resource)}\t{event.amount}\t{event.at!r}\n".encode())
    return digest.hexdigest()


def usage_totals(events: Iterable[UsageEvent]) -> dict[Resource, int]:
    totals: dict[Resource, int] = {}
    for event in events:
        totals[event.resource] = totals.get(event.resource, 0) + event.amount
    return dict(sorted(totals.items()))


def billing_report(
    tenant_id: str,
    plan: str,
    start: float,
    end: float,
    events: Iterable[UsageEvent],
    prices: Mapping[str, Mapping[Resource, int]] = PRICE_PLANS,
) -> BillingReport:
    if plan not in prices:
        raise InvalidArgument("plan", f"no price plan {plan!r}; known: {', '.join(prices)}")
    validate_period(start, end)
    chosen = [e for e in events if start <= e.at < end]
    lines = tuple(
        BillingLine(resource, quantity, prices[plan][resource], quantity * prices[plan][resource])
        for resource, quantity in usage_totals(chosen).items()
    )
    return BillingReport(
        tenant_id,
        plan,
        start,
        end,
        lines,
        sum(line.amount_micros for line in lines),
        events_digest(chosen),
        len(chosen),
    )


def usd(micros: int) -> float:
    return micros / MICROS_PER_USD
