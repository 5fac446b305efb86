"""What the three CI-provider executors share: one `execute` that re-runs or runs a
fresh-runner step, turns the provider's refusals into FAILED results, and counts
the HTTP calls it made. Each provider supplies `rerun` and its client."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import (
    ActionRequest,
    ActionResult,
    MissingParameter,
    ProviderRejected,
    failed,
    unsupported,
)
from services.coordinator.executors.fresh_runner import RunnerPool, execute_fresh_runner_step


class ProviderExecutor:
    provider: Provider
    name: str

    def __init__(self, client: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock

    def supports(self, kind: ActionKind) -> bool:
        return kind in (ActionKind.RETRY, ActionKind.RETRY_ON_FRESH_RUNNER)

    def execute(self, request: ActionRequest) -> ActionResult:
        before = self.client.http.calls_in_this_thread()
        try:
            if request.kind is ActionKind.RETRY:
                result = self.rerun(request)
            elif request.kind is ActionKind.RETRY_ON_FRESH_RUNNER:
                # every provider subclass implements the RunnerPool methods
                result = execute_fresh_runner_step(cast(RunnerPool, self), request, clock=self.clock)
            else:
                result = unsupported(self.name, request)
        except (ProviderRejected, MissingParameter) as exc:
            result = failed(exc.message)
        return replace(result, calls_made=self.client.http.calls_in_this_thread() - before)

    def rerun(self, request: ActionRequest) -> ActionResult:
        raise NotImplementedError
