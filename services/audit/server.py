"""Audit servicer: the Audit contract over `services.audit.log.AuditLog`.

Proofs and tree heads are public to any reader: they reveal hashes, not payloads.
Entries (payloads) are visible only to their own tenant.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from healing_guard.audit.v1 import audit_pb2, audit_pb2_grpc
from services.audit.access import ACCESS
from services.audit.checkpoint import KeyRing, SigningKey
from services.audit.entry import NewEntry
from services.audit.log import AuditLog, EntryView
from services.audit.store import AuditStore
from services.common import auth
from services.common.config import ServiceConfig
from services.common.convert import timestamp, timestamp_field
from services.common.errors import InvalidArgument, NotFound
from services.common.runtime import Assembly, Runtime
from services.common.server import ServiceDefinition
from services.common.tracing import annotate

ORIGIN = "healing-guard.dev/audit"
KEY_NAME = "healing-guard-audit"
PUBLIC_KEYS_FILE = "tree-head-public-keys.json"


def entry_message(view: EntryView) -> audit_pb2.Entry:
    return audit_pb2.Entry(
        index=view.index, kind=view.kind, tenant_id=view.tenant_id, subject=view.subject,
        time=timestamp(view.time_us / 1e6), payload=view.payload, payload_digest=view.payload_digest,
        erased=view.erased, leaf_hash=view.leaf_hash, canonical=view.canonical,
    )


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def Append(self, request, context):  # type: ignore[no-untyped-def]
        entries = [NewEntry(kind=e.kind, tenant_id=e.tenant_id, subject=e.subject, payload=e.payload,
                            sensitive=e.sensitive, idempotency_key=e.idempotency_key)
                   for e in request.entries]
        result = await asyncio.to_thread(self.log.append, entries)
        annotate(audit_entries=len(entries), tree_size=result.tree_size,
                 audit_duplicates=sum(result.duplicates))
        return audit_pb2.AppendResponse(indexes=result.indexes, leaf_hashes=result.leaf_hashes,
                                        tree_size=result.tree_size, duplicates=result.duplicates)

    async def GetEntry(self, request, context):  # type: ignore[no-untyped-def]
        view = await asyncio.to_thread(self.log.get_entry, request.index)
        if not _visible(view.tenant_id):
            raise NotFound("audit entry", str(request.index))
        return entry_message(view)

    async def ListEntries(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        limit = request.limit or 100
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", f"must be between 1 and 1000, got {limit}")
        views = await asyncio.to_thread(self.log.list_entries, tenant, request.subject, request.kind, limit,
                                        request.start_index)
        return audit_pb2.ListEntriesResponse(entries=[entry_message(v) for v in views])

    async def GetSignedTreeHead(self, request, context):  # type: ignore[no-untyped-def]
        head = await asyncio.to_thread(self.log.signed_tree_head)
        checkpoint = head.checkpoint
        return audit_pb2.SignedTreeHead(
            tree_size=checkpoint.tree_size, root_hash=checkpoint.root_hash,
            timestamp=timestamp(checkpoint.timestamp_ms / 1000), key_id=head.key_id_hex, signature=head.signature,
            checkpoint=head.note, origin=checkpoint.origin,
        )

    async def GetInclusionProof(self, request, context):  # type: ignore[no-untyped-def]
        which = request.WhichOneof("leaf")
        if which is None:
            raise InvalidArgument("leaf", "give index or leaf_hash")
        kwargs = {"index": request.index} if which == "index" else {"leaf_hash": request.leaf_hash}
        proof = await asyncio.to_thread(self.log.inclusion_proof, tree_size=request.tree_size, **kwargs)
        return audit_pb2.InclusionProof(index=proof.index, tree_size=proof.tree_size, hashes=proof.hashes,
                                        root_hash=proof.root_hash)

    async def GetConsistencyProof(self, request, context):  # type: ignore[no-untyped-def]
        proof = await asyncio.to_thread(self.log.consistency_proof, request.old_size, request.new_size)
        return audit_pb2.ConsistencyProof(old_size=proof.old_size, new_size=proof.new_size, hashes=proof.hashes)

    async def ExportRange(self, request, context):  # type: ignore[no-untyped-def]
        if request.end_index <= request.start_index:
            raise InvalidArgument("end_index", f"must be greater than start_index {request.start_index}, "
                                               f"got {request.end_index}")
        principal = auth.current_principal()
        scope = None if auth.acts_for_any_tenant(principal) else principal.tenant
        page = await asyncio.to_thread(self.log.export_page, request.start_index, request.end_index,
                                       tenant_id=scope)
        return audit_pb2.ExportRangeResponse(export_json=page.export_json, next_start_index=page.next_start_index)

    async def ComplianceReport(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        start = datetime.fromtimestamp(timestamp_field(request.period_start, "period_start"), UTC)
        end = datetime.fromtimestamp(timestamp_field(request.period_end, "period_end"), UTC)
        report = await asyncio.to_thread(self.log.compliance_report, request.standard, start, end, tenant)
        return audit_pb2.ComplianceReportResponse(report_json=report.to_json(), report_markdown=report.to_markdown())

    async def Erase(self, request, context):  # type: ignore[no-untyped-def]
        tenant = auth.tenant_for(request.tenant_id)
        if not request.subject:
            raise InvalidArgument("subject", "is required (whose data to erase)")
        result = await asyncio.to_thread(self.log.erase, tenant, request.subject, request.reason or "erasure request")
        return audit_pb2.EraseResponse(entries_erased=result.entries_erased, erasure_index=result.erasure_index)


def _visible(tenant_id: str) -> bool:
    principal = auth.current_principal()
    return auth.acts_for_any_tenant(principal) or principal.tenant == tenant_id


def load_or_create_key(path: Path) -> SigningKey:
    """The tree-head signing key, kept beside the log (0600); made on first start."""
    if path.exists():
        return SigningKey.from_seed(KEY_NAME, bytes.fromhex(path.read_text().strip()))
    key = SigningKey.generate(KEY_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.seed().hex())
    return key


def publish_verifier_keys(path: Path, keys: KeyRing, origin: str) -> None:
    """Write the tree-head verifier keys where operators fetch them for offline checks.

    The file is what `python -m services.audit.verify --keys FILE` reads; it holds public
    keys only (0644), replaced atomically so a reader never sees half a file.
    """
    document = {"origin": origin, "public_keys": [key.encode() for key in keys.verifiers()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, path)


async def build(config: ServiceConfig, runtime: Runtime) -> Assembly:
    store = AuditStore.open(config.database_path)
    key = load_or_create_key(config.data_dir / "tree-head-key.hex")
    ring = KeyRing([key])
    publish_verifier_keys(config.data_dir / PUBLIC_KEYS_FILE, ring, ORIGIN)
    log = AuditLog(store, ring, ORIGIN)
    servicer = AuditServicer(log)

    async def stop() -> None:
        store.close()

    definition = ServiceDefinition(
        name="audit",
        register=lambda server: audit_pb2_grpc.add_AuditServicer_to_server(servicer, server),
        access=ACCESS,
    )
    return Assembly(definition=definition, on_stop=stop)
