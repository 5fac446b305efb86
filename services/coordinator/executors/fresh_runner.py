"""Retry on a fresh runner: take the runner that failed out of rotation, re-run the
job elsewhere, put the runner back.

No CI product offers this as one call, so it is built from three steps, each its own
durable action in the coordinator's queue with its own idempotency key:

  DRAIN    take the runner out of rotation (GitLab: pause the runner; GitHub: remove its
           routing label; Jenkins: mark the node temporarily offline with a reason);
  RERUN    re-run the failed job, which now lands on another runner;
  RESTORE  put the runner back once it passes a health check, or unconditionally once
           `restore_deadline` has passed. It has a `not_before` time of its own.

Because RESTORE is persisted together with DRAIN (by `plan_fresh_runner`, before
anything runs), a coordinator that crashes after draining still restores the runner:
the new leader finds the restore action in the queue. Each step checks the provider
first, so executing any step again is harmless (restoring a runner that is already in
rotation is a SKIPPED_ALREADY_DONE).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from services.common.errors import InvalidArgument
from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import (
    ActionRequest,
    ActionResult,
    ActionStatus,
    ProviderUnavailable,
    failed,
)

log = logging.getLogger(__name__)

STEP_DRAIN = "drain"
STEP_RERUN = "rerun"
STEP_RESTORE = "restore"
STEPS = (STEP_DRAIN, STEP_RERUN, STEP_RESTORE)

# Which parameters name the runner at each provider.
RUNNER_PARAMETERS: dict[Provider, tuple[str, ...]] = {
    Provider.PROVIDER_GITHUB_ACTIONS: ("repository", "runner_id", "runner_label"),
    Provider.PROVIDER_GITLAB: ("runner_id",),
    Provider.PROVIDER_JENKINS: ("runner_name",),
    Provider.PROVIDER_LOCAL: ("runner_name",),
}

DEFAULT_RESTORE_AFTER_SECONDS = 600.0
DEFAULT_HEALTH_GRACE_SECONDS = 3600.0
HEALTH_RECHECK_SECONDS = 60.0


class RunnerPool(Protocol):
    """What an executor offers for the fresh-runner steps (GitHub, GitLab, Jenkins, local)."""

    def describe_runner(self, request: ActionRequest) -> str: ...

    def runner_in_rotation(self, request: ActionRequest) -> bool: ...

    def take_out_of_rotation(self, request: ActionRequest) -> None: ...

    def put_back_into_rotation(self, request: ActionRequest) -> None: ...

    def runner_health(self, request: ActionRequest) -> tuple[bool, str]:
        """(healthy, a short reason) for the restore step's health check."""
        ...

    def rerun(self, request: ActionRequest) -> ActionResult: ...


def plan_fresh_runner(
    request: ActionRequest,
    *,
    now: float,
    restore_after_seconds: float = DEFAULT_RESTORE_AFTER_SECONDS,
    health_grace_seconds: float = DEFAULT_HEALTH_GRACE_SECONDS,
) -> list[ActionRequest]:
    """Split one RETRY_ON_FRESH_RUNNER action into its DRAIN, RERUN and RESTORE steps.

    Persist all three before executing any. RESTORE may run from `now +
    restore_after_seconds` (so the re-run is picked up by another runner first) and
    restores even an unhealthy runner once `restore_deadline` (that plus
    `health_grace_seconds`) has passed, so no runner stays out for good.
    """
    if request.kind is not ActionKind.RETRY_ON_FRESH_RUNNER:
        raise InvalidArgument("kind",
                              f"must be RETRY_ON_FRESH_RUNNER to plan its steps, got {request.kind.name}")
    if "step" in request.parameters:
        raise InvalidArgument("parameters.step", f"is already {request.parameters['step']!r}: this is a step")
    needed = RUNNER_PARAMETERS.get(request.provider)
    if needed is None:
        raise InvalidArgument("provider", f"{request.provider.name} has no runners to take out of rotation")
    missing = [name for name in needed if not request.parameters.get(name)]
    if missing:
        raise InvalidArgument(
            f"parameters.{missing[0]}",
            f"a fresh-runner retry at {request.provider.name} needs {', '.join(needed)}; "
            f"missing {', '.join(missing)}",
        )
    if restore_after_seconds < 0 or health_grace_seconds < 0:
        raise InvalidArgument("restore_after_seconds", "restore delays must be >= 0")

    def step(name: str, not_before: float | None, **extra: str) -> ActionRequest:
        return replace(
            request,
            action_id=f"{request.action_id}:{name}",
            idempotency_key=f"{request.idempotency_key}:{name}",
            parameters={**request.parameters, "step": name, **extra},
            attempt=1,
            not_before=not_before,
        )

    restore_at = now + restore_after_seconds
    return [
        step(STEP_DRAIN, request.not_before),
        step(STEP_RERUN, request.not_before),
        step(STEP_RESTORE, restore_at, restore_deadline=f"{restore_at + health_grace_seconds:.3f}"),
    ]


def execute_fresh_runner_step(
    pool: RunnerPool, request: ActionRequest, *, clock: Callable[[], float] = time.time
) -> ActionResult:
    """Carry out one step idempotently. Raises ProviderUnavailable to be retried later."""
    step = request.parameters.get("step", "")
    if step not in STEPS:
        return failed(
            f"a RETRY_ON_FRESH_RUNNER action must be split with plan_fresh_runner() into steps; "
            f"parameters['step'] must be one of {', '.join(STEPS)}, got {step!r}"
        )
    runner = pool.describe_runner(request)
    if step == STEP_RERUN:
        return pool.rerun(request)
    if step == STEP_DRAIN:
        if not pool.runner_in_rotation(request):
            return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE, f"{runner} is already out of rotation")
        pool.take_out_of_rotation(request)
        log.info("took %s out of rotation for action %s", runner, request.action_id)
        return ActionResult(ActionStatus.SUCCEEDED,
                            f"took {runner} out of rotation; the restore step puts it back")

    # RESTORE
    if pool.runner_in_rotation(request):
        return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE, f"{runner} is already back in rotation")
    healthy, why = pool.runner_health(request)
    deadline = _deadline(request)
    now = clock()
    if not healthy and deadline is not None and now < deadline:
        raise ProviderUnavailable(
            f"{runner} is not healthy yet ({why}); it stays out of rotation and the restore is retried later",
            retry_after_seconds=min(HEALTH_RECHECK_SECONDS, deadline - now),
        )
    pool.put_back_into_rotation(request)
    if healthy:
        detail = f"put {runner} back into rotation after it passed its health check ({why})"
    else:
        detail = (f"put {runner} back into rotation because the restore deadline passed, although it still "
                  f"fails its health check ({why}); have a look at it")
    log.info("%s (action %s)", detail, request.action_id)
    return ActionResult(ActionStatus.SUCCEEDED, detail)


def _deadline(request: ActionRequest) -> float | None:
    raw = request.parameters.get("restore_deadline", "")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None
