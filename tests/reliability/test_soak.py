"""The soak (issue 15): SOAK_SECONDS (60 in CI; `make test-reliability SOAK_SECONDS=600`
for the long one) of heals at a moderate rate (SOAK_RATE per second, default 4), with the
resident memory of every mesh process (etcd and Envoy included) read at the start and at
the end. Written to bench/results/reliability.json: heals, errors, p99, RSS and its growth.

Invariants: no errors, no acknowledged heal lost, nothing done twice.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.reliability.conftest import SOAK_SECONDS
from tests.reliability.harness import Harness, record_result
from tests.reliability.load import HealLoad, check_complete, p99

pytestmark = pytest.mark.integration

SOAK_RATE = float(os.environ.get("SOAK_RATE", "4"))


@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_soak(harness: Harness, heal_tenant: str) -> None:
    rss_start = harness.rss_mib()
    load = HealLoad(harness, heal_tenant, workers=3, rate_per_s=SOAK_RATE).start()
    samples = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < SOAK_SECONDS:
            time.sleep(min(10.0, max(0.0, SOAK_SECONDS - (time.monotonic() - started))))
            samples.append({"t_s": round(time.monotonic() - started), "rss_mib": harness.rss_mib(),
                            "heals": len(load.acknowledged)})
    finally:
        load.stop()
    elapsed = time.monotonic() - started
    rss_end = harness.rss_mib()
    result = check_complete(harness, load, harness.ledger)
    growth = {name: round(rss_end[name] - rss_start[name], 1) for name in rss_end if name in rss_start}
    summary = {
        "seconds": round(elapsed, 1), "rate_requested_per_s": SOAK_RATE,
        "heals_acknowledged": result["acknowledged"], "rate_achieved_per_s": round(result["acknowledged"] / elapsed, 2),
        "errors": dict(load.errors), "heal_p99_ms": p99(load.latencies_ms),
        "heal_p50_ms": round(sorted(load.latencies_ms)[len(load.latencies_ms) // 2], 1) if load.latencies_ms else 0,
        "heals_lost": len(result["lost"]), "done_twice": len(result["done_twice"]),
        "heals_unfinished": len(result["unfinished"]),
        "rss_mib_start": rss_start, "rss_mib_end": rss_end, "rss_mib_growth": growth,
        "rss_mib_total_start": round(sum(rss_start.values()), 1), "rss_mib_total_end": round(sum(rss_end.values()), 1),
        "samples": samples,
    }
    record_result(f"soak_{int(SOAK_SECONDS)}s", summary)
    print(f"\nsoak: {json.dumps({k: v for k, v in summary.items() if k != 'samples'}, indent=1)}")
    assert not load.errors, f"errors during the soak: {dict(load.errors)}"
    assert not result["lost"], result["lost"][:5]
    assert not result["done_twice"], result["done_twice"][:5]
    assert not result["unfinished"], list(result["unfinished"].items())[:5]
