"""The Jenkins executor against the loopback fake of Jenkins' remote access API."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import ActionRequest, ActionStatus
from services.coordinator.executors.http import RetryPolicy
from services.coordinator.executors.jenkins import JenkinsClient, JenkinsExecutor
from tests.fakes.clock import FakeClock
from tests.fakes.providers import FakeJenkins

BUILD = "/job/platform/job/web/buildWithParameters"


@pytest.fixture
def jenkins() -> Iterator[FakeJenkins]:
    with FakeJenkins() as fake:
        fake.add_job("platform/web", builds=[{"number": 6, "result": "SUCCESS"}, {"number": 7,
                                                                                  "result": "FAILURE"}])
        fake.state["jobs"]["platform/web"]["builds"][1]["parameters"] = {"BRANCH": "main",
                                                                         "REVISION": "abc123"}
        fake.add_node("agent-3")
        yield fake


def make_executor(fake: FakeJenkins, *, api_token: str | None = None) -> tuple[JenkinsExecutor, FakeClock]:
    clock = FakeClock(now=time.time())
    client = JenkinsClient.create(fake.base_url, fake.user,
                                  api_token if api_token is not None else fake.api_token,
                                  timeout_seconds=2.0, retry=RetryPolicy(max_attempts=3),
                                  sleep=clock.sleep, clock=clock, random=lambda: 1.0)
    return JenkinsExecutor(client, clock=clock), clock


def retry(**parameters: str) -> ActionRequest:
    return ActionRequest("a1", "k1", "acme", ActionKind.RETRY, Provider.PROVIDER_JENKINS,
                         {"job_name": "platform/web", "build_number": "7", **parameters})


def test_build_carries_crumb_cookie_and_the_failed_builds_parameters(jenkins: FakeJenkins) -> None:
    executor, _ = make_executor(jenkins)
    result = executor.execute(retry())
    assert result.status is ActionStatus.SUCCEEDED, result.detail
    assert result.provider_reference.startswith(f"{jenkins.base_url}/queue/item/")
    assert jenkins.count("GET", "/crumbIssuer/api/json") == 1
    post = [c for c in jenkins.calls if c.method == "POST"][0]
    assert post.path == BUILD
    assert post.query == {"BRANCH": "main", "REVISION": "abc123"}
    assert post.headers["jenkins-crumb"]
    assert "JSESSIONID" in post.headers["cookie"]
    assert post.headers["authorization"].startswith("Basic ")
    assert post.status == 201
    assert [b["number"] for b in jenkins.builds("platform/web")] == [6, 7, 8]


def test_building_twice_builds_once(jenkins: FakeJenkins) -> None:
    executor, _ = make_executor(jenkins)
    assert executor.execute(retry()).status is ActionStatus.SUCCEEDED
    second = executor.execute(retry())
    assert second.status is ActionStatus.SKIPPED_ALREADY_DONE
    assert "last build #8" in second.detail
    assert jenkins.count("POST", BUILD) == 1


def test_a_stale_crumb_is_fetched_again(jenkins: FakeJenkins) -> None:
    executor, _ = make_executor(jenkins)
    executor.client._crumb = ("Jenkins-Crumb", "stale")  # e.g. Jenkins restarted since we fetched it
    assert executor.execute(retry()).status is ActionStatus.SUCCEEDED
    assert [c.status for c in jenkins.calls if c.method == "POST"] == [403, 201]
    assert len(jenkins.builds("platform/web")) == 3


def test_without_crumb_jenkins_refuses(jenkins: FakeJenkins) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(jenkins.base_url + BUILD, method="POST", data=b"",
                                     headers={"Authorization": executor_auth(jenkins)})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=2)
    assert raised.value.code == 403


def executor_auth(fake: FakeJenkins) -> str:
    from services.coordinator.executors.http import basic_authorization

    return basic_authorization(fake.user, fake.api_token)


def test_bad_api_token_says_what_to_check(jenkins: FakeJenkins) -> None:
    executor, _ = make_executor(jenkins, api_token="wrong")
    result = executor.execute(retry())
    assert result.status is ActionStatus.FAILED
    assert "Jenkins answered 401 for GET /job/platform/job/web/api/json" in result.detail
    assert "JENKINS_API_TOKEN" in result.detail


def test_backoff_on_5xx(jenkins: FakeJenkins) -> None:
    executor, clock = make_executor(jenkins)
    jenkins.fail_next(2, status=503)
    assert executor.execute(retry()).status is ActionStatus.SUCCEEDED
    assert clock.sleeps == [0.5, 1.0]
