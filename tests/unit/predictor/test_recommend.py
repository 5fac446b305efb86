import random

from services.common.vocabulary import ActionKind, FailureClass
from services.predictor.history import RunRecord
from services.predictor.recommend import recommend
from tests.unit.predictor.builders import DAY, HOUR, MONDAY, failed_run, make_run

NOW = MONDAY + 14 * DAY


def runs_every(hours: float, days: float = 14, **overrides: object) -> list[RunRecord]:
    count = int(days * 24 / hours)
    job = overrides.get("job", "test")
    return [make_run(run_id=f"{job}-{i}", started_at=NOW - days * DAY + i * hours * HOUR, **overrides)
            for i in range(count)]


def with_flakes(runs: list[RunRecord], test: str, every_nth: int, after: float = 0.0) -> list[RunRecord]:
    out = []
    flaky_index = 0
    for run in runs:
        if run.started_at >= after:
            flaky_index += 1
            if flaky_index % every_nth == 0:
                out.append(failed_run(run_id=run.run_id, started_at=run.started_at, job=run.job,
                                      failure_class=FailureClass.FLAKY_TEST, flaky_tests=(test,)))
                continue
        out.append(run)
    return out


def test_a_test_flaking_more_and_more_is_quarantined() -> None:
    runs = with_flakes(runs_every(2), "test_upload", every_nth=6, after=NOW - 7 * DAY)
    [rec] = recommend(runs, NOW)
    assert rec.action is ActionKind.QUARANTINE_TEST
    assert rec.parameters == {"repository": "acme/shop", "pipeline": "ci", "job": "test",
                              "test": "test_upload"}
    assert rec.summary == "quarantine test_upload in acme/shop/ci:test (flakiness rising)"
    assert rec.evidence[0] == ("test_upload flaked in 14 of the last 84 runs (7 days), "
                               "up from 0 of 84 the 7 days before")
    assert rec.expected_failures_avoided_per_week == 14
    assert rec.expected_benefit_minutes_per_week == 140  # 14 re-runs of a 10-minute job


def test_flakiness_that_is_falling_or_over_is_left_alone() -> None:
    falling = with_flakes(runs_every(2), "test_upload", every_nth=4)
    falling = [r if r.started_at < NOW - 7 * DAY or not r.flaky_tests or r.started_at > NOW - 5 * DAY
               else make_run(run_id=r.run_id, started_at=r.started_at) for r in falling]
    over = with_flakes(runs_every(2), "test_upload", every_nth=6, after=NOW - 7 * DAY)
    over = [r if r.started_at < NOW - 3 * DAY else make_run(run_id=r.run_id, started_at=r.started_at)
            for r in over]
    assert recommend(falling, NOW) == []
    assert recommend(over, NOW) == []


def test_memory_creeping_toward_the_limit_raises_the_limit() -> None:
    runs = [make_run(run_id=str(i), started_at=NOW - DAY + i * HOUR, peak_memory_mb=2000 + 60 * i,
                     memory_limit_mb=4096.0) for i in range(24)]
    [rec] = recommend(runs, NOW)
    assert rec.action is ActionKind.RAISE_RESOURCE_LIMIT
    assert rec.parameters["resource"] == "memory" and rec.parameters["current_limit_mb"] == "4096"
    assert int(rec.parameters["memory_limit_mb"]) > 4096 and int(rec.parameters["memory_limit_mb"]) % 512 == 0
    assert any("reaches the limit in about" in e for e in rec.evidence)
    assert rec.expected_failures_avoided_per_week > 0


def test_a_fixed_leak_is_not_flagged() -> None:
    runs = [make_run(run_id=str(i), started_at=NOW - 3 * DAY + i * HOUR, peak_memory_mb=2000.0,
                     memory_limit_mb=4096.0) for i in range(24)]
    runs.insert(0, failed_run(run_id="oom", started_at=NOW - 4 * DAY, peak_memory_mb=4096.0,
                              memory_limit_mb=4096.0, failure_class=FailureClass.OUT_OF_MEMORY))
    assert recommend(runs, NOW) == []


def test_dependency_failures_clustering_across_pipelines_are_escalated() -> None:
    runs = []
    for pipeline in range(4):
        runs += runs_every(4, pipeline=f"p{pipeline}")
        runs += [failed_run(pipeline=f"p{pipeline}", run_id=f"dep-{pipeline}-{i}",
                            started_at=NOW - 2 * DAY + i * 600, failure_class=FailureClass.DEPENDENCY_FETCH,
                            failed_dependencies=("pypi.org",)) for i in range(3)]
    [rec] = recommend(runs, NOW)
    assert rec.action is ActionKind.ESCALATE
    assert rec.parameters["dependency"] == "pypi.org"
    assert rec.parameters["intervention"] == "pin_or_mirror_dependency"
    assert rec.evidence[0] == ("12 fetch failures of pypi.org in 1 burst over the last 14 days, "
                               "across 4 pipelines")


def test_a_drifting_pipeline_is_flagged_for_splitting() -> None:
    rng = random.Random(2)
    runs = [make_run(run_id=str(i), started_at=NOW - 14 * DAY + i * 2 * HOUR,
                     duration_s=600 * (1 + 0.015 * i * 2 / 24) * rng.uniform(0.95, 1.05)) for i in range(168)]
    steady = [make_run(run_id=f"s{i}", job="build", started_at=NOW - 14 * DAY + i * 2 * HOUR,
                       duration_s=600 * rng.uniform(0.95, 1.05)) for i in range(168)]
    [rec] = recommend(runs + steady, NOW)
    assert rec.intervention == "split_or_retime" and rec.action is ActionKind.ESCALATE
    assert rec.scope.job == "test"
    assert "slower than 14 days ago" in rec.evidence[0]


def test_recommendations_are_ranked_by_expected_benefit() -> None:
    heavy = with_flakes(runs_every(2), "test_heavy", every_nth=4, after=NOW - 7 * DAY)
    light = with_flakes(runs_every(2, job="e2e"), "test_light", every_nth=12, after=NOW - 7 * DAY)
    recs = recommend(heavy + light, NOW)
    assert [r.parameters["test"] for r in recs] == ["test_heavy", "test_light"]
    benefits = [r.expected_benefit_minutes_per_week for r in recs]
    assert benefits == sorted(benefits, reverse=True) and benefits[0] > benefits[1]


def test_healthy_history_needs_nothing() -> None:
    assert recommend(runs_every(2), NOW) == []


def test_recommendations_carry_a_stable_id_and_the_contract_fields() -> None:
    runs = with_flakes(runs_every(2), "test_upload", every_nth=6, after=NOW - 7 * DAY)
    [first] = recommend(runs, NOW)
    [later] = recommend(runs + runs_every(2, days=0.5, job="test"), NOW + 0.25 * DAY)
    assert first.recommendation_id == later.recommendation_id and first.recommendation_id.startswith("rec-")
    other = with_flakes(runs_every(2, job="e2e"), "test_login", every_nth=6, after=NOW - 7 * DAY)
    assert recommend(other, NOW)[0].recommendation_id != first.recommendation_id
    assert (first.repository, first.pipeline, first.job) == ("acme/shop", "ci", "test")
    assert first.expected_benefit == first.expected_benefit_minutes_per_week
    assert first.title == first.summary
