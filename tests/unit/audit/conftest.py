from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.audit.checkpoint import KeyRing, SigningKey
from services.audit.log import AuditLog
from services.audit.store import AuditStore

ORIGIN = "healing-guard.test/audit"


class FakeClock:
    """Microseconds that move forward one second per reading."""

    def __init__(self, start_us: int = 1_700_000_000_000_000) -> None:
        self.now = start_us

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    s = AuditStore.open(tmp_path / "audit.db")
    yield s
    s.close()


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey.from_seed(ORIGIN, bytes(range(32)))


@pytest.fixture
def audit_log(store: AuditStore, signing_key: SigningKey) -> AuditLog:
    return AuditLog(store, KeyRing([signing_key]), ORIGIN, clock=FakeClock())
