"""The coordinator's domain: action records, their states, and which may run next.

A plan's actions are alternatives in order of preference: the first runs; if it
fails the next runs; once one succeeds the rest are skipped. ESCALATE, when
present, is the last resort. Plain dataclasses, no gRPC, no etcd.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from services.common.errors import InvalidArgument
from services.common.vocabulary import ActionKind, FailureClass, Provider

MAX_ACTIONS_PER_PLAN = 16


class ActionState(enum.IntEnum):
    ACTION_STATE_UNSPECIFIED = 0
    ACTION_STATE_PENDING = 1
    ACTION_STATE_CLAIMED = 2
    ACTION_STATE_SUCCEEDED = 3
    ACTION_STATE_FAILED = 4
    ACTION_STATE_SKIPPED = 5
    ACTION_STATE_CANCELLED = 6


TERMINAL = frozenset({ActionState.ACTION_STATE_SUCCEEDED, ActionState.ACTION_STATE_FAILED,
                      ActionState.ACTION_STATE_SKIPPED, ActionState.ACTION_STATE_CANCELLED})


@dataclass
class ActionRecord:
    action_id: str
    tenant: str
    plan_id: str
    failure_id: str
    order: int
    kind: ActionKind
    provider: Provider
    parameters: dict[str, str]
    idempotency_key: str
    failure_class: FailureClass
    expected_success: float = 0.0
    always_run: bool = False
    # A step that keeps the fleet tidy (a drained runner's restore): runs on its own
    # schedule (not_before, unix seconds), outside the plan's chain of alternatives.
    housekeeping: bool = False
    not_before: float = 0.0
    job: dict[str, object] = field(default_factory=dict)   # JobRef fields
    cluster_id: str = ""
    state: ActionState = ActionState.ACTION_STATE_PENDING
    executor_id: str = ""
    attempts: int = 0
    detail: str = ""
    provider_reference: str = ""
    runner_minutes: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    dispatched_by: str = ""
    outcome_delivered: bool = False
    delivered_to: list[str] = field(default_factory=list)   # receivers that have the outcome
    trace_parent: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_json(self) -> bytes:
        # Field by field rather than dataclasses.asdict (which deep-copies every value):
        # the leader encodes a record on every state change, and the bytes are the same.
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["kind"] = self.kind.name
        data["provider"] = self.provider.name
        data["failure_class"] = self.failure_class.name
        data["state"] = self.state.name
        return _ENCODE(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ActionRecord:
        data = json.loads(raw)
        data["kind"] = ActionKind[data["kind"]]
        data["provider"] = Provider[data["provider"]]
        data["failure_class"] = FailureClass[data["failure_class"]]
        data["state"] = ActionState[data["state"]]
        if not data.keys() <= _FIELD_SET:   # a field from a newer version: ignore it
            data = {key: value for key, value in data.items() if key in _FIELD_SET}
        return cls(**data)


_FIELD_NAMES = tuple(f.name for f in fields(ActionRecord))
_FIELD_SET = frozenset(_FIELD_NAMES)
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def validate_plan_actions(actions: list[ActionRecord]) -> None:
    if not actions:
        raise InvalidArgument("plan.actions", "a plan needs at least one action")
    if len(actions) > MAX_ACTIONS_PER_PLAN:
        raise InvalidArgument("plan.actions", f"at most {MAX_ACTIONS_PER_PLAN} actions per plan, got {len(actions)}")
    keys: set[str] = set()
    for index, action in enumerate(actions):
        if action.kind is ActionKind.ACTION_KIND_UNSPECIFIED:
            raise InvalidArgument(f"plan.actions[{index}].kind", "is required")
        if not action.idempotency_key:
            raise InvalidArgument(f"plan.actions[{index}].idempotency_key", "is required")
        if action.idempotency_key in keys:
            raise InvalidArgument(
                f"plan.actions[{index}].idempotency_key",
                f"duplicates an earlier action's key {action.idempotency_key!r}",
            )
        keys.add(action.idempotency_key)


def next_steps(plan_actions: Iterable[ActionRecord]) -> tuple[list[ActionRecord], list[ActionRecord]]:
    """(actions ready to run now, actions to mark SKIPPED) for one plan."""
    actions = list(plan_actions)
    runnable: list[ActionRecord] = [
        a for a in actions if a.housekeeping and a.state is ActionState.ACTION_STATE_PENDING
    ]
    ordered = sorted((a for a in actions if not a.housekeeping), key=lambda a: a.order)
    skip: list[ActionRecord] = []
    healed = False
    for action in ordered:
        if healed:
            if action.state is ActionState.ACTION_STATE_PENDING:
                (runnable if action.always_run else skip).append(action)
                if action.always_run:
                    break
            continue
        if action.state is ActionState.ACTION_STATE_SUCCEEDED:
            healed = True
            continue
        if action.state in (ActionState.ACTION_STATE_FAILED, ActionState.ACTION_STATE_SKIPPED,
                            ActionState.ACTION_STATE_CANCELLED):
            continue
        if action.state is ActionState.ACTION_STATE_PENDING:
            runnable.append(action)
        break  # only the first undecided action of a plan may run
    return runnable, skip
