import asyncio
from collections.abc import Callable

import pytest

from services.common.errors import InvalidArgument
from services.common.live_config import LiveConfig
from services.predictor.predictor import Predictor
from services.predictor.schedule import next_check_in, tenants_due
from services.predictor.server import LIVE_DEFAULTS, retrain_on_schedule
from services.predictor.store import RunStore
from tests.unit.predictor.builders import DAY, MONDAY, series


def test_never_tried_tenants_are_due_longest_waiting_first() -> None:
    last = {"a": 100.0, "b": 50.0}
    assert tenants_due(["a", "b", "c"], last, now=200.0, interval_s=100.0) == ["c", "b", "a"]
    assert tenants_due(["a", "b", "c"], last, now=149.0, interval_s=100.0) == ["c"]


def test_interval_zero_turns_scheduling_off_and_bad_intervals_are_refused() -> None:
    assert tenants_due(["a"], {}, now=1e9, interval_s=0) == []
    assert next_check_in(0, tick_s=60) == 60
    assert next_check_in(5, tick_s=60) == 5
    assert next_check_in(86_400, tick_s=60) == 60
    for bad in (-1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(InvalidArgument, match="retrain_interval_seconds"):
            tenants_due(["a"], {}, now=0, interval_s=bad)  # type: ignore[arg-type]


def test_retrain_due_tries_each_tenant_once_per_interval(tmp_path) -> None:
    clock = [MONDAY + 30 * DAY]
    predictor = Predictor(RunStore.open(tmp_path / "p.db"), clock=lambda: clock[0])
    for tenant in ("acme", "globex"):
        for run in series("....F", tenant=tenant):
            predictor.record_run(run)
    first = predictor.retrain_due(3600)
    assert sorted(first) == ["acme", "globex"]
    assert all("not enough history" in r.reason for r in first.values())  # an answer, not an error
    clock[0] += 1800
    assert predictor.retrain_due(3600) == {}
    clock[0] += 1800
    assert sorted(predictor.retrain_due(3600)) == ["acme", "globex"]
    assert predictor.retrain_due(0) == {}


def test_an_on_demand_retrain_resets_that_tenants_clock(tmp_path) -> None:
    clock = [MONDAY + 30 * DAY]
    predictor = Predictor(RunStore.open(tmp_path / "p.db"), clock=lambda: clock[0])
    for run in series("....F"):
        predictor.record_run(run)
    predictor.retrain("acme")
    assert predictor.retrain_due(3600) == {}


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def test_the_scheduled_task_only_calls_the_domain_and_follows_live_config() -> None:
    calls: list[float] = []

    class FakePredictor:
        class store:  # noqa: N801
            @staticmethod
            def prune(now: float, days: float) -> int:
                return 0

        @staticmethod
        def clock() -> float:
            return 0.0

        def retrain_due(self, interval: float) -> dict:
            calls.append(interval)
            return {}

    async def scenario() -> None:
        live = LiveConfig("predictor", LIVE_DEFAULTS, {"retrain_interval_seconds": "0"})
        changed = asyncio.Event()
        task = asyncio.create_task(
            retrain_on_schedule(
                FakePredictor(),
                live,
                tick_s=0.05,  # type: ignore[arg-type]
                changed=changed,
            )
        )
        await eventually(lambda: len(calls) >= 2, "two scheduled retrain checks")
        live.apply("retrain_interval_seconds", "7200")
        changed.set()
        await eventually(lambda: calls[-1] == 7200, "a retrain check at the new interval")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert calls[0] == 0 and calls[-1] == 7200 and len(calls) >= 3
