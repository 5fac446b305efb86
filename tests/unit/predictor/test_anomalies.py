import random

import pytest

from services.predictor.anomalies import detect_anomalies
from services.predictor.history import RunRecord
from tests.unit.predictor.builders import DAY, HOUR, MONDAY, failed_run, make_run

START = MONDAY - 28 * DAY  # four weeks of baseline before Monday


def hourly_baseline(days: int = 28, seed: int = 1, per_hour: int = 3) -> list[RunRecord]:
    """Runs every 20 minutes: ~10m long, queue ~20m on weekday afternoons (12-15h) and ~1m otherwise."""
    rng = random.Random(seed)
    runs = []
    for index in range(days * 24 * per_hour):
        t = START + index * HOUR / per_hour + 60
        hour = int((t % DAY) // HOUR)
        weekday = int(t // DAY + 3) % 7
        busy = weekday < 5 and 12 <= hour < 15
        runs.append(make_run(
            run_id=f"b{index}", started_at=t, duration_s=600 * rng.uniform(0.95, 1.05),
            queue_s=(1200 if busy else 60) * rng.uniform(0.9, 1.1),
            peak_memory_mb=2000 * rng.uniform(0.97, 1.03), memory_limit_mb=4000.0,
        ))
    return runs


@pytest.fixture(scope="module")
def baseline() -> list[RunRecord]:
    return hourly_baseline()


def window_run(hour: float, **overrides: object) -> RunRecord:
    values: dict[str, object] = {"run_id": f"w{hour}", "started_at": MONDAY + hour * HOUR,
                                 "duration_s": 600.0, "queue_s": 60.0, "peak_memory_mb": 2000.0,
                                 "memory_limit_mb": 4000.0}
    values.update(overrides)
    return make_run(**values)


def test_normal_runs_raise_no_alerts(baseline) -> None:
    window = [window_run(h, duration_s=600 * (1 + 0.01 * (h % 3)), queue_s=1150.0 if 12 <= h < 15 else 62.0)
              for h in range(24)]
    assert detect_anomalies(baseline, window) == []


def test_a_slow_run_is_reported_with_its_reason(baseline) -> None:
    anomalies = detect_anomalies(baseline, [window_run(9.5, duration_s=41 * 60.0)])
    assert len(anomalies) == 1
    anomaly = anomalies[0]
    assert anomaly.metric == "duration" and anomaly.detector == "baseline"
    assert anomaly.score > 6
    assert anomaly.reason.startswith("duration 41m is ")
    assert "MADs above this job's median 10m for Monday mornings (09-12h)" in anomaly.reason


def test_queue_time_is_judged_against_its_own_hour_of_the_week(baseline) -> None:
    busy_normal = window_run(13.0, queue_s=21 * 60.0)
    night_stuck = window_run(2.0, queue_s=21 * 60.0)
    anomalies = detect_anomalies(baseline, [busy_normal, night_stuck])
    assert [a.run for a in anomalies] == [night_stuck]
    assert "queue time 21m" in anomalies[0].reason and "nights" in anomalies[0].reason


def test_memory_near_the_limit_is_reported(baseline) -> None:
    anomalies = detect_anomalies(baseline, [window_run(10.0, peak_memory_mb=3800.0)])
    assert len(anomalies) == 1
    assert anomalies[0].reason.startswith("peak memory 95% of its limit is ")
    assert "median 50% of its limit overall" in anomalies[0].reason


def test_runs_moderately_off_on_several_metrics_are_caught_by_the_forest(baseline) -> None:
    # Each metric alone is below the single-metric threshold; together they are isolated.
    odd = window_run(10.0, duration_s=600 * 1.11, peak_memory_mb=2000 * 1.08)
    anomalies = detect_anomalies(baseline, [odd])
    assert len(anomalies) == 1
    assert anomalies[0].detector == "isolation_forest"
    assert set(anomalies[0].metrics) == {"duration", "memory"}
    assert anomalies[0].reason.startswith("unusual on several metrics at once: duration")
    assert anomalies[0].isolation_score >= 0.99


def test_a_burst_of_failures_is_reported_once(baseline) -> None:
    window = [failed_run(run_id=f"f{i}", started_at=MONDAY + i * HOUR, duration_s=600.0) for i in range(6)]
    bursts = [a for a in detect_anomalies(baseline, window) if a.metric == "failure_pattern"]
    assert len(bursts) == 1
    assert "of the last 5 runs failed; this job's usual failure rate is 0%" in bursts[0].reason


def test_a_job_without_enough_baseline_is_not_judged_on_metrics() -> None:
    few = hourly_baseline(days=1)[:5]
    assert detect_anomalies(few, [window_run(9.0, duration_s=5000.0)]) == []


def test_strongest_first(baseline) -> None:
    window = [window_run(9.0, duration_s=30 * 60.0), window_run(10.0, duration_s=90 * 60.0)]
    scores = [a.score for a in detect_anomalies(baseline, window)]
    assert len(scores) == 2 and scores[0] > scores[1]
