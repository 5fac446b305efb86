"""Loopback fakes of the CI providers' REST APIs, for executor and coordinator tests.

Each fake is a ThreadingHTTPServer on 127.0.0.1 (port 0 by default) that answers the
documented requests of GitHub Actions, GitLab v4 or Jenkins for the endpoints the
executors use, keeps the provider's state (runs, jobs, runners, builds, nodes) in a
JSON-ready dict, and records every call it receives so tests can count them.

In a test:

    with FakeGitHub() as gh:
        gh.add_run("acme/web", 42, conclusion="failure")
        ...  # point an executor at gh.base_url with token gh.token
        assert gh.count("POST", "/repos/acme/web/actions/runs/42/rerun-failed-jobs") == 1

Faults on demand: `fail_next(n, status=503)`, `rate_limit_next(kind="429"|"403",
retry_after=..., reset_in=...)`, `delay_seconds = 0.5` (every answer is late).

As its own process (for fault tests that kill things):

    python -m tests.fakes.providers github --port 0 --state-file /tmp/gh.json

prints the port on the first line of stdout, persists calls and state to the state
file after every call (and reloads it when started again on the same file), and
serves, without authentication and without being recorded:

    GET  /_fake/calls    -> {"calls": [...]}
    GET  /_fake/state    -> the provider state
    POST /_fake/control  {"op": "fail_next", "args": {"n": 2, "status": 503}}
                         ops: fail_next, rate_limit_next, set_delay, reset_calls and the
                         fake's seeding methods (add_run, add_runner, complete_run,
                         add_pipeline, add_runner, complete_job, add_job, add_node,
                         complete_build) -> {"result": ...}

It stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class RecordedCall:
    method: str
    path: str  # without the query string, as sent (percent-encoding kept)
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, a form dict, or text; None when empty
    status: int = 0
    at: float = 0.0


@dataclass
class Reply:
    status: int
    body: Any = None  # dict/list -> JSON, str -> text/html, None -> empty
    headers: dict[str, str] = field(default_factory=dict)


Route = tuple[str, re.Pattern[str], Callable[..., Reply]]


class FakeProvider:
    """Shared machinery: server lifecycle, call log, fault injection, state file."""

    name = "provider"
    control_ops: frozenset[str] = frozenset()

    def __init__(self, *, port: int = 0, state_file: str | None = None) -> None:
        self._port = port
        self._state_file = state_file
        self._lock = threading.RLock()
        self._calls: list[RecordedCall] = []
        self._failures: list[int] = []
        self._rate_limits: list[dict[str, Any]] = []
        self.delay_seconds = 0.0
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.state: dict[str, Any] = self._initial_state()
        if state_file and os.path.exists(state_file) and os.path.getsize(state_file) > 0:
            with open(state_file, encoding="utf-8") as f:
                saved = json.load(f)
            self.state = saved.get("state", self.state)
            self._calls = [RecordedCall(**c) for c in saved.get("calls", [])]

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> FakeProvider:
        fake = self

        class Handler(_Handler):
            provider = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"fake-{self.name}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in an injected delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake is not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what tests look at and inject -------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    def count(self, method: str, path: str) -> int:
        """How many calls had this method and path (query string ignored)."""
        with self._lock:
            return sum(1 for c in self._calls if c.method == method.upper() and c.path == path)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()
            self._save()

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """The next n calls are answered with `status` (a server error) before any work."""
        with self._lock:
            self._failures.extend([status] * n)

    def rate_limit_next(
        self, kind: str = "429", retry_after: float | None = 1, reset_in: float = 1, n: int = 1
    ) -> None:
        """The next n calls hit a rate limit.

        kind "429": 429 with Retry-After (GitHub's secondary limit, GitLab's limit);
        kind "403": 403 with X-RateLimit-Remaining: 0 and X-RateLimit-Reset = now+reset_in
        (GitHub's primary limit); retry_after=None leaves Retry-After out of a 429.
        """
        if kind not in ("429", "403"):
            raise ValueError(f"kind must be '429' or '403', got {kind!r}")
        with self._lock:
            self._rate_limits.extend(
                [{"kind": kind, "retry_after": retry_after, "reset_in": reset_in}] * n
            )

    def set_delay(self, seconds: float) -> None:
        self.delay_seconds = seconds

    # -- request handling --------------------------------------------------------

    def _initial_state(self) -> dict[str, Any]:
        return {}

    def _routes(self) -> list[Route]:
        raise NotImplementedError

    def _authenticate(self, call: RecordedCall) -> Reply | None:
        """None if the call is authenticated, else the answer to send."""
        return None

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> Reply:
        parsed = urllib.parse.urlsplit(raw_path)
        path = parsed.path
        query = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        body = _parse_body(headers.get("content-type", ""), raw_body)
        if path.startswith("/_fake/"):
            return self._control(method, path, body)
        call = RecordedCall(method, path, query, headers, body, at=time.time())
        with self._lock:
            self._calls.append(call)
        if self.delay_seconds > 0:
            self._stopping.wait(self.delay_seconds)
        reply = self._answer(call)
        with self._lock:
            call.status = reply.status
            self._save()
        return reply

    def _answer(self, call: RecordedCall) -> Reply:
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
            limit = self._rate_limits.pop(0) if self._rate_limits and failure is None else None
        if failure is not None:
            return Reply(failure, {"message": f"injected {failure} from the fake {self.name}"})
        if limit is not None:
            return self._rate_limit_reply(limit)
        refusal = self._authenticate(call)
        if refusal is not None:
            return refusal
        for method, pattern, action in self._routes():
            match = pattern.fullmatch(call.path)
            if match and method == call.method:
                with self._lock:
                    return action(call, *[urllib.parse.unquote(g) for g in match.groups()])
        return self._not_found()

    def _rate_limit_reply(self, limit: dict[str, Any]) -> Reply:
        if limit["kind"] == "429":
            headers = {} if limit["retry_after"] is None else {"Retry-After": str(int(limit["retry_after"]))}
            return Reply(429, {"message": "You have exceeded a secondary rate limit."}, headers)
        reset = int(time.time() + limit["reset_in"])
        return Reply(
            403,
            {"message": "API rate limit exceeded."},
            {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
        )

    def _not_found(self) -> Reply:
        return Reply(404, {"message": "Not Found"})

    def _control(self, method: str, path: str, body: Any) -> Reply:
        if method == "GET" and path == "/_fake/calls":
            return Reply(200, {"calls": [asdict(c) for c in self.calls]})
        if method == "GET" and path == "/_fake/state":
            with self._lock:
                return Reply(200, json.loads(json.dumps(self.state)))
        if method == "POST" and path == "/_fake/control" and isinstance(body, dict):
            op = str(body.get("op", ""))
            allowed = {"fail_next", "rate_limit_next", "set_delay", "reset_calls"} | set(self.control_ops)
            if op not in allowed:
                return Reply(400, {"message": f"op must be one of {sorted(allowed)}, got {op!r}"})
            args = body.get("args") or {}
            try:
                result = getattr(self, op)(**args)
            except (TypeError, KeyError, ValueError) as exc:
                return Reply(400, {"message": f"{op}({args}) failed: {exc}"})
            with self._lock:
                self._save()
            return Reply(200, {"result": result})
        return Reply(404, {"message": f"no control endpoint {method} {path}"})

    def _save(self) -> None:
        if not self._state_file:
            return
        tmp = self._state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"state": self.state, "calls": [asdict(c) for c in self._calls]}, f)
        os.replace(tmp, self._state_file)

    def _next_id(self) -> int:
        self.state["next_id"] += 1
        return int(self.state["next_id"])


class _Handler(BaseHTTPRequestHandler):
    provider: FakeProvider
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.provider._handle(self.command, self.path, headers, raw)
        if isinstance(reply.body, (dict, list)):
            data = json.dumps(reply.body).encode()
            content_type = "application/json; charset=utf-8"
        elif isinstance(reply.body, str):
            data = reply.body.encode()
            content_type = "text/html; charset=utf-8"
        else:
            data = b""
            content_type = ""
        try:
            self.send_response(reply.status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a time-out test)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake %s: " + format, self.provider.name, *args)


def _parse_body(content_type: str, raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    if "json" in content_type:
        try:
            return json.loads(text)
        except ValueError:
            return text
    if "x-www-form-urlencoded" in content_type:
        return {k: v[0] for k, v in urllib.parse.parse_qs(text, keep_blank_values=True).items()}
    return text


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A state record as the provider shows it (our bookkeeping keys start with _)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _flag(value: Any) -> bool:
    return str(value).lower() in ("true", "1", "yes")


# =============================================================================
# GitHub Actions
# =============================================================================

GITHUB_DOCS = "https://docs.github.com/rest"
_REPO = r"/repos/([^/]+/[^/]+)"
_READ_ONLY_LABELS = {"self-hosted", "linux", "windows", "macos", "x64", "arm", "arm64"}


class FakeGitHub(FakeProvider):
    """GitHub REST API (2022-11-28): workflow runs and jobs, self-hosted runner labels,
    GitHub App installation tokens."""

    name = "github"
    control_ops = frozenset({"add_run", "add_runner", "complete_run", "set_runner_status"})

    def __init__(
        self,
        *,
        tokens: Iterable[str] = ("test-token",),
        app_id: str | None = None,
        app_public_key_pem: str | None = None,
        installation_token_ttl: float = 3600.0,
        port: int = 0,
        state_file: str | None = None,
    ) -> None:
        super().__init__(port=port, state_file=state_file)
        self.tokens = list(tokens)
        self.token = self.tokens[0] if self.tokens else ""
        self.app_id = app_id
        self.app_public_key_pem = app_public_key_pem
        self.installation_token_ttl = installation_token_ttl
        self.issued_tokens: list[str] = []
        self._token_expiry: dict[str, float] = {}

    def _initial_state(self) -> dict[str, Any]:
        return {"runs": {}, "jobs": {}, "runners": {}, "next_id": 9000}

    # -- seeding -----------------------------------------------------------------

    def add_run(
        self,
        repository: str,
        run_id: int,
        *,
        run_attempt: int = 1,
        status: str = "completed",
        conclusion: str | None = "failure",
        jobs: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A workflow run; `jobs` like [{"id": 7, "name": "test", "conclusion": "failure"}]."""
        with self._lock:
            run = {
                "id": run_id,
                "name": "CI",
                "run_attempt": run_attempt,
                "status": status,
                "conclusion": conclusion,
                "html_url": f"https://github.com/{repository}/actions/runs/{run_id}",
                "repository": {"full_name": repository},
            }
            self.state["runs"][str(run_id)] = run
            for job in jobs or []:
                self._add_job(repository, run_id, run_attempt, job)
            return run

    def _add_job(self, repository: str, run_id: int, run_attempt: int, job: dict[str, Any]) -> dict[str, Any]:
        record = {
            "id": int(job["id"]),
            "run_id": run_id,
            "run_attempt": run_attempt,
            "name": job.get("name", "build"),
            "status": job.get("status", "completed"),
            "conclusion": job.get("conclusion", "failure"),
            "runner_id": job.get("runner_id"),
            "html_url": f"https://github.com/{repository}/actions/runs/{run_id}/job/{job['id']}",
        }
        self.state["jobs"][str(record["id"])] = record
        return record

    def add_runner(
        self,
        repository: str,
        runner_id: int,
        *,
        name: str = "",
        labels: list[str] | None = None,
        status: str = "online",
    ) -> dict[str, Any]:
        with self._lock:
            names = labels if labels is not None else ["self-hosted", "linux", "x64"]
            runner = {
                "id": runner_id,
                "name": name or f"runner-{runner_id}",
                "os": "linux",
                "status": status,
                "busy": False,
                "labels": [self._label(n) for n in names],
                "_repository": repository,
            }
            self.state["runners"][str(runner_id)] = runner
            return _public(runner)

    def complete_run(self, run_id: int, conclusion: str = "success") -> dict[str, Any]:
        with self._lock:
            run = self.state["runs"][str(run_id)]
            run["status"], run["conclusion"] = "completed", conclusion
            return run

    def set_runner_status(self, runner_id: int, status: str) -> None:
        with self._lock:
            self.state["runners"][str(runner_id)]["status"] = status

    def run(self, run_id: int) -> dict[str, Any]:
        with self._lock:
            return dict(self.state["runs"][str(run_id)])

    def runner(self, runner_id: int) -> dict[str, Any]:
        with self._lock:
            return _public(self.state["runners"][str(runner_id)])

    def runner_labels(self, runner_id: int) -> list[str]:
        return [label["name"] for label in self.runner(runner_id)["labels"]]

    def _label(self, name: str) -> dict[str, Any]:
        kind = "read-only" if name.lower() in _READ_ONLY_LABELS else "custom"
        return {"id": abs(hash(name.lower())) % 10_000, "name": name, "type": kind}

    # -- auth --------------------------------------------------------------------

    def _authenticate(self, call: RecordedCall) -> Reply | None:
        authorization = call.headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        if call.path.startswith("/app/"):
            return None  # checked by the route: it takes the app's JWT, not a token
        if scheme.lower() in ("bearer", "token") and credential in self.tokens:
            return None
        if scheme.lower() in ("bearer", "token") and credential in self._token_expiry:
            if self._token_expiry[credential] > time.time():
                return None
        return Reply(401, {"message": "Bad credentials", "documentation_url": GITHUB_DOCS})

    # -- routes ------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            ("GET", re.compile(_REPO + r"/actions/runs/(\d+)"), self._get_run),
            ("POST", re.compile(_REPO + r"/actions/runs/(\d+)/rerun-failed-jobs"), self._rerun_failed_jobs),
            ("POST", re.compile(_REPO + r"/actions/runs/(\d+)/rerun"), self._rerun_run),
            ("POST", re.compile(_REPO + r"/actions/runs/(\d+)/cancel"), self._cancel_run),
            ("GET", re.compile(_REPO + r"/actions/jobs/(\d+)"), self._get_job),
            ("POST", re.compile(_REPO + r"/actions/jobs/(\d+)/rerun"), self._rerun_job),
            ("GET", re.compile(_REPO + r"/actions/runners/(\d+)"), self._get_runner),
            ("POST", re.compile(_REPO + r"/actions/runners/(\d+)/labels"), self._add_labels),
            ("DELETE", re.compile(_REPO + r"/actions/runners/(\d+)/labels/([^/]+)"), self._remove_label),
            ("POST", re.compile(r"/app/installations/(\d+)/access_tokens"), self._installation_token),
        ]

    def _find_run(self, repository: str, run_id: str) -> dict[str, Any] | None:
        run = self.state["runs"].get(run_id)
        if run is None or run["repository"]["full_name"].lower() != repository.lower():
            return None
        return run

    def _get_run(self, call: RecordedCall, repository: str, run_id: str) -> Reply:
        run = self._find_run(repository, run_id)
        return Reply(200, run) if run else self._not_found_doc()

    def _start_new_attempt(self, run: dict[str, Any], repository: str) -> None:
        run["run_attempt"] += 1
        run["status"], run["conclusion"] = "queued", None
        for job in list(self.state["jobs"].values()):
            if job["run_id"] == run["id"] and job["run_attempt"] == run["run_attempt"] - 1:
                if job["conclusion"] not in ("success", "skipped"):
                    self._add_job(repository, run["id"], run["run_attempt"], {
                        "id": self._next_id(), "name": job["name"], "status": "queued", "conclusion": None,
                    })

    def _rerun_guard(self, run: dict[str, Any]) -> Reply | None:
        if run["status"] != "completed":
            return Reply(403, {"message": "This workflow is already running",
                               "documentation_url": GITHUB_DOCS})
        return None

    def _rerun_failed_jobs(self, call: RecordedCall, repository: str, run_id: str) -> Reply:
        run = self._find_run(repository, run_id)
        if run is None:
            return self._not_found_doc()
        refusal = self._rerun_guard(run)
        if refusal:
            return refusal
        self._start_new_attempt(run, repository)
        return Reply(201, {})

    def _rerun_run(self, call: RecordedCall, repository: str, run_id: str) -> Reply:
        return self._rerun_failed_jobs(call, repository, run_id)

    def _cancel_run(self, call: RecordedCall, repository: str, run_id: str) -> Reply:
        run = self._find_run(repository, run_id)
        if run is None:
            return self._not_found_doc()
        if run["status"] == "completed":
            return Reply(409, {"message": "Cannot cancel a workflow run that is completed.",
                               "documentation_url": GITHUB_DOCS})
        run["status"], run["conclusion"] = "completed", "cancelled"
        return Reply(202, {})

    def _get_job(self, call: RecordedCall, repository: str, job_id: str) -> Reply:
        job = self.state["jobs"].get(job_id)
        if job is None or self._find_run(repository, str(job["run_id"])) is None:
            return self._not_found_doc()
        return Reply(200, job)

    def _rerun_job(self, call: RecordedCall, repository: str, job_id: str) -> Reply:
        job = self.state["jobs"].get(job_id)
        run = None if job is None else self._find_run(repository, str(job["run_id"]))
        if job is None or run is None:
            return self._not_found_doc()
        refusal = self._rerun_guard(run)
        if refusal:
            return refusal
        run["run_attempt"] += 1
        run["status"], run["conclusion"] = "queued", None
        self._add_job(repository, run["id"], run["run_attempt"], {
            "id": self._next_id(), "name": job["name"], "status": "queued", "conclusion": None,
        })
        return Reply(201, {})

    def _find_runner(self, repository: str, runner_id: str) -> dict[str, Any] | None:
        runner = self.state["runners"].get(runner_id)
        if runner is None or runner["_repository"].lower() != repository.lower():
            return None
        return runner

    def _get_runner(self, call: RecordedCall, repository: str, runner_id: str) -> Reply:
        runner = self._find_runner(repository, runner_id)
        return Reply(200, _public(runner)) if runner else self._not_found_doc()

    def _labels_reply(self, runner: dict[str, Any]) -> Reply:
        return Reply(200, {"total_count": len(runner["labels"]), "labels": runner["labels"]})

    def _add_labels(self, call: RecordedCall, repository: str, runner_id: str) -> Reply:
        runner = self._find_runner(repository, runner_id)
        if runner is None:
            return self._not_found_doc()
        names = call.body.get("labels") if isinstance(call.body, dict) else None
        if not isinstance(names, list) or not names:
            return Reply(422, {"message": "Validation Failed: labels must be a non-empty array",
                               "documentation_url": GITHUB_DOCS})
        present = {label["name"].lower() for label in runner["labels"]}
        for name in names:
            if str(name).lower() not in present:
                runner["labels"].append(self._label(str(name)))
                present.add(str(name).lower())
        return self._labels_reply(runner)

    def _remove_label(self, call: RecordedCall, repository: str, runner_id: str, name: str) -> Reply:
        runner = self._find_runner(repository, runner_id)
        if runner is None:
            return self._not_found_doc()
        matching = [label for label in runner["labels"] if label["name"].lower() == name.lower()]
        if not matching:
            return self._not_found_doc()
        if matching[0]["type"] == "read-only":
            return Reply(422, {"message": f"Cannot remove read-only label {name!r}",
                               "documentation_url": GITHUB_DOCS})
        runner["labels"] = [label for label in runner["labels"] if label is not matching[0]]
        return self._labels_reply(runner)

    def _installation_token(self, call: RecordedCall, installation_id: str) -> Reply:
        import jwt  # PyJWT: only the App flow needs it

        scheme, _, credential = call.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.app_public_key_pem:
            return Reply(401, {"message": "A JSON web token could not be decoded",
                               "documentation_url": GITHUB_DOCS})
        try:
            claims = jwt.decode(credential, self.app_public_key_pem, algorithms=["RS256"],
                                options={"require": ["iat", "exp", "iss"]})
        except jwt.PyJWTError as exc:
            return Reply(401, {"message": f"A JSON web token could not be decoded ({exc})",
                               "documentation_url": GITHUB_DOCS})
        if str(claims["iss"]) != str(self.app_id):
            return Reply(401, {"message": "Integration not found", "documentation_url": GITHUB_DOCS})
        if claims["exp"] - claims["iat"] > 660:
            return Reply(401, {"message": "'Expiration time' claim ('exp') is too far in the future",
                               "documentation_url": GITHUB_DOCS})
        token = "ghs_" + secrets.token_hex(16)
        expires = time.time() + self.installation_token_ttl
        self._token_expiry[token] = expires
        self.issued_tokens.append(token)
        expires_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        return Reply(201, {"token": token, "expires_at": expires_at,
                           "permissions": {"actions": "write", "administration": "write"}})

    def _not_found_doc(self) -> Reply:
        return Reply(404, {"message": "Not Found", "documentation_url": GITHUB_DOCS})

    def _not_found(self) -> Reply:
        return self._not_found_doc()


# =============================================================================
# GitLab
# =============================================================================

_PROJECT = r"/api/v4/projects/([^/]+)"
_RETRYABLE = {"failed", "canceled", "success"}


class FakeGitLab(FakeProvider):
    """GitLab REST v4: jobs (get, retry, cancel), pipelines (retry, list jobs), runners
    (get, pause/unpause). Authenticates with PRIVATE-TOKEN (or Authorization: Bearer)."""

    name = "gitlab"
    control_ops = frozenset({"add_pipeline", "add_runner", "complete_job", "set_runner_online"})

    def __init__(self, *, tokens: Iterable[str] = ("glpat-test",), port: int = 0,
                 state_file: str | None = None) -> None:
        super().__init__(port=port, state_file=state_file)
        self.tokens = [tokens] if isinstance(tokens, str) else list(tokens)
        self.token = self.tokens[0] if self.tokens else ""

    def _initial_state(self) -> dict[str, Any]:
        return {"jobs": {}, "pipelines": {}, "runners": {}, "next_id": 8000}

    def add_pipeline(
        self,
        project_id: int,
        pipeline_id: int,
        *,
        project_path: str = "",
        jobs: list[dict[str, Any]] | None = None,
        status: str = "failed",
    ) -> dict[str, Any]:
        """A pipeline; `jobs` like [{"id": 500, "name": "test", "status": "failed", "runner_id": 9}]."""
        with self._lock:
            pipeline = {
                "id": pipeline_id, "project_id": project_id, "status": status, "ref": "main",
                "web_url": f"https://gitlab.example/{project_path or project_id}/-/pipelines/{pipeline_id}",
                "_project_path": project_path,
            }
            self.state["pipelines"][str(pipeline_id)] = pipeline
            for job in jobs or []:
                self._add_job(pipeline, job)
            return _public(pipeline)

    def _add_job(self, pipeline: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        runner_id = job.get("runner_id")
        record = {
            "id": int(job["id"]),
            "name": job.get("name", "build"),
            "stage": job.get("stage", "test"),
            "status": job.get("status", "failed"),
            "ref": "main",
            "pipeline": {"id": pipeline["id"], "project_id": pipeline["project_id"],
                         "status": pipeline["status"]},
            "runner": None if runner_id is None else {"id": runner_id, "description": f"runner-{runner_id}"},
            "web_url": f"https://gitlab.example/{pipeline['_project_path'] or pipeline['project_id']}"
                       f"/-/jobs/{job['id']}",
            "_retried": False,
        }
        self.state["jobs"][str(record["id"])] = record
        return record

    def add_runner(self, runner_id: int, *, description: str = "", paused: bool = False,
                   online: bool = True) -> dict[str, Any]:
        with self._lock:
            runner = {"id": runner_id, "description": description or f"runner-{runner_id}",
                      "paused": paused, "active": not paused, "online": online, "is_shared": False,
                      "status": self._runner_status(paused, online)}
            self.state["runners"][str(runner_id)] = runner
            return dict(runner)

    def set_runner_online(self, runner_id: int, online: bool) -> None:
        with self._lock:
            runner = self.state["runners"][str(runner_id)]
            runner["online"] = online
            runner["status"] = self._runner_status(runner["paused"], online)

    @staticmethod
    def _runner_status(paused: bool, online: bool) -> str:
        if not online:
            return "offline"
        return "paused" if paused else "online"

    def complete_job(self, job_id: int, status: str = "success") -> dict[str, Any]:
        with self._lock:
            job = self.state["jobs"][str(job_id)]
            job["status"] = status
            return _public(job)

    def job(self, job_id: int) -> dict[str, Any]:
        with self._lock:
            return _public(self.state["jobs"][str(job_id)])

    def latest_jobs(self, pipeline_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [_public(j) for j in self.state["jobs"].values()
                    if j["pipeline"]["id"] == pipeline_id and not j["_retried"]]

    def runner(self, runner_id: int) -> dict[str, Any]:
        with self._lock:
            return dict(self.state["runners"][str(runner_id)])

    def _authenticate(self, call: RecordedCall) -> Reply | None:
        token = call.headers.get("private-token", "")
        scheme, _, bearer = call.headers.get("authorization", "").partition(" ")
        if token in self.tokens or (scheme.lower() == "bearer" and bearer in self.tokens):
            return None
        return Reply(401, {"message": "401 Unauthorized"})

    def _routes(self) -> list[Route]:
        return [
            ("GET", re.compile(_PROJECT + r"/jobs/(\d+)"), self._get_job),
            ("POST", re.compile(_PROJECT + r"/jobs/(\d+)/retry"), self._retry_job),
            ("POST", re.compile(_PROJECT + r"/jobs/(\d+)/cancel"), self._cancel_job),
            ("GET", re.compile(_PROJECT + r"/pipelines/(\d+)/jobs"), self._pipeline_jobs),
            ("POST", re.compile(_PROJECT + r"/pipelines/(\d+)/retry"), self._retry_pipeline),
            ("GET", re.compile(r"/api/v4/runners/(\d+)"), self._get_runner),
            ("PUT", re.compile(r"/api/v4/runners/(\d+)"), self._update_runner),
        ]

    def _in_project(self, project: str, pipeline_id: int) -> dict[str, Any] | None:
        pipeline = self.state["pipelines"].get(str(pipeline_id))
        if pipeline is None:
            return None
        if project not in (str(pipeline["project_id"]), pipeline["_project_path"]):
            return None
        return pipeline

    def _find_job(self, project: str, job_id: str) -> dict[str, Any] | None:
        job = self.state["jobs"].get(job_id)
        if job is None or self._in_project(project, job["pipeline"]["id"]) is None:
            return None
        return job

    def _get_job(self, call: RecordedCall, project: str, job_id: str) -> Reply:
        job = self._find_job(project, job_id)
        return Reply(200, _public(job)) if job else Reply(404, {"message": "404 Job Not Found"})

    def _retry(self, job: dict[str, Any]) -> dict[str, Any]:
        pipeline = self.state["pipelines"][str(job["pipeline"]["id"])]
        job["_retried"] = True
        pipeline["status"] = "running"
        return self._add_job(pipeline, {"id": self._next_id(), "name": job["name"], "stage": job["stage"],
                                        "status": "pending"})

    def _retry_job(self, call: RecordedCall, project: str, job_id: str) -> Reply:
        job = self._find_job(project, job_id)
        if job is None:
            return Reply(404, {"message": "404 Job Not Found"})
        if job["_retried"] or job["status"] not in _RETRYABLE:
            return Reply(403, {"message": "403 Forbidden - Job is not retryable"})
        return Reply(201, _public(self._retry(job)))

    def _cancel_job(self, call: RecordedCall, project: str, job_id: str) -> Reply:
        job = self._find_job(project, job_id)
        if job is None:
            return Reply(404, {"message": "404 Job Not Found"})
        if job["status"] in ("created", "pending", "running"):
            job["status"] = "canceled"
        return Reply(201, _public(job))

    def _pipeline_jobs(self, call: RecordedCall, project: str, pipeline_id: str) -> Reply:
        if self._in_project(project, int(pipeline_id)) is None:
            return Reply(404, {"message": "404 Pipeline Not Found"})
        include_retried = _flag(call.query.get("include_retried", "false"))
        jobs = [_public(j) for j in self.state["jobs"].values()
                if j["pipeline"]["id"] == int(pipeline_id) and (include_retried or not j["_retried"])]
        return Reply(200, sorted(jobs, key=lambda j: -j["id"]))  # newest first, as GitLab lists them

    def _retry_pipeline(self, call: RecordedCall, project: str, pipeline_id: str) -> Reply:
        pipeline = self._in_project(project, int(pipeline_id))
        if pipeline is None:
            return Reply(404, {"message": "404 Pipeline Not Found"})
        for job in list(self.state["jobs"].values()):
            if job["pipeline"]["id"] == int(pipeline_id) and not job["_retried"] \
                    and job["status"] in ("failed", "canceled"):
                self._retry(job)
        return Reply(201, _public(pipeline))

    def _get_runner(self, call: RecordedCall, runner_id: str) -> Reply:
        runner = self.state["runners"].get(runner_id)
        return Reply(200, dict(runner)) if runner else Reply(404, {"message": "404 Runner Not Found"})

    def _update_runner(self, call: RecordedCall, runner_id: str) -> Reply:
        runner = self.state["runners"].get(runner_id)
        if runner is None:
            return Reply(404, {"message": "404 Runner Not Found"})
        fields = dict(call.query)
        if isinstance(call.body, dict):
            fields.update(call.body)
        if "paused" in fields:
            runner["paused"] = _flag(fields["paused"])
        elif "active" in fields:  # the older spelling, still accepted by GitLab
            runner["paused"] = not _flag(fields["active"])
        else:
            return Reply(400, {"error": "at least one parameter must be provided"})
        runner["active"] = not runner["paused"]
        runner["status"] = self._runner_status(runner["paused"], runner["online"])
        return Reply(200, dict(runner))


# =============================================================================
# Jenkins
# =============================================================================

_JOB = r"((?:/job/[^/]+)+)"


class FakeJenkins(FakeProvider):
    """Jenkins remote access API: buildWithParameters with the CSRF crumb (tied to the
    session cookie), last build, queue items, nodes temporarily offline."""

    name = "jenkins"
    control_ops = frozenset({"add_job", "add_node", "complete_build", "set_node_connected"})

    def __init__(self, *, users: dict[str, str] | None = None, require_crumb: bool = True,
                 port: int = 0, state_file: str | None = None) -> None:
        super().__init__(port=port, state_file=state_file)
        self.users = dict(users or {"healing-guard": "api-token-1"})
        self.user, self.api_token = next(iter(self.users.items()))
        self.require_crumb = require_crumb

    def _initial_state(self) -> dict[str, Any]:
        return {"jobs": {}, "nodes": {}, "queue": {}, "crumbs": {}, "next_id": 100}

    def add_job(self, name: str, builds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A job (folders as "folder/job"); `builds` like [{"number": 7, "result": "FAILURE"}]."""
        with self._lock:
            job = {"name": name, "builds": []}
            for build in builds or []:
                job["builds"].append({"number": int(build["number"]), "result": build.get("result",
                                                                                          "FAILURE"),
                                      "building": bool(build.get("building", False)), "parameters": {}})
            self.state["jobs"][name] = job
            return job

    def add_node(self, name: str, *, connected: bool = True, temporarily_offline: bool = False) -> None:
        with self._lock:
            self.state["nodes"][name] = {"connected": connected, "temporarilyOffline": temporarily_offline,
                                         "offlineCauseReason": ""}

    def set_node_connected(self, name: str, connected: bool) -> None:
        with self._lock:
            self.state["nodes"][name]["connected"] = connected

    def complete_build(self, name: str, number: int, result: str = "SUCCESS") -> None:
        with self._lock:
            for build in self.state["jobs"][name]["builds"]:
                if build["number"] == number:
                    build["building"], build["result"] = False, result

    def builds(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(b) for b in self.state["jobs"][name]["builds"]]

    def node(self, name: str) -> dict[str, Any]:
        with self._lock:
            return self._node_json(name)

    def _authenticate(self, call: RecordedCall) -> Reply | None:
        scheme, _, encoded = call.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, secret = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                user, secret = "", ""
            if self.users.get(user) == secret and user:
                return self._check_crumb(call)
        return Reply(401, "<html><body>Authentication required</body></html>",
                     {"WWW-Authenticate": 'Basic realm="Jenkins"'})

    def _session(self, call: RecordedCall) -> str:
        for part in call.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name.startswith("JSESSIONID"):
                return value
        return ""

    def _check_crumb(self, call: RecordedCall) -> Reply | None:
        if call.method != "POST" or not self.require_crumb:
            return None
        expected = self.state["crumbs"].get(self._session(call))
        if expected is None or call.headers.get("jenkins-crumb") != expected:
            return Reply(403,
                         "<html><body>Error 403 No valid crumb was included in the request</body></html>")
        return None

    def _routes(self) -> list[Route]:
        return [
            ("GET", re.compile(r"/crumbIssuer/api/json"), self._crumb),
            ("POST", re.compile(_JOB + r"/buildWithParameters"), self._build_with_parameters),
            ("POST", re.compile(_JOB + r"/build"), self._build_with_parameters),
            ("GET", re.compile(_JOB + r"/api/json"), self._get_job),
            ("GET", re.compile(_JOB + r"/lastBuild/api/json"), self._last_build),
            ("GET", re.compile(_JOB + r"/(\d+)/api/json"), self._get_build),
            ("GET", re.compile(r"/queue/item/(\d+)/api/json"), self._queue_item),
            ("GET", re.compile(r"/computer/([^/]+)/api/json"), self._get_node),
            ("POST", re.compile(r"/computer/([^/]+)/toggleOffline"), self._toggle_offline),
        ]

    @staticmethod
    def _job_name(path: str) -> str:
        return "/".join(urllib.parse.unquote(p) for p in path.split("/job/")[1:])

    def _crumb(self, call: RecordedCall) -> Reply:
        session = self._session(call)
        headers = {}
        if session not in self.state["crumbs"]:
            session = secrets.token_hex(8)
            headers["Set-Cookie"] = f"JSESSIONID.fake{self.port}={session}; Path=/; HttpOnly"
        crumb = secrets.token_hex(16)
        self.state["crumbs"][session] = crumb
        return Reply(200, {"_class": "hudson.security.csrf.DefaultCrumbIssuer", "crumb": crumb,
                           "crumbRequestField": "Jenkins-Crumb"}, headers)

    def _build_url(self, name: str, number: int) -> str:
        job_path = "".join(f"/job/{urllib.parse.quote(p)}" for p in name.split("/"))
        return f"{self.base_url}{job_path}/{number}/"

    def _build_json(self, name: str, build: dict[str, Any]) -> dict[str, Any]:
        parameters = [{"name": k, "value": v} for k, v in build["parameters"].items()]
        return {"_class": "hudson.model.FreeStyleBuild", "number": build["number"], "result": build["result"],
                "building": build["building"], "url": self._build_url(name, build["number"]),
                "actions": [{"_class": "hudson.model.ParametersAction", "parameters": parameters}]}

    def _build_with_parameters(self, call: RecordedCall, job_path: str) -> Reply:
        name = self._job_name(job_path)
        job = self.state["jobs"].get(name)
        if job is None:
            return Reply(404, "<html><body>Not Found</body></html>")
        parameters = dict(call.query)
        if isinstance(call.body, dict):
            parameters.update(call.body)
        number = max((b["number"] for b in job["builds"]), default=0) + 1
        # The queue hands the item to an executor at once in this fake.
        job["builds"].append({"number": number, "result": None, "building": True, "parameters": parameters})
        queue_id = self._next_id()
        self.state["queue"][str(queue_id)] = {"job": name, "number": number}
        return Reply(201, None, {"Location": f"{self.base_url}/queue/item/{queue_id}/"})

    def _get_job(self, call: RecordedCall, job_path: str) -> Reply:
        name = self._job_name(job_path)
        job = self.state["jobs"].get(name)
        if job is None:
            return Reply(404, "<html><body>Not Found</body></html>")
        last = job["builds"][-1] if job["builds"] else None
        return Reply(200, {
            "_class": "hudson.model.FreeStyleProject", "name": name.split("/")[-1], "fullName": name,
            "inQueue": False, "nextBuildNumber": (last["number"] + 1) if last else 1,
            "lastBuild": None if last is None else {"number": last["number"],
                                                    "url": self._build_url(name, last["number"])},
        })

    def _last_build(self, call: RecordedCall, job_path: str) -> Reply:
        name = self._job_name(job_path)
        job = self.state["jobs"].get(name)
        if job is None or not job["builds"]:
            return Reply(404, "<html><body>Not Found</body></html>")
        return Reply(200, self._build_json(name, job["builds"][-1]))

    def _get_build(self, call: RecordedCall, job_path: str, number: str) -> Reply:
        name = self._job_name(job_path)
        for build in (self.state["jobs"].get(name) or {"builds": []})["builds"]:
            if build["number"] == int(number):
                return Reply(200, self._build_json(name, build))
        return Reply(404, "<html><body>Not Found</body></html>")

    def _queue_item(self, call: RecordedCall, queue_id: str) -> Reply:
        item = self.state["queue"].get(queue_id)
        if item is None:
            return Reply(404, "<html><body>Not Found</body></html>")
        return Reply(200, {"_class": "hudson.model.Queue$LeftItem", "id": int(queue_id),
                           "executable": {"number": item["number"],
                                          "url": self._build_url(item["job"], item["number"])}})

    def _node_json(self, name: str) -> dict[str, Any]:
        node = self.state["nodes"][name]
        return {"_class": "hudson.slaves.SlaveComputer", "displayName": name,
                "offline": node["temporarilyOffline"] or not node["connected"],
                "temporarilyOffline": node["temporarilyOffline"],
                "offlineCauseReason": node["offlineCauseReason"],
                # Jenkins' node monitors report nothing for an agent that is not connected.
                "monitorData": {"hudson.node_monitors.ResponseTimeMonitor":
                                {"average": 42} if node["connected"] else None}}

    def _get_node(self, call: RecordedCall, name: str) -> Reply:
        if name not in self.state["nodes"]:
            return Reply(404, "<html><body>Not Found</body></html>")
        return Reply(200, self._node_json(name))

    def _toggle_offline(self, call: RecordedCall, name: str) -> Reply:
        node = self.state["nodes"].get(name)
        if node is None:
            return Reply(404, "<html><body>Not Found</body></html>")
        node["temporarilyOffline"] = not node["temporarilyOffline"]
        node["offlineCauseReason"] = call.query.get("offlineMessage",
                                                    "") if node["temporarilyOffline"] else ""
        return Reply(302, None, {"Location": f"{self.base_url}/computer/{urllib.parse.quote(name)}/"})


# =============================================================================
# Running a fake as its own process
# =============================================================================

FAKES: dict[str, type[FakeProvider]] = {"github": FakeGitHub, "gitlab": FakeGitLab, "jenkins": FakeJenkins}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.providers",
                                     description="Run a fake CI provider on loopback.")
    parser.add_argument("provider", choices=sorted(FAKES))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-file", default=None, help="persist calls and state here after every call")
    parser.add_argument("--token", action="append", default=None,
                        help="an accepted token (GitHub/GitLab) or user:api-token (Jenkins); repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    kwargs: dict[str, Any] = {"port": args.port, "state_file": args.state_file}
    if args.token:
        if args.provider == "jenkins":
            kwargs["users"] = dict(t.split(":", 1) for t in args.token)
        else:
            kwargs["tokens"] = args.token
    fake = FAKES[args.provider](**kwargs)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fake.start()
    try:
        sys.stdout.write(f"{fake.port}\n")
        sys.stdout.flush()
        log.info("fake %s serving on %s", args.provider, fake.base_url)
        stop.wait()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
