"""The heal workflow under SIGKILL: real etcd, two real coordinator processes, leaf
stand-ins that count what they did (tests/integration/coordinator_support.py).

For each step the heal is held at that step's leaf (so every earlier step is recorded
in etcd), the coordinator running it is SIGKILLed, and the caller retries on the other
replica: the heal finishes there, no leaf acted twice, the plan's action is queued
once, run once, and its outcome reaches planner and detector once.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.detector.v1 import detector_pb2
from services.coordinator.workflow import workflow_id_for
from tests.integration.coordinator_support import VENV_BIN, HealLeaves
from tests.integration.test_coordinator_faults import Cluster, wait_until

pytestmark = pytest.mark.integration
TENANT = "acme"
TERMINAL = {common_pb2.ACTION_STATE_SUCCEEDED, common_pb2.ACTION_STATE_FAILED}
# The record a heal held at this step's leaf has already written (None: none yet).
RECORDED_BEFORE = {"quota": None, "diagnose": "HEAL_STEP_QUOTA", "forecast": "HEAL_STEP_DIAGNOSED",
                   "plan": "HEAL_STEP_FORECAST"}


class HealCluster(Cluster):
    """The fault tests' cluster with the heal's leaves in place of the outcome receivers."""

    leaves: HealLeaves | None = None

    def env(self, name: str) -> dict[str, str]:
        if self.leaves is None:
            self.leaves = HealLeaves(self.pki.out_dir).start()
        return {**super().env(name), **self.leaves.env()}

    def stop(self) -> None:
        super().stop()
        if self.leaves is not None:
            self.leaves.stop()

    def record(self, workflow_id: str) -> coordinator_pb2.HealWorkflow | None:
        result = subprocess.run(
            [str(VENV_BIN / "etcdctl"), f"--endpoints={self.etcd.endpoint}", "--command-timeout=5s", "get",
             f"/healing-guard/workflows/{workflow_id}", "-w", "json"], capture_output=True, timeout=15, check=True)
        kvs = json.loads(result.stdout).get("kvs", [])
        return coordinator_pb2.HealWorkflow.FromString(base64.b64decode(kvs[0]["value"])) if kvs else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealCluster]:
    cluster = HealCluster(tmp_path_factory.mktemp("heal-workflow-faults"))
    try:
        yield cluster
    finally:
        cluster.stop()
        if os.environ.get("HG_KEEP_LOGS"):
            import shutil
            shutil.copytree(cluster.folder, Path(os.environ["HG_KEEP_LOGS"]) / "heal-workflow-faults",
                            dirs_exist_ok=True, ignore=shutil.ignore_patterns("etcd", "pki"))


@pytest.fixture(autouse=True)
def both_replicas(cluster: HealCluster) -> Iterator[None]:
    yield
    assert cluster.leaves is not None
    cluster.leaves.release()
    for name in cluster.names:  # every test leaves both replicas running
        if cluster.processes[name].poll() is not None:
            cluster.start(name)
    for name in cluster.names:
        cluster.wait_serving(name)


def heal_request(run_id: str) -> coordinator_pb2.HealFailureRequest:
    job = common_pb2.JobRef(provider=common_pb2.PROVIDER_LOCAL, repository="acme/web", pipeline=run_id, job="test",
                            run_id=run_id, attempt=1, commit_sha="abc123")
    return coordinator_pb2.HealFailureRequest(
        report=detector_pb2.FailureReport(tenant_id=TENANT, job=job, exit_code=1), log=b"connection reset by peer\n")


def wait_healed(cluster: HealCluster, plan_id: str, timeout: float = 60) -> list[coordinator_pb2.ActionRecord]:
    """The plan's actions finished and their outcomes delivered (the audit OUTCOME entry comes last)."""
    assert cluster.leaves is not None
    leaves = cluster.leaves
    found: list[coordinator_pb2.ActionRecord] = []

    def healed() -> bool:
        nonlocal found
        reply = cluster.call("ListActions", coordinator_pb2.ListActionsRequest(plan_id=plan_id))
        found = list(reply.actions)  # type: ignore[attr-defined]
        return bool(found) and all(a.state in TERMINAL and leaves.count("audit:OUTCOME", a.action_id)
                                   for a in found)

    wait_until(healed, timeout, f"the actions of {plan_id} to finish with their outcomes delivered")
    return found


@pytest.mark.parametrize("step", HealLeaves.STEPS)
def test_a_coordinator_killed_between_heal_steps_is_resumed_by_another_and_heals_once(
        cluster: HealCluster, step: str) -> None:
    assert cluster.leaves is not None
    leaves = cluster.leaves
    run_id = f"{step}-{time.time_ns()}"
    request = heal_request(run_id)
    workflow_id = workflow_id_for(TENANT, request.report)
    key = workflow_id if step == "quota" else run_id
    first, other = cluster.names

    leaves.hold(step)
    pending = cluster.stub(first).HealFailure.future(request, metadata=cluster.metadata, timeout=60)
    wait_until(lambda: leaves.count(step, key, arrived=True) == 1, 30, f"the heal to reach its {step} step")
    record = cluster.record(workflow_id)
    expected = RECORDED_BEFORE[step]
    assert (record and coordinator_pb2.HealStep.Name(record.step)) == expected, record
    cluster.kill(first, signal.SIGKILL)
    with pytest.raises(grpc.RpcError):
        pending.result(timeout=30)
    leaves.release()  # the held call finds its caller gone and does nothing

    answer = cluster.stub(other).HealFailure(request, metadata=cluster.metadata, timeout=60)
    assert answer.resumed is (expected is not None)
    assert answer.workflow_id == workflow_id and answer.diagnosis.failure_id == f"f-{run_id}"
    assert answer.plan.plan_id == f"p-{run_id}" and len(answer.action_ids) == 1
    assert answer.plan.risk == pytest.approx(0.3)

    actions = wait_healed(cluster, answer.plan.plan_id)
    assert [a.action_id for a in actions] == list(answer.action_ids)  # queued once
    assert actions[0].state == common_pb2.ACTION_STATE_SUCCEEDED
    for done in ("quota", "diagnose", "forecast", "plan"):
        assert leaves.count(done, workflow_id if done == "quota" else run_id) == 1, f"{done} done twice"
    action_id = answer.action_ids[0]
    assert leaves.count("planner", action_id) == 1 and leaves.count("detector", action_id) == 1
    stored = cluster.record(workflow_id)
    assert stored is not None and stored.step == coordinator_pb2.HEAL_STEP_QUEUED
    assert list(stored.action_ids) == list(answer.action_ids)
    assert b"connection reset" not in stored.SerializeToString()  # the log stays out of etcd

    # Asked again once it is done (on the replica that was killed, restarted): the same answer, nothing new.
    cluster.start(first)
    cluster.wait_serving(first)
    again = cluster.stub(first).HealFailure(request, metadata=cluster.metadata, timeout=60)
    assert again.resumed and list(again.action_ids) == list(answer.action_ids)
    for done in ("quota", "diagnose", "forecast", "plan"):
        assert leaves.count(done, workflow_id if done == "quota" else run_id) == 1
