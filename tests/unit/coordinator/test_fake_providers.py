"""The loopback provider fakes themselves: auth, faults, and running as their own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from services.common.vocabulary import ActionKind, Provider
from services.coordinator.executors.base import ActionRequest, ActionStatus
from services.coordinator.executors.registry import executors_from_environment
from tests.fakes.providers import FakeGitHub, FakeGitLab, FakeJenkins

ROOT = Path(__file__).resolve().parents[3]


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str,
                                                                        str] | None = None) -> tuple[int,
                                                                                                     Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw)
        except ValueError:
            return error.code, raw.decode()


@pytest.mark.parametrize("fake_type", [FakeGitHub, FakeGitLab, FakeJenkins])
def test_every_fake_refuses_unauthenticated_calls_and_records_them(fake_type: type) -> None:
    with fake_type() as fake:
        status, _ = call(fake.base_url + "/anything")
        assert status == 401
        assert [(c.method, c.path, c.status) for c in fake.calls] == [("GET", "/anything", 401)]


def test_injected_faults_come_in_order_then_stop() -> None:
    with FakeGitHub() as gh:
        gh.add_run("acme/web", 42)
        url = gh.base_url + "/repos/acme/web/actions/runs/42"
        auth = {"Authorization": f"Bearer {gh.token}"}
        gh.fail_next(1, status=502)
        gh.rate_limit_next(kind="403", reset_in=30)
        assert call(url, headers=auth)[0] == 502
        status, body = call(url, headers=auth)
        assert status == 403 and body["message"] == "API rate limit exceeded."
        status, run = call(url, headers=auth)
        assert status == 200 and run["run_attempt"] == 1
        assert gh.count("GET", "/repos/acme/web/actions/runs/42") == 3


def test_github_fake_refuses_a_rerun_while_the_run_is_running() -> None:
    with FakeGitHub() as gh:
        gh.add_run("acme/web", 42)
        url = gh.base_url + "/repos/acme/web/actions/runs/42/rerun-failed-jobs"
        auth = {"Authorization": f"Bearer {gh.token}"}
        assert call(url, "POST", headers=auth)[0] == 201
        status, body = call(url, "POST", headers=auth)
        assert status == 403 and "already running" in body["message"]
        assert gh.run(42)["run_attempt"] == 2


def start_process(provider: str, state_file: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.providers", provider, "--port", "0", "--state-file",
         str(state_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    assert port.isdigit(), f"the fake printed {port!r} instead of its port"
    return process, f"http://127.0.0.1:{port}"


def stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_a_fake_as_its_own_process_is_controlled_and_inspected_over_http(tmp_path: Path) -> None:
    state_file = tmp_path / "github.json"
    process, base_url = start_process("github", state_file)
    try:
        assert call(base_url + "/_fake/control", "POST",
                    {"op": "add_run", "args": {"repository": "acme/web", "run_id": 42}})[0] == 200
        assert call(base_url + "/_fake/control", "POST", {"op": "fail_next", "args": {"n": 1}})[0] == 200
        assert call(base_url + "/_fake/control", "POST", {"op": "shutdown"})[0] == 400

        executors = executors_from_environment({"GITHUB_API_URL": base_url, "GITHUB_TOKEN": "test-token"},
                                               sleep=lambda _: None)
        request = ActionRequest("a", "k", "acme", ActionKind.RETRY, Provider.PROVIDER_GITHUB_ACTIONS,
                                {"repository": "acme/web", "run_id": "42", "run_attempt": "1"})
        assert executors[Provider.PROVIDER_GITHUB_ACTIONS].execute(request).status is ActionStatus.SUCCEEDED

        _, log = call(base_url + "/_fake/calls")
        assert [(c["method"], c["status"]) for c in log["calls"]] == [("GET", 503), ("GET", 200), ("POST",
                                                                                                   201)]
        saved = json.loads(state_file.read_text())
        assert len(saved["calls"]) == 3 and saved["state"]["runs"]["42"]["run_attempt"] == 2
    finally:
        stop_process(process)

    # Started again on the same file, it carries on where it stopped.
    process, base_url = start_process("github", state_file)
    try:
        _, state = call(base_url + "/_fake/state")
        assert state["runs"]["42"]["run_attempt"] == 2
        assert len(call(base_url + "/_fake/calls")[1]["calls"]) == 3
    finally:
        stop_process(process)
