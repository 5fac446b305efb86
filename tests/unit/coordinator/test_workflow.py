"""The heal workflow over fake ports: each step once, resumable after a failure at any
step, and a retried heal that does nothing twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.detector.v1 import detector_pb2
from healing_guard.predictor.v1 import predictor_pb2
from services.common.errors import InvalidArgument, QuotaExceeded, Unavailable
from services.coordinator.workflow import (
    Diagnosed,
    HealWorkflow,
    LogSource,
    PeerUnavailable,
    Ports,
    workflow_id_for,
)

TENANT = "acme"
STEPS = ["quota", "diagnose", "forecast", "plan", "queue"]


class Crash(Exception):
    """The coordinator died here (nothing after this point happened)."""


class Fakes:
    """All five ports in one: counts every side effect, can fail once at a named point."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.records: dict[str, tuple[bytes, int]] = {}
        self.revision = 0
        self.queued: dict[str, list[str]] = {}   # plan id -> action ids (the action queue)
        self.diagnoses: dict[str, common_pb2.Diagnosis] = {}
        self.fail: dict[str, BaseException] = {}   # point -> error raised once there
        self.forecasts: list[predictor_pb2.ForecastRiskResponse | None] = []

    def _maybe_fail(self, point: str) -> None:
        error = self.fail.pop(point, None)
        if error is not None:
            raise error

    # tenancy
    async def consume_failure_quota(self, tenant: str, request_id: str) -> None:
        self._maybe_fail("quota")
        self.calls["quota"] += 1

    # detector
    async def diagnose(self, tenant: str, report: detector_pb2.FailureReport, log: LogSource) -> Diagnosed:
        self._maybe_fail("diagnose")
        if not isinstance(log, bytes):
            log = b"".join([chunk async for chunk in log])
        self.calls["diagnose"] += 1
        diagnosis = common_pb2.Diagnosis(failure_id="f-1", tenant_id=tenant, job=report.job,
                                         failure_class=common_pb2.NETWORK, confidence=0.9,
                                         evidence=[common_pb2.EvidenceLine(line=3, text=log.decode()[:20])])
        self.diagnoses[diagnosis.failure_id] = diagnosis
        return Diagnosed(diagnosis, common_pb2.AuditReceipt(index=7, tree_size=8))

    async def get_diagnosis(self, tenant: str, failure_id: str) -> common_pb2.Diagnosis:
        self.calls["get_diagnosis"] += 1
        return self.diagnoses[failure_id]

    # predictor
    async def forecast(self, tenant: str, job: common_pb2.JobRef) -> predictor_pb2.ForecastRiskResponse:
        self._maybe_fail("forecast")
        self.calls["forecast"] += 1
        return predictor_pb2.ForecastRiskResponse(has_history=True, next_run_failure_probability=0.25,
                                                  summary="1 in 4")

    # planner
    async def plan(self, tenant: str, diagnosis: common_pb2.Diagnosis,
                   forecast: predictor_pb2.ForecastRiskResponse | None, last_good_revision: str,
                   memory_limit_mb: int) -> common_pb2.HealingPlan:
        self._maybe_fail("plan")
        self.calls["plan"] += 1
        self.forecasts.append(forecast)
        return common_pb2.HealingPlan(
            plan_id="p-1", tenant_id=tenant, failure_id=diagnosis.failure_id, job=diagnosis.job,
            actions=[common_pb2.Action(kind=common_pb2.RETRY, idempotency_key="k0"),
                     common_pb2.Action(kind=common_pb2.ESCALATE, idempotency_key="k1")])

    # store
    async def load(self, workflow_id: str) -> tuple[coordinator_pb2.HealWorkflow | None, int]:
        if workflow_id not in self.records:
            return None, 0
        raw, version = self.records[workflow_id]
        return coordinator_pb2.HealWorkflow.FromString(raw), version

    async def save(self, record: coordinator_pb2.HealWorkflow, version: int) -> int | None:
        self._maybe_fail(f"record:{coordinator_pb2.HealStep.Name(record.step)}")
        current = self.records.get(record.workflow_id, (b"", 0))[1]
        if current != version:
            return None
        self.revision += 1
        self.records[record.workflow_id] = (record.SerializeToString(), self.revision)
        return self.revision

    async def queue(self, record: coordinator_pb2.HealWorkflow, version: int,
                    plan: common_pb2.HealingPlan) -> tuple[list[str], int] | None:
        self._maybe_fail("queue")
        current = self.records.get(record.workflow_id, (b"", 0))[1]
        if current != version:
            return None
        ids = [f"{plan.plan_id}-{i}" for i in range(len(plan.actions))]
        if plan.plan_id in self.queued:
            raise AssertionError(f"plan {plan.plan_id} queued twice")
        self.calls["queue"] += 1
        self.queued[plan.plan_id] = ids
        del record.action_ids[:]
        record.action_ids.extend(ids)
        self.revision += 1
        self.records[record.workflow_id] = (record.SerializeToString(), self.revision)
        return ids, self.revision

    def ports(self) -> Ports:
        return Ports(tenancy=self, detector=self, predictor=self, planner=self, store=self)

    def step(self) -> str:
        (raw, _), = self.records.values()
        return coordinator_pb2.HealStep.Name(coordinator_pb2.HealWorkflow.FromString(raw).step)


def report(**overrides: object) -> detector_pb2.FailureReport:
    job = common_pb2.JobRef(provider=common_pb2.PROVIDER_GITHUB_ACTIONS, repository="acme/web", pipeline="ci",
                            job="test", run_id="1001", attempt=1)
    message = detector_pb2.FailureReport(job=job, exit_code=1)
    for name, value in overrides.items():
        setattr(message, name, value)
    return message


def heal(fakes: Fakes, message: detector_pb2.FailureReport | None = None, log: LogSource = b"connection reset"):  # type: ignore[no-untyped-def]
    return asyncio.run(HealWorkflow(fakes.ports()).heal(TENANT, message or report(), log))


def test_a_heal_does_each_step_once_in_order_and_queues_the_plan() -> None:
    fakes = Fakes()
    result = heal(fakes)
    assert fakes.calls == Counter({"quota": 1, "diagnose": 1, "forecast": 1, "plan": 1, "queue": 1})
    assert result.action_ids == ["p-1-0", "p-1-1"]
    assert result.plan is not None and result.plan.plan_id == "p-1"
    assert result.diagnosis.failure_id == "f-1" and result.audit is not None and result.audit.index == 7
    assert not result.resumed and not result.warnings
    assert fakes.step() == "HEAL_STEP_QUEUED"
    forecast = fakes.forecasts[0]
    assert forecast is not None and forecast.next_run_failure_probability == 0.25  # passed to the planner


def test_the_record_is_a_protobuf_message_without_the_log_evidence() -> None:
    fakes = Fakes()
    heal(fakes, log=b"SECRET-LOOKING LOG LINE")
    (raw, _), = fakes.records.values()
    record = coordinator_pb2.HealWorkflow.FromString(raw)
    assert record.failure_id == "f-1" and record.failure_class == common_pb2.NETWORK
    assert record.workflow_id == workflow_id_for(TENANT, report())
    assert list(record.action_ids) == ["p-1-0", "p-1-1"]
    assert b"SECRET-LOOKING" not in raw


def test_a_heal_retried_after_it_finished_repeats_nothing() -> None:
    fakes = Fakes()
    first = heal(fakes)
    again = heal(fakes)
    assert fakes.calls["quota"] == fakes.calls["diagnose"] == fakes.calls["plan"] == fakes.calls["queue"] == 1
    assert again.resumed and again.action_ids == first.action_ids
    assert again.diagnosis.failure_id == "f-1" and fakes.calls["get_diagnosis"] == 1


# A crash at each point: inside a step (its receiver never acted) or right after a step
# acted and before its record was written. Either way the retry finishes the heal and
# no side effect happens twice (the receivers are idempotent on the heal's identity; the
# fake's queue refuses a plan twice outright).
CRASH_POINTS = [
    "quota", "record:HEAL_STEP_QUOTA",
    "diagnose", "record:HEAL_STEP_DIAGNOSED",
    "forecast", "record:HEAL_STEP_FORECAST",
    "plan", "record:HEAL_STEP_PLANNED",
    "queue",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_heal_that_crashed_resumes_from_its_last_recorded_step(point: str) -> None:
    fakes = Fakes()
    fakes.fail[point] = Crash(point)
    with pytest.raises(Crash):
        heal(fakes)
    before = Counter(fakes.calls)
    result = heal(fakes)
    assert result.action_ids == ["p-1-0", "p-1-1"]
    assert fakes.step() == "HEAL_STEP_QUEUED"
    assert fakes.calls["queue"] == 1
    # Every step whose record was written before the crash is not done again.
    done_before = {
        "quota": [], "record:HEAL_STEP_QUOTA": [],
        "diagnose": ["quota"], "record:HEAL_STEP_DIAGNOSED": ["quota"],
        "forecast": ["quota", "diagnose"], "record:HEAL_STEP_FORECAST": ["quota", "diagnose"],
        "plan": ["quota", "diagnose", "forecast"], "record:HEAL_STEP_PLANNED": ["quota", "diagnose", "forecast"],
        "queue": ["quota", "diagnose", "forecast", "plan"],
    }[point]
    for step in done_before:
        assert fakes.calls[step] == before[step] == 1, f"{step} done again after a crash at {point}"
    assert result.resumed == bool(done_before)  # a record existed: the quota step was recorded


def test_a_planner_away_leaves_the_diagnosis_standing_and_a_retry_plans_without_diagnosing_again() -> None:
    fakes = Fakes()
    fakes.fail["plan"] = PeerUnavailable("planner", "UNAVAILABLE: connection refused")
    first = heal(fakes)
    assert first.diagnosis.failure_id == "f-1" and first.plan is None and not first.action_ids
    assert first.warnings == ["planner: UNAVAILABLE: connection refused"]
    assert fakes.step() == "HEAL_STEP_FORECAST"
    second = heal(fakes)
    assert second.action_ids == ["p-1-0", "p-1-1"]
    assert fakes.calls["diagnose"] == 1 and fakes.calls["forecast"] == 1 and fakes.calls["plan"] == 1


def test_a_predictor_away_plans_without_risk_and_says_so_in_the_record() -> None:
    fakes = Fakes()
    fakes.fail["forecast"] = PeerUnavailable("predictor", "DEADLINE_EXCEEDED")
    result = heal(fakes)
    assert result.action_ids and fakes.forecasts == [None]
    (raw, _), = fakes.records.values()
    assert coordinator_pb2.HealWorkflow.FromString(raw).forecast_missing


def test_diagnose_only_plans_but_queues_nothing() -> None:
    fakes = Fakes()
    result = heal(fakes, report(diagnose_only=True))
    assert result.plan is not None and result.plan.plan_id == "p-1"
    assert not result.action_ids and fakes.calls["queue"] == 0
    assert fakes.step() == "HEAL_STEP_DONE"


def test_a_spent_quota_refuses_before_any_record() -> None:
    fakes = Fakes()
    fakes.fail["quota"] = QuotaExceeded("acme/failures_per_minute", "spent", 12.0)
    with pytest.raises(QuotaExceeded):
        heal(fakes)
    assert not fakes.records and fakes.calls["diagnose"] == 0


def test_a_detector_away_is_unavailable_and_the_retry_does_not_spend_quota_again() -> None:
    fakes = Fakes()
    fakes.fail["diagnose"] = Unavailable("detector could not answer")
    with pytest.raises(Unavailable):
        heal(fakes)
    heal(fakes)
    assert fakes.calls["quota"] == 1 and fakes.calls["diagnose"] == 1


def test_a_streamed_log_reaches_the_detector() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"connection "
        yield b"reset by peer"

    fakes = Fakes()
    result = heal(fakes, log=chunks())
    assert result.diagnosis.evidence[0].text == "connection reset by "


def test_a_concurrent_call_that_recorded_first_is_followed_not_repeated() -> None:
    fakes = Fakes()
    original_save = fakes.save
    raced = []

    async def racing_save(record: coordinator_pb2.HealWorkflow, version: int) -> int | None:
        if not raced and record.step == coordinator_pb2.HEAL_STEP_DIAGNOSED:
            raced.append(True)
            other = coordinator_pb2.HealWorkflow()
            other.CopyFrom(record)
            other.warnings.append("written by the other call")
            await original_save(other, version)   # the other call's record wins the swap
        return await original_save(record, version)

    fakes.save = racing_save  # type: ignore[method-assign]
    result = heal(fakes)
    assert result.resumed and result.action_ids == ["p-1-0", "p-1-1"]
    assert fakes.calls["diagnose"] == 1 and fakes.calls["quota"] == 1


@pytest.mark.parametrize(("field", "change"), [
    ("report.job.provider", {"provider": common_pb2.PROVIDER_UNSPECIFIED}),
    ("report.job.run_id", {"run_id": " "}),
    ("report.job.attempt", {"attempt": 0}),
])
def test_a_malformed_report_is_refused_before_any_step(field: str, change: dict[str, object]) -> None:
    message = report()
    for name, value in change.items():
        setattr(message.job, name, value)
    fakes = Fakes()
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        heal(fakes, message)
    assert not fakes.calls and not fakes.records


def test_the_heal_is_keyed_on_the_failed_job_attempt() -> None:
    first, again = report(), report()
    retried = report()
    retried.job.attempt = 2
    assert workflow_id_for(TENANT, first) == workflow_id_for(TENANT, again)
    assert workflow_id_for(TENANT, first) != workflow_id_for(TENANT, retried)
    assert workflow_id_for(TENANT, first) != workflow_id_for("other", first)


def test_a_report_without_a_job_is_refused_naming_every_key_field_at_once() -> None:
    from services.coordinator.workflow import validate_report

    with pytest.raises(InvalidArgument) as raised:
        validate_report(detector_pb2.FailureReport(exit_code=1))
    assert [field for field, _ in raised.value.violations] == [
        "report.job.provider", "report.job.repository", "report.job.pipeline", "report.job.job",
        "report.job.run_id", "report.job.attempt"]
    assert "report.job.run_id: must not be empty" in raised.value.message
