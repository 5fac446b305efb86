"""Compliance reports map each standard's controls to log evidence, with findings where it is missing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.audit.compliance import IntegrityEvidence, Status, compliance_report
from services.audit.entry import AES_256_GCM, PLAIN, Entry, EntryKind, LogEntry, NewEntry
from services.audit.log import AuditLog
from services.common.errors import InvalidArgument

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _at(days: float) -> int:
    return int((T0 + timedelta(days=days)).timestamp() * 1_000_000)


def _entry(index: int, kind: EntryKind, subject: str, day: float, sealed: bool = False, erased: bool = False,
           tenant: str = "acme") -> LogEntry:
    e = Entry(kind, tenant, subject, _at(day), AES_256_GCM if sealed else PLAIN, b"x")
    return LogEntry(index, e, e.leaf_hash(), erased)


def _status(report, control_id: str) -> Status:  # type: ignore[no-untyped-def]
    return next(c.status for c in report.controls if c.control_id == control_id)


def test_sox_flags_actions_without_a_plan_or_outcome() -> None:
    entries = [
        _entry(0, EntryKind.PLAN, "failure/1", 1),
        _entry(1, EntryKind.ACTION, "failure/1", 1.1),
        _entry(2, EntryKind.OUTCOME, "failure/1", 1.2),
        _entry(3, EntryKind.ACTION, "failure/2", 2),  # no plan, no outcome
    ]
    report = compliance_report("SOX", T0, T0 + timedelta(days=30), entries)
    assert _status(report, "SOX-ITGC-CM-1") is Status.FINDING
    assert any("ACTION entry 3" in f and "no PLAN" in f for f in report.findings)
    assert any("ACTION entry 3" in f and "no OUTCOME" in f for f in report.findings)
    fixed = entries + [_entry(4, EntryKind.OUTCOME, "failure/2", 2.1)]
    fixed[3] = _entry(3, EntryKind.PLAN, "failure/2", 1.9)
    fixed.append(_entry(5, EntryKind.ACTION, "failure/2", 2.0))
    assert _status(compliance_report("SOX", T0, T0 + timedelta(days=30), fixed), "SOX-ITGC-CM-1") is Status.MET


def test_period_filters_entries_and_integrity_findings_surface() -> None:
    entries = [_entry(i, EntryKind.SECURITY_EVENT, f"s/{i}", day) for i, day in enumerate([1, 5, 40])]
    integrity = IntegrityEvidence(3, b"\x01" * 32, "note\n", problems=("entry 1: stored leaf hash does not match",),
                                  oldest_entry_us=_at(1))
    report = compliance_report("PCI_DSS", T0, T0 + timedelta(days=30), entries, integrity)
    assert report.entries_in_period == 2
    assert _status(report, "10.2.1.4") is Status.MET
    assert _status(report, "10.3.4") is Status.FINDING
    assert _status(report, "10.2.1.2") is Status.NOT_OBSERVED
    retention = next(c for c in report.controls if c.control_id == "10.5.1")
    assert any("younger than 365 days" in n for n in retention.notes)


def test_gdpr_erasure_must_leave_sealed_payloads_unreadable() -> None:
    erased_ok = [
        _entry(0, EntryKind.DIAGNOSIS, "user/alice", 1, sealed=True, erased=True),
        _entry(1, EntryKind.ERASURE, "user/alice", 2),
    ]
    report = compliance_report("GDPR", T0, T0 + timedelta(days=10), erased_ok)
    assert _status(report, "Art. 17") is Status.MET
    leaking = [_entry(0, EntryKind.DIAGNOSIS, "user/bob", 1, sealed=True, erased=False),
               _entry(1, EntryKind.ERASURE, "user/bob", 2)]
    report = compliance_report("GDPR", T0, T0 + timedelta(days=10), leaking)
    assert _status(report, "Art. 17") is Status.FINDING
    assert "entry 0 of erased subject 'user/bob' is still readable" in " ".join(report.findings)


def test_hipaa_requires_activity_and_outputs_json_and_markdown() -> None:
    report = compliance_report("HIPAA", T0, T0 + timedelta(days=1), [])
    assert _status(report, "164.312(b)") is Status.FINDING
    as_json = json.loads(report.to_json())
    assert as_json["standard"] == "HIPAA" and as_json["summary"]["finding"] >= 1
    markdown = report.to_markdown()
    assert markdown.startswith("# HIPAA audit-log compliance report") and "164.312(c)(1)" in markdown


def test_bad_standard_or_period_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match="standard 'ISO27001' is not one of SOX, GDPR, HIPAA, PCI_DSS") as err:
        compliance_report("ISO27001", T0, T0 + timedelta(days=1), [])
    assert err.value.field == "standard"
    with pytest.raises(InvalidArgument, match="must be after period_start") as err:
        compliance_report("SOX", T0, T0 - timedelta(seconds=1), [])
    assert err.value.field == "period_end"


def test_report_from_a_live_log_cites_its_signed_head(audit_log: AuditLog) -> None:
    audit_log.append([NewEntry("PLAN", "acme", "failure/9", b"{}"), NewEntry("ACTION", "acme", "failure/9", b"{}"),
                      NewEntry("OUTCOME", "acme", "failure/9", b"{}"), NewEntry("PLAN", "other", "failure/1", b"{}")])
    start = datetime.fromtimestamp(audit_log.clock() / 1e6 - 3600, UTC)
    report = audit_log.compliance_report("SOX", start, start + timedelta(days=1), tenant_id="acme")
    assert report.entries_in_period == 3 and report.tree_size == 4
    assert _status(report, "SOX-ITGC-CM-1") is Status.MET and _status(report, "SOX-ITGC-OPS-1") is Status.MET
    assert report.checkpoint and report.checkpoint.startswith("healing-guard.test/audit\n4\n")
