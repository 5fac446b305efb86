"""Building executors from the environment and choosing one per request."""

from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import ActionRequest, ActionStatus
from services.coordinator.executors.github import GitHubActionsExecutor
from services.coordinator.executors.local import LocalExecutor
from services.coordinator.executors.registry import executor_for, executors_from_environment
from tests.fakes.providers import FakeGitHub, FakeGitLab, FakeJenkins


def test_only_local_without_configuration() -> None:
    executors = executors_from_environment({})
    assert set(executors) == {Provider.PROVIDER_LOCAL, Provider.PROVIDER_GENERIC}
    assert isinstance(executors[Provider.PROVIDER_LOCAL], LocalExecutor)


def test_half_configured_provider_names_the_missing_variable() -> None:
    with pytest.raises(InvalidArgument, match="JENKINS_API_TOKEN"):
        executors_from_environment({"JENKINS_URL": "http://127.0.0.1:1", "JENKINS_USER": "u"})
    with pytest.raises(InvalidArgument, match="GITHUB_APP_PRIVATE_KEY"):
        executors_from_environment({"GITHUB_APP_ID": "1", "GITHUB_APP_INSTALLATION_ID": "2"})
    with pytest.raises(InvalidArgument, match="PROVIDER_HTTP_TIMEOUT_SECONDS"):
        executors_from_environment({"PROVIDER_HTTP_TIMEOUT_SECONDS": "soon"})
    with pytest.raises(InvalidArgument, match="LOCAL_EXECUTOR_COMMAND_RETRY"):
        executors_from_environment({"LOCAL_EXECUTOR_COMMAND_RETRY": "./retry.sh {job}"})


def test_executors_point_at_the_fakes_and_work() -> None:
    with FakeGitHub() as gh, FakeGitLab() as gl, FakeJenkins() as jenkins:
        gh.add_run("acme/web", 42)
        env = {"GITHUB_API_URL": gh.base_url, "GITHUB_TOKEN": gh.token,
               "GITLAB_URL": gl.base_url, "GITLAB_TOKEN": gl.token,
               "JENKINS_URL": jenkins.base_url, "JENKINS_USER": jenkins.user,
               "JENKINS_API_TOKEN": jenkins.api_token,
               "LOCAL_EXECUTOR_COMMAND_RETRY": '["true"]'}
        executors = executors_from_environment(env)
        assert set(executors) == set(Provider) - {Provider.PROVIDER_UNSPECIFIED}
        request = ActionRequest("a", "k", "acme", ActionKind.RETRY, Provider.PROVIDER_GITHUB_ACTIONS,
                                {"repository": "acme/web", "run_id": "42", "run_attempt": "1"})
        executor = executor_for(executors, request)
        assert isinstance(executor, GitHubActionsExecutor)
        assert executor.execute(request).status is ActionStatus.SUCCEEDED
        assert gh.count("POST", "/repos/acme/web/actions/runs/42/rerun-failed-jobs") == 1


def test_executor_for_routes_escalations_to_local_and_refuses_what_nobody_can_do() -> None:
    executors = executors_from_environment({})
    escalate = ActionRequest("a", "k", "acme", ActionKind.ESCALATE, Provider.PROVIDER_GITHUB_ACTIONS, {})
    assert executor_for(executors, escalate) is executors[Provider.PROVIDER_LOCAL]
    retry = ActionRequest("a", "k", "acme", ActionKind.RETRY, Provider.PROVIDER_GITLAB, {})
    with pytest.raises(FailedPrecondition, match="no executor is configured for PROVIDER_GITLAB"):
        executor_for(executors, retry)
    with FakeGitHub() as gh:
        executors = executors_from_environment({"GITHUB_API_URL": gh.base_url, "GITHUB_TOKEN": "t"})
        quarantine = ActionRequest("a", "k", "acme", ActionKind.QUARANTINE_TEST,
                                   Provider.PROVIDER_GITHUB_ACTIONS, {})
        with pytest.raises(FailedPrecondition, match="cannot carry out QUARANTINE_TEST"):
            executor_for(executors, quarantine)


def test_action_request_round_trips_through_its_dict() -> None:
    request = ActionRequest("a", "k", "acme", ActionKind.RETRY_ON_FRESH_RUNNER, Provider.PROVIDER_JENKINS,
                            {"runner_name": "agent-3"}, attempt=2, not_before=12.5)
    assert ActionRequest.from_dict(request.to_dict()) == request
