"""ConsumeQuota under contention: calls per second with 1, 4 and 8 writers on one store.

    .venv/bin/python -m bench.quota_contention [--calls 400]

Each writer thread has its own SQLite connection to the same file (as separate
tenancy replicas on one disk would), all consuming from one tenant's quota. The
baseline, measured in the same run, is one writer appending the same usage event
with a bare INSERT in its own IMMEDIATE transaction (same pragmas: WAL,
synchronous=FULL) with no quota check: the floor any durable consume pays.
Checks that the quota was never over-spent, prints a table with the ratio, and
writes bench/results/quota_contention.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
import uuid
from pathlib import Path

from services.common.errors import QuotaExceeded
from services.common.sqlite import Database
from services.tenancy.quotas import Resource
from services.tenancy.store import MIGRATIONS, TenancyStore
from services.tenancy.tenants import new_tenant

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "quota_contention.json"
RES = Resource.RESOURCE_ACTIONS_PER_DAY


def baseline(folder: Path, calls: int) -> float:
    db = Database(folder / "baseline.sqlite3", MIGRATIONS)
    with db.transaction() as conn:
        conn.execute("INSERT INTO tenants VALUES ('acme', 'acme', 'team', 1, 0, '{}', '')")
    start = time.perf_counter()
    for _ in range(calls):
        with db.transaction() as conn:
            conn.execute(
                "INSERT INTO usage_events VALUES (?, 'acme', ?, 1, ?)",
                (uuid.uuid4().hex, int(RES), time.time()),
            )
    elapsed = time.perf_counter() - start
    db.close()
    return calls / elapsed


def contended(folder: Path, writers: int, calls: int, limit: int) -> tuple[float, int, int]:
    path = folder / f"contended-{writers}.sqlite3"
    setup = TenancyStore(path)
    setup.create_tenant(new_tenant("acme", "", "team", 0.0))
    setup.set_quota("acme", RES, limit, time.time())
    granted = refused = 0
    lock = threading.Lock()
    per_writer = calls // writers

    def writer() -> None:
        nonlocal granted, refused
        store = TenancyStore(path)
        for _ in range(per_writer):
            try:
                store.consume("acme", RES, 1, uuid.uuid4().hex, time.time())
                with lock:
                    granted += 1
            except QuotaExceeded:
                with lock:
                    refused += 1
        store.db.close()

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    used = setup.quota("acme", RES, time.time()).used
    setup.db.close()
    if used != granted or used > limit:
        raise SystemExit(f"quota over-spent or miscounted: used {used}, granted {granted}, limit {limit}")
    return (per_writer * writers) / elapsed, granted, refused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quota_contention", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--calls", type=int, default=400, help="consume calls per configuration (default 400)"
    )
    args = parser.parse_args(argv)
    limit = args.calls * 3 // 4  # the last quarter of calls is refused: both paths are measured
    with tempfile.TemporaryDirectory(prefix="hg-quota-bench-") as tmp:
        folder = Path(tmp)
        base = baseline(folder, args.calls)
        rows = [(w, *contended(folder, w, args.calls, limit)) for w in (1, 4, 8)]
    print(f"{'configuration':42} {'calls/s':>9} {'vs baseline':>12} {'granted':>8} {'refused':>8}")
    print(f"{'baseline: bare durable INSERT, 1 writer':42} {base:9,.0f} {1.0:12.2f} {'-':>8} {'-':>8}")
    for writers, rate, granted, refused in rows:
        print(
            f"{f'ConsumeQuota, {writers} writer(s), one tenant':42} {rate:9,.0f} {rate / base:12.2f} "
            f"{granted:8} {refused:8}"
        )
    print(f"(limit {limit} of {args.calls} calls; never over-spent in any configuration)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": f"python -m bench.quota_contention --calls {args.calls}",
                "machine": platform.platform(),
                "python": platform.python_version(),
                "baseline_insert_per_s": base,
                "limit": limit,
                "calls": args.calls,
                "contended": [
                    {
                        "writers": w,
                        "calls_per_s": r,
                        "ratio_to_baseline": r / base,
                        "granted": g,
                        "refused": f,
                    }
                    for w, r, g, f in rows
                ],
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
