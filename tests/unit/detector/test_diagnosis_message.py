"""The detector's answer as the contract carries it: the failed step and the decisive line
reach `common.v1.Diagnosis` as they were found, and what was not found stays unset."""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf import json_format

from services.common.vocabulary import FailureClass, Provider
from services.detector.evidence import EvidenceLine
from services.detector.intake import FailureMetadata
from services.detector.server import diagnosis_message, failed_step_message, int32_exit_code
from services.detector.service import DiagnosisRecord
from services.detector.steps import FailedStep

STEP = FailedStep(
    name="Run npm test",
    command="npm test",
    exit_code=1,
    framing="github_actions",
    start_line=48,
    end_line=52,
    end_text="##[error]Process completed with exit code 1.",
)
DECISIVE = EvidenceLine(51, "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory")


def record(**changes: object) -> DiagnosisRecord:
    meta = FailureMetadata(
        tenant="acme", provider=Provider.PROVIDER_GITHUB_ACTIONS, repository="acme/web", pipeline="ci", job="test",
        run_id="9001", attempt=1, commit_sha="c" * 40, branch="main", runner="r-1", job_id="", exit_code=1,
        duration_seconds=30.0, memory_limit_mb=0, last_good_revision="", diagnose_only=True,
    )
    base = DiagnosisRecord(
        metadata=meta, failure_class=FailureClass.OUT_OF_MEMORY, confidence=0.9,
        evidence=[EvidenceLine(50, "> jest"), DECISIVE], signature="s", template="FATAL ERROR: <n>",
        decided_by="pattern:oom.node-heap", model_version="", remediation_hint="raise the heap", redactions=0,
        failed_tests=(), flaky_tests=(), flaky_evidence_run_ids=(), cluster_id="c-1", anomaly_score=0.5,
        diagnosed_at=1_700_000_000.0, failed_step=STEP, decisive_line=DECISIVE,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_failed_step_and_decisive_line_reach_the_diagnosis_message() -> None:
    message = diagnosis_message(record())
    step = message.failed_step
    assert (step.name, step.command, step.exit_code, step.framing, step.start_line, step.end_line, step.end_text) == (
        "Run npm test", "npm test", 1, "github_actions", 48, 52, "##[error]Process completed with exit code 1."
    )
    assert step.HasField("exit_code")
    assert (message.decisive_line.line, message.decisive_line.text) == (DECISIVE.line, DECISIVE.text)
    # The existing fields are untouched: the template is still there, beside the real line.
    assert message.template == "FATAL ERROR: <n>" and [e.line for e in message.evidence] == [50, 51]


def test_a_log_without_a_step_or_a_deciding_pattern_leaves_both_unset() -> None:
    message = diagnosis_message(record(failed_step=None, decisive_line=None))
    assert not message.HasField("failed_step") and not message.HasField("decisive_line")
    as_json = json_format.MessageToDict(message)
    assert "failedStep" not in as_json and "decisiveLine" not in as_json


def test_an_unknown_exit_code_is_absent_and_a_zero_one_is_shown() -> None:
    unknown = failed_step_message(dataclasses.replace(STEP, exit_code=None))
    assert not unknown.HasField("exit_code") and "exitCode" not in json_format.MessageToDict(unknown)
    zero = failed_step_message(dataclasses.replace(STEP, exit_code=0))
    assert zero.HasField("exit_code") and json_format.MessageToDict(zero)["exitCode"] == 0


@pytest.mark.parametrize(
    ("reported", "carried"),
    [(1, 1), (-1073741819, -1073741819), (3221225477, -1073741819), (2**32, None), (-(2**31) - 1, None), (None, None)],
)
def test_exit_codes_fit_int32_as_32_bit_statuses(reported: int | None, carried: int | None) -> None:
    assert int32_exit_code(reported) == carried
    message = failed_step_message(dataclasses.replace(STEP, exit_code=reported))
    assert (message.exit_code if message.HasField("exit_code") else None) == carried
