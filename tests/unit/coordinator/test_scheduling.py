"""Fair, limited scheduling: one tenant's burst does not starve another."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.common.vocabulary import ActionKind, FailureClass, Provider
from services.coordinator.actions import ActionRecord
from services.coordinator.scheduling import (
    ExecutorSlot,
    Limits,
    executor_can_run,
    fair_order,
    required_labels,
    running_by_tenant,
)


def action(tenant: str, n: int, *, provider: Provider = Provider.PROVIDER_GITHUB_ACTIONS,
           labels: str = "") -> ActionRecord:
    return ActionRecord(action_id=f"{tenant}-{n}", tenant=tenant, plan_id=f"{tenant}-plan-{n}", failure_id="f",
                        order=0, kind=ActionKind.RETRY, provider=provider,
                        parameters={"executor_labels": labels} if labels else {}, idempotency_key=f"{tenant}-{n}",
                        failure_class=FailureClass.FLAKY_TEST, created_at=float(n))


def test_a_burst_does_not_starve_a_small_tenant() -> None:
    burst = [action("big", n) for n in range(1000)]
    late = [action("small", 5000)]     # submitted after the whole burst
    chosen = fair_order(burst + late, {}, Limits(), free_slots=2)
    assert [r.tenant for r in chosen] == ["big", "small"]


def test_tenants_alternate_and_each_takes_its_oldest_first() -> None:
    chosen = fair_order([action("a", 3), action("a", 1), action("b", 2), action("a", 2)], {}, Limits(), free_slots=4)
    assert [r.action_id for r in chosen] == ["a-1", "b-2", "a-2", "a-3"]


def test_the_rotation_continues_after_the_last_served_tenant() -> None:
    candidates = [action(t, 1) for t in "abc"]
    assert fair_order(candidates, {}, Limits(), free_slots=1, start_after="a")[0].tenant == "b"
    assert fair_order(candidates, {}, Limits(), free_slots=1, start_after="c")[0].tenant == "a"


def test_tenant_limit_counts_what_is_already_running() -> None:
    candidates = [action("a", n) for n in range(5)] + [action("b", n) for n in range(5)]
    chosen = fair_order(candidates, {"a": 2}, Limits(tenant_limit=3), free_slots=10)
    assert sum(r.tenant == "a" for r in chosen) == 1
    assert sum(r.tenant == "b" for r in chosen) == 3


def test_global_limit_counts_every_tenant() -> None:
    candidates = [action("a", n) for n in range(5)] + [action("b", n) for n in range(5)]
    assert len(fair_order(candidates, {"c": 6}, Limits(global_limit=8))) == 2
    assert fair_order(candidates, {"c": 8}, Limits(global_limit=8)) == []


def test_negative_limits_are_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidArgument, match="tenant_concurrency"):
        Limits(tenant_limit=-1)


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 50)), max_size=60, unique=True),
       st.integers(0, 12), st.integers(0, 5), st.integers(0, 20))
def test_limits_hold_and_shares_differ_by_at_most_one(items, slots, tenant_limit, global_limit) -> None:  # type: ignore[no-untyped-def]
    candidates = [action(t, n) for t, n in items]
    limits = Limits(global_limit=global_limit, tenant_limit=tenant_limit)
    chosen = fair_order(candidates, {}, limits, free_slots=slots)
    assert len(chosen) <= slots and (not global_limit or len(chosen) <= global_limit)
    assert len({r.action_id for r in chosen}) == len(chosen)
    per = running_by_tenant([])
    for record in chosen:
        per[record.tenant] = per.get(record.tenant, 0) + 1
    if tenant_limit:
        assert all(count <= tenant_limit for count in per.values())
    # a tenant left out or short-changed only because it ran out of work or hit its limit
    waiting = {t for t, _ in items}
    for tenant in waiting:
        have = per.get(tenant, 0)
        available = sum(1 for t, _ in items if t == tenant)
        if have < available and (not tenant_limit or have < tenant_limit):
            assert all(count <= have + 1 for count in per.values())


def test_executors_match_by_provider_and_labels() -> None:
    slot = ExecutorSlot("e1", Provider.PROVIDER_GITLAB, {"arch": "arm64", "zone": "eu"}, capacity=2)
    assert executor_can_run(slot, action("a", 1, provider=Provider.PROVIDER_GITLAB))
    assert executor_can_run(slot, action("a", 1, provider=Provider.PROVIDER_GITLAB, labels="arch=arm64"))
    assert not executor_can_run(slot, action("a", 1, provider=Provider.PROVIDER_GITLAB, labels="arch=amd64"))
    assert not executor_can_run(slot, action("a", 1, provider=Provider.PROVIDER_JENKINS))
    assert required_labels(action("a", 1, labels=" arch=arm64 , zone=eu ,")) == {"arch": "arm64", "zone": "eu"}
