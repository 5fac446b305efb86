import os

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.detector.sealing import Sealer, WrappedKey


def test_round_trip_and_fresh_nonces() -> None:
    sealer = Sealer(os.urandom(32))
    key = sealer.new_tenant_key("acme")
    first = sealer.seal(key, "f-1", b"evidence")
    assert sealer.open(key, "f-1", first) == b"evidence"
    assert sealer.seal(key, "f-1", b"evidence") != first
    assert b"evidence" not in first


def test_ciphertext_is_bound_to_tenant_and_failure() -> None:
    sealer = Sealer(os.urandom(32))
    acme, globex = sealer.new_tenant_key("acme"), sealer.new_tenant_key("globex")
    sealed = sealer.seal(acme, "f-1", b"evidence")
    with pytest.raises(FailedPrecondition):
        sealer.open(acme, "f-2", sealed)
    with pytest.raises(FailedPrecondition):
        sealer.open(globex, "f-1", sealed)
    with pytest.raises(FailedPrecondition):
        sealer.open(WrappedKey("globex", acme.blob), "f-1", sealed)  # a key moved to another tenant
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(FailedPrecondition):
        sealer.open(acme, "f-1", tampered)


def test_wrong_master_key_and_bad_master_key() -> None:
    key = Sealer(os.urandom(32)).new_tenant_key("acme")
    with pytest.raises(FailedPrecondition, match="master key"):
        Sealer(os.urandom(32)).seal(key, "f", b"x")
    with pytest.raises(InvalidArgument, match="master_key"):
        Sealer(b"short")
