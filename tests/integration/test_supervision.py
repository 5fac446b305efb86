"""The supervised local mesh, as `make up` / `make status` / `make down` run it.

A mesh of its own (not the shared session mesh): this test kills its processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.mesh import Mesh
from deploy.pki.make_pki import PkiPaths

ROOT = Path(__file__).resolve().parents[2]
BACK_WITHIN_S = 30.0


class SupervisedMesh:
    def __init__(self, base: Path) -> None:
        self.run_dir, self.pki_dir = base / "run", base / "pki"

    def cli(self, command: str, *extra: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deploy.mesh", command, "--run-dir", str(self.run_dir),
             "--pki-dir", str(self.pki_dir), *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def status(self) -> dict[str, dict[str, Any]]:
        result = self.cli("status", "--json", timeout=120)
        return {row["name"]: row for row in json.loads(result.stdout)}

    def pid(self, name: str) -> int:
        return int((self.run_dir / "pids" / f"{name}.pid").read_text())

    def mesh(self) -> Mesh:
        mesh = Mesh(run_dir=self.run_dir, pki_dir=self.pki_dir)
        mesh.pki = PkiPaths(self.pki_dir)
        mesh.ports.update(json.loads((self.run_dir / "supervisor.json").read_text())["ports"])
        return mesh

    def back_serving(self, name: str, old_pid: int, within: float = BACK_WITHIN_S) -> float:
        """Seconds from now until `name` runs as a new process and answers SERVING; fails past `within`."""
        started = time.monotonic()
        mesh = self.mesh()
        last = "no new process yet"
        while time.monotonic() - started < within:
            try:
                pid = self.pid(name)
            except (OSError, ValueError):
                pid = old_pid
            if pid != old_pid:
                last = mesh.health(name, timeout=1.0)
                if last == "SERVING":
                    return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"{name} not back SERVING within {within:.0f} s after SIGKILL (last: {last})")


def gone_within(pid: int, seconds: float) -> bool:
    """True once `pid` no longer exists or is a zombie waiting for its parent."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisedMesh]:
    mesh = SupervisedMesh(tmp_path_factory.mktemp("supervised"))
    up = mesh.cli("up")
    try:
        assert up.returncode == 0, up.stderr
        yield mesh
    finally:
        mesh.cli("down", timeout=120)


def test_a_killed_service_is_restarted_and_serving_again(supervised: SupervisedMesh) -> None:
    before = supervised.status()
    assert all(row["state"] == "running" and row["health"] == "SERVING" for row in before.values()), before
    old = supervised.pid("detector")
    os.kill(old, signal.SIGKILL)
    seconds = supervised.back_serving("detector", old)
    print(f"\ndetector back SERVING {seconds:.2f} s after SIGKILL")
    mesh = supervised.mesh()
    mesh.wait_serving(mesh.gateway_address, "detector", via_gateway=True, timeout=30)
    row = supervised.status()["detector"]
    assert row["restarts"] == 1 and row["last_exit"] == "killed by SIGKILL" and row["state"] == "running"
    assert "killed by SIGKILL" in supervised.cli("status").stdout


def test_up_one_second_after_a_kill_waits_for_the_restart_instead_of_saying_up(supervised: SupervisedMesh) -> None:
    old = supervised.pid("planner")
    os.kill(old, signal.SIGKILL)
    time.sleep(1.0)  # the scenario: `make up` one second after a SIGKILL
    up = supervised.cli("up")
    assert up.returncode == 0, up.stderr
    assert "restarted by the supervisor: " in up.stdout and "planner" in up.stdout
    assert supervised.pid("planner") != old
    assert supervised.status()["planner"]["health"] == "SERVING"


def test_repeated_deaths_back_off_and_are_counted(supervised: SupervisedMesh) -> None:
    times = []
    for _ in range(3):
        old = supervised.pid("predictor")
        os.kill(old, signal.SIGKILL)
        times.append(supervised.back_serving("predictor", old))
    print(f"\npredictor back SERVING after successive SIGKILLs: {', '.join(f'{t:.2f} s' for t in times)}")
    assert supervised.status()["predictor"]["restarts"] == 3


def test_up_without_a_live_supervisor_starts_a_fresh_mesh(supervised: SupervisedMesh) -> None:
    supervisor = int((supervised.run_dir / "supervisor.pid").read_text())
    os.kill(supervisor, signal.SIGKILL)
    os.kill(supervised.pid("audit"), signal.SIGKILL)
    time.sleep(0.5)
    status = supervised.cli("status")
    assert status.returncode == 1 and "no supervisor is running" in status.stdout
    up = supervised.cli("up")
    assert up.returncode == 0, up.stderr
    assert "no supervisor" in up.stderr and "audit" in up.stderr
    rows = supervised.status()
    assert all(row["state"] == "running" and row["health"] == "SERVING" for row in rows.values()), rows
    assert all(row["restarts"] == 0 for row in rows.values())


def test_down_stops_the_supervisor_and_every_process(supervised: SupervisedMesh) -> None:
    pids = [supervised.pid(p.stem) for p in (supervised.run_dir / "pids").glob("*.pid")]
    supervisor = int((supervised.run_dir / "supervisor.pid").read_text())
    down = supervised.cli("down", timeout=120)
    assert down.returncode == 0 and "supervisor" in down.stdout
    still = [pid for pid in [*pids, supervisor] if not gone_within(pid, 10)]
    assert not still, f"still running after make down: {still}"
    assert "nothing is running" in supervised.cli("status").stdout
