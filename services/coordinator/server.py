"""Coordinator servicer: the Coordinator contract over the etcd action store.

The heal: `HealFailure` / `StreamHealFailure` run (or resume) the heal workflow
(`services.coordinator.workflow`, any replica: every step is a compare-and-swap of the
heal's etcd record) over the leaves (`services.coordinator.peers`).

Which replica answers what:
- leader-only: `ClaimAction` (handing work out is the leader's decision, made from its
  view of the queue within the live concurrency limits). A follower answers
  FAILED_PRECONDITION with an ErrorInfo (reason NOT_LEADER, metadata leader_id and
  leader_address): call the leader directly at that address.
- any replica: `SubmitPlan` (one etcd transaction; the leader sees it through its
  watch), `GetAction`, `ListActions`, `WatchActions`, `RegisterExecutor`,
  `ReportOutcome` (fenced on the executor's registration and its claim, so it is
  safe from any replica; the leader delivers the outcome) and `Leader`.

External executors: `RegisterExecutor` (provider, labels, capacity, heartbeat TTL)
gives a lease; `ClaimAction` renews it (call it at least every TTL/3, also when at
capacity: it then returns nothing) and hands out at most capacity minus what the
executor holds, actions of its provider whose `executor_labels` parameter
("key=value,...") its labels satisfy. Claims live under the executor's lease: if it
dies they vanish and the leader puts the actions back in the queue.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import cast

from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2, coordinator_pb2_grpc
from healing_guard.detector.v1 import detector_pb2
from services.common import auth
from services.common.audit_trail import AuditTrail
from services.common.config import ServiceConfig
from services.common.convert import enum_field, timestamp
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    Violations,
)
from services.common.runtime import Assembly, Runtime
from services.common.server import ServiceDefinition
from services.common.tracing import annotate
from services.common.vocabulary import Provider
from services.coordinator.access import ACCESS
from services.coordinator.actions import ActionRecord, ActionState
from services.coordinator.dispatcher import Dispatcher
from services.coordinator.leadership import Leadership
from services.coordinator.notify import OutcomeNotifier, job_ref
from services.coordinator.peers import LeafClients
from services.coordinator.queueing import HealQueue, plan_records
from services.coordinator.scheduling import ExecutorSlot, executor_can_run, fair_order, running_by_tenant
from services.coordinator.store import ActionStore, Registration, WorkflowRecords
from services.coordinator.workflow import HealWorkflow, LogSource, Ports, step_name, validate_report

MAX_CLAIM = 32
UNARY_LOG_LIMIT = 4 * 1024 * 1024  # as detector.ReportFailure; StreamHealFailure for more
# Live settings (etcd keys /healing-guard/config/coordinator/<name>, JSON values):
#   lease_ttl_seconds    leader lease; read at start
#   dispatch_concurrency actions the leader runs at once per provider (worker threads)
#   global_concurrency   actions CLAIMED at once in all, by the leader and external executors (0 = no limit)
#   tenant_concurrency   actions CLAIMED at once per tenant (0 = no limit)
LIVE_DEFAULTS = {"lease_ttl_seconds": 5, "dispatch_concurrency": 4, "global_concurrency": 64,
                 "tenant_concurrency": 8, "fresh_runner_restore_after_seconds": 600}


def record_message(record: ActionRecord) -> coordinator_pb2.ActionRecord:
    return coordinator_pb2.ActionRecord(
        action_id=record.action_id, tenant_id=record.tenant, plan_id=record.plan_id, failure_id=record.failure_id,
        action=common_pb2.Action(action_id=record.action_id, kind=cast(common_pb2.ActionKind, int(record.kind)),
                                 parameters=record.parameters,
                                 idempotency_key=record.idempotency_key, expected_success=record.expected_success,
                                 order=record.order, always_run=record.always_run),
        job=job_ref(record.job), failure_class=cast(common_pb2.FailureClass, int(record.failure_class)),
        state=cast(common_pb2.ActionState, int(record.state)),
        executor_id=record.executor_id, attempts=record.attempts, detail=record.detail,
        provider_reference=record.provider_reference, created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at), dispatched_by=record.dispatched_by, cluster_id=record.cluster_id,
    )


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, store: ActionStore, leadership: Leadership, dispatcher: Dispatcher | None,
                 workflow: HealWorkflow | None = None) -> None:
        self.store = store
        self.leadership = leadership
        self.dispatcher = dispatcher
        self.workflow = workflow

    async def HealFailure(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.report.tenant_id, "report.tenant_id")
        problems = Violations()  # the report's fields and the log, refused together
        problems.check(lambda: validate_report(request.report))
        if not request.log:
            problems.add("log", "is empty: send the job log (bytes; in grpcurl's JSON, base64)")
        elif len(request.log) > UNARY_LOG_LIMIT:
            problems.add("log", f"is {len(request.log)} bytes; HealFailure takes at most {UNARY_LOG_LIMIT} "
                                "(use StreamHealFailure for larger logs)")
        problems.raise_if_any()
        return await self._heal(tenant, request.report, request.log)

    async def StreamHealFailure(self, request_iterator, context):  # type: ignore[no-untyped-def]
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("item") != "report":
            raise InvalidArgument("report", "the first StreamHealFailure message must carry the report "
                                            "(metadata), then the log in log_chunk messages")
        tenant = auth.tenant_for(first.report.tenant_id, "report.tenant_id")

        async def chunks():  # type: ignore[no-untyped-def]
            async for message in request_iterator:
                if message.WhichOneof("item") == "report":
                    raise InvalidArgument("report", "only the first StreamHealFailure message may carry the "
                                                    "report; send the log in log_chunk messages after it")
                if message.log_chunk:
                    yield message.log_chunk

        return await self._heal(tenant, first.report, chunks())

    async def _heal(self, tenant: str, report: detector_pb2.FailureReport,
                    log: LogSource) -> coordinator_pb2.HealFailureResponse:
        if self.workflow is None:
            raise Unavailable("this coordinator runs no heal workflow (no peers configured)")
        annotate(tenant=tenant, repository=report.job.repository, run_id=report.job.run_id)
        result = await self.workflow.heal(tenant, report, log)
        annotate(workflow_id=result.workflow_id, heal_step=step_name(result.step), resumed=result.resumed,
                 failure_class=common_pb2.FailureClass.Name(result.diagnosis.failure_class))
        response = coordinator_pb2.HealFailureResponse(
            diagnosis=result.diagnosis, action_ids=result.action_ids, warnings=result.warnings,
            workflow_id=result.workflow_id, resumed=result.resumed)
        if result.plan is not None and result.plan.plan_id:
            response.plan.CopyFrom(result.plan)
        if result.audit is not None:
            response.audit.CopyFrom(result.audit)
        return response

    async def SubmitPlan(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id or request.plan.tenant_id)
        plan = request.plan
        if not plan.plan_id:
            raise InvalidArgument("plan.plan_id", "is required")
        if plan.tenant_id and plan.tenant_id != tenant:
            raise PermissionDenied(f"plan.tenant_id {plan.tenant_id!r} does not match the tenant {tenant!r}")
        records = plan_records(tenant, plan)
        ids, revision, duplicate = await self.store.submit(plan.plan_id, records)
        annotate(tenant=tenant, plan_id=plan.plan_id, actions=len(ids))
        if self.dispatcher is not None:
            self.dispatcher.wake()
        return coordinator_pb2.SubmitPlanResponse(action_ids=ids, revision=revision, duplicate=duplicate)

    async def GetAction(self, request, context):  # type: ignore[no-untyped-def]
        if not request.action_id:
            raise InvalidArgument("action_id", "is required")
        versioned = await self.store.get(request.action_id)
        _own(versioned.record)
        return record_message(versioned.record)

    async def ListActions(self, request, context):  # type: ignore[no-untyped-def]
        if not request.plan_id and not request.failure_id:
            raise InvalidArgument("plan_id", "name a plan_id or a failure_id")
        if request.plan_id:
            found = [v.record for v in await self.store.of_plan(request.plan_id)]
        else:
            records, _ = await self.store.all()
            found = [v.record for v in records if v.record.failure_id == request.failure_id]
        visible = [r for r in found if _visible(r)]
        limit = request.limit or 100
        return coordinator_pb2.ListActionsResponse(actions=[record_message(r) for r in visible[:limit]])

    async def WatchActions(self, request, context):  # type: ignore[no-untyped-def]
        if request.start_revision < 0:
            raise InvalidArgument("start_revision", f"must be >= 0, got {request.start_revision}")
        async for record, revision in self.store.watch(request.start_revision):
            if not _visible(record):
                continue
            if request.plan_id and record.plan_id != request.plan_id:
                continue
            if request.failure_id and record.failure_id != request.failure_id:
                continue
            yield coordinator_pb2.ActionEvent(action=record_message(record), revision=revision)

    async def RegisterExecutor(self, request, context):  # type: ignore[no-untyped-def]
        if not request.executor_id:
            raise InvalidArgument("executor_id", "is required")
        if "/" in request.executor_id:
            raise InvalidArgument("executor_id", f"must not contain '/', got {request.executor_id!r}")
        provider = enum_field(Provider, request.provider, "provider")
        if request.capacity < 1:
            raise InvalidArgument("capacity", f"must be >= 1, got {request.capacity}")
        ttl = request.ttl_seconds or 10
        if not 2 <= ttl <= 300:
            raise InvalidArgument("ttl_seconds", f"must be between 2 and 300, got {ttl}")
        lease = await self.store.register_executor(request.executor_id, {
            "provider": provider.name, "labels": dict(request.labels), "capacity": request.capacity,
            "registered_by": auth.current_principal().subject,
        }, ttl)
        annotate(executor_id=request.executor_id, provider=provider.name)
        return coordinator_pb2.RegisterExecutorResponse(lease_id=lease, ttl_seconds=ttl)

    async def ClaimAction(self, request, context):  # type: ignore[no-untyped-def]
        """Leader-only: hand runnable actions to an external executor.

        Also the executor's heartbeat: every call renews its lease, so an executor at
        full capacity keeps calling (it gets nothing) to keep its claims alive.
        """
        registration = await self._executor(request.executor_id, request.lease_id)
        limit = request.max_actions or 1
        if not 1 <= limit <= MAX_CLAIM:
            raise InvalidArgument("max_actions", f"must be between 1 and {MAX_CLAIM}, got {limit}")
        if await self.store.renew(registration.lease) <= 0:
            raise FailedPrecondition(f"the lease of executor {request.executor_id!r} expired; register again",
                                     reason="LEASE_EXPIRED")
        await self.leadership.require_leader()
        if self.dispatcher is None or self.dispatcher.view is None:
            raise Unavailable("the leader is loading the queue; retry in a moment")
        view = self.dispatcher.view
        data = registration.data
        slot = ExecutorSlot(request.executor_id, Provider[data["provider"]], dict(data.get("labels", {})),
                            int(data.get("capacity", 1)))
        claimed_now = [v.record for v in self.dispatcher.claimed(view)]
        holding = sum(1 for r in claimed_now if r.executor_id == slot.executor_id)
        runnable, _, _ = self.dispatcher.runnable(view)
        candidates = [v.record for v in runnable if executor_can_run(slot, v.record)]
        running = running_by_tenant(claimed_now)
        chosen = fair_order(candidates, running, self.dispatcher.limits(),
                            free_slots=min(limit, slot.capacity - holding))
        fences = [self.leadership.fence(), registration.fence()]
        claimed: list[ActionRecord] = []
        for record in chosen:
            current = view.actions.get(record.action_id)
            if current is None:
                continue
            changed = replace(record, state=ActionState.ACTION_STATE_CLAIMED, executor_id=slot.executor_id,
                              dispatched_by=self.leadership.replica_id, attempts=record.attempts + 1,
                              updated_at=time.time())
            done = await self.store.update(current, changed, fences, claim_lease=registration.lease)
            if done is not None:
                self.dispatcher.remember(done, claimer=slot.executor_id)
                claimed.append(changed)
        annotate(executor_id=slot.executor_id, claimed=len(claimed))
        return coordinator_pb2.ClaimActionResponse(actions=[record_message(r) for r in claimed])

    async def ReportOutcome(self, request, context):  # type: ignore[no-untyped-def]
        registration = await self._executor(request.executor_id, request.lease_id)
        if not request.action_id:
            raise InvalidArgument("action_id", "is required")
        versioned = await self.store.get(request.action_id)
        record = versioned.record
        if record.terminal:
            return coordinator_pb2.ReportOutcomeResponse(duplicate=True, state=int(record.state))
        if record.state is not ActionState.ACTION_STATE_CLAIMED or record.executor_id != request.executor_id:
            raise FailedPrecondition(
                f"action {record.action_id} is not claimed by executor {request.executor_id!r}", reason="NOT_CLAIMED"
            )
        await self.store.renew(registration.lease)
        state = ActionState.ACTION_STATE_SUCCEEDED if request.success else ActionState.ACTION_STATE_FAILED
        done = replace(record, state=state, detail=request.detail, provider_reference=request.provider_reference,
                       runner_minutes=request.runner_minutes, updated_at=time.time())
        # Fenced on the registration and on the claim still naming this executor: a claim
        # that expired (and may be running elsewhere) cannot be finished by its old holder.
        if await self.store.update(versioned, done, registration.fence(), release_claim=True,
                                   claim_holder=request.executor_id) is None:
            raise FailedPrecondition(f"action {record.action_id} is no longer claimed by executor "
                                     f"{request.executor_id!r} (its claim expired or it changed); do not retry",
                                     reason="NOT_CLAIMED")
        if self.dispatcher is not None:
            self.dispatcher.wake()  # the leader delivers the outcome
        annotate(executor_id=request.executor_id, action_state=state.name)
        return coordinator_pb2.ReportOutcomeResponse(duplicate=False, state=int(state))

    async def Leader(self, request, context):  # type: ignore[no-untyped-def]
        info = await self.leadership.current()
        if info is None:
            return coordinator_pb2.LeaderResponse()
        annotate(leader_id=info.leader_id)
        return coordinator_pb2.LeaderResponse(leader_id=info.leader_id, leader_address=info.address, term=info.term,
                                              is_self=info.leader_id == self.leadership.replica_id)

    async def _executor(self, executor_id: str, lease_id: int) -> Registration:
        if not executor_id:
            raise InvalidArgument("executor_id", "is required")
        registration = await self.store.executor(executor_id)
        if registration is None:
            raise FailedPrecondition(f"executor {executor_id!r} is not registered (or its lease expired); "
                                     "call RegisterExecutor", reason="NOT_REGISTERED")
        if lease_id != registration.lease:
            raise FailedPrecondition(f"lease {lease_id} is not the lease of executor {executor_id!r}",
                                     reason="WRONG_LEASE")
        return registration


def _visible(record: ActionRecord) -> bool:
    principal = auth.current_principal()
    return auth.acts_for_any_tenant(principal) or record.tenant == principal.tenant


def _own(record: ActionRecord) -> None:
    if not _visible(record):
        # Same answer as a missing action: do not reveal other tenants' ids.
        raise NotFound("action", record.action_id)


async def build(config: ServiceConfig, runtime: Runtime) -> Assembly:
    if runtime.etcd is None:
        raise SystemExit("coordinator needs etcd: set HG_ETCD_ENDPOINT")
    from services.coordinator.routing import executor_selector

    store = ActionStore(runtime.etcd)
    leadership = Leadership(runtime.etcd, config.replica_id or f"coordinator-{os.getpid()}", config.address,
                            ttl_seconds=int(runtime.live.get("lease_ttl_seconds")))
    audit = runtime.keep(AuditTrail(runtime.peers, config.data_dir / "audit-outbox.sqlite3"))
    notifier = OutcomeNotifier(runtime.peers, audit)
    dispatcher = Dispatcher(store, leadership, executor_selector(os.environ, config.data_dir), notifier,
                            settings=runtime.live.get)
    leaves = LeafClients(runtime.peers)
    workflow = HealWorkflow(Ports(tenancy=leaves, detector=leaves, predictor=leaves, planner=leaves,
                                  store=HealQueue(WorkflowRecords(runtime.etcd, store), dispatcher.wake)))
    servicer = CoordinatorServicer(store, leadership, dispatcher, workflow)

    async def started(server) -> None:  # type: ignore[no-untyped-def]
        leadership.start()
        dispatcher.start()

    async def stop() -> None:
        await dispatcher.stop()
        await leadership.stop()

    definition = ServiceDefinition(
        name="coordinator",
        register=lambda server: coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, server),
        access=ACCESS,
    )
    return Assembly(definition=definition, on_started=started, on_stop=stop)
