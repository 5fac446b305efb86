"""The GitHub Actions executor against the loopback fake of GitHub's REST API."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import ActionRequest, ActionStatus, ProviderUnavailable
from services.coordinator.executors.github import (
    GitHubActionsExecutor,
    GitHubAppAuth,
    GitHubClient,
    TokenAuth,
)
from services.coordinator.executors.http import RetryPolicy
from tests.fakes.clock import FakeClock
from tests.fakes.providers import FakeGitHub

RERUN = "/repos/acme/web/actions/runs/42/rerun-failed-jobs"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        fake.add_run("acme/web", 42, run_attempt=1, conclusion="failure",
                     jobs=[{"id": 7, "name": "test", "conclusion": "failure"},
                           {"id": 8, "name": "lint", "conclusion": "success"}])
        yield fake


def make_executor(fake: FakeGitHub, *, token: str | None = None, timeout: float = 2.0,
                  clock: FakeClock | None = None, max_attempts: int = 4,
                  max_rate_limit_wait: float = 60.0) -> tuple[GitHubActionsExecutor, FakeClock]:
    clock = clock or FakeClock(now=time.time())
    client = GitHubClient.create(
        fake.base_url, TokenAuth(token if token is not None else fake.token), timeout_seconds=timeout,
        retry=RetryPolicy(max_attempts=max_attempts, max_rate_limit_wait_seconds=max_rate_limit_wait),
        sleep=clock.sleep, clock=clock, random=lambda: 1.0,
    )
    return GitHubActionsExecutor(client, clock=clock), clock


def retry(**parameters: str) -> ActionRequest:
    return ActionRequest(action_id="a1", idempotency_key="k1", tenant="acme", kind=ActionKind.RETRY,
                         provider=Provider.PROVIDER_GITHUB_ACTIONS,
                         parameters={"repository": "acme/web", "run_id": "42", "run_attempt": "1",
                                     **parameters})


def test_rerun_failed_jobs_sends_the_documented_request(gh: FakeGitHub) -> None:
    executor, _ = make_executor(gh)
    result = executor.execute(retry())

    assert result.status is ActionStatus.SUCCEEDED, result.detail
    assert result.provider_reference == "https://github.com/acme/web/actions/runs/42/attempts/2"
    assert gh.count("POST", RERUN) == 1
    post = [c for c in gh.calls if c.method == "POST"][0]
    assert post.headers["authorization"] == f"Bearer {gh.token}"
    assert post.headers["accept"] == "application/vnd.github+json"
    assert post.headers["x-github-api-version"] == "2022-11-28"
    assert gh.run(42)["run_attempt"] == 2
    assert result.calls_made == 2  # read the run, then re-run


def test_executing_twice_reruns_once(gh: FakeGitHub) -> None:
    executor, _ = make_executor(gh)
    first = executor.execute(retry())
    second = executor.execute(retry())

    assert first.status is ActionStatus.SUCCEEDED
    assert second.status is ActionStatus.SKIPPED_ALREADY_DONE
    assert "already re-run" in second.detail
    assert gh.count("POST", RERUN) == 1


def test_without_run_attempt_a_run_running_again_is_not_rerun(gh: FakeGitHub) -> None:
    executor, _ = make_executor(gh)
    request = retry(run_attempt="")
    assert executor.execute(request).status is ActionStatus.SUCCEEDED
    assert executor.execute(request).status is ActionStatus.SKIPPED_ALREADY_DONE
    assert gh.count("POST", RERUN) == 1


def test_rerun_while_the_failed_attempt_still_runs_is_retried_later(gh: FakeGitHub) -> None:
    gh.add_run("acme/web", 43, status="in_progress", conclusion=None)
    executor, _ = make_executor(gh)
    with pytest.raises(ProviderUnavailable, match="still in_progress") as raised:
        executor.execute(retry(run_id="43"))
    assert raised.value.retry_after_seconds > 0
    assert gh.count("POST", "/repos/acme/web/actions/runs/43/rerun-failed-jobs") == 0


def test_already_running_answer_after_a_race_is_skipped(gh: FakeGitHub) -> None:
    """Someone re-runs between our read and our POST: GitHub answers 403, we look again."""
    executor, _ = make_executor(gh)
    original_get_run = executor.client.get_run
    reads = []

    def get_run_then_someone_reruns(repository: str, run_id: int) -> dict:
        run = original_get_run(repository, run_id)
        if not reads:
            gh.state["runs"]["42"].update(run_attempt=2, status="queued", conclusion=None)
        reads.append(run)
        return run

    executor.client.get_run = get_run_then_someone_reruns  # type: ignore[method-assign]
    result = executor.execute(retry())
    assert result.status is ActionStatus.SKIPPED_ALREADY_DONE, result.detail
    assert gh.count("POST", RERUN) == 1  # the one that got 403
    assert [c.status for c in gh.calls if c.method == "POST"] == [403]


def test_rerun_one_job(gh: FakeGitHub) -> None:
    executor, _ = make_executor(gh)
    request = retry(job_id="7", run_id="")
    first = executor.execute(request)
    second = executor.execute(request)
    assert first.status is ActionStatus.SUCCEEDED, first.detail
    assert second.status is ActionStatus.SKIPPED_ALREADY_DONE
    assert gh.count("POST", "/repos/acme/web/actions/jobs/7/rerun") == 1


def test_backs_off_on_5xx_then_succeeds(gh: FakeGitHub) -> None:
    executor, clock = make_executor(gh)
    gh.fail_next(2, status=502)
    result = executor.execute(retry())
    assert result.status is ActionStatus.SUCCEEDED
    assert clock.sleeps == [0.5, 1.0]  # exponential; jitter pinned to its ceiling
    assert result.calls_made == 4


def test_5xx_exhaustion_raises_provider_unavailable(gh: FakeGitHub) -> None:
    executor, clock = make_executor(gh, max_attempts=3)
    gh.fail_next(5, status=503)
    with pytest.raises(ProviderUnavailable,
                       match="answered 503 for GET /repos/acme/web/actions/runs/42 3 times"):
        executor.execute(retry())
    assert len(clock.sleeps) == 2
    assert gh.count("POST", RERUN) == 0


def test_429_with_retry_after_is_honoured(gh: FakeGitHub) -> None:
    executor, clock = make_executor(gh)
    gh.rate_limit_next(kind="429", retry_after=7)
    assert executor.execute(retry()).status is ActionStatus.SUCCEEDED
    assert clock.sleeps == [7.0]


def test_403_primary_rate_limit_waits_until_reset(gh: FakeGitHub) -> None:
    executor, clock = make_executor(gh)
    gh.rate_limit_next(kind="403", reset_in=5)
    assert executor.execute(retry()).status is ActionStatus.SUCCEEDED
    assert len(clock.sleeps) == 1
    assert 4.0 <= clock.sleeps[0] <= 7.0


def test_a_rate_limit_longer_than_allowed_goes_back_to_the_coordinator(gh: FakeGitHub) -> None:
    executor, clock = make_executor(gh, max_rate_limit_wait=10)
    gh.rate_limit_next(kind="429", retry_after=120)
    with pytest.raises(ProviderUnavailable, match="rate limit") as raised:
        executor.execute(retry())
    assert raised.value.retry_after_seconds == 120
    assert clock.sleeps == []


def test_slow_provider_times_out(gh: FakeGitHub) -> None:
    executor, clock = make_executor(gh, timeout=0.2, max_attempts=2)
    gh.delay_seconds = 60.0  # never answers within the test (stop() wakes the handler)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable,
                       match="did not answer GET /repos/acme/web/actions/runs/42 within 0.2 s"):
        executor.execute(retry())
    # It gave up at its own timeout, long before the provider would have answered: the
    # margin (30 s against 2 x 0.2 s) holds on any machine, however loaded.
    assert time.monotonic() - started < 30
    assert gh.count("POST", RERUN) == 0


def test_bad_token_fails_with_what_to_do(gh: FakeGitHub) -> None:
    executor, _ = make_executor(gh, token="wrong")
    result = executor.execute(retry())
    assert result.status is ActionStatus.FAILED
    assert "GitHub answered 401 for GET /repos/acme/web/actions/runs/42 (Bad credentials)" in result.detail
    assert "GITHUB_TOKEN" in result.detail


def test_unknown_run_fails_naming_the_run(gh: FakeGitHub) -> None:
    executor, _ = make_executor(gh)
    result = executor.execute(retry(run_id="999"))
    assert result.status is ActionStatus.FAILED
    assert "404 for GET /repos/acme/web/actions/runs/999" in result.detail
    assert "check the repository and run id" in result.detail


def test_missing_parameters_fail_without_calls(gh: FakeGitHub) -> None:
    executor, _ = make_executor(gh)
    result = executor.execute(retry(repository="no-slash"))
    assert result.status is ActionStatus.FAILED
    assert "parameters['repository']" in result.detail
    assert gh.calls == []


def test_unsupported_kind_fails_plainly(gh: FakeGitHub) -> None:
    executor, _ = make_executor(gh)
    request = ActionRequest("a", "k", "acme", ActionKind.QUARANTINE_TEST, Provider.PROVIDER_GITHUB_ACTIONS,
                            {})
    assert not executor.supports(ActionKind.QUARANTINE_TEST)
    assert executor.execute(request).status is ActionStatus.FAILED


# -- GitHub App ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def test_github_app_installation_token_is_minted_and_cached(app_key: tuple[str, str]) -> None:
    private, public = app_key
    with FakeGitHub(tokens=(), app_id="321", app_public_key_pem=public) as gh:
        gh.add_run("acme/web", 42)
        gh.add_run("acme/web", 44)
        clock = FakeClock(now=time.time())
        auth = GitHubAppAuth(app_id="321", private_key_pem=private, installation_id="99", clock=clock)
        client = GitHubClient.create(gh.base_url, auth, sleep=clock.sleep, clock=clock)
        executor = GitHubActionsExecutor(client, clock=clock)

        assert executor.execute(retry()).status is ActionStatus.SUCCEEDED
        assert executor.execute(retry(run_id="44")).status is ActionStatus.SUCCEEDED
        assert gh.count("POST", "/app/installations/99/access_tokens") == 1
        assert [c.headers["authorization"] for c in gh.calls if c.method == "POST" and "rerun" in c.path] \
            == [f"Bearer {gh.issued_tokens[0]}"] * 2

        auth.refresh_margin_seconds = 3700  # the cached token now counts as about to expire
        assert auth.authorization(client.http) == f"Bearer {gh.issued_tokens[1]}"
        assert gh.count("POST", "/app/installations/99/access_tokens") == 2
        assert gh.issued_tokens[0] != gh.issued_tokens[1]


def test_github_app_with_the_wrong_key_fails_clearly(app_key: tuple[str, str]) -> None:
    _, public = app_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with FakeGitHub(tokens=(), app_id="321", app_public_key_pem=public) as gh:
        gh.add_run("acme/web", 42)
        client = GitHubClient.create(gh.base_url, GitHubAppAuth("321", other, "99"))
        result = GitHubActionsExecutor(client).execute(retry())
        assert result.status is ActionStatus.FAILED
        assert "401 for POST /app/installations/99/access_tokens" in result.detail
        assert gh.count("POST", RERUN) == 0
