import dataclasses
import random

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.vocabulary import GENUINE_BREAKS, ActionKind, FailureClass
from services.planner.learning import LearnedStats
from services.planner.planning import (
    PlanRequest,
    learned_estimate,
    outcome_for,
    plan_from_dict,
    plan_healing,
    plan_to_dict,
)
from services.planner.policy import Policy, Prior, default_policies

A = ActionKind
F = FailureClass
RISK = "Pipeline api/build failed 3 of its last 12 runs; the next run fails with probability 25%."


def request(cls=F.OUT_OF_MEMORY, **kw):
    base = dict(
        tenant="acme", failure_id="f-1", failure_class=cls, confidence=0.95,
        evidence=("java.lang.OutOfMemoryError: Java heap space", "at com.acme.Build.run"),
        cluster_id="c-9", attempt=0, job_duration_s=600, risk=0.25, risk_summary=RISK,
        runner="runner-3", memory_limit_mb=4096,
    )
    base.update(kw)
    return PlanRequest(**base)


def plan(req, policy=None, stats=None, seed=0, now=0.0):
    policy = policy or default_policies()[req.failure_class]
    return plan_healing(req, policy, stats or LearnedStats(), random.Random(seed), now=now)


def kinds(p):
    return [a.kind for a in p.actions]


@pytest.mark.parametrize("cls", sorted(GENUINE_BREAKS))
def test_a_genuine_break_is_escalated_never_retried_even_if_learning_liked_retries(cls):
    # A permissive policy cannot get past validation; the planner also refuses on its own.
    stats = LearnedStats()
    p = plan(request(cls, last_good_revision=None), stats=stats)
    assert kinds(p) == [A.ESCALATE]
    assert "genuine break" in p.escalation_reason
    unsafe = Policy(cls, allowed_actions=(A.RETRY, A.CLEAR_CACHE), max_attempts=3)  # not validated
    p = plan(request(cls), policy=unsafe)
    assert kinds(p) == [A.ESCALATE]
    assert "never allowed" in p.not_planned["RETRY"]


def test_rollback_for_a_genuine_break_comes_with_an_unconditional_escalation():
    policy = dataclasses.replace(default_policies()[F.COMPILE_ERROR], allowed_actions=(A.ROLLBACK,))
    p = plan(request(F.COMPILE_ERROR, last_good_revision="9f3e1a"), policy=policy)
    assert kinds(p) == [A.ROLLBACK, A.ESCALATE]
    assert p.actions[0].parameters == {"target_revision": "9f3e1a"}
    assert p.actions[1].if_previous_failed is False
    assert kinds(plan(request(F.COMPILE_ERROR, last_good_revision=None), policy=policy)) == [A.ESCALATE]


def test_unknown_and_low_confidence_escalate():
    assert "UNKNOWN" in plan(request(F.UNKNOWN)).escalation_reason
    p = plan(request(F.NETWORK, confidence=0.3))
    assert kinds(p) == [A.ESCALATE]
    assert "confidence 0.30 is below" in p.escalation_reason


def test_learning_moves_the_working_action_first():
    policy = Policy(F.OUT_OF_MEMORY, allowed_actions=(A.RETRY, A.RAISE_RESOURCE_LIMIT), max_attempts=2,
                    exploration=False, priors={A.RETRY: Prior(3, 1), A.RAISE_RESOURCE_LIMIT: Prior(1, 1)})
    stats = LearnedStats()
    assert kinds(plan(request(), policy, stats))[0] is A.RETRY
    for i in range(12):
        first = plan(request(failure_id=f"f{i}"), policy, stats, now=i)
        for action in first.actions[:-1]:
            ok = action.kind is A.RAISE_RESOURCE_LIMIT
            stats.record(outcome_for(first, action.idempotency_key, ok, f"o-{i}-{action.kind.name}", at=i))
            if ok:
                break
    after = plan(request(failure_id="f-next"), policy, stats, now=20)
    assert kinds(after)[0] is A.RAISE_RESOURCE_LIMIT
    assert after.actions[0].expected_success > 0.8
    assert after.actions[1].expected_success < policy.prior_for(A.RETRY).mean  # it failed


def test_exploration_sometimes_tries_the_second_choice_but_mostly_the_first():
    stats = LearnedStats()
    policy = default_policies()[F.OUT_OF_MEMORY]
    firsts = [kinds(plan(request(), policy, stats, seed=s))[0] for s in range(200)]
    share = firsts.count(A.RAISE_RESOURCE_LIMIT) / len(firsts)
    assert 0.5 < share < 0.95
    greedy = dataclasses.replace(policy, exploration=False)
    assert {kinds(plan(request(), greedy, stats, seed=s))[0] for s in range(20)} == {A.RAISE_RESOURCE_LIMIT}


def test_plan_respects_attempts_budget_and_preconditions():
    flaky = default_policies()[F.FLAKY_TEST]
    no_name = plan(request(F.FLAKY_TEST, flaky_test=None), dataclasses.replace(flaky, exploration=False))
    assert kinds(no_name) == [A.RETRY, A.RETRY, A.ESCALATE]  # the spare attempt retries again
    assert "flaky evidence" in no_name.not_planned["QUARANTINE_TEST"]
    assert [a.attempt for a in no_name.actions[:2]] == [1, 2]
    assert no_name.actions[0].idempotency_key != no_name.actions[1].idempotency_key
    named = plan(request(F.FLAKY_TEST, flaky_test="test_checkout"), dataclasses.replace(flaky, exploration=False))
    assert kinds(named) == [A.RETRY, A.QUARANTINE_TEST, A.ESCALATE]
    assert named.actions[1].parameters == {"test_name": "test_checkout"}
    last = plan(request(F.FLAKY_TEST, attempt=1, flaky_test="t"), dataclasses.replace(flaky, exploration=False))
    assert len(last.actions) == 2  # one attempt left
    assert last.actions[0].attempt == 2
    spent = plan(request(F.FLAKY_TEST, attempt=2))
    assert kinds(spent) == [A.ESCALATE] and "at most 2" in spent.escalation_reason
    tight = dataclasses.replace(default_policies()[F.NETWORK], budget_minutes=5.0)
    p = plan(request(F.NETWORK, job_duration_s=600), tight)
    assert kinds(p) == [A.ESCALATE] and "over budget" in p.not_planned["RETRY"]


def test_idempotency_keys_are_deterministic_and_distinct():
    a = plan(request(F.FLAKY_TEST, flaky_test="t"), seed=1)
    b = plan(request(F.FLAKY_TEST, flaky_test="t"), seed=1)
    assert [x.idempotency_key for x in a.actions] == [x.idempotency_key for x in b.actions]
    assert len({x.idempotency_key for x in a.actions}) == len(a.actions)
    other = plan(request(F.FLAKY_TEST, flaky_test="t", failure_id="f-2"), seed=1)
    assert not {x.idempotency_key for x in a.actions} & {x.idempotency_key for x in other.actions}


def test_rationale_explains_evidence_rates_risk_and_rule():
    stats = LearnedStats()
    p0 = plan(request(failure_id="f-0"), stats=stats)
    stats.record(outcome_for(p0, p0.actions[0].idempotency_key, True, "o-1", at=0))
    p = plan(request(), stats=stats)
    assert RISK in p.rationale
    assert "java.lang.OutOfMemoryError: Java heap space" in p.rationale
    assert "1 outcome(s) for OUT_OF_MEMORY" in p.rationale
    assert p.policy_rule in p.rationale
    assert "OUT_OF_MEMORY: allowed actions in order [RAISE_RESOURCE_LIMIT, RETRY_ON_FRESH_RUNNER]" in p.policy_rule
    without = plan(request(risk_summary="", risk=0.4))
    assert "probability 40%" in without.rationale


def test_rationale_quotes_the_failed_step_and_the_decisive_line_when_the_detector_found_them():
    decisive = "java.lang.OutOfMemoryError: Java heap space"
    p = plan(request(failed_step="./gradlew build --no-daemon", failed_exit_code=137,
                     decisive_line_number=812, decisive_line=decisive))
    assert f'Failed step: `./gradlew build --no-daemon` (exit 137); decisive line 812: "{decisive}".' in p.rationale
    long_command = "npm run build -- " + "--flag " * 40
    clipped = plan(request(failed_step=long_command, decisive_line="")).rationale
    assert "Failed step: `npm run build -- --flag" in clipped and "...`." in clipped
    assert long_command.strip() not in clipped
    assert "Failed step" not in plan(request()).rationale and "decisive line" not in plan(request()).rationale
    only_line = plan(request(decisive_line_number=3, decisive_line=decisive)).rationale
    assert f'Decisive line 3: "{decisive}".' in only_line


def test_expected_figures_add_up():
    p = plan(request(), policy=dataclasses.replace(default_policies()[F.OUT_OF_MEMORY], exploration=False))
    p1, p2 = (a.expected_success for a in p.actions[:2])
    assert p.expected_success == pytest.approx(1 - (1 - p1) * (1 - p2))
    m1, m2 = (a.expected_minutes for a in p.actions[:2])
    assert p.expected_minutes == pytest.approx(m1 + (1 - p1) * m2)
    assert p.requires_approval is False
    approving = dataclasses.replace(default_policies()[F.OUT_OF_MEMORY], requires_human_approval=True)
    assert plan(request(), approving).requires_approval is True


def test_bad_requests_are_named():
    with pytest.raises(InvalidArgument, match="confidence"):
        plan(request(confidence=1.5))
    with pytest.raises(InvalidArgument, match="attempt: must be >= 0, got -1"):
        plan(request(attempt=-1))
    with pytest.raises(InvalidArgument, match="policy.failure_class"):
        plan(request(F.NETWORK), policy=default_policies()[F.DISK_FULL])


def test_outcome_for_rejects_unplanned_actions_and_escalations():
    p = plan(request())
    with pytest.raises(NotFound):
        outcome_for(p, "hg-not-a-key", True, "o1", at=0)
    with pytest.raises(FailedPrecondition):
        outcome_for(p, p.actions[-1].idempotency_key, True, "o1", at=0)


def test_learned_estimate_reports_the_posterior_an_outcome_leaves_behind():
    policy = default_policies()[F.OUT_OF_MEMORY]
    stats = LearnedStats()
    p = plan(request(), policy=policy)
    key = p.actions[0].idempotency_key
    before = learned_estimate(p, key, policy, stats, now=0.0)
    prior = policy.prior_for(p.actions[0].kind)
    assert before.evidence == 0
    assert before.posterior_mean == pytest.approx(prior.alpha / (prior.alpha + prior.beta))
    stats.record(outcome_for(p, key, True, "o-1", at=0))
    stats.record(outcome_for(p, key, True, "o-1", at=0))  # the same outcome again: counted once
    after = learned_estimate(p, key, policy, stats, now=0.0)
    assert after.action is p.actions[0].kind
    assert after.evidence == pytest.approx(1.0) and after.posterior_mean > before.posterior_mean
    with pytest.raises(NotFound):
        learned_estimate(p, "hg-not-a-key", policy, stats, now=0.0)


def test_plan_round_trips():
    p = plan(request(F.FLAKY_TEST, flaky_test="t"))
    assert plan_from_dict(plan_to_dict(p)) == p
