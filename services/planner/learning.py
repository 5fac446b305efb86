"""Learned success rates: a Beta posterior per (tenant, failure class, cluster, action).

Evidence is counted twice on purpose: once for the whole class (cluster "") and once for
the failure's cluster (the detector's group of failures with the same signature), so a
new cluster borrows what the class taught while an old one follows its own record.

Old evidence decays exponentially (half-life configurable) so that when the world
changes (a mirror starts serving corrupt caches, a runner image grows) the planner
follows within a few half-lives instead of trusting last quarter's statistics.

Outcomes are idempotent by outcome id: the same outcome reported twice counts once.
Exploration is Thompson sampling: the planner ranks actions by a draw from each
posterior (an injectable, seedable RNG), or by the posterior mean when a tenant turns
exploration off.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from services.common.vocabulary import ActionKind, FailureClass
from services.planner.costs import ActionCost, CostModel
from services.planner.policy import Prior

DEFAULT_HALF_LIFE_S = 14 * 24 * 3600.0
# How many outcomes' worth of weight the class-wide rate carries into a cluster's estimate.
CLUSTER_PRIOR_STRENGTH = 4.0
CLASS_WIDE = ""


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """The weight evidence keeps after `elapsed_s` (1.0 when no time passed or no decay)."""
    if half_life_s <= 0 or elapsed_s <= 0:
        return 1.0
    return 0.5 ** (elapsed_s / half_life_s)


@dataclass(frozen=True)
class Evidence:
    """Decayed success and failure weights, plus the raw number of outcomes ever seen."""

    successes: float = 0.0
    failures: float = 0.0
    outcomes: int = 0
    updated_at: float = 0.0

    @property
    def weight(self) -> float:
        return self.successes + self.failures

    def decayed_to(self, now: float, half_life_s: float) -> Evidence:
        factor = decay_factor(now - self.updated_at, half_life_s)
        return Evidence(self.successes * factor, self.failures * factor, self.outcomes, max(now, self.updated_at))

    def observe(self, success: bool, at: float, half_life_s: float) -> Evidence:
        """This evidence, decayed to `at`, plus one outcome."""
        now = self.decayed_to(at, half_life_s)
        return Evidence(
            now.successes + (1.0 if success else 0.0),
            now.failures + (0.0 if success else 1.0),
            now.outcomes + 1,
            now.updated_at,
        )


@dataclass(frozen=True)
class Posterior:
    alpha: float
    beta: float
    # What the estimate rests on, for the rationale.
    class_outcomes: int = 0
    cluster_outcomes: int = 0
    class_successes: float = 0.0
    class_failures: float = 0.0
    cluster_successes: float = 0.0
    cluster_failures: float = 0.0

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def sample(self, rng: random.Random) -> float:
        return rng.betavariate(self.alpha, self.beta)


def posterior(prior: Prior, class_evidence: Evidence | None, cluster_evidence: Evidence | None) -> Posterior:
    """Prior + class-wide evidence; then, for a known cluster, its own evidence on top.

    The cluster's estimate starts from the class-wide mean with the strength of a few
    outcomes, so a cluster's own record overrides the class after a handful of outcomes.
    """
    cls = class_evidence or Evidence()
    alpha = prior.alpha + cls.successes
    beta = prior.beta + cls.failures
    clu = cluster_evidence or Evidence()
    if clu.outcomes > 0:
        mean = alpha / (alpha + beta)
        strength = min(CLUSTER_PRIOR_STRENGTH, alpha + beta)
        alpha = mean * strength + clu.successes
        beta = (1.0 - mean) * strength + clu.failures
    return Posterior(
        alpha=max(alpha, 1e-6),
        beta=max(beta, 1e-6),
        class_outcomes=cls.outcomes,
        cluster_outcomes=clu.outcomes,
        class_successes=cls.successes,
        class_failures=cls.failures,
        cluster_successes=clu.successes,
        cluster_failures=clu.failures,
    )


def success_estimate(post: Posterior, rng: random.Random, explore: bool) -> float:
    """A Thompson draw when exploring, else the posterior mean."""
    return post.sample(rng) if explore else post.mean


def expected_value(p_success: float, cost: ActionCost, model: CostModel) -> float:
    """p(success) x benefit of healing without a human - what the action costs, in USD."""
    return p_success * model.healing_benefit_usd - cost.total_usd(model)


@dataclass(frozen=True)
class ClassEvidence:
    """Everything learned for one tenant and class: class-wide and for one cluster."""

    by_action: dict[ActionKind, Evidence] = field(default_factory=dict)
    by_cluster_action: dict[ActionKind, Evidence] = field(default_factory=dict)


class StatsSource(Protocol):
    """Where the planner reads learned evidence (the SQLite store, or `LearnedStats`)."""

    def evidence_for(
        self, tenant: str, failure_class: FailureClass, cluster_id: str, now: float
    ) -> ClassEvidence: ...


@dataclass(frozen=True)
class Outcome:
    """One reported result of one executed action."""

    outcome_id: str
    tenant: str
    failure_class: FailureClass
    cluster_id: str
    action: ActionKind
    success: bool
    at: float


StatsKey = tuple[str, FailureClass, str, ActionKind]


def keys_for(outcome: Outcome) -> list[StatsKey]:
    """The rows an outcome updates: class-wide, and its cluster when it has one."""
    keys: list[StatsKey] = [(outcome.tenant, outcome.failure_class, CLASS_WIDE, outcome.action)]
    if outcome.cluster_id:
        keys.append((outcome.tenant, outcome.failure_class, outcome.cluster_id, outcome.action))
    return keys


class LearnedStats:
    """In-memory learned statistics, for benchmarks and tests (the service uses the store)."""

    def __init__(self, half_life_s: float = DEFAULT_HALF_LIFE_S) -> None:
        self.half_life_s = half_life_s
        self._evidence: dict[StatsKey, Evidence] = {}
        self._seen: set[tuple[str, str]] = set()

    def record(self, outcome: Outcome) -> bool:
        """Count the outcome once; False when this outcome id was already counted."""
        seen_key = (outcome.tenant, outcome.outcome_id)
        if seen_key in self._seen:
            return False
        self._seen.add(seen_key)
        for key in keys_for(outcome):
            current = self._evidence.get(key, Evidence(updated_at=outcome.at))
            self._evidence[key] = current.observe(outcome.success, outcome.at, self.half_life_s)
        return True

    def record_all(self, outcomes: Iterable[Outcome]) -> int:
        return sum(self.record(o) for o in outcomes)

    def evidence_for(
        self, tenant: str, failure_class: FailureClass, cluster_id: str, now: float
    ) -> ClassEvidence:
        by_action: dict[ActionKind, Evidence] = {}
        by_cluster: dict[ActionKind, Evidence] = {}
        for action in ActionKind:
            found = self._evidence.get((tenant, failure_class, CLASS_WIDE, action))
            if found is not None:
                by_action[action] = found.decayed_to(now, self.half_life_s)
            if cluster_id:
                found = self._evidence.get((tenant, failure_class, cluster_id, action))
                if found is not None:
                    by_cluster[action] = found.decayed_to(now, self.half_life_s)
        return ClassEvidence(by_action, by_cluster)
