"""Intake validation: every refusal names the field and says what is allowed."""

from __future__ import annotations

import dataclasses

import pytest

from services.common.errors import InvalidArgument
from services.common.vocabulary import Provider
from services.detector.intake import (
    UNARY_LOG_LIMIT,
    FailureMetadata,
    validate_junit,
    validate_metadata,
    validate_unary_log,
)

GOOD = FailureMetadata(
    tenant="acme",
    provider=Provider.PROVIDER_GITLAB,
    repository="acme/web",
    pipeline="ci",
    job="test",
    run_id="7",
    attempt=1,
    commit_sha="c" * 40,
    branch="main",
    runner="",
    job_id="",
    exit_code=1,
    duration_seconds=3.0,
    memory_limit_mb=0,
    last_good_revision="",
    diagnose_only=False,
)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"provider": Provider.PROVIDER_UNSPECIFIED}, "report.job.provider", "is required"),
        ({"repository": "  "}, "report.job.repository", "must not be empty"),
        ({"run_id": "x" * 600}, "report.job.run_id", "at most 512 characters, got 600"),
        ({"attempt": -3}, "report.job.attempt", "must be >= 1, got -3"),
        ({"duration_seconds": -1.5}, "report.duration_seconds", ">= 0, got -1.5"),
        ({"memory_limit_mb": -1}, "report.memory_limit_mb", ">= 0, got -1"),
    ],
)
def test_bad_metadata_names_the_field(change: dict, field: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        validate_metadata(dataclasses.replace(GOOD, **change))
    assert caught.value.field == field


def test_failure_id_is_the_job_attempt() -> None:
    assert GOOD.failure_id == dataclasses.replace(GOOD, exit_code=2).failure_id
    assert GOOD.failure_id != dataclasses.replace(GOOD, attempt=2).failure_id
    assert GOOD.failure_id != dataclasses.replace(GOOD, tenant="globex").failure_id


def test_unary_log_limits() -> None:
    with pytest.raises(InvalidArgument, match="is empty"):
        validate_unary_log(b"")
    with pytest.raises(InvalidArgument, match="StreamFailure"):
        validate_unary_log(b"x" * (UNARY_LOG_LIMIT + 1))
    validate_unary_log(b"\xff\xfe not utf-8 is fine")


@pytest.mark.parametrize(
    "junit",
    [
        b"<testsuite><testcase",  # truncated
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><testsuite>&b;</testsuite>',
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><testsuite>&e;</testsuite>',
        b"<html><body>not junit</body></html>",
        b"   ",
    ],
)
def test_hostile_or_malformed_junit_is_refused_naming_the_field(junit: bytes) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_junit(junit)
    assert caught.value.field == "report.junit_xml"


def test_no_junit_is_fine() -> None:
    validate_junit(b"")
    validate_junit(b'<testsuite><testcase name="t"/></testsuite>')


def test_every_missing_field_is_refused_at_once() -> None:
    empty = dataclasses.replace(GOOD, provider=Provider.PROVIDER_UNSPECIFIED, repository="", pipeline=" ", job="",
                                run_id="", attempt=0)
    with pytest.raises(InvalidArgument) as raised:
        validate_metadata(empty)
    assert [field for field, _ in raised.value.violations] == [
        "report.job.provider", "report.job.repository", "report.job.pipeline", "report.job.job",
        "report.job.run_id", "report.job.attempt"]
