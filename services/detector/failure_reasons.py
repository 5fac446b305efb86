"""Failure classes in the providers' own words, both ways.

Forward (class -> provider value): what the provider itself would call a job that
failed this way, e.g. to compare our diagnosis with GitLab's `failure_reason` or to
write `retry:when` rules. Backward (provider value -> prior class): what the
provider's verdict alone says before the log is read; `UNKNOWN` means "a failure,
but the provider's word does not say which kind" (GitLab's `script_failure` covers
everything from a typo to a full disk), `None` means "not a failure at all".

GitLab values are the `failure_reason` enum of CI jobs (Jobs API, job webhooks,
`retry:when`), including the finer stuck/timeout reasons that GitLab 19.0 added in
place of `stuck_or_timeout_failure`. GitHub values are the job/check-run
`conclusion`s. Note GitLab's `missing_dependency_failure` is about *artifacts* of
earlier jobs, not packages.
"""

from __future__ import annotations

import logging

from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass as FC

log = logging.getLogger(__name__)

# GitLab's failure_reason -> the class it suggests before the log is read.
GITLAB_PRIOR: dict[str, FC] = {
    "unknown_failure": FC.UNKNOWN,
    "script_failure": FC.UNKNOWN,  # the job's own commands failed: the log decides
    "api_failure": FC.INFRASTRUCTURE,
    "stuck_or_timeout_failure": FC.TIMEOUT,
    "runner_system_failure": FC.INFRASTRUCTURE,
    "missing_dependency_failure": FC.DEPENDENCY_FETCH,  # artifacts of an earlier job
    "runner_unsupported": FC.INFRASTRUCTURE,
    "stale_schedule": FC.INFRASTRUCTURE,
    "job_execution_timeout": FC.TIMEOUT,
    "archived_failure": FC.CONFIGURATION,
    "unmet_prerequisites": FC.CONFIGURATION,
    "scheduler_failure": FC.INFRASTRUCTURE,
    "data_integrity_failure": FC.INFRASTRUCTURE,
    "forward_deployment_failure": FC.CONFIGURATION,
    "user_blocked": FC.PERMISSION,
    "project_deleted": FC.CONFIGURATION,
    "ci_quota_exceeded": FC.INFRASTRUCTURE,
    "pipeline_loop_detected": FC.CONFIGURATION,
    "no_matching_runner": FC.CONFIGURATION,  # no runner carries the job's tags
    "trace_size_exceeded": FC.CONFIGURATION,
    "builds_disabled": FC.CONFIGURATION,
    "environment_creation_failure": FC.INFRASTRUCTURE,
    "deployment_rejected": FC.PERMISSION,
    "failed_outdated_deployment_job": FC.CONFIGURATION,
    "protected_environment_failure": FC.PERMISSION,
    "insufficient_bridge_permissions": FC.PERMISSION,
    "downstream_bridge_project_not_found": FC.CONFIGURATION,
    "invalid_bridge_trigger": FC.CONFIGURATION,
    "upstream_bridge_project_not_found": FC.CONFIGURATION,
    "bridge_pipeline_is_child_pipeline": FC.CONFIGURATION,
    "downstream_pipeline_creation_failed": FC.CONFIGURATION,
    "secrets_provider_not_found": FC.CONFIGURATION,
    "reached_max_descendant_pipelines_depth": FC.CONFIGURATION,
    "reached_max_pipeline_hierarchy_size": FC.CONFIGURATION,
    "ip_restriction_failure": FC.PERMISSION,
    "job_token_expired": FC.PERMISSION,
    "job_router_failure": FC.INFRASTRUCTURE,
    # GitLab 19.0 split stuck_or_timeout_failure into these:
    "stuck_pending_with_matching_runners": FC.INFRASTRUCTURE,
    "stuck_pending_no_matching_runners": FC.CONFIGURATION,
    "no_updates_running": FC.INFRASTRUCTURE,  # the runner stopped reporting
    "no_updates_canceling": FC.INFRASTRUCTURE,
    "server_timeout_running": FC.TIMEOUT,
    "server_timeout_canceling": FC.TIMEOUT,
}

GITLAB_FAILURE_REASONS: frozenset[str] = frozenset(GITLAB_PRIOR)

# Class -> the failure_reason GitLab reports for a job that fails this way.
# Everything that happens inside the job's script is a script_failure to GitLab.
GITLAB_REASON_FOR_CLASS: dict[FC, str] = {
    FC.FLAKY_TEST: "script_failure",
    FC.TEST_FAILURE: "script_failure",
    FC.COMPILE_ERROR: "script_failure",
    FC.LINT: "script_failure",
    FC.DEPENDENCY_FETCH: "script_failure",
    FC.NETWORK: "script_failure",
    FC.OUT_OF_MEMORY: "script_failure",
    FC.DISK_FULL: "script_failure",
    FC.TIMEOUT: "job_execution_timeout",
    FC.INFRASTRUCTURE: "runner_system_failure",
    FC.CONFIGURATION: "script_failure",
    FC.PERMISSION: "script_failure",
    FC.UNKNOWN: "unknown_failure",
}

# GitHub Actions job / check-run conclusions -> prior class; None: not a failure.
GITHUB_PRIOR: dict[str, FC | None] = {
    "success": None,
    "skipped": None,
    "neutral": None,
    "failure": FC.UNKNOWN,  # a step exited non-zero: the log decides
    "timed_out": FC.TIMEOUT,
    "cancelled": FC.UNKNOWN,  # by a person, a newer push, or a runner that went away
    "action_required": FC.PERMISSION,  # waits for an approval (e.g. first-time contributor)
    "stale": FC.INFRASTRUCTURE,  # never completed; GitHub gave up on it
    "startup_failure": FC.CONFIGURATION,  # workflow could not start (invalid file, bad action ref)
}

GITHUB_CONCLUSIONS: frozenset[str] = frozenset(GITHUB_PRIOR)

GITHUB_CONCLUSION_FOR_CLASS: dict[FC, str] = {
    **{fc: "failure" for fc in FC if fc is not FC.FAILURE_CLASS_UNSPECIFIED},
    FC.TIMEOUT: "timed_out",
}


def _check_class(failure_class: FC | int) -> FC:
    try:
        fc = FC(failure_class)
    except ValueError:
        raise InvalidArgument("failure_class", f"must be one of 1..{max(FC)}, got {failure_class}") from None
    if fc is FC.FAILURE_CLASS_UNSPECIFIED:
        raise InvalidArgument("failure_class", "must be set (FAILURE_CLASS_UNSPECIFIED has no provider value)")
    return fc


def gitlab_failure_reason(failure_class: FC | int) -> str:
    """The `failure_reason` GitLab reports for a job that failed with this class."""
    return GITLAB_REASON_FOR_CLASS[_check_class(failure_class)]


def github_conclusion(failure_class: FC | int) -> str:
    """The job `conclusion` GitHub Actions reports for a job that failed with this class."""
    return GITHUB_CONCLUSION_FOR_CLASS[_check_class(failure_class)]


def class_from_gitlab_failure_reason(reason: str, *, strict: bool = False) -> FC:
    """The prior class for a GitLab `failure_reason`.

    GitLab adds reasons in most releases, so an unrecognised but well-formed reason is
    UNKNOWN (and logged) unless `strict`, when it is an InvalidArgument.
    """
    key = reason.strip().lower()
    if not key:
        raise InvalidArgument("failure_reason", "must be a GitLab failure_reason such as 'script_failure', got ''")
    if key in GITLAB_PRIOR:
        return GITLAB_PRIOR[key]
    if strict:
        raise InvalidArgument("failure_reason", f"unknown GitLab failure_reason {reason!r}; "
                                                f"known: {', '.join(sorted(GITLAB_PRIOR))}")
    log.warning("unrecognised GitLab failure_reason %r treated as UNKNOWN", reason)
    return FC.UNKNOWN


def class_from_github_conclusion(conclusion: str) -> FC | None:
    """The prior class for a GitHub Actions job `conclusion`; None when it is not a failure."""
    key = conclusion.strip().lower()
    if key not in GITHUB_PRIOR:
        raise InvalidArgument("conclusion", f"must be one of {', '.join(sorted(GITHUB_PRIOR))}, got {conclusion!r}")
    return GITHUB_PRIOR[key]
