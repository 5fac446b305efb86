"""GitHub Actions executor over the REST API (version 2022-11-28).

RETRY: re-run failed jobs of a workflow run (POST .../runs/{run_id}/rerun-failed-jobs),
or re-run one job when parameters carry job_id (POST .../jobs/{job_id}/rerun).
RETRY_ON_FRESH_RUNNER steps: remove the runner's routing label through the
self-hosted runner labels API, re-run, add the label back.

Before acting it reads the run: a run whose run_attempt is already beyond the failed
attempt was re-run (by us before a crash, or by someone else) and is not re-run again.

Credentials: a token (PAT or any bearer token) or a GitHub App installation token,
minted from a JWT signed RS256 with the App's private key and cached until shortly
before it expires.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.common.vocabulary import Provider
from services.coordinator.executors.base import (
    ActionRequest,
    ActionResult,
    ActionStatus,
    MissingParameter,
    ProviderRejected,
    ProviderUnavailable,
    require,
    require_int,
)
from services.coordinator.executors.http import HttpClient
from services.coordinator.executors.provider import ProviderExecutor

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
GITHUB_HINTS: dict[int, str] = {
    401: "check GITHUB_TOKEN (or the GitHub App's id, key and installation id): "
         "it is missing, expired or revoked",
    403: "check that the token may write Actions (and administer runners for a fresh-runner retry)",
    404: "check the repository and run id (or job/runner id), and that the token can see the repository",
    409: "the run is not in a state that allows this; look at it on GitHub",
    422: "GitHub could not process the request; check the action's parameters",
}
RETRY_WHILE_RUNNING_SECONDS = 60.0


class GitHubAuth(Protocol):
    def authorization(self, http: HttpClient) -> str: ...

    def invalidate(self) -> None: ...


@dataclass
class TokenAuth:
    """A personal access token (or any bearer token GitHub accepts)."""

    token: str

    def authorization(self, http: HttpClient) -> str:
        return f"Bearer {self.token}"

    def invalidate(self) -> None:
        pass  # a fixed token cannot be refreshed


@dataclass
class GitHubAppAuth:
    """Installation access token of a GitHub App, minted on demand and cached.

    The app JWT lives 9 minutes with iat 60 s in the past (GitHub allows 10 minutes and
    clock drift); the installation token (1 hour) is reused until `refresh_margin_seconds`
    before `expires_at`.
    """

    app_id: str
    private_key_pem: str
    installation_id: str
    clock: Callable[[], float] = time.time
    refresh_margin_seconds: float = 300.0
    _token: str = field(default="", init=False, repr=False)
    _expires_at: float = field(default=0.0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def app_jwt(self) -> str:
        import jwt  # PyJWT; imported here so the module stays light for token users

        now = int(self.clock())
        claims = {"iat": now - 60, "exp": now + 540, "iss": str(self.app_id)}
        return jwt.encode(claims, self.private_key_pem, algorithm="RS256")

    def authorization(self, http: HttpClient) -> str:
        with self._lock:
            if self._token and self.clock() < self._expires_at - self.refresh_margin_seconds:
                return f"Bearer {self._token}"
            response = http.request(
                "POST",
                f"/app/installations/{self.installation_id}/access_tokens",
                headers={"Authorization": f"Bearer {self.app_jwt()}"},
            )
            data = response.json()
            token = data.get("token") if isinstance(data, dict) else None
            if not token:
                raise ProviderRejected(
                    f"GitHub answered {response.status} without a token for installation "
                    f"{self.installation_id}: "
                    "check the App id, private key and installation id",
                    status=response.status,
                )
            self._token = str(token)
            self._expires_at = _parse_timestamp(str(data.get("expires_at", "")), self.clock() + 3600)
            log.info("minted a GitHub App installation token for installation %s", self.installation_id)
            return f"Bearer {self._token}"

    def invalidate(self) -> None:
        with self._lock:
            self._token, self._expires_at = "", 0.0


def _parse_timestamp(text: str, default: float) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


class GitHubClient:
    """The GitHub REST calls the executor makes; each returns the decoded JSON body."""

    def __init__(self, http: HttpClient, auth: GitHubAuth) -> None:
        self.http = http
        self.auth = auth

    @classmethod
    def create(
        cls,
        base_url: str,
        auth: GitHubAuth,
        *,
        timeout_seconds: float = 10.0,
        **http_options: Any,
    ) -> GitHubClient:
        http = HttpClient(
            base_url=base_url,
            provider_name="GitHub",
            timeout_seconds=timeout_seconds,
            default_headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                             "User-Agent": "healing-guard-coordinator"},
            hints=GITHUB_HINTS,
            **http_options,
        )
        return cls(http, auth)

    def _call(self, method: str, path: str, *, json_body: Any = None) -> Any:
        for attempt in (1, 2):
            headers = {"Authorization": self.auth.authorization(self.http)}
            try:
                return self.http.request(method, path, json_body=json_body, headers=headers).json()
            except ProviderRejected as exc:
                # An installation token can be revoked early: mint a new one once.
                if exc.status == 401 and attempt == 1 and isinstance(self.auth, GitHubAppAuth):
                    self.auth.invalidate()
                    continue
                raise
        raise AssertionError("unreachable")

    @staticmethod
    def _repo(repository: str) -> str:
        owner, _, name = repository.partition("/")
        return f"/repos/{urllib.parse.quote(owner, safe='')}/{urllib.parse.quote(name, safe='')}"

    def get_run(self, repository: str, run_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{self._repo(repository)}/actions/runs/{run_id}"))

    def rerun_failed_jobs(self, repository: str, run_id: int) -> None:
        self._call("POST", f"{self._repo(repository)}/actions/runs/{run_id}/rerun-failed-jobs")

    def cancel_run(self, repository: str, run_id: int) -> None:
        self._call("POST", f"{self._repo(repository)}/actions/runs/{run_id}/cancel")

    def get_job(self, repository: str, job_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{self._repo(repository)}/actions/jobs/{job_id}"))

    def rerun_job(self, repository: str, job_id: int) -> None:
        self._call("POST", f"{self._repo(repository)}/actions/jobs/{job_id}/rerun")

    def get_runner(self, repository: str, runner_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{self._repo(repository)}/actions/runners/{runner_id}"))

    def remove_runner_label(self, repository: str, runner_id: int, label: str) -> list[str]:
        label_path = urllib.parse.quote(label, safe="")
        path = f"{self._repo(repository)}/actions/runners/{runner_id}/labels/{label_path}"
        return [item["name"] for item in self._call("DELETE", path).get("labels", [])]

    def add_runner_labels(self, repository: str, runner_id: int, labels: list[str]) -> list[str]:
        path = f"{self._repo(repository)}/actions/runners/{runner_id}/labels"
        return [item["name"] for item in self._call("POST", path,
                                                    json_body={"labels": labels}).get("labels", [])]


def _repository(request: ActionRequest) -> str:
    (repository,) = require(request, "repository")
    owner, slash, name = repository.partition("/")
    if not slash or not owner or not name or "/" in name:
        raise MissingParameter(request, ["repository"])
    return repository


class GitHubActionsExecutor(ProviderExecutor):
    provider = Provider.PROVIDER_GITHUB_ACTIONS
    name = "GitHub Actions executor"

    # -- RETRY -------------------------------------------------------------------

    def rerun(self, request: ActionRequest) -> ActionResult:
        repository = _repository(request)
        if request.parameters.get("job_id"):
            return self._rerun_job(request, repository, require_int(request, "job_id"))
        return self._rerun_failed_jobs(request, repository, require_int(request, "run_id"))

    def _rerun_failed_jobs(self, request: ActionRequest, repository: str, run_id: int) -> ActionResult:
        run = self.client.get_run(repository, run_id)
        has_attempt = bool(request.parameters.get("run_attempt"))
        failed_attempt = require_int(request, "run_attempt") if has_attempt else None
        done = self._already_rerun(run, failed_attempt)
        if done:
            return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE, f"run {run_id} of {repository} {done}",
                                provider_reference=self._attempt_url(run, int(run["run_attempt"])))
        try:
            self.client.rerun_failed_jobs(repository, run_id)
        except ProviderRejected as exc:
            if exc.status != 403 or "already running" not in exc.provider_message.lower():
                raise
            # Someone re-ran it between our read and our request: look again.
            run = self.client.get_run(repository, run_id)
            done = self._already_rerun(run, failed_attempt)
            if done:
                return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE, f"run {run_id} of {repository} {done}",
                                    provider_reference=self._attempt_url(run, int(run["run_attempt"])))
            raise ProviderUnavailable(
                f"GitHub says run {run_id} of {repository} is still running; its failed jobs are re-run "
                "once it completes", retry_after_seconds=RETRY_WHILE_RUNNING_SECONDS) from exc
        new_attempt = int(run["run_attempt"]) + 1
        return ActionResult(ActionStatus.SUCCEEDED,
                            f"re-ran the failed jobs of run {run_id} of {repository} (attempt {new_attempt})",
                            provider_reference=self._attempt_url(run, new_attempt))

    def _already_rerun(self, run: dict[str, Any], failed_attempt: int | None) -> str:
        """Why the run needs no re-run, or "" if it does. Raises if it cannot be re-run yet."""
        attempt = int(run.get("run_attempt") or 1)
        status, conclusion = run.get("status"), run.get("conclusion")
        if failed_attempt is not None:
            if attempt > failed_attempt:
                return (f"was already re-run (it is at attempt {attempt}, "
                        f"the failure was attempt {failed_attempt})")
            if status != "completed":
                raise ProviderUnavailable(
                    f"run {run.get('id')} is still {status} (attempt {attempt}); "
                    "GitHub re-runs failed jobs only of a completed run, so this is retried later",
                    retry_after_seconds=RETRY_WHILE_RUNNING_SECONDS)
            return ""
        # Without the failed attempt, a run that is running again or has passed was re-run.
        if status != "completed":
            return f"is running again ({status}, attempt {attempt}); not re-running it"
        if conclusion == "success":
            return f"has already succeeded (attempt {attempt})"
        return ""

    def _rerun_job(self, request: ActionRequest, repository: str, job_id: int) -> ActionResult:
        job = self.client.get_job(repository, job_id)
        run_id = int(job["run_id"])
        run = self.client.get_run(repository, run_id)
        done = self._already_rerun(run, int(job.get("run_attempt") or 1))
        if done:
            return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE,
                                f"job {job_id} ({job.get('name', '')}) of run {run_id}: the run {done}",
                                provider_reference=self._attempt_url(run, int(run["run_attempt"])))
        self.client.rerun_job(repository, job_id)
        new_attempt = int(run["run_attempt"]) + 1
        return ActionResult(ActionStatus.SUCCEEDED,
                            f"re-ran job {job_id} ({job.get('name', '')}) of run {run_id} of {repository}",
                            provider_reference=self._attempt_url(run, new_attempt))

    @staticmethod
    def _attempt_url(run: dict[str, Any], attempt: int) -> str:
        url = str(run.get("html_url") or "")
        return f"{url}/attempts/{attempt}" if url else str(run.get("id", ""))

    # -- RunnerPool: the routing label of a self-hosted runner ---------------------

    def _runner(self, request: ActionRequest) -> tuple[str, int, str]:
        repository = _repository(request)
        (label,) = require(request, "runner_label")
        return repository, require_int(request, "runner_id"), label

    def describe_runner(self, request: ActionRequest) -> str:
        repository, runner_id, label = self._runner(request)
        return f"self-hosted runner {runner_id} of {repository} (label {label!r})"

    def runner_in_rotation(self, request: ActionRequest) -> bool:
        repository, runner_id, label = self._runner(request)
        runner = self.client.get_runner(repository, runner_id)
        return any(item.get("name", "").lower() == label.lower() for item in runner.get("labels", []))

    def take_out_of_rotation(self, request: ActionRequest) -> None:
        repository, runner_id, label = self._runner(request)
        try:
            self.client.remove_runner_label(repository, runner_id, label)
        except ProviderRejected as exc:
            if exc.status != 404:  # 404: the label is gone already, which is what we want
                raise

    def put_back_into_rotation(self, request: ActionRequest) -> None:
        repository, runner_id, label = self._runner(request)
        self.client.add_runner_labels(repository, runner_id, [label])

    def runner_health(self, request: ActionRequest) -> tuple[bool, str]:
        repository, runner_id, _ = self._runner(request)
        status = str(self.client.get_runner(repository, runner_id).get("status", "unknown"))
        return status == "online", f"runner status {status}"
