"""How a service appends its decisions to the audit log (over the Audit contract), losing none.

Nothing lost: `AuditTrail.record` first writes the entry to a durable outbox (SQLite
in the calling service's own data dir, WAL + synchronous=FULL), then tries `Append`.
On success the outbox row is marked sent and the receipt returned; when the audit
service is away the row stays pending, `record` answers None ("queued, will be
sent") and the heal goes on. A background flusher (started and stopped with the
service through `Runtime.keep`) retries pending rows in the order they were
recorded, a bounded batch at a time, with exponential backoff; `record` itself
sends any older backlog first, so entries reach the log in the order they were
recorded by this service.

Nothing twice: every entry carries an idempotency key, and the audit log appends a
key at most once per tenant (a replay answers the existing index and leaf hash). So
a retry after a lost reply, a crash between Append and mark-sent, or a caller that
records the same event again (the coordinator re-delivering an outcome after a
failover) leaves one entry. The key is `kind/subject/event_id`, where `event_id` is
what identifies the event to the caller (a plan id, an action id and attempt, a
token id). With `versioned=True` the key also carries a keyed digest of the payload
(HMAC under a secret kept in the outbox): the same event recorded again with new
content (a failure reported again and re-diagnosed) is a new entry, the same content
is not. Without an `event_id` the key is random: still one entry per `record` call.

An entry the audit log refuses for good (INVALID_ARGUMENT, ALREADY_EXISTS: the key was
used for different content) is marked rejected with the reason and logged as an
error; a batch with such an entry is resent one entry at a time, so one bad entry
never holds back the rest. Sent rows keep their receipt (payload wiped) for a week,
so recording the same event again answers the receipt without a call.

Payloads are canonical JSON (sorted keys, no spaces) so the same decision always
hashes the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import secrets
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from healing_guard.audit.v1 import audit_pb2, audit_pb2_grpc
from healing_guard.common.v1 import common_pb2
from services.common.errors import StorageFull
from services.common.sqlite import Database

log = logging.getLogger(__name__)

APPEND_TIMEOUT_S = 5.0
MAX_BATCH_ENTRIES = 100
MAX_BATCH_BYTES = 1024 * 1024  # well inside the 4 MiB default message limit
RECORD_BATCHES = 2  # how much older backlog one `record` call sends before its own entry
BACKOFF_FIRST_S = 0.5
# Low on purpose: a retry is one small Append, and the backlog should drain within a few
# seconds of the audit service's return (a 30 s cap made it ~15 s on average).
BACKOFF_MAX_S = 2.0
POLL_S = 1.0
STOP_FLUSH_S = 2.0
SENT_RETENTION_S = 7 * 24 * 3600
MAX_KEY_BYTES = 256
# Statuses that will not change by sending the same entry again.
PERMANENT = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OUT_OF_RANGE}
)

PENDING, SENT, REJECTED = "pending", "sent", "rejected"

OUTBOX_MIGRATIONS = [
    """
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        payload BLOB NOT NULL,
        sensitive INTEGER NOT NULL,
        recorded_at REAL NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        done_at REAL,
        leaf_index INTEGER,
        leaf_hash BLOB,
        tree_size INTEGER,
        UNIQUE (tenant_id, idempotency_key)
    );
    CREATE INDEX outbox_by_state ON outbox(state, seq);
    CREATE TABLE outbox_secret (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        secret BLOB NOT NULL
    );
    """
]


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    tenant_id: str
    idempotency_key: str
    kind: str
    subject: str
    payload: bytes
    sensitive: bool
    state: str
    receipt: common_pb2.AuditReceipt | None

    def new_entry(self) -> audit_pb2.NewEntry:
        return audit_pb2.NewEntry(
            kind=self.kind,
            tenant_id=self.tenant_id,
            subject=self.subject,
            payload=self.payload,
            sensitive=self.sensitive,
            idempotency_key=self.idempotency_key,
        )


def _row(row: sqlite3.Row) -> OutboxRow:
    receipt = None
    if row["state"] == SENT:
        receipt = common_pb2.AuditReceipt(
            index=row["leaf_index"], leaf_hash=row["leaf_hash"], tree_size=row["tree_size"]
        )
    return OutboxRow(
        row["seq"],
        row["tenant_id"],
        row["idempotency_key"],
        row["kind"],
        row["subject"],
        bytes(row["payload"]),
        bool(row["sensitive"]),
        row["state"],
        receipt,
    )


class AuditOutbox:
    """The durable queue of entries on their way to the audit log (one SQLite file)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        with db.transaction() as conn:
            # A sent row's payload is wiped: do not leave it in free pages either.
            conn.execute("PRAGMA secure_delete=ON")
            row = conn.execute("SELECT secret FROM outbox_secret WHERE id = 1").fetchone()
            if row is None:
                conn.execute("INSERT INTO outbox_secret VALUES (1, ?)", (secrets.token_bytes(32),))
                row = conn.execute("SELECT secret FROM outbox_secret WHERE id = 1").fetchone()
        self.secret = bytes(row[0])

    @classmethod
    def open(cls, path: str | Path) -> AuditOutbox:
        return cls(Database(path, OUTBOX_MIGRATIONS))

    def close(self) -> None:
        self.db.close()

    def add(
        self, tenant_id: str, key: str, kind: str, subject: str, payload: bytes, sensitive: bool, now: float
    ) -> OutboxRow:
        """Queue an entry; a key this tenant already queued answers the row that is there."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO outbox (tenant_id, idempotency_key, kind, subject, payload, sensitive, "
                "recorded_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
                (tenant_id, key, kind, subject, payload, int(sensitive), now, PENDING),
            )
            row = conn.execute(
                "SELECT * FROM outbox WHERE tenant_id = ? AND idempotency_key = ?", (tenant_id, key)
            ).fetchone()
        found = _row(row)
        if found.state == PENDING and (found.kind, found.subject, found.payload) != (kind, subject, payload):
            log.warning(
                "audit outbox: %s %s recorded again under key %r with other content; the first is kept",
                kind,
                subject,
                key,
            )
        return found

    def get(self, seq: int) -> OutboxRow | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else _row(row)

    def pending(
        self, max_entries: int = MAX_BATCH_ENTRIES, max_bytes: int = MAX_BATCH_BYTES
    ) -> list[OutboxRow]:
        """The oldest pending rows, in order: at most `max_entries` and (after the first) `max_bytes`."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox WHERE state = ? ORDER BY seq LIMIT ?", (PENDING, max_entries)
            ).fetchall()
        batch: list[OutboxRow] = []
        size = 0
        for row in rows:
            size += len(row["payload"]) + 512
            if batch and size > max_bytes:
                break
            batch.append(_row(row))
        return batch

    def pending_count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE state = ?", (PENDING,)).fetchone()[0])

    def mark_sent(self, sent: Sequence[tuple[int, common_pb2.AuditReceipt]], now: float) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET state = ?, payload = x'', done_at = ?, attempts = attempts + 1, "
                "last_error = NULL, leaf_index = ?, leaf_hash = ?, tree_size = ? WHERE seq = ? AND state = ?",
                [(SENT, now, r.index, r.leaf_hash, r.tree_size, seq, PENDING) for seq, r in sent],
            )

    def mark_failed(self, seqs: Sequence[int], error: str) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                [(error, s) for s in seqs],
            )

    def reject(self, seq: int, error: str, now: float) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, done_at = ? "
                "WHERE seq = ?",
                (REJECTED, error, now, seq),
            )

    def prune(self, before: float) -> int:
        """Forget sent rows finished before `before` (rejected rows stay, as evidence)."""
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM outbox WHERE state = ? AND done_at < ?", (SENT, before)).rowcount

    def rows(self) -> list[OutboxRow]:
        with self.db.read() as conn:
            return [_row(row) for row in conn.execute("SELECT * FROM outbox ORDER BY seq").fetchall()]


def idempotency_key(kind: str, subject: str, event_id: str) -> str:
    """`kind/subject/event_id`; hashed when longer than the audit log's 256-byte limit."""
    key = f"{kind}/{subject}/{event_id}"
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    return f"{kind}/sha256:{hashlib.sha256(key.encode()).hexdigest()}"


class AuditTrail:
    """Records decisions in the audit log through a durable outbox (see the module docstring)."""

    def __init__(
        self,
        peers: Any,
        outbox: str | Path | AuditOutbox,
        *,
        poll_s: float = POLL_S,
        backoff_first_s: float = BACKOFF_FIRST_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self._peers = peers  # PeerClients, or anything with .stub(service, stub_class)
        self.outbox = outbox if isinstance(outbox, AuditOutbox) else AuditOutbox.open(outbox)
        self._poll_s = poll_s
        self._backoff_first_s = backoff_first_s
        self._backoff_max_s = backoff_max_s
        self._lock = asyncio.Lock()  # one Append in flight per service: in order, batched
        self._failures = 0
        self._retry_at = 0.0  # monotonic; while in the future the audit service is taken as away
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- recording ---------------------------------------------------------------------

    def key_for(self, kind: str, subject: str, payload: bytes, event_id: str | None, versioned: bool) -> str:
        event = event_id if event_id is not None else uuid.uuid4().hex
        if versioned:
            event += "/" + hmac.new(self.outbox.secret, payload, hashlib.sha256).hexdigest()[:32]
        return idempotency_key(kind, subject, event)

    async def record(
        self,
        kind: str,
        tenant: str,
        subject: str,
        payload: Mapping[str, Any],
        *,
        event_id: str | None = None,
        versioned: bool = False,
        sensitive: bool = False,
    ) -> common_pb2.AuditReceipt | None:
        """Record one decision: its receipt, or None when it is queued and will be sent.

        `event_id` names the event for the caller (the same kind, subject and event_id
        are one entry however often recorded); `versioned` lets the same event be
        recorded again with new content as a new entry.
        """
        body = canonical_json(payload)
        key = self.key_for(kind, subject, body, event_id, versioned)
        try:
            row = await asyncio.to_thread(
                self.outbox.add, tenant, key, kind, subject, body, sensitive, time.time()
            )
        except (sqlite3.Error, OSError, StorageFull):
            log.exception(
                "audit outbox unusable; appending %s for %s directly (lost if that fails)", kind, subject
            )
            entry = audit_pb2.NewEntry(
                kind=kind,
                tenant_id=tenant,
                subject=subject,
                payload=body,
                sensitive=sensitive,
                idempotency_key=key,
            )
            return await self._append_directly(entry)
        if row.state != PENDING:
            return row.receipt
        return await self._send_through(row.seq)

    async def _send_through(self, seq: int) -> common_pb2.AuditReceipt | None:
        if self._away():
            self._wake.set()
            return None  # the flusher sends it when the backoff ends
        async with self._lock:
            row = await asyncio.to_thread(self.outbox.get, seq)
            if row is None or row.state != PENDING:
                return None if row is None else row.receipt
            await self._flush_locked(through=seq, max_batches=RECORD_BATCHES)
            row = await asyncio.to_thread(self.outbox.get, seq)
        if row is not None and row.state == PENDING:
            self._wake.set()
        return None if row is None else row.receipt

    async def _append_directly(self, entry: audit_pb2.NewEntry) -> common_pb2.AuditReceipt | None:
        try:
            stub = self._peers.stub("audit", audit_pb2_grpc.AuditStub)
            reply = await stub.Append(audit_pb2.AppendRequest(entries=[entry]), timeout=APPEND_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            log.error(
                "audit append of %s for %s failed: %s %s",
                entry.kind,
                entry.subject,
                error.code().name,
                error.details(),
            )
            return None
        return common_pb2.AuditReceipt(
            index=reply.indexes[0], leaf_hash=reply.leaf_hashes[0], tree_size=reply.tree_size
        )

    # -- sending -----------------------------------------------------------------------

    def _away(self) -> bool:
        return time.monotonic() < self._retry_at

    def _failed(self) -> None:
        self._failures += 1
        delay = min(self._backoff_max_s, self._backoff_first_s * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay * random.uniform(0.8, 1.2)

    def _succeeded(self) -> None:
        self._failures = 0
        self._retry_at = 0.0

    async def flush(self, max_batches: int = 1000) -> bool:
        """Send pending entries in order; True when none is left pending."""
        async with self._lock:
            return await self._flush_locked(None, max_batches)

    async def _flush_locked(self, through: int | None, max_batches: int) -> bool:
        for _ in range(max_batches):
            if self._away():
                return False
            batch = await asyncio.to_thread(self.outbox.pending)
            if not batch or (through is not None and batch[0].seq > through):
                return True
            if not await self._send(batch):
                return False
        return False

    async def _send(self, batch: Sequence[OutboxRow]) -> bool:
        """Append one batch; True when it made progress (sent, or refused for good)."""
        try:
            stub = self._peers.stub("audit", audit_pb2_grpc.AuditStub)
            reply = await stub.Append(
                audit_pb2.AppendRequest(entries=[row.new_entry() for row in batch]), timeout=APPEND_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            reason = f"{error.code().name}: {error.details()}"
            if error.code() not in PERMANENT:
                log.warning("audit append of %d entries failed (%s); queued, will retry", len(batch), reason)
                await asyncio.to_thread(self.outbox.mark_failed, [row.seq for row in batch], reason)
                self._failed()
                return False
            if len(batch) > 1:
                # Find the entry the log refuses; the others still go, in order.
                for row in batch:
                    if not await self._send([row]):
                        return False
                return True
            row = batch[0]
            log.error(
                "audit log refused %s for %s (key %r) for good: %s",
                row.kind,
                row.subject,
                row.idempotency_key,
                reason,
            )
            await asyncio.to_thread(self.outbox.reject, row.seq, reason, time.time())
            return True
        except Exception as error:  # a channel that cannot be made (certificates, address): retry later
            log.exception("audit append of %d entries failed; queued, will retry", len(batch))
            await asyncio.to_thread(self.outbox.mark_failed, [row.seq for row in batch], repr(error))
            self._failed()
            return False
        if len(reply.indexes) != len(batch) or len(reply.leaf_hashes) != len(batch):
            log.error(
                "audit Append answered %d indexes for %d entries; will retry", len(reply.indexes), len(batch)
            )
            self._failed()
            return False
        receipts = [
            (row.seq, common_pb2.AuditReceipt(index=index, leaf_hash=leaf, tree_size=reply.tree_size))
            for row, index, leaf in zip(batch, reply.indexes, reply.leaf_hashes, strict=True)
        ]
        await asyncio.to_thread(self.outbox.mark_sent, receipts, time.time())
        self._succeeded()
        return True

    # -- the flusher (started and stopped with the service: Runtime.keep) -----------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-outbox-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            try:  # one last, bounded try; whatever is left is sent after the next start
                await asyncio.wait_for(self.flush(max_batches=10), STOP_FLUSH_S)
            except TimeoutError:
                pass
        left = await asyncio.to_thread(self.outbox.pending_count)
        if left:
            log.warning(
                "audit outbox: %d entries still pending at stop; they are sent after the next start", left
            )
        self.outbox.close()

    async def _run(self) -> None:
        last_prune = 0.0
        while True:
            wait = max(self._retry_at - time.monotonic(), self._poll_s)
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if self._away():
                    continue
                if await asyncio.to_thread(self.outbox.pending_count):
                    await self.flush(max_batches=50)
                if time.time() - last_prune > 3600:
                    last_prune = time.time()
                    await asyncio.to_thread(self.outbox.prune, last_prune - SENT_RETENTION_S)
            except asyncio.CancelledError:
                raise
            except Exception:  # the flusher must outlive any one bad round
                log.exception("audit outbox flush failed; will retry")
                self._failed()
