"""Kill under load (issue 15): while heals run, each mesh process in turn is SIGKILLed;
the supervisor (deploy.supervisor, as `make up` runs it) must start it again.

Invariants: the supervisor counts the restart and the process is back SERVING (the time
from SIGKILL to SERVING is printed and written to bench/results/reliability.json); every
heal the mesh acknowledged is found complete afterwards (its diagnosis reads back, its
plan's actions are all there and finished); nothing is done twice (one plan per failure,
each action carried out at most once by the executor); the audit log verifies offline.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.reliability.harness import Harness, record_result
from tests.reliability.load import HealLoad, check_complete, p99

pytestmark = pytest.mark.integration

BACK_WITHIN_S = 45.0
LOAD_BETWEEN_KILLS_S = 3.0
VICTIMS = ("tenancy", "audit", "predictor", "planner", "detector", "coordinator-1", "coordinator-2", "envoy", "etcd")


def _supervised(harness: Harness) -> dict[str, dict]:
    return json.loads((harness.mesh.run_dir / "supervisor.json").read_text())["processes"]


def back_serving(harness: Harness, name: str, old_pid: int, killed_at: float) -> float:
    last = "no new process yet"
    while time.monotonic() - killed_at < BACK_WITHIN_S:
        try:
            pid = harness.pid(name)
        except (OSError, ValueError):
            pid = old_pid
        if pid != old_pid:
            last = harness.health(name)
            if last == "SERVING":
                return time.monotonic() - killed_at
        time.sleep(0.05)
    raise AssertionError(f"{name} not back SERVING within {BACK_WITHIN_S:.0f} s of SIGKILL (last: {last})")


def test_each_process_killed_under_load_comes_back_and_no_heal_is_lost(
    harness: Harness, heal_tenant: str, tmp_path: Path
) -> None:
    load = HealLoad(harness, heal_tenant, workers=2).start()
    back: dict[str, float] = {}
    try:
        time.sleep(LOAD_BETWEEN_KILLS_S)
        for name in VICTIMS:
            before = _supervised(harness)[name]
            old = harness.pid(name)
            acknowledged = len(load.acknowledged)
            os.kill(old, signal.SIGKILL)
            killed_at = time.monotonic()
            back[name] = round(back_serving(harness, name, old, killed_at), 2)
            print(f"\n{name}: back SERVING {back[name]:.2f} s after SIGKILL "
                  f"({len(load.acknowledged) - acknowledged} heals acknowledged meanwhile)")
            deadline = time.monotonic() + 5
            while _supervised(harness)[name]["restarts"] == before["restarts"] and time.monotonic() < deadline:
                time.sleep(0.1)
            after = _supervised(harness)[name]
            assert after["restarts"] == before["restarts"] + 1 and after["last_exit"] == "killed by SIGKILL", after
            time.sleep(LOAD_BETWEEN_KILLS_S)
    finally:
        load.stop()
    for name in VICTIMS:  # everything answers again through the gateway too
        if name not in ("etcd", "envoy"):
            harness.mesh.wait_serving(harness.mesh.gateway_address, name.split("-")[0], via_gateway=True, timeout=30)
    result = check_complete(harness, load, harness.ledger)
    audit = harness.verify_audit(tmp_path)
    summary = {
        "kills_survived": len(back), "back_serving_s": back, "heals_attempted": load.attempts,
        "heals_acknowledged": result["acknowledged"], "heals_lost": len(result["lost"]),
        "heals_unfinished": len(result["unfinished"]), "done_twice": len(result["done_twice"]),
        "acknowledged_without_plan": result["acknowledged_without_plan"],
        "retried_acknowledgements": result["retried_acknowledgements"], "gave_up": len(result["gave_up"]),
        "actions_carried_out": result["actions_carried_out"], "errors_seen_by_clients": dict(load.errors),
        "heal_p99_ms": p99(load.latencies_ms), "audit": audit,
    }
    record_result("kill_under_load", summary)
    print(f"\nkill under load: {json.dumps(summary, indent=1)}")
    assert not result["lost"], f"{len(result['lost'])} acknowledged heals lost: {result['lost'][:5]}"
    assert not result["unfinished"], f"unfinished: {list(result['unfinished'].items())[:5]}"
    assert not result["done_twice"], f"done twice: {result['done_twice'][:5]}"
    assert not result["gave_up"], f"heals never acknowledged after 30 tries: {result['gave_up'][:5]}"
    assert audit["entries_verified"] == audit["tree_size"]
    assert result["acknowledged"] > 0
