"""Coordinator failover: time from the leader's death to the first dispatch by the new leader.

    python -m bench.failover [--rounds 40] [--ttl 2]

Real etcd, two real coordinator processes (lease TTL --ttl), a loopback FakeGitHub
that every action goes through (the real GitHub executor), and plans streaming in
so the queue is never empty. Each round SIGKILLs the leader and measures from the
kill to the first GitHub API call the new leader makes (the first call the fake
receives after the kill: the old leader is dead). The killed replica is restarted
and the next round kills the new leader. Baseline in the same run: the same
measurement for a graceful stop (SIGTERM: the leader revokes its lease), which is
the floor set by campaign + first claim. Target: every SIGKILL failover under TTL + 1 s.
Afterwards checks that every action ran once. Writes bench/results/failover.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "failover.json"


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(values), "p50": round(statistics.median(ordered), 3),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3), "max": round(ordered[-1], 3),
            "min": round(ordered[0], 3)}


def measure(cluster, rounds: int, sig: int) -> list[float]:  # type: ignore[no-untyped-def]
    from tests.integration.test_coordinator_faults import wait_until

    times: list[float] = []
    for _ in range(rounds):
        leader, _ = cluster.leader()
        calls = len(cluster.github.calls)
        wait_until(lambda calls=calls: len(cluster.github.calls) > calls, 15, f"{leader} to dispatch")
        time.sleep(0.2)
        killed_at = time.time()
        cluster.kill(leader, sig)
        wait_until(lambda killed_at=killed_at: any(c.at > killed_at for c in cluster.github.calls[-20:]), 30,
                   "the new leader's dispatch")
        first = min(c.at for c in cluster.github.calls if c.at > killed_at)
        times.append(first - killed_at)
        cluster.start(leader)
        cluster.wait_serving(leader)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--graceful-rounds", type=int, default=10)
    parser.add_argument("--ttl", type=int, default=2)
    args = parser.parse_args()

    import tests.integration.test_coordinator_faults as faults

    faults.TTL = args.ttl
    with tempfile.TemporaryDirectory() as folder:
        cluster = faults.Cluster(Path(folder))
        try:
            cluster.github.set_delay(0.05)
            with faults.Stream(cluster, interval=0.05) as stream:
                graceful = measure(cluster, args.graceful_rounds, signal.SIGTERM)
                killed = measure(cluster, args.rounds, signal.SIGKILL)
            cluster.github.set_delay(0.0)
            cluster.wait_done([a for a, _ in stream.submitted], timeout=120)
            once = all(faults.reruns(cluster, run_id) == 1 for _, run_id in stream.submitted)
        finally:
            cluster.stop()
    target = args.ttl + 1.0
    result = {
        "ttl_seconds": args.ttl, "target_seconds": target,
        "sigkill": summary(killed), "sigterm_baseline": summary(graceful),
        "met": max(killed) < target, "actions": len(stream.submitted), "each_action_ran_once": once,
        "sigkill_samples": [round(t, 3) for t in killed], "machine": platform.platform(),
    }
    print(f"{'leader stop':24} {'n':>4} {'p50 s':>8} {'p90 s':>8} {'max s':>8}")
    for name, key in (("SIGTERM (baseline)", "sigterm_baseline"), ("SIGKILL", "sigkill")):
        s = result[key]
        print(f"{name:24} {s['n']:>4} {s['p50']:>8} {s['p90']:>8} {s['max']:>8}")  # type: ignore[index]
    print(f"target: every SIGKILL failover < TTL + 1 = {target:.1f} s: {'met' if result['met'] else 'NOT met'}; "
          f"{result['actions']} actions, each ran once: {once}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if once else 1


if __name__ == "__main__":
    raise SystemExit(main())
