"""Audit log benchmark: durable appends against raw SQLite, and proof generation at scale.

    python -m bench.audit_log [--max-leaves 10000000] [--quick] [--appends-only]

1. Durable appends/s of 1 KiB entries at batch sizes 1, 100 and 1000 through
   `AuditStore.append_batch` (canonical bytes, leaf hash, subtree hashes, indexes, one
   transaction per batch), against raw batched `executemany` inserts of the same rows
   into a bare table with the same durability settings (WAL, synchronous=FULL), in
   the same run, interleaved. Target: ratio >= 0.5.
2. Inclusion and consistency proof generation from stored subtree hashes at 1e5, 1e6
   and 1e7 leaves. The subtree-hash table for these sizes is bulk-built directly
   (synthetic leaf hashes in bare entries rows), then proofs go through the store's own
   code path (`compact.*_proof` + the store's node fetch). Baseline: the O(n)
   reference `merkle.py` at the sizes where it fits in memory. Target: < 1 ms at 1e7.

Writes bench/results/audit_log.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from services.audit import compact, merkle
from services.audit.entry import PLAIN, Entry, EntryKind
from services.audit.store import AuditStore, _fetch_nodes

RESULTS = Path(__file__).parent / "results" / "audit_log.json"
ENTRY_BYTES = 1024


def _entries(start: int, count: int) -> list[Entry]:
    rng = random.Random(start)
    return [
        Entry(EntryKind.ACTION, f"tenant-{i % 13}", f"failure/{i}", 1_700_000_000_000_000 + i, PLAIN,
              rng.randbytes(ENTRY_BYTES))
        for i in range(start, start + count)
    ]


def _raw_connection(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, kind TEXT, tenant_id TEXT, subject TEXT, "
        "time_us INTEGER, payload_encoding TEXT, payload BLOB, data_key_id INTEGER, leaf_hash BLOB)"
    )
    return conn


def bench_appends(workdir: Path, quick: bool) -> list[dict[str, Any]]:
    plan = {1: 60 if quick else 200, 100: 10 if quick else 30, 1000: 3 if quick else 10}
    results = []
    for batch_size, batches in plan.items():
        store = AuditStore.open(workdir / f"store-{batch_size}.db")
        raw = _raw_connection(str(workdir / f"raw-{batch_size}.db"))
        store_time = raw_time = 0.0
        next_index = 0
        for b in range(batches):
            entries = _entries(next_index, batch_size)
            # The baseline inserts the very same rows, leaf hash precomputed (not timed).
            rows = [(next_index + i, e.kind.value, e.tenant_id, e.subject, e.time_us, e.payload_encoding, e.payload,
                     None, hashlib.sha256(e.canonical()).digest()) for i, e in enumerate(entries)]
            order = (0, 1) if b % 2 == 0 else (1, 0)  # interleave, so disk noise hits both alike
            for which in order:
                t0 = time.perf_counter()
                if which == 0:
                    store.append_batch(entries)
                    store_time += time.perf_counter() - t0
                else:
                    raw.execute("BEGIN IMMEDIATE")
                    raw.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                    raw.execute("COMMIT")
                    raw_time += time.perf_counter() - t0
            next_index += batch_size
        assert store.check_integrity() == []
        store.close()
        raw.close()
        n = batch_size * batches
        results.append({
            "batch_size": batch_size,
            "entries": n,
            "entry_bytes": ENTRY_BYTES,
            "audit_store_appends_per_s": n / store_time,
            "raw_sqlite_inserts_per_s": n / raw_time,
            "ratio": (n / store_time) / (n / raw_time),
        })
    return results


CHUNK_LEVEL = 16  # build in complete subtrees of 65536 leaves, so memory stays small


def _synthetic_leaf(i: int) -> bytes:
    return hashlib.sha256(b"\x00" + i.to_bytes(8, "big")).digest()


def bulk_build(conn: sqlite3.Connection, leaves: int) -> float:
    """Write every complete subtree hash of a tree of `leaves` synthetic leaves; returns seconds."""
    t0 = time.perf_counter()
    sha = hashlib.sha256
    chunk = 1 << CHUNK_LEVEL
    tops: list[bytes] = []  # roots of the complete chunks, for the levels above
    # Leaf hashes live in `entries` (level 0 is never a tree_nodes row): write bare entries
    # rows. The proof file's secondary indexes are dropped first; proofs read entries by idx.
    for index in ("entries_by_leaf_prefix", "entries_by_tenant_time", "entries_by_subject"):
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    conn.execute("BEGIN")
    for start in range(0, leaves, chunk):
        end = min(leaves, start + chunk)
        level_hashes = [_synthetic_leaf(i) for i in range(start, end)]
        level, first = 0, start
        conn.executemany(
            "INSERT INTO entries VALUES (?, 'ACTION', '', '', 0, 'plain', x'', NULL, ?)",
            ((first + k, h) for k, h in enumerate(level_hashes)),
        )
        while level_hashes:
            if level > 0:
                conn.executemany(
                    "INSERT INTO tree_nodes VALUES (?, ?)",
                    ((((2 * (first + k) + 1) << level) - 1, h) for k, h in enumerate(level_hashes)),
                )
            if len(level_hashes) == 1 and level == CHUNK_LEVEL:
                tops.append(level_hashes[0])
                break
            level_hashes = [sha(b"\x01" + level_hashes[k] + level_hashes[k + 1]).digest()
                            for k in range(0, len(level_hashes) - 1, 2)]
            level, first = level + 1, first // 2
        if end - start == chunk and level != CHUNK_LEVEL:
            raise AssertionError("chunk did not reduce to one root")
    level, hashes = CHUNK_LEVEL, tops
    while len(hashes) > 1:
        hashes = [sha(b"\x01" + hashes[k] + hashes[k + 1]).digest() for k in range(0, len(hashes) - 1, 2)]
        level += 1
        conn.executemany("INSERT INTO tree_nodes VALUES (?, ?)",
                         ((((2 * k + 1) << level) - 1, h) for k, h in enumerate(hashes)))
    conn.execute("COMMIT")
    return time.perf_counter() - t0


def _time_calls(fn: Any, args: list[tuple[int, ...]]) -> dict[str, float]:
    samples = []
    for a in args:
        t0 = time.perf_counter()
        fn(*a)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"mean_ms": statistics.fmean(samples), "p50_ms": samples[len(samples) // 2],
            "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))]}


def bench_proofs(workdir: Path, max_leaves: int, quick: bool) -> dict[str, Any]:
    path = workdir / "proofs.db"
    store = AuditStore.open(path)  # creates the schema; the tree is bulk-built below
    conn = store.db._conn  # bench only: the bulk build bypasses append_batch on purpose
    build_s = bulk_build(conn, max_leaves)
    db_bytes = os.path.getsize(path) + (
        os.path.getsize(str(path) + "-wal") if os.path.exists(str(path) + "-wal") else 0
    )
    fetch = lambda ids: _fetch_nodes(conn, ids)  # noqa: E731
    rng = random.Random(1)
    sizes = [s for s in (100_000, 1_000_000, 10_000_000) if s <= max_leaves]
    calls = 100 if quick else 300
    out: dict[str, Any] = {"bulk_build_leaves": max_leaves, "bulk_build_s": build_s, "db_bytes": db_bytes,
                           "sizes": []}
    for size in sizes:
        # Spot-check against the O(n) reference where it fits, then time.
        inc_args = [(rng.randrange(size), size) for _ in range(calls)]
        con_args = [(rng.randrange(1, size), size) for _ in range(calls)]
        inc = _time_calls(lambda i, n: compact.inclusion_proof(i, n, fetch), inc_args)
        con = _time_calls(lambda o, n: compact.consistency_proof(o, n, fetch), con_args)
        root = _time_calls(lambda n: compact.root_at(n, fetch), [(size,)] * 20)
        row: dict[str, Any] = {"leaves": size, "inclusion": inc, "consistency": con, "root": root}
        leaf = _synthetic_leaf(inc_args[0][0])
        proof = compact.inclusion_proof(inc_args[0][0], size, fetch)
        assert merkle.verify_inclusion(leaf, inc_args[0][0], size, proof, compact.root_at(size, fetch))
        if size <= 1_000_000:
            leaf_hashes = [_synthetic_leaf(i) for i in range(size)]
            t0 = time.perf_counter()
            reference = _reference_path(leaf_hashes, inc_args[0][0])
            row["reference_inclusion_ms"] = (time.perf_counter() - t0) * 1000
            assert reference == proof, "stored proof differs from the reference"
            row["inclusion_speedup_vs_reference"] = row["reference_inclusion_ms"] / inc["mean_ms"]
            del leaf_hashes
        out["sizes"].append(row)
    store.close()
    return out


def _reference_path(leaf_hashes: list[bytes], index: int) -> list[bytes]:
    # merkle.py's PATH over leaf hashes (its public API takes entry bytes; these leaves are synthetic hashes).
    return merkle._path(index, leaf_hashes)


def _print_appends(appends: list[dict[str, Any]]) -> None:
    print("Durable appends (1 KiB entries, WAL + synchronous=FULL)")
    print(f"{'batch':>6} {'audit store/s':>14} {'raw sqlite/s':>13} {'ratio':>6}")
    for r in appends:
        print(f"{r['batch_size']:>6} {r['audit_store_appends_per_s']:>14.0f} {r['raw_sqlite_inserts_per_s']:>13.0f} "
              f"{r['ratio']:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-leaves", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="fewer appends and proof calls")
    parser.add_argument("--appends-only", action="store_true",
                        help="skip the proof tables; print the append figures, keep the results file as it is")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        appends = bench_appends(Path(tmp), args.quick)
        if args.appends_only:
            _print_appends(appends)
            return
        proofs = bench_proofs(Path(tmp), args.max_leaves, args.quick)
    result = {
        "benchmark": "audit_log",
        "command": "python -m bench.audit_log" + (" --quick" if args.quick else "")
        + (f" --max-leaves {args.max_leaves}" if args.max_leaves != 10_000_000 else ""),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "sqlite": sqlite3.sqlite_version},
        "appends": appends,
        "append_target_ratio": 0.5,
        "proofs": proofs,
        "proof_target_ms_at_1e7": 1.0,
        "notes": "proof sizes are bulk-built subtree-hash tables (synthetic leaf hashes in bare entries rows); "
                 "proofs use the store's code path (compact.* + stored node fetch); one table serves all sizes",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    _print_appends(appends)
    print(f"\nProofs from stored subtree hashes (bulk-built {proofs['bulk_build_leaves']:,} leaves in "
          f"{proofs['bulk_build_s']:.0f} s, {proofs['db_bytes'] / 1e6:.0f} MB)")
    print(f"{'leaves':>11} {'inclusion ms':>13} {'p99':>6} {'consistency ms':>15} {'p99':>6} "
          f"{'reference ms':>13} {'speedup':>8}")
    for r in proofs["sizes"]:
        ref = r.get("reference_inclusion_ms")
        speedup = f"{r['inclusion_speedup_vs_reference']:.0f}x" if ref else "-"
        print(f"{r['leaves']:>11,} {r['inclusion']['mean_ms']:>13.3f} {r['inclusion']['p99_ms']:>6.3f} "
              f"{r['consistency']['mean_ms']:>15.3f} {r['consistency']['p99_ms']:>6.3f} "
              f"{(f'{ref:.1f}' if ref else '-'):>13} "
              f"{speedup:>8}")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
