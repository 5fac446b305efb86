"""A full disk (issue 15, defect 5): the predictor, a SQLite-backed service, runs with its
data dir on a small file system (a 4 MiB tmpfs; a loop-mounted ext4 image if tmpfs cannot
be mounted; skipped, naming what was missing, if neither can) and is fed ImportRuns until
the disk is full.

Invariants: the refusal is a clear RESOURCE_EXHAUSTED or UNAVAILABLE (never INTERNAL or
UNKNOWN) that says the disk is full; health reports NOT_SERVING while it is; once space
returns, imports are accepted again and health is SERVING; every acknowledged run is
still stored, and PRAGMA integrity_check says ok.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.mesh import ROOT, free_port
from healing_guard.common.v1 import common_pb2
from healing_guard.predictor.v1 import predictor_pb2, predictor_pb2_grpc
from tests.reliability.harness import Harness, record_result

pytestmark = pytest.mark.integration

SIZE_MIB = 4
CLEAR = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}


def _mount_small_fs(where: Path) -> str:
    """Mount a SIZE_MIB file system at `where`; how, or pytest.skip saying what was missing."""
    where.mkdir(parents=True, exist_ok=True)
    tried = []
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", str(where)],
                            capture_output=True, text=True)
    if result.returncode == 0:
        return "tmpfs"
    tried.append(f"mount -t tmpfs: {result.stderr.strip() or result.returncode}")
    image = where.parent / "small-fs.img"
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mke2fs")
    if mkfs:
        with open(image, "wb") as handle:
            handle.truncate(SIZE_MIB << 20)
        made = subprocess.run([mkfs, "-q", "-F", str(image)], capture_output=True, text=True)
        if made.returncode == 0:
            result = subprocess.run(["mount", "-o", "loop", str(image), str(where)], capture_output=True, text=True)
            if result.returncode == 0:
                return "loop-mounted ext4"
            tried.append(f"mount -o loop: {result.stderr.strip() or result.returncode}")
        else:
            tried.append(f"{mkfs}: {made.stderr.strip()}")
    else:
        tried.append("no mkfs.ext4 or mke2fs")
    pytest.skip("no small file system could be mounted (needs root or CAP_SYS_ADMIN): " + "; ".join(tried))


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    where = tmp_path / "small"
    kind = _mount_small_fs(where)
    try:
        yield where, kind
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _runs(count: int, batch: str) -> list[predictor_pb2.Run]:
    return [predictor_pb2.Run(
        job=common_pb2.JobRef(provider=common_pb2.PROVIDER_GITHUB_ACTIONS, repository="acme/disk", pipeline="ci",
                              job="test", run_id=f"{batch}-{i}", attempt=1, commit_sha="a" * 40, branch="main",
                              runner="r-" + "x" * 200),
        result=predictor_pb2.RUN_RESULT_FAILURE if i % 3 == 0 else predictor_pb2.RUN_RESULT_SUCCESS,
        duration_seconds=60.0 + i, tests_total=100, tests_failed=i % 3,
        flaky_tests=[f"tests/test_{i}_{j}.py::test_case_{'y' * 80}" for j in range(5)],
    ) for i in range(count)]


def _health(channel: grpc.Channel) -> str:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as error:
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_a_full_disk_is_a_clear_refusal_reported_by_health_and_recovered_from(
    harness: Harness, heal_tenant: str, small_fs: tuple[Path, str]
) -> None:
    where, kind = small_fs
    mesh = harness.mesh
    port = free_port()
    env = {**mesh.service_env("predictor"), "HG_LISTEN": f"127.0.0.1:{port}",
           "HG_DATA_DIR": str(where / "predictor"), "HG_REPLICA_ID": "predictor-small-disk"}
    log_path = mesh.log_dir / "predictor-small-disk.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "services.predictor"], cwd=ROOT,
                                   env={**os.environ, **env}, stdout=log_file, stderr=log_file,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        mesh.wait_serving(f"127.0.0.1:{port}", "predictor", via_gateway=False, timeout=60)
        pki = mesh.pki
        channel = grpc.secure_channel(
            f"127.0.0.1:{port}",
            grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.key("operator").read_bytes(),
                                         pki.cert("operator").read_bytes()),
            options=[("grpc.ssl_target_name_override", "predictor.healing-guard.local"),
                     ("grpc.max_send_message_length", 16 << 20)])
        stub = predictor_pb2_grpc.PredictorStub(channel)
        # 1 MiB of ballast: deleting it is "space returns", on tmpfs and ext4 alike
        ballast = where / "ballast"
        ballast.write_bytes(b"\0" * (1 << 20))
        token = harness.mint("disk-filler", heal_tenant, ["operator", "viewer"])
        metadata = (("authorization", f"Bearer {token}"),)
        stored = 0
        refusal: grpc.RpcError | None = None
        for batch in range(400):
            try:
                reply = stub.ImportRuns(predictor_pb2.ImportRunsRequest(runs=_runs(200, f"b{batch}")),
                                        metadata=metadata, timeout=30)
                stored += reply.recorded
            except grpc.RpcError as error:
                refusal = error
                break
        assert refusal is not None, f"{stored} runs stored and the {SIZE_MIB} MiB {kind} never filled"
        deadline = time.monotonic() + 3  # health looks every 0.5 s (services.common.server)
        while (health_when_full := _health(channel)) == "SERVING" and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"\nfull disk ({kind}, {SIZE_MIB} MiB) after {stored} runs: {refusal.code().name}: "
              f"{refusal.details()}; health {health_when_full}")
        assert process.poll() is None, "the predictor died when the disk filled"
        assert refusal.code() in CLEAR, f"{refusal.code().name}: {refusal.details()}"
        assert "disk" in (refusal.details() or "").lower() or "space" in (refusal.details() or "").lower()
        assert health_when_full == "NOT_SERVING"

        ballast.unlink()  # space returns
        recovered_at = time.monotonic()
        recovered = None
        while time.monotonic() - recovered_at < 30:
            try:
                reply = stub.ImportRuns(predictor_pb2.ImportRunsRequest(runs=_runs(5, f"after-{uuid.uuid4().hex}")),
                                        metadata=metadata, timeout=30)
                stored += reply.recorded
                recovered = time.monotonic() - recovered_at
                break
            except grpc.RpcError as error:
                assert error.code() in CLEAR, f"{error.code().name}: {error.details()}"
                time.sleep(0.5)
        assert recovered is not None, "imports still refused 30 s after space returned"
        deadline = time.monotonic() + 15
        while _health(channel) != "SERVING" and time.monotonic() < deadline:
            time.sleep(0.2)
        health_after = _health(channel)
        assert health_after == "SERVING"
        channel.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    database = where / "predictor" / "predictor.sqlite3"
    connection = sqlite3.connect(database)
    try:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        rows = connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    finally:
        connection.close()
    record_result("full_disk", {"file_system": f"{kind}, {SIZE_MIB} MiB", "runs_stored_before_full": stored,
                                "refusal": f"{refusal.code().name}: {refusal.details()}",
                                "health_when_full": health_when_full, "recovered_after_s": round(recovered, 2),
                                "integrity_check": integrity, "rows": rows})
    assert integrity == "ok"
    assert rows >= stored, f"{stored} runs acknowledged, {rows} stored"
