"""Which executor runs an action: the provider's own, when configured, else the local one.

Provider executors (GitHub Actions, GitLab, Jenkins) are built from the standard
environment variables (GITHUB_TOKEN, GITLAB_URL/GITLAB_TOKEN, JENKINS_URL/...).
Without them — the local mesh, the demo — the built-in local executor stands in
for the provider (it simulates the action; its memory of idempotency keys lasts
as long as the process, so exactly-once across a crash is the provider
executors' property, checked against the provider's own state).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import ActionRequest, ActionResult, Executor, failed

log = logging.getLogger(__name__)


def executor_selector(env: Mapping[str, str], data_dir: Path) -> Callable[[Provider, ActionKind], Executor]:
    from services.coordinator.executors.registry import executors_from_environment

    configured = executors_from_environment(env)
    local = configured[Provider.PROVIDER_LOCAL]
    log.info("executors: %s", ", ".join(p.name for p in configured) or "local only")

    def select(provider: Provider, kind: ActionKind) -> Executor:
        executor = configured.get(provider)
        if executor is None or kind is ActionKind.ESCALATE:
            return local  # no provider API configured (the demo), or a notification for a human
        if executor.supports(kind):
            return executor
        # Configured, but this provider cannot do it: fail the action (the plan moves on
        # to its next step) rather than let a simulation report it as done.
        return _Unsupported(executor)

    return select


class _Unsupported:
    def __init__(self, executor: Executor) -> None:
        self.provider = executor.provider
        self._name = getattr(executor, "name", executor.provider.name)

    def supports(self, kind: ActionKind) -> bool:
        return False

    def execute(self, request: ActionRequest) -> ActionResult:
        return failed(f"{self._name} cannot {request.kind.name}; it supports "
                      "RETRY and RETRY_ON_FRESH_RUNNER (the plan's next step runs instead)")
