"""The heal of one failed job, as a durable workflow the coordinator owns.

    quota (tenancy) → diagnose (detector) → forecast (predictor) → plan (planner)
    → queue (this coordinator's etcd action queue) → answer

Every step is recorded in the heal's `HealWorkflow` record (a protobuf message in
etcd, compare-and-swap on its revision) before the next one starts, so a call
retried after a crash, on any replica, reads the record and resumes from the last
recorded step: no step is done twice. Each step is also idempotent at its receiver
on the heal's identity (tenant, provider, repository, pipeline, job, run id,
attempt), which covers the one window a record cannot: a crash after a receiver
acted and before the record of it was written. The queue step writes the plan's
actions and the record in one etcd transaction.

The log is never stored here: a heal that crashed before its diagnosis was recorded
needs the caller's retry (which carries the log again); after it, a resumed heal
reads the diagnosis back from the detector (which keeps it encrypted).

No gRPC here: the peers and the store are ports (Protocols), given by
`services.coordinator.peers` and `services.coordinator.store` in the service and by
fakes in the unit tests.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, cast

from google.protobuf.timestamp_pb2 import Timestamp

from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.detector.v1 import detector_pb2
from healing_guard.predictor.v1 import predictor_pb2
from services.common.errors import Unavailable, Violations
from services.common.vocabulary import Provider

log = logging.getLogger(__name__)

# An explicit alias: mypy accepts it as a type even before `make gen` has generated the stubs.
Step: TypeAlias = coordinator_pb2.HealStep
QUOTA, DIAGNOSED, FORECAST, PLANNED, QUEUED, DONE = (
    coordinator_pb2.HEAL_STEP_QUOTA,
    coordinator_pb2.HEAL_STEP_DIAGNOSED,
    coordinator_pb2.HEAL_STEP_FORECAST,
    coordinator_pb2.HEAL_STEP_PLANNED,
    coordinator_pb2.HEAL_STEP_QUEUED,
    coordinator_pb2.HEAL_STEP_DONE,
)
MAX_TEXT = 512
FORECAST_HORIZON_RUNS = 10
# How often one call re-reads the record after losing a compare-and-swap to a concurrent call.
MAX_CONFLICTS = 8

LogSource = bytes | AsyncIterable[bytes]


class PeerUnavailable(Exception):
    """A peer could not do a step now (away, timed out, refused); the heal stops at the
    last recorded step and a retry resumes there. `reason` is what the caller reads."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason


@dataclass(frozen=True)
class Diagnosed:
    diagnosis: common_pb2.Diagnosis
    audit: common_pb2.AuditReceipt | None = None
    warnings: tuple[str, ...] = ()


# --- ports -------------------------------------------------------------------------------


class Tenancy(Protocol):
    async def consume_failure_quota(self, tenant: str, request_id: str) -> None:
        """Raise QuotaExceeded / NotFound (unknown tenant) / Unavailable; idempotent on request_id."""


class Detector(Protocol):
    async def diagnose(self, tenant: str, report: detector_pb2.FailureReport, log: LogSource) -> Diagnosed:
        """Diagnose and store (idempotent: the same failure diagnosed again is the same failure)."""

    async def get_diagnosis(self, tenant: str, failure_id: str) -> common_pb2.Diagnosis: ...


class Predictor(Protocol):
    async def forecast(self, tenant: str, job: common_pb2.JobRef) -> predictor_pb2.ForecastRiskResponse:
        """Raise PeerUnavailable when the predictor does not answer (the heal plans without risk)."""


class Planner(Protocol):
    async def plan(self, tenant: str, diagnosis: common_pb2.Diagnosis,
                   forecast: predictor_pb2.ForecastRiskResponse | None, last_good_revision: str,
                   memory_limit_mb: int) -> common_pb2.HealingPlan:
        """Raise PeerUnavailable when the planner cannot plan now; idempotent per failure and attempt."""


class WorkflowStore(Protocol):
    async def load(self, workflow_id: str) -> tuple[coordinator_pb2.HealWorkflow | None, int]:
        """(the record or None, its version: 0 when absent)."""

    async def save(self, record: coordinator_pb2.HealWorkflow, version: int) -> int | None:
        """Write when the stored version is still `version` (0: create): the new version, or None."""

    async def queue(self, record: coordinator_pb2.HealWorkflow, version: int,
                    plan: common_pb2.HealingPlan) -> tuple[list[str], int] | None:
        """Queue the plan's actions and write `record` (with their ids) in one transaction,
        when the record's version is still `version`: (action ids, new version), or None."""


@dataclass
class Ports:
    tenancy: Tenancy
    detector: Detector
    predictor: Predictor
    planner: Planner
    store: WorkflowStore


# --- the heal ------------------------------------------------------------------------------


@dataclass
class HealResult:
    workflow_id: str
    diagnosis: common_pb2.Diagnosis
    plan: common_pb2.HealingPlan | None = None
    action_ids: list[str] = field(default_factory=list)
    audit: common_pb2.AuditReceipt | None = None
    warnings: list[str] = field(default_factory=list)
    resumed: bool = False
    step: Step = coordinator_pb2.HEAL_STEP_UNSPECIFIED


def workflow_id_for(tenant: str, report: detector_pb2.FailureReport) -> str:
    """Deterministic: the same failed job attempt is the same heal, however often reported."""
    job = report.job
    key = "\x1f".join([tenant, Provider(job.provider).name, job.repository, job.pipeline, job.job,
                       job.run_id, str(job.attempt)])
    return "w-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def validate_report(report: detector_pb2.FailureReport) -> None:
    """What the heal is keyed on, checked before any step (the detector checks the rest);
    every field refused at once, in one InvalidArgument naming each."""
    problems = Violations()
    job = report.job
    if job.provider not in set(Provider) or job.provider == Provider.PROVIDER_UNSPECIFIED:
        problems.add("report.job.provider", "is required: GITHUB_ACTIONS, GITLAB, JENKINS, GENERIC or LOCAL")
    for name in ("repository", "pipeline", "job", "run_id"):
        value = getattr(job, name)
        if not value.strip():
            problems.add(f"report.job.{name}", "must not be empty")
        elif len(value) > MAX_TEXT:
            problems.add(f"report.job.{name}", f"must be at most {MAX_TEXT} characters, got {len(value)}")
    if job.attempt < 1:
        problems.add("report.job.attempt", f"must be >= 1, got {job.attempt}")
    if report.memory_limit_mb < 0:
        problems.add("report.memory_limit_mb", f"must be >= 0, got {report.memory_limit_mb}")
    problems.raise_if_any()


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


class HealWorkflow:
    """Runs (or resumes) the heal of one failed job through the ports."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    async def heal(self, tenant: str, report: detector_pb2.FailureReport, log_source: LogSource) -> HealResult:
        validate_report(report)
        workflow_id = workflow_id_for(tenant, report)
        for _ in range(MAX_CONFLICTS):
            record, version = await self.ports.store.load(workflow_id)
            result = HealResult(workflow_id, common_pb2.Diagnosis(), resumed=record is not None)
            if record is None:
                record = self._new_record(workflow_id, tenant, report)
            try:
                return await self._run(record, version, report, log_source, result)
            except _Conflict:
                log.info("heal %s: another call recorded a step first; reading the record again", workflow_id)
        raise Unavailable(f"heal {workflow_id} is being recorded by other calls at the same time; retry")

    def _new_record(self, workflow_id: str, tenant: str,
                    report: detector_pb2.FailureReport) -> coordinator_pb2.HealWorkflow:
        return coordinator_pb2.HealWorkflow(
            workflow_id=workflow_id, tenant_id=tenant, provider=report.job.provider, run_id=report.job.run_id,
            attempt=report.job.attempt, step=coordinator_pb2.HEAL_STEP_UNSPECIFIED,
            diagnose_only=report.diagnose_only, last_good_revision=report.last_good_revision,
            memory_limit_mb=report.memory_limit_mb, created_at=_now(),
        )

    async def _record(self, record: coordinator_pb2.HealWorkflow, version: int, step: Step) -> int:
        record.step = step
        record.updated_at.CopyFrom(_now())
        saved = await self.ports.store.save(record, version)
        if saved is None:
            raise _Conflict()
        return saved

    async def _run(self, record: coordinator_pb2.HealWorkflow, version: int, report: detector_pb2.FailureReport,
                   log_source: LogSource, result: HealResult) -> HealResult:
        ports, tenant = self.ports, record.tenant_id
        if record.step < QUOTA:
            await ports.tenancy.consume_failure_quota(tenant, record.workflow_id)
            version = await self._record(record, version, QUOTA)

        if record.step < DIAGNOSED:
            diagnosed = await ports.detector.diagnose(tenant, report, log_source)
            diagnosis = diagnosed.diagnosis
            result.warnings.extend(diagnosed.warnings)
            record.failure_id = diagnosis.failure_id
            record.failure_class = diagnosis.failure_class
            record.confidence = diagnosis.confidence
            if diagnosed.audit is not None:
                record.audit.CopyFrom(diagnosed.audit)
            version = await self._record(record, version, DIAGNOSED)
        else:
            diagnosis = await ports.detector.get_diagnosis(tenant, record.failure_id)
        result.diagnosis = diagnosis
        result.audit = record.audit if record.HasField("audit") else None

        if record.step < FORECAST:
            try:
                record.forecast.CopyFrom(await ports.predictor.forecast(tenant, diagnosis.job))
            except PeerUnavailable as error:  # planning goes on without risk, as it always has
                log.warning("heal %s: no forecast (%s); planning without risk", record.workflow_id, error)
                record.forecast_missing = True
            version = await self._record(record, version, FORECAST)

        if record.step < PLANNED:
            forecast = None if record.forecast_missing else record.forecast
            try:
                plan = await ports.planner.plan(tenant, diagnosis, forecast, record.last_good_revision,
                                                record.memory_limit_mb)
            except PeerUnavailable as error:
                result.warnings.append(f"{error.service}: {error.reason}")
                result.step = record.step
                return result  # the diagnosis stands; a retry resumes at the plan
            record.plan.CopyFrom(plan)
            version = await self._record(record, version, PLANNED)
        result.plan = record.plan

        if record.step < QUEUED:
            if record.diagnose_only or not record.plan.actions:
                version = await self._record(record, version, DONE)
            else:
                record.step = QUEUED
                record.updated_at.CopyFrom(_now())
                queued = await ports.store.queue(record, version, record.plan)
                if queued is None:
                    raise _Conflict()
                ids, version = queued
                del record.action_ids[:]
                record.action_ids.extend(ids)
        result.action_ids = list(record.action_ids)
        result.step = record.step
        return result


class _Conflict(Exception):
    """The record changed under us (a concurrent call recorded a step first)."""


def step_name(step: int) -> str:
    return coordinator_pb2.HealStep.Name(cast(Step, step))
