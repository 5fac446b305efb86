"""Intake of a failed job: validating what the caller sent, before any work is done.

Plain domain: the servicer converts the protobuf report into `FailureMetadata`
and calls `validate_metadata`; every problem names the field and the allowed range.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.common.errors import InvalidArgument, Violations
from services.common.vocabulary import Provider
from services.detector.junit import parse_junit

# Unary ReportFailure carries at most this much log; larger logs use StreamFailure.
UNARY_LOG_LIMIT = 4 * 1024 * 1024
# StreamFailure scans logs up to this size in bounded memory.
STREAM_LOG_LIMIT = 1024 * 1024 * 1024
MAX_TEXT = 512
MAX_JUNIT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class FailureMetadata:
    tenant: str
    provider: Provider
    repository: str
    pipeline: str
    job: str
    run_id: str
    attempt: int
    commit_sha: str
    branch: str
    runner: str
    job_id: str
    exit_code: int
    duration_seconds: float
    memory_limit_mb: int
    last_good_revision: str
    diagnose_only: bool

    @property
    def failure_id(self) -> str:
        """Deterministic: the same job attempt reported twice is the same failure."""
        key = "\x1f".join(
            [
                self.tenant,
                self.provider.name,
                self.repository,
                self.pipeline,
                self.job,
                self.run_id,
                str(self.attempt),
            ]
        )
        return "f-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def validate_metadata(meta: FailureMetadata, prefix: str = "report") -> None:
    """Every field refused at once: one InvalidArgument naming each."""
    problems = Violations()
    if meta.provider is Provider.PROVIDER_UNSPECIFIED:
        problems.add(f"{prefix}.job.provider", "is required: GITHUB_ACTIONS, GITLAB, JENKINS, GENERIC or LOCAL")
    for name in ("repository", "pipeline", "job", "run_id"):
        value = getattr(meta, name)
        if not value or not value.strip():
            problems.add(f"{prefix}.job.{name}", "must not be empty")
        elif len(value) > MAX_TEXT:
            problems.add(f"{prefix}.job.{name}", f"must be at most {MAX_TEXT} characters, got {len(value)}")
    if meta.attempt < 1:
        problems.add(f"{prefix}.job.attempt", f"must be >= 1, got {meta.attempt}")
    if meta.duration_seconds < 0:
        problems.add(f"{prefix}.duration_seconds", f"must be >= 0, got {meta.duration_seconds:g}")
    if meta.memory_limit_mb < 0:
        problems.add(f"{prefix}.memory_limit_mb", f"must be >= 0, got {meta.memory_limit_mb}")
    problems.raise_if_any()


def validate_unary_log(log: bytes) -> None:
    if not log:
        raise InvalidArgument("log", "is empty: send the job log (bytes; in grpcurl's JSON, base64)")
    if len(log) > UNARY_LOG_LIMIT:
        raise InvalidArgument(
            "log",
            f"is {len(log)} bytes; ReportFailure takes at most {UNARY_LOG_LIMIT} bytes "
            f"(4 MiB): send larger logs with StreamFailure, in chunks",
        )


def validate_junit(junit: bytes) -> None:
    """An optional JUnit report must be small and well-formed, without DTDs or entities:
    refused here, before any quota is spent or anything is stored."""
    if not junit:
        return
    if len(junit) > MAX_JUNIT_BYTES:
        raise InvalidArgument("report.junit_xml", f"is {len(junit)} bytes; at most {MAX_JUNIT_BYTES} bytes")
    try:
        parse_junit(junit, max_bytes=MAX_JUNIT_BYTES)
    except InvalidArgument as error:
        raise InvalidArgument("report.junit_xml", error.description) from None
