"""One supervised mesh for the reliability run (as `make up` runs it, on free loopback
ports under a temp folder), a fuzz tenant and a bystander tenant, torn down at the end.

Budgets come from the environment: FUZZ (calls per RPC, default 200) and SOAK_SECONDS
(default 60); `make test-reliability FUZZ=10000 SOAK_SECONDS=600` is the long run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from healing_guard.tenancy.v1 import tenancy_pb2
from tests.reliability.harness import Harness
from tests.reliability.load import ledger_env

FUZZ = int(os.environ.get("FUZZ", "200"))
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    base = tmp_path_factory.mktemp("reliability")
    env = {"HG_SETTING_LEASE_TTL_SECONDS": "3", **ledger_env(base / "executed.ledger")}
    started = Harness.start(base, extra_env=env)
    started.ledger = base / "executed.ledger"
    try:
        yield started
    finally:
        started.stop()
        logs = os.environ.get("HG_KEEP_LOGS")
        if logs:
            shutil.copytree(started.mesh.log_dir, Path(logs), dirs_exist_ok=True)


def _create_tenant(harness: Harness, prefix: str) -> str:
    tenant_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with harness.client(harness.tokens["admin"]) as admin:
        admin.tenancy.CreateTenant(tenancy_pb2.CreateTenantRequest(tenant_id=tenant_id, plan="enterprise"),
                                   metadata=admin.metadata, timeout=10)
    return tenant_id


@pytest.fixture(scope="session")
def fuzz_tenant(harness: Harness) -> str:
    """The tenant fuzzed calls act in (never the bystander's or the heals')."""
    return _create_tenant(harness, "fuzz")


@pytest.fixture(scope="session")
def heal_tenant(harness: Harness) -> str:
    """The tenant heals run in: bystanders, kills and the soak."""
    return _create_tenant(harness, "heal")
