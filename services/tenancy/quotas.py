"""Quota arithmetic: fixed windows per resource, limits per plan. No gRPC, no SQL.

A window is aligned to the clock (the minute, the UTC day, the UTC month), so
every replica and every report agrees on which window an event belongs to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from services.common.errors import InvalidArgument

MAX_LIMIT = 10**12
MAX_AMOUNT = 10**9


class Resource(enum.IntEnum):
    RESOURCE_UNSPECIFIED = 0
    RESOURCE_FAILURES_PER_MINUTE = 1
    RESOURCE_ACTIONS_PER_DAY = 2
    RESOURCE_RUNNER_MINUTES_PER_MONTH = 3


DEFAULT_LIMITS: dict[str, dict[Resource, int]] = {
    "free": {
        Resource.RESOURCE_FAILURES_PER_MINUTE: 60,
        Resource.RESOURCE_ACTIONS_PER_DAY: 500,
        Resource.RESOURCE_RUNNER_MINUTES_PER_MONTH: 2_000,
    },
    "team": {
        Resource.RESOURCE_FAILURES_PER_MINUTE: 600,
        Resource.RESOURCE_ACTIONS_PER_DAY: 10_000,
        Resource.RESOURCE_RUNNER_MINUTES_PER_MONTH: 50_000,
    },
    "enterprise": {
        Resource.RESOURCE_FAILURES_PER_MINUTE: 6_000,
        Resource.RESOURCE_ACTIONS_PER_DAY: 200_000,
        Resource.RESOURCE_RUNNER_MINUTES_PER_MONTH: 1_000_000,
    },
}


@dataclass(frozen=True)
class Window:
    start: float
    end: float


def window_of(resource: Resource, now: float) -> Window:
    moment = datetime.fromtimestamp(now, UTC)
    if resource is Resource.RESOURCE_FAILURES_PER_MINUTE:
        start = moment.replace(second=0, microsecond=0)
        return Window(start.timestamp(), start.timestamp() + 60)
    if resource is Resource.RESOURCE_ACTIONS_PER_DAY:
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return Window(start.timestamp(), start.timestamp() + 86_400)
    if resource is Resource.RESOURCE_RUNNER_MINUTES_PER_MONTH:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return Window(start.timestamp(), following.timestamp())
    raise InvalidArgument("resource", f"must be a known resource, got {int(resource)}")


def parse_resource(value: int, field_name: str = "resource") -> Resource:
    try:
        resource = Resource(value)
    except ValueError:
        raise InvalidArgument(field_name, f"unknown resource {value}") from None
    if resource is Resource.RESOURCE_UNSPECIFIED:
        raise InvalidArgument(field_name, "is required (RESOURCE_FAILURES_PER_MINUTE, ...)")
    return resource


def validate_limit(limit: int) -> int:
    if limit < 0 or limit > MAX_LIMIT:
        raise InvalidArgument("limit", f"must be between 0 and {MAX_LIMIT}, got {limit}")
    return limit


def validate_amount(amount: int) -> int:
    if amount < 1 or amount > MAX_AMOUNT:
        raise InvalidArgument("amount", f"must be between 1 and {MAX_AMOUNT}, got {amount}")
    return amount
