"""Predictor servicer: the Predictor contract over `services.predictor.predictor.Predictor`.

The domain names its fields for what they are in Python (`duration_s`, `horizon`); a
caller knows them by the proto's names (`run.duration_seconds`, `horizon_runs`). Every
InvalidArgument and every report conflict leaving here names the proto field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

from healing_guard.common.v1 import common_pb2
from healing_guard.predictor.v1 import predictor_pb2, predictor_pb2_grpc
from services.common import auth
from services.common.config import ServiceConfig
from services.common.convert import enum_field, timestamp, timestamp_field
from services.common.errors import AlreadyExists, InvalidArgument
from services.common.live_config import LiveConfig
from services.common.runtime import Assembly, Runtime
from services.common.server import ServiceDefinition
from services.common.tracing import annotate
from services.common.vocabulary import FailureClass
from services.predictor.access import ACCESS
from services.predictor.forecast import MAX_HORIZON
from services.predictor.history import RunRecord, RunResult, validate_run
from services.predictor.predictor import Predictor
from services.predictor.schedule import next_check_in
from services.predictor.store import RecordOutcome, RunStore

log = logging.getLogger(__name__)

DAY_S = 86_400.0
MAX_IMPORT_RUNS = 5000
RETRAIN_TICK_S = 60.0
LIVE_DEFAULTS: dict[str, Any] = {
    "retrain_interval_seconds": 86_400.0,  # retrain each tenant's model daily; 0 = only on demand
    "retention_days": 90.0,  # runs older than this are pruned on the same schedule
}

# Domain field -> the Run message's field (relative to the run).
RUN_FIELDS: Mapping[str, str] = {
    "repository": "job.repository",
    "pipeline": "job.pipeline",
    "job": "job.job",
    "run_id": "job.run_id",
    "attempt": "job.attempt",
    "commit": "job.commit_sha",
    "branch": "job.branch",
    "runner": "job.runner",
    "result": "result",
    "started_at": "started_at",
    "duration_s": "duration_seconds",
    "queue_s": "queue_seconds",
    "peak_memory_mb": "peak_memory_mb",
    "memory_limit_mb": "memory_limit_mb",
    "cache_hit": "cache_hit",
    "tests_total": "tests_total",
    "tests_failed": "tests_failed",
    "failure_class": "failure_class",
    "flaky_tests": "flaky_tests",
    "failed_dependencies": "failed_dependencies",
}
FORECAST_FIELDS: Mapping[str, str] = {"horizon": "horizon_runs", "tenant": "tenant_id"}


def _renamed(error: InvalidArgument, fields: Mapping[str, str], prefix: str = "") -> InvalidArgument:
    name = fields.get(error.field)
    if name is None:
        return error
    proto = f"{prefix}{name}"
    description = error.description.replace(f"{error.field} ", f"{proto} ", 1)
    return InvalidArgument(proto, description)


@contextlib.contextmanager
def proto_names(fields: Mapping[str, str], prefix: str = "") -> Iterator[None]:
    """Re-raise the domain's InvalidArgument under the proto's field name."""
    try:
        yield
    except InvalidArgument as error:
        raise _renamed(error, fields, prefix) from None


def run_record(tenant: str, run: predictor_pb2.Run, prefix: str = "run") -> RunRecord:
    """A validated domain record from a Run message; InvalidArgument names the proto field."""
    if not run.HasField("job"):
        raise InvalidArgument(f"{prefix}.job", "is required (repository, pipeline, job, run_id, attempt)")
    job = run.job
    result = enum_field(RunResult, run.result, f"{prefix}.result")
    failure_class = enum_field(
        FailureClass, run.failure_class, f"{prefix}.failure_class", allow_unspecified=True
    )
    record = RunRecord(
        tenant=tenant,
        repository=job.repository,
        pipeline=job.pipeline,
        job=job.job,
        run_id=job.run_id,
        attempt=job.attempt,
        commit=job.commit_sha,
        branch=job.branch,
        result=result,
        started_at=(timestamp_field(run.started_at, f"{prefix}.started_at") if run.HasField("started_at")
                    else time.time()),
        duration_s=run.duration_seconds,
        queue_s=run.queue_seconds,
        runner=job.runner,
        peak_memory_mb=run.peak_memory_mb,
        memory_limit_mb=run.memory_limit_mb,
        cache_hit=run.cache_hit,
        tests_total=run.tests_total,
        tests_failed=run.tests_failed,
        failure_class=failure_class,
        flaky_tests=tuple(run.flaky_tests),
        failed_dependencies=tuple(run.failed_dependencies),
    )
    with proto_names(RUN_FIELDS, f"{prefix}."):
        validate_run(record)
    return record


def _conflict(error: AlreadyExists, prefix: str = "run") -> AlreadyExists:
    """The store's conflict, naming the differing fields as the caller knows them."""
    differing = getattr(error, "differing", ())
    if not differing:
        return error
    names = ", ".join(f"{prefix}.{RUN_FIELDS.get(name, name)}" for name in differing)
    head = error.message.split(" is already recorded with different ")[0]
    return AlreadyExists(
        error.resource_type,
        error.name,
        message=f"{head} is already recorded with different {names}; the stored report is kept",
    )


def _score(value: float | None) -> float:
    return 0.0 if value is None or not math.isfinite(value) else value


class PredictorServicer(predictor_pb2_grpc.PredictorServicer):
    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    async def RecordRun(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        if not request.HasField("run"):
            raise InvalidArgument("run", "is required")
        record = run_record(tenant, request.run)
        try:
            outcome = await asyncio.to_thread(self.predictor.record_run, record)
        except AlreadyExists as error:
            raise _conflict(error) from None
        annotate(tenant=tenant, duplicate=outcome is RecordOutcome.ALREADY_RECORDED)
        return predictor_pb2.RecordRunResponse(duplicate=outcome is RecordOutcome.ALREADY_RECORDED)

    async def ImportRuns(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        if not request.runs:
            raise InvalidArgument("runs", "name at least one run")
        if len(request.runs) > MAX_IMPORT_RUNS:
            raise InvalidArgument(
                "runs", f"at most {MAX_IMPORT_RUNS} runs per call, got {len(request.runs)} (split the import)"
            )
        records = [run_record(tenant, run, f"runs[{i}]") for i, run in enumerate(request.runs)]
        try:
            new = await asyncio.to_thread(self.predictor.import_runs, records)
        except AlreadyExists as error:
            raise _conflict(error, "runs[]") from None
        return predictor_pb2.ImportRunsResponse(recorded=new, duplicates=len(records) - new)

    async def ForecastRisk(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        if not 1 <= request.horizon_runs <= MAX_HORIZON:
            raise InvalidArgument(
                "horizon_runs", f"must be between 1 and {MAX_HORIZON} runs, got {request.horizon_runs}"
            )
        with proto_names(FORECAST_FIELDS):
            forecast = await asyncio.to_thread(
                self.predictor.forecast,
                tenant,
                request.repository,
                request.pipeline,
                request.job,
                request.horizon_runs,
            )
        annotate(tenant=tenant, risk=forecast.next_run_failure_probability)
        return predictor_pb2.ForecastRiskResponse(
            has_history=forecast.has_history,
            next_run_failure_probability=forecast.next_run_failure_probability,
            expected_failure_rate=forecast.expected_failure_rate,
            interval_low=forecast.interval_low,
            interval_high=forecast.interval_high,
            runs_observed=forecast.runs_considered,
            history_days=forecast.history_span_seconds / DAY_S,
            summary=forecast.explanation,
            model_version=str(forecast.model_version) if forecast.model_version else "prior",
        )

    async def DetectAnomalies(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        until = time.time()
        since = timestamp_field(request.since, "since") if request.HasField("since") else until - 7 * DAY_S
        limit = request.limit or 100
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", f"must be between 1 and 1000, got {limit}")
        with proto_names({"until": "since", "tenant": "tenant_id"}):
            found = await asyncio.to_thread(
                self.predictor.detect_anomalies,
                tenant,
                since,
                until,
                request.repository or None,
                request.pipeline or None,
            )
        return predictor_pb2.DetectAnomaliesResponse(anomalies=[_anomaly(a) for a in found[:limit]])

    async def Recommend(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        limit = request.limit or 10
        if not 1 <= limit <= 100:
            raise InvalidArgument("limit", f"must be between 1 and 100, got {limit}")
        # Filter before cutting to the limit, so a repository's own recommendations are not
        # crowded out by other repositories'.
        found = await asyncio.to_thread(self.predictor.recommend, tenant, None, 10_000)
        if request.repository:
            found = [r for r in found if r.repository == request.repository]
        return predictor_pb2.RecommendResponse(recommendations=[_recommendation(r) for r in found[:limit]])

    async def Retrain(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        report = await asyncio.to_thread(self.predictor.retrain, tenant)
        version = (
            report.candidate.version
            if report.replaced and report.candidate is not None
            else report.incumbent_version
        )
        annotate(tenant=tenant, accepted=report.replaced)
        return predictor_pb2.RetrainResponse(
            model_version=str(version) if version else "prior",
            accepted=report.replaced,
            old_score=_score(report.incumbent_brier),
            new_score=_score(report.candidate_brier),
            detail=report.reason,
            train_runs=report.train_runs,
            heldout_runs=report.heldout_runs,
        )


def _anomaly(anomaly) -> predictor_pb2.Anomaly:  # type: ignore[no-untyped-def]
    run = anomaly.run
    return predictor_pb2.Anomaly(
        job=common_pb2.JobRef(
            repository=run.repository,
            pipeline=run.pipeline,
            job=run.job,
            run_id=run.run_id,
            attempt=run.attempt,
            commit_sha=run.commit,
            branch=run.branch,
            runner=run.runner,
        ),
        metric=anomaly.metric,
        score=anomaly.score,
        reason=anomaly.reason,
        started_at=timestamp(run.started_at),
    )


def _recommendation(item) -> predictor_pb2.Recommendation:  # type: ignore[no-untyped-def]
    return predictor_pb2.Recommendation(
        recommendation_id=item.recommendation_id,
        kind=cast(common_pb2.ActionKind, int(item.action)),
        parameters=dict(item.parameters),
        repository=item.repository,
        pipeline=item.pipeline,
        job=item.job,
        expected_benefit=item.expected_benefit,
        title=item.title,
        evidence=list(item.evidence),
    )


async def retrain_on_schedule(
    predictor: Predictor,
    live: LiveConfig,
    tick_s: float = RETRAIN_TICK_S,
    changed: asyncio.Event | None = None,
) -> None:
    """Retrain the tenants that are due, prune old runs, sleep; a config change wakes it.
    All decisions are the domain's (`Predictor.retrain_due`, `schedule.next_check_in`)."""
    changed = changed or asyncio.Event()
    while True:
        interval = live.get("retrain_interval_seconds")
        try:
            reports = await asyncio.to_thread(predictor.retrain_due, interval)
            if reports:
                log.info(
                    "scheduled retrain: %s",
                    ", ".join(
                        f"{tenant} {'replaced' if r.replaced else 'kept'}" for tenant, r in reports.items()
                    ),
                )
            retention = float(live.get("retention_days"))
            if retention > 0:
                await asyncio.to_thread(predictor.store.prune, predictor.clock(), retention)
            delay = next_check_in(interval, tick_s)
        except InvalidArgument as error:
            log.warning("scheduled retrain skipped: %s", error)
            delay = tick_s
        except Exception:  # the edge of a background task: log, keep the schedule alive
            log.exception("scheduled retrain failed; trying again in %.0f s", tick_s)
            delay = tick_s
        changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), delay)


async def build(config: ServiceConfig, runtime: Runtime) -> Assembly:
    store = RunStore.open(config.database_path)
    predictor = Predictor(store)
    servicer = PredictorServicer(predictor)
    changed = asyncio.Event()
    runtime.live.subscribe(
        lambda key, value: changed.set() if key in ("retrain_interval_seconds", "retention_days") else None
    )
    tasks: list[asyncio.Task[None]] = []

    async def started(server: object) -> None:
        tasks.append(
            asyncio.create_task(
                retrain_on_schedule(predictor, runtime.live, changed=changed),
                name="predictor-retrain-schedule",
            )
        )

    async def stop() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        store.close()

    definition = ServiceDefinition(
        name="predictor",
        register=lambda server: predictor_pb2_grpc.add_PredictorServicer_to_server(servicer, server),
        access=ACCESS,
    )
    return Assembly(definition=definition, on_started=started, on_stop=stop, live_defaults=LIVE_DEFAULTS)
