"""Per-pipeline run history: what one CI job run looked like, and whether it is well formed.

A `RunRecord` is one attempt of one job of one pipeline run, as reported after it
finished. Everything the predictor knows comes from these records; forecasting,
anomaly detection and recommendations are functions over sequences of them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass


class RunResult(enum.IntEnum):
    """Mirrors `healing_guard.predictor.v1.RunResult` (names and numbers)."""

    RUN_RESULT_UNSPECIFIED = 0
    RUN_RESULT_SUCCESS = 1
    RUN_RESULT_FAILURE = 2
    RUN_RESULT_CANCELLED = 3


@dataclass(frozen=True)
class RunRecord:
    tenant: str
    repository: str
    pipeline: str
    job: str
    run_id: str
    attempt: int
    commit: str
    branch: str
    result: RunResult
    started_at: float  # unix seconds, when the job began executing (after its queue wait)
    duration_s: float
    queue_s: float
    runner: str = ""
    peak_memory_mb: float = 0.0
    memory_limit_mb: float = 0.0  # 0 = limit unknown
    cache_hit: bool = False
    tests_total: int = 0
    tests_failed: int = 0
    failure_class: FailureClass = FailureClass.FAILURE_CLASS_UNSPECIFIED
    flaky_tests: tuple[str, ...] = field(default_factory=tuple)
    failed_dependencies: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Callers (the servicer, the simulator) hand in lists; store tuples so records
        # stay hashable and cannot change after validation.
        object.__setattr__(self, "flaky_tests", tuple(self.flaky_tests))
        object.__setattr__(self, "failed_dependencies", tuple(self.failed_dependencies))

    @property
    def failed(self) -> bool:
        return self.result == RunResult.RUN_RESULT_FAILURE

    @property
    def counts_for_risk(self) -> bool:
        """Cancelled runs say nothing about whether the pipeline would have passed."""
        return self.result in (RunResult.RUN_RESULT_SUCCESS, RunResult.RUN_RESULT_FAILURE)

    @property
    def ended_at(self) -> float:
        return self.started_at + self.duration_s

    @property
    def memory_fraction(self) -> float | None:
        """Peak memory as a fraction of the limit, or None when the limit is unknown."""
        if self.memory_limit_mb <= 0:
            return None
        return self.peak_memory_mb / self.memory_limit_mb

    @property
    def key(self) -> RunKey:
        return RunKey(self.tenant, self.repository, self.pipeline, self.job, self.run_id, self.attempt)

    @property
    def scope(self) -> Scope:
        return Scope(self.tenant, self.repository, self.pipeline, self.job)


@dataclass(frozen=True, order=True)
class RunKey:
    """Identity of a report. Job and pipeline are part of it because providers reuse
    run ids across the jobs of one workflow run (GitHub) or number builds per job (Jenkins)."""

    tenant: str
    repository: str
    pipeline: str
    job: str
    run_id: str
    attempt: int


@dataclass(frozen=True, order=True)
class Scope:
    """What a forecast is about: one job of a pipeline, or the whole pipeline when job is ""."""

    tenant: str
    repository: str
    pipeline: str
    job: str = ""

    def describe(self) -> str:
        name = f"{self.repository}/{self.pipeline}"
        return f"{name}:{self.job}" if self.job else name


def _require_text(value: object, name: str, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise InvalidArgument(name, f"{name} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidArgument(name, f"{name} must not be empty")


def _require_non_negative(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(name, f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidArgument(name, f"{name} must be finite, got {value}")
    if value < 0:
        raise InvalidArgument(name, f"{name} must be >= 0, got {value:g}")


def validate_run(run: RunRecord) -> None:
    """Raise InvalidArgument naming the first field that makes `run` unusable."""
    _require_text(run.tenant, "tenant")
    _require_text(run.repository, "repository")
    _require_text(run.pipeline, "pipeline")
    _require_text(run.job, "job", allow_empty=True)
    _require_text(run.run_id, "run_id")
    _require_text(run.commit, "commit", allow_empty=True)
    _require_text(run.branch, "branch", allow_empty=True)
    _require_text(run.runner, "runner", allow_empty=True)
    if isinstance(run.attempt, bool) or not isinstance(run.attempt, int) or run.attempt < 1:
        raise InvalidArgument("attempt", f"attempt must be an integer >= 1, got {run.attempt!r}")
    allowed = ", ".join(r.name for r in RunResult if r != RunResult.RUN_RESULT_UNSPECIFIED)
    try:
        result = RunResult(run.result)
    except ValueError:
        raise InvalidArgument("result", f"result must be one of {allowed}, got {run.result!r}") from None
    if result == RunResult.RUN_RESULT_UNSPECIFIED:
        raise InvalidArgument("result", f"result must be one of {allowed}, got RUN_RESULT_UNSPECIFIED")
    for name in ("started_at", "duration_s", "queue_s", "peak_memory_mb", "memory_limit_mb"):
        _require_non_negative(getattr(run, name), name)
    for name in ("tests_total", "tests_failed"):
        value = getattr(run, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(name, f"{name} must be an integer >= 0, got {value!r}")
    if run.tests_failed > run.tests_total:
        raise InvalidArgument(
            "tests_failed",
            f"tests_failed must be <= tests_total ({run.tests_total}), got {run.tests_failed}",
        )
    try:
        failure_class = FailureClass(run.failure_class)
    except ValueError:
        raise InvalidArgument(
            "failure_class", f"failure_class must be a FailureClass value, got {run.failure_class!r}"
        ) from None
    if result == RunResult.RUN_RESULT_SUCCESS and failure_class != FailureClass.FAILURE_CLASS_UNSPECIFIED:
        raise InvalidArgument(
            "failure_class",
            f"failure_class must be unset on a successful run, got {failure_class.name}",
        )
    for name in ("flaky_tests", "failed_dependencies"):
        for item in getattr(run, name):
            if not isinstance(item, str) or not item.strip():
                raise InvalidArgument(name, f"{name} entries must be non-empty strings, got {item!r}")


def run_to_dict(run: RunRecord) -> dict[str, object]:
    """A plain, JSON-able view of a record (enums as their names)."""
    out: dict[str, object] = {}
    for f in fields(run):
        value = getattr(run, f.name)
        if isinstance(value, enum.IntEnum):
            value = value.name
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def run_from_dict(data: dict[str, object]) -> RunRecord:
    values = dict(data)
    values["result"] = RunResult[str(values["result"])]
    values["failure_class"] = FailureClass[str(values["failure_class"])]
    return RunRecord(**values)  # type: ignore[arg-type]


def in_scope(run: RunRecord, scope: Scope) -> bool:
    return (
        run.tenant == scope.tenant
        and run.repository == scope.repository
        and run.pipeline == scope.pipeline
        and (not scope.job or run.job == scope.job)
    )


def collapse_pipeline_runs(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """Merge the job records of each (run_id, attempt) into one pipeline-level record.

    A pipeline run fails when any of its jobs fails; it takes as long as its slowest
    job; its memory is its tightest job's (highest fraction of limit). This lets the
    same forecast features describe a whole pipeline as well as a single job.
    """
    groups: dict[tuple[str, int], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault((run.run_id, run.attempt), []).append(run)
    merged: list[RunRecord] = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(_with_job(group[0], ""))
            continue
        failures = [r for r in group if r.failed]
        if failures:
            result = RunResult.RUN_RESULT_FAILURE
        elif any(r.result == RunResult.RUN_RESULT_CANCELLED for r in group):
            result = RunResult.RUN_RESULT_CANCELLED
        else:
            result = RunResult.RUN_RESULT_SUCCESS
        tightest = max(group, key=lambda r: r.memory_fraction or 0.0)
        first = min(group, key=lambda r: r.started_at)
        merged.append(
            RunRecord(
                tenant=first.tenant,
                repository=first.repository,
                pipeline=first.pipeline,
                job="",
                run_id=first.run_id,
                attempt=first.attempt,
                commit=first.commit,
                branch=first.branch,
                result=result,
                started_at=first.started_at,
                duration_s=max(r.ended_at for r in group) - first.started_at,
                queue_s=first.queue_s,
                runner=first.runner,
                peak_memory_mb=tightest.peak_memory_mb,
                memory_limit_mb=tightest.memory_limit_mb,
                cache_hit=all(r.cache_hit for r in group),
                tests_total=sum(r.tests_total for r in group),
                tests_failed=sum(r.tests_failed for r in group),
                failure_class=(failures[0].failure_class if failures
                               else FailureClass.FAILURE_CLASS_UNSPECIFIED),
                flaky_tests=tuple(sorted({t for r in group for t in r.flaky_tests})),
                failed_dependencies=tuple(sorted({d for r in group for d in r.failed_dependencies})),
            )
        )
    merged.sort(key=lambda r: r.started_at)
    return merged


def _with_job(run: RunRecord, job: str) -> RunRecord:
    values = {f.name: getattr(run, f.name) for f in fields(run)}
    values["job"] = job
    return RunRecord(**values)  # type: ignore[arg-type]


def scopes_of(runs: Sequence[RunRecord]) -> list[Scope]:
    """Every job-level scope present in `runs`, in a stable order."""
    return sorted({r.scope for r in runs})
