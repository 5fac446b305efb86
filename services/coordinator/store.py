"""The coordinator's store is etcd: the action queue, plans, claims and executors.

Every state change is a transaction that compares the action's mod revision (no
lost update) and one or more fences: the leader's key create revision (its term)
for anything the leader decides, and the executor's registration key for
external executors. A writer that lost its lease therefore cannot change anything.

Keys (all under /healing-guard/coordinator/):
  actions/<action id>    the ActionRecord (JSON)
  plans/<plan id>        the plan's action ids, written with its actions in one txn
  claims/<action id>     the claimer's id, under the claimer's lease: it vanishes with it
  executors/<id>         an external executor's registration, under its heartbeat lease
  leader                 the elected replica, under its lease

and, outside that prefix so the dispatcher's view and watch never see them:
  /healing-guard/workflows/<workflow id>   a heal's HealWorkflow record (protobuf), see workflow.py
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from etcd3aio._protobuf import Compare
from etcd3aio.errors import EtcdConnectionError, EtcdTransientError
from etcd3aio.kv import KVService, prefix_range_end

from healing_guard.coordinator.v1 import coordinator_pb2
from services.common.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from services.coordinator.actions import ActionRecord

PREFIX = "/healing-guard/coordinator/"
ACTIONS = PREFIX + "actions/"
PLANS = PREFIX + "plans/"
CLAIMS = PREFIX + "claims/"
EXECUTORS = PREFIX + "executors/"
LEADER = PREFIX + "leader"
WORKFLOWS = "/healing-guard/workflows/"
TXN_TIMEOUT_S = 5.0
P = ParamSpec("P")
T = TypeVar("T")


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


@dataclass(frozen=True)
class Registration:
    executor_id: str
    data: dict[str, Any]
    lease: int
    create_revision: int

    def fence(self) -> Fence:
        return Fence(EXECUTORS + self.executor_id, self.create_revision)


@dataclass(frozen=True)
class Update:
    """One compare-and-swap of an action record, as `ActionStore.update` takes it."""

    current: Versioned
    changed: ActionRecord
    claim_lease: int = 0
    release_claim: bool = False


@dataclass
class Snapshot:
    """Everything the scheduler needs, read at one revision."""

    revision: int
    actions: dict[str, Versioned] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)              # action id -> claimer
    executors: dict[str, Registration] = field(default_factory=dict)
    retired: dict[str, int] = field(default_factory=dict)   # action id -> revision it was retired at
    by_plan: dict[str, set[str]] = field(default_factory=dict)  # plan id -> its action ids in the view
    dirty_plans: set[str] = field(default_factory=set)          # plans changed since the scheduler last looked

    def plan_actions(self, plan_id: str) -> list[Versioned]:
        return [self.actions[a] for a in self.by_plan.get(plan_id, ()) if a in self.actions]

    def retire(self, action_id: str) -> None:
        """Forget a record that will never change again; older watched events of it are ignored."""
        versioned = self.actions.pop(action_id, None)
        if versioned is not None:
            self.retired[action_id] = versioned.mod_revision
            members = self.by_plan.get(versioned.record.plan_id)
            if members is not None:
                members.discard(action_id)
                if not members:
                    del self.by_plan[versioned.record.plan_id]

    def put_record(self, record: ActionRecord, mod_revision: int) -> None:
        """Apply a write whose record is already decoded (the writer's own)."""
        action_id = record.action_id
        current = self.actions.get(action_id)
        if mod_revision <= self.retired.get(action_id, 0):
            return
        if current is None or current.mod_revision < mod_revision:
            self.actions[action_id] = Versioned(record, mod_revision)
            self.by_plan.setdefault(record.plan_id, set()).add(action_id)
            self.dirty_plans.add(record.plan_id)
        self.revision = max(self.revision, mod_revision)

    def apply(self, key: str, value: bytes | None, mod_revision: int, create_revision: int = 0,
              lease: int = 0) -> None:
        """Apply one watched change (value None = deleted)."""
        if key.startswith(ACTIONS):
            action_id = key[len(ACTIONS):]
            current = self.actions.get(action_id)
            if mod_revision <= self.retired.get(action_id, 0):
                return
            if value is None:
                gone = self.actions.pop(action_id, None)
                if gone is not None:
                    self.dirty_plans.add(gone.record.plan_id)
            elif current is None or current.mod_revision < mod_revision:
                record = ActionRecord.from_json(value)
                self.actions[action_id] = Versioned(record, mod_revision)
                self.by_plan.setdefault(record.plan_id, set()).add(action_id)
                self.dirty_plans.add(record.plan_id)
        elif key.startswith(CLAIMS):
            action_id = key[len(CLAIMS):]
            if value is None:
                self.claims.pop(action_id, None)
            else:
                self.claims[action_id] = value.decode()
            if action_id in self.actions:
                self.dirty_plans.add(self.actions[action_id].record.plan_id)
        elif key.startswith(EXECUTORS):
            executor_id = key[len(EXECUTORS):]
            if value is None:
                self.executors.pop(executor_id, None)
            else:
                self.executors[executor_id] = Registration(executor_id, json.loads(value), lease, create_revision)
        self.revision = max(self.revision, mod_revision)


def etcd_unavailable_as_status(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """etcd down or restarting answers UNAVAILABLE (retry), not INTERNAL; nothing was acknowledged."""
    @functools.wraps(method)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (EtcdConnectionError, EtcdTransientError, TimeoutError) as error:
            raise Unavailable(f"etcd is unreachable or restarting ({error}); retry the call") from error

    return wrapped


def action_key(action_id: str) -> str:
    return ACTIONS + action_id


class ActionStore:
    def __init__(self, etcd: Any) -> None:
        self.etcd = etcd

    @etcd_unavailable_as_status
    async def submit(self, plan_id: str, records: Sequence[ActionRecord]) -> tuple[list[str], int, bool]:
        """Write the plan marker and every action in one transaction; idempotent per plan id."""
        return await self._submit(plan_id, records, None)

    async def _submit(self, plan_id: str, records: Sequence[ActionRecord],
                      also: tuple[Compare, Any] | None) -> tuple[list[str], int, bool]:
        plan_key = PLANS + plan_id
        ids = [r.action_id for r in records]
        success = [KVService.txn_op_put(plan_key, json.dumps(ids))]
        success += [KVService.txn_op_put(action_key(r.action_id), r.to_json()) for r in records]
        compare = [KVService.txn_compare_create_revision(plan_key, 0)]
        compare += [KVService.txn_compare_create_revision(action_key(r.action_id), 0) for r in records]
        if also is not None:
            compare.append(also[0])
            success.append(also[1])
        response = await self.etcd.kv.txn(compare, success, [KVService.txn_op_get(plan_key)], timeout=TXN_TIMEOUT_S)
        if response.succeeded:
            return ids, response.header.revision, False
        existing = response.responses[0].response_range.kvs
        if existing:
            previous = json.loads(existing[0].value)
            if previous != ids:
                raise AlreadyExists("plan", plan_id, f"plan {plan_id!r} was submitted before with other actions")
            return previous, existing[0].mod_revision, True
        raise AlreadyExists("action", ids[0], "an action id of this plan already exists in the queue")

    @etcd_unavailable_as_status
    async def add(self, record: ActionRecord, fence: Fence) -> bool:
        """Queue one more action of an existing plan (e.g. a runner's restore step),
        once: False when it is already queued or the fence is gone."""
        key = action_key(record.action_id)
        response = await self.etcd.kv.txn(
            [KVService.txn_compare_create_revision(key, 0), fence.compare()],
            [KVService.txn_op_put(key, record.to_json())], timeout=TXN_TIMEOUT_S)
        return bool(response.succeeded)

    @etcd_unavailable_as_status
    async def get(self, action_id: str) -> Versioned:
        response = await self.etcd.kv.get(action_key(action_id), timeout=TXN_TIMEOUT_S)
        if not response.kvs:
            raise NotFound("action", action_id)
        kv = response.kvs[0]
        return Versioned(ActionRecord.from_json(kv.value), kv.mod_revision)

    @etcd_unavailable_as_status
    async def all(self) -> tuple[list[Versioned], int]:
        response = await self.etcd.kv.get(ACTIONS, range_end=prefix_range_end(ACTIONS), timeout=TXN_TIMEOUT_S)
        records = [Versioned(ActionRecord.from_json(kv.value), kv.mod_revision) for kv in response.kvs]
        return records, response.header.revision

    @etcd_unavailable_as_status
    async def snapshot(self) -> Snapshot:
        """Actions, claims and executors at one revision (one range read)."""
        response = await self.etcd.kv.get(PREFIX, range_end=prefix_range_end(PREFIX), timeout=TXN_TIMEOUT_S)
        snapshot = Snapshot(revision=response.header.revision)
        for kv in response.kvs:
            snapshot.apply(kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision, kv.lease)
        snapshot.revision = response.header.revision
        return snapshot

    async def changes(self, start_revision: int) -> AsyncIterator[tuple[str, bytes | None, int, int, int]]:
        """(key, value or None when deleted, mod revision, create revision, lease) from a revision on."""
        async for response in self.etcd.watch.watch(PREFIX, range_end=prefix_range_end(PREFIX),
                                                     start_revision=start_revision):
            if response.compact_revision:
                raise FailedPrecondition(f"watch compacted at {response.compact_revision}", reason="COMPACTED")
            for event in response.events:
                deleted = event.type == 1
                yield (event.kv.key.decode(), None if deleted else event.kv.value,
                       event.kv.mod_revision or response.header.revision, event.kv.create_revision, event.kv.lease)

    @etcd_unavailable_as_status
    async def of_plan(self, plan_id: str) -> list[Versioned]:
        response = await self.etcd.kv.get(PLANS + plan_id, timeout=TXN_TIMEOUT_S)
        if not response.kvs:
            raise NotFound("plan", plan_id)
        return [await self.get(action_id) for action_id in json.loads(response.kvs[0].value)]

    @etcd_unavailable_as_status
    async def update(self, current: Versioned, changed: ActionRecord, fences: Fence | Sequence[Fence] | None,
                     *, claim_lease: int = 0, release_claim: bool = False,
                     claim_holder: str | None = None) -> Versioned | None:
        """Compare-and-swap one record; None when someone else changed it or a fence is gone.

        `claim_holder` additionally requires the claim key to name that holder.
        """
        key = action_key(changed.action_id)
        compare = [
            Compare(key=key.encode(), target=Compare.MOD, result=Compare.EQUAL, mod_revision=current.mod_revision)
        ]
        if isinstance(fences, Fence):
            fences = [fences]
        compare += [fence.compare() for fence in fences or ()]
        if claim_holder is not None:
            compare.append(KVService.txn_compare_value(CLAIMS + changed.action_id, claim_holder))
        payload = changed.to_json()
        success = [KVService.txn_op_put(key, payload)]
        if claim_lease:
            success.append(KVService.txn_op_put(CLAIMS + changed.action_id, changed.executor_id, lease=claim_lease))
        if release_claim:
            success.append(KVService.txn_op_delete(CLAIMS + changed.action_id))
        response = await self.etcd.kv.txn(compare, success, [KVService.txn_op_get(key)], timeout=TXN_TIMEOUT_S)
        if response.succeeded:
            return Versioned(changed, response.header.revision)
        # The client retries a txn whose answer was lost (etcd restarting): if what is
        # stored now is exactly what we wrote, our write did apply.
        kvs = response.responses[0].response_range.kvs if response.responses else []
        if kvs and kvs[0].value == payload:
            return Versioned(changed, kvs[0].mod_revision)
        return None

    @etcd_unavailable_as_status
    async def update_many(self, updates: Sequence[Update], fences: Sequence[Fence]) -> list[Versioned | None]:
        """Several compare-and-swaps under the same fences in ONE transaction.

        Each record's compare and the fences are exactly those `update` makes, so
        when the transaction succeeds every write held at that one revision. When any
        compare fails nothing was written, and each update is retried on its own
        (which also recognises a write of ours whose answer was lost): the result is
        the same as calling `update` for each, in fewer transactions.
        """
        ids = [u.changed.action_id for u in updates]
        if len(set(ids)) != len(ids):
            raise ValueError(f"update_many needs distinct actions, got {ids}")
        if len(updates) == 1:
            only = updates[0]
            return [await self.update(only.current, only.changed, fences, claim_lease=only.claim_lease,
                                      release_claim=only.release_claim)]
        compare = [fence.compare() for fence in fences]
        success = []
        for u in updates:
            key = action_key(u.changed.action_id)
            compare.append(Compare(key=key.encode(), target=Compare.MOD, result=Compare.EQUAL,
                                   mod_revision=u.current.mod_revision))
            success.append(KVService.txn_op_put(key, u.changed.to_json()))
            if u.claim_lease:
                success.append(KVService.txn_op_put(CLAIMS + u.changed.action_id, u.changed.executor_id,
                                                    lease=u.claim_lease))
            if u.release_claim:
                success.append(KVService.txn_op_delete(CLAIMS + u.changed.action_id))
        response = await self.etcd.kv.txn(compare, success, [], timeout=TXN_TIMEOUT_S)
        if response.succeeded:
            return [Versioned(u.changed, response.header.revision) for u in updates]
        return [await self.update(u.current, u.changed, fences, claim_lease=u.claim_lease,
                                  release_claim=u.release_claim) for u in updates]

    @etcd_unavailable_as_status
    async def claim_holder(self, action_id: str) -> str | None:
        response = await self.etcd.kv.get(CLAIMS + action_id, timeout=TXN_TIMEOUT_S)
        return response.kvs[0].value.decode() if response.kvs else None

    @etcd_unavailable_as_status
    async def register_executor(self, executor_id: str, data: dict[str, Any], ttl: int) -> int:
        lease = await self.etcd.lease.grant(ttl, timeout=TXN_TIMEOUT_S)
        await self.etcd.kv.put(EXECUTORS + executor_id, json.dumps(data), lease=lease.ID, timeout=TXN_TIMEOUT_S)
        return lease.ID

    @etcd_unavailable_as_status
    async def executor(self, executor_id: str) -> Registration | None:
        """A live executor's registration, or None."""
        response = await self.etcd.kv.get(EXECUTORS + executor_id, timeout=TXN_TIMEOUT_S)
        if not response.kvs:
            return None
        kv = response.kvs[0]
        return Registration(executor_id, json.loads(kv.value), kv.lease, kv.create_revision)

    @etcd_unavailable_as_status
    async def renew(self, lease: int) -> int:
        """One heartbeat on a lease; its remaining TTL (<= 0: it is gone)."""
        call = self.etcd.lease.keep_alive(lease)
        try:
            async for response in call:
                return int(response.TTL)
        finally:
            call.cancel()
        return 0

    async def watch(self, start_revision: int) -> AsyncIterator[tuple[ActionRecord, int]]:
        async for response in self.etcd.watch.watch(ACTIONS, range_end=prefix_range_end(ACTIONS),
                                                     start_revision=start_revision):
            if response.compact_revision:
                raise FailedPrecondition(
                    f"start_revision was compacted; the oldest revision still kept is {response.compact_revision}",
                    reason="COMPACTED")
            for event in response.events:
                if event.type == 0:  # PUT
                    yield ActionRecord.from_json(event.kv.value), event.kv.mod_revision


def _version_compare(key: str, version: int) -> Compare:
    """The key is still at mod revision `version` (0: it does not exist yet)."""
    if version == 0:
        return KVService.txn_compare_create_revision(key, 0)
    return Compare(key=key.encode(), target=Compare.MOD, result=Compare.EQUAL, mod_revision=version)


class WorkflowRecords:
    """The heals' `HealWorkflow` records in etcd (`workflow.WorkflowStore`): a protobuf
    message per heal, every write a compare-and-swap on the record's mod revision."""

    def __init__(self, etcd: Any, actions: ActionStore) -> None:
        self.etcd = etcd
        self.actions = actions

    @etcd_unavailable_as_status
    async def load(self, workflow_id: str) -> tuple[coordinator_pb2.HealWorkflow | None, int]:
        response = await self.etcd.kv.get(WORKFLOWS + workflow_id, timeout=TXN_TIMEOUT_S)
        if not response.kvs:
            return None, 0
        record = coordinator_pb2.HealWorkflow()
        record.ParseFromString(response.kvs[0].value)
        return record, response.kvs[0].mod_revision

    @etcd_unavailable_as_status
    async def save(self, record: coordinator_pb2.HealWorkflow, version: int) -> int | None:
        key = WORKFLOWS + record.workflow_id
        payload = record.SerializeToString(deterministic=True)
        response = await self.etcd.kv.txn([_version_compare(key, version)], [KVService.txn_op_put(key, payload)],
                                          [KVService.txn_op_get(key)], timeout=TXN_TIMEOUT_S)
        if response.succeeded:
            return int(response.header.revision)
        # A txn retried after a lost answer: what is stored is exactly what we wrote.
        kvs = response.responses[0].response_range.kvs if response.responses else []
        if kvs and kvs[0].value == payload:
            return int(kvs[0].mod_revision)
        return None

    @etcd_unavailable_as_status
    async def queue(self, record: coordinator_pb2.HealWorkflow, version: int,
                    records: Sequence[ActionRecord]) -> tuple[list[str], int] | None:
        """The plan's actions, its marker and the record, in one transaction (see `ActionStore.submit`)."""
        key = WORKFLOWS + record.workflow_id
        del record.action_ids[:]
        record.action_ids.extend(r.action_id for r in records)
        payload = record.SerializeToString(deterministic=True)
        also = (_version_compare(key, version), KVService.txn_op_put(key, payload))
        try:
            ids, revision, duplicate = await self.actions._submit(record.plan.plan_id, records, also)
        except AlreadyExists:
            return None
        if not duplicate:
            return ids, revision
        # The plan was queued before (by an earlier call of this heal whose record we did not
        # see, or by SubmitPlan): record that, without queuing anything again.
        saved = await self.save(record, version)
        return None if saved is None else (ids, saved)


class GroupCommit:
    """The leader's fenced writes, gathered: every update asked for while a transaction
    is in flight goes into the next one (up to `max_batch`), so concurrent claims,
    finishes and delivery records of many actions cost one round trip to etcd.

    Only updates under the same fences share a transaction; each keeps its own
    compare on the record's mod revision (see `ActionStore.update_many`).
    """

    MAX_BATCH = 32   # etcd's default --max-txn-ops is 128; an update is at most 2 ops

    def __init__(self, store: ActionStore, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: list[tuple[Update, tuple[Fence, ...], asyncio.Future[Versioned | None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.transactions = 0   # for benchmarks and logs

    async def update(self, current: Versioned, changed: ActionRecord, fences: Fence | Sequence[Fence], *,
                     claim_lease: int = 0, release_claim: bool = False) -> Versioned | None:
        fence_key = (fences,) if isinstance(fences, Fence) else tuple(fences)
        future: asyncio.Future[Versioned | None] = asyncio.get_running_loop().create_future()
        self._queue.append((Update(current, changed, claim_lease, release_claim), fence_key, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")
        return await future

    def cancel(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        for _, _, future in self._queue:
            future.cancel()
        self._queue.clear()

    def _next_batch(self) -> tuple[tuple[Fence, ...], list[tuple[Update, asyncio.Future[Versioned | None]]]]:
        fences = self._queue[0][1]
        batch: list[tuple[Update, asyncio.Future[Versioned | None]]] = []
        rest = []
        seen: set[str] = set()
        for item in self._queue:
            update, item_fences, future = item
            action_id = update.changed.action_id
            if len(batch) < self.max_batch and item_fences == fences and action_id not in seen \
                    and not future.done():
                batch.append((update, future))
                seen.add(action_id)
            elif not future.done():
                rest.append(item)
        self._queue = rest
        return fences, batch

    async def _flush(self) -> None:
        while self._queue:
            fences, batch = self._next_batch()
            if not batch:
                continue
            try:
                self.transactions += 1
                results = await self.store.update_many([u for u, _ in batch], fences)
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
