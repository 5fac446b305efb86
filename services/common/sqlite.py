"""The SQLite helper every service's store.py uses.

Durability first: WAL journal and `synchronous=FULL`, so a committed transaction
survives a power cut; migrations are numbered and applied once, recorded in
`PRAGMA user_version`. Nothing happens at import: a `Database` opens its file
when constructed, which only a service's bootstrap (or a test) does.

A write that finds the disk full rolls back and raises `StorageFull` (the caller gets
RESOURCE_EXHAUSTED saying so, never INTERNAL), and the store is noted in `STORAGE` as
full until a later write commits or its file system has room again; the server answers
health checks with NOT_SERVING meanwhile (`services.common.server`).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from services.common.errors import StorageFull

# A full store counts as having room again once its file system has this much free.
ROOM_TO_RECOVER_BYTES = 256 * 1024


class StorageState:
    """Which stores of this process last found their disk full (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._full: set[str] = set()

    def mark_full(self, path: str) -> None:
        with self._lock:
            self._full.add(path)

    def mark_ok(self, path: str) -> None:
        if self._full:  # the common case, a commit with nothing full, takes no lock
            with self._lock:
                self._full.discard(path)

    def full(self) -> list[str]:
        """The stores still full: each one whose file system has room again is cleared first."""
        with self._lock:
            for path in list(self._full):
                if free_bytes(path) >= ROOM_TO_RECOVER_BYTES:
                    self._full.discard(path)
            return sorted(self._full)


STORAGE = StorageState()


def free_bytes(path: str) -> int:
    try:
        stats = os.statvfs(Path(path).parent)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(error)
    return isinstance(error, OSError) and error.errno == errno.ENOSPC


class Database:
    """One SQLite file, its migrations, and a lock that serialises writers.

    A single connection is shared (check_same_thread=False) and guarded by a lock:
    services run one asyncio loop plus a few worker threads, and SQLite allows
    one writer at a time anyway.
    """

    def __init__(self, path: str | Path, migrations: Sequence[str]) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._migrate(migrations)

    def _migrate(self, migrations: Sequence[str]) -> None:
        with self._lock:
            current = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for version, script in enumerate(migrations, start=1):
                if version <= current:
                    continue
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _statements(script):
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version={version}")
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all of it commits, or none of it does (StorageFull when the disk is full)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._rollback()
                    raise
                try:
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            except (sqlite3.Error, OSError) as error:
                if not is_disk_full(error):
                    raise
                STORAGE.mark_full(self.path)
                raise StorageFull(
                    self.path,
                    f"the disk is full: {Path(self.path).name} has no room for this write "
                    f"({free_bytes(self.path)} bytes free); nothing of it was stored, retry once space is freed",
                ) from error
            STORAGE.mark_ok(self.path)

    def _rollback(self) -> None:
        """Roll back what is open (SQLite may have rolled back already, on a full disk)."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (one snapshot for all statements inside)."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3.execute runs one at a time).

    Splits at each ';' that ends a complete statement, so a ';' inside a string
    literal or a trigger body does not split it.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n\t;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \n\t;"):
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:80]!r}")
    return statements
