"""What each healing action needs, what it costs, and when it is not allowed.

Every action kind has a small, fixed set of parameters (the executor needs them to act):

    RETRY                  (none)
    RETRY_ON_FRESH_RUNNER  drain_runner      the runner to take out of rotation for the re-run
    CLEAR_CACHE            (none)
    RAISE_RESOURCE_LIMIT   memory_mb         the new memory limit for the re-run
    QUARANTINE_TEST        test_name         the flaky test to skip until it is fixed
    ROLLBACK               target_revision   the last revision known to be good
    ESCALATE               reason            why a human is needed

Costs are estimated from the failed job's duration: a re-run costs about as many runner
minutes as the job took, money is runner minutes x the price of a runner minute (a bigger
runner costs more per minute), and escalation costs human minutes instead.

Preconditions are functions returning the reason a candidate is not allowed, or None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.common.vocabulary import GENUINE_BREAKS, ActionKind, FailureClass

# Actions that run the same code again. Running a genuine break again cannot heal it:
# it only spends runners and hides the break.
RETRY_ACTIONS: frozenset[ActionKind] = frozenset(
    {ActionKind.RETRY, ActionKind.RETRY_ON_FRESH_RUNNER, ActionKind.CLEAR_CACHE}
)
# Everything that re-runs the job (and so counts against the attempt limit).
RERUN_ACTIONS: frozenset[ActionKind] = RETRY_ACTIONS | {
    ActionKind.RAISE_RESOURCE_LIMIT,
    ActionKind.QUARANTINE_TEST,
}
# Actions that never apply to a genuine break: all of them re-run broken code, and
# quarantining a genuinely failing test would hide the break.
NEVER_FOR_GENUINE_BREAKS: frozenset[ActionKind] = RERUN_ACTIONS

PARAMETER_NAMES: Mapping[ActionKind, tuple[str, ...]] = {
    ActionKind.RETRY: (),
    ActionKind.RETRY_ON_FRESH_RUNNER: ("drain_runner",),
    ActionKind.CLEAR_CACHE: (),
    ActionKind.RAISE_RESOURCE_LIMIT: ("memory_mb",),
    ActionKind.QUARANTINE_TEST: ("test_name",),
    ActionKind.ROLLBACK: ("target_revision",),
    ActionKind.ESCALATE: ("reason",),
}


@dataclass(frozen=True)
class CostModel:
    """Prices and overheads used to estimate what an action costs.

    Defaults: a 2-vCPU Linux runner minute at GitHub's list price, an engineer's
    loaded cost, and half an hour of human attention per escalation.
    """

    usd_per_runner_minute: float = 0.008
    fresh_runner_overhead_minutes: float = 2.0
    # A re-run after clearing the cache rebuilds it, so it runs slower.
    cold_cache_factor: float = 1.3
    human_minutes_per_escalation: float = 30.0
    usd_per_human_minute: float = 1.5
    default_memory_mb: int = 4096
    memory_raise_factor: float = 2.0
    max_memory_mb: int = 32768

    @property
    def healing_benefit_usd(self) -> float:
        """What healing without a human saves: the escalation it avoids."""
        return self.human_minutes_per_escalation * self.usd_per_human_minute


@dataclass(frozen=True)
class ActionCost:
    runner_minutes: float
    usd: float
    human_minutes: float

    def total_usd(self, model: CostModel) -> float:
        """Runner money plus the price of the human minutes, for comparing actions."""
        return self.usd + self.human_minutes * model.usd_per_human_minute


@dataclass(frozen=True)
class CandidateContext:
    """What the preconditions and parameter builders need to know about one failure."""

    failure_class: FailureClass
    attempt: int
    max_attempts: int
    flaky_test: str | None = None
    last_good_revision: str | None = None
    runner: str = ""
    memory_limit_mb: int | None = None


def raised_memory_mb(current_mb: int | None, model: CostModel) -> int:
    """The next memory limit: the current one times the raise factor, capped."""
    base = current_mb if current_mb and current_mb > 0 else model.default_memory_mb
    return min(int(base * model.memory_raise_factor), model.max_memory_mb)


def estimate_cost(
    kind: ActionKind,
    job_duration_s: float,
    model: CostModel,
    memory_limit_mb: int | None = None,
) -> ActionCost:
    """Runner minutes, money and human minutes one action is expected to consume."""
    job_minutes = max(job_duration_s, 0.0) / 60.0
    price = model.usd_per_runner_minute
    if kind is ActionKind.ESCALATE:
        return ActionCost(0.0, 0.0, model.human_minutes_per_escalation)
    if kind is ActionKind.RETRY_ON_FRESH_RUNNER:
        minutes = job_minutes + model.fresh_runner_overhead_minutes
        return ActionCost(minutes, minutes * price, 0.0)
    if kind is ActionKind.CLEAR_CACHE:
        minutes = job_minutes * model.cold_cache_factor
        return ActionCost(minutes, minutes * price, 0.0)
    if kind is ActionKind.RAISE_RESOURCE_LIMIT:
        # Runner price scales with its memory: twice the memory, twice the price per minute.
        current = memory_limit_mb if memory_limit_mb and memory_limit_mb > 0 else model.default_memory_mb
        size_factor = raised_memory_mb(memory_limit_mb, model) / current
        return ActionCost(job_minutes, job_minutes * price * size_factor, 0.0)
    if kind in (ActionKind.RETRY, ActionKind.QUARANTINE_TEST, ActionKind.ROLLBACK):
        return ActionCost(job_minutes, job_minutes * price, 0.0)
    raise ValueError(f"no cost model for action {kind!r}")


# --- preconditions: each returns why the candidate is not allowed, or None -------------


def genuine_break_rerun(kind: ActionKind, ctx: CandidateContext) -> str | None:
    if ctx.failure_class in GENUINE_BREAKS and kind in NEVER_FOR_GENUINE_BREAKS:
        return (
            f"{kind.name} is never allowed for {ctx.failure_class.name} "
            "(a genuine break: re-running it wastes runners and hides the break)"
        )
    return None


def quarantine_without_flaky_evidence(kind: ActionKind, ctx: CandidateContext) -> str | None:
    if kind is ActionKind.QUARANTINE_TEST and not ctx.flaky_test:
        return "QUARANTINE_TEST needs flaky evidence for a named test, and there is none"
    return None


def attempts_exhausted(kind: ActionKind, ctx: CandidateContext) -> str | None:
    if kind in RERUN_ACTIONS and ctx.attempt >= ctx.max_attempts:
        return (
            f"{kind.name} would be healing attempt {ctx.attempt + 1}, "
            f"but the policy allows at most {ctx.max_attempts} per run"
        )
    return None


def rollback_without_good_revision(kind: ActionKind, ctx: CandidateContext) -> str | None:
    if kind is ActionKind.ROLLBACK and not ctx.last_good_revision:
        return "ROLLBACK needs a last good revision, and none is known"
    return None


def memory_at_ceiling(kind: ActionKind, ctx: CandidateContext, model: CostModel) -> str | None:
    if kind is ActionKind.RAISE_RESOURCE_LIMIT:
        current = ctx.memory_limit_mb or model.default_memory_mb
        if current >= model.max_memory_mb:
            return f"RAISE_RESOURCE_LIMIT: memory is already at the ceiling of {model.max_memory_mb} MB"
    return None


PRECONDITIONS: tuple[Callable[[ActionKind, CandidateContext], str | None], ...] = (
    genuine_break_rerun,
    quarantine_without_flaky_evidence,
    attempts_exhausted,
    rollback_without_good_revision,
)


def why_not_allowed(kind: ActionKind, ctx: CandidateContext, model: CostModel) -> str | None:
    """The first precondition the candidate breaks, or None when it may be planned."""
    for check in PRECONDITIONS:
        reason = check(kind, ctx)
        if reason is not None:
            return reason
    return memory_at_ceiling(kind, ctx, model)


def action_parameters(kind: ActionKind, ctx: CandidateContext, model: CostModel) -> dict[str, str]:
    """The parameters the executor needs for this action (see the table at the top)."""
    if kind is ActionKind.RETRY_ON_FRESH_RUNNER:
        return {"drain_runner": ctx.runner}
    if kind is ActionKind.RAISE_RESOURCE_LIMIT:
        return {"memory_mb": str(raised_memory_mb(ctx.memory_limit_mb, model))}
    if kind is ActionKind.QUARANTINE_TEST:
        return {"test_name": ctx.flaky_test or ""}
    if kind is ActionKind.ROLLBACK:
        return {"target_revision": ctx.last_good_revision or ""}
    return {}
