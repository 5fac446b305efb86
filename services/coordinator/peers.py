"""The heal workflow's calls to the leaves, over their contracts (the ports of
`services.coordinator.workflow`): quota (tenancy), diagnosis (detector), forecast
(predictor), plan (planner).

A refusal that a retry will not change comes back as the domain error the leaf
meant (INVALID_ARGUMENT with its field, NOT_FOUND, RESOURCE_EXHAUSTED with its
retry delay); a leaf that is away is `PeerUnavailable` for the steps the heal can
go on without (forecast, plan), and UNAVAILABLE for the caller otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from healing_guard.common.v1 import common_pb2
from healing_guard.detector.v1 import detector_pb2, detector_pb2_grpc
from healing_guard.planner.v1 import planner_pb2, planner_pb2_grpc
from healing_guard.predictor.v1 import predictor_pb2, predictor_pb2_grpc
from healing_guard.tenancy.v1 import tenancy_pb2, tenancy_pb2_grpc
from services.common.clients import PeerClients
from services.common.errors import (
    FailedPrecondition,
    HealingGuardError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    Unavailable,
)
from services.coordinator.workflow import Diagnosed, LogSource, PeerUnavailable

TIMEOUT_S = 10.0
FORECAST_TIMEOUT_S = 2.0
DIAGNOSE_TIMEOUT_S = 120.0
STREAM_CHUNK = 1024 * 1024


def _details(error: grpc.aio.AioRpcError) -> list[object]:
    status = rpc_status.from_call(error)
    return list(status.details) if status else []


def _field_of(error: grpc.aio.AioRpcError) -> str:
    for detail in _details(error):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):  # type: ignore[attr-defined]
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)  # type: ignore[attr-defined]
            if bad.field_violations:
                return str(bad.field_violations[0].field)
    return ""


def _retry_delay(error: grpc.aio.AioRpcError) -> float:
    for detail in _details(error):
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):  # type: ignore[attr-defined]
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)  # type: ignore[attr-defined]
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return 60.0


def as_domain_error(service: str, error: grpc.aio.AioRpcError) -> HealingGuardError:
    """A leaf's refusal as the error the heal's caller gets (UNAVAILABLE when it is away)."""
    code, details = error.code(), error.details() or ""
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        field = _field_of(error)
        prefix = f"{field}: "
        return InvalidArgument(field or service, details.removeprefix(prefix) if field else details)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(service, "", f"{service}: {details}")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(f"{service}: {details}")
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"{service}: {details}")
    return Unavailable(f"{service} could not answer ({code.name}: {details}); retry the heal, it resumes")


class LeafClients:
    """The four ports of the heal workflow, over `PeerClients`."""

    def __init__(self, peers: PeerClients) -> None:
        self.peers = peers

    # -- tenancy ----------------------------------------------------------------------------
    async def consume_failure_quota(self, tenant: str, request_id: str) -> None:
        stub = self.peers.stub("tenancy", tenancy_pb2_grpc.TenancyStub)
        try:
            await stub.ConsumeQuota(tenancy_pb2.ConsumeQuotaRequest(
                tenant_id=tenant, resource=tenancy_pb2.RESOURCE_FAILURES_PER_MINUTE, amount=1, request_id=request_id,
            ), timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise QuotaExceeded(f"{tenant}/failures_per_minute", error.details() or "quota spent",
                                    _retry_delay(error)) from None
            if error.code() is grpc.StatusCode.NOT_FOUND:
                raise NotFound("tenant", tenant, error.details()) from None
            raise Unavailable(f"tenancy could not check the quota: {error.code().name}") from None

    # -- detector -----------------------------------------------------------------------------
    async def diagnose(self, tenant: str, report: detector_pb2.FailureReport, log: LogSource) -> Diagnosed:
        stub = self.peers.stub("detector", detector_pb2_grpc.DetectorStub)
        sent = detector_pb2.FailureReport()
        sent.CopyFrom(report)
        sent.tenant_id = tenant
        try:
            if isinstance(log, bytes):
                reply = await stub.ReportFailure(detector_pb2.ReportFailureRequest(report=sent, log=log),
                                                 timeout=DIAGNOSE_TIMEOUT_S)
            else:
                reply = await stub.StreamFailure(_stream(sent, log), timeout=DIAGNOSE_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise as_domain_error("detector", error) from None
        return Diagnosed(reply.diagnosis, reply.audit if reply.HasField("audit") else None, tuple(reply.warnings))

    async def get_diagnosis(self, tenant: str, failure_id: str) -> common_pb2.Diagnosis:
        stub = self.peers.stub("detector", detector_pb2_grpc.DetectorStub)
        try:
            return await stub.GetDiagnosis(detector_pb2.GetDiagnosisRequest(tenant_id=tenant, failure_id=failure_id),
                                           timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise as_domain_error("detector", error) from None

    # -- predictor ----------------------------------------------------------------------------
    async def forecast(self, tenant: str, job: common_pb2.JobRef) -> predictor_pb2.ForecastRiskResponse:
        stub = self.peers.stub("predictor", predictor_pb2_grpc.PredictorStub)
        try:
            return await stub.ForecastRisk(predictor_pb2.ForecastRiskRequest(
                tenant_id=tenant, repository=job.repository, pipeline=job.pipeline, horizon_runs=10,
            ), timeout=FORECAST_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise PeerUnavailable("predictor", f"{error.code().name}: {error.details()}") from None

    # -- planner --------------------------------------------------------------------------------
    async def plan(self, tenant: str, diagnosis: common_pb2.Diagnosis,
                   forecast: predictor_pb2.ForecastRiskResponse | None, last_good_revision: str,
                   memory_limit_mb: int) -> common_pb2.HealingPlan:
        stub = self.peers.stub("planner", planner_pb2_grpc.PlannerStub)
        request = planner_pb2.PlanHealingRequest(tenant_id=tenant, diagnosis=diagnosis,
                                                 last_good_revision=last_good_revision,
                                                 memory_limit_mb=memory_limit_mb)
        if forecast is not None:
            request.forecast.CopyFrom(forecast)
        try:
            return await stub.PlanHealing(request, timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise PeerUnavailable("planner", f"{error.code().name}: {error.details()}") from None


async def _stream(report: detector_pb2.FailureReport,
                  log: AsyncIterable[bytes]) -> AsyncIterator[detector_pb2.StreamFailureRequest]:
    yield detector_pb2.StreamFailureRequest(report=report)
    async for chunk in log:
        for start in range(0, len(chunk), STREAM_CHUNK):
            yield detector_pb2.StreamFailureRequest(log_chunk=chunk[start:start + STREAM_CHUNK])
