"""Live config in etcd applies without a restart (and a bad value does not take a service down)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from deploy.client import MeshClient
from deploy.mesh import VENV_BIN, Mesh
from healing_guard.common.v1 import common_pb2
from healing_guard.planner.v1 import planner_pb2

pytestmark = pytest.mark.integration

KEY = "/healing-guard/config/planner/policy_overrides"


def etcdctl(mesh: Mesh, *args: str) -> None:
    subprocess.run([str(VENV_BIN / "etcdctl"), f"--endpoints=127.0.0.1:{mesh.ports['etcd']}", *args],
                   check=True, capture_output=True, timeout=10)


def oom_max_attempts(client: MeshClient) -> int:
    policy = client.planner.GetPolicy(planner_pb2.GetPolicyRequest(), metadata=client.metadata, timeout=10)
    return next(c.max_attempts for c in policy.classes if c.failure_class == common_pb2.OUT_OF_MEMORY)


def wait_for(check, expected, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    value = check()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = check()
    return value


def test_a_policy_override_in_etcd_applies_without_restart(mesh: Mesh, operator: MeshClient) -> None:
    before = oom_max_attempts(operator)
    try:
        etcdctl(mesh, "put", KEY, json.dumps({"OUT_OF_MEMORY": {"max_attempts": before + 3}}))
        assert wait_for(lambda: oom_max_attempts(operator), before + 3) == before + 3
        etcdctl(mesh, "put", KEY, "{not json")  # refused with a warning; the last good value stays
        time.sleep(0.5)
        assert oom_max_attempts(operator) == before + 3
    finally:
        etcdctl(mesh, "del", KEY)
    assert wait_for(lambda: oom_max_attempts(operator), before) == before
