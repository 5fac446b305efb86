"""Detector servicer: intake and diagnosis, a leaf of the heal.

ReportFailure / StreamFailure: validate → diagnose (redacted before anything is
stored or traced) → store → audit (through the outbox) → answer. The detector calls
no one: quota, planning and the queue are the coordinator's heal workflow
(Coordinator.HealFailure), which calls this as its diagnose step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from collections.abc import Iterator
from typing import Any, cast

from healing_guard.common.v1 import common_pb2
from healing_guard.detector.v1 import detector_pb2, detector_pb2_grpc
from services.common import auth
from services.common.audit_trail import AuditTrail
from services.common.config import ServiceConfig
from services.common.convert import enum_field, timestamp
from services.common.errors import InvalidArgument, Violations
from services.common.runtime import Assembly, Runtime
from services.common.server import ServiceDefinition
from services.common.tracing import annotate
from services.common.vocabulary import ActionKind, FailureClass, Provider
from services.detector.access import ACCESS
from services.detector.clusters import ClusterRow
from services.detector.intake import (
    STREAM_LOG_LIMIT,
    FailureMetadata,
    validate_junit,
    validate_metadata,
    validate_unary_log,
)
from services.detector.patterns import Pattern
from services.detector.service import DetectorCore, DiagnosisRecord
from services.detector.steps import FailedStep

log = logging.getLogger(__name__)

LIVE_DEFAULTS: dict[str, Any] = {"confidence_threshold": 0.6}
STREAM_QUEUE_CHUNKS = 16  # chunks in flight between the stream and the scan (bounded memory)


def metadata_of(tenant: str, report: detector_pb2.FailureReport) -> FailureMetadata:
    job = report.job
    problems = Violations()  # every field refused at once
    known = problems.check(lambda: enum_field(Provider, job.provider, "report.job.provider"))
    provider = Provider.PROVIDER_UNSPECIFIED if known is None else known
    meta = FailureMetadata(
        tenant=tenant,
        provider=provider,
        repository=job.repository,
        pipeline=job.pipeline,
        job=job.job,
        run_id=job.run_id,
        attempt=job.attempt,
        commit_sha=job.commit_sha,
        branch=job.branch,
        runner=job.runner,
        job_id=job.job_id,
        exit_code=report.exit_code,
        duration_seconds=report.duration_seconds,
        memory_limit_mb=report.memory_limit_mb,
        last_good_revision=report.last_good_revision,
        diagnose_only=report.diagnose_only,
    )
    problems.check(lambda: validate_metadata(meta))
    problems.check(lambda: validate_junit(report.junit_xml))
    problems.raise_if_any()
    return meta


def diagnosis_message(record: DiagnosisRecord) -> common_pb2.Diagnosis:
    meta = record.metadata
    message = common_pb2.Diagnosis(
        failure_id=meta.failure_id,
        tenant_id=meta.tenant,
        job=common_pb2.JobRef(
            provider=cast(common_pb2.Provider, int(meta.provider)),
            repository=meta.repository,
            pipeline=meta.pipeline,
            job=meta.job,
            run_id=meta.run_id,
            attempt=meta.attempt,
            commit_sha=meta.commit_sha,
            branch=meta.branch,
            runner=meta.runner,
            job_id=meta.job_id,
        ),
        failure_class=cast(common_pb2.FailureClass, int(record.failure_class)),
        confidence=record.confidence,
        signature=record.signature,
        template=record.template,
        cluster_id=record.cluster_id,
        anomaly_score=record.anomaly_score,
        decided_by=record.decided_by,
        model_version=record.model_version,
        remediation_hint=record.remediation_hint,
        redactions=record.redactions,
        flaky_tests=list(record.flaky_tests),
        flaky_evidence_run_ids=list(record.flaky_evidence_run_ids),
        diagnosed_at=timestamp(record.diagnosed_at),
        exit_code=meta.exit_code,
        duration_seconds=meta.duration_seconds,
    )
    for line in record.evidence:
        message.evidence.append(common_pb2.EvidenceLine(line=line.line, text=line.text))
    if record.failed_step is not None:
        message.failed_step.CopyFrom(failed_step_message(record.failed_step))
    if record.decisive_line is not None:
        message.decisive_line.CopyFrom(
            common_pb2.EvidenceLine(line=record.decisive_line.line, text=record.decisive_line.text)
        )
    for test in record.failed_tests:
        classname, _, name = test.rpartition("::")
        message.failed_tests.append(common_pb2.FailedTest(name=test, classname=classname if name else ""))
    return message


def failed_step_message(step: FailedStep) -> common_pb2.FailedStep:
    message = common_pb2.FailedStep(
        name=step.name,
        command=step.command,
        framing=step.framing,
        start_line=step.start_line,
        end_line=step.end_line,
        end_text=step.end_text,
    )
    exit_code = int32_exit_code(step.exit_code)
    if exit_code is not None:  # unknown stays absent, so it never reads as exit code 0
        message.exit_code = exit_code
    return message


def int32_exit_code(code: int | None) -> int | None:
    """The exit code as FailedStep.exit_code (int32) carries it, None when it cannot.

    An exit status is 32 bits; Windows logs often print it unsigned (3221225477 is
    0xC0000005, which GitHub also reports as -1073741819), so 2**31..2**32-1 map to
    their signed form. A number wider than 32 bits is no exit status: left absent.
    """
    if code is None or not -(2**31) <= code < 2**32:
        return None
    return code - 2**32 if code >= 2**31 else code


def pattern_message(pattern: Pattern) -> detector_pb2.Pattern:
    return detector_pb2.Pattern(
        pattern_id=pattern.pattern_id,
        tenant_id=pattern.tenant,
        failure_class=cast(common_pb2.FailureClass, int(pattern.failure_class)),
        expression=pattern.expression,
        description=pattern.description,
        remediation_hint=pattern.remediation_hint,
        priority=pattern.priority,
        enabled=pattern.enabled,
        built_in=pattern.builtin,
    )


def pattern_of(message: detector_pb2.Pattern, tenant: str, enabled: bool) -> Pattern:
    # The class is checked by the domain (validate_pattern), which names pattern.failure_class.
    return Pattern(
        pattern_id=message.pattern_id,
        tenant=tenant,
        failure_class=message.failure_class,  # type: ignore[arg-type]
        expression=message.expression,
        description=message.description,
        remediation_hint=message.remediation_hint,
        priority=message.priority,
        enabled=enabled,
    )


def cluster_message(row: ClusterRow) -> detector_pb2.Cluster:
    return detector_pb2.Cluster(
        cluster_id=row.cluster_id,
        template="\n".join(row.signature),
        failure_class=cast(common_pb2.FailureClass, int(row.failure_class)),
        count=row.count,
        first_seen=timestamp(row.first_seen),
        last_seen=timestamp(row.last_seen),
        repositories=list(row.repositories),
        pipelines=list(row.pipelines),
        # Line 0: the cluster keeps the evidence text of its first failure, not its line numbers.
        representative_evidence=[
            common_pb2.EvidenceLine(line=0, text=t) for t in row.representative_evidence
        ],
    )


class _StreamAborted(Exception):
    """The client's stream broke off or was refused: diagnose nothing, store nothing."""


_ABORT = object()


class DetectorServicer(detector_pb2_grpc.DetectorServicer):
    def __init__(self, core: DetectorCore, audit: AuditTrail | None) -> None:
        self.core = core
        self.audit = audit

    async def ReportFailure(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.report.tenant_id, "report.tenant_id")
        problems = Violations()  # the report's fields and the log, refused together
        meta = problems.check(lambda: metadata_of(tenant, request.report))
        problems.check(lambda: validate_unary_log(request.log))
        problems.raise_if_any()
        assert meta is not None
        self._admit(meta)
        stored = await asyncio.to_thread(
            self.core.diagnose, meta, request.log, request.report.junit_xml or None
        )
        return await self._after_diagnosis(stored)

    async def StreamFailure(self, request_iterator, context):  # type: ignore[no-untyped-def]
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise InvalidArgument(
                "report",
                "the stream ended before its first message; send the report "
                "(metadata) first, then the log in log_chunk messages",
            )
        if first.WhichOneof("item") != "report":
            raise InvalidArgument(
                "report",
                "the first StreamFailure message must carry the report (metadata), "
                "then the log in log_chunk messages",
            )
        tenant = auth.tenant_for(first.report.tenant_id, "report.tenant_id")
        meta = metadata_of(tenant, first.report)
        self._admit(meta)
        chunks: queue.Queue[object] = queue.Queue(maxsize=STREAM_QUEUE_CHUNKS)

        def produce() -> Iterator[bytes]:
            while True:
                chunk = chunks.get()
                if chunk is None:
                    return
                if chunk is _ABORT:
                    raise _StreamAborted()
                yield chunk  # type: ignore[misc]

        work = asyncio.ensure_future(
            asyncio.to_thread(self.core.diagnose_stream, meta, produce(), first.report.junit_xml or None)
        )
        received = 0
        end: object = _ABORT
        try:
            async for message in request_iterator:
                kind = message.WhichOneof("item")
                if kind == "report":
                    raise InvalidArgument(
                        "report",
                        "only the first StreamFailure message may carry the report; "
                        "send the log in log_chunk messages after it",
                    )
                if not message.log_chunk:
                    continue  # a zero-byte chunk carries nothing
                received += len(message.log_chunk)
                if received > STREAM_LOG_LIMIT:
                    raise InvalidArgument(
                        "log_chunk", f"the log exceeds {STREAM_LOG_LIMIT} bytes, the most StreamFailure takes"
                    )
                # Bounded queue: a slow scan slows the client down instead of filling memory.
                await _put(chunks, message.log_chunk, work)
            end = None
        finally:
            await _finish(chunks, end, work)
            if end is _ABORT:
                await _settle(work)  # refused mid-stream: that refusal is the answer, the scan stops quietly
        if end is _ABORT or received == 0:
            await _settle(work)
            raise InvalidArgument(
                "log_chunk",
                "the stream ended before any log bytes arrived; send the log in "
                "log_chunk messages after the report",
            )
        stored = await work
        return await self._after_diagnosis(stored)

    def _admit(self, meta: FailureMetadata) -> None:
        annotate(tenant=meta.tenant, repository=meta.repository, failure_id=meta.failure_id)

    async def _after_diagnosis(self, stored: DiagnosisRecord) -> detector_pb2.ReportFailureResponse:
        meta, result = stored.metadata, stored
        diagnosis = diagnosis_message(stored)
        annotate(failure_class=result.failure_class.name, confidence=round(result.confidence, 3))
        response = detector_pb2.ReportFailureResponse(diagnosis=diagnosis)
        if self.audit is not None:
            receipt = await self.audit.record(
                "DIAGNOSIS",
                meta.tenant,
                meta.failure_id,
                {
                    "failure_class": result.failure_class.name,
                    "confidence": round(result.confidence, 4),
                    "signature": result.signature,
                    "decided_by": result.decided_by,
                    "evidence": [{"line": e.line, "text": e.text} for e in result.evidence],
                    "cluster_id": stored.cluster_id,
                    "model_version": stored.model_version,
                    "flaky_tests": list(stored.flaky_tests)[:20],
                    "job": {
                        "repository": meta.repository,
                        "pipeline": meta.pipeline,
                        "job": meta.job,
                        "run_id": meta.run_id,
                        "attempt": meta.attempt,
                    },
                },
                event_id=meta.failure_id,
                versioned=True,  # a failure reported again and re-diagnosed differently is a new entry
                sensitive=True,
            )
            if receipt is not None:
                response.audit.CopyFrom(receipt)
            else:
                response.warnings.append("audit log unavailable: the diagnosis is queued, recorded later")
        return response

    async def GetDiagnosis(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id, "tenant_id")
        if not request.failure_id:
            raise InvalidArgument("failure_id", "is required")
        return diagnosis_message(await asyncio.to_thread(self.core.get, tenant, request.failure_id))

    async def ListClusters(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id, "tenant_id")
        page = await asyncio.to_thread(
            self.core.list_clusters, tenant, request.page.page_size, request.page.page_token
        )
        return detector_pb2.ListClustersResponse(
            clusters=[cluster_message(row) for row in page.items], next_page_token=page.next_page_token
        )

    async def CreatePattern(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.pattern.tenant_id, "pattern.tenant_id")
        created = await asyncio.to_thread(self.core.create_pattern, pattern_of(request.pattern, tenant, True))
        await self._record_admin("PATTERN_CREATED", created)
        return pattern_message(created)

    async def GetPattern(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id, "tenant_id")
        if not request.pattern_id:
            raise InvalidArgument("pattern_id", "is required")
        return pattern_message(await asyncio.to_thread(self.core.get_pattern, tenant, request.pattern_id))

    async def ListPatterns(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id, "tenant_id")
        page = await asyncio.to_thread(
            self.core.list_patterns,
            tenant,
            request.include_built_in,
            request.page.page_size,
            request.page.page_token,
        )
        return detector_pb2.ListPatternsResponse(
            patterns=[pattern_message(p) for p in page.items], next_page_token=page.next_page_token
        )

    async def UpdatePattern(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.pattern.tenant_id, "pattern.tenant_id")
        if not request.pattern.pattern_id:
            raise InvalidArgument(
                "pattern.pattern_id", "is required: the id of the tenant pattern to replace"
            )
        updated = await asyncio.to_thread(
            self.core.update_pattern, pattern_of(request.pattern, tenant, request.pattern.enabled)
        )
        await self._record_admin("PATTERN_UPDATED", updated)
        return pattern_message(updated)

    async def DeletePattern(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id, "tenant_id")
        if not request.pattern_id:
            raise InvalidArgument("pattern_id", "is required")
        await asyncio.to_thread(self.core.delete_pattern, tenant, request.pattern_id)
        if self.audit is not None:
            await self.audit.record(
                "ADMIN_CHANGE",
                tenant,
                f"pattern/{request.pattern_id}",
                {"change": "PATTERN_DELETED", "pattern_id": request.pattern_id},
            )
        return detector_pb2.DeletePatternResponse()

    async def Retrain(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id, "tenant_id")
        annotate(tenant=tenant)
        report = await asyncio.to_thread(self.core.retrain, tenant)
        if self.audit is not None:
            await self.audit.record(
                "ADMIN_CHANGE",
                tenant,
                f"model/{report.candidate_version}",
                {
                    "change": "MODEL_RETRAINED",
                    "accepted": report.accepted,
                    "serving": report.model_version,
                    "previous": report.previous_version,
                    "old_score": report.old_score,
                    "new_score": report.new_score,
                },
            )
        return detector_pb2.RetrainResponse(
            model_version=report.model_version,
            accepted=report.accepted,
            old_score=report.old_score,
            new_score=report.new_score,
            training_examples=report.training_examples,
            detail=report.detail,
            previous_version=report.previous_version,
            candidate_version=report.candidate_version,
            held_out_examples=report.held_out_examples,
        )

    async def RecordOutcome(self, request, context):  # type: ignore[no-untyped-def]
        outcome = request.outcome
        tenant = auth.tenant_for(outcome.tenant_id, "outcome.tenant_id")
        if not outcome.outcome_id:
            raise InvalidArgument("outcome.outcome_id", "is required (it makes reporting idempotent)")
        kind = enum_field(ActionKind, outcome.kind, "outcome.kind", allow_unspecified=True)
        failure_class = enum_field(
            FailureClass, outcome.failure_class, "outcome.failure_class", allow_unspecified=True
        )
        counted = await asyncio.to_thread(
            self.core.record_outcome,
            tenant,
            outcome.outcome_id,
            outcome.failure_id,
            outcome.success,
            failure_class,
            kind,
            outcome.action_id,
            outcome.detail,
        )
        return detector_pb2.RecordOutcomeResponse(duplicate=not counted)

    async def GetTestHistory(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id, "tenant_id")
        history = await asyncio.to_thread(
            self.core.test_history, tenant, request.test_name, request.repository, request.limit
        )
        return detector_pb2.GetTestHistoryResponse(
            runs=[
                detector_pb2.TestRun(
                    run_id=r.run_id,
                    commit_sha=r.commit,
                    passed=r.passed,
                    at=timestamp(r.recorded_at),
                    repository=r.repository,
                )
                for r in history.runs
            ],
            flakiness_rate=history.flakiness_rate,
            flaky=history.flaky,
            evidence_run_ids=history.evidence_run_ids,
        )

    async def _record_admin(self, change: str, pattern: Pattern) -> None:
        if self.audit is not None:
            await self.audit.record(
                "ADMIN_CHANGE",
                pattern.tenant,
                f"pattern/{pattern.pattern_id}",
                {
                    "change": change,
                    "pattern_id": pattern.pattern_id,
                    "failure_class": pattern.failure_class.name,
                    "expression": pattern.expression,
                    "priority": pattern.priority,
                    "enabled": pattern.enabled,
                },
            )


async def _put(chunks: queue.Queue[object], chunk: bytes, work: asyncio.Future) -> None:  # type: ignore[type-arg]
    delay = 0.001
    while True:
        try:
            chunks.put_nowait(chunk)
            return
        except queue.Full:
            if work.done():  # the scan stopped (refused input): its error is the answer
                await work
                raise _StreamAborted() from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)


async def _finish(chunks: queue.Queue[object], end: object, work: asyncio.Future) -> None:  # type: ignore[type-arg]
    """Hand the scan its end marker without ever blocking the event loop."""
    delay = 0.001
    while not work.done():
        try:
            chunks.put_nowait(end)
            return
        except queue.Full:
            if end is _ABORT:
                with contextlib.suppress(queue.Empty):
                    chunks.get_nowait()  # aborting: the pending chunks do not matter
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)


async def _settle(work: asyncio.Future) -> None:  # type: ignore[type-arg]
    with contextlib.suppress(_StreamAborted, InvalidArgument):
        await work


async def build(config: ServiceConfig, runtime: Runtime) -> Assembly:
    core = await asyncio.to_thread(DetectorCore.open, config, float(runtime.live.get("confidence_threshold")))
    runtime.live.subscribe(
        lambda key, value: core.set_threshold(float(value)) if key == "confidence_threshold" else None
    )
    audit = runtime.keep(AuditTrail(runtime.peers, config.data_dir / "audit-outbox.sqlite3"))
    servicer = DetectorServicer(core, audit)

    async def started(server: object) -> None:
        core.start_loading_model()  # after the server is up, so health answers while the model trains

    async def stop() -> None:
        core.close()

    definition = ServiceDefinition(
        name="detector",
        register=lambda server: detector_pb2_grpc.add_DetectorServicer_to_server(servicer, server),
        access=ACCESS,
    )
    return Assembly(definition=definition, on_started=started, on_stop=stop)
