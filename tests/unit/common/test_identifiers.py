"""Identifier fields of every request are bounded at the edge, naming the field and the maximum."""

from __future__ import annotations

import pytest

from healing_guard.audit.v1 import audit_pb2
from healing_guard.common.v1 import common_pb2
from healing_guard.coordinator.v1 import coordinator_pb2
from healing_guard.detector.v1 import detector_pb2
from healing_guard.tenancy.v1 import tenancy_pb2
from services.common.errors import InvalidArgument
from services.common.identifiers import MAX_IDENTIFIER, check_identifier_lengths

LONG = "A" * 70_000


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (detector_pb2.GetDiagnosisRequest(failure_id=LONG), "failure_id"),
        (detector_pb2.ReportFailureRequest(report=detector_pb2.FailureReport(job=common_pb2.JobRef(run_id=LONG))),
         "report.job.run_id"),
        (audit_pb2.AppendRequest(entries=[audit_pb2.NewEntry(), audit_pb2.NewEntry(subject=LONG)]),
         "entries[1].subject"),
        (tenancy_pb2.IssueTokenRequest(tenant_id="acme", roles=["viewer", LONG]), "roles[1]"),
        (coordinator_pb2.RegisterExecutorRequest(executor_id="x", labels={LONG: "v"}), "labels key"),
        (tenancy_pb2.CreateTenantRequest(tenant_id="t", display_name=LONG), "display_name"),
    ],
)
def test_an_oversized_identifier_is_refused_naming_field_and_maximum(request_message, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as raised:
        check_identifier_lengths(request_message)
    assert raised.value.field == field
    assert raised.value.description == f"must be at most {MAX_IDENTIFIER} characters, got 70000"


def test_identifiers_at_the_limit_and_free_text_pass() -> None:
    check_identifier_lengths(detector_pb2.GetDiagnosisRequest(failure_id="f" * MAX_IDENTIFIER, tenant_id="acme"))
    check_identifier_lengths(audit_pb2.AppendRequest(entries=[audit_pb2.NewEntry(subject="s", payload=b"x" * 70_000)]))
    check_identifier_lengths(detector_pb2.CreatePatternRequest(pattern=detector_pb2.Pattern(description=LONG)))
