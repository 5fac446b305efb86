"""AES-256-GCM sealing of evidence at rest, under per-tenant data keys.

Each tenant has a random 256-bit data key, stored only wrapped (AES-GCM) by the
master key the service is given; losing or destroying a tenant's wrapped key
crypto-shreds its evidence. Every sealed message has a fresh 96-bit nonce and
binds tenant and failure id as associated data, so a ciphertext moved to
another tenant or failure does not open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.errors import FailedPrecondition, InvalidArgument

KEY_BYTES = 32
NONCE_BYTES = 12
SEALED_FORMAT = b"\x01"  # version byte, so the format can change without ambiguity


@dataclass(frozen=True)
class WrappedKey:
    tenant: str
    blob: bytes  # format byte + nonce + AES-GCM(master, data key, aad=tenant)


def _aad(*parts: str) -> bytes:
    return b"\x00".join(p.encode("utf-8") for p in parts)


class Sealer:
    """Seals and opens evidence; holds the master key, never a plaintext data key at rest."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise InvalidArgument("master_key", f"must be {KEY_BYTES} bytes (AES-256), got {len(master_key)}")
        self._master = AESGCM(master_key)

    def new_tenant_key(self, tenant: str) -> WrappedKey:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        blob = SEALED_FORMAT + nonce + self._master.encrypt(nonce, data_key, _aad("tenant-key", tenant))
        return WrappedKey(tenant, blob)

    def _data_key(self, wrapped: WrappedKey) -> AESGCM:
        blob = wrapped.blob
        if not blob.startswith(SEALED_FORMAT) or len(blob) < 1 + NONCE_BYTES + KEY_BYTES + 16:
            raise FailedPrecondition(f"wrapped key of tenant {wrapped.tenant!r} is malformed")
        try:
            key = self._master.decrypt(
                blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], _aad("tenant-key", wrapped.tenant)
            )
        except InvalidTag:
            raise FailedPrecondition(
                f"wrapped key of tenant {wrapped.tenant!r} does not open with this master key"
            ) from None
        return AESGCM(key)

    def seal(self, wrapped: WrappedKey, failure_id: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return SEALED_FORMAT + nonce + self._data_key(wrapped).encrypt(
            nonce, plaintext, _aad(wrapped.tenant, failure_id)
        )

    def open(self, wrapped: WrappedKey, failure_id: str, sealed: bytes) -> bytes:
        if not sealed.startswith(SEALED_FORMAT) or len(sealed) < 1 + NONCE_BYTES + 16:
            raise FailedPrecondition(f"sealed evidence of failure {failure_id!r} is malformed")
        try:
            return self._data_key(wrapped).decrypt(
                sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], _aad(wrapped.tenant, failure_id)
            )
        except InvalidTag:
            raise FailedPrecondition(
                f"sealed evidence of failure {failure_id!r} does not open for tenant {wrapped.tenant!r}"
            ) from None
