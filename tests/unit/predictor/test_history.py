import pytest

from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass
from services.predictor.history import (
    RunResult,
    collapse_pipeline_runs,
    run_from_dict,
    run_to_dict,
    validate_run,
)
from tests.unit.predictor.builders import failed_run, make_run


def test_a_well_formed_run_validates() -> None:
    validate_run(make_run())
    validate_run(failed_run())
    validate_run(make_run(result=RunResult.RUN_RESULT_CANCELLED, job=""))


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"duration_s": -5.0}, "duration_s", "duration_s must be >= 0, got -5"),
        ({"queue_s": -1.0}, "queue_s", "queue_s must be >= 0, got -1"),
        ({"duration_s": float("nan")}, "duration_s", "must be finite"),
        ({"peak_memory_mb": -2.0}, "peak_memory_mb", ">= 0"),
        ({"repository": ""}, "repository", "repository must not be empty"),
        ({"pipeline": "  "}, "pipeline", "pipeline must not be empty"),
        ({"tenant": ""}, "tenant", "tenant must not be empty"),
        ({"run_id": ""}, "run_id", "run_id must not be empty"),
        ({"attempt": 0}, "attempt", "attempt must be an integer >= 1, got 0"),
        ({"attempt": -3}, "attempt", "got -3"),
        ({"result": RunResult.RUN_RESULT_UNSPECIFIED}, "result", "got RUN_RESULT_UNSPECIFIED"),
        ({"result": 7}, "result", "result must be one of RUN_RESULT_SUCCESS"),
        ({"failure_class": FailureClass.FLAKY_TEST}, "failure_class",
         "unset on a successful run, got FLAKY_TEST"),
        ({"failure_class": 99, "result": RunResult.RUN_RESULT_FAILURE}, "failure_class", "got 99"),
        ({"tests_failed": 5, "tests_total": 3}, "tests_failed",
         r"tests_failed must be <= tests_total \(3\), got 5"),
        ({"tests_total": -1}, "tests_total", ">= 0"),
        ({"flaky_tests": ("",)}, "flaky_tests", "non-empty strings"),
    ],
)
def test_validation_names_the_field_and_the_allowed_range(overrides: dict, field: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        validate_run(make_run(**overrides))
    assert caught.value.field == field


def test_failure_without_a_class_is_accepted_because_diagnosis_may_come_later() -> None:
    validate_run(make_run(result=RunResult.RUN_RESULT_FAILURE))


def test_dict_round_trip_keeps_every_field() -> None:
    run = failed_run(flaky_tests=["test_a"], failed_dependencies=["pypi.org"])
    assert run_from_dict(run_to_dict(run)) == run
    assert isinstance(run.flaky_tests, tuple)


def test_pipeline_runs_merge_their_jobs() -> None:
    build = make_run(job="build", duration_s=300.0, peak_memory_mb=3600.0, memory_limit_mb=4000.0)
    test = failed_run(job="test", started_at=build.started_at + 320.0, duration_s=600.0,
                      flaky_tests=("test_upload",))
    other = make_run(job="build", run_id="2", started_at=build.started_at + 4000.0)
    merged = collapse_pipeline_runs([build, test, other])
    assert [m.run_id for m in merged] == ["1", "2"]
    first = merged[0]
    assert first.job == "" and first.failed
    assert first.duration_s == pytest.approx(920.0)
    assert first.memory_fraction == pytest.approx(0.9)
    assert first.flaky_tests == ("test_upload",)
    assert not merged[1].failed
