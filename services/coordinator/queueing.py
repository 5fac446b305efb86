"""A healing plan into the action queue: the records SubmitPlan and the heal workflow write.

`plan_records` turns a `HealingPlan` into the plan's `ActionRecord`s (validated);
`HealQueue` is the workflow's store port: its records in etcd, and the queue step
writing the plan's actions and the record in one transaction.
"""

from __future__ import annotations

import time

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from services.common.convert import enum_field
from services.common.vocabulary import ActionKind, FailureClass, Provider
from services.coordinator.actions import ActionRecord, validate_plan_actions
from services.coordinator.store import WorkflowRecords


def current_traceparent() -> str:
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


def job_dict(job: common_pb2.JobRef) -> dict[str, object]:
    return {field.name: getattr(job, field.name) for field in common_pb2.JobRef.DESCRIPTOR.fields}


def plan_records(tenant: str, plan: common_pb2.HealingPlan) -> list[ActionRecord]:
    """The plan's actions as queue records (validated: a bad plan raises InvalidArgument)."""
    provider = enum_field(Provider, plan.job.provider, "plan.job.provider")
    failure_class = enum_field(FailureClass, plan.failure_class, "plan.failure_class", allow_unspecified=True)
    now = time.time()
    trace_parent = plan.trace_parent or current_traceparent()
    records = []
    for index, action in enumerate(plan.actions):
        kind = enum_field(ActionKind, action.kind, f"plan.actions[{index}].kind")
        records.append(ActionRecord(
            action_id=action.action_id or f"{plan.plan_id}-{index}", tenant=tenant, plan_id=plan.plan_id,
            failure_id=plan.failure_id, order=index, kind=kind, provider=provider,
            parameters=dict(action.parameters), idempotency_key=action.idempotency_key,
            failure_class=failure_class, expected_success=action.expected_success, job=job_dict(plan.job),
            always_run=action.always_run,
            cluster_id="", created_at=now, updated_at=now, trace_parent=trace_parent,
        ))
    validate_plan_actions(records)
    return records


class HealQueue:
    """`workflow.WorkflowStore` over etcd; `on_queued` wakes the dispatcher."""

    def __init__(self, records: WorkflowRecords, on_queued: object = None) -> None:
        self.records = records
        self.on_queued = on_queued

    async def load(self, workflow_id: str) -> tuple[coordinator_pb2.HealWorkflow | None, int]:
        return await self.records.load(workflow_id)

    async def save(self, record: coordinator_pb2.HealWorkflow, version: int) -> int | None:
        return await self.records.save(record, version)

    async def queue(self, record: coordinator_pb2.HealWorkflow, version: int,
                    plan: common_pb2.HealingPlan) -> tuple[list[str], int] | None:
        queued = await self.records.queue(record, version, plan_records(record.tenant_id, plan))
        if queued is not None and callable(self.on_queued):
            self.on_queued()
        return queued
