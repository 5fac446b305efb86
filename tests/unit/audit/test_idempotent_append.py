"""Idempotent Append: a key a tenant already used answers the existing entry, never a second leaf."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.audit import merkle
from services.audit.checkpoint import KeyRing, SigningKey
from services.audit.entry import Entry, EntryKind, NewEntry
from services.audit.log import AuditLog
from services.audit.store import AuditStore, KeyClaim
from services.common.errors import AlreadyExists, InvalidArgument

from .conftest import ORIGIN, FakeClock


def outcome(
    key: str, payload: bytes = b'{"state":"SUCCEEDED"}', tenant: str = "acme", **kw: object
) -> NewEntry:
    return NewEntry("OUTCOME", tenant, "failure/1", payload, idempotency_key=key, **kw)  # type: ignore[arg-type]


def test_a_replayed_key_answers_the_first_index_and_leaf_hash(audit_log: AuditLog) -> None:
    first = audit_log.append([outcome("OUTCOME/a-1")])
    again = audit_log.append([outcome("OUTCOME/a-1")])
    assert again.indexes == first.indexes and again.leaf_hashes == first.leaf_hashes
    assert first.duplicates == [False] and again.duplicates == [True]
    assert audit_log.store.size == 1 and again.tree_size == 1
    head = audit_log.signed_tree_head()
    proof = audit_log.inclusion_proof(index=again.indexes[0])
    assert merkle.verify_inclusion(
        again.leaf_hashes[0], again.indexes[0], 1, proof.hashes, head.checkpoint.root_hash
    )


def test_the_key_is_not_in_the_leaf(audit_log: AuditLog, store: AuditStore) -> None:
    keyed = audit_log.append([outcome("OUTCOME/a-1")])
    view = audit_log.get_entry(keyed.indexes[0])
    assert b"OUTCOME/a-1" not in view.canonical
    plain = Entry(EntryKind.OUTCOME, "acme", "failure/1", view.time_us, "plain", b'{"state":"SUCCEEDED"}')
    assert plain.leaf_hash() == keyed.leaf_hashes[0]
    assert store.check_integrity() == []


def test_the_same_key_with_other_content_is_refused_naming_the_field(audit_log: AuditLog) -> None:
    audit_log.append([outcome("OUTCOME/a-1")])
    with pytest.raises(AlreadyExists, match=r"entries\[1\]\.idempotency_key: 'OUTCOME/a-1' was already used"):
        audit_log.append([outcome("OUTCOME/b-1"), outcome("OUTCOME/a-1", b'{"state":"FAILED"}')])
    assert audit_log.store.size == 1  # the whole batch was refused, b-1 included
    for changed in (
        NewEntry("ACTION", "acme", "failure/1", b'{"state":"SUCCEEDED"}', idempotency_key="OUTCOME/a-1"),
        NewEntry("OUTCOME", "acme", "failure/2", b'{"state":"SUCCEEDED"}', idempotency_key="OUTCOME/a-1"),
        outcome("OUTCOME/a-1", sensitive=True),
    ):
        with pytest.raises(AlreadyExists, match=r"entries\[0\]\.idempotency_key"):
            audit_log.append([changed])
    assert audit_log.store.size == 1


def test_keys_are_scoped_per_tenant(audit_log: AuditLog) -> None:
    a = audit_log.append([outcome("k", tenant="acme")])
    b = audit_log.append([outcome("k", tenant="globex", payload=b"other")])
    assert a.indexes == [0] and b.indexes == [1] and b.duplicates == [False]


def test_no_key_means_no_idempotency(audit_log: AuditLog) -> None:
    audit_log.append([outcome(""), outcome("")])
    assert audit_log.store.size == 2


def test_a_key_twice_in_one_batch_is_one_entry(audit_log: AuditLog) -> None:
    result = audit_log.append([outcome("k"), outcome("other"), outcome("k")])
    assert result.indexes == [0, 1, 0] and result.duplicates == [False, False, True]
    assert result.leaf_hashes[0] == result.leaf_hashes[2] and audit_log.store.size == 2
    with pytest.raises(AlreadyExists, match=r"entries\[1\]\.idempotency_key"):
        audit_log.append([outcome("n"), outcome("n", b"different")])
    assert audit_log.store.size == 2


def test_a_sensitive_replay_is_not_sealed_again_and_survives_erasure(
    audit_log: AuditLog, store: AuditStore
) -> None:
    first = audit_log.append([outcome("d-1", b"secret log excerpt", sensitive=True)])
    again = audit_log.append([outcome("d-1", b"secret log excerpt", sensitive=True)])
    assert again.indexes == first.indexes and len(store.data_keys_of("acme", "failure/1")) == 1
    audit_log.erase("acme", "failure/1", "GDPR art. 17")
    with store.db.read() as conn:
        digests = conn.execute("SELECT request_digest FROM idempotency_keys").fetchall()
    assert [row[0] for row in digests] == [None]  # no hash of the erased plaintext is left behind
    # After erasure the content cannot be compared any more: a replay answers the erased entry.
    replay = audit_log.append([outcome("d-1", b"secret log excerpt", sensitive=True)])
    assert replay.indexes == first.indexes and replay.duplicates == [True]
    assert audit_log.get_entry(first.indexes[0]).erased


def test_an_oversized_key_is_invalid_naming_the_field(audit_log: AuditLog) -> None:
    with pytest.raises(InvalidArgument, match=r"entries\[0\]\.idempotency_key: idempotency_key is 257 bytes"):
        audit_log.append([outcome("k" * 257)])
    assert audit_log.store.size == 0


def test_keys_survive_a_restart(tmp_path: Path, signing_key: SigningKey) -> None:
    path = tmp_path / "audit.db"
    store = AuditStore.open(path)
    first = AuditLog(store, KeyRing([signing_key]), ORIGIN, clock=FakeClock()).append([outcome("k")])
    store.close()
    store = AuditStore.open(path)
    try:
        again = AuditLog(store, KeyRing([signing_key]), ORIGIN, clock=FakeClock()).append([outcome("k")])
        assert again.indexes == first.indexes and again.leaf_hashes == first.leaf_hashes and store.size == 1
    finally:
        store.close()


def test_concurrent_appends_of_one_key_make_one_entry(audit_log: AuditLog) -> None:
    answers: list[int] = []
    barrier = threading.Barrier(8)

    def append() -> None:
        barrier.wait()
        answers.extend(audit_log.append([outcome("race")]).indexes)

    threads = [threading.Thread(target=append) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert answers == [0] * 8 and audit_log.store.size == 1


def test_store_claims_answer_the_existing_entry(store: AuditStore) -> None:
    entry = Entry(EntryKind.PLAN, "acme", "failure/9", 1, "plain", b"p")
    claim = KeyClaim("acme", "PLAN/p-9", b"d" * 32)
    [first] = store.append_claimed([(entry, claim)])
    assert store.claimed([claim]) == {("acme", "PLAN/p-9")}
    [again] = store.append_claimed([(None, claim)])
    assert (again.index, again.leaf_hash, again.duplicate) == (first.index, first.leaf_hash, True)
    with pytest.raises(AlreadyExists):
        store.append_claimed([(entry, KeyClaim("acme", "PLAN/p-9", b"e" * 32))])
    assert store.size == 1 and store.append_batch([entry]) == [1]
