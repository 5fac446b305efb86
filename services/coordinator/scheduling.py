"""Which runnable actions start now: fair across tenants, within concurrency limits,
and — for external executors — matched by provider, labels and free capacity.

Plain functions over `ActionRecord`s, no gRPC and no etcd, so the leader's
dispatcher and `ClaimAction` make the same decision and tests can check it directly.

Fairness: tenants take turns. Each pass gives every tenant that still has work and
is under its limit one action (its oldest), so a tenant with a burst of a thousand
actions gets the same share of free slots as a tenant with one; the rotation
starts after the tenant served first last time, so ties do not always favour the
same tenant.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.common.vocabulary import Provider
from services.coordinator.actions import ActionRecord, ActionState

LABELS_PARAMETER = "executor_labels"   # "key=value,key2=value2": labels an executor must carry


@dataclass(frozen=True)
class Limits:
    """Concurrency limits (0 = unlimited): actions CLAIMED at once, in all and per tenant."""

    global_limit: int = 0
    tenant_limit: int = 0

    def __post_init__(self) -> None:
        if self.global_limit < 0:
            raise InvalidArgument("global_concurrency", f"must be >= 0 (0 = unlimited), got {self.global_limit}")
        if self.tenant_limit < 0:
            raise InvalidArgument("tenant_concurrency", f"must be >= 0 (0 = unlimited), got {self.tenant_limit}")


@dataclass(frozen=True)
class ExecutorSlot:
    """An external executor as the scheduler sees it."""

    executor_id: str
    provider: Provider
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: int = 1


def running_by_tenant(records: Iterable[ActionRecord]) -> dict[str, int]:
    running: dict[str, int] = defaultdict(int)
    for record in records:
        if record.state is ActionState.ACTION_STATE_CLAIMED:
            running[record.tenant] += 1
    return dict(running)


def required_labels(record: ActionRecord) -> dict[str, str]:
    """The labels an executor needs for this action (parameter `executor_labels`)."""
    text = record.parameters.get(LABELS_PARAMETER, "")
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        labels[key.strip()] = value.strip()
    return labels


def executor_can_run(slot: ExecutorSlot, record: ActionRecord) -> bool:
    if record.provider is not slot.provider:
        return False
    return all(slot.labels.get(key) == value for key, value in required_labels(record).items())


def fair_order(candidates: Sequence[ActionRecord], running: Mapping[str, int], limits: Limits,
               *, free_slots: int | None = None, start_after: str = "") -> list[ActionRecord]:
    """The candidates to start now, in the order to start them.

    `running` counts actions already CLAIMED per tenant (by anyone). At most
    `free_slots` are returned (None = no extra bound beyond the limits).
    """
    total_running = sum(running.values())
    budget = free_slots if free_slots is not None else len(candidates)
    if limits.global_limit:
        budget = min(budget, limits.global_limit - total_running)
    if budget <= 0:
        return []
    grouped: dict[str, list[ActionRecord]] = {}
    for record in candidates:
        grouped.setdefault(record.tenant, []).append(record)
    # Only the oldest `budget` of each tenant can be chosen: no need to sort the rest.
    queues = {tenant: deque(heapq.nsmallest(budget, records, key=lambda r: (r.created_at, r.plan_id, r.order)))
              for tenant, records in grouped.items()}
    tenants = sorted(queues)
    if start_after:
        later = [t for t in tenants if t > start_after]
        tenants = later + [t for t in tenants if t <= start_after]
    started: dict[str, int] = defaultdict(int)
    chosen: list[ActionRecord] = []
    while len(chosen) < budget:
        progressed = False
        for tenant in tenants:
            if len(chosen) >= budget:
                break
            queue = queues[tenant]
            if not queue:
                continue
            if limits.tenant_limit and running.get(tenant, 0) + started[tenant] >= limits.tenant_limit:
                continue
            chosen.append(queue.popleft())
            started[tenant] += 1
            progressed = True
        if not progressed:
            break
    return chosen
