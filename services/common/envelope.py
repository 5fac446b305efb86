"""Envelope encryption at rest: per-tenant data keys (AES-256-GCM) wrapped by a master key.

Data is encrypted with the tenant's data key; only the *wrapped* data key is
stored, next to the data. The master key never touches the data, so:

- rotating the master key re-wraps each tenant's data key (a few bytes per tenant)
  and re-encrypts no data (`Envelope.rewrap_all`);
- rotating a tenant's data key starts a new key version for new writes, while old
  ciphertexts still name (and decrypt under) the version they were written with;
- destroying a tenant's data keys crypto-shreds everything encrypted under them.

`MasterKey` is the interface a KMS implements (wrap/unwrap with an encryption
context); `LocalMasterKey` reads 32-byte keys from a file or the environment
(`HG_MASTER_KEY_FILE`, `HG_MASTER_KEY`; hex, one key per line, the first is current,
the others are kept to unwrap what they wrapped until `rewrap_all` has run).
`KeyStore` is where wrapped keys live (each service's own store implements it; an
in-memory one is here for tests).

Ciphertext layout: b"hge1" | data-key version (4 bytes, big-endian) | nonce (12) |
AES-GCM ciphertext+tag. The associated data always includes the tenant id, so a
ciphertext moved to another tenant's row does not decrypt.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

MAGIC = b"hge1"
NONCE_BYTES = 12
KEY_BYTES = 32
_HEADER = struct.Struct(">4sI")


class DecryptionFailed(FailedPrecondition):
    """A ciphertext that does not decrypt: tampered, another tenant's, or its key is gone."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="DECRYPTION_FAILED")


# --- master keys ------------------------------------------------------------------------


class MasterKey(Protocol):
    """What a KMS offers: wrap and unwrap small secrets, bound to a context."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes, key_id: str) -> bytes: ...


class LocalMasterKey:
    """Master keys held locally: the first is current, the rest only unwrap."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        self._keys: dict[str, AESGCM] = {}
        self._current = ""
        for key in keys:
            if len(key) != KEY_BYTES:
                raise InvalidArgument("master_key", f"must be {KEY_BYTES} bytes, got {len(key)}")
            key_id = hashlib.sha256(b"hg-master-key-id" + key).hexdigest()[:16]
            self._keys.setdefault(key_id, AESGCM(key))
            self._current = self._current or key_id
        if not self._current:
            raise InvalidArgument("master_key", "at least one key is required")

    @classmethod
    def from_text(cls, text: str) -> LocalMasterKey:
        keys = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                keys.append(bytes.fromhex(line))
            except ValueError:
                raise InvalidArgument("master_key", f"line {number} is not hex") from None
        return cls(keys)

    @classmethod
    def from_file(cls, path: Path | str) -> LocalMasterKey:
        return cls.from_text(Path(path).read_text())

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> LocalMasterKey:
        env = os.environ if env is None else env
        if env.get("HG_MASTER_KEY_FILE"):
            return cls.from_file(env["HG_MASTER_KEY_FILE"])
        if env.get("HG_MASTER_KEY"):
            return cls.from_text(env["HG_MASTER_KEY"])
        raise FailedPrecondition("no master key: set HG_MASTER_KEY_FILE (or HG_MASTER_KEY, hex)")

    @property
    def key_id(self) -> str:
        return self._current

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._keys[self._current].encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes, key_id: str) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            raise DecryptionFailed(f"master key {key_id} is not available to unwrap this data key")
        try:
            return key.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag:
            raise DecryptionFailed("wrapped data key does not verify under its master key") from None


# --- wrapped data keys ----------------------------------------------------------------


@dataclass(frozen=True)
class WrappedKey:
    tenant_id: str
    version: int
    master_key_id: str
    wrapped: bytes
    created_at: float


class KeyStore(Protocol):
    def wrapped_keys(self, tenant_id: str) -> list[WrappedKey]: ...  # every version, oldest first

    def all_wrapped_keys(self) -> list[WrappedKey]: ...

    def put_wrapped_key(self, key: WrappedKey) -> None: ...  # insert or replace (tenant, version)

    def delete_wrapped_keys(self, tenant_id: str) -> int: ...


class InMemoryKeyStore:
    def __init__(self) -> None:
        self._keys: dict[tuple[str, int], WrappedKey] = {}

    def wrapped_keys(self, tenant_id: str) -> list[WrappedKey]:
        return sorted((k for k in self._keys.values() if k.tenant_id == tenant_id), key=lambda k: k.version)

    def all_wrapped_keys(self) -> list[WrappedKey]:
        return sorted(self._keys.values(), key=lambda k: (k.tenant_id, k.version))

    def put_wrapped_key(self, key: WrappedKey) -> None:
        self._keys[(key.tenant_id, key.version)] = key

    def delete_wrapped_keys(self, tenant_id: str) -> int:
        doomed = [k for k in self._keys if k[0] == tenant_id]
        for k in doomed:
            del self._keys[k]
        return len(doomed)


def _context(tenant_id: str, version: int) -> bytes:
    return f"healing-guard/data-key/{tenant_id}/{version}".encode()


class Envelope:
    """Encrypts and decrypts a tenant's data with its data key. Thread-safe."""

    def __init__(self, master: MasterKey, store: KeyStore, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self.master = master
        self.store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._plain: dict[tuple[str, int], AESGCM] = {}  # unwrapped keys, in memory only

    def encrypt(self, tenant_id: str, plaintext: bytes, associated_data: bytes = b"") -> bytes:
        if not tenant_id:
            raise InvalidArgument("tenant_id", "is required to pick the data key")
        version, key = self._current_key(tenant_id)
        nonce = os.urandom(NONCE_BYTES)
        aad = _aad(tenant_id, associated_data)
        return _HEADER.pack(MAGIC, version) + nonce + key.encrypt(nonce, plaintext, aad)

    def decrypt(self, tenant_id: str, blob: bytes, associated_data: bytes = b"") -> bytes:
        if len(blob) < _HEADER.size + NONCE_BYTES + 16 or blob[:4] != MAGIC:
            raise DecryptionFailed("not an envelope ciphertext (bad header or too short)")
        _, version = _HEADER.unpack_from(blob)
        key = self._key(tenant_id, version)
        nonce = blob[_HEADER.size : _HEADER.size + NONCE_BYTES]
        try:
            return key.decrypt(nonce, blob[_HEADER.size + NONCE_BYTES :], _aad(tenant_id, associated_data))
        except InvalidTag:
            raise DecryptionFailed(
                f"ciphertext does not verify for tenant {tenant_id!r} (tampered or moved)"
            ) from None

    def rotate_data_key(self, tenant_id: str) -> int:
        """Start a new data-key version for this tenant; old versions still decrypt."""
        with self._lock:
            versions = self.store.wrapped_keys(tenant_id)
            return self._new_key(tenant_id, (versions[-1].version + 1) if versions else 1)[0]

    def rewrap_all(self) -> int:
        """Re-wrap every data key under the current master key; no data is re-encrypted."""
        count = 0
        with self._lock:
            for wrapped in self.store.all_wrapped_keys():
                if wrapped.master_key_id == self.master.key_id:
                    continue
                context = _context(wrapped.tenant_id, wrapped.version)
                plain = self.master.unwrap(wrapped.wrapped, context, wrapped.master_key_id)
                self.store.put_wrapped_key(
                    WrappedKey(
                        wrapped.tenant_id,
                        wrapped.version,
                        self.master.key_id,
                        self.master.wrap(plain, context),
                        wrapped.created_at,
                    )
                )
                count += 1
        return count

    def destroy(self, tenant_id: str) -> int:
        """Crypto-shred: forget every data key of the tenant; its ciphertexts are now noise."""
        with self._lock:
            for key in [k for k in self._plain if k[0] == tenant_id]:
                del self._plain[key]
            return self.store.delete_wrapped_keys(tenant_id)

    def _current_key(self, tenant_id: str) -> tuple[int, AESGCM]:
        with self._lock:
            versions = self.store.wrapped_keys(tenant_id)
            if not versions:
                return self._new_key(tenant_id, 1)
            latest = versions[-1]
            return latest.version, self._unwrapped(latest)

    def _key(self, tenant_id: str, version: int) -> AESGCM:
        with self._lock:
            cached = self._plain.get((tenant_id, version))
            if cached is not None:
                return cached
            for wrapped in self.store.wrapped_keys(tenant_id):
                if wrapped.version == version:
                    return self._unwrapped(wrapped)
        raise NotFound(
            "data key",
            f"{tenant_id}/v{version}",
            f"data key v{version} of tenant {tenant_id!r} does not exist (destroyed or never made)",
        )

    def _unwrapped(self, wrapped: WrappedKey) -> AESGCM:
        cache_key = (wrapped.tenant_id, wrapped.version)
        if cache_key not in self._plain:
            plain = self.master.unwrap(
                wrapped.wrapped, _context(wrapped.tenant_id, wrapped.version), wrapped.master_key_id
            )
            self._plain[cache_key] = AESGCM(plain)
        return self._plain[cache_key]

    def _new_key(self, tenant_id: str, version: int) -> tuple[int, AESGCM]:
        plain = AESGCM.generate_key(bit_length=256)
        wrapped = WrappedKey(
            tenant_id,
            version,
            self.master.key_id,
            self.master.wrap(plain, _context(tenant_id, version)),
            self._clock(),
        )
        self.store.put_wrapped_key(wrapped)
        self._plain[(tenant_id, version)] = AESGCM(plain)
        return version, self._plain[(tenant_id, version)]


def _aad(tenant_id: str, associated_data: bytes) -> bytes:
    encoded = tenant_id.encode()
    return struct.pack(">H", len(encoded)) + encoded + associated_data
