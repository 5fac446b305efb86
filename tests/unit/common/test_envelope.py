"""Envelope encryption: per-tenant data keys under a master key, rotation and shredding."""

from __future__ import annotations

import os

import pytest

from services.common.envelope import (
    DecryptionFailed,
    Envelope,
    InMemoryKeyStore,
    LocalMasterKey,
)
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound


def _envelope(*keys: bytes) -> tuple[Envelope, InMemoryKeyStore]:
    store = InMemoryKeyStore()
    return Envelope(LocalMasterKey(keys or [os.urandom(32)]), store), store


def test_round_trip_and_ciphertext_reveals_nothing() -> None:
    envelope, store = _envelope()
    blob = envelope.encrypt("acme", b"ghp_secret_token", b"tenant-secret:github")
    assert b"ghp_secret_token" not in blob
    assert envelope.decrypt("acme", blob, b"tenant-secret:github") == b"ghp_secret_token"
    assert envelope.encrypt("acme", b"same") != envelope.encrypt("acme", b"same")  # fresh nonce
    assert [k.version for k in store.wrapped_keys("acme")] == [1]


def test_a_ciphertext_does_not_decrypt_for_another_tenant_or_context_or_after_tampering() -> None:
    envelope, _ = _envelope()
    blob = envelope.encrypt("acme", b"secret", b"ctx")
    with pytest.raises((DecryptionFailed, NotFound)):
        envelope.decrypt("globex", blob, b"ctx")
    with pytest.raises(DecryptionFailed, match="tampered or moved"):
        envelope.decrypt("acme", blob, b"other-ctx")
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionFailed):
        envelope.decrypt("acme", flipped, b"ctx")
    with pytest.raises(DecryptionFailed, match="bad header"):
        envelope.decrypt("acme", b"plaintext", b"ctx")


def test_tenants_get_different_data_keys() -> None:
    envelope, store = _envelope()
    envelope.encrypt("acme", b"x")
    envelope.encrypt("globex", b"x")
    assert store.wrapped_keys("acme")[0].wrapped != store.wrapped_keys("globex")[0].wrapped


def test_master_rotation_rewraps_keys_and_leaves_ciphertexts_alone() -> None:
    old, new = os.urandom(32), os.urandom(32)
    envelope, store = _envelope(old)
    blobs = {
        tenant: envelope.encrypt(tenant, f"secret of {tenant}".encode()) for tenant in ("acme", "globex")
    }
    before = {k.tenant_id: k.wrapped for k in store.all_wrapped_keys()}

    rotated = Envelope(LocalMasterKey([new, old]), store)  # new current, old kept to unwrap
    assert rotated.rewrap_all() == 2
    assert all(k.master_key_id == rotated.master.key_id for k in store.all_wrapped_keys())
    assert all(store.wrapped_keys(t)[0].wrapped != before[t] for t in before)
    assert rotated.rewrap_all() == 0  # idempotent

    only_new = Envelope(LocalMasterKey([new]), store)  # the old master key can now be retired
    for tenant, blob in blobs.items():
        assert only_new.decrypt(tenant, blob) == f"secret of {tenant}".encode()
    with pytest.raises(DecryptionFailed, match="not available"):
        Envelope(LocalMasterKey([old]), store).decrypt("acme", blobs["acme"])


def test_data_key_rotation_keeps_old_versions_readable() -> None:
    envelope, _ = _envelope()
    first = envelope.encrypt("acme", b"v1 data")
    assert envelope.rotate_data_key("acme") == 2
    second = envelope.encrypt("acme", b"v2 data")
    assert second[4:8] == (2).to_bytes(4, "big")
    assert envelope.decrypt("acme", first) == b"v1 data"
    assert envelope.decrypt("acme", second) == b"v2 data"


def test_destroy_crypto_shreds_the_tenant_only() -> None:
    envelope, _ = _envelope()
    acme, globex = envelope.encrypt("acme", b"a"), envelope.encrypt("globex", b"g")
    assert envelope.destroy("acme") == 1
    with pytest.raises(NotFound, match="does not exist"):
        envelope.decrypt("acme", acme)
    assert envelope.decrypt("globex", globex) == b"g"


def test_master_key_configuration_errors_name_the_problem(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument, match="must be 32 bytes, got 16"):
        LocalMasterKey([os.urandom(16)])
    with pytest.raises(InvalidArgument, match="line 2 is not hex"):
        LocalMasterKey.from_text(os.urandom(32).hex() + "\nzz\n")
    with pytest.raises(FailedPrecondition, match="HG_MASTER_KEY_FILE"):
        LocalMasterKey.from_environment({})
    path = tmp_path / "master.key"
    key = os.urandom(32)
    path.write_text("# current first\n" + key.hex() + "\n")
    assert (
        LocalMasterKey.from_environment({"HG_MASTER_KEY_FILE": str(path)}).key_id
        == LocalMasterKey([key]).key_id
    )
    with pytest.raises(InvalidArgument, match="tenant_id"):
        _envelope()[0].encrypt("", b"x")
