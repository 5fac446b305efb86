import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.vocabulary import ActionKind, FailureClass
from services.planner.costs import ActionCost, CostModel
from services.planner.learning import (
    Evidence,
    LearnedStats,
    Outcome,
    decay_factor,
    expected_value,
    posterior,
    success_estimate,
)
from services.planner.policy import Prior

DAY = 86400.0
OOM = FailureClass.OUT_OF_MEMORY


def outcome(i, success, action=ActionKind.RETRY, cluster="c1", at=0.0, tenant="t1"):
    return Outcome(f"o{i}", tenant, OOM, cluster, action, success, at)


def test_posterior_adds_outcomes_to_the_prior():
    stats = LearnedStats(half_life_s=0)
    for i in range(10):
        stats.record(outcome(i, success=i < 7))
    ev = stats.evidence_for("t1", OOM, "", now=0.0).by_action[ActionKind.RETRY]
    post = posterior(Prior(1, 1), ev, None)
    assert (post.alpha, post.beta) == (8, 4)
    assert post.class_outcomes == 10


def test_the_same_outcome_reported_twice_counts_once():
    stats = LearnedStats()
    assert stats.record(outcome(1, True)) is True
    assert stats.record(outcome(1, True)) is False
    ev = stats.evidence_for("t1", OOM, "c1", now=0.0)
    assert ev.by_action[ActionKind.RETRY].outcomes == 1
    assert ev.by_cluster_action[ActionKind.RETRY].outcomes == 1


def test_tenants_learn_separately():
    stats = LearnedStats()
    stats.record(outcome(1, True, tenant="a"))
    assert stats.evidence_for("b", OOM, "c1", now=0.0).by_action == {}


def test_old_evidence_decays_with_the_half_life():
    assert decay_factor(7 * DAY, 7 * DAY) == pytest.approx(0.5)
    ev = Evidence().observe(True, at=0.0, half_life_s=7 * DAY)
    assert ev.decayed_to(14 * DAY, 7 * DAY).successes == pytest.approx(0.25)
    # Two weeks of failures after two weeks of successes: the recent record dominates.
    stats = LearnedStats(half_life_s=3 * DAY)
    for i in range(20):
        stats.record(outcome(i, True, at=i * 0.1 * DAY))
    for i in range(20, 30):
        stats.record(outcome(i, False, at=14 * DAY + i * 0.1 * DAY))
    ev = stats.evidence_for("t1", OOM, "", now=17 * DAY).by_action[ActionKind.RETRY]
    assert posterior(Prior(1, 1), ev, None).mean < 0.3
    assert ev.outcomes == 30  # the raw count is kept for the rationale


@given(st.lists(st.booleans(), min_size=1, max_size=30), st.floats(min_value=0, max_value=30))
def test_decay_never_creates_evidence(results, days):
    ev = Evidence()
    for i, ok in enumerate(results):
        ev = ev.observe(ok, at=float(i), half_life_s=DAY)
    later = ev.decayed_to(len(results) + days * DAY, DAY)
    assert later.weight <= ev.weight + 1e-9
    assert later.successes <= ev.successes + 1e-9


def test_cluster_record_overrides_the_class_after_a_few_outcomes():
    stats = LearnedStats()
    for i in range(30):  # class-wide: retry works
        stats.record(outcome(i, True, cluster=f"other{i}"))
    for i in range(30, 38):  # this cluster: retry always fails
        stats.record(outcome(i, False, cluster="bad"))
    ev = stats.evidence_for("t1", OOM, "bad", now=0.0)
    cluster_post = posterior(Prior(1, 1), ev.by_action[ActionKind.RETRY], ev.by_cluster_action[ActionKind.RETRY])
    class_post = posterior(Prior(1, 1), ev.by_action[ActionKind.RETRY], None)
    assert class_post.mean > 0.7
    assert cluster_post.mean < 0.4


def test_thompson_sampling_is_seeded_and_off_means_the_mean():
    post = posterior(Prior(3, 7), None, None)
    draws_a = [success_estimate(post, random.Random(5), explore=True) for _ in range(3)]
    draws_b = [success_estimate(post, random.Random(5), explore=True) for _ in range(3)]
    assert draws_a == draws_b
    rng = random.Random(1)
    spread = {round(success_estimate(post, rng, explore=True), 6) for _ in range(20)}
    assert len(spread) > 10
    assert success_estimate(post, rng, explore=False) == pytest.approx(0.3)


def test_expected_value_is_success_times_benefit_minus_cost():
    model = CostModel(human_minutes_per_escalation=10, usd_per_human_minute=2.0)
    assert expected_value(0.5, ActionCost(10, 1.0, 0), model) == pytest.approx(0.5 * 20 - 1.0)
