"""Crypto-shredding: sensitive payloads sealed under a per-subject data key.

A sensitive payload is sealed with AES-256-GCM under the data key of its
(tenant, subject); the stored bytes are nonce (12) || ciphertext || tag (16), and the
associated data binds them to the tenant and subject, so a ciphertext moved to
another subject does not open. The leaf hash covers the sealed bytes, so destroying
the key (GDPR article 17 erasure) makes the payload unreadable for good while every
inclusion and consistency proof still verifies. The erasure itself is recorded as an
ERASURE entry whose payload is `erasure_payload(...)`.

Pure functions; the keys live in the store, the orchestration in `services.audit.log`.
"""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DATA_KEY_BYTES = 32
NONCE_BYTES = 12


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)


def associated_data(tenant_id: str, subject: str) -> bytes:
    return b"hg-audit-payload/v1\n" + tenant_id.encode("utf-8") + b"\n" + subject.encode("utf-8")


def seal(key: bytes, plaintext: bytes, tenant_id: str, subject: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data(tenant_id, subject))


def open_sealed(key: bytes, sealed: bytes, tenant_id: str, subject: str) -> bytes | None:
    """The plaintext, or None if this key (or this subject) does not open it."""
    if len(sealed) < NONCE_BYTES + 16:
        return None
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data(tenant_id, subject))
    except InvalidTag:
        return None


def erasure_payload(tenant_id: str, subject: str, reason: str, entries_erased: int, key_ids: list[int]) -> bytes:
    """The ERASURE entry's payload: canonical JSON (sorted keys, no whitespace, UTF-8)."""
    record = {
        "tenant_id": tenant_id,
        "subject": subject,
        "reason": reason,
        "entries_erased": entries_erased,
        "data_key_ids_destroyed": key_ids,
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
