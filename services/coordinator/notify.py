"""Outcomes flow back: planner (learning), predictor (run history), detector
(flaky evidence and confirmed labels) and audit (the record) — over the contracts.

Each receiver is idempotent on the outcome id (the action id), so the leader can
deliver again after a crash without counting anything twice.
"""

from __future__ import annotations

import logging
import time
from typing import cast

import grpc

from healing_guard.common.v1 import common_pb2
from healing_guard.detector.v1 import detector_pb2, detector_pb2_grpc
from healing_guard.planner.v1 import planner_pb2, planner_pb2_grpc
from healing_guard.predictor.v1 import predictor_pb2, predictor_pb2_grpc
from services.common.audit_trail import AuditTrail
from services.common.clients import PeerClients
from services.common.convert import timestamp
from services.common.vocabulary import ActionKind
from services.coordinator.actions import ActionRecord, ActionState

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0
# Actions that run the job again (quarantining a flaky test re-runs it without the test):
# their result is a new run of the pipeline for the predictor's history.
RERUNS = frozenset({ActionKind.RETRY, ActionKind.RETRY_ON_FRESH_RUNNER, ActionKind.CLEAR_CACHE,
                    ActionKind.RAISE_RESOURCE_LIMIT, ActionKind.QUARANTINE_TEST})


def job_ref(job: dict[str, object]) -> common_pb2.JobRef:
    ref = common_pb2.JobRef()
    for key, value in job.items():
        if key in common_pb2.JobRef.DESCRIPTOR.fields_by_name:
            setattr(ref, key, value)
    return ref


def outcome_message(record: ActionRecord) -> common_pb2.Outcome:
    return common_pb2.Outcome(
        outcome_id=record.action_id, tenant_id=record.tenant, plan_id=record.plan_id, action_id=record.action_id,
        failure_id=record.failure_id, kind=cast(common_pb2.ActionKind, int(record.kind)),
        failure_class=cast(common_pb2.FailureClass, int(record.failure_class)),
        success=record.state is ActionState.ACTION_STATE_SUCCEEDED, detail=record.detail,
        runner_minutes=record.runner_minutes, job=job_ref(record.job), cluster_id=record.cluster_id,
        finished_at=timestamp(record.updated_at or time.time()), idempotency_key=record.idempotency_key,
    )


class OutcomeNotifier:
    def __init__(self, peers: PeerClients, audit: AuditTrail) -> None:
        self.peers = peers
        self.audit = audit

    async def action_started(self, record: ActionRecord) -> None:
        await self.audit.record("ACTION", record.tenant, record.failure_id, {
            "action_id": record.action_id, "plan_id": record.plan_id, "kind": record.kind.name,
            "parameters": record.parameters, "idempotency_key": record.idempotency_key,
            "dispatched_by": record.dispatched_by, "attempt": record.attempts,
        }, event_id=f"{record.action_id}/{record.attempts}")

    def receivers(self, record: ActionRecord) -> list[str]:
        """Who must get this outcome, in order (audit last: it records what was delivered).

        Only an action that ran teaches anything: a SKIPPED action and a housekeeping
        step (a runner's restore) go to the audit log alone; an escalation is a human's
        job, not a healing result for the planner to learn from.
        """
        if record.housekeeping or record.state is ActionState.ACTION_STATE_SKIPPED:
            return ["audit"]
        names = ["detector"] if record.kind is ActionKind.ESCALATE else ["planner", "detector"]
        if record.kind in RERUNS and record.job.get("run_id"):  # no run (an accepted recommendation): no history
            names.append("predictor")
        return [*names, "audit"]

    async def deliver(self, record: ActionRecord, already: frozenset[str] = frozenset()) -> tuple[set[str], bool]:
        """Deliver to every receiver not in `already`: (receivers that have it now, all done?).

        Planner, detector and predictor are idempotent on the outcome id, audit on the
        entry's idempotency key; the caller still records who has the outcome, so a
        re-delivery after a crash asks only those that may not have it.
        """
        outcome = outcome_message(record)
        reached: set[str] = set()
        for name in self.receivers(record):
            if name in already:
                continue
            try:
                if name == "audit":
                    receipt = await self.audit.record("OUTCOME", record.tenant, record.failure_id, {
                        "action_id": record.action_id, "plan_id": record.plan_id, "kind": record.kind.name,
                        "state": record.state.name, "detail": record.detail,
                        "provider_reference": record.provider_reference, "runner_minutes": record.runner_minutes,
                    }, event_id=record.action_id)  # once per action, however often delivered
                    if receipt is not None:
                        reached.add(name)
                    continue
                if name == "planner":
                    await self._planner(outcome)
                elif name == "detector":
                    await self._detector(outcome)
                else:
                    await self._predictor(record)
                reached.add(name)
            except grpc.aio.AioRpcError as error:
                log.warning("outcome of %s to %s: %s %s", record.action_id, name, error.code().name, error.details())
                # NOT_FOUND / INVALID_ARGUMENT will not get better by retrying.
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    reached.add(name)
        return reached, set(self.receivers(record)) <= (reached | already)

    async def _planner(self, outcome: common_pb2.Outcome) -> None:
        stub = self.peers.stub("planner", planner_pb2_grpc.PlannerStub)
        await stub.RecordOutcome(planner_pb2.RecordOutcomeRequest(outcome=outcome), timeout=TIMEOUT_S)

    async def _detector(self, outcome: common_pb2.Outcome) -> None:
        stub = self.peers.stub("detector", detector_pb2_grpc.DetectorStub)
        await stub.RecordOutcome(detector_pb2.RecordOutcomeRequest(outcome=outcome), timeout=TIMEOUT_S)

    async def _predictor(self, record: ActionRecord) -> None:
        job = job_ref(record.job)
        # Each healing action of the plan that re-runs the job is its own later attempt.
        job.attempt = max(1, job.attempt) + record.order + 1
        succeeded = record.state is ActionState.ACTION_STATE_SUCCEEDED
        run = predictor_pb2.Run(
            job=job,
            result=predictor_pb2.RUN_RESULT_SUCCESS if succeeded else predictor_pb2.RUN_RESULT_FAILURE,
            started_at=timestamp(record.updated_at or time.time()),
            duration_seconds=record.runner_minutes * 60,
            failure_class=cast(common_pb2.FailureClass, 0 if succeeded else int(record.failure_class)),
        )
        stub = self.peers.stub("predictor", predictor_pb2_grpc.PredictorStub)
        await stub.RecordRun(predictor_pb2.RecordRunRequest(tenant_id=record.tenant, run=run), timeout=TIMEOUT_S)
