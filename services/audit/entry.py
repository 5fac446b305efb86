"""Audit entries and their canonical bytes — what a leaf hash covers.

The canonical serialisation (version 1) is length-prefixed binary, so there is no
escaping or key-order question for an outside verifier to get wrong:

    canonical = "hg-audit-entry/v1"           17 ASCII bytes, no length prefix
             || field(kind)                   ASCII, one of ENTRY_KINDS
             || field(tenant_id)              UTF-8
             || field(subject)                UTF-8 (what the entry is about, e.g. "failure/42")
             || uint64_be(time_us)            microseconds since the Unix epoch, UTC
             || field(payload_encoding)       "plain" or "aes-256-gcm"
             || field(payload_digest)         SHA-256 of the stored payload bytes (32 bytes)
             || field(payload)                the stored payload bytes
    field(x)  = uint32_be(len(x)) || x
    leaf hash = SHA-256(0x00 || canonical)    (RFC 9162)

"Stored payload bytes" are the plaintext for `plain` and, for `aes-256-gcm`,
nonce (12 bytes) || ciphertext || tag (16 bytes) as produced by
`services.audit.shredding.seal`: the leaf covers the ciphertext, so the tree still
verifies after the subject's data key is destroyed. The digest is of the stored bytes
(never of the plaintext), so an erased payload leaves no guessable hash behind.

Limits: payload at most 64 KiB (65536 bytes) before encryption; tenant_id 1..128
bytes; subject 1..256 bytes; time_us >= 0; idempotency_key 0..256 bytes.

Idempotency keys are deliberately NOT part of the canonical bytes. A key is a
transport detail (it lets a caller retry an Append whose answer was lost, or
re-deliver after a crash, without a second leaf), not a fact about the decision; the
decision's own identity is already in subject and payload. Keeping it out leaves the
v1 format, every published leaf hash and every outside verifier unchanged. The log
keeps, per (tenant, key), the index it was first appended at and `request_digest`
of what was asked (kind, subject, sensitivity and the plaintext payload), so a
replay answers the existing index and leaf hash, and the same key with different
content is refused (ALREADY_EXISTS). The digest is destroyed with the subject's
data key on erasure, so an erased payload still leaves no guessable hash behind.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument

CANONICAL_MAGIC = b"hg-audit-entry/v1"
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_TENANT_BYTES = 128
MAX_SUBJECT_BYTES = 256
MAX_IDEMPOTENCY_KEY_BYTES = 256
PLAIN = "plain"
AES_256_GCM = "aes-256-gcm"
PAYLOAD_ENCODINGS = (PLAIN, AES_256_GCM)


class EntryKind(enum.StrEnum):
    DIAGNOSIS = "DIAGNOSIS"
    PLAN = "PLAN"
    ACTION = "ACTION"
    OUTCOME = "OUTCOME"
    TOKEN_ISSUED = "TOKEN_ISSUED"
    TOKEN_REVOKED = "TOKEN_REVOKED"
    ADMIN_CHANGE = "ADMIN_CHANGE"
    SECURITY_EVENT = "SECURITY_EVENT"
    ERASURE = "ERASURE"
    QUOTA = "QUOTA"


ENTRY_KINDS = tuple(kind.value for kind in EntryKind)


@dataclass(frozen=True)
class NewEntry:
    """What a caller asks to record (AppendRequest.entries); the log adds the time."""

    kind: str
    tenant_id: str
    subject: str
    payload: bytes
    sensitive: bool = False  # encrypt under the subject's data key, so it can be erased
    idempotency_key: str = ""  # "" = none; see the module docstring

    def request_digest(self) -> bytes:
        """SHA-256 of what was asked (kind, subject, sensitivity, plaintext payload).

        Two requests with the same idempotency key must agree on this; tenant_id is
        the key's scope, so it is not part of the digest.
        """
        return hashlib.sha256(
            b"hg-audit-request/v1"
            + _field(self.kind.encode("utf-8"))
            + _field(self.subject.encode("utf-8"))
            + (b"\x01" if self.sensitive else b"\x00")
            + _field(self.payload)
        ).digest()


@dataclass(frozen=True)
class Entry:
    """One entry as the leaf hash covers it (payload is the stored, maybe sealed, bytes)."""

    kind: EntryKind
    tenant_id: str
    subject: str
    time_us: int
    payload_encoding: str
    payload: bytes
    # Storage detail, not covered by the leaf: which data key sealed the payload.
    data_key_id: int | None = field(default=None, compare=False)

    @property
    def payload_digest(self) -> bytes:
        return hashlib.sha256(self.payload).digest()

    def canonical(self) -> bytes:
        return canonical_bytes(self)

    def leaf_hash(self) -> bytes:
        return entry_leaf_hash(self)


@dataclass(frozen=True)
class LogEntry:
    """An entry at its place in the log."""

    index: int
    entry: Entry
    leaf_hash: bytes
    erased: bool  # sealed under a data key that has been destroyed


_U32 = struct.Struct(">I").pack
_U64 = struct.Struct(">Q").pack
_DIGEST_LENGTH = _U32(32)


def _field(value: bytes) -> bytes:
    return _U32(len(value)) + value


def _canonical_head(entry: Entry, payload_digest: bytes) -> bytes:
    """The canonical bytes up to the payload itself (which follows, unchanged)."""
    kind = entry.kind.encode("ascii")  # a StrEnum: its str is its value
    tenant = entry.tenant_id.encode("utf-8")
    subject = entry.subject.encode("utf-8")
    encoding = entry.payload_encoding.encode("ascii")
    return (
        CANONICAL_MAGIC
        + _U32(len(kind)) + kind
        + _U32(len(tenant)) + tenant
        + _U32(len(subject)) + subject
        + _U64(entry.time_us)
        + _U32(len(encoding)) + encoding
        + _DIGEST_LENGTH + payload_digest
        + _U32(len(entry.payload))
    )


def canonical_bytes(entry: Entry) -> bytes:
    return _canonical_head(entry, hashlib.sha256(entry.payload).digest()) + entry.payload


def entry_leaf_hash(entry: Entry) -> bytes:
    """`merkle.leaf_hash(canonical_bytes(entry))`, without copying the payload into a new buffer."""
    digest = hashlib.sha256(b"\x00" + _canonical_head(entry, hashlib.sha256(entry.payload).digest()))
    digest.update(entry.payload)
    return digest.digest()


def parse_kind(kind: str) -> EntryKind:
    try:
        return EntryKind(kind)
    except ValueError:
        raise InvalidArgument("kind", f"kind {kind!r} is not one of {', '.join(ENTRY_KINDS)}") from None


def validate_new_entry(new: NewEntry, position: int | None = None) -> EntryKind:
    """Check a requested entry; returns its kind. Field names carry the batch position."""
    prefix = f"entries[{position}]." if position is not None else ""
    try:
        kind = parse_kind(new.kind)
    except InvalidArgument as err:
        raise InvalidArgument(prefix + "kind", err.description) from None
    _check_text(prefix + "tenant_id", new.tenant_id, MAX_TENANT_BYTES)
    _check_text(prefix + "subject", new.subject, MAX_SUBJECT_BYTES)
    if len(new.payload) > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            prefix + "payload",
            f"payload is {len(new.payload)} bytes; at most {MAX_PAYLOAD_BYTES} (64 KiB) are allowed",
        )
    key_size = len(new.idempotency_key.encode("utf-8"))
    if key_size > MAX_IDEMPOTENCY_KEY_BYTES:
        raise InvalidArgument(
            prefix + "idempotency_key",
            f"idempotency_key is {key_size} bytes; at most {MAX_IDEMPOTENCY_KEY_BYTES} are allowed",
        )
    return kind


def validate_entry(entry: Entry) -> None:
    """Check an entry about to be stored (time and encoding are set by the log itself)."""
    _check_text("tenant_id", entry.tenant_id, MAX_TENANT_BYTES)
    _check_text("subject", entry.subject, MAX_SUBJECT_BYTES)
    if entry.time_us < 0 or entry.time_us >= 1 << 63:
        raise InvalidArgument("time_us", f"time_us {entry.time_us} must be between 0 and 2**63-1")
    if entry.payload_encoding not in PAYLOAD_ENCODINGS:
        raise InvalidArgument(
            "payload_encoding", f"payload_encoding {entry.payload_encoding!r} is not one of {PAYLOAD_ENCODINGS}"
        )
    # Sealing adds a 12-byte nonce and a 16-byte tag.
    limit = MAX_PAYLOAD_BYTES + (28 if entry.payload_encoding == AES_256_GCM else 0)
    if len(entry.payload) > limit:
        raise InvalidArgument("payload", f"payload is {len(entry.payload)} bytes; at most {limit} are allowed")


def _check_text(name: str, value: str, limit: int) -> None:
    if value and 4 * len(value) <= limit:
        return  # UTF-8 spends at most 4 bytes per code point: short enough without encoding
    size = len(value.encode("utf-8"))
    if size == 0:
        raise InvalidArgument(name, f"{name} must not be empty")
    if size > limit:
        raise InvalidArgument(name, f"{name} is {size} bytes; at most {limit} are allowed")
