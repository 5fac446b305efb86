"""The audit log end to end (no gRPC): append, read, prove, erase, export, verify offline."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.audit import merkle, verify
from services.audit.checkpoint import KeyRing, SigningKey, VerificationError, sign_checkpoint, verify_signed_tree_head
from services.audit.entry import NewEntry
from services.audit.export import advance_monitor, monitor_state, verify_export
from services.audit.log import AuditLog, erasure_record
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

from .conftest import ORIGIN


def _fill(log: AuditLog, n: int = 12) -> None:
    log.append([NewEntry("DIAGNOSIS", "acme", f"failure/{i}", b'{"class":"FLAKY_TEST"}') for i in range(n)])


def test_append_returns_indexes_that_prove_against_the_signed_head(audit_log: AuditLog) -> None:
    result = audit_log.append(
        [NewEntry("PLAN", "acme", "failure/1", b"p"), NewEntry("ACTION", "acme", "failure/1", b"a")]
    )
    assert result.indexes == [0, 1] and result.tree_size == 2
    head = audit_log.signed_tree_head()
    for index, leaf in zip(result.indexes, result.leaf_hashes, strict=True):
        proof = audit_log.inclusion_proof(index=index)
        assert merkle.verify_inclusion(leaf, index, head.checkpoint.tree_size, proof.hashes, head.checkpoint.root_hash)
    by_hash = audit_log.inclusion_proof(leaf_hash=result.leaf_hashes[1])
    assert by_hash.index == 1
    view = audit_log.get_entry(1)
    assert view.payload == b"a" and view.kind == "ACTION" and merkle.leaf_hash(view.canonical) == view.leaf_hash


def test_heads_are_consistent_over_time(audit_log: AuditLog) -> None:
    _fill(audit_log, 5)
    first = audit_log.signed_tree_head()
    assert audit_log.signed_tree_head().note == first.note  # same size, same head
    _fill(audit_log, 9)
    second = audit_log.signed_tree_head()
    proof = audit_log.consistency_proof(first.checkpoint.tree_size)
    assert merkle.verify_consistency(5, 14, first.checkpoint.root_hash, second.checkpoint.root_hash, proof.hashes)


def test_erasure_makes_payload_unreadable_and_tree_still_verifies(audit_log: AuditLog) -> None:
    _fill(audit_log, 3)
    secret = audit_log.append(
        [NewEntry("DIAGNOSIS", "acme", "user/alice", b"log excerpt with alice@example.com", True)]
    )
    index = secret.indexes[0]
    view = audit_log.get_entry(index)
    assert view.payload == b"log excerpt with alice@example.com" and not view.erased
    stored = audit_log.store.entry(index).entry
    assert b"alice" not in stored.payload and stored.payload_encoding == "aes-256-gcm"
    head_before = audit_log.signed_tree_head()
    result = audit_log.erase("acme", "user/alice", "GDPR art. 17 request 7")
    assert result.entries_erased == 1
    erased = audit_log.get_entry(index)
    assert erased.erased and erased.payload == b"" and erased.leaf_hash == view.leaf_hash
    record = audit_log.get_entry(result.erasure_index)
    assert record.kind == "ERASURE" and erasure_record(record)["entries_erased"] == 1
    head = audit_log.signed_tree_head()
    proof = audit_log.inclusion_proof(index=index)
    assert merkle.verify_inclusion(
        view.leaf_hash, index, head.checkpoint.tree_size, proof.hashes, head.checkpoint.root_hash
    )
    cons = audit_log.consistency_proof(head_before.checkpoint.tree_size)
    assert merkle.verify_consistency(cons.old_size, cons.new_size, head_before.checkpoint.root_hash,
                                     head.checkpoint.root_hash, cons.hashes)
    assert audit_log.store.check_integrity() == []
    with pytest.raises(NotFound):
        audit_log.erase("acme", "user/nobody", "r")
    with pytest.raises(FailedPrecondition, match="already erased"):
        audit_log.erase("acme", "user/alice", "again")


def test_bad_requests_name_the_field(audit_log: AuditLog) -> None:
    _fill(audit_log, 64)
    with pytest.raises(InvalidArgument, match=r"tree_size 90 is beyond the log \(size 64\)"):
        audit_log.inclusion_proof(index=3, tree_size=90)
    with pytest.raises(InvalidArgument, match="old_size 70 is larger than new_size 64"):
        audit_log.consistency_proof(70)
    with pytest.raises(InvalidArgument) as err:
        audit_log.append([NewEntry("PLAN", "acme", "s", b""), NewEntry("NOPE", "acme", "s", b"")])
    assert err.value.field == "entries[1].kind"
    with pytest.raises(InvalidArgument) as err:
        audit_log.append([NewEntry("ERASURE", "acme", "s", b"")])
    assert audit_log.store.size == 64  # nothing of a refused batch was written


def test_export_verifies_offline_and_monitor_proves_consistency(audit_log: AuditLog, tmp_path: Path) -> None:
    _fill(audit_log, 10)
    first = json.loads(audit_log.export_range(2, 6))
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(first["public_keys"]))
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(first))
    state = tmp_path / "state.json"
    assert verify.main([str(export_file), "--keys", str(keys_file), "--monitor", str(state)]) == 0
    _fill(audit_log, 7)
    second = json.loads(audit_log.export_range(0, 17, consistency_from=10))
    export_file.write_text(json.dumps(second))
    assert verify.main([str(export_file), "--keys", str(keys_file), "--monitor", str(state)]) == 0
    assert json.loads(state.read_text())["tree_size"] == 17
    # A fork: another log with different history signed by the same key.
    forked = AuditLog(audit_log.store.__class__.open(tmp_path / "fork.db"), audit_log.keys, ORIGIN)
    forked.append([NewEntry("PLAN", "evil", f"x/{i}", b"") for i in range(20)])
    export_file.write_text(forked.export_range(0, 1, consistency_from=17))
    assert verify.main([str(export_file), "--keys", str(keys_file), "--monitor", str(state)]) == 1
    # An older head is a rollback.
    export_file.write_text(json.dumps(first))
    assert verify.main([str(export_file), "--keys", str(keys_file), "--monitor", str(state)]) == 1
    assert verify.main([str(tmp_path / "missing.json")]) == 2


def test_a_tenant_scoped_export_holds_only_that_tenant_and_still_verifies(audit_log: AuditLog) -> None:
    audit_log.append([NewEntry("PLAN", "acme" if i % 3 else "globex", f"failure/{i}", b"{}") for i in range(9)])
    doc = json.loads(audit_log.export_range(0, 9, tenant_id="globex"))
    assert [e["index"] for e in doc["entries"]] == [0, 3, 6]
    assert verify_export(doc).entries_verified == 3
    assert len(json.loads(audit_log.export_range(0, 9))["entries"]) == 9


def test_verifier_cli_runs_as_a_module(audit_log: AuditLog, tmp_path: Path) -> None:
    _fill(audit_log, 4)
    export_file = tmp_path / "export.json"
    export_file.write_text(audit_log.export_range(0, 4))
    ok = subprocess.run([sys.executable, "-m", "services.audit.verify", str(export_file)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 4 entries")
    doc = json.loads(export_file.read_text())
    doc["entries"][2]["subject"] = "failure/999"
    export_file.write_text(json.dumps(doc))
    bad = subprocess.run([sys.executable, "-m", "services.audit.verify", str(export_file)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "entry 2" in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "services.audit.verify"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2


def _export_for_tampering() -> tuple[str, list]:
    import tempfile

    from services.audit.store import AuditStore

    from .conftest import FakeClock

    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore.open(Path(tmp) / "t.db")
        log = AuditLog(store, KeyRing([SigningKey.from_seed(ORIGIN, b"\x07" * 32)]), ORIGIN, clock=FakeClock())
        log.append([NewEntry("ACTION", "acme", f"failure/{i}", b'{"action":"RETRY"}', i % 3 == 0) for i in range(11)])
        text = log.export_range(0, 11)
        keys = log.keys.verifiers()
        store.close()
    return text, keys


EXPORT_TEXT, EXPORT_KEYS = _export_for_tampering()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**9), st.integers(1, 255))
def test_flipping_any_byte_of_the_export_is_detected(position: int, xor: int) -> None:
    raw = bytearray(EXPORT_TEXT.encode("utf-8"))
    i = position % len(raw)
    raw[i] ^= xor
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return  # unreadable: a verifier cannot be fooled by it either
    original = json.loads(EXPORT_TEXT)
    if doc == original:
        return  # the flip hit insignificant whitespace or an equivalent escape
    if {k: v for k, v in doc.items() if k != "public_keys"} == {
        k: v for k, v in original.items() if k != "public_keys"
    }:
        return  # embedded keys are a convenience; the trusted keys come from elsewhere
    with pytest.raises(VerificationError):
        verify_export(doc, EXPORT_KEYS)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10), st.sampled_from(["payload", "leaf_hash", "inclusion_proof", "payload_digest"]),
       st.integers(0, 10**6), st.integers(0, 7))
def test_flipping_a_bit_of_a_stored_entry_or_hash_is_detected(which: int, part: str, where: int, bit: int) -> None:
    import base64

    doc = json.loads(EXPORT_TEXT)
    item = doc["entries"][which]
    if part == "payload":
        data = bytearray(base64.b64decode(item["payload"]))
        if not data:
            return
        data[where % len(data)] ^= 1 << bit
        item["payload"] = base64.b64encode(bytes(data)).decode()
    elif part == "inclusion_proof":
        proof = item["inclusion_proof"]
        h = bytearray(bytes.fromhex(proof[where % len(proof)]))
        h[where % 32] ^= 1 << bit
        proof[where % len(proof)] = h.hex()
    else:
        h = bytearray(bytes.fromhex(item[part]))
        h[where % 32] ^= 1 << bit
        item[part] = h.hex()
    with pytest.raises(VerificationError):
        verify_export(doc, EXPORT_KEYS)


def test_export_is_verified_against_trusted_keys_not_embedded_ones(audit_log: AuditLog) -> None:
    _fill(audit_log, 3)
    doc = json.loads(audit_log.export_range(0, 3))
    verify_export(doc, audit_log.keys.verifiers())
    impostor = SigningKey.from_seed(ORIGIN, b"\x09" * 32)
    real = verify_signed_tree_head(doc["checkpoint"], audit_log.keys.verifiers()).checkpoint
    doc["checkpoint"] = sign_checkpoint(real, impostor).note
    doc["public_keys"] = [impostor.verifier.encode()]
    verify_export(doc)  # self-consistent with its own embedded key...
    with pytest.raises(VerificationError, match="trusted key"):
        verify_export(doc, audit_log.keys.verifiers())  # ...but not signed by the log


def test_monitor_state_rejects_forks_with_a_readable_reason(audit_log: AuditLog) -> None:
    _fill(audit_log, 4)
    keys = audit_log.keys.verifiers()
    state, _ = advance_monitor(None, json.loads(audit_log.export_range(0, 1)), keys)
    _fill(audit_log, 2)
    doc = json.loads(audit_log.export_range(0, 1, consistency_from=4))
    doc["consistency"]["proof"][0] = "00" * 32
    with pytest.raises(VerificationError, match="consistency proof from size 4 to 6"):
        advance_monitor(state, doc, keys)


def test_a_monitor_that_saw_only_the_empty_log_trusts_the_next_head_on_its_signature(audit_log: AuditLog) -> None:
    keys = audit_log.keys.verifiers()
    state = monitor_state(audit_log.signed_tree_head())
    assert state["tree_size"] == 0
    _fill(audit_log, 3)
    state, said = advance_monitor(state, json.loads(audit_log.export_range(0, 1, consistency_from=0)), keys)
    assert state["tree_size"] == 3 and "first non-empty tree head: size 3" in said


def test_heads_signed_before_rotation_still_verify(audit_log: AuditLog) -> None:
    _fill(audit_log, 2)
    old = audit_log.signed_tree_head()
    audit_log.keys.rotate(SigningKey.from_seed(ORIGIN, b"\x05" * 32))
    _fill(audit_log, 1)
    new = audit_log.signed_tree_head()
    assert new.key_id != old.key_id
    verify_signed_tree_head(old.note, audit_log.keys.verifiers())
    verify_signed_tree_head(new.note, audit_log.keys.verifiers())


def test_random_reads_match_what_was_written(audit_log: AuditLog) -> None:
    rng = random.Random(7)
    written = []
    for _ in range(5):
        batch = [NewEntry(rng.choice(["PLAN", "ACTION", "OUTCOME"]), rng.choice(["a", "b"]), f"f/{rng.randrange(5)}",
                          rng.randbytes(rng.randrange(0, 300)), rng.random() < 0.3)
                 for _ in range(rng.randrange(1, 20))]
        audit_log.append(batch)
        written.extend(batch)
    for index, new in enumerate(written):
        view = audit_log.get_entry(index)
        assert (view.kind, view.tenant_id, view.subject, view.payload) == (
            new.kind, new.tenant_id, new.subject, new.payload
        )
    listed = audit_log.list_entries(tenant_id="a", subject="f/2")
    assert [v.index for v in listed] == [i for i, n in enumerate(written) if n.tenant_id == "a" and n.subject == "f/2"]
    assert datetime.now(UTC)  # the log's own clock is injected; nothing here depends on wall time


@pytest.mark.parametrize("start_index", [2**63, 2**64 - 1])
def test_a_start_index_beyond_what_sqlite_stores_is_refused_naming_the_range(audit_log: AuditLog,
                                                                            start_index: int) -> None:
    _fill(audit_log, 2)
    with pytest.raises(InvalidArgument, match=f"start_index: must be between 0 and {2**63 - 1}, got {start_index}"):
        audit_log.list_entries("acme", start_index=start_index)
    assert audit_log.list_entries("acme", start_index=2**63 - 1) == []
