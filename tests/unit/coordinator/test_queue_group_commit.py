"""The leader's group commit: concurrent fenced updates share one transaction, and
each caller gets exactly what `ActionStore.update` would have answered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest

from services.common.errors import Unavailable
from services.common.vocabulary import ActionKind, FailureClass, Provider
from services.coordinator.actions import ActionRecord, ActionState
from services.coordinator.store import Fence, GroupCommit, Update, Versioned


def record(action_id: str) -> ActionRecord:
    return ActionRecord(action_id=action_id, tenant="t", plan_id=action_id, failure_id="f", order=0,
                        kind=ActionKind.RETRY, provider=Provider.PROVIDER_LOCAL, parameters={},
                        idempotency_key=action_id, failure_class=FailureClass.FLAKY_TEST)


class FakeStore:
    """update_many over a dict of mod revisions: all or nothing, like one etcd txn."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.revision = 10
        self.mod: dict[str, int] = {}
        self.batches: list[tuple[list[str], tuple[Fence, ...]]] = []
        self.fail = fail

    async def update_many(self, updates: Sequence[Update], fences: Sequence[Fence]) -> list[Versioned | None]:
        await asyncio.sleep(0)
        self.batches.append(([u.changed.action_id for u in updates], tuple(fences)))
        if self.fail is not None:
            raise self.fail
        results: list[Versioned | None] = []
        for u in updates:   # the fallback: one at a time
            if self.mod.get(u.changed.action_id, 1) != u.current.mod_revision:
                results.append(None)
                continue
            self.revision += 1
            self.mod[u.changed.action_id] = self.revision
            results.append(Versioned(u.changed, self.revision))
        return results


LEADER = Fence("leader", 7)


def claim(action_id: str, mod_revision: int = 1) -> tuple[Versioned, ActionRecord]:
    current = Versioned(record(action_id), mod_revision)
    return current, replace(current.record, state=ActionState.ACTION_STATE_CLAIMED)


def test_concurrent_updates_share_transactions_and_each_gets_its_own_answer() -> None:
    asyncio.run(_concurrent_updates_share_transactions_and_each_gets_its_own_answer())


async def _concurrent_updates_share_transactions_and_each_gets_its_own_answer() -> None:
    store = FakeStore()
    commits = GroupCommit(store)  # type: ignore[arg-type]
    results = await asyncio.gather(*(commits.update(*claim(f"a{i}"), LEADER) for i in range(10)),
                                   commits.update(*claim("stale", mod_revision=99), LEADER))
    assert [r is not None for r in results] == [True] * 10 + [False]
    assert all(r.record.state is ActionState.ACTION_STATE_CLAIMED for r in results if r is not None)
    assert len(store.batches) < 11, "concurrent updates should share transactions"
    assert sorted(a for ids, _ in store.batches for a in ids) == sorted([f"a{i}" for i in range(10)] + ["stale"])


def test_a_batch_never_mixes_fences_or_repeats_an_action_or_exceeds_its_size() -> None:
    asyncio.run(_a_batch_never_mixes_fences_or_repeats_an_action_or_exceeds_its_size())


async def _a_batch_never_mixes_fences_or_repeats_an_action_or_exceeds_its_size() -> None:
    store = FakeStore()
    commits = GroupCommit(store, max_batch=3)  # type: ignore[arg-type]
    old_term = Fence("leader", 3)
    current, changed = claim("x")
    await asyncio.gather(*(commits.update(*claim(f"a{i}"), LEADER) for i in range(5)),
                         commits.update(*claim("b"), old_term),
                         commits.update(current, changed, LEADER),
                         commits.update(current, replace(changed, detail="again"), LEADER))
    for ids, fences in store.batches:
        assert len(ids) <= 3 and len(set(ids)) == len(ids)
        assert ("b" in ids) == (fences == (old_term,))


def test_an_etcd_error_reaches_every_caller_of_that_batch() -> None:
    asyncio.run(_an_etcd_error_reaches_every_caller_of_that_batch())


async def _an_etcd_error_reaches_every_caller_of_that_batch() -> None:
    commits = GroupCommit(FakeStore(fail=Unavailable("etcd is unreachable")))  # type: ignore[arg-type]
    results = await asyncio.gather(*(commits.update(*claim(f"a{i}"), LEADER) for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)


def test_cancel_cancels_the_waiting_callers() -> None:
    asyncio.run(_cancel_cancels_the_waiting_callers())


async def _cancel_cancels_the_waiting_callers() -> None:
    commits = GroupCommit(FakeStore())  # type: ignore[arg-type]
    waiting = asyncio.ensure_future(commits.update(*claim("a"), LEADER))
    await asyncio.sleep(0)   # queued, its transaction not yet sent
    commits.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
