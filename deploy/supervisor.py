"""Keep the local mesh running: `make up` starts this supervisor, `make down` stops it.

The supervisor brings the mesh up itself (`Mesh.up`), so every mesh process is its
child (Envoy, started through a double fork, is re-parented to it as a child
subreaper) and it learns how each one ended. A process that dies is started again on
its own ports after a backoff that doubles from BACKOFF_FIRST_S up to BACKOFF_MAX_S;
a process that stayed up for HEALTHY_RESET_S starts again from the first step.

Everything it knows is in `<run dir>/supervisor.json` (written atomically on every
change): the mesh's phase, its ports, and per process pid, state (running,
restarting, stopped), restarts and last exit. `python -m deploy.mesh status` reads it
and adds a live health probe. SIGTERM stops supervising and the whole mesh.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploy.mesh import Mesh, is_zombie

STATE_FILE = "supervisor.json"
PID_FILE = "supervisor.pid"
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
HEALTHY_RESET_S = 60.0
POLL_S = 0.2
_PR_SET_CHILD_SUBREAPER = 36

log = logging.getLogger("supervisor")


@dataclass
class Watched:
    """What the supervisor knows about one mesh process."""

    name: str
    pid: int
    state: str = "running"  # running | restarting | stopped
    restarts: int = 0
    last_exit: str | None = None
    started_at: float = 0.0
    next_start_at: float | None = None
    failures: int = 0  # deaths since the last healthy period


def backoff_s(failures: int) -> float:
    """Delay before restart number `failures` (1-based) since the last healthy period."""
    return min(BACKOFF_FIRST_S * 2 ** max(failures - 1, 0), BACKOFF_MAX_S)


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.WEXITSTATUS(status)}"


class Supervisor:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.watched: dict[str, Watched] = {}
        self.phase = "starting"
        self.error: str | None = None
        self._stop = threading.Event()

    @property
    def state_path(self) -> Path:
        return self.mesh.run_dir / STATE_FILE

    def run(self) -> int:
        _become_subreaper()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        self.write_state()
        try:
            self.mesh.up()
        except Exception as error:  # the one edge: report why, for `mesh up` to print
            self.phase, self.error = "failed", str(error)
            self.write_state()
            log.error("mesh did not come up: %s", error)
            return 1
        now = time.monotonic()
        for name, process in self.mesh.processes.items():
            self.watched[name] = Watched(name=name, pid=process.pid, started_at=now)
        self.phase = "up"
        self.write_state()
        log.info("mesh up; supervising %s", ", ".join(sorted(self.watched)))
        while not self._stop.wait(POLL_S):
            if self.tick(time.monotonic()):
                self.write_state()
        self.phase = "stopping"
        for watched in self.watched.values():
            watched.state = "stopped"
        self.write_state()
        self.mesh.down()
        self.phase = "stopped"
        self.write_state()
        return 0

    def tick(self, now: float) -> bool:
        """Note the processes that ended and start those whose backoff is over; True if anything changed."""
        changed = False
        ended = _reap()
        for watched in self.watched.values():
            if watched.state == "running":
                status = ended.get(watched.pid)
                if status is None and _exists(watched.pid):
                    if watched.failures and now - watched.started_at >= HEALTHY_RESET_S:
                        watched.failures = 0
                        changed = True
                    continue
                if status is None:  # it died after _reap() looked: reap it now, for its status
                    status = _reap_one(watched.pid)
                    if status == NOT_YET:  # a zombie leader whose other threads are still exiting
                        continue  # reapable, with its status, on a later tick
                watched.last_exit = describe_exit(status) if status is not None else "ended (status unknown)"
                if now - watched.started_at >= HEALTHY_RESET_S:
                    watched.failures = 0
                watched.failures += 1
                delay = backoff_s(watched.failures)
                watched.state, watched.next_start_at = "restarting", now + delay
                log.warning("%s (pid %d) %s; restarting in %.1f s", watched.name, watched.pid,
                            watched.last_exit, delay)
                changed = True
            if watched.state == "restarting" and watched.next_start_at is not None and now >= watched.next_start_at:
                try:
                    process = self.mesh.respawn(watched.name)
                except Exception as error:  # a failed start is one more failure, not the end of supervision
                    watched.failures += 1
                    watched.last_exit = f"could not start: {error}"
                    watched.next_start_at = now + backoff_s(watched.failures)
                    log.error("%s could not start: %s", watched.name, error)
                else:
                    watched.pid, watched.state, watched.started_at = process.pid, "running", now
                    watched.next_start_at = None
                    watched.restarts += 1
                    log.info("%s restarted as pid %d (restart %d)", watched.name, process.pid, watched.restarts)
                changed = True
        return changed

    def write_state(self) -> None:
        state: dict[str, Any] = {
            "supervisor_pid": os.getpid(),
            "phase": self.phase,
            "error": self.error,
            "ports": self.mesh.ports,
            "processes": {
                name: {k: v for k, v in asdict(w).items() if k not in ("started_at", "next_start_at", "failures")}
                for name, w in sorted(self.watched.items())
            },
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_path)


def read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state


def supervisor_alive(run_dir: Path) -> int | None:
    """The supervisor's pid if it is running, else None."""
    try:
        pid = int((run_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _exists(pid) else None


def _reap() -> dict[int, int]:
    """Exit statuses of every child that has ended since the last call."""
    ended: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended[pid] = status


NOT_YET = -1  # _reap_one: our child, ended, but not reapable yet


def _reap_one(pid: int) -> int | None:
    """The exit status of this ended child; NOT_YET while it cannot be reaped yet (a
    multi-threaded process shows as a zombie before its last thread has exited); None if
    it is not our child (or was reaped already)."""
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return status if reaped == pid else NOT_YET


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not is_zombie(pid)


def _become_subreaper() -> None:
    """Orphaned descendants (Envoy after its double fork) become our children, so we see them end."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--pki-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_dir = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PID_FILE).write_text(str(os.getpid()))
    try:
        return Supervisor(Mesh(run_dir=run_dir, pki_dir=args.pki_dir.resolve())).run()
    finally:
        (run_dir / PID_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
