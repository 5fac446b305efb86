"""The audit log as the servicer sees it: append, read, sign, prove, export, erase, report.

`AuditLog` composes the store (tables), the Merkle machinery, checkpoint signing,
crypto-shredding and compliance reports. Every method takes and returns plain
dataclasses; the servicer only converts them to and from protobuf messages.
Times are integer microseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.audit import compliance, export, shredding
from services.audit.checkpoint import Checkpoint, KeyRing, SignedTreeHead, sign_checkpoint, verify_signed_tree_head
from services.audit.entry import (
    AES_256_GCM,
    PLAIN,
    Entry,
    EntryKind,
    LogEntry,
    NewEntry,
    parse_kind,
    validate_new_entry,
)
from services.audit.store import AuditStore, EntryQuery, KeyClaim, StoredTreeHead
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_EXPORT = 10_000
# An ExportRange answer must fit the 16 MiB gRPC message limit: 10,000 entries of a
# few KiB each do not (21 MB measured), so an export stops at this many bytes and
# says where the next one starts.
MAX_EXPORT_BYTES = 12 * 1024 * 1024
MAX_INDEX = 2**63 - 1  # the largest leaf index SQLite can store (request fields are uint64)


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class AppendResult:
    indexes: list[int]
    leaf_hashes: list[bytes]
    tree_size: int
    duplicates: list[bool] = field(default_factory=list)  # per entry: its idempotency key was already used


@dataclass(frozen=True)
class EntryView:
    """An entry as a reader sees it: the payload opened, or empty when erased."""

    index: int
    kind: str
    tenant_id: str
    subject: str
    time_us: int
    payload: bytes
    payload_digest: bytes
    erased: bool
    leaf_hash: bytes
    canonical: bytes


@dataclass(frozen=True)
class InclusionProof:
    index: int
    tree_size: int
    hashes: list[bytes]
    root_hash: bytes


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    hashes: list[bytes]


@dataclass(frozen=True)
class ExportPage:
    export_json: str
    next_start_index: int  # 0: the export reached end_index; else ask again from this index


@dataclass(frozen=True)
class ErasureResult:
    entries_erased: int
    erasure_index: int


class AuditLog:
    def __init__(
        self, store: AuditStore, keys: KeyRing, origin: str, clock: Callable[[], int] = now_us
    ) -> None:
        self.store = store
        self.keys = keys
        self.origin = origin
        self.clock = clock

    # -- writing -------------------------------------------------------------------

    def append(self, new_entries: Sequence[NewEntry]) -> AppendResult:
        if not new_entries:
            raise InvalidArgument("entries", "at least one entry is required")
        if len(new_entries) > MAX_BATCH:
            raise InvalidArgument("entries", f"at most {MAX_BATCH} entries per append, got {len(new_entries)}")
        kinds = [validate_new_entry(new, i) for i, new in enumerate(new_entries)]
        for i, kind in enumerate(kinds):
            if kind is EntryKind.ERASURE:
                raise InvalidArgument(f"entries[{i}].kind", "ERASURE entries are written by Erase, not Append")
        claims = [
            KeyClaim(new.tenant_id, new.idempotency_key, new.request_digest()) if new.idempotency_key else None
            for new in new_entries
        ]
        # Entries already in the log under their key are not prepared (no sealing, no new
        # data key); the store decides for good, under its append lock.
        known = self.store.claimed([claim for claim in claims if claim is not None])
        at = self.clock()
        items = [
            (
                None if claim is not None and (claim.tenant_id, claim.idempotency_key) in known
                else self._prepare(new, kind, at),
                claim,
            )
            for new, kind, claim in zip(new_entries, kinds, claims, strict=True)
        ]
        appended = self.store.append_claimed(items)
        return AppendResult(
            [a.index for a in appended], [a.leaf_hash for a in appended], self.store.size,
            [a.duplicate for a in appended],
        )

    def _prepare(self, new: NewEntry, kind: EntryKind, at: int) -> Entry:
        if not new.sensitive:
            return Entry(kind, new.tenant_id, new.subject, at, PLAIN, new.payload)
        key = self.store.live_data_key(new.tenant_id, new.subject)
        if key is None:
            key = self.store.create_data_key(new.tenant_id, new.subject, shredding.new_data_key(), at)
        assert key.key is not None
        sealed = shredding.seal(key.key, new.payload, new.tenant_id, new.subject)
        return Entry(kind, new.tenant_id, new.subject, at, AES_256_GCM, sealed, data_key_id=key.key_id)

    def erase(self, tenant_id: str, subject: str, reason: str) -> ErasureResult:
        """Destroy the subject's data keys and record the erasure as an ERASURE entry."""
        if not tenant_id:
            raise InvalidArgument("tenant_id", "tenant_id must not be empty")
        if not subject:
            raise InvalidArgument("subject", "subject must not be empty")
        keys = self.store.data_keys_of(tenant_id, subject)
        if not keys:
            raise NotFound("subject", subject, f"subject {subject!r} of tenant {tenant_id!r} has no sensitive entries")
        live = [k.key_id for k in keys if k.key is not None]
        if not live:
            done = max(k.erasure_index for k in keys if k.erasure_index is not None)
            raise FailedPrecondition(f"subject {subject!r} was already erased (ERASURE entry {done})", "ALREADY_ERASED")
        erased = self.store.count_sealed_entries(live)
        at = self.clock()
        payload = shredding.erasure_payload(tenant_id, subject, reason, erased, live)
        entry = Entry(EntryKind.ERASURE, tenant_id, subject, at, PLAIN, payload)
        index = self.store.destroy_data_keys(live, entry, at)
        logger.info("erased subject %r of tenant %r: %d entries, ERASURE entry %d", subject, tenant_id, erased, index)
        return ErasureResult(erased, index)

    # -- reading -------------------------------------------------------------------

    def _view(self, item: LogEntry) -> EntryView:
        entry = item.entry
        payload = entry.payload
        erased = item.erased
        if entry.payload_encoding == AES_256_GCM:
            key = None if erased or entry.data_key_id is None else self.store.data_key(entry.data_key_id)
            opened = None if key is None else shredding.open_sealed(key, entry.payload, entry.tenant_id, entry.subject)
            erased = opened is None
            payload = opened or b""
        return EntryView(
            item.index,
            entry.kind.value,
            entry.tenant_id,
            entry.subject,
            entry.time_us,
            payload,
            entry.payload_digest,
            erased,
            item.leaf_hash,
            entry.canonical(),
        )

    def get_entry(self, index: int) -> EntryView:
        if index < 0:
            raise InvalidArgument("index", f"index {index} must be >= 0")
        if index >= self.store.size:
            raise NotFound("audit entry", str(index), f"audit entry {index} not found (log size {self.store.size})")
        return self._view(self.store.entry(index))

    def list_entries(
        self,
        tenant_id: str | None = None,
        subject: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        start_index: int = 0,
    ) -> list[EntryView]:
        if not 0 <= start_index <= MAX_INDEX:
            raise InvalidArgument("start_index", f"must be between 0 and {MAX_INDEX}, got {start_index}")
        kinds = (parse_kind(kind),) if kind else None
        query = EntryQuery(tenant_id or None, subject or None, kinds, start_index=start_index, limit=limit or 100)
        return [self._view(item) for item in self.store.find_entries(query)]

    # -- tree heads and proofs -----------------------------------------------------

    def signed_tree_head(self) -> SignedTreeHead:
        """The head for the current size, signed now unless one for this size exists."""
        size = self.store.size
        latest = self.store.latest_tree_head()
        if latest is not None and latest.tree_size == size:
            return verify_signed_tree_head(latest.note, self.keys.verifiers(), self.origin)
        checkpoint = Checkpoint(self.origin, size, self.store.root_hash(size), self.clock() // 1000)
        head = sign_checkpoint(checkpoint, self.keys.current)
        self.store.save_tree_head(
            StoredTreeHead(size, checkpoint.root_hash, checkpoint.timestamp_ms, head.key_name, head.key_id, head.note)
        )
        return head

    def inclusion_proof(
        self, index: int | None = None, leaf_hash: bytes | None = None, tree_size: int = 0
    ) -> InclusionProof:
        """By index or by leaf hash; tree_size 0 means the current size."""
        if (index is None) == (leaf_hash is None):
            raise InvalidArgument("leaf", "give exactly one of index or leaf_hash")
        size = tree_size or self.store.size
        if leaf_hash is not None:
            index = self.store.index_of_leaf(leaf_hash)
            if index >= size:
                raise InvalidArgument("tree_size", f"leaf is at index {index}, beyond tree_size {size}")
        assert index is not None
        hashes = self.store.inclusion_proof(index, size)
        return InclusionProof(index, size, hashes, self.store.root_hash(size))

    def consistency_proof(self, old_size: int, new_size: int = 0) -> ConsistencyProof:
        size = new_size or self.store.size
        return ConsistencyProof(old_size, size, self.store.consistency_proof(old_size, size))

    # -- export and reports --------------------------------------------------------

    def export_range(
        self, start_index: int, end_index: int, consistency_from: int | None = None, tenant_id: str | None = None
    ) -> str:
        """Entries [start, end) with inclusion proofs to a fresh signed tree head, as JSON, whatever its size."""
        return self.export_page(start_index, end_index, consistency_from, tenant_id, max_bytes=None).export_json

    def export_page(
        self,
        start_index: int,
        end_index: int,
        consistency_from: int | None = None,
        tenant_id: str | None = None,
        max_bytes: int | None = MAX_EXPORT_BYTES,
    ) -> ExportPage:
        """Entries [start, end) with inclusion proofs to a fresh signed tree head, as JSON.

        With `tenant_id`, only that tenant's entries of the range are exported: each entry
        carries its own inclusion proof, so the subset verifies on its own, and a tenant
        never receives another tenant's payloads. When the JSON would exceed `max_bytes`,
        the export keeps the entries that fit and `next_start_index` says where to go on.
        """
        if end_index - start_index > MAX_EXPORT:
            raise InvalidArgument(
                "end_index", f"at most {MAX_EXPORT} entries per export, asked for {end_index - start_index}"
            )
        items = self.store.entries_range(start_index, end_index)
        if tenant_id is not None:
            items = [item for item in items if item.entry.tenant_id == tenant_id]
        head = self.signed_tree_head()
        size = head.checkpoint.tree_size
        exported = [
            export.ExportedEntry(i.index, i.entry, i.erased, i.leaf_hash, self.store.inclusion_proof(i.index, size))
            for i in items
        ]
        consistency = None
        if consistency_from is not None:
            consistency = (consistency_from, self.store.consistency_proof(consistency_from, size))
        doc = export.build_export(head, exported, self.keys.verifiers(), consistency)
        if max_bytes is None:
            return ExportPage(export.dumps(doc), 0)
        text, kept = export.dumps_within(doc, max_bytes)
        return ExportPage(text, exported[kept].index if kept < len(exported) else 0)

    def compliance_report(
        self, standard: str, period_start: datetime, period_end: datetime, tenant_id: str | None = None
    ) -> compliance.ComplianceReport:
        std = compliance.parse_standard(standard)
        start_us, end_us = compliance.period_bounds(period_start, period_end)
        entries: list[LogEntry] = []
        cursor = 0
        while True:
            page = self.store.find_entries(
                EntryQuery(tenant_id or None, since_us=start_us, until_us=end_us, start_index=cursor, limit=5000)
            )
            entries.extend(page)
            if len(page) < 5000:
                break
            cursor = page[-1].index + 1
        head = self.signed_tree_head()
        integrity = compliance.IntegrityEvidence(
            tree_size=head.checkpoint.tree_size,
            root_hash=head.checkpoint.root_hash,
            checkpoint=head.note,
            problems=tuple(self.store.check_integrity()) if self.store.size <= 100_000 else (),
            checked=self.store.size <= 100_000,
            oldest_entry_us=self.store.entry(0).entry.time_us if self.store.size else None,
        )
        return compliance.compliance_report(std.value, period_start, period_end, entries, integrity, tenant_id)


def erasure_record(entry: EntryView) -> dict[str, object]:
    """The ERASURE entry's payload as a dict (for tools and tests)."""
    return dict(json.loads(entry.payload))
