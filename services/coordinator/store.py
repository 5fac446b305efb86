"""The coordinator's store is etcd: the action queue, plans, claims and executors.

Every state change is a transaction that compares the action's mod revision (no
lost update) and a fence: the leader's key create revision (its term) for the
built-in dispatcher, or the executor's registration key for external executors.
A writer that lost its lease therefore cannot change anything.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from etcd3aio._protobuf import Compare
from etcd3aio.kv import KVService, prefix_range_end

from services.common.errors import AlreadyExists, NotFound
from services.coordinator.actions import ActionRecord

PREFIX = "/healing-guard/coordinator/"
ACTIONS = PREFIX + "actions/"
PLANS = PREFIX + "plans/"
CLAIMS = PREFIX + "claims/"
EXECUTORS = PREFIX + "executors/"
LEADER = PREFIX + "leader"


@dataclass(frozen=True)
class Versioned:
    record: ActionRecord
    mod_revision: int


@dataclass(frozen=True)
class Fence:
    """A condition every write must still satisfy: 'this key exists with this create revision'."""

    key: str
    create_revision: int

    def compare(self) -> Compare:
        return KVService.txn_compare_create_revision(self.key, self.create_revision)


def action_key(action_id: str) -> str:
    return ACTIONS + action_id


class ActionStore:
    def __init__(self, etcd: Any) -> None:
        self.etcd = etcd

    async def submit(self, plan_id: str, records: Sequence[ActionRecord]) -> tuple[list[str], int, bool]:
        """Write the plan marker and every action in one transaction; idempotent per plan id."""
        plan_key = PLANS + plan_id
        ids = [r.action_id for r in records]
        success = [KVService.txn_op_put(plan_key, json.dumps(ids))]
        success += [KVService.txn_op_put(action_key(r.action_id), r.to_json()) for r in records]
        compare = [KVService.txn_compare_create_revision(plan_key, 0)]
        compare += [KVService.txn_compare_create_revision(action_key(r.action_id), 0) for r in records]
        response = await self.etcd.kv.txn(compare, success, [KVService.txn_op_get(plan_key)])
        if response.succeeded:
            return ids, response.header.revision, False
        existing = response.responses[0].response_range.kvs
        if existing:
            previous = json.loads(existing[0].value)
            if previous != ids:
                raise AlreadyExists("plan", plan_id, f"plan {plan_id!r} was submitted before with other actions")
            return previous, existing[0].mod_revision, True
        raise AlreadyExists("action", ids[0], "an action id of this plan already exists in the queue")

    async def get(self, action_id: str) -> Versioned:
        response = await self.etcd.kv.get(action_key(action_id))
        if not response.kvs:
            raise NotFound("action", action_id)
        kv = response.kvs[0]
        return Versioned(ActionRecord.from_json(kv.value), kv.mod_revision)

    async def all(self) -> tuple[list[Versioned], int]:
        response = await self.etcd.kv.get(ACTIONS, range_end=prefix_range_end(ACTIONS))
        records = [Versioned(ActionRecord.from_json(kv.value), kv.mod_revision) for kv in response.kvs]
        return records, response.header.revision

    async def of_plan(self, plan_id: str) -> list[Versioned]:
        response = await self.etcd.kv.get(PLANS + plan_id)
        if not response.kvs:
            raise NotFound("plan", plan_id)
        return [await self.get(action_id) for action_id in json.loads(response.kvs[0].value)]

    async def update(self, current: Versioned, changed: ActionRecord, fence: Fence | None,
                     *, claim_lease: int = 0, release_claim: bool = False) -> Versioned | None:
        """Compare-and-swap one record; None when someone else changed it or the fence is gone."""
        key = action_key(changed.action_id)
        compare = [Compare(key=key.encode(), target=Compare.MOD, result=Compare.EQUAL, mod_revision=current.mod_revision)]
        if fence is not None:
            compare.append(fence.compare())
        success = [KVService.txn_op_put(key, changed.to_json())]
        if claim_lease:
            success.append(KVService.txn_op_put(CLAIMS + changed.action_id, changed.executor_id, lease=claim_lease))
        if release_claim:
            success.append(KVService.txn_op_delete(CLAIMS + changed.action_id))
        response = await self.etcd.kv.txn(compare, success)
        if not response.succeeded:
            return None
        return Versioned(changed, response.header.revision)

    async def claim_holder(self, action_id: str) -> str | None:
        response = await self.etcd.kv.get(CLAIMS + action_id)
        return response.kvs[0].value.decode() if response.kvs else None

    async def register_executor(self, executor_id: str, data: dict[str, Any], ttl: int) -> int:
        lease = await self.etcd.lease.grant(ttl)
        await self.etcd.kv.put(EXECUTORS + executor_id, json.dumps(data), lease=lease.ID)
        return lease.ID

    async def executor(self, executor_id: str) -> tuple[dict[str, Any], int, int] | None:
        """(registration, lease id, create revision) of a live executor, or None."""
        response = await self.etcd.kv.get(EXECUTORS + executor_id)
        if not response.kvs:
            return None
        kv = response.kvs[0]
        return json.loads(kv.value), kv.lease, kv.create_revision

    async def watch(self, start_revision: int) -> AsyncIterator[tuple[ActionRecord, int]]:
        async for response in self.etcd.watch.watch(ACTIONS, range_end=prefix_range_end(ACTIONS),
                                                     start_revision=start_revision):
            for event in response.events:
                if event.type == 0:  # PUT
                    yield ActionRecord.from_json(event.kv.value), event.kv.mod_revision
