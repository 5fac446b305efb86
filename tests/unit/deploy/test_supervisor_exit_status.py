"""The supervisor names how a process ended even when it dies between the tick's reap
and its liveness check (seen by the reliability harness as "ended (status unknown)" for
a SIGKILLed planner)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from deploy import supervisor
from deploy.mesh import Process, is_zombie
from deploy.supervisor import Supervisor, Watched


class _Mesh:
    def __init__(self, tmp_path: Path) -> None:
        self.run_dir = tmp_path
        self.ports: dict[str, int] = {}

    def respawn(self, name: str) -> Process:
        return Process(name=name, pid=1, log_path=self.run_dir / f"{name}.log")


def test_a_child_that_died_after_the_reap_is_reported_killed_by_sigkill(tmp_path: Path, monkeypatch) -> None:
    child = subprocess.Popen(["sleep", "30"])
    watched = Watched(name="planner", pid=child.pid, started_at=time.monotonic())
    boss = Supervisor(_Mesh(tmp_path))  # type: ignore[arg-type]
    boss.watched = {"planner": watched}
    child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not is_zombie(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    monkeypatch.setattr(supervisor, "_reap", lambda: {})  # the death came after this tick's reap
    assert boss.tick(time.monotonic())
    child.returncode = -9  # reaped by the supervisor, not by Popen
    assert watched.last_exit == "killed by SIGKILL"
    assert watched.state == "restarting"


def test_a_zombie_not_yet_reapable_is_looked_at_again_on_the_next_tick(tmp_path: Path, monkeypatch) -> None:
    """A multi-threaded service shows as a zombie before waitpid can reap it (its other
    threads are still exiting): the supervisor waits for the status instead of saying
    "ended (status unknown)"."""
    child = subprocess.Popen(["sleep", "30"])
    watched = Watched(name="tenancy", pid=child.pid, started_at=time.monotonic())
    boss = Supervisor(_Mesh(tmp_path))  # type: ignore[arg-type]
    boss.watched = {"tenancy": watched}
    monkeypatch.setattr(supervisor, "_reap", lambda: {})
    monkeypatch.setattr(supervisor, "_exists", lambda pid: False)
    monkeypatch.setattr(supervisor, "_reap_one", lambda pid: supervisor.NOT_YET)
    assert not boss.tick(time.monotonic())
    assert watched.state == "running" and watched.last_exit is None
    monkeypatch.setattr(supervisor, "_reap_one", lambda pid: 9)  # now reapable: killed by SIGKILL
    assert boss.tick(time.monotonic())
    assert watched.last_exit == "killed by SIGKILL" and watched.state == "restarting"
    child.kill()
    child.wait()
