"""`hg`, the operator's client: usage mistakes exit 2, a refused call exits 1 with one
readable line (status, message, the fields named), no traceback; --json for scripts.
Against a tiny in-process Coordinator (plaintext on loopback, port 0)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from deploy import hg
from deploy.client import MeshClient
from healing_guard.coordinator.v1 import coordinator_pb2, coordinator_pb2_grpc

REPORT_FIELDS = ["report.job.repository", "report.job.pipeline", "report.job.run_id"]


class FakeCoordinator(coordinator_pb2_grpc.CoordinatorServicer):
    def Leader(self, request, context):  # type: ignore[no-untyped-def]
        return coordinator_pb2.LeaderResponse(leader_id="coordinator-1", leader_address="127.0.0.1:1", term=7)

    def HealFailure(self, request, context):  # type: ignore[no-untyped-def]
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=name, description="must not be empty")
            for name in REPORT_FIELDS
        ])
        detail = any_pb2.Any()
        detail.Pack(bad)
        message = "; ".join(f"{name}: must not be empty" for name in REPORT_FIELDS)
        context.abort_with_status(rpc_status.to_status(
            status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])))

    def ListActions(self, request, context):  # type: ignore[no-untyped-def]
        context.abort(grpc.StatusCode.NOT_FOUND, f"plan {request.plan_id!r} not found")


class FakeClient(MeshClient):
    """A MeshClient over a plaintext channel to the in-process server."""

    def __init__(self, address: str) -> None:  # noqa: D107 -- no TLS, no token
        self.token = "t"
        self.channel = grpc.insecure_channel(address)
        self.coordinator = coordinator_pb2_grpc.CoordinatorStub(self.channel)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(FakeCoordinator(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield f"127.0.0.1:{port}"
    grpc_server.stop(None)


@pytest.fixture()
def fake_mesh(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(hg, "connect", lambda args: FakeClient(server))
    return server


@pytest.fixture()
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.log"
    path.write_text("npm ERR! network timeout\n")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = hg.main(argv)
    except SystemExit as exit_:  # argparse
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["heal"],
    ["heal", "job.log", "--provider", "github", "--repository", "o/r", "--pipeline", "ci", "--job", "test"],
    ["heal", "job.log", "--provider", "circleci", "--repository", "o/r", "--pipeline", "ci", "--job", "t",
     "--run-id", "1"],
    ["heal", "job.log", "--provider", "github", "--repository", "o/r", "--pipeline", "ci", "--job", "t",
     "--run-id", "1", "--attempt", "one"],
    ["audit"],
    ["audit", "export", "-o", "x.json"],
    ["diagnosis"],
])
def test_usage_mistakes_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    assert "usage: hg" in err and "Traceback" not in err


def test_a_log_file_that_cannot_be_read_is_a_usage_mistake(fake_mesh: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["heal", str(tmp_path / "missing.log"), "--provider", "github", "--repository", "o/r",
                        "--pipeline", "ci", "--job", "t", "--run-id", "1"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [f"hg: cannot read LOGFILE {tmp_path / 'missing.log'}: No such file or "
                                        "directory"]


def test_an_export_range_that_is_empty_is_a_usage_mistake(fake_mesh: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["audit", "export", "--from", "5", "--to", "3", "-o", "x.json"], capsys)
    assert (code, err.strip()) == (2, "hg: --to must be above --from, got --from 5 --to 3")


def test_a_refused_heal_exits_1_with_one_line_naming_every_field(
        fake_mesh: str, log_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["heal", str(log_file), "--provider", "github", "--repository", "o/r", "--pipeline", "ci",
                          "--job", "t", "--run-id", "1"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hg: INVALID_ARGUMENT: ")
    for name in REPORT_FIELDS:
        assert name in lines[0]
    assert "Traceback" not in err and out == ""


def test_not_found_exits_1_with_the_status_and_message(fake_mesh: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["actions", "p-123"], capsys)
    assert (code, err.strip()) == (1, "hg: NOT_FOUND: plan 'p-123' not found")


def test_leader_prints_a_line_and_json_for_scripts(fake_mesh: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["leader"], capsys)
    assert (code, out.strip()) == (0, "leader coordinator-1 at 127.0.0.1:1, term 7")
    code, out, _ = run(["leader", "--json"], capsys)
    assert code == 0
    assert json.loads(out) == {"leader_id": "coordinator-1", "leader_address": "127.0.0.1:1", "term": "7"}


def test_no_mesh_answering_is_one_line_that_says_what_to_check(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.mesh import free_port

    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setattr(hg, "TIMEOUT_S", 1.0)
    monkeypatch.setattr(hg, "connect", lambda args: FakeClient(address))
    code, _, err = run(["leader"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(("hg: UNAVAILABLE", "hg: DEADLINE_EXCEEDED")) and "make status" in lines[0]


def test_missing_connection_details_exit_1_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("HG_GATEWAY", "HG_CACERT", "HG_CERT", "HG_KEY", "HG_TOKEN", "HG_ENV_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HG_ENV_FILE", str(tmp_path / "absent.env"))
    code, _, err = run(["leader"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert "missing HG_GATEWAY" in lines[0] and "make up" in lines[0]


def test_audit_verify_runs_offline_and_refuses_a_wrapped_export(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"export_json": "{}"}))
    code, _, err = run(["audit", "verify", str(export)], capsys)
    assert code in (1, 2) and "Traceback" not in err and len(err.strip().splitlines()) == 1
