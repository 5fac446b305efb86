"""Compliance reports: audit-relevant controls of SOX, GDPR, HIPAA and PCI DSS, as evidence from the log.

Each control names the requirement it speaks to, the entries that evidence it
(counts and the first indexes, so an auditor can ask for their inclusion proofs),
and findings where the evidence is missing or contradicts the control. Statuses:

  met           evidence present and consistent
  finding       evidence missing or contradicting the control: needs attention
  not_observed  no activity of this kind in the period (not a violation by itself)

The report reads entries of one period; integrity evidence (the signed tree head and
a recomputation of the tree from the entries) comes from the log itself.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from services.audit.entry import AES_256_GCM, EntryKind, LogEntry
from services.common.errors import InvalidArgument

SAMPLE_INDEXES = 10
RETENTION_DAYS_PCI = 365


class Standard(enum.StrEnum):
    SOX = "SOX"
    GDPR = "GDPR"
    HIPAA = "HIPAA"
    PCI_DSS = "PCI_DSS"


class Status(enum.StrEnum):
    MET = "met"
    FINDING = "finding"
    NOT_OBSERVED = "not_observed"


@dataclass(frozen=True)
class IntegrityEvidence:
    tree_size: int
    root_hash: bytes
    checkpoint: str
    problems: tuple[str, ...] = ()
    checked: bool = True  # False when the log was too large to recompute in-line
    oldest_entry_us: int | None = None


@dataclass(frozen=True)
class ControlResult:
    control_id: str
    title: str
    requirement: str
    status: Status
    evidence_count: int
    evidence_indexes: list[int]
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ComplianceReport:
    standard: Standard
    period_start: datetime
    period_end: datetime
    tenant_id: str | None
    entries_in_period: int
    entries_by_kind: dict[str, int]
    controls: list[ControlResult]
    tree_size: int | None
    root_hash_hex: str | None
    checkpoint: str | None

    @property
    def findings(self) -> list[str]:
        return [f"{c.control_id}: {f}" for c in self.controls for f in c.findings]

    def to_dict(self) -> dict[str, object]:
        controls = []
        for c in self.controls:
            item = asdict(c)
            item["status"] = c.status.value
            controls.append(item)
        return {
            "standard": self.standard.value,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "tenant_id": self.tenant_id,
            "entries_in_period": self.entries_in_period,
            "entries_by_kind": self.entries_by_kind,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash_hex,
            "checkpoint": self.checkpoint,
            "summary": {s.value: sum(1 for c in self.controls if c.status is s) for s in Status},
            "controls": controls,
            "findings": self.findings,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)

    def to_markdown(self) -> str:
        who = f" for tenant `{self.tenant_id}`" if self.tenant_id else ""
        lines = [
            f"# {self.standard.value} audit-log compliance report{who}",
            "",
            f"Period: {self.period_start.isoformat()} to {self.period_end.isoformat()}  ",
            f"Entries in period: {self.entries_in_period}  ",
        ]
        if self.tree_size is not None:
            lines.append(f"Evidence log: tree size {self.tree_size}, root `{self.root_hash_hex}`")
        lines += ["", "| Control | Requirement | Status | Evidence |", "|---|---|---|---|"]
        for c in self.controls:
            lines.append(
                f"| {c.control_id} {c.title} | {c.requirement} | {c.status.value} | {c.evidence_count} entries |"
            )
        lines += ["", "## Findings", ""]
        lines += [f"- {f}" for f in self.findings] or ["None."]
        lines += ["", "## Details", ""]
        for c in self.controls:
            lines.append(f"### {c.control_id} {c.title}")
            lines.append("")
            lines.append(f"Status: **{c.status.value}**; evidence: {c.evidence_count} entries")
            if c.evidence_indexes:
                lines.append(f"(first indexes: {', '.join(map(str, c.evidence_indexes))})")
            for note in c.notes:
                lines.append(f"- {note}")
            for finding in c.findings:
                lines.append(f"- Finding: {finding}")
            lines.append("")
        if self.checkpoint:
            lines += ["## Signed tree head", "", "```", self.checkpoint.rstrip("\n"), "```", ""]
        return "\n".join(lines)


def parse_standard(standard: str) -> Standard:
    try:
        return Standard(standard)
    except ValueError:
        allowed = ", ".join(s.value for s in Standard)
        raise InvalidArgument("standard", f"standard {standard!r} is not one of {allowed}") from None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def period_bounds(period_start: datetime, period_end: datetime) -> tuple[int, int]:
    """The period as [start_us, end_us); naive datetimes are taken as UTC."""
    start, end = _utc(period_start), _utc(period_end)
    if end <= start:
        raise InvalidArgument(
            "period_end", f"period_end {end.isoformat()} must be after period_start {start.isoformat()}"
        )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return (start - epoch) // _US, (end - epoch) // _US


_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def _of(entries: Sequence[LogEntry], *kinds: EntryKind) -> list[LogEntry]:
    return [e for e in entries if e.entry.kind in kinds]


def _control(
    control_id: str,
    title: str,
    requirement: str,
    evidence: Sequence[LogEntry],
    findings: list[str] | None = None,
    notes: list[str] | None = None,
    required: bool = False,
) -> ControlResult:
    findings = list(findings or [])
    if not evidence and required and not findings:
        findings.append("no evidence of this control in the period")
    if findings:
        status = Status.FINDING
    elif evidence:
        status = Status.MET
    else:
        status = Status.NOT_OBSERVED
    return ControlResult(
        control_id,
        title,
        requirement,
        status,
        len(evidence),
        [e.index for e in evidence[:SAMPLE_INDEXES]],
        findings,
        list(notes or []),
    )


def _actions_without_plan(entries: Sequence[LogEntry]) -> list[LogEntry]:
    planned: set[tuple[str, str]] = set()
    missing = []
    for e in sorted(entries, key=lambda x: x.index):
        key = (e.entry.tenant_id, e.entry.subject)
        if e.entry.kind is EntryKind.PLAN:
            planned.add(key)
        elif e.entry.kind is EntryKind.ACTION and key not in planned:
            missing.append(e)
    return missing


def _actions_without_outcome(entries: Sequence[LogEntry]) -> list[LogEntry]:
    outcomes = {(e.entry.tenant_id, e.entry.subject) for e in _of(entries, EntryKind.OUTCOME)}
    return [e for e in _of(entries, EntryKind.ACTION) if (e.entry.tenant_id, e.entry.subject) not in outcomes]


def _incomplete_records(entries: Sequence[LogEntry]) -> list[LogEntry]:
    return [e for e in entries if not (e.entry.tenant_id and e.entry.subject and e.entry.time_us > 0)]


def _integrity_control(control_id: str, title: str, requirement: str, integrity: IntegrityEvidence | None,
                       entries: Sequence[LogEntry]) -> ControlResult:
    if integrity is None:
        return _control(control_id, title, requirement, [], ["no signed tree head was supplied as integrity evidence"])
    notes = [
        f"entries are leaves of an RFC 9162 Merkle tree; signed tree head at size {integrity.tree_size}, "
        f"root {integrity.root_hash.hex()}; any alteration of an entry changes its leaf hash and breaks "
        "inclusion and consistency proofs"
    ]
    findings = [f"integrity check: {p}" for p in integrity.problems]
    if not integrity.checked:
        notes.append("the full recomputation was skipped (log too large in-line); verify an export offline")
    return _control(control_id, title, requirement, entries, findings, notes)


def _retention_control(control_id: str, title: str, requirement: str, integrity: IntegrityEvidence | None,
                       end_us: int) -> ControlResult:
    if integrity is None or integrity.oldest_entry_us is None:
        return _control(control_id, title, requirement, [], notes=["log holds no entries yet"])
    age_days = (end_us - integrity.oldest_entry_us) / 86_400e6
    notes = [
        f"oldest entry is {age_days:.0f} days old at the end of the period; entries are append-only, never deleted"
    ]
    if age_days < RETENTION_DAYS_PCI:
        notes.append(
            f"the log is younger than {RETENTION_DAYS_PCI} days, so 12-month retention is not yet demonstrable"
        )
    status = Status.MET
    return ControlResult(control_id, title, requirement, status, integrity.tree_size, [], [], notes)


def _sox(entries: Sequence[LogEntry], integrity: IntegrityEvidence | None, end_us: int) -> list[ControlResult]:
    unplanned = _actions_without_plan(entries)
    open_actions = _actions_without_outcome(entries)
    return [
        _control(
            "SOX-ITGC-CM-1", "Change management: changes are authorised before they are made",
            "SOX 404 ITGC change management", _of(entries, EntryKind.PLAN, EntryKind.ACTION, EntryKind.ADMIN_CHANGE),
            [f"ACTION entry {e.index} (subject {e.entry.subject!r}) has no PLAN recorded before it" for e in unplanned],
        ),
        _control(
            "SOX-ITGC-CM-2", "Change management: outcomes of changes are recorded",
            "SOX 404 ITGC change management", _of(entries, EntryKind.OUTCOME),
            [f"ACTION entry {e.index} (subject {e.entry.subject!r}) has no OUTCOME recorded" for e in open_actions],
        ),
        _control(
            "SOX-ITGC-AC-1", "Logical access: credentials issued and revoked are recorded",
            "SOX 404 ITGC access to programs and data", _of(entries, EntryKind.TOKEN_ISSUED, EntryKind.TOKEN_REVOKED),
        ),
        _control(
            "SOX-ITGC-AC-2", "Privileged changes to configuration are recorded",
            "SOX 404 ITGC access to programs and data", _of(entries, EntryKind.ADMIN_CHANGE),
        ),
        _integrity_control("SOX-ITGC-OPS-1", "Audit trail is complete and tamper-evident",
                           "SOX 404 ITGC computer operations; SOX 802 record retention", integrity, entries),
    ]


def _pci(entries: Sequence[LogEntry], integrity: IntegrityEvidence | None, end_us: int) -> list[ControlResult]:
    incomplete = _incomplete_records(entries)
    return [
        _control("10.2.1.2", "Actions by administrative accounts are logged", "PCI DSS 4.0 10.2.1.2",
                 _of(entries, EntryKind.ADMIN_CHANGE)),
        _control("10.2.1.4", "Invalid logical access attempts are logged", "PCI DSS 4.0 10.2.1.4",
                 _of(entries, EntryKind.SECURITY_EVENT)),
        _control("10.2.1.5", "Changes to identification and authentication credentials are logged",
                 "PCI DSS 4.0 10.2.1.5", _of(entries, EntryKind.TOKEN_ISSUED, EntryKind.TOKEN_REVOKED)),
        _control("10.2.2", "Audit records carry identity, event type, time, and the object affected",
                 "PCI DSS 4.0 10.2.2", entries,
                 [f"entry {e.index} lacks tenant, subject or time" for e in incomplete[:SAMPLE_INDEXES]],
                 required=True),
        _integrity_control("10.3.4", "Audit logs are protected from alteration (integrity monitoring)",
                           "PCI DSS 4.0 10.3.2-10.3.4", integrity, entries),
        _retention_control("10.5.1", "Audit log history is retained for at least 12 months",
                           "PCI DSS 4.0 10.5.1", integrity, end_us),
        _control("10.7", "Failures of critical security controls are detected and reported",
                 "PCI DSS 4.0 10.7.1-10.7.3",
                 _of(entries, EntryKind.SECURITY_EVENT, EntryKind.QUOTA)),
    ]


def _hipaa(entries: Sequence[LogEntry], integrity: IntegrityEvidence | None, end_us: int) -> list[ControlResult]:
    incomplete = _incomplete_records(entries)
    return [
        _control("164.312(b)", "Audit controls record and examine activity", "HIPAA 45 CFR 164.312(b)", entries,
                 [f"entry {e.index} lacks tenant, subject or time" for e in incomplete[:SAMPLE_INDEXES]],
                 required=True),
        _integrity_control("164.312(c)(1)", "Integrity: records are protected from improper alteration",
                           "HIPAA 45 CFR 164.312(c)(1)-(c)(2)", integrity, entries),
        _control("164.312(a)(1)", "Access control: credentials granted and revoked are recorded",
                 "HIPAA 45 CFR 164.312(a)(1), 164.308(a)(4)",
                 _of(entries, EntryKind.TOKEN_ISSUED, EntryKind.TOKEN_REVOKED)),
        _control("164.308(a)(1)(ii)(D)", "Information system activity review: security events are recorded",
                 "HIPAA 45 CFR 164.308(a)(1)(ii)(D)", _of(entries, EntryKind.SECURITY_EVENT)),
    ]


def _gdpr(entries: Sequence[LogEntry], integrity: IntegrityEvidence | None, end_us: int) -> list[ControlResult]:
    erasures = _of(entries, EntryKind.ERASURE)
    findings: list[str] = []
    notes: list[str] = []
    for erasure in erasures:
        key = (erasure.entry.tenant_id, erasure.entry.subject)
        before = [e for e in entries if e.index < erasure.index and (e.entry.tenant_id, e.entry.subject) == key]
        readable = [e for e in before if e.entry.payload_encoding == AES_256_GCM and not e.erased]
        plain = [e for e in before if e.entry.payload_encoding != AES_256_GCM and e.entry.kind is not EntryKind.ERASURE]
        findings += [f"entry {e.index} of erased subject {key[1]!r} is still readable" for e in readable]
        if plain:
            notes.append(f"{len(plain)} non-sensitive entries of erased subject {key[1]!r} were stored in plain text "
                         "and stay readable")
    processing = _of(entries, EntryKind.DIAGNOSIS, EntryKind.PLAN, EntryKind.ACTION, EntryKind.OUTCOME)
    sensitive = [e for e in entries if e.entry.payload_encoding == AES_256_GCM]
    by_kind = Counter(e.entry.kind.value for e in processing)
    return [
        _control("Art. 30", "Records of processing activities", "GDPR Article 30(1)", processing,
                 notes=[f"processing by kind: {dict(sorted(by_kind.items()))}"]),
        _control("Art. 17", "Right to erasure is honoured (crypto-shredding)", "GDPR Article 17", erasures,
                 findings, notes + ["erasure destroys the subject's data key; the tree still verifies"]),
        _control("Art. 32", "Security of processing: sensitive payloads encrypted at rest",
                 "GDPR Article 32(1)(a)", sensitive,
                 notes=[f"{len(sensitive)} of {len(entries)} entries are sealed with AES-256-GCM"]),
        _integrity_control("Art. 5(1)(f)", "Integrity of the records", "GDPR Article 5(1)(f)", integrity, entries),
    ]


_CONTROLS: dict[Standard, Callable[[Sequence[LogEntry], IntegrityEvidence | None, int], list[ControlResult]]] = {
    Standard.SOX: _sox,
    Standard.PCI_DSS: _pci,
    Standard.HIPAA: _hipaa,
    Standard.GDPR: _gdpr,
}


def compliance_report(
    standard: str,
    period_start: datetime,
    period_end: datetime,
    entries: Sequence[LogEntry],
    integrity: IntegrityEvidence | None = None,
    tenant_id: str | None = None,
) -> ComplianceReport:
    """Map the standard's audit controls to evidence among `entries` that fall in the period."""
    std = parse_standard(standard)
    start_us, end_us = period_bounds(period_start, period_end)
    in_period = sorted(
        (
            e for e in entries
            if start_us <= e.entry.time_us < end_us and (tenant_id is None or e.entry.tenant_id == tenant_id)
        ),
        key=lambda e: e.index,
    )
    controls = _CONTROLS[std](in_period, integrity, end_us)
    return ComplianceReport(
        standard=std,
        period_start=_utc(period_start),
        period_end=_utc(period_end),
        tenant_id=tenant_id,
        entries_in_period=len(in_period),
        entries_by_kind=dict(sorted(Counter(e.entry.kind.value for e in in_period).items())),
        controls=controls,
        tree_size=None if integrity is None else integrity.tree_size,
        root_hash_hex=None if integrity is None else integrity.root_hash.hex(),
        checkpoint=None if integrity is None else integrity.checkpoint,
    )
