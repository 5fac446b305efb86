import dataclasses

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.vocabulary import ActionKind, FailureClass
from services.planner.learning import LearnedStats
from services.planner.planning import plan_from_dict, plan_to_dict
from services.planner.policy import default_policies
from services.planner.recommendations import (
    Recommendation,
    class_prevented,
    plan_id_for_recommendation,
    plan_recommendation,
)

A, F = ActionKind, FailureClass
MEMORY = Recommendation(
    recommendation_id="rec-1",
    kind=A.RAISE_RESOURCE_LIMIT,
    repository="acme/app",
    pipeline="ci",
    job="build",
    parameters={"resource": "memory", "memory_limit_mb": "5632", "current_limit_mb": "4000"},
    title="raise the memory limit of acme/app/ci:build from 4000 MB to 5632 MB",
    evidence=(
        "peak memory went from 60% to 92% of the 4000 MB limit over the last 20 runs (+1.7 points per run)",
        "at this pace it reaches the limit in about 5 runs",
    ),
    expected_benefit=42.0,
)
FLAKY = Recommendation(
    recommendation_id="rec-2",
    kind=A.QUARANTINE_TEST,
    repository="acme/app",
    pipeline="ci",
    parameters={"test": "test_upload"},
    title="quarantine test_upload",
    evidence=("flaked 5x",),
)


def accept(rec, policy=None, **kw):  # type: ignore[no-untyped-def]
    policy = policy or default_policies()[class_prevented(rec)]
    return plan_recommendation("acme", rec, policy, LearnedStats(), now=1000.0, **kw)


def test_an_accepted_memory_recommendation_plans_the_raise_then_escalation_quoting_the_evidence() -> None:
    plan = accept(MEMORY)
    assert [a.kind for a in plan.actions] == [A.RAISE_RESOURCE_LIMIT, A.ESCALATE]
    assert plan.actions[0].parameters == {"memory_mb": "5632"}
    assert plan.actions[1].if_previous_failed and not plan.actions[0].if_previous_failed
    assert plan.failure_class is F.OUT_OF_MEMORY and plan.failure_id == "rec-1"
    assert (
        plan.plan_id
        == plan_id_for_recommendation("acme", "rec-1")
        != plan_id_for_recommendation("b", "rec-1")
    )
    for line in MEMORY.evidence:
        assert f'"{line}"' in plan.rationale
    assert "rec-1" in plan.rationale and "42.0 runner-minutes a week" in plan.rationale
    assert "Policy rule applied: OUT_OF_MEMORY" in plan.rationale
    assert 0 < plan.expected_success < 1
    assert plan_from_dict(plan_to_dict(plan)) == plan  # stored like any other plan


def test_quarantine_and_escalation_recommendations() -> None:
    plan = accept(FLAKY)
    assert plan.actions[0].parameters == {"test_name": "test_upload"} and plan.failure_class is F.FLAKY_TEST
    pin = Recommendation(
        recommendation_id="rec-3",
        kind=A.ESCALATE,
        repository="acme/app",
        pipeline="ci",
        parameters={"dependency": "registry.npmjs.org"},
        title="pin or mirror registry.npmjs.org",
    )
    plan = accept(pin)
    assert [a.kind for a in plan.actions] == [A.ESCALATE] and plan.failure_class is F.DEPENDENCY_FETCH
    assert "pin or mirror registry.npmjs.org" in plan.actions[0].parameters["reason"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"recommendation_id": " "}, "recommendation.recommendation_id"),
        ({"kind": A.RETRY}, "recommendation.kind"),
        ({"kind": A.ROLLBACK}, "recommendation.kind"),
        ({"repository": ""}, "recommendation.repository"),
        ({"pipeline": ""}, "recommendation.pipeline"),
        ({"parameters": {"current_limit_mb": "4000"}}, "recommendation.parameters.memory_limit_mb"),
        ({"parameters": {"memory_limit_mb": "lots"}}, "recommendation.parameters.memory_limit_mb"),
        (
            {"parameters": {"memory_limit_mb": "3000", "current_limit_mb": "4000"}},
            "recommendation.parameters.memory_limit_mb",
        ),
    ],
)
def test_malformed_recommendations_name_the_field(change: dict, field: str) -> None:
    rec = dataclasses.replace(MEMORY, **change)
    with pytest.raises(InvalidArgument) as caught:
        accept(rec, policy=default_policies()[F.OUT_OF_MEMORY])
    assert caught.value.field == field


def test_a_quarantine_without_a_test_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        accept(dataclasses.replace(FLAKY, parameters={}))
    assert caught.value.field == "recommendation.parameters.test"


def test_the_tenants_policy_decides() -> None:
    oom = default_policies()[F.OUT_OF_MEMORY]
    forbids = dataclasses.replace(oom, allowed_actions=(A.RETRY_ON_FRESH_RUNNER,))
    with pytest.raises(
        FailedPrecondition, match=r"^recommendation.kind: .*does not allow RAISE_RESOURCE_LIMIT"
    ):
        accept(MEMORY, policy=forbids)
    no_attempts = dataclasses.replace(oom, max_attempts=0)
    with pytest.raises(FailedPrecondition, match="at most 0"):
        accept(MEMORY, policy=no_attempts)
    approval = dataclasses.replace(oom, requires_human_approval=True)
    assert accept(MEMORY, policy=approval).requires_approval  # stored for a human to approve...
    with pytest.raises(FailedPrecondition, match="^submit: .*requires human approval"):
        accept(MEMORY, policy=approval, submit=True)  # ...but not queued without one
    with pytest.raises(FailedPrecondition, match="ceiling of 32768 MB"):
        accept(dataclasses.replace(MEMORY, parameters={"memory_limit_mb": "65536"}))
    with pytest.raises(InvalidArgument, match="not the class this recommendation prevents"):
        accept(MEMORY, policy=default_policies()[F.FLAKY_TEST])
