"""AuditServicer, called as the Guard leaves it: integer request fields beyond what the
store or Python's datetime take are INVALID_ARGUMENT naming the field, never INTERNAL."""

from __future__ import annotations

import asyncio
import json

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from healing_guard.audit.v1 import audit_pb2
from services.audit.log import AuditLog
from services.audit.server import AuditServicer
from services.common import auth
from services.common.errors import InvalidArgument
from services.common.tokens import Principal


@pytest.fixture
def servicer(audit_log: AuditLog) -> AuditServicer:
    auth.set_principal(Principal("op", "acme", frozenset({"operator"}), "jti-op", 2e9))
    return AuditServicer(audit_log)


@pytest.mark.parametrize("start_index", [2**63, 2**64 - 1])
def test_list_entries_refuses_a_start_index_sqlite_cannot_hold(servicer: AuditServicer, start_index: int) -> None:
    with pytest.raises(InvalidArgument) as raised:
        asyncio.run(servicer.ListEntries(audit_pb2.ListEntriesRequest(start_index=start_index), None))
    assert raised.value.field == "start_index" and str(2**63 - 1) in raised.value.description


@pytest.mark.parametrize("field", ["period_start", "period_end"])
def test_compliance_report_refuses_a_timestamp_beyond_year_9999(servicer: AuditServicer, field: str) -> None:
    request = audit_pb2.ComplianceReportRequest(standard="SOX", period_start=Timestamp(seconds=1_700_000_000),
                                                period_end=Timestamp(seconds=1_700_086_400))
    getattr(request, field).seconds = 2**62
    with pytest.raises(InvalidArgument) as raised:
        asyncio.run(servicer.ComplianceReport(request, None))
    assert raised.value.field == field


def test_export_range_pages_what_does_not_fit_one_message(servicer: AuditServicer, audit_log: AuditLog) -> None:
    """600 entries of 32 KiB are ~26 MB of export JSON, over the 16 MiB message limit."""
    from services.audit.entry import NewEntry
    from services.audit.export import verify_export
    from services.common.server import MAX_MESSAGE_BYTES

    payload = b'{"log":"' + b"x" * (32 * 1024) + b'"}'
    for batch in range(6):
        audit_log.append([NewEntry("DIAGNOSIS", "acme", f"failure/{batch}-{i}", payload) for i in range(100)])
    seen: list[int] = []
    start = 0
    while True:
        response = asyncio.run(servicer.ExportRange(audit_pb2.ExportRangeRequest(start_index=start, end_index=600),
                                                    None))
        assert response.ByteSize() < MAX_MESSAGE_BYTES
        doc = json.loads(response.export_json)
        verify_export(doc, audit_log.keys.verifiers())
        seen += [entry["index"] for entry in doc["entries"]]
        if not response.next_start_index:
            break
        assert response.next_start_index == seen[-1] + 1
        start = response.next_start_index
    assert seen == list(range(600)) and start > 0  # all of them, in more than one page
