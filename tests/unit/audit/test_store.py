"""The store's proofs equal the reference implementation's; appends are atomic and survive a crash."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from services.audit import merkle
from services.audit.entry import PLAIN, Entry, EntryKind
from services.audit.store import AuditStore, EntryQuery
from services.common.errors import InvalidArgument, NotFound


def make_entry(i: int, tenant: str = "acme", kind: EntryKind = EntryKind.ACTION, size: int = 16) -> Entry:
    return Entry(kind, tenant, f"failure/{i % 7}", 1_700_000_000_000_000 + i, PLAIN, (b"%d:" % i).ljust(size, b"x"))


def test_store_proofs_equal_reference_for_every_size(store: AuditStore) -> None:
    entries = [make_entry(i) for i in range(130)]
    canon = [e.canonical() for e in entries]
    # Uneven batches, so subtrees are completed across batch boundaries.
    position = 0
    for batch in (1, 2, 5, 1, 9, 16, 31, 64, 1):
        store.append_batch(entries[position : position + batch])
        position += batch
    assert store.size == 130
    for size in range(0, 131):
        assert store.root_hash(size) == merkle.root_hash(canon[:size])
    for size in (1, 2, 3, 7, 8, 9, 63, 64, 65, 100, 127, 128, 129, 130):
        for index in {0, size // 2, size - 1, (size * 7) // 11}:
            assert store.inclusion_proof(index, size) == merkle.inclusion_proof(canon, index, size)
        for old in {0, 1, size // 3, size - 1, size}:
            assert store.consistency_proof(old, size) == merkle.consistency_proof(canon, old, size)


def test_lookups(store: AuditStore) -> None:
    entries = [make_entry(i, tenant="acme" if i % 2 else "globex", kind=EntryKind.PLAN if i % 3 else EntryKind.OUTCOME)
               for i in range(40)]
    store.append_batch(entries)
    item = store.entry(17)
    assert item.entry == entries[17] and item.leaf_hash == entries[17].leaf_hash() and not item.erased
    assert store.index_of_leaf(entries[23].leaf_hash()) == 23
    with pytest.raises(NotFound):
        store.index_of_leaf(b"\x00" * 32)
    with pytest.raises(NotFound, match="audit entry 40"):
        store.entry(40)
    found = store.find_entries(EntryQuery(tenant_id="acme", subject="failure/3"))
    assert [f.index for f in found] == [i for i in range(40) if i % 2 and i % 7 == 3]
    outcomes = store.find_entries(EntryQuery(kinds=(EntryKind.OUTCOME,), since_us=entries[10].time_us,
                                             until_us=entries[30].time_us))
    assert [f.index for f in outcomes] == [i for i in range(10, 30) if i % 3 == 0]
    assert [e.index for e in store.entries_range(5, 9)] == [5, 6, 7, 8]


def test_size_preconditions(store: AuditStore) -> None:
    store.append_batch([make_entry(i) for i in range(64)])
    with pytest.raises(InvalidArgument, match=r"tree_size 90 is beyond the log \(size 64\)"):
        store.inclusion_proof(3, 90)
    with pytest.raises(InvalidArgument, match="old_size 10 is larger than new_size 5"):
        store.consistency_proof(10, 5)
    with pytest.raises(InvalidArgument) as err:
        store.inclusion_proof(64, 64)
    assert err.value.field == "index"


def test_failed_batch_leaves_log_unchanged(store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.append_batch([make_entry(i) for i in range(10)])
    root = store.root_hash()
    bad = [make_entry(10), Entry(EntryKind.ACTION, "acme", "s", -5, PLAIN, b"")]
    with pytest.raises(InvalidArgument, match="time_us"):
        store.append_batch(bad)
    assert store.size == 10 and store.root_hash() == root
    # A failure inside the transaction (here: the tree-node insert) rolls back the entries too.
    original = store.db.transaction

    def failing_transaction():  # type: ignore[no-untyped-def]
        class Wrapper:
            def __enter__(self):  # type: ignore[no-untyped-def]
                self.inner = original()
                conn = self.inner.__enter__()
                conn.execute("CREATE TEMP TRIGGER IF NOT EXISTS boom BEFORE INSERT ON tree_nodes "
                             "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
                return conn

            def __exit__(self, *exc):  # type: ignore[no-untyped-def]
                return self.inner.__exit__(*exc)
        return Wrapper()

    monkeypatch.setattr(store.db, "transaction", failing_transaction)
    with pytest.raises(Exception, match="disk on fire"):
        store.append_batch([make_entry(i) for i in range(10, 15)])
    monkeypatch.setattr(store.db, "transaction", original)
    with store.db.transaction() as conn:
        conn.execute("DROP TRIGGER IF EXISTS temp.boom")
    assert store.size == 10 and store.root_hash() == root
    assert len(store.entries_range(0, 10)) == 10
    store.append_batch([make_entry(i) for i in range(10, 15)])
    assert store.check_integrity() == []


def _append_forever(path: str) -> None:
    store = AuditStore.open(path)
    i = 0
    while True:
        store.append_batch([make_entry(i + j, size=200) for j in range(37)])
        i += 37


def test_killed_writer_leaves_a_log_that_verifies(tmp_path: Path) -> None:
    path = str(tmp_path / "crash.db")
    AuditStore.open(path).close()
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_append_forever, args=(path,))
    child.start()
    deadline = time.monotonic() + 10
    try:
        # Kill it mid-flight once it has written a few batches.
        while time.monotonic() < deadline:
            time.sleep(0.2)
            probe = AuditStore.open(path)
            size = probe.size
            probe.close()
            if size >= 37 * 3:
                break
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join(5)
    reopened = AuditStore.open(path)
    assert reopened.size % 37 == 0 and reopened.size >= 37 * 3, "a batch was half-written"
    assert reopened.check_integrity() == []
    canon = [item.entry.canonical() for item in reopened.entries_range(0, reopened.size)]
    assert reopened.root_hash() == merkle.root_hash(canon)
    reopened.append_batch([make_entry(10**6)])
    assert reopened.check_integrity() == []
    reopened.close()


def test_reopen_continues_the_same_tree(tmp_path: Path) -> None:
    path = tmp_path / "reopen.db"
    first = AuditStore.open(path)
    first.append_batch([make_entry(i) for i in range(21)])
    first.close()
    second = AuditStore.open(path)
    second.append_batch([make_entry(i) for i in range(21, 50)])
    canon = [make_entry(i).canonical() for i in range(50)]
    assert second.root_hash() == merkle.root_hash(canon)
    assert second.consistency_proof(21, 50) == merkle.consistency_proof(canon, 21, 50)
    second.close()


def test_leaves_are_read_from_entries_not_repeated_as_nodes(store: AuditStore) -> None:
    entries = [make_entry(i) for i in range(45)]
    store.append_batch(entries)
    canon = [e.canonical() for e in entries]
    with store.db.transaction() as conn:
        assert conn.execute("SELECT COUNT(*) FROM tree_nodes WHERE node_key % 2 = 0").fetchone()[0] == 0
        # Files from the earlier layout also hold level-0 rows (even keys); they are never read.
        conn.executemany("INSERT INTO tree_nodes VALUES (?, ?)", [(2 * i, b"\xee" * 32) for i in range(45)])
    for size in (1, 2, 3, 44, 45):
        for index in {0, size // 2, size - 1}:
            assert store.inclusion_proof(index, size) == merkle.inclusion_proof(canon, index, size)
        assert store.consistency_proof(size // 3, size) == merkle.consistency_proof(canon, size // 3, size)
    assert AuditStore(store.db).root_hash() == merkle.root_hash(canon)  # the border, reloaded from storage


def test_leaf_hash_lookup_uses_the_prefix_index(store: AuditStore) -> None:
    entries = [make_entry(i) for i in range(20)]
    store.append_batch(entries)
    assert [store.index_of_leaf(e.leaf_hash()) for e in entries] == list(range(20))
    near_miss = entries[5].leaf_hash()[:8] + b"\x00" * 24  # same prefix, different hash
    with pytest.raises(NotFound):
        store.index_of_leaf(near_miss)
    with store.db.read() as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT MIN(idx) FROM entries "
            "WHERE substr(leaf_hash, 1, 8) = substr(?1, 1, 8) AND leaf_hash = ?1",
            (near_miss,),
        ).fetchall()
    assert any("entries_by_leaf_prefix" in row[3] for row in plan), plan


def test_a_file_from_before_the_prefix_index_is_migrated(tmp_path: Path) -> None:
    from services.audit.store import MIGRATIONS
    from services.common.sqlite import Database

    path = tmp_path / "v2.db"
    entry = make_entry(0)
    old = Database(path, MIGRATIONS[:2])
    with old.transaction() as conn:
        conn.execute("INSERT INTO entries VALUES (0, ?, ?, ?, ?, ?, ?, NULL, ?)",
                     (entry.kind.value, entry.tenant_id, entry.subject, entry.time_us, entry.payload_encoding,
                      entry.payload, entry.leaf_hash()))
        conn.execute("INSERT INTO tree_nodes VALUES (0, ?)", (entry.leaf_hash(),))
    old.close()
    store = AuditStore.open(path)
    assert store.index_of_leaf(entry.leaf_hash()) == 0
    store.append_batch([make_entry(1)])
    assert store.check_integrity() == []
    assert store.root_hash() == merkle.root_hash([entry.canonical(), make_entry(1).canonical()])
    store.close()
