"""The one interface every executor offers the coordinator.

The coordinator claims an `ActionRequest`, picks the executor for its provider and
calls `execute` in a worker thread. `execute` first looks at the provider's state and
acts only if the work is not done yet, so running the same request twice (after a
crash, a lost lease, a retried claim) never re-runs a job twice.

Contract of `execute`:
- returns `ActionResult` SUCCEEDED, SKIPPED_ALREADY_DONE, or FAILED (a permanent
  problem: bad credentials, unknown run, a request missing a parameter; `detail`
  says what to do);
- raises `ProviderUnavailable` when the provider could not be reached or kept failing
  after bounded retries, or asked us to wait longer than we are allowed to; the
  coordinator should put the action back and retry it after `retry_after_seconds`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from services.common.errors import HealingGuardError, Unavailable
from services.common.vocabulary import ActionKind, Provider


class ActionStatus(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED_ALREADY_DONE = "skipped_already_done"


@dataclass(frozen=True)
class ActionRequest:
    """One action to carry out at one provider.

    `parameters` carries the provider's own identifiers as strings, e.g. repository
    "acme/web", run_id, run_attempt, job_id, project_id, pipeline_id, job_name,
    build_number, runner_id, runner_label, runner_name, memory_mb, test_name,
    revision; and for the steps of a fresh-runner retry, step = drain|rerun|restore.
    `attempt` is how many times the coordinator has tried this action (1 = first).
    `not_before` (seconds since the epoch) is when the action may run at the earliest.
    """

    action_id: str
    idempotency_key: str
    tenant: str
    kind: ActionKind
    provider: Provider
    parameters: Mapping[str, str] = field(default_factory=dict)
    attempt: int = 1
    not_before: float | None = None

    def parameter(self, name: str, default: str = "") -> str:
        return self.parameters.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for persisting the action (e.g. in the etcd queue)."""
        return {
            "action_id": self.action_id,
            "idempotency_key": self.idempotency_key,
            "tenant": self.tenant,
            "kind": self.kind.name,
            "provider": self.provider.name,
            "parameters": dict(self.parameters),
            "attempt": self.attempt,
            "not_before": self.not_before,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActionRequest:
        return cls(
            action_id=str(data["action_id"]),
            idempotency_key=str(data["idempotency_key"]),
            tenant=str(data["tenant"]),
            kind=ActionKind[str(data["kind"])],
            provider=Provider[str(data["provider"])],
            parameters={str(k): str(v) for k, v in dict(data.get("parameters", {})).items()},
            attempt=int(data.get("attempt", 1)),
            not_before=None if data.get("not_before") is None else float(data["not_before"]),
        )


@dataclass(frozen=True)
class ActionResult:
    status: ActionStatus
    detail: str
    provider_reference: str = ""
    calls_made: int = 0

    @property
    def done(self) -> bool:
        """The work is in place at the provider (now or from an earlier execution)."""
        return self.status is not ActionStatus.FAILED


@runtime_checkable
class Executor(Protocol):
    provider: Provider

    def supports(self, kind: ActionKind) -> bool: ...

    def execute(self, request: ActionRequest) -> ActionResult: ...


class ProviderUnavailable(Unavailable):
    """The provider could not do it now; retry the action later (transient)."""

    def __init__(self, message: str, retry_after_seconds: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class ProviderRejected(HealingGuardError):
    """The provider refused the request for good (401, 403, 404, 409, 422...).

    Executors turn it into a FAILED result; retrying the same request would not help.
    """

    def __init__(self, message: str, status: int, provider_message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.provider_message = provider_message


class MissingParameter(HealingGuardError):
    def __init__(self, request: ActionRequest, names: Sequence[str]) -> None:
        missing = ", ".join(f"parameters[{n!r}]" for n in names)
        super().__init__(
            f"{request.kind.name} for {request.provider.name} needs {missing}; "
            f"got parameters {sorted(request.parameters)}"
        )
        self.names = tuple(names)


def require(request: ActionRequest, *names: str) -> list[str]:
    """The named parameters, in order; MissingParameter names every one that is absent."""
    missing = [n for n in names if not request.parameters.get(n)]
    if missing:
        raise MissingParameter(request, missing)
    return [request.parameters[n] for n in names]


def require_int(request: ActionRequest, name: str) -> int:
    (value,) = require(request, name)
    try:
        return int(value)
    except ValueError:
        raise MissingParameter(request, [name]) from None


def failed(detail: str, calls_made: int = 0) -> ActionResult:
    return ActionResult(ActionStatus.FAILED, detail, calls_made=calls_made)


def unsupported(executor_name: str, request: ActionRequest) -> ActionResult:
    return failed(
        f"{executor_name} cannot carry out {request.kind.name}; "
        "escalate it to a human or configure an executor that supports it"
    )
