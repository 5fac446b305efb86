"""Planner servicer: the Planner contract over policy, learning, planning and batch.

A leaf of the heal: it calls no one (the coordinator passes the predictor's forecast
in PlanHealingRequest.forecast, and queues plans itself); it only appends to the
audit log through its outbox.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, cast

from healing_guard.common.v1 import common_pb2
from healing_guard.planner.v1 import planner_pb2, planner_pb2_grpc
from healing_guard.predictor.v1 import predictor_pb2
from services.common import auth
from services.common.audit_trail import AuditTrail
from services.common.config import ServiceConfig
from services.common.convert import enum_field, timestamp, timestamp_field
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.live_config import LiveConfig
from services.common.runtime import Assembly, Runtime
from services.common.server import ServiceDefinition
from services.common.tracing import annotate
from services.common.vocabulary import ActionKind, FailureClass
from services.planner import batch, batch_model, recommendations
from services.planner.access import ACCESS
from services.planner.planning import Plan, PlanRequest, learned_estimate, plan_healing
from services.planner.policy import Policy, policy_from_dict, policy_to_dict
from services.planner.store import PlannerStore

log = logging.getLogger(__name__)

LIVE_DEFAULTS: dict[str, Any] = {"policy_overrides": {}, "batch_time_budget_seconds": 1.0}
# PlanRequest (domain) field -> the PlanHealingRequest field it came from.
PLAN_REQUEST_FIELDS: dict[str, str] = {
    "failure_id": "diagnosis.failure_id",
    "failure_class": "diagnosis.failure_class",
    "confidence": "diagnosis.confidence",
    "attempt": "diagnosis.job.attempt",
    "job_duration_s": "diagnosis.duration_seconds",
    "memory_limit_mb": "memory_limit_mb",
}


def plan_message(plan: Plan, diagnosis: common_pb2.Diagnosis | None = None, risk: float | None = None,
                 risk_summary: str = "") -> common_pb2.HealingPlan:
    message = common_pb2.HealingPlan(
        plan_id=plan.plan_id, tenant_id=plan.tenant, failure_id=plan.failure_id,
        failure_class=cast(common_pb2.FailureClass, int(plan.failure_class)), expected_success=plan.expected_success,
        expected_runner_minutes=plan.expected_minutes, expected_cost_usd=plan.expected_usd,
        rationale=plan.rationale, requires_approval=plan.requires_approval,
        risk=-1.0 if risk is None else risk, risk_summary=risk_summary, policy_rule=plan.policy_rule,
        created_at=timestamp(plan.created_at),
    )
    if diagnosis is not None:
        message.job.CopyFrom(diagnosis.job)
    for order, action in enumerate(plan.actions):
        message.actions.append(common_pb2.Action(
            action_id=f"{plan.plan_id}-{order}", kind=cast(common_pb2.ActionKind, int(action.kind)),
            parameters=action.parameters,
            idempotency_key=action.idempotency_key, expected_success=action.expected_success,
            expected_runner_minutes=action.expected_minutes, expected_cost_usd=action.expected_usd, order=order,
            always_run=not action.if_previous_failed and order > 0,
        ))
    return message


class PlannerServicer(planner_pb2_grpc.PlannerServicer):
    def __init__(self, store: PlannerStore, audit: AuditTrail | None, live: LiveConfig,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.audit = audit
        self.live = live
        self.rng = rng or random.Random()

    def _policy(self, tenant: str, failure_class: FailureClass) -> Policy:
        overrides = self.live.get("policy_overrides") or {}
        return self.store.effective_policy(tenant, failure_class, overrides)

    async def PlanHealing(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        diagnosis = request.diagnosis
        if not diagnosis.failure_id:
            raise InvalidArgument("diagnosis.failure_id", "is required")
        failure_class = enum_field(FailureClass, diagnosis.failure_class, "diagnosis.failure_class")
        if request.memory_limit_mb < 0:
            raise InvalidArgument("memory_limit_mb", f"must be >= 0, got {request.memory_limit_mb}")
        risk, risk_summary = _risk(request)
        step = diagnosis.failed_step if diagnosis.HasField("failed_step") else None
        plan_request = PlanRequest(
            tenant=tenant, failure_id=diagnosis.failure_id, failure_class=failure_class,
            confidence=diagnosis.confidence, evidence=tuple(line.text for line in diagnosis.evidence[:5]),
            cluster_id=diagnosis.cluster_id,
            # healing attempts already spent on this run: none on its first failure
            attempt=max(0, diagnosis.job.attempt - 1),
            flaky_test=diagnosis.flaky_tests[0] if diagnosis.flaky_tests else None,
            last_good_revision=request.last_good_revision or None, job_duration_s=diagnosis.duration_seconds,
            risk=risk, risk_summary=risk_summary, runner=diagnosis.job.runner,
            memory_limit_mb=request.memory_limit_mb or None,
            failed_step=(step.command or step.name) if step is not None else "",
            failed_exit_code=step.exit_code if step is not None and step.HasField("exit_code") else None,
            decisive_line_number=diagnosis.decisive_line.line, decisive_line=diagnosis.decisive_line.text,
        )
        try:
            # Planning reads and the save below writes SQLite with fsync: off the event loop.
            plan = await asyncio.to_thread(plan_healing, plan_request, self._policy(tenant, failure_class),
                                           self.store, self.rng)
        except InvalidArgument as error:  # the domain's names -> the names the caller sent
            proto = PLAN_REQUEST_FIELDS.get(error.field)
            if proto is None:
                raise
            raise InvalidArgument(proto, error.description) from None
        plan = await asyncio.to_thread(self.store.save_plan, plan)
        annotate(tenant=tenant, failure_class=failure_class.name, plan_id=plan.plan_id,
                 action=plan.actions[0].kind.name if plan.actions else "NONE")
        if self.audit is not None:
            await self.audit.record("PLAN", tenant, plan.failure_id, {
                "plan_id": plan.plan_id, "failure_class": failure_class.name,
                "actions": [a.kind.name for a in plan.actions], "expected_success": plan.expected_success,
                "policy_rule": plan.policy_rule, "risk": risk, "rationale": plan.rationale,
            }, event_id=plan.plan_id)
        return plan_message(plan, diagnosis, risk, risk_summary)

    async def PlanBatch(self, request, context):  # type: ignore[no-untyped-def]
        auth.tenant_for(request.tenant_id)
        if len(request.items) > batch_model.MAX_BATCH_ITEMS:
            raise InvalidArgument("items", f"batch has {len(request.items)} items; the limit is "
                                           f"{batch_model.MAX_BATCH_ITEMS} (split it)")
        items = []
        for i, item in enumerate(request.items):
            candidates = [
                batch_model.Candidate(
                    action=enum_field(ActionKind, c.kind, f"items[{i}].candidates[{j}].kind"), benefit=c.benefit,
                    runner_minutes=c.runner_minutes, cost_usd=c.cost_usd, pool=c.pool,
                    shared_key=c.shared_key or None, service=c.service or None,
                )
                for j, c in enumerate(item.candidates)
            ]
            items.append(batch_model.BatchItem(failure_id=item.failure_id, candidates=candidates))
        problem = batch_model.BatchProblem(items=items, capacity_minutes=request.capacity_runner_minutes,
                                           budget_usd=request.budget_usd)
        batch_model.validate(problem)
        budget = request.time_budget_seconds or float(self.live.get("batch_time_budget_seconds"))
        if not 0 < budget <= 30:
            raise InvalidArgument("time_budget_seconds", f"must be in (0, 30], got {budget}")
        solution = await asyncio.to_thread(batch.solve_portfolio, problem, budget, int(request.seed))
        return planner_pb2.PlanBatchResponse(
            choices=[planner_pb2.BatchChoice(failure_id=fid, candidate_index=-1 if idx is None else idx)
                     for fid, idx in solution.choice.items()],
            objective=solution.objective, solver=solution.solver, greedy_objective=solution.greedy_objective,
            best_bound=solution.best_bound if solution.best_bound is not None else 0.0,
            gap=solution.gap if solution.gap is not None else -1.0, feasible=solution.feasible,
            elapsed_seconds=solution.elapsed_s, notes=solution.notes,
        )

    async def RecordOutcome(self, request, context):  # type: ignore[no-untyped-def]
        outcome = request.outcome
        tenant = auth.tenant_for(outcome.tenant_id, "outcome.tenant_id")
        if not outcome.plan_id:
            raise InvalidArgument("outcome.plan_id", "is required")
        if not outcome.idempotency_key:
            raise InvalidArgument("outcome.idempotency_key", "is required (the action's key in its plan)")
        at = (timestamp_field(outcome.finished_at, "outcome.finished_at") if outcome.HasField("finished_at")
              else time.time())
        counted = await asyncio.to_thread(self.store.record_outcome, tenant, outcome.plan_id,
                                          outcome.idempotency_key, outcome.outcome_id, outcome.success, at)
        plan = self.store.get_plan(tenant, outcome.plan_id)
        estimate = learned_estimate(plan, outcome.idempotency_key, self._policy(tenant, plan.failure_class),
                                    self.store, time.time())
        annotate(tenant=tenant, action=estimate.action.name, duplicate=not counted)
        return planner_pb2.RecordOutcomeResponse(duplicate=not counted, posterior_mean=estimate.posterior_mean,
                                                 evidence=estimate.evidence)

    async def ExplainPlan(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        if not request.plan_id:
            raise InvalidArgument("plan_id", "is required")
        plan = self.store.get_plan(tenant, request.plan_id)
        return planner_pb2.ExplainPlanResponse(plan=plan_message(plan), explanation=plan.rationale)

    async def GetPolicy(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        policies = self.store.effective_policies(tenant, self.live.get("policy_overrides") or {})
        return _policy_message(tenant, policies, "tenant" if self.store.stored_policies(tenant) else "default")

    async def SetPolicy(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.policy.tenant_id, "policy.tenant_id")
        if not request.policy.classes:
            raise InvalidArgument("policy.classes", "name at least one failure class policy")
        parsed = []
        for i, cp in enumerate(request.policy.classes):
            prefix = f"policy.classes[{i}]"
            failure_class = enum_field(FailureClass, cp.failure_class, f"{prefix}.failure_class")
            actions = [enum_field(ActionKind, a, f"{prefix}.allowed_actions[{j}]").name
                       for j, a in enumerate(cp.allowed_actions)]
            parsed.append(policy_from_dict({
                "failure_class": failure_class.name, "allowed_actions": actions, "max_attempts": cp.max_attempts,
                "budget_minutes": cp.budget_runner_minutes, "budget_usd": cp.budget_usd,
                "requires_human_approval": cp.requires_approval, "exploration": request.policy.exploration,
            }, prefix))
        now = time.time()
        for policy in parsed:  # all validated before any is stored
            await asyncio.to_thread(self.store.set_policy, tenant, policy, now)
        if self.audit is not None:
            await self.audit.record("ADMIN_CHANGE", tenant, f"policy/{tenant}", {
                "change": "set_policy", "policies": [policy_to_dict(p) for p in parsed],
                "by": auth.current_principal().subject,
            })  # no event_id: a fresh (random) key per change
        policies = self.store.effective_policies(tenant, self.live.get("policy_overrides") or {})
        return _policy_message(tenant, policies, "tenant")

    async def PlanRecommendation(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        if not request.HasField("recommendation"):
            raise InvalidArgument("recommendation", "is required (as Predictor.Recommend returned it)")
        if request.submit:
            raise FailedPrecondition("PlanRecommendation no longer queues plans: call it without submit, then "
                                     "Coordinator.SubmitPlan with the plan it returns", reason="SUBMIT_MOVED")
        accepted = _recommendation(request.recommendation)
        job = _recommendation_job(request.job, accepted)
        recommendations.validate_recommendation(accepted)
        policy = self._policy(tenant, recommendations.class_prevented(accepted))
        built = recommendations.plan_recommendation(tenant, accepted, policy, self.store, submit=False)
        plan = self.store.save_plan(built)
        duplicate = plan.created_at != built.created_at
        annotate(tenant=tenant, plan_id=plan.plan_id, action=accepted.kind.name, duplicate=duplicate)
        if self.audit is not None and not duplicate:
            await self.audit.record("PLAN", tenant, plan.failure_id, {
                "plan_id": plan.plan_id, "recommendation_id": accepted.recommendation_id,
                "failure_class": plan.failure_class.name, "actions": [a.kind.name for a in plan.actions],
                "policy_rule": plan.policy_rule, "rationale": plan.rationale,
            }, event_id=plan.plan_id)
        message = plan_message(plan)
        message.job.CopyFrom(job)
        return planner_pb2.PlanRecommendationResponse(plan=message, duplicate=duplicate)


def _risk(request: planner_pb2.PlanHealingRequest) -> tuple[float | None, str]:
    """The predictor's risk as the coordinator passed it: (probability or None, summary)."""
    if not request.HasField("forecast"):
        return None, ""
    forecast = request.forecast
    if not forecast.has_history:
        return None, forecast.summary
    return forecast.next_run_failure_probability, forecast.summary


def _policy_message(tenant: str, policies: dict[FailureClass, Policy], source: str) -> planner_pb2.Policy:
    message = planner_pb2.Policy(tenant_id=tenant, source=source)
    exploration = True
    for failure_class, policy in sorted(policies.items()):
        exploration = exploration and policy.exploration
        message.classes.append(planner_pb2.ClassPolicy(
            failure_class=cast(common_pb2.FailureClass, int(failure_class)),
            allowed_actions=[cast(common_pb2.ActionKind, int(a)) for a in policy.allowed_actions],
            max_attempts=policy.max_attempts, budget_runner_minutes=policy.budget_minutes,
            budget_usd=policy.budget_usd, requires_approval=policy.requires_human_approval,
        ))
    message.exploration = exploration
    return message


def _recommendation(message: predictor_pb2.Recommendation) -> recommendations.Recommendation:
    return recommendations.Recommendation(
        recommendation_id=message.recommendation_id,
        kind=enum_field(ActionKind, message.kind, "recommendation.kind"),
        repository=message.repository, pipeline=message.pipeline, job=message.job,
        parameters=dict(message.parameters), title=message.title, evidence=tuple(message.evidence),
        expected_benefit=message.expected_benefit,
    )


def _recommendation_job(job: common_pb2.JobRef, accepted: recommendations.Recommendation) -> common_pb2.JobRef:
    """Where the plan's action runs: the caller's job, filled in from the recommendation's scope."""
    out = common_pb2.JobRef()
    out.CopyFrom(job)
    for name in ("repository", "pipeline", "job"):
        given, wanted = getattr(job, name), getattr(accepted, name)
        if given and wanted and given != wanted:
            raise InvalidArgument(f"job.{name}", f"{given!r} is not the recommendation's {wanted!r}")
        setattr(out, name, given or wanted)
    return out


async def build(config: ServiceConfig, runtime: Runtime) -> Assembly:
    store = PlannerStore(config.database_path)
    audit = runtime.keep(AuditTrail(runtime.peers, config.data_dir / "audit-outbox.sqlite3"))
    servicer = PlannerServicer(store, audit, runtime.live)

    async def stop() -> None:
        store.close()

    definition = ServiceDefinition(
        name="planner",
        register=lambda server: planner_pb2_grpc.add_PlannerServicer_to_server(servicer, server),
        access=ACCESS,
    )
    return Assembly(definition=definition, on_stop=stop)
