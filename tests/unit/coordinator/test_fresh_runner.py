"""Retry on a fresh runner: drain, re-run, restore, at each provider, and after a crash."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from services.common.errors import InvalidArgument
from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import ActionRequest, ActionStatus, ProviderUnavailable
from services.coordinator.executors.fresh_runner import plan_fresh_runner
from services.coordinator.executors.github import GitHubActionsExecutor, GitHubClient, TokenAuth
from services.coordinator.executors.gitlab import GitLabClient, GitLabExecutor
from services.coordinator.executors.jenkins import JenkinsClient, JenkinsExecutor
from services.coordinator.executors.local import LocalExecutor
from tests.fakes.clock import FakeClock
from tests.fakes.providers import FakeGitHub, FakeGitLab, FakeJenkins


def fresh(provider: Provider, **parameters: str) -> ActionRequest:
    return ActionRequest("act-9", "plan-1/0", "acme", ActionKind.RETRY_ON_FRESH_RUNNER, provider, parameters)


def test_plan_has_three_durable_steps_with_their_own_keys_and_a_later_restore() -> None:
    steps = plan_fresh_runner(fresh(Provider.PROVIDER_GITLAB, project_id="17", job_id="500", runner_id="9"),
                              now=1000.0, restore_after_seconds=600, health_grace_seconds=3600)
    assert [s.parameters["step"] for s in steps] == ["drain", "rerun", "restore"]
    assert [s.idempotency_key for s in steps] == ["plan-1/0:drain", "plan-1/0:rerun", "plan-1/0:restore"]
    assert len({s.action_id for s in steps}) == 3
    assert steps[2].not_before == 1600.0
    assert float(steps[2].parameters["restore_deadline"]) == 5200.0
    assert all(s.parameters["runner_id"] == "9" for s in steps)


def test_plan_refuses_a_request_that_does_not_name_the_runner() -> None:
    with pytest.raises(InvalidArgument, match="runner_label"):
        plan_fresh_runner(fresh(Provider.PROVIDER_GITHUB_ACTIONS, repository="acme/web", runner_id="5"),
                          now=0)
    with pytest.raises(InvalidArgument, match="RETRY_ON_FRESH_RUNNER"):
        plan_fresh_runner(ActionRequest("a", "k", "t", ActionKind.RETRY, Provider.PROVIDER_GITLAB, {}), now=0)


# -- GitHub: the routing label -------------------------------------------------------


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHub, GitHubActionsExecutor, FakeClock]]:
    with FakeGitHub() as gh:
        gh.add_run("acme/web", 42)
        gh.add_runner("acme/web", 5, labels=["self-hosted", "linux", "gpu-pool"])
        clock = FakeClock(now=time.time())
        client = GitHubClient.create(gh.base_url, TokenAuth(gh.token), sleep=clock.sleep, clock=clock)
        yield gh, GitHubActionsExecutor(client, clock=clock), clock


def test_github_drains_reruns_and_restores(github: tuple[FakeGitHub, GitHubActionsExecutor,
                                                         FakeClock]) -> None:
    gh, executor, clock = github
    drain, rerun, restore = plan_fresh_runner(
        fresh(Provider.PROVIDER_GITHUB_ACTIONS, repository="acme/web", run_id="42", run_attempt="1",
              runner_id="5", runner_label="gpu-pool"), now=clock())

    assert executor.execute(drain).status is ActionStatus.SUCCEEDED
    assert gh.runner_labels(5) == ["self-hosted", "linux"]
    assert gh.count("DELETE", "/repos/acme/web/actions/runners/5/labels/gpu-pool") == 1

    assert executor.execute(rerun).status is ActionStatus.SUCCEEDED
    assert gh.run(42)["run_attempt"] == 2

    result = executor.execute(restore)
    assert result.status is ActionStatus.SUCCEEDED, result.detail
    assert "passed its health check" in result.detail
    assert gh.runner_labels(5) == ["self-hosted", "linux", "gpu-pool"]
    add = [c for c in gh.calls if c.method == "POST" and c.path.endswith("/labels")][0]
    assert add.body == {"labels": ["gpu-pool"]}


def test_every_github_step_is_idempotent(github: tuple[FakeGitHub, GitHubActionsExecutor, FakeClock]) -> None:
    gh, executor, clock = github
    steps = plan_fresh_runner(
        fresh(Provider.PROVIDER_GITHUB_ACTIONS, repository="acme/web", run_id="42", run_attempt="1",
              runner_id="5", runner_label="gpu-pool"), now=clock())
    for step in steps:
        assert executor.execute(step).status is ActionStatus.SUCCEEDED
        assert executor.execute(step).status is ActionStatus.SKIPPED_ALREADY_DONE
    assert gh.count("DELETE", "/repos/acme/web/actions/runners/5/labels/gpu-pool") == 1
    assert gh.count("POST", "/repos/acme/web/actions/runs/42/rerun-failed-jobs") == 1
    assert gh.count("POST", "/repos/acme/web/actions/runners/5/labels") == 1


def test_an_unhealthy_runner_stays_out_until_the_deadline_then_comes_back(
    github: tuple[FakeGitHub, GitHubActionsExecutor, FakeClock],
) -> None:
    gh, executor, clock = github
    drain, _, restore = plan_fresh_runner(
        fresh(Provider.PROVIDER_GITHUB_ACTIONS, repository="acme/web", run_id="42", runner_id="5",
              runner_label="gpu-pool"), now=clock(), restore_after_seconds=600, health_grace_seconds=1800)
    executor.execute(drain)
    gh.set_runner_status(5, "offline")
    clock.advance(600)
    with pytest.raises(ProviderUnavailable, match="not healthy yet") as raised:
        executor.execute(restore)
    assert 0 < raised.value.retry_after_seconds <= 60
    assert "gpu-pool" not in gh.runner_labels(5)

    clock.advance(1801)  # past the deadline: never leave a runner out for good
    result = executor.execute(restore)
    assert result.status is ActionStatus.SUCCEEDED
    assert "deadline passed" in result.detail
    assert "gpu-pool" in gh.runner_labels(5)


# -- GitLab: pause the runner ------------------------------------------------------


def test_gitlab_pauses_retries_and_unpauses_and_a_restore_after_a_crash_is_idempotent() -> None:
    with FakeGitLab() as gl:
        gl.add_pipeline(17, 100, jobs=[{"id": 500, "name": "test", "status": "failed", "runner_id": 9}])
        gl.add_runner(9)
        executor = GitLabExecutor(GitLabClient.create(gl.base_url, gl.token))
        drain, rerun, restore = plan_fresh_runner(
            fresh(Provider.PROVIDER_GITLAB, project_id="17", job_id="500", runner_id="9"), now=time.time())

        assert executor.execute(drain).status is ActionStatus.SUCCEEDED
        assert gl.runner(9)["paused"] is True
        put = [c for c in gl.calls if c.method == "PUT"][0]
        assert (put.path, put.body) == ("/api/v4/runners/9", {"paused": "true"})
        assert executor.execute(rerun).status is ActionStatus.SUCCEEDED

        # The coordinator crashes here. Later, the new leader runs the persisted restore,
        # and the one after it (lease lost mid-way) runs it again.
        restarted = GitLabExecutor(GitLabClient.create(gl.base_url, gl.token))
        assert restarted.execute(restore).status is ActionStatus.SUCCEEDED
        assert gl.runner(9)["paused"] is False
        assert restarted.execute(restore).status is ActionStatus.SKIPPED_ALREADY_DONE
        assert len([c for c in gl.calls if c.method == "PUT"]) == 2


# -- Jenkins: node temporarily offline ---------------------------------------------


def test_jenkins_marks_the_node_offline_with_a_reason_and_brings_it_back() -> None:
    with FakeJenkins() as jenkins:
        jenkins.add_job("web", builds=[{"number": 7, "result": "FAILURE"}])
        jenkins.add_node("agent-3")
        executor = JenkinsExecutor(JenkinsClient.create(jenkins.base_url, jenkins.user, jenkins.api_token))
        drain, rerun, restore = plan_fresh_runner(
            fresh(Provider.PROVIDER_JENKINS, job_name="web", build_number="7", runner_name="agent-3"),
            now=time.time())

        assert executor.execute(drain).status is ActionStatus.SUCCEEDED
        node = jenkins.node("agent-3")
        assert node["temporarilyOffline"] is True
        assert "act-9:drain" in node["offlineCauseReason"]
        assert executor.execute(drain).status is ActionStatus.SKIPPED_ALREADY_DONE  # toggle not flipped back
        assert jenkins.node("agent-3")["temporarilyOffline"] is True

        assert executor.execute(rerun).status is ActionStatus.SUCCEEDED
        assert executor.execute(restore).status is ActionStatus.SUCCEEDED
        assert executor.execute(restore).status is ActionStatus.SKIPPED_ALREADY_DONE
        assert jenkins.node("agent-3")["temporarilyOffline"] is False
        assert jenkins.count("POST", "/computer/agent-3/toggleOffline") == 2


def test_jenkins_health_check_sees_a_disconnected_agent() -> None:
    with FakeJenkins() as jenkins:
        jenkins.add_node("agent-3", temporarily_offline=True)
        jenkins.set_node_connected("agent-3", False)
        clock = FakeClock(now=time.time())
        executor = JenkinsExecutor(JenkinsClient.create(jenkins.base_url, jenkins.user, jenkins.api_token),
                                   clock=clock)
        restore = plan_fresh_runner(fresh(Provider.PROVIDER_JENKINS, job_name="web", build_number="7",
                                          runner_name="agent-3"), now=clock(), restore_after_seconds=0)[2]
        with pytest.raises(ProviderUnavailable, match="agent not connected"):
            executor.execute(restore)
        jenkins.set_node_connected("agent-3", True)
        assert executor.execute(restore).status is ActionStatus.SUCCEEDED


# -- local ---------------------------------------------------------------------------


def test_local_executor_simulates_the_steps() -> None:
    executor = LocalExecutor(clock=FakeClock())
    drain, rerun, restore = plan_fresh_runner(fresh(Provider.PROVIDER_LOCAL, runner_name="box-1"), now=0)
    assert executor.execute(drain).status is ActionStatus.SUCCEEDED
    assert executor.runners_out_of_rotation() == {"box-1"}
    assert executor.execute(rerun).status is ActionStatus.SUCCEEDED
    assert executor.execute(restore).status is ActionStatus.SUCCEEDED
    assert executor.runners_out_of_rotation() == set()


def test_a_fresh_runner_action_that_was_not_planned_fails_plainly() -> None:
    executor = LocalExecutor(clock=FakeClock())
    with FakeGitLab() as gl:
        gitlab = GitLabExecutor(GitLabClient.create(gl.base_url, gl.token))
        result = gitlab.execute(fresh(Provider.PROVIDER_GITLAB, runner_id="9"))
        assert result.status is ActionStatus.FAILED
        assert "plan_fresh_runner" in result.detail
        assert gl.calls == []
    assert executor.execute(fresh(Provider.PROVIDER_LOCAL)).status is ActionStatus.SUCCEEDED
