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
from typing import Any

import pytest

from tests.reliability.harness import HEAL_VIA, Harness, record_result
from tests.reliability.load import HealLoad, check_complete, p99

pytestmark = pytest.mark.integration

BACK_WITHIN_S = 45.0
LOAD_BETWEEN_KILLS_S = 1.5
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


@pytest.fixture(scope="module")
def killed(harness: Harness, heal_tenant: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the kills once; the tests below judge the outcome."""
    load = HealLoad(harness, heal_tenant, workers=2).start()
    back: dict[str, float] = {}
    restarts: dict[str, Any] = {}
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
            restarts[name] = (before["restarts"], _supervised(harness)[name])
            time.sleep(LOAD_BETWEEN_KILLS_S)
    finally:
        load.stop()
    for name in VICTIMS:  # everything answers again through the gateway too
        if name not in ("etcd", "envoy"):
            harness.mesh.wait_serving(harness.mesh.gateway_address, name.split("-")[0], via_gateway=True, timeout=30)
    result = check_complete(harness, load, harness.ledger)
    audit = harness.verify_audit(tmp_path_factory.mktemp("kill-audit"))
    summary = {
        "heals_via": HEAL_VIA, "kills_survived": len(back), "back_serving_s": back, "heals_attempted": load.attempts,
        "heals_acknowledged": result["acknowledged"], "heals_lost": len(result["lost"]),
        "heals_unfinished": len(result["unfinished"]), "done_twice": len(result["done_twice"]),
        "acknowledged_without_plan": len(result["without_plan"]),
        "acknowledged_plan_without_actions": len(result["without_actions"]), "warnings": result["warnings"],
        "retried_acknowledgements": result["retried_acknowledgements"], "gave_up": len(result["gave_up"]),
        "actions_carried_out": result["actions_carried_out"], "errors_seen_by_clients": dict(load.errors),
        "heal_p99_ms": p99(load.latencies_ms), "audit": audit,
    }
    record_result("kill_under_load", summary)
    print(f"\nkill under load: {json.dumps(summary, indent=1)}")
    return {"result": result, "audit": audit, "restarts": restarts, "summary": summary}


def test_each_killed_process_is_restarted_by_the_supervisor(killed: dict[str, Any]) -> None:
    for name, (before, after) in killed["restarts"].items():
        assert after["restarts"] == before + 1 and after["last_exit"] == "killed by SIGKILL", (name, after)
    assert killed["summary"]["kills_survived"] == len(VICTIMS)


def test_no_acknowledged_heal_is_lost_or_done_twice(killed: dict[str, Any]) -> None:
    result, audit = killed["result"], killed["audit"]
    assert result["acknowledged"] > 0
    assert not result["lost"], f"{len(result['lost'])} acknowledged heals lost: {result['lost'][:5]}"
    assert not result["unfinished"], f"unfinished: {list(result['unfinished'].items())[:5]}"
    assert not result["gave_up"], f"heals never acknowledged after 30 tries: {result['gave_up'][:5]}"
    assert audit["entries_verified"] == audit["tree_size"]


@pytest.mark.xfail(reason="found by this harness once heals went through Coordinator/HealFailure: with processes "
                          "SIGKILLed in turn under load, one action was carried out twice by the local executor "
                          "(its ledger counts it). Open defect: which kill re-ran it (a reclaimed claim whose first "
                          "run had acted, or a resumed workflow) is not found yet", strict=False)
def test_no_action_is_carried_out_twice(killed: dict[str, Any]) -> None:
    assert not killed["result"]["done_twice"], f"done twice: {killed['result']['done_twice'][:5]}"


@pytest.mark.xfail(reason="HealFailure acknowledges a heal whose planning failed (planner down: no plan) with a "
                          "warning; calling it again resumes the heal, but nothing calls it again on its own (no "
                          "scan of stalled workflow records yet), so the heal is diagnosed but not carried out",
                   strict=False)
def test_every_acknowledged_heal_is_carried_through_when_a_downstream_was_down(killed: dict[str, Any]) -> None:
    result = killed["result"]
    assert not result["without_plan"], (f"{len(result['without_plan'])} heals acknowledged without a plan: "
                                        f"{result['without_plan'][:3]}")
    assert not result["without_actions"], (f"{len(result['without_actions'])} heals acknowledged with a plan "
                                            f"no action was submitted for: {result['without_actions'][:3]}")
