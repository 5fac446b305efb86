"""Small builders for predictor tests: runs with sensible defaults, overridable per field."""

from __future__ import annotations

from dataclasses import replace

from services.common.vocabulary import FailureClass
from services.predictor.history import RunRecord, RunResult

# Monday 2026-01-05 00:00 UTC
MONDAY = 1_767_571_200.0
HOUR = 3600.0
DAY = 86_400.0


def make_run(**overrides: object) -> RunRecord:
    base = RunRecord(
        tenant="acme", repository="acme/shop", pipeline="ci", job="test", run_id="1", attempt=1,
        commit="abc123", branch="main", result=RunResult.RUN_RESULT_SUCCESS, started_at=MONDAY + 10 * HOUR,
        duration_s=600.0, queue_s=30.0, runner="runner-1", peak_memory_mb=1000.0, memory_limit_mb=4000.0,
        cache_hit=True, tests_total=100, tests_failed=0,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def failed_run(**overrides: object) -> RunRecord:
    values: dict[str, object] = {"result": RunResult.RUN_RESULT_FAILURE,
                                 "failure_class": FailureClass.TEST_FAILURE, "tests_failed": 1}
    values.update(overrides)
    return make_run(**values)


def series(outcomes: str, start: float = MONDAY + 9 * HOUR, every: float = HOUR, **overrides: object
           ) -> list[RunRecord]:
    """One run per character: '.' success, 'F' failure, 'f' flaky failure of test_upload, 'c' cancelled."""
    runs = []
    for index, outcome in enumerate(outcomes):
        fields: dict[str, object] = {"run_id": str(1000 + index), "started_at": start + index * every}
        fields.update(overrides)
        if outcome == "F":
            runs.append(failed_run(**fields))
        elif outcome == "f":
            runs.append(failed_run(failure_class=FailureClass.FLAKY_TEST, flaky_tests=("test_upload",),
                                   **fields))
        elif outcome == "c":
            runs.append(make_run(result=RunResult.RUN_RESULT_CANCELLED, **fields))
        else:
            runs.append(make_run(**fields))
    return runs
