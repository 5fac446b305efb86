"""Accept one of the predictor's proactive recommendations into a healing plan.

A recommendation (quarantine a test whose flakiness rises, raise a memory limit that
peak memory is creeping toward, ...) is not tied to a failed run, but the action it
proposes is one the tenant's healing policy governs: the policy of the failure class
the recommendation prevents. Accepting it checks, in order:

1. the recommendation is well formed (id, kind, scope, the parameters its action needs);
2. the action is one a recommendation can propose (`CLASS_PREVENTED`);
3. the tenant's policy for that class allows the action (ESCALATE, telling a human,
   is always allowed), and it does not need a human's approval when it is to be
   submitted right away;
4. the action's preconditions (services.planner.costs) hold: a named test for a
   quarantine, a memory limit below the ceiling, attempts the policy leaves.

The plan is the action, then ESCALATE if it does not work (for an ESCALATE
recommendation, the escalation alone), and its rationale quotes the recommendation's
title and evidence. Its id is derived from the tenant and the recommendation id, so
accepting the same recommendation twice yields the same plan.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.vocabulary import ActionKind, FailureClass
from services.planner.costs import CandidateContext, CostModel, estimate_cost, why_not_allowed
from services.planner.learning import StatsSource, posterior
from services.planner.planning import (
    MAX_EVIDENCE_CHARS,
    Plan,
    PlannedAction,
    idempotency_key,
)
from services.planner.policy import Policy

# The failure class each proactive action prevents: its policy decides whether it is allowed.
CLASS_PREVENTED: Mapping[ActionKind, FailureClass] = {
    ActionKind.QUARANTINE_TEST: FailureClass.FLAKY_TEST,
    ActionKind.RAISE_RESOURCE_LIMIT: FailureClass.OUT_OF_MEMORY,
    ActionKind.CLEAR_CACHE: FailureClass.DEPENDENCY_FETCH,
    ActionKind.RETRY_ON_FRESH_RUNNER: FailureClass.INFRASTRUCTURE,
    ActionKind.ESCALATE: FailureClass.UNKNOWN,  # refined from the parameters, see `class_prevented`
}
MAX_EVIDENCE = 5
FIELD = "recommendation"


@dataclass(frozen=True)
class Recommendation:
    """The predictor's recommendation as the planner receives it (see predictor.v1.Recommendation)."""

    recommendation_id: str
    kind: ActionKind
    repository: str
    pipeline: str
    job: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)
    title: str = ""
    evidence: tuple[str, ...] = ()
    expected_benefit: float = 0.0  # runner-minutes saved per week


def class_prevented(recommendation: Recommendation) -> FailureClass:
    kind = recommendation.kind
    if kind is ActionKind.ESCALATE:
        if recommendation.parameters.get("dependency"):
            return FailureClass.DEPENDENCY_FETCH
        return FailureClass.TIMEOUT  # a drifting duration ends in timeouts
    if (
        kind is ActionKind.RAISE_RESOURCE_LIMIT
        and recommendation.parameters.get("resource", "memory") != "memory"
    ):
        return FailureClass.TIMEOUT
    return CLASS_PREVENTED[kind]


def plan_id_for_recommendation(tenant: str, recommendation_id: str) -> str:
    digest = hashlib.sha256(f"{tenant}\x00recommendation\x00{recommendation_id}".encode()).hexdigest()
    return f"plan-{digest[:20]}"


def validate_recommendation(recommendation: Recommendation) -> None:
    """Raise InvalidArgument naming the first field (as `recommendation.<field>`) that is wrong."""
    if not recommendation.recommendation_id.strip():
        raise InvalidArgument(
            f"{FIELD}.recommendation_id", "is required (as Predictor.Recommend returned it)"
        )
    if recommendation.kind not in CLASS_PREVENTED:
        allowed = ", ".join(k.name for k in CLASS_PREVENTED)
        raise InvalidArgument(
            f"{FIELD}.kind",
            f"{recommendation.kind.name} is not an action a recommendation "
            f"can propose; expected one of {allowed}",
        )
    for name in ("repository", "pipeline"):
        if not getattr(recommendation, name).strip():
            raise InvalidArgument(f"{FIELD}.{name}", "is required: the pipeline the action is for")
    if recommendation.kind is ActionKind.QUARANTINE_TEST and not _test_name(recommendation):
        raise InvalidArgument(f"{FIELD}.parameters.test", "QUARANTINE_TEST needs the test to quarantine")
    if recommendation.kind is ActionKind.RAISE_RESOURCE_LIMIT:
        _new_limit(recommendation)


def _test_name(recommendation: Recommendation) -> str:
    return (recommendation.parameters.get("test") or recommendation.parameters.get("test_name") or "").strip()


def _limit(recommendation: Recommendation, name: str) -> int | None:
    text = recommendation.parameters.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"{FIELD}.parameters.{name}", f"must be a number of MB, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(f"{FIELD}.parameters.{name}", f"must be > 0 MB, got {text!r}")
    return int(value)


def _current_limit(recommendation: Recommendation) -> int | None:
    return _limit(recommendation, "current_limit_mb")


def _new_limit(recommendation: Recommendation) -> int:
    name = "memory_limit_mb" if "memory_limit_mb" in recommendation.parameters else "memory_mb"
    new = _limit(recommendation, name)
    if new is None:
        raise InvalidArgument(
            f"{FIELD}.parameters.memory_limit_mb", "RAISE_RESOURCE_LIMIT needs the new limit in MB"
        )
    current = _current_limit(recommendation)
    if current is not None and new <= current:
        raise InvalidArgument(
            f"{FIELD}.parameters.{name}", f"must be above the current limit {current} MB, got {new}"
        )
    return new


def _parameters(recommendation: Recommendation, model: CostModel) -> dict[str, str]:
    """The executor's parameters for the action (costs.PARAMETER_NAMES), from the recommendation's."""
    kind = recommendation.kind
    if kind is ActionKind.RAISE_RESOURCE_LIMIT:
        new = _new_limit(recommendation)
        if new > model.max_memory_mb:
            raise FailedPrecondition(
                f"{FIELD}.parameters.memory_limit_mb: {new} MB is above the ceiling of "
                f"{model.max_memory_mb} MB",
                reason="ABOVE_CEILING",
            )
        return {"memory_mb": str(new)}
    if kind is ActionKind.QUARANTINE_TEST:
        return {"test_name": _test_name(recommendation)}
    if kind is ActionKind.RETRY_ON_FRESH_RUNNER:
        return {"drain_runner": recommendation.parameters.get("runner", "")}
    if kind is ActionKind.ESCALATE:
        return {"reason": _escalation_reason(recommendation)}
    return {}


def _escalation_reason(recommendation: Recommendation) -> str:
    what = recommendation.title or f"recommendation {recommendation.recommendation_id}"
    return f"accepted recommendation: {what}"[: MAX_EVIDENCE_CHARS * 2]


def check_policy(recommendation: Recommendation, policy: Policy, submit: bool, model: CostModel) -> None:
    """Raise FailedPrecondition (message naming the field) when the tenant's policy or a
    precondition forbids accepting the recommendation as asked."""
    kind = recommendation.kind
    failure_class = policy.failure_class
    if kind is not ActionKind.ESCALATE:
        if kind not in policy.allowed_actions:
            allowed = ", ".join(a.name for a in policy.allowed_actions) or "none"
            raise FailedPrecondition(
                f"{FIELD}.kind: the tenant's {failure_class.name} policy does not allow {kind.name} "
                f"(allowed: {allowed}); change the policy with SetPolicy to accept this recommendation",
                reason="POLICY_FORBIDS_ACTION",
            )
        context = CandidateContext(
            failure_class=failure_class,
            attempt=0,
            max_attempts=policy.max_attempts,
            flaky_test=_test_name(recommendation) or None,
            runner=recommendation.parameters.get("runner", ""),
            memory_limit_mb=_current_limit(recommendation),
        )
        reason = why_not_allowed(kind, context, model)
        if reason:
            raise FailedPrecondition(f"{FIELD}.kind: {reason}", reason="PRECONDITION")
    if submit and policy.requires_human_approval:
        raise FailedPrecondition(
            f"submit: the tenant's {failure_class.name} policy requires human approval; accept it with "
            "submit=false and submit the stored plan once a human has approved it",
            reason="APPROVAL_REQUIRED",
        )


def plan_recommendation(
    tenant: str,
    recommendation: Recommendation,
    policy: Policy,
    stats: StatsSource,
    *,
    submit: bool = False,
    now: float | None = None,
    cost_model: CostModel | None = None,
) -> Plan:
    """The plan that carries out `recommendation` under `policy` (the policy of
    `class_prevented(recommendation)`), or InvalidArgument / FailedPrecondition naming the field."""
    if not tenant:
        raise InvalidArgument("tenant", "must be set")
    validate_recommendation(recommendation)
    failure_class = class_prevented(recommendation)
    if policy.failure_class is not failure_class:
        raise InvalidArgument(
            "policy.failure_class",
            f"{policy.failure_class.name} is not the class this recommendation prevents "
            f"({failure_class.name})",
        )
    model = cost_model or CostModel()
    at = time.time() if now is None else now
    check_policy(recommendation, policy, submit, model)
    kind = recommendation.kind
    subject = recommendation.recommendation_id
    actions: list[PlannedAction] = []
    estimate = 0.0
    if kind is not ActionKind.ESCALATE:
        evidence = stats.evidence_for(tenant, failure_class, "", at)
        estimate = posterior(policy.prior_for(kind), evidence.by_action.get(kind), None).mean
        cost = estimate_cost(kind, 0.0, model, _current_limit(recommendation))
        actions.append(
            PlannedAction(
                kind=kind,
                parameters=_parameters(recommendation, model),
                expected_success=estimate,
                expected_minutes=cost.runner_minutes,
                expected_usd=cost.usd,
                idempotency_key=idempotency_key(subject, kind, 1),
                attempt=1,
                if_previous_failed=False,
                outcomes_seen=evidence.by_action[kind].outcomes if kind in evidence.by_action else 0,
            )
        )
    escalation = (
        _escalation_reason(recommendation)
        if kind is ActionKind.ESCALATE
        else f"the accepted recommendation's {kind.name} did not work"
    )
    actions.append(
        PlannedAction(
            kind=ActionKind.ESCALATE,
            parameters={"reason": escalation},
            expected_success=0.0,
            expected_minutes=0.0,
            expected_usd=0.0,
            idempotency_key=idempotency_key(subject, ActionKind.ESCALATE, 1),
            attempt=1,
            if_previous_failed=bool(actions),
        )
    )
    plan = Plan(
        plan_id=plan_id_for_recommendation(tenant, subject),
        tenant=tenant,
        failure_id=subject,
        failure_class=failure_class,
        cluster_id="",
        actions=tuple(actions),
        expected_success=estimate,
        expected_minutes=sum(a.expected_minutes for a in actions),
        expected_usd=sum(a.expected_usd for a in actions),
        expected_human_minutes=(model.human_minutes_per_escalation * (1.0 - estimate)),
        requires_approval=policy.requires_human_approval,
        policy_rule=policy.describe(),
        rationale="",
        escalation_reason=escalation if kind is ActionKind.ESCALATE else "",
        created_at=at,
    )
    return dataclasses.replace(plan, rationale=rationale(recommendation, plan))


def rationale(recommendation: Recommendation, plan: Plan) -> str:
    where = f"{recommendation.repository}/{recommendation.pipeline}"
    if recommendation.job:
        where += f":{recommendation.job}"
    title = recommendation.title or recommendation.kind.name
    lines = [
        f"Accepted the predictor's recommendation {recommendation.recommendation_id} for {where}: {title}."
    ]
    quoted = [e.strip()[:MAX_EVIDENCE_CHARS] for e in recommendation.evidence[:MAX_EVIDENCE] if e.strip()]
    if quoted:
        lines.append("Evidence: " + " | ".join(f'"{q}"' for q in quoted) + ".")
    else:
        lines.append("The recommendation quoted no evidence.")
    if recommendation.expected_benefit > 0:
        lines.append(f"Expected benefit: about {recommendation.expected_benefit:.1f} runner-minutes a week.")
    lines.append(f"Policy rule applied: {plan.policy_rule}.")
    steps = [a for a in plan.actions if a.kind is not ActionKind.ESCALATE]
    if steps:
        step = steps[0]
        params = ", ".join(f"{k}={v}" for k, v in step.parameters.items() if v)
        described = step.kind.name + (f" ({params})" if params else "")
        lines.append(
            f"Plan: {described}; escalate to a human if it does not work. "
            f"Expected to work {plan.expected_success:.0%} of the time."
        )
    else:
        lines.append("Plan: tell a human; no automatic action carries this recommendation out.")
    if plan.requires_approval:
        lines.append("A human must approve this plan before it runs.")
    return "\n".join(lines)
