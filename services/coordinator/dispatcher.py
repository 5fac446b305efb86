"""The leader's dispatch loop: run each plan's next action exactly once.

Only the elected leader dispatches, and every write it makes is fenced on its
term. The leader keeps a view of the queue (one range read, then a watch from the
next revision) and, on every change, decides which runnable actions start:
fairly across tenants and within the live concurrency limits
(`services.coordinator.scheduling`). An action is first CLAIMED (fenced, with a
claim key under the leader's lease), then executed by the executor for its
provider — which checks the provider's state first, so a re-dispatch after a
crash does not act twice — and then finished (fenced). A new leader reclaims
claims whose holder's lease is gone, and delivers outcomes not yet delivered,
remembering per receiver who already has each one. The leader's fenced writes go
through a group commit (`store.GroupCommit`): updates asked for while a
transaction is in flight share the next one, each with its own compare.

Actions of a provider for which an external executor is registered are left for
that executor's `ClaimAction`; the others run here, each provider with its own
worker threads so a slow provider never holds up another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.errors import InvalidArgument
from services.common.tracing import annotate
from services.common.vocabulary import ActionKind, Provider
from services.coordinator.actions import ActionRecord, ActionState, next_steps
from services.coordinator.executors.base import ActionRequest, ActionResult, ActionStatus, Executor
from services.coordinator.executors.fresh_runner import plan_fresh_runner
from services.coordinator.leadership import Leadership
from services.coordinator.scheduling import Limits, fair_order, running_by_tenant
from services.coordinator.store import CLAIMS, ActionStore, GroupCommit, Snapshot, Versioned

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

IDLE_WAKEUP_S = 1.0
RESYNC_S = 30.0
RETRY_TRANSIENT_AFTER_S = 2.0
MAX_ATTEMPTS = 5
DELIVERY_RETRY_S = 2.0
MAX_DELIVERIES = 16

ExecutorFor = Callable[[Provider, ActionKind], Executor]

DEFAULT_SETTINGS: dict[str, int] = {"dispatch_concurrency": 4, "global_concurrency": 0, "tenant_concurrency": 0,
                                    "fresh_runner_restore_after_seconds": 600}


def _needs_fresh_runner_steps(record: ActionRecord, executor: Executor) -> bool:
    """A provider's RETRY_ON_FRESH_RUNNER runs as drain, re-run and a scheduled restore.
    (The local executor simulates it whole; a record that is already a step runs as is.)"""
    return (record.kind is ActionKind.RETRY_ON_FRESH_RUNNER and "step" not in record.parameters
            and executor.provider is not Provider.PROVIDER_LOCAL)


class Dispatcher:
    def __init__(self, store: ActionStore, leadership: Leadership, executor_for: ExecutorFor,
                 notifier: Any, *, settings: Callable[[str], Any] | Mapping[str, Any] | None = None,
                 concurrency: int | None = None) -> None:
        self.store = store
        self.commits = GroupCommit(store)   # the leader's fenced writes, many per transaction
        self.leadership = leadership
        self.executor_for = executor_for
        self.notifier = notifier
        if settings is None:
            settings = dict(DEFAULT_SETTINGS)
        if concurrency is not None and isinstance(settings, dict):
            settings["dispatch_concurrency"] = concurrency
        self._settings = settings
        self.view: Snapshot | None = None
        self._view_term = 0
        self._view_loaded_at = 0.0
        self._in_flight: dict[str, Provider] = {}
        self._delivering: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._not_before: dict[str, float] = {}
        self._last_tenant = ""
        self._pools: dict[Provider, ThreadPoolExecutor] = {}
        self._indexed_view: Snapshot | None = None
        self._plan_status: dict[str, list[tuple[str, set[str]]]] = {}
        self._ready: set[str] = set()
        self._skip: set[str] = set()
        self._undelivered: set[str] = set()
        self._claimed: set[str] = set()
        self.first_dispatch: dict[int, float] = {}   # term -> wall clock of its first claim (benchmarks, logs)

    # -- settings -----------------------------------------------------------------------
    def setting(self, key: str) -> int:
        value = self._settings(key) if callable(self._settings) else self._settings.get(key)
        return int(value if value is not None else DEFAULT_SETTINGS[key])

    def limits(self) -> Limits:
        return Limits(global_limit=max(0, self.setting("global_concurrency")),
                      tenant_limit=max(0, self.setting("tenant_concurrency")))

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        self.commits.cancel()
        for task in [self._task, self._watcher, *self._tasks]:
            if task is not None:
                task.cancel()
        for task in [self._task, self._watcher, *self._tasks]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                if not self.leadership.is_leader:
                    self._drop_view()
                    await self._sleep(0.1)
                    continue
                term = self.leadership.term
                if self.view is None or self._view_term != term or \
                        time.monotonic() - self._view_loaded_at > RESYNC_S:
                    await self._load_view(term)
                await self._round(term)
                await self._sleep(IDLE_WAKEUP_S)
            except asyncio.CancelledError:
                self._drop_view()
                raise
            except Exception:
                log.warning("dispatch round failed; retrying", exc_info=True)
                self._drop_view()
                await asyncio.sleep(0.5)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    # -- the view of the queue ------------------------------------------------------------
    def _drop_view(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        self.view = None
        self._view_term = 0

    async def _load_view(self, term: int) -> None:
        self._drop_view()
        view = await self.store.snapshot()
        self.view, self._view_term, self._view_loaded_at = view, term, time.monotonic()
        self._watcher = asyncio.create_task(self._follow(view), name="dispatcher-watch")

    async def _follow(self, view: Snapshot) -> None:
        try:
            async for key, value, mod, create, lease in self.store.changes(view.revision + 1):
                view.apply(key, value, mod, create, lease)
                self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("queue watch interrupted; reloading", exc_info=True)
        if self.view is view:
            self.view = None  # reload on the next round
            self._wake.set()

    def remember(self, versioned: Versioned, *, claimer: str | None = None, released: bool = False) -> None:
        """Apply our own successful write to the view at once (the watch confirms it later)."""
        view = self.view
        if view is None:
            return
        view.put_record(versioned.record, versioned.mod_revision)
        if claimer is not None:
            view.apply(CLAIMS + versioned.record.action_id, claimer.encode(), versioned.mod_revision)
        if released:
            view.apply(CLAIMS + versioned.record.action_id, None, versioned.mod_revision)

    # -- one round ------------------------------------------------------------------------
    def _reindex(self, view: Snapshot) -> None:
        """Bring the per-plan decisions up to date for the plans that changed (all, for a new view)."""
        if view is not self._indexed_view:
            self._indexed_view = view
            self._plan_status.clear()
            for index in (self._ready, self._skip, self._undelivered, self._claimed):
                index.clear()
            view.dirty_plans = set(view.by_plan)
        dirty, view.dirty_plans = view.dirty_plans, set()
        for plan_id in dirty:
            for action_id, index in self._plan_status.pop(plan_id, ()):
                index.discard(action_id)
            plan_actions = view.plan_actions(plan_id)
            if not plan_actions:
                continue
            if all(v.record.terminal and v.record.outcome_delivered for v in plan_actions):
                for v in plan_actions:  # nothing will ever change here again
                    view.retire(v.record.action_id)
                continue
            ready, skipped = next_steps(v.record for v in plan_actions)
            entries = [(r.action_id, self._ready) for r in ready] + [(r.action_id, self._skip) for r in skipped]
            for v in plan_actions:
                if v.record.terminal and not v.record.outcome_delivered:
                    entries.append((v.record.action_id, self._undelivered))
                elif v.record.state is ActionState.ACTION_STATE_CLAIMED:
                    entries.append((v.record.action_id, self._claimed))
            for action_id, index in entries:
                index.add(action_id)
            self._plan_status[plan_id] = entries

    def _of(self, view: Snapshot, index: set[str]) -> list[Versioned]:
        return [view.actions[a] for a in list(index) if a in view.actions]

    def runnable(self, view: Snapshot) -> tuple[list[Versioned], list[Versioned], list[Versioned]]:
        """(runnable now, to skip, finished with an outcome still to deliver) over the view."""
        self._reindex(view)
        return self._of(view, self._ready), self._of(view, self._skip), self._of(view, self._undelivered)

    def claimed(self, view: Snapshot) -> list[Versioned]:
        self._reindex(view)
        return self._of(view, self._claimed)

    async def _round(self, term: int) -> None:
        view = self.view
        if view is None:
            return
        await self._reclaim_orphans(view)
        runnable, skip, undelivered = self.runnable(view)
        for versioned in skip:
            await self._finish(versioned, ActionState.ACTION_STATE_SKIPPED,
                               "an earlier action of the plan already healed the job")
        self._start_deliveries(undelivered)

        external = {Provider[r.data.get("provider", "PROVIDER_UNSPECIFIED")] for r in view.executors.values()
                    if r.data.get("provider") in Provider.__members__}
        now = time.time()
        slots = max(1, self.setting("dispatch_concurrency"))
        busy_by_provider: dict[Provider, int] = defaultdict(int)
        for p in self._in_flight.values():
            busy_by_provider[p] += 1
        full = {p for p, n in busy_by_provider.items() if n >= slots}
        by_provider: dict[Provider, list[ActionRecord]] = defaultdict(list)
        for versioned in runnable:
            record = versioned.record
            if record.provider in full:
                continue  # no free worker for its provider this round
            if record.action_id in self._in_flight or self._not_before.get(record.action_id, 0) > now:
                continue
            if record.not_before > now:
                continue  # a scheduled step (a runner's restore) that is not due yet
            if record.provider in external:
                continue  # an external executor claims these
            by_provider[record.provider].append(record)
        running = running_by_tenant(v.record for v in self.claimed(view))
        limits = self.limits()
        for provider in sorted(by_provider, key=int):
            busy = busy_by_provider[provider]
            chosen = fair_order(by_provider[provider], running, limits, free_slots=slots - busy,
                                start_after=self._last_tenant)
            for record in chosen:
                running[record.tenant] = running.get(record.tenant, 0) + 1
                self._in_flight[record.action_id] = provider
                task = asyncio.create_task(self._dispatch(view.actions[record.action_id], term))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if chosen:
                self._last_tenant = chosen[0].tenant

    async def _reclaim_orphans(self, view: Snapshot) -> None:
        """A CLAIMED action whose claim key is gone lost its executor: make it PENDING again.

        So is one claimed by this replica that is not running here (a dispatch that
        ended without finishing, e.g. a write whose answer was lost).
        """
        for versioned in self.claimed(view):
            record = versioned.record
            if record.state is not ActionState.ACTION_STATE_CLAIMED or record.action_id in self._in_flight:
                continue
            holder = view.claims.get(record.action_id)
            if holder is not None and holder != self.leadership.replica_id:
                continue
            log.info("reclaiming %s (claim by %s %s)", record.action_id, record.executor_id,
                     "expired" if holder is None else "is not running here")
            reset = replace(record, state=ActionState.ACTION_STATE_PENDING, executor_id="", updated_at=time.time(),
                            detail=f"reclaimed after {record.executor_id or 'its executor'} lost its lease")
            updated = await self.commits.update(versioned, reset, self.leadership.fence(), release_claim=True)
            if updated is not None:
                self.remember(updated, released=True)

    # -- one action -----------------------------------------------------------------------
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
            self._in_flight.pop(record.action_id, None)
            self._wake.set()

    def _pool(self, provider: Provider) -> ThreadPoolExecutor:
        pool = self._pools.get(provider)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=max(1, self.setting("dispatch_concurrency")),
                                      thread_name_prefix=f"exec-{provider.name.lower()}")
            self._pools[provider] = pool
        return pool

    async def _claim_execute_finish(self, versioned: Versioned, term: int) -> None:
        record = versioned.record
        if not self.leadership.is_leader or self.leadership.term != term:
            return
        claimed_record = replace(record, state=ActionState.ACTION_STATE_CLAIMED, executor_id=self.leadership.replica_id,
                                 dispatched_by=self.leadership.replica_id, attempts=record.attempts + 1,
                                 updated_at=time.time())
        claimed = await self.commits.update(versioned, claimed_record, self.leadership.fence(),
                                          claim_lease=self.leadership.lease)
        if claimed is None:
            return  # someone changed it, or we are no longer the leader: nothing was done
        self.remember(claimed, claimer=self.leadership.replica_id)
        if term not in self.first_dispatch:
            self.first_dispatch[term] = time.time()
            log.info("first dispatch of term %d at %.3f: %s", term, self.first_dispatch[term], record.action_id)
        await self.notifier.action_started(claimed.record)
        executor = self.executor_for(record.provider, record.kind)
        request = ActionRequest(
            action_id=record.action_id, idempotency_key=record.idempotency_key, tenant=record.tenant,
            kind=record.kind, provider=record.provider, parameters=dict(record.parameters),
            attempt=claimed.record.attempts,
        )
        started = time.monotonic()
        try:
            loop = asyncio.get_running_loop()
            if _needs_fresh_runner_steps(record, executor):
                result = await self._fresh_runner(claimed.record, request, executor)
            else:
                result = await loop.run_in_executor(self._pool(record.provider), executor.execute, request)
        except InvalidArgument as error:  # the plan cannot be carried out as given: say why
            await self._finish(claimed, ActionState.ACTION_STATE_FAILED, error.message)
            return
        except Exception as error:  # transient: put it back for a later round
            attempts = claimed.record.attempts
            give_up = attempts >= MAX_ATTEMPTS
            log.warning("%s on %s: %s%s", record.kind.name, record.action_id, error,
                        " — giving up" if give_up else " — will retry")
            if give_up:
                await self._finish(claimed, ActionState.ACTION_STATE_FAILED,
                                   f"gave up after {attempts} attempts: {error}")
            else:
                wait = max(RETRY_TRANSIENT_AFTER_S * attempts, float(getattr(error, "retry_after_seconds", 0) or 0))
                self._not_before[record.action_id] = time.time() + wait
                reset = replace(claimed.record, state=ActionState.ACTION_STATE_PENDING, detail=str(error),
                                executor_id="", updated_at=time.time())
                updated = await self.commits.update(claimed, reset, self.leadership.fence(), release_claim=True)
                if updated is not None:
                    self.remember(updated, released=True)
            return
        minutes = float(record.parameters.get("runner_minutes", 0) or 0) or (time.monotonic() - started) / 60
        state = ActionState.ACTION_STATE_FAILED if result.status is ActionStatus.FAILED \
            else ActionState.ACTION_STATE_SUCCEEDED
        self._not_before.pop(record.action_id, None)
        await self._finish(claimed, state, result.detail, provider_reference=result.provider_reference,
                           runner_minutes=minutes)

    async def _fresh_runner(self, record: ActionRecord, request: ActionRequest, executor: Executor) -> ActionResult:
        """Retry on a fresh runner: queue the restore first (durable, so a crash of the
        coordinator never leaves the runner out of rotation), then drain and re-run."""
        drain, rerun, restore = plan_fresh_runner(
            request, now=time.time(), restore_after_seconds=self.setting("fresh_runner_restore_after_seconds"))
        restore_record = replace(
            record, action_id=restore.action_id, idempotency_key=restore.idempotency_key,
            parameters=dict(restore.parameters), state=ActionState.ACTION_STATE_PENDING, executor_id="",
            attempts=0, detail="", housekeeping=True, not_before=restore.not_before or 0.0, always_run=False,
            outcome_delivered=False, created_at=time.time(), updated_at=time.time(),
        )
        await self.store.add(restore_record, self.leadership.fence())
        pool = self._pool(record.provider)
        loop = asyncio.get_running_loop()
        drained: ActionResult = await loop.run_in_executor(pool, executor.execute, drain)
        if drained.status is ActionStatus.FAILED:
            return drained
        return await loop.run_in_executor(pool, executor.execute, rerun)

    async def _finish(self, versioned: Versioned, state: ActionState, detail: str, *,
                      provider_reference: str = "", runner_minutes: float = 0.0) -> None:
        done = replace(versioned.record, state=state, detail=detail, updated_at=time.time(),
                       provider_reference=provider_reference or versioned.record.provider_reference,
                       runner_minutes=runner_minutes or versioned.record.runner_minutes)
        finished = await self.commits.update(versioned, done, self.leadership.fence(), release_claim=True)
        if finished is not None:
            self.remember(finished, released=True)
            annotate(action_state=state.name)
            self._start_deliveries([finished])

    # -- outcomes -------------------------------------------------------------------------
    def _start_deliveries(self, finished: list[Versioned]) -> None:
        now = time.time()
        for versioned in finished:
            action_id = versioned.record.action_id
            if action_id in self._delivering or len(self._delivering) >= MAX_DELIVERIES:
                continue
            if self._not_before.get("deliver:" + action_id, 0) > now:
                continue
            self._delivering.add(action_id)
            task = asyncio.create_task(self._deliver(versioned))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, versioned: Versioned) -> None:
        action_id = versioned.record.action_id
        try:
            already = frozenset(versioned.record.delivered_to)
            reached, complete = await self.notifier.deliver(versioned.record, already)
            if not complete:
                self._not_before["deliver:" + action_id] = time.time() + DELIVERY_RETRY_S
            if reached - already or complete:
                delivered = replace(versioned.record, delivered_to=sorted(already | reached),
                                    outcome_delivered=complete)
                updated = await self.commits.update(versioned, delivered, self.leadership.fence())
                if updated is not None:
                    self.remember(updated)
        except Exception:
            log.warning("delivering the outcome of %s failed; will retry", action_id, exc_info=True)
            self._not_before["deliver:" + action_id] = time.time() + DELIVERY_RETRY_S
        finally:
            self._delivering.discard(action_id)
