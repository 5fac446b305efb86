from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from services.common import auth
from services.common.envelope import Envelope, LocalMasterKey
from services.common.tokens import Principal
from services.tenancy.keys import KeyRing, new_signing_key
from services.tenancy.server import TenancyServicer
from services.tenancy.store import TenancyStore


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str, dict]] = []

    async def record(self, kind: str, tenant: str, subject: str, payload: dict, **_: object) -> None:
        self.entries.append((kind, tenant, subject, payload))


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[TenancyStore]:
    db = TenancyStore(tmp_path / "tenancy.sqlite3")
    yield db
    db.db.close()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def servicer(store: TenancyStore, clock: Clock) -> TenancyServicer:
    envelope = Envelope(LocalMasterKey([os.urandom(32)]), store)
    ring = KeyRing([new_signing_key(clock())])
    return TenancyServicer(store, ring, Recorder(), envelope, clock=clock)  # type: ignore[arg-type]


def act_as(tenant: str, *roles: str, subject: str = "someone") -> None:
    auth.set_principal(Principal(subject, tenant, frozenset(roles), f"jti-{subject}", 2e9))


def platform_admin() -> None:
    act_as(auth.PLATFORM_TENANT, "admin", subject="platform-admin")


def pem_of(key) -> bytes:  # type: ignore[no-untyped-def]
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
