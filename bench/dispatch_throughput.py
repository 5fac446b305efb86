"""Coordinator dispatch throughput through etcd, against etcd's raw transaction rate.

    python -m bench.dispatch_throughput [--actions 1500] [--concurrency 8]

A real etcd on loopback (fresh data dir). Figure: actions per second carried from
PENDING to finished with their outcome recorded (claim txn, finish txn, delivery
txn, each fenced on the leader's term, plus the leader's watch of the queue) by
the real `Dispatcher` and `Leadership`, with a no-op executor and no-op receivers
so only the coordinator and etcd are measured. Baseline, same run, same etcd:
compare-and-swap transactions per second (put if mod revision matches, the
store's write shape) from as many concurrent writers as the dispatcher has
workers. Target: ratio >= 0.30. Each action makes three fenced updates; the
leader's group commit puts concurrent ones in one transaction, so the figure
`etcd_txns_per_action` is measured, not assumed. Writes
bench/results/dispatch_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path

from etcd3aio.kv import prefix_range_end

from services.common.vocabulary import ActionKind, FailureClass, Provider
from services.coordinator.actions import TERMINAL, ActionRecord
from services.coordinator.dispatcher import Dispatcher
from services.coordinator.executors.base import ActionRequest, ActionResult, ActionStatus
from services.coordinator.leadership import Leadership
from services.coordinator.store import ACTIONS, ActionStore
from tests.integration.coordinator_support import EtcdServer

TERMINAL_STATES = [f'"state":"{state.name}"'.encode() for state in TERMINAL]
RESULTS = Path(__file__).parent / "results" / "dispatch_throughput.json"


class NoOpExecutor:
    def supports(self, kind: ActionKind) -> bool:
        return True

    def execute(self, request: ActionRequest) -> ActionResult:
        return ActionResult(ActionStatus.SUCCEEDED, "ok")


class NoOpNotifier:
    async def action_started(self, record: ActionRecord) -> None:
        return None

    async def deliver(self, record: ActionRecord, already: frozenset[str] = frozenset()) -> tuple[set[str], bool]:
        return {"audit"}, True


def record(n: int) -> ActionRecord:
    return ActionRecord(action_id=f"b{n:06}-0", tenant=f"t{n % 10}", plan_id=f"b{n:06}", failure_id=f"f{n}",
                        order=0, kind=ActionKind.RETRY, provider=Provider.PROVIDER_GITHUB_ACTIONS,
                        parameters={"run_id": str(n)}, idempotency_key=f"k{n}", failure_class=FailureClass.FLAKY_TEST,
                        created_at=time.time())


async def raw_cas_rate(etcd: object, writers: int, seconds: float) -> float:
    from etcd3aio._protobuf import Compare
    from etcd3aio.kv import KVService

    payload = record(0).to_json()
    deadline = time.monotonic() + seconds
    done = 0

    async def writer(index: int) -> None:
        nonlocal done
        key = f"/bench/raw/{index}"
        response = await etcd.kv.put(key, payload)  # type: ignore[attr-defined]
        revision = response.header.revision
        while time.monotonic() < deadline:
            compare = [Compare(key=key.encode(), target=Compare.MOD, result=Compare.EQUAL, mod_revision=revision)]
            reply = await etcd.kv.txn(compare, [KVService.txn_op_put(key, payload)])  # type: ignore[attr-defined]
            assert reply.succeeded
            revision = reply.header.revision
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    return done / (time.monotonic() - started)


async def all_finished_and_delivered(etcd: object) -> bool:
    """The poll that ends the timing, on the stored bytes: decoding every record five
    times a second in the dispatcher's own process would measure the poll, not the
    dispatcher (records are encoded with sorted keys and no spaces)."""
    response = await etcd.kv.get(ACTIONS, range_end=prefix_range_end(ACTIONS))  # type: ignore[attr-defined]
    return all(b'"outcome_delivered":true' in kv.value and any(state in kv.value for state in TERMINAL_STATES)
               for kv in response.kvs)


async def dispatch_rate(etcd: object, actions: int, concurrency: int) -> tuple[float, float, int]:
    store = ActionStore(etcd)
    for start in range(0, actions, 50):  # untimed: the queue is filled first
        batch = [record(n) for n in range(start, min(actions, start + 50))]
        for r in batch:
            await store.submit(r.plan_id, [r])
    leadership = Leadership(etcd, "bench-leader", "127.0.0.1:0", ttl_seconds=10)
    dispatcher = Dispatcher(store, leadership, lambda provider, kind: NoOpExecutor(), NoOpNotifier(),
                            settings={"dispatch_concurrency": concurrency, "global_concurrency": 0,
                                      "tenant_concurrency": 0})
    leadership.start()
    while not leadership.is_leader:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    dispatcher.start()
    deadline = started + 600
    while time.monotonic() < deadline:
        if await all_finished_and_delivered(etcd):
            break
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    records, _ = await store.all()  # untimed: check in full what the cheap poll saw
    assert len(records) == actions and all(v.record.terminal and v.record.outcome_delivered for v in records)
    await dispatcher.stop()
    await leadership.stop()
    return actions / elapsed, elapsed, dispatcher.commits.transactions


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    from etcd3aio import Etcd3Client

    with tempfile.TemporaryDirectory() as folder, EtcdServer(Path(folder)) as server:
        etcd = Etcd3Client([server.endpoint])
        await etcd.connect()
        try:
            raw_before = await raw_cas_rate(etcd, args.concurrency, args.raw_seconds)
            raw_single = await raw_cas_rate(etcd, 1, args.raw_seconds)
            rate, elapsed, transactions = await dispatch_rate(etcd, args.actions, args.concurrency)
            raw_after = await raw_cas_rate(etcd, args.concurrency, args.raw_seconds)
        finally:
            await etcd.close()
    raw = (raw_before + raw_after) / 2
    return {
        "actions": args.actions, "concurrency": args.concurrency, "dispatch_actions_per_s": round(rate, 1),
        "dispatch_seconds": round(elapsed, 2), "raw_cas_txn_per_s": round(raw, 1),
        "raw_cas_txn_per_s_before_after": [round(raw_before, 1), round(raw_after, 1)],
        "raw_cas_txn_per_s_single_writer": round(raw_single, 1),
        "ratio": round(rate / raw, 3), "target_ratio": 0.30, "met": rate / raw >= 0.30,
        "etcd_txns_per_action": round(transactions / args.actions, 2), "machine": platform.platform(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--raw-seconds", type=float, default=3.0)
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print(f"{'measure':44} {'per second':>12}")
    print(f"{'raw etcd CAS txns, ' + str(args.concurrency) + ' writers (baseline)':44} "
          f"{result['raw_cas_txn_per_s']:>12}")
    print(f"{'raw etcd CAS txns, 1 writer':44} {result['raw_cas_txn_per_s_single_writer']:>12}")
    print(f"{'actions dispatched (claim+finish+deliver)':44} {result['dispatch_actions_per_s']:>12}")
    print(f"ratio {result['ratio']} (target >= 0.30: {'met' if result['met'] else 'NOT met'})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
