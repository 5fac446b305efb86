import pytest

from services.common.vocabulary import GENUINE_BREAKS, ActionKind, FailureClass
from services.planner.costs import (
    RETRY_ACTIONS,
    CandidateContext,
    CostModel,
    action_parameters,
    estimate_cost,
    raised_memory_mb,
    why_not_allowed,
)

MODEL = CostModel(usd_per_runner_minute=0.01, fresh_runner_overhead_minutes=2.0, cold_cache_factor=1.5,
                  human_minutes_per_escalation=30.0, default_memory_mb=4096, memory_raise_factor=2.0,
                  max_memory_mb=16384)


def ctx(cls=FailureClass.FLAKY_TEST, attempt=0, max_attempts=2, **kw):
    return CandidateContext(failure_class=cls, attempt=attempt, max_attempts=max_attempts, **kw)


def test_retry_costs_the_job_duration_in_runner_minutes_and_money():
    cost = estimate_cost(ActionKind.RETRY, 600, MODEL)
    assert cost.runner_minutes == pytest.approx(10.0)
    assert cost.usd == pytest.approx(0.10)
    assert cost.human_minutes == 0


def test_fresh_runner_cache_and_bigger_runner_cost_more_than_a_plain_retry():
    plain = estimate_cost(ActionKind.RETRY, 600, MODEL)
    assert estimate_cost(ActionKind.RETRY_ON_FRESH_RUNNER, 600, MODEL).runner_minutes == pytest.approx(12.0)
    assert estimate_cost(ActionKind.CLEAR_CACHE, 600, MODEL).runner_minutes == pytest.approx(15.0)
    bigger = estimate_cost(ActionKind.RAISE_RESOURCE_LIMIT, 600, MODEL, memory_limit_mb=4096)
    assert bigger.runner_minutes == pytest.approx(plain.runner_minutes)
    assert bigger.usd == pytest.approx(2 * plain.usd)


def test_escalation_costs_human_minutes_not_runners():
    cost = estimate_cost(ActionKind.ESCALATE, 600, MODEL)
    assert (cost.runner_minutes, cost.usd, cost.human_minutes) == (0.0, 0.0, 30.0)
    assert cost.total_usd(MODEL) == pytest.approx(30 * MODEL.usd_per_human_minute)


def test_memory_limit_doubles_up_to_the_ceiling():
    assert raised_memory_mb(None, MODEL) == 8192
    assert raised_memory_mb(6000, MODEL) == 12000
    assert raised_memory_mb(12000, MODEL) == 16384


@pytest.mark.parametrize("cls", sorted(GENUINE_BREAKS))
@pytest.mark.parametrize("kind", sorted(RETRY_ACTIONS))
def test_a_genuine_break_is_never_retried(cls, kind):
    reason = why_not_allowed(kind, ctx(cls), MODEL)
    assert reason is not None and "genuine break" in reason


def test_non_genuine_classes_may_be_retried():
    assert why_not_allowed(ActionKind.RETRY, ctx(FailureClass.NETWORK), MODEL) is None


def test_quarantine_needs_a_named_flaky_test():
    assert "flaky evidence" in why_not_allowed(ActionKind.QUARANTINE_TEST, ctx(flaky_test=None), MODEL)
    assert why_not_allowed(ActionKind.QUARANTINE_TEST, ctx(flaky_test="test_login"), MODEL) is None


def test_attempt_limit_stops_reruns_but_not_escalation():
    assert why_not_allowed(ActionKind.RETRY, ctx(attempt=1, max_attempts=2), MODEL) is None
    reason = why_not_allowed(ActionKind.RETRY, ctx(attempt=2, max_attempts=2), MODEL)
    assert "at most 2" in reason
    assert why_not_allowed(ActionKind.ESCALATE, ctx(attempt=5, max_attempts=2), MODEL) is None


def test_rollback_needs_a_last_good_revision():
    assert "last good revision" in why_not_allowed(ActionKind.ROLLBACK, ctx(FailureClass.COMPILE_ERROR), MODEL)
    assert why_not_allowed(ActionKind.ROLLBACK, ctx(FailureClass.COMPILE_ERROR, last_good_revision="a1b2"),
                           MODEL) is None


def test_raise_limit_refused_at_the_ceiling():
    reason = why_not_allowed(ActionKind.RAISE_RESOURCE_LIMIT, ctx(FailureClass.OUT_OF_MEMORY,
                                                                  memory_limit_mb=16384), MODEL)
    assert "ceiling" in reason


def test_parameters_name_what_the_executor_needs():
    c = ctx(FailureClass.OUT_OF_MEMORY, flaky_test="t", last_good_revision="abc", runner="r-7",
            memory_limit_mb=2048)
    assert action_parameters(ActionKind.RAISE_RESOURCE_LIMIT, c, MODEL) == {"memory_mb": "4096"}
    assert action_parameters(ActionKind.RETRY_ON_FRESH_RUNNER, c, MODEL) == {"drain_runner": "r-7"}
    assert action_parameters(ActionKind.QUARANTINE_TEST, c, MODEL) == {"test_name": "t"}
    assert action_parameters(ActionKind.ROLLBACK, c, MODEL) == {"target_revision": "abc"}
    assert action_parameters(ActionKind.RETRY, c, MODEL) == {}
