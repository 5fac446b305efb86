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
from services.coordinator.executors.base import Executor

log = logging.getLogger(__name__)


def executor_selector(env: Mapping[str, str], data_dir: Path) -> Callable[[Provider, ActionKind], Executor]:
    from services.coordinator.executors.registry import executors_from_environment

    configured = executors_from_environment(env)
    local = configured[Provider.PROVIDER_LOCAL]
    log.info("executors: %s", ", ".join(p.name for p in configured) or "local only")

    def select(provider: Provider, kind: ActionKind) -> Executor:
        executor = configured.get(provider)
        if executor is not None and executor.supports(kind):
            return executor
        return local

    return select
