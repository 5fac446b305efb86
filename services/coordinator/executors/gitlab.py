"""GitLab executor over REST API v4.

RETRY: retry a job (POST /projects/:id/jobs/:job_id/retry) when parameters carry
job_id, else retry the failed jobs of a pipeline (POST /projects/:id/pipelines/:id/retry).
RETRY_ON_FRESH_RUNNER steps: pause the runner (PUT /runners/:id paused=true), retry,
unpause it.

Before acting it lists the pipeline's latest jobs (GitLab leaves retried jobs out of
that list): a newer job with the same name means the job was already retried, and is
not retried again. `project_id` may be the numeric id or the path ("acme/web").
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from services.common.vocabulary import Provider
from services.coordinator.executors.base import (
    ActionRequest,
    ActionResult,
    ActionStatus,
    ProviderRejected,
    require,
    require_int,
)
from services.coordinator.executors.http import HttpClient
from services.coordinator.executors.provider import ProviderExecutor

log = logging.getLogger(__name__)

GITLAB_HINTS: dict[int, str] = {
    401: "check GITLAB_TOKEN: it is missing, expired or revoked",
    403: "check that the token has the api scope and at least Developer role on the project "
         "(and may manage the runner for a fresh-runner retry)",
    404: "check the project id (or path), the job, pipeline or runner id, and that the token can see them",
}
RETRYABLE_STATUSES = frozenset({"failed", "canceled"})


class GitLabClient:
    def __init__(self, http: HttpClient, token: str) -> None:
        self.http = http
        self._token = token

    @classmethod
    def create(cls, base_url: str, token: str, *, timeout_seconds: float = 10.0,
               **http_options: Any) -> GitLabClient:
        http = HttpClient(base_url=base_url, provider_name="GitLab", timeout_seconds=timeout_seconds,
                          default_headers={"User-Agent": "healing-guard-coordinator"}, hints=GITLAB_HINTS,
                          **http_options)
        return cls(http, token)

    def _call(self, method: str, path: str, *, query: dict[str, str] | None = None,
              form: dict[str, str] | None = None) -> Any:
        headers = {"PRIVATE-TOKEN": self._token}
        return self.http.request(method, "/api/v4" + path, query=query, form=form, headers=headers).json()

    @staticmethod
    def _project(project_id: str) -> str:
        return "/projects/" + urllib.parse.quote(project_id, safe="")

    def get_job(self, project_id: str, job_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{self._project(project_id)}/jobs/{job_id}"))

    def retry_job(self, project_id: str, job_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{self._project(project_id)}/jobs/{job_id}/retry"))

    def cancel_job(self, project_id: str, job_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{self._project(project_id)}/jobs/{job_id}/cancel"))

    def pipeline_jobs(self, project_id: str, pipeline_id: int) -> list[dict[str, Any]]:
        """The pipeline's latest jobs (retried ones left out), first page of 100."""
        return list(self._call("GET", f"{self._project(project_id)}/pipelines/{pipeline_id}/jobs",
                               query={"per_page": "100"}))

    def retry_pipeline(self, project_id: str, pipeline_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{self._project(project_id)}/pipelines/{pipeline_id}/retry"))

    def get_runner(self, runner_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/runners/{runner_id}"))

    def set_runner_paused(self, runner_id: int, paused: bool) -> dict[str, Any]:
        return dict(self._call("PUT", f"/runners/{runner_id}",
                               form={"paused": "true" if paused else "false"}))


class GitLabExecutor(ProviderExecutor):
    provider = Provider.PROVIDER_GITLAB
    name = "GitLab executor"

    # -- RETRY -------------------------------------------------------------------

    def rerun(self, request: ActionRequest) -> ActionResult:
        (project,) = require(request, "project_id")
        if request.parameters.get("job_id"):
            return self._retry_job(project, require_int(request, "job_id"))
        return self._retry_pipeline(project, require_int(request, "pipeline_id"))

    def _newer_attempt(self, project: str, job: dict[str, Any]) -> dict[str, Any] | None:
        pipeline_id = int(job["pipeline"]["id"])
        for other in self.client.pipeline_jobs(project, pipeline_id):
            if other.get("name") == job.get("name") and int(other["id"]) > int(job["id"]):
                return other
        return None

    def _retry_job(self, project: str, job_id: int) -> ActionResult:
        job = self.client.get_job(project, job_id)
        name = job.get("name", "")
        newer = self._newer_attempt(project, job)
        if newer is not None:
            return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE,
                                f"job {job_id} ({name}) was already retried as job {newer['id']} "
                                f"({newer.get('status')})",
                                provider_reference=str(newer.get("web_url") or newer["id"]))
        if job.get("status") not in RETRYABLE_STATUSES:
            return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE,
                                f"job {job_id} ({name}) is {job.get('status')}, not failed: nothing to retry",
                                provider_reference=str(job.get("web_url") or job_id))
        try:
            new_job = self.client.retry_job(project, job_id)
        except ProviderRejected as exc:
            if exc.status != 403:
                raise
            newer = self._newer_attempt(project, job)  # retried by someone else meanwhile?
            if newer is None:
                raise
            return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE,
                                f"job {job_id} ({name}) was already retried as job {newer['id']}",
                                provider_reference=str(newer.get("web_url") or newer["id"]))
        return ActionResult(ActionStatus.SUCCEEDED,
                            f"retried job {job_id} ({name}) as job {new_job.get('id')}",
                            provider_reference=str(new_job.get("web_url") or new_job.get("id")))

    def _retry_pipeline(self, project: str, pipeline_id: int) -> ActionResult:
        latest = self.client.pipeline_jobs(project, pipeline_id)
        failing = [j for j in latest if j.get("status") in RETRYABLE_STATUSES]
        if not failing:
            return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE,
                                f"pipeline {pipeline_id} has no failed or canceled jobs left: "
                                "already retried")
        pipeline = self.client.retry_pipeline(project, pipeline_id)
        names = ", ".join(sorted(str(j.get("name")) for j in failing))
        return ActionResult(ActionStatus.SUCCEEDED,
                            f"retried the failed jobs of pipeline {pipeline_id} ({names})",
                            provider_reference=str(pipeline.get("web_url") or pipeline_id))

    # -- RunnerPool: pause / unpause the runner ------------------------------------

    def describe_runner(self, request: ActionRequest) -> str:
        return f"GitLab runner {require_int(request, 'runner_id')}"

    def runner_in_rotation(self, request: ActionRequest) -> bool:
        runner = self.client.get_runner(require_int(request, "runner_id"))
        paused = runner.get("paused")
        return not bool(paused) if paused is not None else bool(runner.get("active", True))

    def take_out_of_rotation(self, request: ActionRequest) -> None:
        self.client.set_runner_paused(require_int(request, "runner_id"), True)

    def put_back_into_rotation(self, request: ActionRequest) -> None:
        self.client.set_runner_paused(require_int(request, "runner_id"), False)

    def runner_health(self, request: ActionRequest) -> tuple[bool, str]:
        runner = self.client.get_runner(require_int(request, "runner_id"))
        online = runner.get("online")
        status = str(runner.get("status", "unknown"))
        healthy = bool(online) if online is not None else status not in ("offline", "stale",
                                                                         "never_contacted")
        return healthy, f"runner status {status}, online {online}"
