"""Predictor servicer: the Predictor contract over `services.predictor.predictor.Predictor`."""

from __future__ import annotations

import asyncio
import time

from healing_guard.common.v1 import common_pb2
from healing_guard.predictor.v1 import predictor_pb2, predictor_pb2_grpc
from services.common import auth
from services.common.config import ServiceConfig
from services.common.convert import enum_field, seconds, timestamp
from services.common.errors import InvalidArgument
from services.common.runtime import Assembly, Runtime
from services.common.server import ServiceDefinition
from services.common.tracing import annotate
from services.common.vocabulary import FailureClass
from services.predictor.access import ACCESS
from services.predictor.history import RunRecord, RunResult
from services.predictor.predictor import Predictor
from services.predictor.store import RecordOutcome, RunStore

DAY_S = 86_400.0


def run_record(tenant: str, run: predictor_pb2.Run) -> RunRecord:
    job = run.job
    result = enum_field(RunResult, run.result, "run.result")
    failure_class = enum_field(FailureClass, run.failure_class, "run.failure_class", allow_unspecified=True)
    return RunRecord(
        tenant=tenant, repository=job.repository, pipeline=job.pipeline, job=job.job, run_id=job.run_id,
        attempt=job.attempt, commit=job.commit_sha, branch=job.branch, result=result,
        started_at=seconds(run.started_at) if run.HasField("started_at") else time.time(),
        duration_s=run.duration_seconds, queue_s=run.queue_seconds, runner=job.runner,
        peak_memory_mb=run.peak_memory_mb, memory_limit_mb=run.memory_limit_mb, cache_hit=run.cache_hit,
        tests_total=run.tests_total, tests_failed=run.tests_failed, failure_class=failure_class,
        flaky_tests=tuple(run.flaky_tests), failed_dependencies=tuple(run.failed_dependencies),
    )


class PredictorServicer(predictor_pb2_grpc.PredictorServicer):
    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    async def RecordRun(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        outcome = self.predictor.record_run(run_record(tenant, request.run))
        return predictor_pb2.RecordRunResponse(duplicate=outcome is RecordOutcome.ALREADY_RECORDED)

    async def ForecastRisk(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        forecast = await asyncio.to_thread(self.predictor.forecast, tenant, request.repository, request.pipeline,
                                           request.job, request.horizon_runs)
        annotate(tenant=tenant, risk=forecast.next_run_failure_probability)
        return predictor_pb2.ForecastRiskResponse(
            has_history=forecast.has_history,
            next_run_failure_probability=forecast.next_run_failure_probability,
            expected_failure_rate=forecast.expected_failure_rate, interval_low=forecast.interval_low,
            interval_high=forecast.interval_high, runs_observed=forecast.runs_considered,
            history_days=forecast.history_span_seconds / DAY_S, summary=forecast.explanation,
            model_version=str(forecast.model_version) if forecast.model_version else "prior",
        )

    async def DetectAnomalies(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        until = time.time()
        since = seconds(request.since) if request.HasField("since") else until - 7 * DAY_S
        limit = request.limit or 100
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", f"must be between 1 and 1000, got {limit}")
        found = await asyncio.to_thread(self.predictor.detect_anomalies, tenant, since, until,
                                        request.repository or None, request.pipeline or None)
        return predictor_pb2.DetectAnomaliesResponse(anomalies=[_anomaly(a) for a in found[:limit]])

    async def Recommend(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        limit = request.limit or 10
        if not 1 <= limit <= 100:
            raise InvalidArgument("limit", f"must be between 1 and 100, got {limit}")
        found = await asyncio.to_thread(self.predictor.recommend, tenant, None, limit)
        if request.repository:
            found = [r for r in found if getattr(r, "repository", "") == request.repository]
        return predictor_pb2.RecommendResponse(recommendations=[_recommendation(r) for r in found])

    async def Retrain(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.current_principal().tenant
        report = await asyncio.to_thread(self.predictor.retrain, tenant)
        version = report.candidate.version if report.replaced and report.candidate is not None \
            else report.incumbent_version
        return predictor_pb2.RetrainResponse(
            model_version=str(version), accepted=report.replaced, old_score=report.incumbent_brier,
            new_score=report.candidate_brier if report.candidate_brier is not None else 0.0, detail=report.reason,
        )


def _anomaly(anomaly) -> predictor_pb2.Anomaly:  # type: ignore[no-untyped-def]
    run = anomaly.run
    return predictor_pb2.Anomaly(
        job=common_pb2.JobRef(repository=run.repository, pipeline=run.pipeline, job=run.job, run_id=run.run_id,
                              attempt=run.attempt, commit_sha=run.commit, branch=run.branch, runner=run.runner),
        metric=anomaly.metric, score=anomaly.score, reason=anomaly.reason, started_at=timestamp(run.started_at),
    )


def _recommendation(item) -> predictor_pb2.Recommendation:  # type: ignore[no-untyped-def]
    return predictor_pb2.Recommendation(
        recommendation_id=item.recommendation_id, kind=int(item.action), parameters=dict(item.parameters),
        repository=item.repository, pipeline=item.pipeline, job=item.job,
        expected_benefit=item.expected_benefit, title=item.title, evidence=list(item.evidence),
    )


async def build(config: ServiceConfig, runtime: Runtime) -> Assembly:
    store = RunStore.open(config.database_path)
    servicer = PredictorServicer(Predictor(store))

    async def stop() -> None:
        store.close()

    definition = ServiceDefinition(
        name="predictor",
        register=lambda server: predictor_pb2_grpc.add_PredictorServicer_to_server(servicer, server),
        access=ACCESS,
    )
    return Assembly(definition=definition, on_stop=stop)
