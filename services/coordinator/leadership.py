"""Leader election through etcd: the standard recipe, with the lease kept alive by us.

A replica leads when it created the leader key under its own lease (a transaction
comparing the key's create revision to 0). The create revision is its term, and
every write the leader makes is fenced on it. A leader that cannot renew its
lease steps down locally after 60% of the TTL — before etcd can expire the key
and let another replica start — so two leaders never dispatch at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from etcd3aio.kv import KVService

from services.common.errors import NotLeader
from services.coordinator.store import LEADER, Fence

log = logging.getLogger(__name__)

STEP_DOWN_FRACTION = 0.6


@dataclass(frozen=True)
class LeaderInfo:
    leader_id: str
    address: str
    term: int


class Leadership:
    def __init__(self, etcd: Any, replica_id: str, address: str, ttl_seconds: int = 5,
                 on_elected: Callable[[int], Awaitable[None]] | None = None,
                 on_deposed: Callable[[], Awaitable[None]] | None = None) -> None:
        self.etcd = etcd
        self.replica_id = replica_id
        self.address = address
        self.ttl = ttl_seconds
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._term = 0
        self._lease = 0
        self._last_renewal = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- state ----------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self._term > 0 and time.monotonic() - self._last_renewal < self.ttl * STEP_DOWN_FRACTION

    @property
    def term(self) -> int:
        return self._term

    @property
    def lease(self) -> int:
        return self._lease

    def fence(self) -> Fence:
        return Fence(LEADER, self._term)

    async def require_leader(self) -> None:
        """Raise NotLeader (with where the leader is) unless this replica leads now."""
        if self.is_leader:
            return
        info = await self.current()
        if info is None:
            raise NotLeader("", "")
        raise NotLeader(info.leader_id, info.address)

    async def current(self) -> LeaderInfo | None:
        response = await self.etcd.kv.get(LEADER)
        if not response.kvs:
            return None
        kv = response.kvs[0]
        data = json.loads(kv.value)
        return LeaderInfo(data["id"], data["address"], kv.create_revision)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"leadership-{self.replica_id}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._term and self._lease:
            # Hand over at once instead of making the others wait for the TTL.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.etcd.lease.revoke(self._lease), 2)
        self._term = 0

    async def _run(self) -> None:
        while not self._stopping:
            try:
                won, revision = await self._campaign()
                if won:
                    await self._hold()
                else:
                    await self._wait_for_vacancy(revision + 1)
            except asyncio.CancelledError:
                raise
            except Exception:  # etcd down or restarting: retry at a bounded pace
                log.warning("%s: election round failed; retrying", self.replica_id, exc_info=True)
                await self._step_down()
                await asyncio.sleep(min(1.0, self.ttl / 5))

    async def _campaign(self) -> tuple[bool, int]:
        """(won, revision at which the leader key was seen held by someone else)."""
        lease = await self.etcd.lease.grant(self.ttl, timeout=self.ttl)
        value = json.dumps({"id": self.replica_id, "address": self.address})
        response = await self.etcd.kv.txn(
            [KVService.txn_compare_create_revision(LEADER, 0)],
            [KVService.txn_op_put(LEADER, value, lease=lease.ID)],
            [KVService.txn_op_get(LEADER)],
            timeout=self.ttl,
        )
        if not response.succeeded:
            with contextlib.suppress(Exception):
                await self.etcd.lease.revoke(lease.ID, timeout=self.ttl)
            kvs = response.responses[0].response_range.kvs if response.responses else []
            if kvs and json.loads(kvs[0].value).get("id") == self.replica_id:
                # Our own key from before (we stepped down while etcd was away, or we
                # restarted within the TTL): nobody else can hold that lease, so give it
                # up now instead of waiting for it to expire.
                log.info("%s: releasing our own stale leadership (term %d)", self.replica_id,
                         kvs[0].create_revision)
                with contextlib.suppress(Exception):
                    await self.etcd.lease.revoke(kvs[0].lease, timeout=self.ttl)
                return False, response.header.revision  # the watch sees the deletion just made
            return False, response.header.revision
        self._lease = lease.ID
        self._term = response.header.revision
        self._last_renewal = time.monotonic()
        log.info("%s: elected leader, term %d", self.replica_id, self._term)
        if self._on_elected is not None:
            await self._on_elected(self._term)
        return True, response.header.revision

    async def _hold(self) -> None:
        interval = max(0.2, self.ttl / 4)
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                alive = await asyncio.wait_for(self._renew(), timeout=interval * 2)
            except Exception:  # includes timeouts: unknown, keep trying until the step-down deadline
                alive = True
                log.warning("%s: lease renewal failed", self.replica_id)
            if not alive or not self.is_leader:
                log.warning("%s: lost leadership (term %d)", self.replica_id, self._term)
                await self._step_down()
                return

    async def _renew(self) -> bool:
        call = self.etcd.lease.keep_alive(self._lease)
        try:
            async for response in call:
                if response.TTL <= 0:
                    return False
                self._last_renewal = time.monotonic()
                return True
        finally:
            call.cancel()
        return False

    async def _step_down(self) -> None:
        if self._term and self._on_deposed is not None:
            await self._on_deposed()
        self._term = 0
        self._lease = 0

    async def _wait_for_vacancy(self, from_revision: int) -> None:
        """Wait until the leader key is deleted after `from_revision` (or a bounded time passes).

        Watching from the revision at which the campaign saw the key held means a
        deletion between the campaign and the watch is still seen.
        """
        async def deleted() -> None:
            async for response in self.etcd.watch.watch(LEADER, start_revision=from_revision):
                if any(event.type == 1 for event in response.events):
                    return

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(deleted(), timeout=self.ttl)
