"""The coordinator's queue, leadership and scheduling against a real etcd (in this
process: the servicer, leadership and dispatcher objects, no gRPC server), so each
test is quick; the fault tests with real processes are in test_coordinator_faults."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from services.common import auth
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, NotLeader
from services.common.tokens import Principal
from services.common.vocabulary import ActionKind
from services.coordinator.actions import ActionRecord, ActionState
from services.coordinator.dispatcher import Dispatcher
from services.coordinator.executors.base import ActionRequest, ActionResult, ActionStatus
from services.coordinator.leadership import Leadership
from services.coordinator.server import CoordinatorServicer
from services.coordinator.store import PREFIX, ActionStore
from tests.integration.coordinator_support import EtcdServer

pytestmark = pytest.mark.integration
S = ActionState
TTL = 2


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with EtcdServer(tmp_path_factory.mktemp("etcd")) as server:
        yield server


def with_etcd(body: Callable[[Any], Awaitable[None]]) -> Callable[[EtcdServer], None]:
    """A test body run in its own event loop with a client of the module's etcd (queue emptied first)."""
    def test(etcd_server: EtcdServer) -> None:
        async def main() -> None:
            from etcd3aio import Etcd3Client
            from etcd3aio.kv import prefix_range_end

            client = Etcd3Client([etcd_server.endpoint])
            await client.connect()
            try:
                await client.kv.delete(PREFIX, range_end=prefix_range_end(PREFIX))  # type: ignore[union-attr]
                await asyncio.wait_for(body(client), 60)
            finally:
                await client.close()

        asyncio.run(main())

    test.__name__ = body.__name__
    test.__doc__ = body.__doc__
    return test


def as_principal(tenant: str = "acme", roles: tuple[str, ...] = ("operator", "viewer", "service")) -> None:
    auth.set_principal(Principal(subject="test", tenant=tenant, roles=frozenset(roles), token_id="t",
                                 expires_at=time.time() + 600))


def plan(plan_id: str, tenant: str = "acme", kinds: tuple[ActionKind, ...] = (ActionKind.RETRY,),
         provider: int = common_pb2.PROVIDER_GITHUB_ACTIONS, keys: tuple[str, ...] | None = None,
         ) -> coordinator_pb2.SubmitPlanRequest:
    actions = [common_pb2.Action(kind=int(kind), idempotency_key=(keys[i] if keys else f"{plan_id}-k{i}"),
                                 parameters={"n": str(i)}) for i, kind in enumerate(kinds)]
    return coordinator_pb2.SubmitPlanRequest(tenant_id=tenant, plan=common_pb2.HealingPlan(
        plan_id=plan_id, tenant_id=tenant, failure_id=f"f-{plan_id}", actions=actions,
        job=common_pb2.JobRef(provider=provider, repository="acme/web", run_id="1")))


async def queue_state(etcd: object) -> list[tuple[bytes, bytes]]:
    from etcd3aio.kv import prefix_range_end

    response = await etcd.kv.get(PREFIX, range_end=prefix_range_end(PREFIX))  # type: ignore[attr-defined]
    return [(kv.key, kv.value) for kv in response.kvs if not kv.key.endswith(b"/leader")]


class RecordingExecutor:
    """Counts executions per idempotency key; optionally slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def supports(self, kind: ActionKind) -> bool:
        return True

    def execute(self, request: ActionRequest) -> ActionResult:
        with self.lock:
            self.calls[request.idempotency_key] += 1
        time.sleep(self.delay)
        return ActionResult(ActionStatus.SUCCEEDED, f"done {request.idempotency_key}")


class RecordingNotifier:
    def __init__(self) -> None:
        self.delivered: Counter[tuple[str, str]] = Counter()
        self.started: Counter[str] = Counter()

    async def action_started(self, record: ActionRecord) -> None:
        self.started[record.action_id] += 1

    async def deliver(self, record: ActionRecord, already: frozenset[str] = frozenset()) -> tuple[set[str], bool]:
        for name in ("planner", "audit"):
            if name not in already:
                self.delivered[(name, record.action_id)] += 1
        return {"planner", "audit"} - already, True


async def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Replica:
    def __init__(self, etcd: object, name: str, executor: RecordingExecutor, **settings: int) -> None:
        self.store = ActionStore(etcd)
        self.leadership = Leadership(etcd, name, f"127.0.0.1:{1000 + int(name[-1])}", ttl_seconds=TTL)
        self.notifier = RecordingNotifier()
        self.dispatcher = Dispatcher(self.store, self.leadership, lambda provider, kind: executor, self.notifier,
                                     settings={"dispatch_concurrency": 4, "global_concurrency": 0,
                                               "tenant_concurrency": 0, **settings})
        self.servicer = CoordinatorServicer(self.store, self.leadership, self.dispatcher)

    def start(self) -> Replica:
        self.leadership.start()
        self.dispatcher.start()
        return self

    async def stop(self) -> None:
        await self.dispatcher.stop()
        await self.leadership.stop()


async def all_done(store: ActionStore, count: int) -> bool:
    records, _ = await store.all()
    return len(records) == count and all(v.record.terminal and v.record.outcome_delivered for v in records)


# -- the queue -------------------------------------------------------------------------------

@with_etcd
async def test_submit_writes_every_action_in_one_revision_and_is_idempotent(etcd: Any) -> None:
    as_principal()
    servicer = CoordinatorServicer(ActionStore(etcd), Leadership(etcd, "c1", "a", TTL), None)
    request = plan("p1", kinds=(ActionKind.RETRY, ActionKind.CLEAR_CACHE, ActionKind.ESCALATE))
    first = await servicer.SubmitPlan(request, None)
    assert list(first.action_ids) == ["p1-0", "p1-1", "p1-2"] and not first.duplicate
    records, _ = await servicer.store.all()
    assert {v.mod_revision for v in records} == {first.revision}
    again = await servicer.SubmitPlan(request, None)
    assert again.duplicate and list(again.action_ids) == list(first.action_ids)
    assert len((await servicer.store.all())[0]) == 3


@with_etcd
async def test_bad_input_names_the_field_and_leaves_the_queue_untouched(etcd: Any) -> None:
    as_principal()
    servicer = CoordinatorServicer(ActionStore(etcd), Leadership(etcd, "c1", "a", TTL), None)
    await servicer.SubmitPlan(plan("keep"), None)
    before = await queue_state(etcd)
    empty = plan("empty")
    del empty.plan.actions[:]
    with pytest.raises(InvalidArgument, match="at least one action") as error:
        await servicer.SubmitPlan(empty, None)
    assert error.value.field == "plan.actions"
    with pytest.raises(InvalidArgument) as error:
        await servicer.SubmitPlan(plan("dup", kinds=(ActionKind.RETRY, ActionKind.ESCALATE), keys=("x", "x")), None)
    assert error.value.field == "plan.actions[1].idempotency_key"
    with pytest.raises(InvalidArgument) as error:
        await servicer.SubmitPlan(plan("prov", provider=99), None)
    assert error.value.field == "plan.job.provider"
    with pytest.raises(InvalidArgument) as error:
        await servicer.RegisterExecutor(coordinator_pb2.RegisterExecutorRequest(
            executor_id="e", provider=common_pb2.PROVIDER_GITLAB, capacity=0), None)
    assert error.value.field == "capacity" and "got 0" in str(error.value)
    with pytest.raises(InvalidArgument) as error:
        await servicer.RegisterExecutor(coordinator_pb2.RegisterExecutorRequest(
            executor_id="e", provider=42, capacity=1), None)
    assert error.value.field == "provider"
    with pytest.raises(NotFound, match="'nope'"):
        await servicer.GetAction(coordinator_pb2.GetActionRequest(action_id="nope"), None)
    with pytest.raises(FailedPrecondition, match="not registered") as precondition:
        await servicer.ClaimAction(coordinator_pb2.ClaimActionRequest(executor_id="ghost", lease_id=1), None)
    assert precondition.value.reason == "NOT_REGISTERED"
    assert await queue_state(etcd) == before


@with_etcd
async def test_watch_resumes_from_a_revision_and_misses_nothing(etcd: Any) -> None:
    as_principal()
    servicer = CoordinatorServicer(ActionStore(etcd), Leadership(etcd, "c1", "a", TTL), None)
    first = await servicer.SubmitPlan(plan("w1"), None)
    await servicer.SubmitPlan(plan("w2"), None)
    versioned = await servicer.store.get("w1-0")
    from dataclasses import replace
    await servicer.store.update(versioned, replace(versioned.record, state=S.ACTION_STATE_CANCELLED), None)
    # All three changes happened before the watch was opened: resuming from the first
    # revision replays them in order.
    seen: list[tuple[str, int]] = []

    async def collect() -> None:
        stream = servicer.WatchActions(coordinator_pb2.WatchActionsRequest(start_revision=first.revision), None)
        async for event in stream:
            seen.append((event.action.action_id, event.action.state))
            if len(seen) == 3:
                return

    await asyncio.wait_for(collect(), 10)
    assert seen == [("w1-0", S.ACTION_STATE_PENDING), ("w2-0", S.ACTION_STATE_PENDING),
                    ("w1-0", S.ACTION_STATE_CANCELLED)]


# -- leadership and fencing -------------------------------------------------------------------

@with_etcd
async def test_one_leader_a_follower_points_to_it_and_failover_is_fenced(etcd: Any) -> None:
    executor = RecordingExecutor()
    one, two = Replica(etcd, "c1", executor).start(), Replica(etcd, "c2", executor).start()
    try:
        await wait_for(lambda: _true(one.leadership.is_leader or two.leadership.is_leader), 10, "a leader")
        leader, follower = (one, two) if one.leadership.is_leader else (two, one)
        assert not follower.leadership.is_leader
        with pytest.raises(NotLeader) as error:
            await follower.leadership.require_leader()
        assert error.value.leader_id == leader.leadership.replica_id
        assert error.value.leader_address == leader.leadership.address
        info = await follower.servicer.Leader(coordinator_pb2.LeaderRequest(), None)
        assert info.leader_id == leader.leadership.replica_id and not info.is_self

        # The leader's lease vanishes behind its back (as if etcd expired it): it must not
        # be able to write anything, even before it notices, and the follower takes over.
        old_fence = leader.leadership.fence()
        await etcd.lease.revoke(leader.leadership.lease)  # type: ignore[attr-defined]
        await wait_for(lambda: _true(follower.leadership.is_leader), TTL + 3, "the follower to take over")
        as_principal()
        await follower.servicer.SubmitPlan(plan("fenced"), None)
        versioned = await follower.store.get("fenced-0")
        from dataclasses import replace
        stale = replace(versioned.record, state=S.ACTION_STATE_CLAIMED, executor_id="old-leader")
        assert await leader.store.update(versioned, stale, old_fence) is None
        await wait_for(lambda: all_done(follower.store, 1), 10, "the new leader to run the action")
        assert executor.calls == Counter({"fenced-k0": 1})
        assert (await follower.store.get("fenced-0")).record.dispatched_by == follower.leadership.replica_id
        # It may believe it leads a moment longer (its writes are fenced meanwhile), never past the TTL.
        await wait_for(lambda: _true(not leader.leadership.is_leader), TTL, "the old leader to step down")
    finally:
        await one.stop()
        await two.stop()


@with_etcd
async def test_a_vacancy_is_never_missed_between_campaign_and_watch(etcd: Any) -> None:
    first = Leadership(etcd, "c1", "a1", ttl_seconds=30)
    first.start()
    await wait_for(lambda: _true(first.is_leader), 10, "c1 to lead")
    second = Leadership(etcd, "c2", "a2", ttl_seconds=30)
    second.start()
    await asyncio.sleep(0.3)  # c2 lost its campaign and waits for a vacancy
    await first.stop()        # resigns at once (revokes its lease)
    # With a 30 s TTL the bounded re-campaign would take 30 s: seeing the deletion is what makes it quick.
    started = time.monotonic()
    await wait_for(lambda: _true(second.is_leader), 5, "c2 to take over after the resignation")
    assert time.monotonic() - started < 5
    await second.stop()


@with_etcd
async def test_restarted_replica_releases_its_own_stale_leadership(etcd: Any) -> None:
    first = Leadership(etcd, "c1", "a1", ttl_seconds=30)
    first.start()
    await wait_for(lambda: _true(first.is_leader), 10, "c1 to lead")
    first._task.cancel()  # type: ignore[union-attr]  # crash without resigning: the key stays for 30 s
    again = Leadership(etcd, "c1", "a1", ttl_seconds=30)
    again.start()
    await wait_for(lambda: _true(again.is_leader), 5, "the restarted c1 to lead again without waiting 30 s")
    await again.stop()


# -- dispatch, fairness, external executors -------------------------------------------------

@with_etcd
async def test_every_action_runs_once_and_each_outcome_is_delivered_once(etcd: Any) -> None:
    executor = RecordingExecutor()
    replica = Replica(etcd, "c1", executor).start()
    as_principal()
    try:
        for n in range(20):
            await replica.servicer.SubmitPlan(plan(f"d{n}", tenant="acme" if n % 2 else "globex"), None)
        await wait_for(lambda: all_done(replica.store, 20), 20, "20 actions done")
        assert set(executor.calls.values()) == {1} and len(executor.calls) == 20
        assert set(replica.notifier.delivered.values()) == {1} and len(replica.notifier.delivered) == 40
        record = (await replica.store.get("d3-0")).record
        assert record.state is S.ACTION_STATE_SUCCEEDED and record.delivered_to == ["audit", "planner"]
    finally:
        await replica.stop()


@with_etcd
async def test_a_burst_of_one_tenant_does_not_starve_another(etcd: Any) -> None:
    executor = RecordingExecutor(delay=0.05)
    replica = Replica(etcd, "c1", executor, dispatch_concurrency=2, tenant_concurrency=2)
    as_principal()
    for n in range(40):
        await replica.servicer.SubmitPlan(plan(f"burst{n:02}", tenant="big"), None)
    await replica.servicer.SubmitPlan(plan("small", tenant="small"), None)
    replica.start()
    try:
        await wait_for(lambda: _done(replica.store, "small-0"), 15, "the small tenant's action")
        records, _ = await replica.store.all()
        big_done = sum(1 for v in records if v.record.tenant == "big" and v.record.terminal)
        # Served in its turn: at most a couple of the burst's actions went before it.
        assert big_done <= 4, f"{big_done} of the burst ran before the other tenant's one action"
    finally:
        await replica.stop()


@with_etcd
async def test_external_executor_claims_within_capacity_and_its_claims_are_reclaimed(etcd: Any) -> None:
    executor = RecordingExecutor()
    one, two = Replica(etcd, "c1", executor).start(), Replica(etcd, "c2", executor).start()
    try:
        await wait_for(lambda: _true(one.leadership.is_leader or two.leadership.is_leader), 10, "a leader")
        leader, follower = (one, two) if one.leadership.is_leader else (two, one)
        as_principal()
        registered = await leader.servicer.RegisterExecutor(coordinator_pb2.RegisterExecutorRequest(
            executor_id="runner-1", provider=common_pb2.PROVIDER_JENKINS, capacity=2, ttl_seconds=2,
            labels={"zone": "eu"}), None)
        for n in range(3):
            await leader.servicer.SubmitPlan(plan(f"j{n}", provider=common_pb2.PROVIDER_JENKINS), None)
        claim = coordinator_pb2.ClaimActionRequest(executor_id="runner-1", lease_id=registered.lease_id,
                                                   max_actions=5)
        with pytest.raises(NotLeader):
            await follower.servicer.ClaimAction(claim, None)
        with pytest.raises(FailedPrecondition, match="is not the lease"):
            await leader.servicer.ClaimAction(coordinator_pb2.ClaimActionRequest(
                executor_id="runner-1", lease_id=registered.lease_id + 1), None)
        await wait_for(lambda: _true(leader.dispatcher.view is not None and
                                     len(leader.dispatcher.view.actions) == 3), 5, "the leader to see 3 actions")
        got = await leader.servicer.ClaimAction(claim, None)
        assert len(got.actions) == 2  # capacity 2
        assert not executor.calls      # the built-in dispatcher leaves Jenkins to the external executor
        assert len((await leader.servicer.ClaimAction(claim, None)).actions) == 0  # at capacity: heartbeat only
        first, second = got.actions
        with pytest.raises(FailedPrecondition, match="not claimed by executor 'other'"):
            other = await leader.servicer.RegisterExecutor(coordinator_pb2.RegisterExecutorRequest(
                executor_id="other", provider=common_pb2.PROVIDER_JENKINS, capacity=1), None)
            await leader.servicer.ReportOutcome(coordinator_pb2.ReportOutcomeRequest(
                executor_id="other", lease_id=other.lease_id, action_id=first.action_id, success=True), None)
        await etcd.lease.revoke(other.lease_id)  # type: ignore[attr-defined]
        done = await follower.servicer.ReportOutcome(coordinator_pb2.ReportOutcomeRequest(
            executor_id="runner-1", lease_id=registered.lease_id, action_id=first.action_id, success=True), None)
        assert not done.duplicate
        again = await follower.servicer.ReportOutcome(coordinator_pb2.ReportOutcomeRequest(
            executor_id="runner-1", lease_id=registered.lease_id, action_id=first.action_id, success=True), None)
        assert again.duplicate

        # The executor dies holding `second`: when its lease ends the claim is taken back,
        # and with no Jenkins executor registered any more the leader runs it itself.
        await wait_for(lambda: _done(leader.store, second.action_id), 2 + TTL + 5, "the orphaned action to finish")
        record = (await leader.store.get(second.action_id)).record
        assert record.attempts == 2 and record.dispatched_by == leader.leadership.replica_id
        with pytest.raises(FailedPrecondition, match="not registered"):
            await leader.servicer.ReportOutcome(coordinator_pb2.ReportOutcomeRequest(
                executor_id="runner-1", lease_id=registered.lease_id, action_id=second.action_id), None)
        await wait_for(lambda: all_done(leader.store, 3), 10, "all three actions")
        assert executor.calls == Counter({"j1-k0": 1, "j2-k0": 1}) or executor.calls == Counter(
            {"j0-k0": 1, "j2-k0": 1}) or executor.calls == Counter({"j0-k0": 1, "j1-k0": 1})
    finally:
        await one.stop()
        await two.stop()


async def _true(value: bool) -> bool:
    return value


async def _done(store: ActionStore, action_id: str) -> bool:
    return (await store.get(action_id)).record.terminal



@with_etcd
async def test_retry_on_a_fresh_runner_drains_reruns_and_schedules_a_durable_restore(etcd: Any) -> None:
    from services.coordinator.executors.github import GitHubActionsExecutor, GitHubClient, TokenAuth
    from tests.fakes.providers import FakeGitHub

    with FakeGitHub() as gh:
        gh.add_run("acme/web", 42)
        gh.add_runner("acme/web", 5, labels=["self-hosted", "linux", "gpu-pool"])
        executor = GitHubActionsExecutor(GitHubClient.create(gh.base_url, TokenAuth(gh.token)))
        replica = Replica(etcd, "c1", executor, fresh_runner_restore_after_seconds=2).start()  # type: ignore[arg-type]
        as_principal()
        try:
            request = plan("fr", kinds=(ActionKind.RETRY_ON_FRESH_RUNNER,))
            request.plan.actions[0].parameters.update(
                {"repository": "acme/web", "run_id": "42", "runner_id": "5", "runner_label": "gpu-pool"})
            await replica.servicer.SubmitPlan(request, None)
            await wait_for(lambda: _done(replica.store, "fr-0"), 20, "the fresh-runner retry")

            assert (await replica.store.get("fr-0")).record.state is S.ACTION_STATE_SUCCEEDED
            assert "gpu-pool" not in gh.runner_labels(5)  # drained: out of rotation for now
            assert gh.count("POST", "/repos/acme/web/actions/runs/42/rerun-failed-jobs") == 1
            restores = [v.record for v in (await replica.store.all())[0] if v.record.housekeeping]
            assert len(restores) == 1, "the restore is queued durably before the runner is drained"
            restore = restores[0]
            assert restore.parameters["step"] == "restore" and restore.not_before > time.time()
            assert restore.state is S.ACTION_STATE_PENDING  # scheduled, not yet due

            await wait_for(lambda: _done(replica.store, restore.action_id), 20, "the runner's restore")
            assert "gpu-pool" in gh.runner_labels(5)  # back in rotation
            assert gh.count("POST", "/repos/acme/web/actions/runs/42/rerun-failed-jobs") == 1
        finally:
            await replica.stop()
