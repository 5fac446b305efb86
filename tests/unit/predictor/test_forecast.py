import numpy as np
import pytest

from bench.history_sim import DAY as SIM_DAY
from bench.history_sim import SimConfig, generate
from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass
from services.predictor.features import labelled_examples
from services.predictor.forecast import (
    MAX_HORIZON,
    RiskModel,
    fit_risk_model,
    forecast_risk,
    retrain,
    split_by_time,
)
from services.predictor.history import Scope
from tests.unit.predictor.builders import DAY, HOUR, MONDAY, failed_run, make_run, series

SCOPE = Scope("acme", "acme/shop", "ci", "test")
LATER = MONDAY + 30 * DAY


@pytest.fixture(scope="module")
def small_history():
    return generate(SimConfig(seed=3, tenants=1, pipelines_per_tenant=12, days=28))


def test_unknown_pipeline_answers_that_there_is_no_history() -> None:
    forecast = forecast_risk(SCOPE, [], now=LATER, horizon=5)
    assert not forecast.has_history
    assert forecast.runs_considered == 0
    assert forecast.next_run_failure_probability == pytest.approx(0.1)
    assert "no history for acme/shop/ci:test" in forecast.explanation


@pytest.mark.parametrize("horizon", [0, -1, MAX_HORIZON + 1, 1000])
def test_horizon_outside_its_range_is_refused(horizon: int) -> None:
    message = f"horizon must be between 1 and {MAX_HORIZON} runs, got {horizon}"
    with pytest.raises(InvalidArgument, match=message):
        forecast_risk(SCOPE, series("..F"), now=LATER, horizon=horizon)


@pytest.mark.parametrize("horizon", [1, MAX_HORIZON])
def test_horizon_limits_are_accepted_and_the_interval_holds_the_expectation(horizon: int) -> None:
    forecast = forecast_risk(SCOPE, series("....F....F"), now=LATER, horizon=horizon)
    assert forecast.horizon_runs == horizon
    assert 0.0 <= forecast.interval_low <= forecast.expected_failure_rate <= forecast.interval_high <= 1.0


def test_cold_start_rests_on_the_prior_and_says_so() -> None:
    forecast = forecast_risk(SCOPE, series("F."), now=LATER)
    assert forecast.has_history and forecast.runs_considered == 2
    assert forecast.model_version == 0 and "prior" in forecast.method
    # One failure in two runs is far from proof of a 50% failure rate.
    assert 0.1 < forecast.next_run_failure_probability < 0.3
    assert "from 2 runs" in forecast.explanation and "little history" in forecast.explanation


def test_recent_failures_raise_the_risk_and_the_sentence_says_why() -> None:
    steady = forecast_risk(SCOPE, series("." * 40), now=LATER)
    rising = forecast_risk(SCOPE, series("." * 30 + "..F.F...F."), now=LATER)
    assert rising.next_run_failure_probability > 2 * steady.next_run_failure_probability
    assert "failure rate rising (3 of last 10)" in rising.explanation
    assert rising.explanation.startswith(f"risk {rising.next_run_failure_probability:.2f} from 40 runs over")


def test_a_genuine_break_is_called_out_and_a_flaky_failure_is_not() -> None:
    broken = forecast_risk(SCOPE, series("." * 20 + "F"), now=LATER)
    flaky = forecast_risk(SCOPE, series("." * 20 + "f"), now=LATER)
    assert "last run broke (TEST_FAILURE), which persists until fixed" in broken.explanation
    assert "last run broke" not in flaky.explanation


def test_flaky_tests_are_named() -> None:
    forecast = forecast_risk(SCOPE, series("." * 20 + "f...f."), now=LATER)
    assert "flaky test test_upload present" in forecast.explanation


def test_cancelled_runs_do_not_count_as_evidence() -> None:
    forecast = forecast_risk(SCOPE, series("ccc..."), now=LATER)
    assert forecast.runs_considered == 3


def test_tenant_wide_outage_is_visible_to_other_pipelines() -> None:
    now = MONDAY + 12 * HOUR
    own = series("." * 20, start=MONDAY - 2 * DAY)
    outage = [failed_run(pipeline=f"other-{i}", run_id=f"o{i}", started_at=now - (i + 1) * 600,
                         duration_s=60.0, failure_class=FailureClass.DEPENDENCY_FETCH,
                         failed_dependencies=("pypi.org",)) for i in range(4)]
    forecast = forecast_risk(SCOPE, own + outage, now=now)
    assert "4 dependency/network failures across the tenant in the last 6h (pypi.org)" in forecast.explanation


def test_a_whole_pipeline_merges_its_jobs() -> None:
    build = series("." * 10, job="build")
    test = series("....F....F", job="test")
    forecast = forecast_risk(Scope("acme", "acme/shop", "ci"), build + test, now=LATER)
    assert forecast.runs_considered == 10
    assert "2 of last 10" in forecast.explanation or "rising" in forecast.explanation


def test_memory_near_the_limit_is_reported() -> None:
    runs = [make_run(run_id=str(i), started_at=MONDAY + i * HOUR, peak_memory_mb=2000 + 180 * i,
                     memory_limit_mb=4000.0) for i in range(10)]
    forecast = forecast_risk(SCOPE, runs, now=LATER)
    assert "peak memory at 90% of limit, rising 45 points per 10 runs" in forecast.explanation


def test_the_future_is_not_used(small_history) -> None:
    """A forecast at time t ignores runs that start after t."""
    runs = small_history.runs
    scope = runs[len(runs) // 2].scope
    t = runs[len(runs) // 2].started_at
    before = forecast_risk(scope, [r for r in runs if r.started_at <= t], now=t)
    with_future = forecast_risk(scope, runs, now=t)
    assert before.next_run_failure_probability == with_future.next_run_failure_probability


def test_trained_model_beats_the_prior_on_held_out_future(small_history) -> None:
    report = retrain(small_history.runs, incumbent=None)
    assert report.candidate is not None and report.candidate_brier is not None
    assert report.replaced, report.reason
    assert report.candidate_brier <= report.incumbent_brier
    assert report.heldout_runs > 0.15 * (report.train_runs + report.heldout_runs)
    forecast = forecast_risk(small_history.runs[-1].scope, small_history.runs, small_history.end, 10,
                             report.candidate)
    assert "risk model" in forecast.method and "calibration" in forecast.method


def test_a_candidate_worse_on_the_future_does_not_replace(small_history) -> None:
    # An incumbent that has (unfairly) seen the held-out future scores better than any
    # honest candidate: the rule must keep it.
    examples = labelled_examples(small_history.runs)
    seer = fit_risk_model(examples, seed=1)
    seer.version = 4
    report = retrain(small_history.runs, incumbent=seer)
    assert not report.replaced
    assert report.candidate_brier is not None and report.candidate_brier > report.incumbent_brier
    assert "does not replace v4" in report.reason


def test_an_equal_candidate_replaces(small_history) -> None:
    examples = labelled_examples(small_history.runs)
    train, _, _ = split_by_time(examples)
    twin = fit_risk_model(train, seed=0)
    report = retrain(small_history.runs, incumbent=twin, seed=0)
    assert report.candidate_brier == pytest.approx(report.incumbent_brier)
    assert report.replaced


def test_too_little_history_keeps_the_prior() -> None:
    report = retrain(series("..F." * 10), incumbent=None)
    assert not report.replaced and report.candidate is None
    assert "not enough history" in report.reason


def test_model_round_trips_through_bytes(small_history) -> None:
    examples = labelled_examples(small_history.runs)
    model = fit_risk_model(examples)
    restored = RiskModel.from_bytes(model.to_bytes(), version=7)
    assert restored.version == 7
    assert np.allclose(restored.predict(examples.features[:50]), model.predict(examples.features[:50]))


def test_sim_day_matches_builders() -> None:
    assert SIM_DAY == DAY
