"""The leader's dispatch loop: run each plan's next action exactly once.

Only the elected leader dispatches, and every write it makes is fenced on its
term. An action is first CLAIMED (fenced, with a claim key under the leader's
lease), then executed by the executor for its provider — which checks the
provider's state first, so a re-dispatch after a crash does not act twice — and
then finished (fenced). A new leader re-dispatches claims whose holder's lease is
gone, and delivers outcomes that were not yet delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.tracing import annotate
from services.common.vocabulary import ActionKind, Provider
from services.coordinator.actions import ActionRecord, ActionState, next_steps
from services.coordinator.executors.base import ActionRequest, ActionResult, ActionStatus, Executor
from services.coordinator.leadership import Leadership
from services.coordinator.notify import OutcomeNotifier
from services.coordinator.store import ActionStore, Versioned

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

IDLE_WAKEUP_S = 1.0
RETRY_TRANSIENT_AFTER_S = 2.0
MAX_ATTEMPTS = 5

ExecutorFor = Callable[[Provider, ActionKind], Executor]


class Dispatcher:
    def __init__(self, store: ActionStore, leadership: Leadership, executor_for: ExecutorFor,
                 notifier: OutcomeNotifier, *, concurrency: int = 4) -> None:
        self.store = store
        self.leadership = leadership
        self.executor_for = executor_for
        self.notifier = notifier
        self.concurrency = concurrency
        self._in_flight: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._not_before: dict[str, float] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
        for task in [self._task, *self._tasks]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        watcher: asyncio.Task[None] | None = None
        while True:
            try:
                if not self.leadership.is_leader:
                    if watcher is not None:
                        watcher.cancel()
                        watcher = None
                    await self._sleep(0.2)
                    continue
                if watcher is None or watcher.done():
                    watcher = asyncio.create_task(self._watch_changes())
                await self._round(self.leadership.term)
                await self._sleep(IDLE_WAKEUP_S)
            except asyncio.CancelledError:
                if watcher is not None:
                    watcher.cancel()
                raise
            except Exception:
                log.warning("dispatch round failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _watch_changes(self) -> None:
        with contextlib.suppress(Exception):
            async for _ in self.store.watch(0):
                self._wake.set()

    async def _round(self, term: int) -> None:
        records, _ = await self.store.all()
        plans: dict[str, list[Versioned]] = defaultdict(list)
        for versioned in records:
            plans[versioned.record.plan_id].append(versioned)
        for plan_actions in plans.values():
            by_id = {v.record.action_id: v for v in plan_actions}
            await self._reclaim_orphans(plan_actions)
            runnable, skip = next_steps(v.record for v in plan_actions)
            for record in skip:
                await self._finish(by_id[record.action_id], ActionState.ACTION_STATE_SKIPPED,
                                   "an earlier action of the plan already healed the job")
            for record in runnable:
                if len(self._in_flight) >= self.concurrency:
                    return
                if record.action_id in self._in_flight or self._not_before.get(record.action_id, 0) > time.time():
                    continue
                self._in_flight.add(record.action_id)
                task = asyncio.create_task(self._dispatch(by_id[record.action_id], term))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            for versioned in plan_actions:
                record = versioned.record
                if record.terminal and not record.outcome_delivered and record.action_id not in self._in_flight:
                    await self._deliver(versioned)

    async def _reclaim_orphans(self, plan_actions: list[Versioned]) -> None:
        """A CLAIMED action whose claim key is gone lost its executor: make it PENDING again."""
        for versioned in plan_actions:
            record = versioned.record
            if record.state is not ActionState.ACTION_STATE_CLAIMED or record.action_id in self._in_flight:
                continue
            if await self.store.claim_holder(record.action_id) is None:
                log.info("reclaiming %s (claim by %s expired)", record.action_id, record.executor_id)
                reset = replace(record, state=ActionState.ACTION_STATE_PENDING, executor_id="", updated_at=time.time(),
                                detail=f"reclaimed after {record.executor_id or 'its executor'} lost its lease")
                await self.store.update(versioned, reset, self.leadership.fence())

    async def _dispatch(self, versioned: Versioned, term: int) -> None:
        record = versioned.record
        parent = TraceContextTextMapPropagator().extract({"traceparent": record.trace_parent}) \
            if record.trace_parent else None
        token = otel_context.attach(parent) if parent is not None else None
        try:
            with tracer.start_as_current_span(f"dispatch {record.kind.name}"):
                annotate(tenant=record.tenant, action=record.kind.name, failure_class=record.failure_class.name,
                         leader_id=self.leadership.replica_id, action_id=record.action_id)
                await self._claim_execute_finish(versioned, term)
        except Exception:
            log.exception("dispatch of %s failed", record.action_id)
        finally:
            if token is not None:
                otel_context.detach(token)
            self._in_flight.discard(record.action_id)
            self._wake.set()

    async def _claim_execute_finish(self, versioned: Versioned, term: int) -> None:
        record = versioned.record
        if not self.leadership.is_leader or self.leadership.term != term:
            return
        claimed_record = replace(record, state=ActionState.ACTION_STATE_CLAIMED, executor_id=self.leadership.replica_id,
                                 dispatched_by=self.leadership.replica_id, attempts=record.attempts + 1,
                                 updated_at=time.time())
        claimed = await self.store.update(versioned, claimed_record, self.leadership.fence(),
                                          claim_lease=self.leadership.lease)
        if claimed is None:
            return  # someone changed it, or we are no longer the leader: nothing was done
        await self.notifier.action_started(claimed.record)
        executor = self.executor_for(record.provider, record.kind)
        request = ActionRequest(
            action_id=record.action_id, idempotency_key=record.idempotency_key, tenant=record.tenant,
            kind=record.kind, provider=record.provider, parameters=dict(record.parameters),
            attempt=int(record.job.get("attempt", 1) or 1),
        )
        started = time.monotonic()
        try:
            result: ActionResult = await asyncio.to_thread(executor.execute, request)
        except Exception as error:  # transient: leave it claimed-then-pending for a later round
            attempts = claimed.record.attempts
            give_up = attempts >= MAX_ATTEMPTS
            log.warning("%s on %s: %s%s", record.kind.name, record.action_id, error,
                        " — giving up" if give_up else " — will retry")
            if give_up:
                await self._finish(claimed, ActionState.ACTION_STATE_FAILED,
                                   f"gave up after {attempts} attempts: {error}")
            else:
                self._not_before[record.action_id] = time.time() + RETRY_TRANSIENT_AFTER_S * attempts
                reset = replace(claimed.record, state=ActionState.ACTION_STATE_PENDING, detail=str(error),
                                updated_at=time.time())
                await self.store.update(claimed, reset, self.leadership.fence(), release_claim=True)
            return
        minutes = float(record.parameters.get("runner_minutes", 0) or 0) or (time.monotonic() - started) / 60
        state = ActionState.ACTION_STATE_FAILED if result.status is ActionStatus.FAILED \
            else ActionState.ACTION_STATE_SUCCEEDED
        await self._finish(claimed, state, result.detail, provider_reference=result.provider_reference,
                           runner_minutes=minutes)

    async def _finish(self, versioned: Versioned, state: ActionState, detail: str, *,
                      provider_reference: str = "", runner_minutes: float = 0.0) -> None:
        done = replace(versioned.record, state=state, detail=detail, updated_at=time.time(),
                       provider_reference=provider_reference or versioned.record.provider_reference,
                       runner_minutes=runner_minutes or versioned.record.runner_minutes)
        finished = await self.store.update(versioned, done, self.leadership.fence(), release_claim=True)
        if finished is not None:
            annotate(action_state=state.name)
            await self._deliver(finished)

    async def _deliver(self, versioned: Versioned) -> None:
        if await self.notifier.deliver(versioned.record):
            delivered = replace(versioned.record, outcome_delivered=True)
            await self.store.update(versioned, delivered, self.leadership.fence())
