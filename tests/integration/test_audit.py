"""The audit log as its users meet it, through the gateway: a heal leaves its trail for
its own tenant only; tree heads, consistency proofs and exports verify offline with the
published key (no trust in the server); erasure shreds payloads but keeps the tree
provable; compliance reports; bad input is refused naming the field, log untouched."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from deploy.client import MeshClient, MeshConnection
from deploy.heal_examples import EXAMPLES, heal
from deploy.mesh import Mesh
from healing_guard.audit.v1 import audit_pb2, audit_pb2_grpc
from healing_guard.tenancy.v1 import tenancy_pb2
from services.audit.checkpoint import VerifierKey, verify_signed_tree_head
from services.audit.export import parse_keys
from services.audit.merkle import verify_consistency, verify_inclusion
from services.audit.server import ORIGIN, PUBLIC_KEYS_FILE
from services.common.convert import timestamp

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((EXAMPLES / "manifest.json").read_text())
OOM = next(e for e in MANIFEST if "oom_killed" in e["file"])
TIMEOUT = 10
HEAL_KINDS = {"DIAGNOSIS", "PLAN", "ACTION", "OUTCOME"}


# --- helpers ---------------------------------------------------------------------------------


def published_keys(mesh: Mesh) -> list[VerifierKey]:
    """The tree-head verifier keys the audit service publishes beside its data."""
    path = mesh.run_dir / "data" / "audit" / PUBLIC_KEYS_FILE
    document = json.loads(path.read_text())
    assert document["origin"] == ORIGIN
    return parse_keys(document["public_keys"])


def tree_head(client: MeshClient) -> audit_pb2.SignedTreeHead:
    return client.audit.GetSignedTreeHead(
        audit_pb2.GetSignedTreeHeadRequest(), metadata=client.metadata, timeout=TIMEOUT
    )


def quiet_size(client: MeshClient, settle: float = 0.4, timeout: float = 15.0) -> int:
    """The tree size once nothing has been appended for `settle` seconds (bounded)."""
    deadline = time.monotonic() + timeout
    size = tree_head(client).tree_size
    while time.monotonic() < deadline:
        time.sleep(settle)
        again = tree_head(client).tree_size
        if again == size:
            return size
        size = again
    raise AssertionError(
        f"the audit log kept growing for {timeout:.0f} s (size {size}); cannot check 'untouched'"
    )


def entries_of(client: MeshClient, subject: str = "", kind: str = "") -> list[audit_pb2.Entry]:
    return list(
        client.audit.ListEntries(
            audit_pb2.ListEntriesRequest(subject=subject, kind=kind, limit=1000),
            metadata=client.metadata,
            timeout=TIMEOUT,
        ).entries
    )


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [violation.field for violation in bad.field_violations]
    return fields


def direct_audit(mesh: Mesh, cert: str) -> grpc.Channel:
    """A channel straight to the audit service's own port, presenting `cert`'s identity."""
    credentials = grpc.ssl_channel_credentials(
        mesh.pki.ca.read_bytes(), mesh.pki.key(cert).read_bytes(), mesh.pki.cert(cert).read_bytes()
    )
    return grpc.secure_channel(
        f"127.0.0.1:{mesh.ports['audit']}",
        credentials,
        options=[("grpc.ssl_target_name_override", "audit.healing-guard.local")],
    )


def new_tenant(admin: MeshClient) -> str:
    tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    admin.tenancy.CreateTenant(
        tenancy_pb2.CreateTenantRequest(tenant_id=tenant_id, plan="team"),
        metadata=admin.metadata,
        timeout=TIMEOUT,
    )
    return tenant_id


@dataclass
class Healed:
    tenant: str
    client: MeshClient  # the tenant's operator
    admin: MeshClient  # the tenant's own admin
    failure_id: str
    entries: list[audit_pb2.Entry]
    head_before: audit_pb2.SignedTreeHead


@pytest.fixture(scope="module")
def healed(connection: MeshConnection, admin: MeshClient, signer) -> Iterator[Healed]:  # type: ignore[no-untyped-def]
    """One sample failure healed through the gateway for a tenant of this module."""
    tenant = new_tenant(admin)
    operator_token = signer.mint(
        subject="ci-bot", tenant=tenant, roles=["operator", "viewer"], ttl_seconds=3600
    )
    admin_token = signer.mint(
        subject="tenant-admin", tenant=tenant, roles=["admin", "viewer"], ttl_seconds=3600
    )
    with (
        MeshClient(connection, token=operator_token) as client,
        MeshClient(connection, token=admin_token) as own,
    ):
        before = tree_head(client)
        report = heal(client, OOM)
        assert report.failure_id and not report.error, report
        deadline = time.monotonic() + 15
        entries = entries_of(client, subject=report.failure_id)
        while not HEAL_KINDS <= {e.kind for e in entries} and time.monotonic() < deadline:
            time.sleep(0.2)
            entries = entries_of(client, subject=report.failure_id)
        yield Healed(tenant, client, own, report.failure_id, entries, before)


# --- a heal's trail, for its tenant only --------------------------------------------------------


def test_a_heal_leaves_diagnosis_plan_action_and_outcome_for_its_tenant(healed: Healed) -> None:
    kinds = {e.kind for e in healed.entries}
    assert HEAL_KINDS <= kinds, f"entries for {healed.failure_id}: {sorted(kinds)}"
    assert all(e.tenant_id == healed.tenant and e.subject == healed.failure_id for e in healed.entries)
    diagnosis = next(e for e in healed.entries if e.kind == "DIAGNOSIS")
    assert json.loads(diagnosis.payload) and not diagnosis.erased
    head = tree_head(healed.client)
    for entry in healed.entries:  # each entry provably in the signed tree, checked on this side
        proof = healed.client.audit.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(index=entry.index, tree_size=head.tree_size),
            metadata=healed.client.metadata,
            timeout=TIMEOUT,
        )
        assert verify_inclusion(
            entry.leaf_hash, entry.index, head.tree_size, list(proof.hashes), head.root_hash
        )


def test_another_tenant_sees_none_of_it(healed: Healed, operator: MeshClient) -> None:
    for entry in healed.entries:
        error = refusal(
            lambda e=entry: operator.audit.GetEntry(
                audit_pb2.GetEntryRequest(index=e.index), metadata=operator.metadata, timeout=TIMEOUT
            )
        )
        assert error.code() is grpc.StatusCode.NOT_FOUND, error.details()
    assert entries_of(operator, subject=healed.failure_id) == []
    assert all(e.tenant_id != healed.tenant for e in entries_of(operator))
    # naming the other tenant in the body is refused, not answered
    error = refusal(
        lambda: operator.audit.ListEntries(
            audit_pb2.ListEntriesRequest(tenant_id=healed.tenant), metadata=operator.metadata, timeout=TIMEOUT
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


def test_an_export_holds_only_the_callers_entries(healed: Healed, operator: MeshClient, tenant: str) -> None:
    """Another tenant exporting a range that spans this heal gets none of its payloads."""
    start, end = min(e.index for e in healed.entries), max(e.index for e in healed.entries) + 1
    exported = json.loads(
        operator.audit.ExportRange(
            audit_pb2.ExportRangeRequest(start_index=start, end_index=end),
            metadata=operator.metadata,
            timeout=TIMEOUT,
        ).export_json
    )
    assert [(e["index"], e["tenant_id"]) for e in exported["entries"] if e["tenant_id"] != tenant] == []


# --- verifiable offline, with the published key ------------------------------------------------


def test_the_signed_tree_head_verifies_offline_with_the_published_key(mesh: Mesh, healed: Healed) -> None:
    head = tree_head(healed.client)
    opened = verify_signed_tree_head(head.checkpoint, published_keys(mesh), ORIGIN)
    assert opened.checkpoint.tree_size == head.tree_size
    assert opened.checkpoint.root_hash == head.root_hash
    assert opened.key_id.hex() == head.key_id and opened.signature == head.signature
    forged = head.checkpoint.replace(f"\n{head.tree_size}\n", f"\n{head.tree_size + 1}\n", 1)
    with pytest.raises(Exception, match="signature"):
        verify_signed_tree_head(forged, published_keys(mesh), ORIGIN)


def test_two_tree_heads_are_proved_consistent(mesh: Mesh, healed: Healed) -> None:
    old, new = healed.head_before, tree_head(healed.client)
    assert new.tree_size > old.tree_size
    keys = published_keys(mesh)
    for head in (old, new):
        verify_signed_tree_head(head.checkpoint, keys, ORIGIN)
    proof = healed.client.audit.GetConsistencyProof(
        audit_pb2.GetConsistencyProofRequest(old_size=old.tree_size, new_size=new.tree_size),
        metadata=healed.client.metadata,
        timeout=TIMEOUT,
    )
    assert verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, list(proof.hashes))
    assert not verify_consistency(
        old.tree_size, new.tree_size, old.root_hash[::-1], new.root_hash, list(proof.hashes)
    )


def _verify_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.audit.verify", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_an_export_verifies_with_the_offline_cli_and_a_flipped_byte_fails(
    mesh: Mesh, healed: Healed, tmp_path: Path
) -> None:
    start, end = min(e.index for e in healed.entries), max(e.index for e in healed.entries) + 1
    exported = healed.client.audit.ExportRange(
        audit_pb2.ExportRangeRequest(start_index=start, end_index=end),
        metadata=healed.client.metadata,
        timeout=TIMEOUT,
    ).export_json
    keys = tmp_path / "keys.json"
    keys.write_text((mesh.run_dir / "data" / "audit" / PUBLIC_KEYS_FILE).read_text())
    good = tmp_path / "export.json"
    good.write_text(exported)
    document = json.loads(exported)
    assert {e["index"] for e in document["entries"]} >= {e.index for e in healed.entries}
    result = _verify_cli(str(good), "--keys", str(keys))
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"{len(document['entries'])} entries" in result.stdout

    # one byte of a stored payload changed: its digest (and leaf) no longer match
    target = next(e for e in document["entries"] if e["kind"] == "PLAN")
    raw = bytearray(base64.b64decode(target["payload"]))
    raw[len(raw) // 2] ^= 0x01
    target["payload"] = base64.b64encode(bytes(raw)).decode()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    result = _verify_cli(str(tampered), "--keys", str(keys))
    assert result.returncode == 1, result.stderr + result.stdout
    assert f"index {target['index']}" in result.stderr

    # one byte flipped in the exported text itself, inside a hash
    text = bytearray(good.read_bytes())
    position = text.index(document["entries"][0]["leaf_hash"].encode()) + 7
    text[position] = ord("0") if text[position] != ord("0") else ord("1")
    flipped = tmp_path / "flipped.json"
    flipped.write_bytes(bytes(text))
    result = _verify_cli(str(flipped), "--keys", str(keys))
    assert result.returncode == 1, result.stderr + result.stdout


# --- erasure --------------------------------------------------------------------------------


def test_erasure_shreds_payloads_and_the_tree_still_verifies(
    connection: MeshConnection,
    admin: MeshClient,
    signer,  # type: ignore[no-untyped-def]
) -> None:
    tenant = new_tenant(admin)
    with (
        MeshClient(connection, token=signer.mint("ci-bot", tenant, ["operator", "viewer"])) as client,
        MeshClient(connection, token=signer.mint("dpo", tenant, ["admin", "viewer"])) as own,
    ):
        report = heal(client, OOM)
        assert report.failure_id, report
        before = entries_of(client, subject=report.failure_id)
        sealed = [e for e in before if e.kind == "DIAGNOSIS"]
        assert sealed and all(e.payload for e in sealed)

        erased = own.audit.Erase(
            audit_pb2.EraseRequest(subject=report.failure_id, reason="GDPR art. 17 request"),
            metadata=own.metadata,
            timeout=TIMEOUT,
        )
        assert erased.entries_erased >= len(sealed)

        head = tree_head(client)
        for entry in sealed:
            now = client.audit.GetEntry(
                audit_pb2.GetEntryRequest(index=entry.index), metadata=client.metadata, timeout=TIMEOUT
            )
            assert now.erased and now.payload == b""
            assert now.leaf_hash == entry.leaf_hash  # the leaf hashes the ciphertext: unchanged
            proof = client.audit.GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(index=entry.index, tree_size=head.tree_size),
                metadata=client.metadata,
                timeout=TIMEOUT,
            )
            assert verify_inclusion(
                now.leaf_hash, now.index, head.tree_size, list(proof.hashes), head.root_hash
            )
        erasure = client.audit.GetEntry(
            audit_pb2.GetEntryRequest(index=erased.erasure_index), metadata=client.metadata, timeout=TIMEOUT
        )
        assert (
            erasure.kind == "ERASURE" and erasure.subject == report.failure_id and erasure.tenant_id == tenant
        )
        assert "GDPR art. 17 request" in erasure.payload.decode()


# --- compliance reports ---------------------------------------------------------------------


@pytest.mark.parametrize("standard", ["SOX", "GDPR", "HIPAA", "PCI_DSS"])
def test_compliance_report_in_json_and_markdown(healed: Healed, standard: str) -> None:
    now = time.time()
    reply = healed.admin.audit.ComplianceReport(
        audit_pb2.ComplianceReportRequest(
            standard=standard, period_start=timestamp(now - 3600), period_end=timestamp(now + 60)
        ),
        metadata=healed.admin.metadata,
        timeout=30,
    )
    report = json.loads(reply.report_json)
    assert report["standard"] == standard and report["tenant_id"] == healed.tenant
    assert report["entries_in_period"] >= len(healed.entries)
    assert report["controls"] and all(c["control_id"] and c["status"] for c in report["controls"])
    assert reply.report_markdown.startswith(f"# {standard} audit-log compliance report")
    assert "| Control | Requirement | Status | Evidence |" in reply.report_markdown


def test_an_operator_cannot_run_a_compliance_report(healed: Healed) -> None:
    error = refusal(
        lambda: healed.client.audit.ComplianceReport(
            audit_pb2.ComplianceReportRequest(
                standard="SOX", period_start=timestamp(0), period_end=timestamp(1)
            ),
            metadata=healed.client.metadata,
            timeout=TIMEOUT,
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


# --- bad input: clear status, the field named, the log untouched ----------------------------------


def test_bad_input_is_refused_naming_the_field_and_the_log_is_untouched(
    mesh: Mesh,
    healed: Healed,
    signer,  # type: ignore[no-untyped-def]
) -> None:
    client, own = healed.client, healed.admin
    md = client.metadata
    size = quiet_size(client)
    mine_before = len(entries_of(client))
    detector_token = signer.mint(subject="detector", tenant="*", roles=["service"], ttl_seconds=600)

    def append_oversized() -> object:
        entry = audit_pb2.NewEntry(
            kind="DIAGNOSIS", tenant_id=healed.tenant, subject="too-big", payload=b"x" * (64 * 1024 + 1)
        )
        with direct_audit(mesh, "detector") as channel:
            return audit_pb2_grpc.AuditStub(channel).Append(
                audit_pb2.AppendRequest(entries=[entry]),
                metadata=(("authorization", f"Bearer {detector_token}"),),
                timeout=TIMEOUT,
            )

    cases: list[tuple[str, Callable[[], object], grpc.StatusCode, str]] = [
        (
            "unknown index",
            lambda: client.audit.GetEntry(
                audit_pb2.GetEntryRequest(index=size + 1000), metadata=md, timeout=TIMEOUT
            ),
            grpc.StatusCode.NOT_FOUND,
            f"{size + 1000}",
        ),
        (
            "tree size beyond the log",
            lambda: client.audit.GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(index=0, tree_size=size + 1000),
                metadata=md,
                timeout=TIMEOUT,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "tree_size",
        ),
        (
            "new size beyond the log",
            lambda: client.audit.GetConsistencyProof(
                audit_pb2.GetConsistencyProofRequest(old_size=1, new_size=size + 1000),
                metadata=md,
                timeout=TIMEOUT,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "new_size",
        ),
        (
            "old size larger than new",
            lambda: client.audit.GetConsistencyProof(
                audit_pb2.GetConsistencyProofRequest(old_size=size, new_size=size - 1),
                metadata=md,
                timeout=TIMEOUT,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "old_size",
        ),
        (
            "append with an operator token",
            lambda: client.audit.Append(
                audit_pb2.AppendRequest(
                    entries=[
                        audit_pb2.NewEntry(
                            kind="DIAGNOSIS", tenant_id=healed.tenant, subject="forged", payload=b"{}"
                        )
                    ]
                ),
                metadata=md,
                timeout=TIMEOUT,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "needs role service",
        ),
        ("payload over 64 KiB", append_oversized, grpc.StatusCode.INVALID_ARGUMENT, "payload"),
        (
            "erase of an unknown subject",
            lambda: own.audit.Erase(
                audit_pb2.EraseRequest(subject="no-such-failure", reason="test"),
                metadata=own.metadata,
                timeout=TIMEOUT,
            ),
            grpc.StatusCode.NOT_FOUND,
            "no-such-failure",
        ),
    ]
    for what, call, code, named in cases:
        error = refusal(call)
        assert error.code() is code, f"{what}: {error.code()} {error.details()}"
        assert named in (error.details() or ""), f"{what}: {error.details()!r} does not name {named!r}"
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            fields = bad_request_fields(error)
            assert any(named in f for f in fields), f"{what}: BadRequest fields {fields}"
        assert tree_head(client).tree_size == size, f"{what} changed the log"
    assert len(entries_of(client)) == mine_before
    assert entries_of(client, kind="ERASURE") == []
    # the service is still serving
    assert (
        client.audit.GetEntry(
            audit_pb2.GetEntryRequest(index=healed.entries[0].index), metadata=md, timeout=TIMEOUT
        ).index
        == healed.entries[0].index
    )
