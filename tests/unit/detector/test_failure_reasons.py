"""Failure classes in GitLab's and GitHub's words, both ways."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass as FC
from services.detector.failure_reasons import (
    GITHUB_CONCLUSIONS,
    GITLAB_FAILURE_REASONS,
    class_from_github_conclusion,
    class_from_gitlab_failure_reason,
    github_conclusion,
    gitlab_failure_reason,
)

REAL_CLASSES = [fc for fc in FC if fc is not FC.FAILURE_CLASS_UNSPECIFIED]


def test_gitlab_documented_reasons_are_all_known() -> None:
    for reason in ["unknown_failure", "script_failure", "api_failure", "stuck_or_timeout_failure",
                   "runner_system_failure", "missing_dependency_failure", "runner_unsupported", "stale_schedule",
                   "job_execution_timeout", "archived_failure", "unmet_prerequisites", "scheduler_failure",
                   "data_integrity_failure"]:
        assert reason in GITLAB_FAILURE_REASONS
        assert class_from_gitlab_failure_reason(reason) in REAL_CLASSES


def test_github_documented_conclusions_are_all_known() -> None:
    assert {"success", "failure", "cancelled", "skipped", "timed_out", "action_required", "neutral",
            "stale"} <= GITHUB_CONCLUSIONS
    assert class_from_github_conclusion("success") is None
    assert class_from_github_conclusion("timed_out") is FC.TIMEOUT
    assert class_from_github_conclusion("failure") is FC.UNKNOWN


@pytest.mark.parametrize("fc", REAL_CLASSES)
def test_every_class_has_a_provider_value_that_exists(fc: FC) -> None:
    assert gitlab_failure_reason(fc) in GITLAB_FAILURE_REASONS
    assert github_conclusion(fc) in GITHUB_CONCLUSIONS
    assert class_from_github_conclusion(github_conclusion(fc)) is not None  # a failure stays a failure


def test_classes_with_their_own_provider_value_survive_the_round_trip() -> None:
    for fc in (FC.TIMEOUT, FC.INFRASTRUCTURE, FC.UNKNOWN):
        assert class_from_gitlab_failure_reason(gitlab_failure_reason(fc)) is fc
    assert class_from_github_conclusion(github_conclusion(FC.TIMEOUT)) is FC.TIMEOUT


def test_genuine_breaks_are_script_failures_to_gitlab() -> None:
    for fc in (FC.TEST_FAILURE, FC.COMPILE_ERROR, FC.LINT):
        assert gitlab_failure_reason(fc) == "script_failure"
    assert class_from_gitlab_failure_reason("script_failure") is FC.UNKNOWN  # the log must decide


def test_unrecognised_reasons_are_unknown_unless_strict() -> None:
    assert class_from_gitlab_failure_reason("some_future_failure") is FC.UNKNOWN
    assert class_from_gitlab_failure_reason(" Job_Execution_Timeout ") is FC.TIMEOUT
    with pytest.raises(InvalidArgument, match="failure_reason: unknown GitLab failure_reason 'x_failure'"):
        class_from_gitlab_failure_reason("x_failure", strict=True)
    with pytest.raises(InvalidArgument, match="failure_reason"):
        class_from_gitlab_failure_reason("  ")
    with pytest.raises(InvalidArgument, match="conclusion: must be one of"):
        class_from_github_conclusion("exploded")


def test_unspecified_class_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="failure_class"):
        gitlab_failure_reason(FC.FAILURE_CLASS_UNSPECIFIED)
    with pytest.raises(InvalidArgument, match="failure_class: must be one of"):
        github_conclusion(99)
