"""Nothing twice in the audit log: Append is idempotent on its key (straight to the audit
port, as a service), a heal leaves exactly one OUTCOME per action, and every service's
outbox has sent what it recorded."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections import Counter

import grpc
import pytest

from deploy.client import MeshClient, MeshConnection
from deploy.heal_examples import heal
from deploy.mesh import Mesh
from healing_guard.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.integration.test_audit import MANIFEST, TIMEOUT, direct_audit, entries_of, new_tenant, refusal

pytestmark = pytest.mark.integration

FLAKY = next(e for e in MANIFEST if "flaky" in e["file"])
OUTBOX_OWNERS = ("detector", "planner", "tenancy", "coordinator-1", "coordinator-2")


def test_append_twice_with_one_key_makes_one_entry(
    mesh: Mesh, admin: MeshClient, connection: MeshConnection, signer
) -> None:  # type: ignore[no-untyped-def]
    tenant = new_tenant(admin)
    subject = f"failure/{uuid.uuid4().hex[:8]}"
    service_md = (
        (
            "authorization",
            f"Bearer {signer.mint(subject='detector', tenant='*', roles=['service'], ttl_seconds=600)}",
        ),
    )

    def entry(payload: bytes) -> audit_pb2.NewEntry:
        return audit_pb2.NewEntry(
            kind="OUTCOME",
            tenant_id=tenant,
            subject=subject,
            payload=payload,
            idempotency_key=f"OUTCOME/{subject}/action-1",
        )

    with direct_audit(mesh, "detector") as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        first = stub.Append(
            audit_pb2.AppendRequest(entries=[entry(b'{"state":"SUCCEEDED"}')]),
            metadata=service_md,
            timeout=TIMEOUT,
        )
        again = stub.Append(
            audit_pb2.AppendRequest(entries=[entry(b'{"state":"SUCCEEDED"}')]),
            metadata=service_md,
            timeout=TIMEOUT,
        )
        assert (list(again.indexes), list(again.leaf_hashes)) == (
            list(first.indexes),
            list(first.leaf_hashes),
        )
        assert list(first.duplicates) == [False] and list(again.duplicates) == [True]
        error = refusal(
            lambda: stub.Append(
                audit_pb2.AppendRequest(entries=[entry(b'{"state":"FAILED"}')]),
                metadata=service_md,
                timeout=TIMEOUT,
            )
        )
        assert error.code() is grpc.StatusCode.ALREADY_EXISTS, error.details()
        assert "entries[0].idempotency_key" in (error.details() or "")

    token = signer.mint(subject="auditor", tenant=tenant, roles=["viewer"], ttl_seconds=600)
    with MeshClient(connection, token=token) as viewer:
        found = entries_of(viewer, subject=subject)
    assert [(e.index, json.loads(e.payload)["state"]) for e in found] == [(first.indexes[0], "SUCCEEDED")]


def test_a_heal_records_one_outcome_per_action_and_the_outboxes_drain(
    mesh: Mesh, operator: MeshClient
) -> None:
    report = heal(operator, FLAKY)
    assert report.failure_id and report.actions and not report.error, report
    deadline = time.monotonic() + 20
    while True:
        entries = entries_of(operator, subject=report.failure_id)
        actions = {json.loads(e.payload)["action_id"] for e in entries if e.kind == "ACTION"}
        outcomes = Counter(json.loads(e.payload)["action_id"] for e in entries if e.kind == "OUTCOME")
        if actions and actions <= set(outcomes):
            break
        assert time.monotonic() < deadline, (
            f"outcomes {dict(outcomes)} for actions {sorted(actions)} after 20 s"
        )
        time.sleep(0.3)
    time.sleep(1.5)  # a re-delivery, if any, would land now
    entries = entries_of(operator, subject=report.failure_id)
    outcomes = Counter(json.loads(e.payload)["action_id"] for e in entries if e.kind == "OUTCOME")
    assert outcomes and set(outcomes.values()) == {1}, f"OUTCOME entries per action: {dict(outcomes)}"
    kinds = Counter(e.kind for e in entries)
    assert kinds["DIAGNOSIS"] == 1 and kinds["PLAN"] == 1, dict(kinds)

    for owner in OUTBOX_OWNERS:
        path = mesh.run_dir / "data" / owner / "audit-outbox.sqlite3"
        assert path.exists(), f"{owner} has no audit outbox at {path}"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'sent'").fetchone()[0]
        assert pending == 0, f"{owner}: {pending} audit entries not sent"
