"""The GitLab executor against the loopback fake of GitLab's REST API v4."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import ActionRequest, ActionStatus, ProviderUnavailable
from services.coordinator.executors.gitlab import GitLabClient, GitLabExecutor
from services.coordinator.executors.http import RetryPolicy
from tests.fakes.clock import FakeClock
from tests.fakes.providers import FakeGitLab

RETRY_JOB = "/api/v4/projects/acme%2Fweb/jobs/500/retry"


@pytest.fixture
def gl() -> Iterator[FakeGitLab]:
    with FakeGitLab() as fake:
        fake.add_pipeline(17, 100, project_path="acme/web",
                          jobs=[{"id": 500, "name": "test", "status": "failed", "runner_id": 9},
                                {"id": 501, "name": "lint", "status": "success"}])
        fake.add_runner(9)
        yield fake


def make_executor(fake: FakeGitLab, *, token: str | None = None, timeout: float = 2.0,
                  max_attempts: int = 4) -> tuple[GitLabExecutor, FakeClock]:
    clock = FakeClock(now=time.time())
    client = GitLabClient.create(fake.base_url, token if token is not None else fake.token,
                                 timeout_seconds=timeout, retry=RetryPolicy(max_attempts=max_attempts),
                                 sleep=clock.sleep, clock=clock, random=lambda: 1.0)
    return GitLabExecutor(client, clock=clock), clock


def retry(**parameters: str) -> ActionRequest:
    return ActionRequest("a1", "k1", "acme", ActionKind.RETRY, Provider.PROVIDER_GITLAB,
                         {"project_id": "acme/web", "job_id": "500", **parameters})


def test_retry_job_uses_private_token_and_the_encoded_project_path(gl: FakeGitLab) -> None:
    executor, _ = make_executor(gl)
    result = executor.execute(retry())
    assert result.status is ActionStatus.SUCCEEDED, result.detail
    assert gl.count("POST", RETRY_JOB) == 1
    post = [c for c in gl.calls if c.method == "POST"][0]
    assert post.headers["private-token"] == gl.token
    new_job = [j for j in gl.latest_jobs(100) if j["name"] == "test"][0]
    assert new_job["id"] != 500 and new_job["status"] == "pending"
    assert result.provider_reference == new_job["web_url"]


def test_numeric_project_id_works_too(gl: FakeGitLab) -> None:
    executor, _ = make_executor(gl)
    assert executor.execute(retry(project_id="17")).status is ActionStatus.SUCCEEDED
    assert gl.count("POST", "/api/v4/projects/17/jobs/500/retry") == 1


def test_retrying_twice_retries_once(gl: FakeGitLab) -> None:
    executor, _ = make_executor(gl)
    assert executor.execute(retry()).status is ActionStatus.SUCCEEDED
    second = executor.execute(retry())
    assert second.status is ActionStatus.SKIPPED_ALREADY_DONE
    assert "already retried as job" in second.detail
    assert gl.count("POST", RETRY_JOB) == 1


def test_retry_pipeline_once(gl: FakeGitLab) -> None:
    executor, _ = make_executor(gl)
    request = retry(job_id="", pipeline_id="100")
    assert executor.execute(request).status is ActionStatus.SUCCEEDED
    assert executor.execute(request).status is ActionStatus.SKIPPED_ALREADY_DONE
    assert gl.count("POST", "/api/v4/projects/acme%2Fweb/pipelines/100/retry") == 1


def test_backoff_on_5xx_then_success(gl: FakeGitLab) -> None:
    executor, clock = make_executor(gl)
    gl.fail_next(1, status=500)
    assert executor.execute(retry()).status is ActionStatus.SUCCEEDED
    assert clock.sleeps == [0.5]


def test_429_retry_after(gl: FakeGitLab) -> None:
    executor, clock = make_executor(gl)
    gl.rate_limit_next(kind="429", retry_after=3)
    assert executor.execute(retry()).status is ActionStatus.SUCCEEDED
    assert clock.sleeps == [3.0]


def test_a_post_that_times_out_is_not_resent_and_the_next_attempt_skips(gl: FakeGitLab) -> None:
    executor, _ = make_executor(gl, timeout=0.3)
    original_route = gl._retry_job
    client_gave_up = threading.Event()

    def slow_retry(*args: object) -> object:
        gl.delay_seconds = 0  # only this answer is late
        reply = original_route(*args)  # type: ignore[arg-type]
        client_gave_up.wait(30)  # acted, but answers only once the client has timed out, on any machine
        return reply

    gl._retry_job = slow_retry  # type: ignore[method-assign]
    with pytest.raises(ProviderUnavailable, match="may or may not have acted"):
        executor.execute(retry())
    client_gave_up.set()
    assert gl.count("POST", RETRY_JOB) == 1
    again = executor.execute(retry())
    assert again.status is ActionStatus.SKIPPED_ALREADY_DONE
    assert gl.count("POST", RETRY_JOB) == 1


def test_bad_token_says_what_to_check(gl: FakeGitLab) -> None:
    executor, _ = make_executor(gl, token="nope")
    result = executor.execute(retry())
    assert result.status is ActionStatus.FAILED
    expected = "GitLab answered 401 for GET /api/v4/projects/acme%2Fweb/jobs/500 (401 Unauthorized)"
    assert expected in result.detail
    assert "GITLAB_TOKEN" in result.detail


def test_unknown_job_is_a_permanent_failure(gl: FakeGitLab) -> None:
    executor, _ = make_executor(gl)
    result = executor.execute(retry(job_id="999"))
    assert result.status is ActionStatus.FAILED
    assert "404" in result.detail and "check the project id" in result.detail
