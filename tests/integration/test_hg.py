"""`hg` against a real mesh, as an operator runs it: heal a log, read the diagnosis, the
plan and the actions, export the audit log and verify the file offline."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from deploy.mesh import ROOT, Mesh

pytestmark = pytest.mark.integration


def hg(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "bin" / "hg"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HG_ENV_FILE": str(mesh.run_dir / "mesh.env")})


def test_heal_a_log_then_read_its_diagnosis_plan_and_actions(mesh: Mesh) -> None:
    run_id = uuid.uuid4().hex[:8]
    healed = hg(mesh, "heal", "examples/oom_killed.log", "--provider", "github", "--repository", "acme/web",
                "--pipeline", "ci", "--job", "test", "--run-id", run_id, "--json")
    assert healed.returncode == 0, healed.stderr
    report = json.loads(healed.stdout)
    assert report["failure_class"] == "OUT_OF_MEMORY" and report["plan"] and report["audit_verified"]
    assert all(action["state"] in {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED"} for action in report["actions"])

    diagnosis = hg(mesh, "diagnosis", report["failure_id"])
    assert diagnosis.returncode == 0, diagnosis.stderr
    assert "OUT_OF_MEMORY" in diagnosis.stdout and "decisive" in diagnosis.stdout

    plan = hg(mesh, "plan", report["plan_id"])
    assert plan.returncode == 0, plan.stderr
    assert "because" in plan.stdout

    actions = hg(mesh, "actions", report["failure_id"], "--json")
    assert actions.returncode == 0, actions.stderr
    assert {a["action_id"] for a in json.loads(actions.stdout)} >= set(report["action_ids"])


def test_a_refused_heal_is_one_line_and_exit_1(mesh: Mesh, tmp_path: Path) -> None:
    refused = hg(mesh, "heal", "examples/oom_killed.log", "--provider", "github", "--repository", " ",
                 "--pipeline", "ci", "--job", "test", "--run-id", "1")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hg: INVALID_ARGUMENT") and "report.job.repository" in lines[0]


def test_the_audit_export_hg_writes_verifies_offline_as_is(mesh: Mesh, tmp_path: Path) -> None:
    head = hg(mesh, "audit", "head", "--json")
    assert head.returncode == 0, head.stderr
    size = int(json.loads(head.stdout)["tree_size"])
    assert size > 0
    export = tmp_path / "EXPORT.json"
    written = hg(mesh, "audit", "export", "--from", "0", "--to", str(min(size, 200)), "-o", str(export))
    assert written.returncode == 0, written.stderr
    keys = mesh.run_dir / "data" / "audit" / "tree-head-public-keys.json"
    verified = hg(mesh, "audit", "verify", str(export), "--keys", str(keys))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_leader_names_a_coordinator_replica(mesh: Mesh) -> None:
    leader = hg(mesh, "leader", "--json")
    assert leader.returncode == 0, leader.stderr
    assert json.loads(leader.stdout)["leader_id"].startswith("coordinator-")


def test_watch_replays_action_changes_from_a_revision(mesh: Mesh) -> None:
    healed = hg(mesh, "heal", "examples/oom_killed.log", "--provider", "github", "--repository", "acme/web",
                "--pipeline", "ci", "--job", "watch", "--run-id", uuid.uuid4().hex[:8], "--json")
    assert healed.returncode == 0, healed.stderr
    watched = hg(mesh, "watch", "--from-revision", "1", "--count", "2", "--json")
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert len(events) == 2 and all(event["action_id"] and int(event["revision"]) > 0 for event in events)
