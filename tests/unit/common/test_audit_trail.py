"""The audit outbox: nothing recorded is lost while the audit service is away, and
nothing is appended twice when it comes back (a fake Audit stub over a real AuditLog)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from healing_guard.audit.v1 import audit_pb2
from services.audit.checkpoint import KeyRing, SigningKey
from services.audit.entry import NewEntry
from services.audit.log import AuditLog
from services.audit.store import AuditStore
from services.common import audit_trail
from services.common.audit_trail import AuditOutbox, AuditTrail, idempotency_key
from services.common.errors import HealingGuardError

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class FakeAudit:
    """Audit.Append over a real AuditLog; can be down, or lose its reply after appending."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.down = False
        self.lose_replies = 0  # append, then answer UNAVAILABLE this many times
        self.calls: list[list[str]] = []  # the idempotency keys of each Append call

    async def Append(
        self, request: audit_pb2.AppendRequest, timeout: float | None = None
    ) -> audit_pb2.AppendResponse:
        self.calls.append([e.idempotency_key for e in request.entries])
        if self.down:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")
        try:
            result = self.log.append(
                [
                    NewEntry(e.kind, e.tenant_id, e.subject, e.payload, e.sensitive, e.idempotency_key)
                    for e in request.entries
                ]
            )
        except HealingGuardError as error:
            code = (
                grpc.StatusCode.ALREADY_EXISTS
                if "already used" in error.message
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            raise rpc_error(code, error.message) from None
        if self.lose_replies:
            self.lose_replies -= 1
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "reply lost")
        return audit_pb2.AppendResponse(
            indexes=result.indexes,
            leaf_hashes=result.leaf_hashes,
            tree_size=result.tree_size,
            duplicates=result.duplicates,
        )

    def entries(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(v.kind, v.subject, json.loads(v.payload)) for v in self.log.list_entries(limit=1000)]


class FakePeers:
    def __init__(self, audit: FakeAudit) -> None:
        self.audit = audit

    def stub(self, service: str, stub_class: type) -> FakeAudit:
        assert service == "audit"
        return self.audit


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[FakeAudit]:
    store = AuditStore.open(tmp_path / "audit.sqlite3")
    key = SigningKey.from_seed("test", bytes(range(32)))
    yield FakeAudit(AuditLog(store, KeyRing([key]), "healing-guard.test/audit"))
    store.close()


def trail_of(audit: FakeAudit, path: Path) -> AuditTrail:
    return AuditTrail(FakePeers(audit), path, poll_s=0.01, backoff_first_s=0.01, backoff_max_s=0.05)


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def test_recorded_while_the_audit_is_up_returns_the_receipt(audit: FakeAudit, tmp_path: Path) -> None:
    async def scenario() -> None:
        trail = trail_of(audit, tmp_path / "outbox.sqlite3")
        receipt = await trail.record("PLAN", "acme", "failure/1", {"plan_id": "p-1"}, event_id="p-1")
        assert receipt is not None and receipt.index == 0 and receipt.tree_size == 1
        assert audit.calls == [["PLAN/failure/1/p-1"]]
        # Recording the same event again answers the stored receipt, without a call.
        again = await trail.record("PLAN", "acme", "failure/1", {"plan_id": "p-1"}, event_id="p-1")
        assert again == receipt and len(audit.calls) == 1
        await trail.stop()

    run(scenario())
    assert [e[0] for e in audit.entries()] == ["PLAN"]


def test_audit_away_queues_and_the_flusher_sends_each_once_in_order(audit: FakeAudit, tmp_path: Path) -> None:
    async def scenario() -> None:
        trail = trail_of(audit, tmp_path / "outbox.sqlite3")
        await trail.start()
        audit.down = True
        receipts = [
            await trail.record("ACTION", "acme", "failure/1", {"n": n}, event_id=f"a-{n}") for n in range(5)
        ]
        assert receipts == [None] * 5  # queued, will be sent
        assert trail.outbox.pending_count() == 5 and audit.entries() == []
        audit.down = False
        await eventually(lambda: trail.outbox.pending_count() == 0, "the outbox to drain")
        await trail.stop()

    run(scenario())
    assert [payload["n"] for _, _, payload in audit.entries()] == [0, 1, 2, 3, 4]


def test_a_record_after_an_outage_sends_the_backlog_first(audit: FakeAudit, tmp_path: Path) -> None:
    async def scenario() -> None:
        trail = trail_of(audit, tmp_path / "outbox.sqlite3")  # no flusher: record itself catches up
        audit.down = True
        assert await trail.record("OUTCOME", "acme", "failure/1", {"n": 1}, event_id="a-1") is None
        audit.down = False
        await asyncio.sleep(0.1)  # the backoff ends
        receipt = await trail.record("OUTCOME", "acme", "failure/2", {"n": 2}, event_id="a-2")
        assert receipt is not None and receipt.index == 1
        await trail.stop()

    run(scenario())
    assert [payload["n"] for _, _, payload in audit.entries()] == [1, 2]


def test_a_lost_reply_is_retried_and_deduplicated_by_the_key(audit: FakeAudit, tmp_path: Path) -> None:
    async def scenario() -> None:
        trail = trail_of(audit, tmp_path / "outbox.sqlite3")
        await trail.start()
        audit.lose_replies = 1
        assert (
            await trail.record("OUTCOME", "acme", "failure/1", {"state": "SUCCEEDED"}, event_id="a-1") is None
        )
        await eventually(lambda: trail.outbox.pending_count() == 0, "the retry")
        [row] = trail.outbox.rows()
        assert row.receipt is not None and row.receipt.index == 0
        await trail.stop()

    run(scenario())
    assert len(audit.calls) == 2 and len(audit.entries()) == 1


def test_a_crash_between_append_and_mark_sent_appends_once(
    audit: FakeAudit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "outbox.sqlite3"

    def crash(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed between Append and mark-sent")

    async def before_the_crash() -> None:
        trail = trail_of(audit, path)
        monkeypatch.setattr(trail.outbox, "mark_sent", crash)
        with pytest.raises(SystemExit):
            await trail.record("OUTCOME", "acme", "failure/1", {"state": "SUCCEEDED"}, event_id="a-1")
        trail.outbox.close()

    async def after_the_restart() -> None:
        trail = trail_of(audit, path)
        assert trail.outbox.pending_count() == 1  # the outbox does not know it was appended
        await trail.start()
        await eventually(lambda: trail.outbox.pending_count() == 0, "the resend after the restart")
        # The coordinator delivering the outcome again after its own restart: still one entry.
        again = await trail.record("OUTCOME", "acme", "failure/1", {"state": "SUCCEEDED"}, event_id="a-1")
        assert again is not None and again.index == 0
        await trail.stop()

    run(before_the_crash())
    assert len(audit.entries()) == 1
    run(after_the_restart())
    assert len(audit.calls) == 2 and len(audit.entries()) == 1


def test_a_second_outbox_recording_the_same_event_is_deduplicated_by_the_log(
    audit: FakeAudit, tmp_path: Path
) -> None:
    """A new coordinator leader (another replica, another outbox) re-delivers an outcome."""

    async def scenario() -> None:
        first = trail_of(audit, tmp_path / "replica-1.sqlite3")
        second = trail_of(audit, tmp_path / "replica-2.sqlite3")
        a = await first.record("OUTCOME", "acme", "failure/1", {"state": "SUCCEEDED"}, event_id="a-1")
        b = await second.record("OUTCOME", "acme", "failure/1", {"state": "SUCCEEDED"}, event_id="a-1")
        assert a is not None and b is not None and (a.index, a.leaf_hash) == (b.index, b.leaf_hash)
        await first.stop()
        await second.stop()

    run(scenario())
    assert len(audit.entries()) == 1


def test_an_entry_refused_for_good_does_not_hold_back_the_rest(audit: FakeAudit, tmp_path: Path) -> None:
    async def scenario() -> None:
        trail = trail_of(audit, tmp_path / "outbox.sqlite3")
        audit.down = True
        await trail.record("PLAN", "acme", "failure/1", {"n": 1}, event_id="p-1")
        await trail.record("NOT_A_KIND", "acme", "failure/2", {"n": 2}, event_id="x")
        await trail.record("PLAN", "acme", "failure/3", {"n": 3}, event_id="p-3")
        audit.down = False
        await asyncio.sleep(0.1)
        assert await trail.flush()
        states = [(row.kind, row.state) for row in trail.outbox.rows()]
        assert states == [("PLAN", "sent"), ("NOT_A_KIND", "rejected"), ("PLAN", "sent")]
        assert (
            "kind"
            in (
                trail.outbox.db._conn.execute(
                    "SELECT last_error FROM outbox WHERE state = 'rejected'"
                ).fetchone()[0]
            )
        )
        await trail.stop()

    run(scenario())
    assert [payload["n"] for _, _, payload in audit.entries()] == [1, 3]


def test_versioned_events_are_new_entries_only_when_the_content_changes(
    audit: FakeAudit, tmp_path: Path
) -> None:
    async def scenario() -> None:
        trail = trail_of(audit, tmp_path / "outbox.sqlite3")
        one = await trail.record(
            "DIAGNOSIS", "acme", "f-1", {"class": "FLAKY_TEST"}, event_id="f-1", versioned=True
        )
        same = await trail.record(
            "DIAGNOSIS", "acme", "f-1", {"class": "FLAKY_TEST"}, event_id="f-1", versioned=True
        )
        other = await trail.record(
            "DIAGNOSIS", "acme", "f-1", {"class": "NETWORK"}, event_id="f-1", versioned=True
        )
        assert one is not None and same is not None and other is not None
        assert one.index == same.index == 0 and other.index == 1
        # The version is a keyed digest: the payload's plain hash is not in the key.
        keys = [row.idempotency_key for row in trail.outbox.rows()]
        assert all(key.startswith("DIAGNOSIS/f-1/f-1/") for key in keys)
        await trail.stop()

    run(scenario())


def test_sent_payloads_are_wiped_from_the_outbox(audit: FakeAudit, tmp_path: Path) -> None:
    async def scenario() -> None:
        trail = trail_of(audit, tmp_path / "outbox.sqlite3")
        await trail.record("DIAGNOSIS", "acme", "f-1", {"evidence": "secret"}, event_id="f-1", sensitive=True)
        [row] = trail.outbox.rows()
        assert row.state == "sent" and row.payload == b""
        await trail.stop()

    run(scenario())


def test_batches_are_bounded_and_keys_fit_the_log() -> None:
    long_key = idempotency_key("OUTCOME", "s" * 300, "a-1")
    assert len(long_key.encode()) <= 256 and long_key.startswith("OUTCOME/sha256:")
    assert idempotency_key("PLAN", "failure/1", "p-1") == "PLAN/failure/1/p-1"


def test_a_batch_never_exceeds_its_byte_bound(tmp_path: Path) -> None:
    outbox = AuditOutbox.open(tmp_path / "outbox.sqlite3")
    for n in range(30):
        outbox.add("acme", f"k{n}", "PLAN", "s", b"x" * 60_000, False, 0.0)
    batch = outbox.pending(max_entries=100, max_bytes=audit_trail.MAX_BATCH_BYTES)
    assert 1 <= len(batch) < 30 and [row.seq for row in batch] == list(range(1, len(batch) + 1))
    assert sum(len(row.payload) for row in batch) <= audit_trail.MAX_BATCH_BYTES
    outbox.close()


def test_after_a_long_outage_the_backlog_drains_within_seconds_of_the_audit_returning(
    audit: FakeAudit, tmp_path: Path
) -> None:
    # Issue 15, item 10: with the default backoff capped at 30 s, the outboxes were sent
    # about 15 s after the audit service came back.
    async def scenario() -> None:
        trail = AuditTrail(FakePeers(audit), tmp_path / "outbox.sqlite3", poll_s=0.05)  # default backoff
        await trail.start()
        audit.down = True
        assert await trail.record("PLAN", "acme", "failure/1", {"n": 1}, event_id="p-1") is None
        for _ in range(20):  # the failures of a long outage
            trail._failed()
        audit.down = False
        # At most 2.4 s with the cap (2 s, jitter 1.2); 24 to 36 s before. 10 s holds on a loaded machine.
        await eventually(lambda: trail.outbox.pending_count() == 0, "the backlog to drain", timeout=10.0)
        await trail.stop()

    run(scenario())
    assert [e[0] for e in audit.entries()] == ["PLAN"]
