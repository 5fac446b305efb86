"""Canonical bytes are exactly as documented, and bad entries are refused naming the field."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.audit import merkle
from services.audit.entry import (
    AES_256_GCM,
    ENTRY_KINDS,
    MAX_PAYLOAD_BYTES,
    MAX_SUBJECT_BYTES,
    MAX_TENANT_BYTES,
    PLAIN,
    Entry,
    EntryKind,
    NewEntry,
    validate_entry,
    validate_new_entry,
)
from services.common.errors import InvalidArgument


def test_canonical_bytes_follow_the_documented_layout() -> None:
    entry = Entry(EntryKind.PLAN, "acme", "failure/42", 1_700_000_000_000_001, PLAIN, b'{"a":1}')

    def field(x: bytes) -> bytes:
        return struct.pack(">I", len(x)) + x

    expected = (
        b"hg-audit-entry/v1" + field(b"PLAN") + field(b"acme") + field(b"failure/42")
        + struct.pack(">Q", 1_700_000_000_000_001) + field(b"plain")
        + field(hashlib.sha256(b'{"a":1}').digest()) + field(b'{"a":1}')
    )
    assert entry.canonical() == expected
    assert entry.leaf_hash() == hashlib.sha256(b"\x00" + expected).digest()


@given(
    st.sampled_from(list(EntryKind)), st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20),
    st.integers(0, 2**62), st.binary(max_size=64),
    st.sampled_from(list(EntryKind)), st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20),
    st.integers(0, 2**62), st.binary(max_size=64),
)
def test_different_entries_have_different_canonical_bytes(k1, t1, s1, ts1, p1, k2, t2, s2, ts2, p2) -> None:  # type: ignore[no-untyped-def]
    a = Entry(k1, t1, s1, ts1, PLAIN, p1)
    b = Entry(k2, t2, s2, ts2, PLAIN, p2)
    assert (a.canonical() == b.canonical()) == (a == b)


@given(
    st.sampled_from(list(EntryKind)), st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=80),
    st.integers(0, 2**63 - 1), st.sampled_from([PLAIN, AES_256_GCM]), st.binary(max_size=3000),
)
def test_leaf_hash_is_the_rfc_leaf_hash_of_the_canonical_bytes(  # type: ignore[no-untyped-def]
    kind, tenant, subject, time_us, encoding, payload
) -> None:
    # Entry.leaf_hash() streams the payload into the hash instead of building the
    # canonical bytes; it must stay exactly merkle.leaf_hash(canonical).
    entry = Entry(kind, tenant, subject, time_us, encoding, payload)
    assert entry.leaf_hash() == merkle.leaf_hash(entry.canonical())


@given(st.text(max_size=MAX_SUBJECT_BYTES + 8))
def test_text_limits_count_utf8_bytes_not_characters(text: str) -> None:
    entry = Entry(EntryKind.PLAN, "acme", text, 0, PLAIN, b"")
    size = len(text.encode("utf-8"))
    if 1 <= size <= MAX_SUBJECT_BYTES:
        validate_entry(entry)
    else:
        with pytest.raises(InvalidArgument) as err:
            validate_entry(entry)
        assert err.value.field == "subject"
    tenant = "\u00e9" * (MAX_TENANT_BYTES // 2 + 1)  # 2 bytes each: one byte over
    with pytest.raises(InvalidArgument, match=f"tenant_id is {MAX_TENANT_BYTES + 2} bytes"):
        validate_entry(Entry(EntryKind.PLAN, tenant, "s", 0, PLAIN, b""))


def test_all_ten_kinds() -> None:
    assert set(ENTRY_KINDS) == {
        "DIAGNOSIS", "PLAN", "ACTION", "OUTCOME", "TOKEN_ISSUED", "TOKEN_REVOKED",
        "ADMIN_CHANGE", "SECURITY_EVENT", "ERASURE", "QUOTA",
    }


def test_validation_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match="kind 'REBOOT' is not one of") as err:
        validate_new_entry(NewEntry("REBOOT", "acme", "s", b""))
    assert err.value.field == "kind"
    with pytest.raises(InvalidArgument, match="65537 bytes; at most 65536") as err:
        validate_new_entry(NewEntry("PLAN", "acme", "s", b"x" * (MAX_PAYLOAD_BYTES + 1)), position=3)
    assert err.value.field == "entries[3].payload"
    with pytest.raises(InvalidArgument) as err:
        validate_new_entry(NewEntry("PLAN", "", "s", b""))
    assert err.value.field == "tenant_id"
    assert validate_new_entry(NewEntry("PLAN", "acme", "s", b"x" * MAX_PAYLOAD_BYTES)) is EntryKind.PLAN
