"""The audit service's tables — the only module that speaks SQL.

Tables:
  entries      one row per leaf: the fields the canonical bytes are made of, the
               sealed or plain payload, which data key sealed it, and the leaf hash.
  tree_nodes   the hash of every complete subtree above the leaves, keyed by its in-order
               position (`NodeId.storage_key`); written once, by the append that completes
               it. Level 0 (a leaf) is `entries.leaf_hash`, not repeated here: reads of
               level-0 nodes go to `entries` by index. (Files written before this layout
               also hold level-0 rows here, under even keys; they are never read.)
  tree_heads   signed tree heads (C2SP checkpoint notes) by tree size.
  data_keys    per-(tenant, subject) AES-256-GCM keys; `key` becomes NULL on erasure.
  idempotency_keys
               (tenant, idempotency key) -> the index first appended under it and the
               digest of what was asked (NULL once the entry's data key is erased);
               unique per tenant, written in the same transaction as the entry.

An append writes the entries and every subtree they complete in one transaction
(WAL, synchronous=FULL): after a crash the log is either before or after the whole
batch, and its stored hashes always agree with its entries. Roots and proofs read
O(log n) subtree hashes (see `services.audit.compact`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from services.audit import compact
from services.audit.compact import CompactRange, NodeId
from services.audit.entry import Entry, EntryKind, LogEntry, validate_entry
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.sqlite import Database

logger = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE entries (
        idx INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        time_us INTEGER NOT NULL,
        payload_encoding TEXT NOT NULL,
        payload BLOB NOT NULL,
        data_key_id INTEGER,
        leaf_hash BLOB NOT NULL
    );
    CREATE INDEX entries_by_leaf_hash ON entries(leaf_hash);
    CREATE INDEX entries_by_tenant_time ON entries(tenant_id, time_us);
    CREATE INDEX entries_by_subject ON entries(tenant_id, subject);
    CREATE TABLE tree_nodes (
        node_key INTEGER PRIMARY KEY,
        hash BLOB NOT NULL
    );
    CREATE TABLE tree_heads (
        tree_size INTEGER PRIMARY KEY,
        root_hash BLOB NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        key_name TEXT NOT NULL,
        key_id BLOB NOT NULL,
        note TEXT NOT NULL
    );
    CREATE TABLE data_keys (
        key_id INTEGER PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        key BLOB,
        created_us INTEGER NOT NULL,
        destroyed_us INTEGER,
        erasure_index INTEGER
    );
    CREATE INDEX data_keys_by_subject ON data_keys(tenant_id, subject);
    """,
    """
    CREATE TABLE idempotency_keys (
        tenant_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        idx INTEGER NOT NULL,
        request_digest BLOB,
        PRIMARY KEY (tenant_id, idempotency_key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_keys_by_idx ON idempotency_keys(idx);
    """,
    # Leaf-hash lookups through the first 8 bytes only: the index is a third the size of
    # one over whole hashes, so an append's random inserts into it dirty fewer pages;
    # `index_of_leaf` confirms the whole hash on the (rare) prefix matches.
    """
    DROP INDEX entries_by_leaf_hash;
    CREATE INDEX entries_by_leaf_prefix ON entries(substr(leaf_hash, 1, 8));
    """,
]

MAX_PAGE = 10_000


@dataclass(frozen=True)
class StoredTreeHead:
    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    key_name: str
    key_id: bytes
    note: str


@dataclass(frozen=True)
class EntryQuery:
    """Filters for `find_entries`; None means any. Time bounds are [since_us, until_us)."""

    tenant_id: str | None = None
    subject: str | None = None
    kinds: tuple[EntryKind, ...] | None = None
    since_us: int | None = None
    until_us: int | None = None
    start_index: int = 0
    limit: int = 1000


@dataclass(frozen=True)
class KeyClaim:
    """An append's idempotency key, in its tenant's scope, and the digest of what was asked."""

    tenant_id: str
    idempotency_key: str
    request_digest: bytes


class Appended(NamedTuple):  # a tuple: one is built per appended entry
    """Where one requested entry is in the log; `duplicate` when its key was already used."""

    index: int  # type: ignore[assignment]  # shadows tuple.index; renaming would change the public API
    leaf_hash: bytes
    duplicate: bool = False


@dataclass(frozen=True)
class DataKey:
    key_id: int
    tenant_id: str
    subject: str
    key: bytes | None  # None once destroyed
    erasure_index: int | None


_ENTRY_COLUMNS = (
    "e.idx, e.kind, e.tenant_id, e.subject, e.time_us, e.payload_encoding, e.payload, e.data_key_id, "
    "e.leaf_hash, (e.data_key_id IS NOT NULL AND k.key IS NULL) AS erased"
)
_ENTRY_FROM = "entries e LEFT JOIN data_keys k ON k.key_id = e.data_key_id"


def _log_entry(row: sqlite3.Row) -> LogEntry:
    entry = Entry(
        kind=EntryKind(row["kind"]),
        tenant_id=row["tenant_id"],
        subject=row["subject"],
        time_us=row["time_us"],
        payload_encoding=row["payload_encoding"],
        payload=row["payload"],
        data_key_id=row["data_key_id"],
    )
    return LogEntry(row["idx"], entry, row["leaf_hash"], bool(row["erased"]))


class AuditStore:
    """Entries, subtree hashes, tree heads and data keys of one audit log."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._append_lock = threading.Lock()
        with db.read() as conn:
            # Overwrite freed pages, so a destroyed data key does not linger in the file.
            conn.execute("PRAGMA secure_delete=ON")
            self._border = self._load_border(conn)

    @classmethod
    def open(cls, path: str | Path) -> AuditStore:
        return cls(Database(path, MIGRATIONS))

    def close(self) -> None:
        self.db.close()

    # -- the tree ----------------------------------------------------------------

    @staticmethod
    def _stored_size(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT MAX(idx) FROM entries").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def _load_border(self, conn: sqlite3.Connection) -> CompactRange:
        size = self._stored_size(conn)
        nodes = compact.range_nodes(0, size)
        found = _fetch_nodes(conn, nodes)
        return CompactRange(size, [found[n] for n in nodes])

    @property
    def size(self) -> int:
        return self._border.size

    def append_batch(self, entries: Sequence[Entry]) -> list[int]:
        """Append entries durably and atomically; returns their indexes."""
        return [item.index for item in self.append_claimed([(entry, None) for entry in entries])]

    def claimed(self, claims: Sequence[KeyClaim]) -> set[tuple[str, str]]:
        """Which of these (tenant, key) pairs were already appended (a hint: keys are never removed)."""
        found: set[tuple[str, str]] = set()
        if not claims:
            return found
        with self.db.read() as conn:
            for claim in claims:
                row = conn.execute(
                    "SELECT 1 FROM idempotency_keys WHERE tenant_id = ? AND idempotency_key = ?",
                    (claim.tenant_id, claim.idempotency_key),
                ).fetchone()
                if row is not None:
                    found.add((claim.tenant_id, claim.idempotency_key))
        return found

    def append_claimed(self, items: Sequence[tuple[Entry | None, KeyClaim | None]]) -> list[Appended]:
        """Append entries durably and atomically, at most once per (tenant, idempotency key).

        Each item is an entry and its key claim (or None). An entry whose key its tenant
        already used (earlier, or earlier in this batch) is not appended: its answer is the
        existing index and leaf hash, marked duplicate. Its entry may be None when the
        caller already knew (`claimed`). The same key with a different request digest
        raises AlreadyExists naming `entries[i].idempotency_key`, and nothing is appended.
        """
        if not items:
            raise InvalidArgument("entries", "at least one entry is required")
        for entry, _ in items:
            if entry is not None:
                validate_entry(entry)
        with self._append_lock, self.db.transaction() as conn:
            border = self._border
            if self._stored_size(conn) != border.size:
                # Another writer appended to the file: start again from what is stored.
                border = self._load_border(conn)
            border = border.copy()
            first = border.size
            answers: list[Appended] = []
            entry_rows: list[tuple[object, ...]] = []
            node_rows = []
            key_rows = []
            in_batch: dict[tuple[str, str], tuple[Appended, bytes | None]] = {}
            for position, (entry, claim) in enumerate(items):
                if claim is not None:
                    scope = (claim.tenant_id, claim.idempotency_key)
                    known = in_batch.get(scope) or _claimed_entry(conn, claim)
                    if known is not None:
                        existing, digest = known
                        if digest is not None and digest != claim.request_digest:
                            raise AlreadyExists(
                                "idempotency key",
                                claim.idempotency_key,
                                f"entries[{position}].idempotency_key: {claim.idempotency_key!r} was "
                                f"already used by tenant {claim.tenant_id!r} for a different entry "
                                f"(index {existing.index}); a retry must repeat the same kind, subject, "
                                "payload and sensitivity, "
                                "a new entry needs a new key",
                            )
                        answers.append(Appended(existing.index, existing.leaf_hash, duplicate=True))
                        continue
                if entry is None:
                    raise InvalidArgument(
                        f"entries[{position}]", "no entry to append and no earlier one under its key"
                    )
                index = first + len(entry_rows)
                leaf = entry.leaf_hash()
                entry_rows.append(
                    (
                        index,
                        entry.kind.value,
                        entry.tenant_id,
                        entry.subject,
                        entry.time_us,
                        entry.payload_encoding,
                        entry.payload,
                        entry.data_key_id,
                        leaf,
                    )
                )
                node_rows += border.append_above_leaf(leaf)
                answer = Appended(index, leaf)
                answers.append(answer)
                if claim is not None:
                    key_rows.append((claim.tenant_id, claim.idempotency_key, index, claim.request_digest))
                    in_batch[(claim.tenant_id, claim.idempotency_key)] = (answer, claim.request_digest)
            if entry_rows:
                conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", entry_rows)
                conn.executemany("INSERT INTO tree_nodes VALUES (?, ?)", node_rows)
                conn.executemany("INSERT INTO idempotency_keys VALUES (?, ?, ?, ?)", key_rows)
        # Only a committed batch moves the in-memory border.
        self._border = border
        return answers

    def _check_size(self, field: str, size: int) -> None:
        if size < 0:
            raise InvalidArgument(field, f"{field} {size} is negative; it must be >= 0")
        if size > self.size:
            raise InvalidArgument(field, f"{field} {size} is beyond the log (size {self.size})")

    def root_hash(self, tree_size: int | None = None) -> bytes:
        border = self._border
        if tree_size is None or tree_size == border.size:
            return border.root()
        self._check_size("tree_size", tree_size)
        with self.db.read() as conn:
            return compact.root_at(tree_size, lambda ids: _fetch_nodes(conn, ids))

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        self._check_size("tree_size", tree_size)
        if not 0 <= index < tree_size:
            raise InvalidArgument("index", f"index {index} is outside the tree (must be 0 <= index < {tree_size})")
        with self.db.read() as conn:
            return compact.inclusion_proof(index, tree_size, lambda ids: _fetch_nodes(conn, ids))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        self._check_size("new_size", new_size)
        if old_size < 0:
            raise InvalidArgument("old_size", f"old_size {old_size} is negative; it must be >= 0")
        if old_size > new_size:
            raise InvalidArgument("old_size", f"old_size {old_size} is larger than new_size {new_size}")
        with self.db.read() as conn:
            return compact.consistency_proof(old_size, new_size, lambda ids: _fetch_nodes(conn, ids))

    # -- entries -----------------------------------------------------------------

    def entry(self, index: int) -> LogEntry:
        with self.db.read() as conn:
            row = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM {_ENTRY_FROM} WHERE e.idx = ?", (index,)).fetchone()
        if row is None:
            raise NotFound("audit entry", str(index), f"audit entry {index} not found (log size {self.size})")
        return _log_entry(row)

    def index_of_leaf(self, leaf_hash: bytes) -> int:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT MIN(idx) FROM entries WHERE substr(leaf_hash, 1, 8) = substr(?1, 1, 8) AND leaf_hash = ?1",
                (leaf_hash,),
            ).fetchone()
        if row[0] is None:
            raise NotFound("leaf hash", leaf_hash.hex())
        return int(row[0])

    def entries_range(self, start: int, end: int) -> list[LogEntry]:
        """Entries with start <= index < end (at most 10000)."""
        if start < 0:
            raise InvalidArgument("start_index", f"start_index {start} must be >= 0")
        if end < start:
            raise InvalidArgument("end_index", f"end_index {end} is before start_index {start}")
        if end - start > MAX_PAGE:
            raise InvalidArgument("end_index", f"at most {MAX_PAGE} entries per range, asked for {end - start}")
        if end > self.size:
            raise InvalidArgument("end_index", f"end_index {end} is beyond the log (size {self.size})")
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM {_ENTRY_FROM} WHERE e.idx >= ? AND e.idx < ? ORDER BY e.idx",
                (start, end),
            ).fetchall()
        return [_log_entry(row) for row in rows]

    def find_entries(self, query: EntryQuery) -> list[LogEntry]:
        """Entries matching every given filter, by index, from query.start_index."""
        if not 1 <= query.limit <= MAX_PAGE:
            raise InvalidArgument("limit", f"limit {query.limit} must be between 1 and {MAX_PAGE}")
        if query.start_index < 0:
            raise InvalidArgument("start_index", f"start_index {query.start_index} must be >= 0")
        clauses: list[str] = ["e.idx >= ?"]
        params: list[int | str] = [query.start_index]
        if query.tenant_id is not None:
            clauses.append("e.tenant_id = ?")
            params.append(query.tenant_id)
        if query.subject is not None:
            clauses.append("e.subject = ?")
            params.append(query.subject)
        if query.kinds:
            clauses.append(f"e.kind IN ({','.join('?' * len(query.kinds))})")
            params.extend(k.value for k in query.kinds)
        if query.since_us is not None:
            clauses.append("e.time_us >= ?")
            params.append(query.since_us)
        if query.until_us is not None:
            clauses.append("e.time_us < ?")
            params.append(query.until_us)
        sql = f"SELECT {_ENTRY_COLUMNS} FROM {_ENTRY_FROM} WHERE {' AND '.join(clauses)} ORDER BY e.idx LIMIT ?"
        with self.db.read() as conn:
            rows = conn.execute(sql, (*params, query.limit)).fetchall()
        return [_log_entry(row) for row in rows]

    # -- tree heads --------------------------------------------------------------

    def save_tree_head(self, head: StoredTreeHead) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO tree_heads VALUES (?, ?, ?, ?, ?, ?)",
                (head.tree_size, head.root_hash, head.timestamp_ms, head.key_name, head.key_id, head.note),
            )

    def latest_tree_head(self) -> StoredTreeHead | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM tree_heads ORDER BY tree_size DESC LIMIT 1").fetchone()
        return None if row is None else StoredTreeHead(*row)

    def tree_head(self, tree_size: int) -> StoredTreeHead:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM tree_heads WHERE tree_size = ?", (tree_size,)).fetchone()
        if row is None:
            raise NotFound("signed tree head", str(tree_size))
        return StoredTreeHead(*row)

    # -- data keys ---------------------------------------------------------------

    def live_data_key(self, tenant_id: str, subject: str) -> DataKey | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT key_id, tenant_id, subject, key, erasure_index FROM data_keys "
                "WHERE tenant_id = ? AND subject = ? AND key IS NOT NULL ORDER BY key_id DESC LIMIT 1",
                (tenant_id, subject),
            ).fetchone()
        return None if row is None else DataKey(*row)

    def create_data_key(self, tenant_id: str, subject: str, key: bytes, created_us: int) -> DataKey:
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO data_keys (tenant_id, subject, key, created_us) VALUES (?, ?, ?, ?)",
                (tenant_id, subject, key, created_us),
            )
        return DataKey(int(cursor.lastrowid or 0), tenant_id, subject, key, None)

    def data_key(self, key_id: int) -> bytes | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT key FROM data_keys WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else row[0]

    def data_keys_of(self, tenant_id: str, subject: str) -> list[DataKey]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT key_id, tenant_id, subject, key, erasure_index FROM data_keys "
                "WHERE tenant_id = ? AND subject = ? ORDER BY key_id",
                (tenant_id, subject),
            ).fetchall()
        return [DataKey(*row) for row in rows]

    def count_sealed_entries(self, key_ids: Sequence[int]) -> int:
        if not key_ids:
            return 0
        with self.db.read() as conn:
            row = conn.execute(
                f"SELECT COUNT(*) FROM entries WHERE data_key_id IN ({','.join('?' * len(key_ids))})", tuple(key_ids)
            ).fetchone()
        return int(row[0])

    def destroy_data_keys(self, key_ids: Sequence[int], erasure_entry: Entry, destroyed_us: int) -> int:
        """Destroy the keys and append the ERASURE entry in one transaction; returns its index."""
        validate_entry(erasure_entry)
        with self._append_lock:
            border = self._border.copy()
            leaf = erasure_entry.leaf_hash()
            index = border.size
            with self.db.transaction() as conn:
                if self._stored_size(conn) != index:
                    border = self._load_border(conn)
                    index = border.size
                conn.execute(
                    f"UPDATE data_keys SET key = NULL, destroyed_us = ?, erasure_index = ? "
                    f"WHERE key_id IN ({','.join('?' * len(key_ids))})",
                    (destroyed_us, index, *key_ids),
                )
                # The request digests hash the plaintext: they go with the key.
                conn.execute(
                    f"UPDATE idempotency_keys SET request_digest = NULL WHERE idx IN "
                    f"(SELECT idx FROM entries WHERE data_key_id IN ({','.join('?' * len(key_ids))}))",
                    tuple(key_ids),
                )
                e = erasure_entry
                conn.execute(
                    "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (index, e.kind.value, e.tenant_id, e.subject, e.time_us, e.payload_encoding, e.payload, None, leaf),
                )
                conn.executemany("INSERT INTO tree_nodes VALUES (?, ?)", border.append_above_leaf(leaf))
            self._border = border
        return index

    # -- integrity ---------------------------------------------------------------

    def check_integrity(self, batch: int = 4096) -> list[str]:
        """Recompute every leaf hash and the tree from the entries; returns the problems found."""
        problems: list[str] = []
        tree = CompactRange()
        for start in range(0, self.size, batch):
            for item in self.entries_range(start, min(self.size, start + batch)):
                recomputed = item.entry.leaf_hash()
                if recomputed != item.leaf_hash:
                    problems.append(f"entry {item.index}: stored leaf hash does not match its fields")
                tree.append(recomputed)
        if tree.root() != self.root_hash():
            problems.append("the root from the entries differs from the root from stored subtree hashes")
        return problems


def _claimed_entry(conn: sqlite3.Connection, claim: KeyClaim) -> tuple[Appended, bytes | None] | None:
    row = conn.execute(
        "SELECT k.idx, k.request_digest, e.leaf_hash FROM idempotency_keys k JOIN entries e ON e.idx = k.idx "
        "WHERE k.tenant_id = ? AND k.idempotency_key = ?",
        (claim.tenant_id, claim.idempotency_key),
    ).fetchone()
    if row is None:
        return None
    return Appended(int(row[0]), bytes(row[2]), duplicate=True), None if row[1] is None else bytes(row[1])


def _fetch_nodes(conn: sqlite3.Connection, ids: Sequence[NodeId]) -> dict[NodeId, bytes]:
    """Stored hashes of these nodes: leaves from `entries`, the subtrees above from `tree_nodes`."""
    leaves = {node.index: node for node in ids if node.level == 0}
    inner = {node.storage_key: node for node in ids if node.level > 0}
    found: dict[NodeId, bytes] = {}
    for table, key_column, hash_column, wanted in (
        ("entries", "idx", "leaf_hash", leaves),
        ("tree_nodes", "node_key", "hash", inner),
    ):
        key_list = list(wanted)
        # SQLite limits the number of bound parameters per statement.
        for i in range(0, len(key_list), 500):
            chunk = key_list[i : i + 500]
            rows = conn.execute(
                f"SELECT {key_column}, {hash_column} FROM {table} "
                f"WHERE {key_column} IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for key, value in rows:
                found[wanted[key]] = value
    return found
