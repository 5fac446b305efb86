"""Jenkins executor over the remote access API.

RETRY: build the job again with the failed build's parameters
(POST /job/{name}/buildWithParameters -> 201 with the queue item in Location; /build
for a job without parameters). RETRY_ON_FRESH_RUNNER steps: mark the node temporarily
offline with a reason (POST /computer/{name}/toggleOffline?offlineMessage=...), build
again, bring the node back online.

POSTs carry the CSRF crumb (GET /crumbIssuer/api/json), sent as the header the issuer
names, with the session cookie it was issued for. Authentication is basic auth with a
user and an API token.

Before acting it reads the job: a build newer than the failed one, or one in the
queue, means the job was already built again and is not built a second time.
Folders are written "folder/job".
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
from services.coordinator.executors.http import HttpClient, basic_authorization
from services.coordinator.executors.provider import ProviderExecutor

log = logging.getLogger(__name__)

JENKINS_HINTS: dict[int, str] = {
    401: "check JENKINS_USER and JENKINS_API_TOKEN (an API token from the user's Security page)",
    403: "check that the user has Job/Build (and Agent/Disconnect for a fresh-runner retry) permission",
    404: "check the job name (folders as folder/job), the build number or the node name",
}


class JenkinsClient:
    def __init__(self, http: HttpClient, user: str, api_token: str) -> None:
        self.http = http
        self._authorization = basic_authorization(user, api_token)
        self._crumb: tuple[str, str] | None = None

    @classmethod
    def create(cls, base_url: str, user: str, api_token: str, *, timeout_seconds: float = 10.0,
               **http_options: Any) -> JenkinsClient:
        http = HttpClient(base_url=base_url, provider_name="Jenkins", timeout_seconds=timeout_seconds,
                          default_headers={"User-Agent": "healing-guard-coordinator"}, hints=JENKINS_HINTS,
                          keep_cookies=True, **http_options)
        return cls(http, user, api_token)

    @staticmethod
    def job_path(name: str) -> str:
        return "".join(f"/job/{urllib.parse.quote(part, safe='')}" for part in name.strip("/").split("/"))

    def _get(self, path: str) -> Any:
        return self.http.request("GET", path, headers={"Authorization": self._authorization}).json()

    def _crumb_header(self) -> dict[str, str]:
        if self._crumb is None:
            data = self._get("/crumbIssuer/api/json")
            self._crumb = (str(data.get("crumbRequestField", "Jenkins-Crumb")), str(data.get("crumb", "")))
        return {self._crumb[0]: self._crumb[1]}

    def _post(self, path: str, *, query: dict[str, str] | None = None) -> str:
        """POST with the crumb; returns the Location header. A stale crumb is fetched again once."""
        for attempt in (1, 2):
            headers = {"Authorization": self._authorization, **self._crumb_header()}
            try:
                response = self.http.request("POST", path, query=query, headers=headers)
                return response.header("location")
            except ProviderRejected as exc:
                if exc.status == 403 and "crumb" in exc.provider_message.lower() and attempt == 1:
                    self._crumb = None
                    self.http.clear_cookies()
                    continue
                raise
        raise AssertionError("unreachable")

    def get_job(self, name: str) -> dict[str, Any]:
        return dict(self._get(f"{self.job_path(name)}/api/json"))

    def get_build(self, name: str, number: int) -> dict[str, Any]:
        return dict(self._get(f"{self.job_path(name)}/{number}/api/json"))

    def last_build(self, name: str) -> dict[str, Any]:
        return dict(self._get(f"{self.job_path(name)}/lastBuild/api/json"))

    def build_with_parameters(self, name: str, parameters: dict[str, str]) -> str:
        """Queue a build; returns the queue item URL from Location."""
        if parameters:
            return self._post(f"{self.job_path(name)}/buildWithParameters", query=parameters)
        return self._post(f"{self.job_path(name)}/build")

    def get_node(self, name: str) -> dict[str, Any]:
        return dict(self._get(f"/computer/{urllib.parse.quote(name, safe='')}/api/json"))

    def toggle_offline(self, name: str, message: str) -> None:
        self._post(f"/computer/{urllib.parse.quote(name, safe='')}/toggleOffline",
                   query={"offlineMessage": message})


def _build_parameters(build: dict[str, Any]) -> dict[str, str]:
    for action in build.get("actions") or []:
        if isinstance(action, dict) and "parameters" in action:
            return {str(p["name"]): str(p.get("value", "")) for p in action["parameters"] if "name" in p}
    return {}


class JenkinsExecutor(ProviderExecutor):
    provider = Provider.PROVIDER_JENKINS
    name = "Jenkins executor"

    # -- RETRY -------------------------------------------------------------------

    def rerun(self, request: ActionRequest) -> ActionResult:
        (name,) = require(request, "job_name")
        failed_build = require_int(request, "build_number")
        job = self.client.get_job(name)
        last = (job.get("lastBuild") or {}).get("number")
        if job.get("inQueue"):
            return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE,
                                f"job {name} already has a build in the queue")
        if last is not None and int(last) > failed_build:
            return ActionResult(ActionStatus.SKIPPED_ALREADY_DONE,
                                f"job {name} was already built again after build #{failed_build} "
                                f"(last build #{last})", provider_reference=str(job["lastBuild"].get("url",
                                                                                                     "")))
        parameters = _build_parameters(self.client.get_build(name, failed_build))
        queue_item = self.client.build_with_parameters(name, parameters)
        return ActionResult(ActionStatus.SUCCEEDED,
                            f"queued a new build of {name} with the parameters of build #{failed_build}",
                            provider_reference=queue_item)

    # -- RunnerPool: node temporarily offline -------------------------------------

    def describe_runner(self, request: ActionRequest) -> str:
        (node,) = require(request, "runner_name")
        return f"Jenkins node {node}"

    def runner_in_rotation(self, request: ActionRequest) -> bool:
        (node,) = require(request, "runner_name")
        return not bool(self.client.get_node(node).get("temporarilyOffline"))

    def take_out_of_rotation(self, request: ActionRequest) -> None:
        (node,) = require(request, "runner_name")
        reason = (f"Healing Guard: taken out of rotation after a failed build "
                  f"(action {request.action_id}); it is brought back automatically")
        self.client.toggle_offline(node, reason)

    def put_back_into_rotation(self, request: ActionRequest) -> None:
        (node,) = require(request, "runner_name")
        # toggleOffline flips the state: only flip a node that is still temporarily offline.
        if self.client.get_node(node).get("temporarilyOffline"):
            self.client.toggle_offline(node, "")

    def runner_health(self, request: ActionRequest) -> tuple[bool, str]:
        (node,) = require(request, "runner_name")
        data = self.client.get_node(node)
        monitors = data.get("monitorData")
        if isinstance(monitors, dict) and "hudson.node_monitors.ResponseTimeMonitor" in monitors:
            # A temporarily offline node reports offline=true even when its agent is fine; the
            # response-time monitor is empty only when the agent is not connected.
            connected = monitors["hudson.node_monitors.ResponseTimeMonitor"] is not None
        else:
            connected = not (bool(data.get("offline")) and not bool(data.get("temporarilyOffline")))
        return connected, "agent connected" if connected else "agent not connected"
