"""Plan the healing of one failed job: which actions, in what order, and why.

A plan is an ordered chain. The executor runs the first action; each later action with
``if_previous_failed`` runs only if everything before it failed to heal the job. The
chain always ends with ESCALATE, so a human hears about every failure the planner could
not heal. For a genuine break with ROLLBACK allowed, the rollback restores a green
pipeline and the escalation runs regardless (``if_previous_failed=False``): the bug
still needs a human.

Ranking: each allowed action that passes its preconditions gets a success estimate from
its learned Beta posterior (a Thompson draw when the policy explores, else the mean),
and is ordered by expected value = p(success) x benefit - cost; ties keep the policy's
order. The chain is cut to the attempts and the budget the policy leaves.

``expected_success`` of a planned action is the posterior mean probability that it heals
the job without a human (0 for ESCALATE); the plan's is the chance that some action in
the chain heals it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.vocabulary import GENUINE_BREAKS, ActionKind, FailureClass
from services.planner.costs import (
    RERUN_ACTIONS,
    ActionCost,
    CandidateContext,
    CostModel,
    action_parameters,
    estimate_cost,
    why_not_allowed,
)
from services.planner.learning import (
    Evidence,
    Outcome,
    Posterior,
    StatsSource,
    expected_value,
    posterior,
    success_estimate,
)
from services.planner.policy import Policy, parse_action, parse_failure_class

log = logging.getLogger(__name__)

MAX_EVIDENCE_LINES = 3
# Actions worth repeating within one plan when attempts are left: they re-run unchanged.
# (A cache cleared, a limit raised or a test quarantined once is done.)
REPEATABLE_ACTIONS: frozenset[ActionKind] = frozenset({ActionKind.RETRY, ActionKind.RETRY_ON_FRESH_RUNNER})
MAX_EVIDENCE_CHARS = 200
MAX_STEP_CHARS = 80  # of the failed command quoted in a rationale


@dataclass(frozen=True)
class PlanRequest:
    tenant: str
    failure_id: str
    failure_class: FailureClass
    confidence: float
    evidence: tuple[str, ...] = ()
    cluster_id: str = ""
    # Healing attempts already made for this job run (0 on the first failure; a CI
    # provider's 1-based run attempt N arrives here as N - 1).
    attempt: int = 0
    flaky_test: str | None = None
    last_good_revision: str | None = None
    job_duration_s: float = 0.0
    risk: float | None = None
    risk_summary: str = ""
    runner: str = ""
    memory_limit_mb: int | None = None
    # From the detector, for the rationale only: the failed step's command (else its name)
    # and exit code, and the log line the diagnosis rests on (1-based; 0 and "" when none).
    failed_step: str = ""
    failed_exit_code: int | None = None
    decisive_line_number: int = 0
    decisive_line: str = ""


@dataclass(frozen=True)
class PlannedAction:
    kind: ActionKind
    parameters: dict[str, str]
    expected_success: float
    expected_minutes: float
    expected_usd: float
    idempotency_key: str
    # The healing attempt this action is (1-based); ESCALATE and ROLLBACK carry the
    # attempt they would follow.
    attempt: int
    if_previous_failed: bool
    # How many outcomes the success estimate rests on (class-wide, in this tenant).
    outcomes_seen: int = 0


@dataclass(frozen=True)
class Plan:
    plan_id: str
    tenant: str
    failure_id: str
    failure_class: FailureClass
    cluster_id: str
    actions: tuple[PlannedAction, ...]
    expected_success: float
    expected_minutes: float
    expected_usd: float
    expected_human_minutes: float
    requires_approval: bool
    policy_rule: str
    rationale: str
    escalation_reason: str = ""
    created_at: float = 0.0
    # Why allowed actions were left out (action name -> reason), for ExplainPlan.
    not_planned: dict[str, str] = field(default_factory=dict)

    @property
    def first_action(self) -> PlannedAction:
        return self.actions[0]

    def action_by_key(self, idempotency_key: str) -> PlannedAction | None:
        for action in self.actions:
            if action.idempotency_key == idempotency_key:
                return action
        return None


def idempotency_key(failure_id: str, kind: ActionKind, attempt: int) -> str:
    """Stable for the same failure, action and attempt: re-planning never runs it twice."""
    digest = hashlib.sha256(f"{failure_id}\x00{kind.name}\x00{attempt}".encode()).hexdigest()
    return f"hg-{digest[:24]}"


def plan_id_for(tenant: str, failure_id: str, attempt: int) -> str:
    digest = hashlib.sha256(f"{tenant}\x00{failure_id}\x00{attempt}".encode()).hexdigest()
    return f"plan-{digest[:20]}"


def validate_request(request: PlanRequest) -> None:
    """Raise InvalidArgument naming the first bad field."""
    if not request.tenant:
        raise InvalidArgument("tenant", "must be set")
    if not request.failure_id:
        raise InvalidArgument("failure_id", "must be set")
    parse_failure_class(request.failure_class, "failure_class")
    if not 0.0 <= request.confidence <= 1.0:
        raise InvalidArgument("confidence", f"must be in [0, 1], got {request.confidence!r}")
    if request.attempt < 0:
        raise InvalidArgument("attempt", f"must be >= 0, got {request.attempt}")
    if not request.job_duration_s >= 0:
        raise InvalidArgument("job_duration_s", f"must be >= 0, got {request.job_duration_s!r}")
    if request.risk is not None and not 0.0 <= request.risk <= 1.0:
        raise InvalidArgument("risk", f"must be in [0, 1] or unset, got {request.risk!r}")
    if request.memory_limit_mb is not None and request.memory_limit_mb <= 0:
        raise InvalidArgument("memory_limit_mb", f"must be > 0 or unset, got {request.memory_limit_mb}")


@dataclass(frozen=True)
class _Candidate:
    kind: ActionKind
    post: Posterior
    estimate: float
    cost: ActionCost
    value: float
    policy_rank: int


def plan_healing(
    request: PlanRequest,
    policy: Policy,
    stats: StatsSource,
    rng: random.Random,
    *,
    now: float | None = None,
    cost_model: CostModel | None = None,
) -> Plan:
    """Decide how to heal one failure under `policy`, using what `stats` has learned."""
    validate_request(request)
    if policy.failure_class is not request.failure_class:
        raise InvalidArgument(
            "policy.failure_class",
            f"{policy.failure_class.name} does not match the failure's class {request.failure_class.name}",
        )
    model = cost_model or CostModel()
    at = time.time() if now is None else now
    evidence = stats.evidence_for(request.tenant, request.failure_class, request.cluster_id, at)

    not_planned: dict[str, str] = {}
    escalation_reason = _reason_to_escalate_outright(request, policy)
    candidates: list[_Candidate] = []
    if not escalation_reason:
        candidates = _rank_candidates(request, policy, evidence.by_action, evidence.by_cluster_action,
                                      rng, model, not_planned)
    chain = _build_chain(request, policy, candidates, model, not_planned)
    if not chain and not escalation_reason and request.failure_class in GENUINE_BREAKS:
        escalation_reason = f"{request.failure_class.name} is a genuine break: a human must fix the code"
    elif not chain and not escalation_reason:
        escalation_reason = (
            "no healing action is allowed: " + "; ".join(not_planned.values())
            if not_planned else f"the policy for {request.failure_class.name} allows no healing action"
        )
    actions = _with_escalation(request, chain, model, escalation_reason)

    p_fail_all = 1.0
    exp_minutes = exp_usd = exp_human = 0.0
    for action in actions:
        reach = 1.0 if not action.if_previous_failed else p_fail_all
        exp_minutes += reach * action.expected_minutes
        exp_usd += reach * action.expected_usd
        if action.kind is ActionKind.ESCALATE:
            exp_human += reach * model.human_minutes_per_escalation
        p_fail_all *= 1.0 - action.expected_success
    plan = Plan(
        plan_id=plan_id_for(request.tenant, request.failure_id, request.attempt),
        tenant=request.tenant,
        failure_id=request.failure_id,
        failure_class=request.failure_class,
        cluster_id=request.cluster_id,
        actions=tuple(actions),
        expected_success=1.0 - p_fail_all,
        expected_minutes=exp_minutes,
        expected_usd=exp_usd,
        expected_human_minutes=exp_human,
        requires_approval=policy.requires_human_approval,
        policy_rule=policy.describe(),
        rationale="",
        escalation_reason=escalation_reason,
        created_at=at,
        not_planned=not_planned,
    )
    rationale = _rationale(request, policy, plan, candidates, evidence.by_action)
    log.debug("plan %s for %s: %s", plan.plan_id, request.failure_id, [a.kind.name for a in actions])
    return _replace_rationale(plan, rationale)


def _reason_to_escalate_outright(request: PlanRequest, policy: Policy) -> str:
    if request.failure_class is FailureClass.UNKNOWN:
        return "the failure could not be classified (UNKNOWN), so no automatic action is safe"
    if request.confidence < policy.min_confidence:
        return (
            f"diagnosis confidence {request.confidence:.2f} is below the policy minimum "
            f"{policy.min_confidence:.2f}, so acting on {request.failure_class.name} is not safe"
        )
    return ""


def _context(request: PlanRequest, policy: Policy, attempt: int) -> CandidateContext:
    return CandidateContext(
        failure_class=request.failure_class,
        attempt=attempt,
        max_attempts=policy.max_attempts,
        flaky_test=request.flaky_test,
        last_good_revision=request.last_good_revision,
        runner=request.runner,
        memory_limit_mb=request.memory_limit_mb,
    )


def _rank_candidates(
    request: PlanRequest,
    policy: Policy,
    class_evidence: Mapping[ActionKind, Evidence],
    cluster_evidence: Mapping[ActionKind, Evidence],
    rng: random.Random,
    model: CostModel,
    not_planned: dict[str, str],
) -> list[_Candidate]:
    ctx = _context(request, policy, request.attempt)
    candidates: list[_Candidate] = []
    for rank, kind in enumerate(policy.allowed_actions):
        if kind is ActionKind.ESCALATE:
            continue  # always the last step anyway
        reason = why_not_allowed(kind, ctx, model)
        if reason:
            not_planned[kind.name] = reason
            continue
        post = posterior(policy.prior_for(kind), class_evidence.get(kind), cluster_evidence.get(kind))
        estimate = success_estimate(post, rng, policy.exploration)
        cost = estimate_cost(kind, request.job_duration_s, model, request.memory_limit_mb)
        value = expected_value(estimate, cost, model)
        if expected_value(post.mean, cost, model) <= 0 and value <= 0:
            not_planned[kind.name] = (
                f"not worth it: success {post.mean:.0%} x ${model.healing_benefit_usd:.2f} saved "
                f"does not cover ${cost.total_usd(model):.2f}"
            )
            continue
        candidates.append(_Candidate(kind, post, estimate, cost, value, rank))
    candidates.sort(key=lambda c: (-c.value, c.policy_rank))
    return candidates


def _build_chain(
    request: PlanRequest,
    policy: Policy,
    candidates: Sequence[_Candidate],
    model: CostModel,
    not_planned: dict[str, str],
) -> list[PlannedAction]:
    chain: list[PlannedAction] = []
    attempt = request.attempt
    minutes = usd = 0.0
    # A rollback of a genuine break comes first: it restores a green pipeline while a
    # human fixes the bug.
    ordered = sorted(candidates, key=lambda c: c.kind is not ActionKind.ROLLBACK) \
        if request.failure_class in GENUINE_BREAKS else list(candidates)
    # Each distinct action once, best first; attempts left over go to repeating the
    # plain retries (a flaky test often passes on the second re-run).
    repeats = [c for c in ordered if c.kind in REPEATABLE_ACTIONS]
    sequence = ordered + repeats * max(policy.max_attempts - request.attempt, 0)
    planned: set[ActionKind] = set()

    def refuse(kind: ActionKind, reason: str) -> None:
        if kind not in planned:  # a repeat that does not fit is not worth mentioning
            not_planned.setdefault(kind.name, reason)

    for cand in sequence:
        reason = why_not_allowed(cand.kind, _context(request, policy, attempt), model)
        if reason:
            refuse(cand.kind, reason)
            continue
        if minutes + cand.cost.runner_minutes > policy.budget_minutes + 1e-9:
            refuse(cand.kind, f"over budget: {minutes + cand.cost.runner_minutes:.1f} runner-minutes "
                              f"> {policy.budget_minutes:g} allowed")
            continue
        if usd + cand.cost.usd > policy.budget_usd + 1e-9:
            refuse(cand.kind, f"over budget: ${usd + cand.cost.usd:.2f} > ${policy.budget_usd:g} allowed")
            continue
        planned.add(cand.kind)
        minutes += cand.cost.runner_minutes
        usd += cand.cost.usd
        step_attempt = attempt + 1 if cand.kind in RERUN_ACTIONS else attempt
        chain.append(
            PlannedAction(
                kind=cand.kind,
                parameters=action_parameters(cand.kind, _context(request, policy, attempt), model),
                expected_success=cand.post.mean,
                expected_minutes=cand.cost.runner_minutes,
                expected_usd=cand.cost.usd,
                idempotency_key=idempotency_key(request.failure_id, cand.kind, step_attempt),
                attempt=step_attempt,
                if_previous_failed=bool(chain),
                outcomes_seen=cand.post.class_outcomes,
            )
        )
        attempt = step_attempt
    return chain


def _with_escalation(
    request: PlanRequest, chain: list[PlannedAction], model: CostModel, reason: str
) -> list[PlannedAction]:
    genuine = request.failure_class in GENUINE_BREAKS
    if not reason:
        reason = (
            f"{request.failure_class.name} is a genuine break: a human must fix the code"
            if genuine else "the healing actions above did not heal the job"
        )
    attempt = chain[-1].attempt if chain else request.attempt
    cost = estimate_cost(ActionKind.ESCALATE, request.job_duration_s, model)
    escalate = PlannedAction(
        kind=ActionKind.ESCALATE,
        parameters={"reason": reason},
        expected_success=0.0,
        expected_minutes=cost.runner_minutes,
        expected_usd=cost.usd,
        idempotency_key=idempotency_key(request.failure_id, ActionKind.ESCALATE, attempt),
        attempt=attempt,
        # A genuine break goes to a human even when a rollback turned the pipeline green.
        if_previous_failed=bool(chain) and not genuine,
    )
    return [*chain, escalate]


def _rate_phrase(kind: ActionKind, post: Posterior, policy: Policy, request: PlanRequest) -> str:
    rate = f"{kind.name} {post.mean:.0%}"
    if post.class_outcomes == 0 and post.cluster_outcomes == 0:
        prior = policy.prior_for(kind)
        return f"{rate} (prior Beta({prior.alpha:g}, {prior.beta:g}) only, no outcomes yet)"
    parts = [
        f"{post.class_successes:.1f} of {post.class_successes + post.class_failures:.1f} decayed weight "
        f"successful over {post.class_outcomes} outcome(s) for {request.failure_class.name} in this tenant"
    ]
    if post.cluster_outcomes:
        parts.append(
            f"{post.cluster_successes:.1f} of {post.cluster_successes + post.cluster_failures:.1f} "
            f"over {post.cluster_outcomes} in cluster {request.cluster_id}"
        )
    return f"{rate} ({'; '.join(parts)})"


def _rationale(
    request: PlanRequest,
    policy: Policy,
    plan: Plan,
    candidates: Sequence[_Candidate],
    class_evidence: Mapping[ActionKind, Evidence],
) -> str:
    lines: list[str] = []
    quoted = [
        line.strip()[:MAX_EVIDENCE_CHARS] for line in request.evidence[:MAX_EVIDENCE_LINES] if line.strip()
    ]
    diagnosis = f"Diagnosed {request.failure_class.name} (confidence {request.confidence:.2f})"
    if request.cluster_id:
        diagnosis += f", cluster {request.cluster_id}"
    if quoted:
        diagnosis += " from the evidence: " + " | ".join(f'"{q}"' for q in quoted)
    else:
        diagnosis += "; the detector quoted no evidence lines"
    lines.append(diagnosis + ".")
    where = _where_it_failed(request)
    if where:
        lines.append(where)
    if candidates:
        how = "Thompson sampling, exploration on" if policy.exploration else "posterior mean, exploration off"
        rates = "; ".join(_rate_phrase(c.kind, c.post, policy, request) for c in candidates)
        lines.append(f"Learned success rates, ranked by expected value ({how}): {rates}.")
    if request.risk_summary:
        lines.append(f"Predictor: {request.risk_summary}")
    elif request.risk is not None:
        lines.append(f"Predictor: the next run of this pipeline fails with probability {request.risk:.0%}.")
    else:
        lines.append("Predictor: no risk forecast was available.")
    lines.append(f"Policy rule applied: {plan.policy_rule}.")
    if plan.not_planned:
        lines.append(
            "Not planned: " + "; ".join(f"{name}: {why}" for name, why in plan.not_planned.items()) + "."
        )
    steps = [a for a in plan.actions if a.kind is not ActionKind.ESCALATE]
    if steps:
        described = ", then if that fails ".join(_describe_step(a) for a in steps)
        lines.append(
            f"Plan: {described}; escalate to a human if the job is still failing. "
            f"Expected to heal {plan.expected_success:.0%} of the time for about "
            f"{plan.expected_minutes:.1f} runner-minutes (${plan.expected_usd:.2f})."
        )
        if request.failure_class in GENUINE_BREAKS:
            lines[-1] = f"Plan: {_describe_step(steps[0])}, and escalate to a human to fix the break."
    else:
        lines.append(f"Plan: escalate to a human, because {plan.escalation_reason}.")
    if plan.requires_approval:
        lines.append("A human must approve this plan before it runs.")
    return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _where_it_failed(request: PlanRequest) -> str:
    """One short sentence: the failed step and the decisive log line, when the detector found them."""
    parts: list[str] = []
    if request.failed_step.strip():
        step = f"Failed step: `{_clip(request.failed_step, MAX_STEP_CHARS)}`"
        if request.failed_exit_code is not None:
            step += f" (exit {request.failed_exit_code})"
        parts.append(step)
    if request.decisive_line.strip():
        at = f" {request.decisive_line_number}" if request.decisive_line_number > 0 else ""
        parts.append(f'decisive line{at}: "{_clip(request.decisive_line, MAX_EVIDENCE_CHARS)}"')
    if not parts:
        return ""
    sentence = "; ".join(parts) + "."
    return sentence[0].upper() + sentence[1:]


def _describe_step(action: PlannedAction) -> str:
    params = ", ".join(f"{k}={v}" for k, v in action.parameters.items() if v)
    return f"{action.kind.name}" + (f" ({params})" if params else "")


def _replace_rationale(plan: Plan, rationale: str) -> Plan:
    return dataclasses.replace(plan, rationale=rationale)


# --- outcomes -----------------------------------------------------------------------------


def outcome_for(plan: Plan, idempotency_key: str, success: bool, outcome_id: str, at: float) -> Outcome:
    """The learning record for one executed action of `plan`.

    Raises NotFound when the plan has no action with that key (an outcome for an action
    that was never planned), FailedPrecondition for ESCALATE (nothing to learn: a human
    handled it), InvalidArgument for an empty outcome id.
    """
    if not outcome_id:
        raise InvalidArgument("outcome_id", "must be set (it makes reporting an outcome idempotent)")
    action = plan.action_by_key(idempotency_key)
    if action is None:
        raise NotFound(
            "action", idempotency_key,
            f"plan {plan.plan_id!r} has no action with idempotency key {idempotency_key!r}",
        )
    if action.kind is ActionKind.ESCALATE:
        raise FailedPrecondition(
            f"action {idempotency_key!r} is an escalation: its outcome is not a healing result to learn from"
        )
    return Outcome(
        outcome_id=outcome_id,
        tenant=plan.tenant,
        failure_class=plan.failure_class,
        cluster_id=plan.cluster_id,
        action=action.kind,
        success=success,
        at=at,
    )


@dataclass(frozen=True)
class LearnedEstimate:
    """What the planner now believes about one planned action: success mean and its evidence."""

    action: ActionKind
    posterior_mean: float
    evidence: float  # decayed weight of the class-wide outcomes it rests on


def learned_estimate(plan: Plan, idempotency_key: str, policy: Policy, stats: StatsSource,
                     now: float) -> LearnedEstimate:
    """The success estimate for the action of `plan` with that key, as the next plan would see it."""
    action = plan.action_by_key(idempotency_key)
    if action is None:
        raise NotFound(
            "action", idempotency_key,
            f"plan {plan.plan_id!r} has no action with idempotency key {idempotency_key!r}",
        )
    evidence = stats.evidence_for(plan.tenant, plan.failure_class, plan.cluster_id, now)
    post = posterior(policy.prior_for(action.kind), evidence.by_action.get(action.kind),
                     evidence.by_cluster_action.get(action.kind))
    return LearnedEstimate(action.kind, post.mean, post.class_successes + post.class_failures)


# --- serialisation (the store keeps plans as JSON) ----------------------------------------


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return {
        "plan_id": plan.plan_id,
        "tenant": plan.tenant,
        "failure_id": plan.failure_id,
        "failure_class": plan.failure_class.name,
        "cluster_id": plan.cluster_id,
        "actions": [
            {
                "kind": a.kind.name,
                "parameters": dict(a.parameters),
                "expected_success": a.expected_success,
                "expected_minutes": a.expected_minutes,
                "expected_usd": a.expected_usd,
                "idempotency_key": a.idempotency_key,
                "attempt": a.attempt,
                "if_previous_failed": a.if_previous_failed,
                "outcomes_seen": a.outcomes_seen,
            }
            for a in plan.actions
        ],
        "expected_success": plan.expected_success,
        "expected_minutes": plan.expected_minutes,
        "expected_usd": plan.expected_usd,
        "expected_human_minutes": plan.expected_human_minutes,
        "requires_approval": plan.requires_approval,
        "policy_rule": plan.policy_rule,
        "rationale": plan.rationale,
        "escalation_reason": plan.escalation_reason,
        "created_at": plan.created_at,
        "not_planned": dict(plan.not_planned),
    }


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    actions = tuple(
        PlannedAction(
            kind=parse_action(a["kind"], "plan.actions.kind"),
            parameters=dict(a["parameters"]),
            expected_success=float(a["expected_success"]),
            expected_minutes=float(a["expected_minutes"]),
            expected_usd=float(a["expected_usd"]),
            idempotency_key=a["idempotency_key"],
            attempt=int(a["attempt"]),
            if_previous_failed=bool(a["if_previous_failed"]),
            outcomes_seen=int(a.get("outcomes_seen", 0)),
        )
        for a in data["actions"]
    )
    return Plan(
        plan_id=data["plan_id"],
        tenant=data["tenant"],
        failure_id=data["failure_id"],
        failure_class=parse_failure_class(data["failure_class"], "plan.failure_class"),
        cluster_id=data["cluster_id"],
        actions=actions,
        expected_success=float(data["expected_success"]),
        expected_minutes=float(data["expected_minutes"]),
        expected_usd=float(data["expected_usd"]),
        expected_human_minutes=float(data["expected_human_minutes"]),
        requires_approval=bool(data["requires_approval"]),
        policy_rule=data["policy_rule"],
        rationale=data["rationale"],
        escalation_reason=data.get("escalation_reason", ""),
        created_at=float(data.get("created_at", 0.0)),
        not_planned=dict(data.get("not_planned", {})),
    )
