"""Build the executors from configuration, and pick the one for a request.

Environment (all optional; a provider whose settings are absent has no executor):

  GITHUB_API_URL        default https://api.github.com (GitHub Enterprise: https://HOST/api/v3)
  GITHUB_TOKEN          a token; or a GitHub App:
  GITHUB_APP_ID, GITHUB_APP_INSTALLATION_ID, and GITHUB_APP_PRIVATE_KEY (PEM) or
  GITHUB_APP_PRIVATE_KEY_FILE
  GITLAB_URL, GITLAB_TOKEN                      e.g. https://gitlab.com
  JENKINS_URL, JENKINS_USER, JENKINS_API_TOKEN
  LOCAL_EXECUTOR_COMMAND_<KIND>   a JSON argv list for the local executor, e.g.
                                  LOCAL_EXECUTOR_COMMAND_RETRY='["./retry.sh", "{job_name}"]'
  LOCAL_EXECUTOR_TIMEOUT_SECONDS  default 300
  LOCAL_EXECUTOR_JOURNAL          a file where the local executor remembers what it did
                                  (so it skips it after a restart); default: memory only
  PROVIDER_HTTP_TIMEOUT_SECONDS   default 10, every provider call
  PROVIDER_MAX_ATTEMPTS           default 4, per call, for 5xx/connection errors/rate limits
  PROVIDER_MAX_RATE_LIMIT_WAIT_SECONDS  default 60; longer waits go back to the coordinator

The local executor is always present, and also serves PROVIDER_GENERIC (no API to call).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import ActionRequest, Executor
from services.coordinator.executors.github import (
    GitHubActionsExecutor,
    GitHubAppAuth,
    GitHubAuth,
    GitHubClient,
    TokenAuth,
)
from services.coordinator.executors.gitlab import GitLabClient, GitLabExecutor
from services.coordinator.executors.http import RetryPolicy
from services.coordinator.executors.jenkins import JenkinsClient, JenkinsExecutor
from services.coordinator.executors.local import LocalExecutor, parse_command

DEFAULT_GITHUB_API_URL = "https://api.github.com"


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(name, f"must be a number >= {minimum:g}, got {raw!r}") from None
    if value < minimum:
        raise InvalidArgument(name, f"must be >= {minimum:g}, got {raw!r}")
    return value


def _all_or_none(env: Mapping[str, str], names: tuple[str, ...]) -> bool:
    """True if all are set, False if none; a partial set is a configuration mistake."""
    present = [n for n in names if env.get(n)]
    if present and len(present) != len(names):
        missing = [n for n in names if not env.get(n)]
        raise InvalidArgument(missing[0],
                              f"{', '.join(present)} set but {', '.join(missing)} missing; set all of "
                                          f"{', '.join(names)} or none")
    return bool(present)


def _github_auth(env: Mapping[str, str], clock: Callable[[], float]) -> GitHubAuth | None:
    if env.get("GITHUB_TOKEN"):
        return TokenAuth(env["GITHUB_TOKEN"])
    if not _all_or_none(env, ("GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID")):
        return None
    key = env.get("GITHUB_APP_PRIVATE_KEY", "")
    if not key and env.get("GITHUB_APP_PRIVATE_KEY_FILE"):
        try:
            with open(env["GITHUB_APP_PRIVATE_KEY_FILE"], encoding="utf-8") as f:
                key = f.read()
        except OSError as exc:
            raise InvalidArgument("GITHUB_APP_PRIVATE_KEY_FILE", f"cannot be read: {exc}") from None
    if not key:
        raise InvalidArgument("GITHUB_APP_PRIVATE_KEY", "a GitHub App needs its private key (PEM), in "
                              "GITHUB_APP_PRIVATE_KEY or GITHUB_APP_PRIVATE_KEY_FILE")
    return GitHubAppAuth(env["GITHUB_APP_ID"], key, env["GITHUB_APP_INSTALLATION_ID"], clock=clock)


def executors_from_environment(
    env: Mapping[str, str],
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[Provider, Executor]:
    """One executor per configured provider, plus the local one. Raises InvalidArgument
    naming the variable when the configuration is half done or malformed."""
    http_options: dict[str, Any] = {
        "timeout_seconds": _number(env, "PROVIDER_HTTP_TIMEOUT_SECONDS", 10.0, 0.01),
        "retry": RetryPolicy(
            max_attempts=int(_number(env, "PROVIDER_MAX_ATTEMPTS", 4, 1)),
            max_rate_limit_wait_seconds=_number(env, "PROVIDER_MAX_RATE_LIMIT_WAIT_SECONDS", 60.0, 0),
        ),
        "clock": clock,
        "sleep": sleep,
    }
    executors: dict[Provider, Executor] = {}

    auth = _github_auth(env, clock)
    if auth is not None:
        github = GitHubClient.create(env.get("GITHUB_API_URL") or DEFAULT_GITHUB_API_URL, auth,
                                     **http_options)
        executors[Provider.PROVIDER_GITHUB_ACTIONS] = GitHubActionsExecutor(github, clock=clock)

    if _all_or_none(env, ("GITLAB_URL", "GITLAB_TOKEN")):
        gitlab = GitLabClient.create(env["GITLAB_URL"], env["GITLAB_TOKEN"], **http_options)
        executors[Provider.PROVIDER_GITLAB] = GitLabExecutor(gitlab, clock=clock)

    if _all_or_none(env, ("JENKINS_URL", "JENKINS_USER", "JENKINS_API_TOKEN")):
        jenkins = JenkinsClient.create(env["JENKINS_URL"], env["JENKINS_USER"], env["JENKINS_API_TOKEN"],
                                       **http_options)
        executors[Provider.PROVIDER_JENKINS] = JenkinsExecutor(jenkins, clock=clock)

    commands = {}
    for kind in ActionKind:
        variable = f"LOCAL_EXECUTOR_COMMAND_{kind.name}"
        if env.get(variable):
            commands[kind] = parse_command(env[variable], variable)
    local = LocalExecutor(commands=commands, clock=clock,
                          journal_path=env.get("LOCAL_EXECUTOR_JOURNAL") or None,
                          timeout_seconds=_number(env, "LOCAL_EXECUTOR_TIMEOUT_SECONDS", 300.0, 0.01))
    executors[Provider.PROVIDER_LOCAL] = local
    executors[Provider.PROVIDER_GENERIC] = local
    return executors


def executor_for(executors: Mapping[Provider, Executor], request: ActionRequest) -> Executor:
    """The executor that carries out this request.

    ESCALATE goes to the local executor whatever the provider (it notifies a human,
    it calls no CI API). Raises FailedPrecondition when no configured executor can do it.
    """
    if request.kind is ActionKind.ESCALATE:
        return executors[Provider.PROVIDER_LOCAL]
    executor = executors.get(request.provider)
    if executor is None:
        raise FailedPrecondition(
            f"no executor is configured for {request.provider.name}; set its URL and credentials "
            "(see services/coordinator/executors/registry.py) or escalate the action",
            reason="EXECUTOR_NOT_CONFIGURED",
        )
    if not executor.supports(request.kind):
        raise FailedPrecondition(
            f"the {request.provider.name} executor cannot carry out {request.kind.name}; escalate it instead",
            reason="ACTION_NOT_SUPPORTED",
        )
    return executor
