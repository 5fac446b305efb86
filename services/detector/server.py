"""Detector servicer: intake, diagnosis, and the hand-off to planner and coordinator.

ReportFailure / StreamFailure: validate → consume the tenant's quota → diagnose
(redacted before anything is stored or traced) → store → audit → plan → submit.
The diagnosis is the detector's answer; planning and execution problems come back
as warnings beside it, so a caller always learns why the job failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from healing_guard.common.v1 import common_pb2
from healing_guard.detector.v1 import detector_pb2, detector_pb2_grpc
from services.common import auth
from services.common.audit_trail import AuditTrail
from services.common.config import ServiceConfig
from services.common.convert import enum_field, timestamp
from services.common.errors import InvalidArgument, NotFound
from services.common.runtime import Assembly, Runtime
from services.common.server import ServiceDefinition
from services.common.tracing import annotate
from services.common.vocabulary import FailureClass, Provider
from services.detector.access import ACCESS
from services.detector.downstream import Downstream
from services.detector.intake import (
    STREAM_LOG_LIMIT,
    FailureMetadata,
    validate_junit,
    validate_metadata,
    validate_unary_log,
)
from services.detector.service import DetectorCore, StoredDiagnosis

log = logging.getLogger(__name__)

LIVE_DEFAULTS: dict[str, Any] = {"confidence_threshold": 0.6}


def metadata_of(tenant: str, report: detector_pb2.FailureReport) -> FailureMetadata:
    job = report.job
    provider = enum_field(Provider, job.provider, "report.job.provider")
    meta = FailureMetadata(
        tenant=tenant, provider=provider, repository=job.repository, pipeline=job.pipeline, job=job.job,
        run_id=job.run_id, attempt=job.attempt, commit_sha=job.commit_sha, branch=job.branch, runner=job.runner,
        job_id=job.job_id, exit_code=report.exit_code, duration_seconds=report.duration_seconds,
        memory_limit_mb=report.memory_limit_mb, last_good_revision=report.last_good_revision,
        diagnose_only=report.diagnose_only,
    )
    validate_metadata(meta)
    validate_junit(report.junit_xml)
    return meta


def diagnosis_message(stored: StoredDiagnosis) -> common_pb2.Diagnosis:
    meta, result = stored.metadata, stored.result
    message = common_pb2.Diagnosis(
        failure_id=meta.failure_id, tenant_id=meta.tenant,
        job=common_pb2.JobRef(provider=int(meta.provider), repository=meta.repository, pipeline=meta.pipeline,
                              job=meta.job, run_id=meta.run_id, attempt=meta.attempt, commit_sha=meta.commit_sha,
                              branch=meta.branch, runner=meta.runner, job_id=meta.job_id),
        failure_class=int(result.failure_class), confidence=result.confidence, signature=result.signature,
        template=result.template, cluster_id=stored.cluster_id, anomaly_score=stored.anomaly_score,
        decided_by=result.decided_by, model_version=stored.model_version,
        remediation_hint=result.remediation_hint or "", redactions=result.redaction_count,
        flaky_tests=list(result.flaky_tests), diagnosed_at=timestamp(stored.diagnosed_at),
        exit_code=meta.exit_code, duration_seconds=meta.duration_seconds,
    )
    for line in result.evidence:
        message.evidence.append(common_pb2.EvidenceLine(line=line.line, text=line.text))
    for test in result.failed_tests:
        message.failed_tests.append(common_pb2.FailedTest(name=str(test)))
    return message


class DetectorServicer(detector_pb2_grpc.DetectorServicer):
    def __init__(self, core: DetectorCore, downstream: Downstream | None, audit: AuditTrail | None) -> None:
        self.core = core
        self.downstream = downstream
        self.audit = audit

    async def ReportFailure(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.report.tenant_id, "report.tenant_id")
        meta = metadata_of(tenant, request.report)
        validate_unary_log(request.log)
        await self._admit(meta)
        stored = await asyncio.to_thread(self.core.diagnose, meta, request.log, request.report.junit_xml or None)
        return await self._after_diagnosis(stored)

    async def StreamFailure(self, request_iterator, context):  # type: ignore[no-untyped-def]
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("item") != "report":
            raise InvalidArgument("report", "the first StreamFailure message must carry the report (metadata), "
                                            "then the log in log_chunk messages")
        tenant = auth.tenant_for(first.report.tenant_id, "report.tenant_id")
        meta = metadata_of(tenant, first.report)
        await self._admit(meta)
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        stop = threading.Event()

        def produce() -> Iterator[bytes]:
            while True:
                chunk = chunks.get()
                if chunk is None:
                    return
                yield chunk

        work = asyncio.create_task(asyncio.to_thread(
            self.core.diagnose_stream, meta, produce(), first.report.junit_xml or None))
        received = 0
        try:
            async for message in request_iterator:
                if message.WhichOneof("item") != "log_chunk":
                    raise InvalidArgument("log_chunk", "after the first message, send only log_chunk messages")
                received += len(message.log_chunk)
                if received > STREAM_LOG_LIMIT:
                    raise InvalidArgument("log_chunk", f"the log exceeds {STREAM_LOG_LIMIT} bytes")
                # Bounded queue: a slow scan slows the client down instead of filling memory.
                while not stop.is_set():
                    try:
                        chunks.put(message.log_chunk, timeout=0.05)
                        break
                    except queue.Full:
                        if work.done():
                            break
                        await asyncio.sleep(0)
        finally:
            with contextlib.suppress(queue.Full):
                while True:
                    try:
                        chunks.put(None, timeout=0.05)
                        break
                    except queue.Full:
                        if work.done():
                            break
                        with contextlib.suppress(queue.Empty):
                            chunks.get_nowait()
        if received == 0:
            work.cancel()
            raise InvalidArgument("log_chunk", "the stream ended before any log bytes arrived")
        stored = await work
        return await self._after_diagnosis(stored)

    async def _admit(self, meta: FailureMetadata) -> None:
        annotate(tenant=meta.tenant, repository=meta.repository, failure_id=meta.failure_id)
        if self.downstream is not None:
            await self.downstream.consume_failure_quota(meta.tenant, meta.failure_id)

    async def _after_diagnosis(self, stored: StoredDiagnosis) -> detector_pb2.ReportFailureResponse:
        meta, result = stored.metadata, stored.result
        diagnosis = diagnosis_message(stored)
        annotate(failure_class=result.failure_class.name, confidence=round(result.confidence, 3))
        response = detector_pb2.ReportFailureResponse(diagnosis=diagnosis)
        if self.audit is not None:
            receipt = await self.audit.record("DIAGNOSIS", meta.tenant, meta.failure_id, {
                "failure_class": result.failure_class.name, "confidence": round(result.confidence, 4),
                "signature": result.signature, "decided_by": result.decided_by,
                "evidence": [{"line": e.line, "text": e.text} for e in result.evidence],
                "job": {"repository": meta.repository, "pipeline": meta.pipeline, "job": meta.job,
                        "run_id": meta.run_id, "attempt": meta.attempt},
            }, sensitive=True)
            if receipt is not None:
                response.audit.CopyFrom(receipt)
            else:
                response.warnings.append("audit log unavailable: the diagnosis was not recorded there")
        if self.downstream is None:
            return response
        try:
            plan = await self.downstream.plan(meta.tenant, diagnosis, meta.last_good_revision, meta.memory_limit_mb)
        except grpc.aio.AioRpcError as error:
            response.warnings.append(f"planner: {error.code().name}: {error.details()}")
            return response
        response.plan.CopyFrom(plan)
        if meta.diagnose_only:
            return response
        try:
            response.action_ids.extend(await self.downstream.submit(meta.tenant, plan))
        except grpc.aio.AioRpcError as error:
            response.warnings.append(f"coordinator: {error.code().name}: {error.details()}")
        return response

    async def GetDiagnosis(self, request, context):  # type: ignore[no-untyped-def]
        if not request.failure_id:
            raise InvalidArgument("failure_id", "is required")
        stored = self.core.get(auth.current_principal().tenant, request.failure_id)
        return diagnosis_message(stored)

    async def RecordOutcome(self, request, context):  # type: ignore[no-untyped-def]
        outcome = request.outcome
        tenant = auth.tenant_for(outcome.tenant_id, "outcome.tenant_id")
        if not outcome.outcome_id:
            raise InvalidArgument("outcome.outcome_id", "is required (it makes reporting idempotent)")
        counted = self.core.record_outcome(tenant, outcome.outcome_id, outcome.failure_id, outcome.success,
                                           FailureClass(outcome.failure_class))
        return detector_pb2.RecordOutcomeResponse(duplicate=not counted)


async def build(config: ServiceConfig, runtime: Runtime) -> Assembly:
    core = DetectorCore.open(config, float(runtime.live.get("confidence_threshold")))
    runtime.live.subscribe(lambda key, value: core.set_threshold(float(value))
                           if key == "confidence_threshold" else None)
    servicer = DetectorServicer(core, Downstream(runtime.peers), AuditTrail(runtime.peers))

    async def stop() -> None:
        core.close()

    definition = ServiceDefinition(
        name="detector",
        register=lambda server: detector_pb2_grpc.add_DetectorServicer_to_server(servicer, server),
        access=ACCESS,
    )
    return Assembly(definition=definition, on_stop=stop)
