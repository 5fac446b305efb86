"""The plan's actions are alternatives in order; validation names the field."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.vocabulary import ActionKind, FailureClass, Provider
from services.coordinator.actions import ActionRecord, ActionState, next_steps, validate_plan_actions

S = ActionState


def action(order: int, state: ActionState = S.ACTION_STATE_PENDING, *, kind: ActionKind = ActionKind.RETRY,
           key: str | None = None, always_run: bool = False) -> ActionRecord:
    return ActionRecord(action_id=f"p-{order}", tenant="t", plan_id="p", failure_id="f", order=order, kind=kind,
                        provider=Provider.PROVIDER_GITHUB_ACTIONS, parameters={}, idempotency_key=key or f"k{order}",
                        failure_class=FailureClass.FLAKY_TEST, state=state, always_run=always_run)


def ids(records: list[ActionRecord]) -> list[str]:
    return [r.action_id for r in records]


def test_only_the_first_undecided_action_runs() -> None:
    runnable, skip = next_steps([action(1), action(0), action(2)])
    assert ids(runnable) == ["p-0"] and skip == []


def test_the_next_runs_only_after_the_previous_failed() -> None:
    runnable, skip = next_steps([action(0, S.ACTION_STATE_FAILED), action(1), action(2)])
    assert ids(runnable) == ["p-1"] and skip == []


def test_nothing_runs_while_an_action_is_claimed() -> None:
    assert next_steps([action(0, S.ACTION_STATE_CLAIMED), action(1)]) == ([], [])


def test_the_rest_is_skipped_once_one_succeeded() -> None:
    runnable, skip = next_steps([action(0, S.ACTION_STATE_FAILED), action(1, S.ACTION_STATE_SUCCEEDED),
                                 action(2), action(3)])
    assert runnable == [] and ids(skip) == ["p-2", "p-3"]


def test_always_run_actions_run_after_a_success() -> None:
    runnable, skip = next_steps([action(0, S.ACTION_STATE_SUCCEEDED), action(1),
                                 action(2, kind=ActionKind.ESCALATE, always_run=True)])
    assert ids(runnable) == ["p-2"] and ids(skip) == ["p-1"]


def test_a_finished_plan_has_nothing_to_do() -> None:
    assert next_steps([action(0, S.ACTION_STATE_FAILED), action(1, S.ACTION_STATE_SKIPPED)]) == ([], [])


def test_record_round_trips_through_json_and_ignores_unknown_fields() -> None:
    record = action(0, S.ACTION_STATE_CLAIMED)
    record.delivered_to = ["planner"]
    assert ActionRecord.from_json(record.to_json()) == record
    raw = record.to_json().replace(b'{"action_id"', b'{"field_from_a_newer_version":1,"action_id"')
    assert ActionRecord.from_json(raw) == record


def test_a_plan_needs_actions() -> None:
    with pytest.raises(InvalidArgument, match="at least one action") as error:
        validate_plan_actions([])
    assert error.value.field == "plan.actions"


def test_duplicated_idempotency_keys_are_refused_naming_the_second() -> None:
    with pytest.raises(InvalidArgument, match="duplicates an earlier action's key 'same'") as error:
        validate_plan_actions([action(0, key="same"), action(1, key="other"), action(2, key="same")])
    assert error.value.field == "plan.actions[2].idempotency_key"


def test_missing_kind_and_key_are_refused() -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_plan_actions([action(0, kind=ActionKind.ACTION_KIND_UNSPECIFIED)])
    assert error.value.field == "plan.actions[0].kind"
    blank = action(0)
    blank.idempotency_key = ""
    with pytest.raises(InvalidArgument) as error:
        validate_plan_actions([blank])
    assert error.value.field == "plan.actions[0].idempotency_key"


def test_too_many_actions_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="at most 16 actions per plan, got 17"):
        validate_plan_actions([action(i) for i in range(17)])
