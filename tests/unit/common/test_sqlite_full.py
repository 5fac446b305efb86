"""A store whose disk is full (issue 15, defect 5): the write is refused as StorageFull
(RESOURCE_EXHAUSTED), rolled back whole, and the store works again once there is room.
SQLite's max_page_count makes "full" without a small file system."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from services.common import errors
from services.common.sqlite import STORAGE, Database, StorageState
from services.common.status import to_grpc_status

SCHEMA = ["CREATE TABLE rows (id INTEGER PRIMARY KEY, body BLOB NOT NULL);"]


def test_a_full_disk_is_storage_full_and_nothing_of_the_write_is_kept(tmp_path: Path) -> None:
    database = Database(tmp_path / "store.sqlite3", SCHEMA)
    with database.transaction() as conn:
        conn.execute("INSERT INTO rows (body) VALUES (?)", (b"kept",))
    pages = database._conn.execute("PRAGMA page_count").fetchone()[0]
    database._conn.execute(f"PRAGMA max_page_count={pages + 2}")
    with pytest.raises(errors.StorageFull, match="disk is full") as caught:
        with database.transaction() as conn:
            for _ in range(50):
                conn.execute("INSERT INTO rows (body) VALUES (?)", (b"x" * 4000,))
    assert caught.value.path == str(tmp_path / "store.sqlite3")
    status = to_grpc_status(caught.value)
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "disk is full" in status.details
    with database.read() as conn:
        assert [r[0] for r in conn.execute("SELECT body FROM rows")] == [b"kept"]
    database._conn.execute("PRAGMA max_page_count=1073741823")
    with database.transaction() as conn:
        conn.execute("INSERT INTO rows (body) VALUES (?)", (b"again",))
    assert str(tmp_path / "store.sqlite3") not in STORAGE.full()
    database.close()


def test_a_full_store_counts_as_full_until_its_file_system_has_room(tmp_path: Path, monkeypatch) -> None:
    import services.common.sqlite as sqlite_module

    state = StorageState()
    room = {"bytes": 0}
    monkeypatch.setattr(sqlite_module, "free_bytes", lambda path: room["bytes"])
    state.mark_full(str(tmp_path / "a.sqlite3"))
    assert state.full() == [str(tmp_path / "a.sqlite3")]
    room["bytes"] = sqlite_module.ROOM_TO_RECOVER_BYTES
    assert state.full() == []
