import dataclasses
import random

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.vocabulary import ActionKind, FailureClass
from services.planner.planning import PlanRequest, plan_healing
from services.planner.policy import Policy, Prior, default_policies
from services.planner.store import PlannerStore

A = ActionKind
F = FailureClass


@pytest.fixture
def store(tmp_path):
    s = PlannerStore(tmp_path / "planner.db", half_life_s=0)
    yield s
    s.close()


def make_plan(store, failure_id="f-1", tenant="acme", cls=F.OUT_OF_MEMORY, exploration=False):
    req = PlanRequest(tenant=tenant, failure_id=failure_id, failure_class=cls, confidence=0.9,
                      evidence=("Killed (exit 137)",), cluster_id="c-1", job_duration_s=300)
    policy = dataclasses.replace(store.effective_policy(tenant, cls), exploration=exploration)
    return store.save_plan(plan_healing(req, policy, store, random.Random(0), now=100.0))


def test_plan_round_trips_and_is_per_tenant(store):
    plan = make_plan(store)
    assert store.get_plan("acme", plan.plan_id) == plan
    with pytest.raises(NotFound, match="plan 'nope' not found"):
        store.get_plan("acme", "nope")
    with pytest.raises(NotFound):
        store.get_plan("globex", plan.plan_id)
    assert store.plans_for_failure("acme", "f-1") == [plan]


def test_saving_the_same_failure_attempt_again_keeps_the_first_plan(store):
    first = make_plan(store)
    again = make_plan(store, exploration=True)
    assert again == first


def test_outcomes_are_idempotent_and_feed_the_statistics(store):
    plan = make_plan(store)
    key = plan.actions[0].idempotency_key
    assert store.record_outcome("acme", plan.plan_id, key, "out-1", True, at=200.0) is True
    assert store.record_outcome("acme", plan.plan_id, key, "out-1", True, at=201.0) is False
    ev = store.evidence_for("acme", F.OUT_OF_MEMORY, "c-1", now=300.0)
    kind = plan.actions[0].kind
    assert ev.by_action[kind].outcomes == 1 and ev.by_action[kind].successes == 1.0
    assert ev.by_cluster_action[kind].outcomes == 1
    assert store.evidence_for("globex", F.OUT_OF_MEMORY, "c-1", now=300.0).by_action == {}
    # The next plan quotes what was learned.
    nxt = make_plan(store, failure_id="f-2")
    assert "1 outcome(s) for OUT_OF_MEMORY" in nxt.rationale


def test_outcomes_for_unplanned_actions_are_refused(store):
    plan = make_plan(store)
    key = plan.actions[0].idempotency_key
    with pytest.raises(NotFound, match="plan 'missing'"):
        store.record_outcome("acme", "missing", key, "o", True, at=1.0)
    with pytest.raises(NotFound, match="no action with idempotency key"):
        store.record_outcome("acme", plan.plan_id, "hg-bogus", "o", True, at=1.0)
    with pytest.raises(FailedPrecondition, match="escalation"):
        store.record_outcome("acme", plan.plan_id, plan.actions[-1].idempotency_key, "o", True, at=1.0)
    store.record_outcome("acme", plan.plan_id, key, "o-1", False, at=1.0)
    with pytest.raises(FailedPrecondition, match="already has outcome 'o-1'"):
        store.record_outcome("acme", plan.plan_id, key, "o-2", True, at=2.0)
    with pytest.raises(FailedPrecondition, match="already reported"):
        store.record_outcome("acme", plan.plan_id, plan.actions[1].idempotency_key, "o-1", True, at=2.0)
    ev = store.evidence_for("acme", F.OUT_OF_MEMORY, "", now=3.0)
    assert sum(e.outcomes for e in ev.by_action.values()) == 1


def test_policies_layer_and_survive_a_restart(tmp_path):
    path = tmp_path / "p.db"
    store = PlannerStore(path)
    custom = Policy(F.OUT_OF_MEMORY, allowed_actions=(A.RAISE_RESOURCE_LIMIT,), max_attempts=3,
                    priors={A.RAISE_RESOURCE_LIMIT: Prior(5, 1), A.RETRY_ON_FRESH_RUNNER: Prior(1, 1)})
    store.set_policy("acme", custom, now=1.0)
    with pytest.raises(InvalidArgument, match="never allowed"):
        store.set_policy("acme", Policy(F.LINT, allowed_actions=(A.RETRY,)), now=2.0)
    store.close()
    store = PlannerStore(path)
    assert store.effective_policy("acme", F.OUT_OF_MEMORY) == custom
    assert store.effective_policy("acme", F.LINT) == default_policies()[F.LINT]
    assert store.effective_policy("globex", F.OUT_OF_MEMORY) == default_policies()[F.OUT_OF_MEMORY]
    live = {"OUT_OF_MEMORY": {"max_attempts": 1}}
    layered = store.effective_policy("acme", F.OUT_OF_MEMORY, live)
    assert layered.max_attempts == 1 and layered.allowed_actions == (A.RAISE_RESOURCE_LIMIT,)
    store.close()
