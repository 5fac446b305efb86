"""The detector's use cases, free of gRPC: diagnose (unary or streamed), look up,
learn from outcomes. Composes the diagnosis pipeline with the detector's store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.config import ServiceConfig
from services.common.errors import NotFound
from services.common.vocabulary import FailureClass
from services.detector.intake import FailureMetadata


@dataclass
class StoredDiagnosis:
    metadata: FailureMetadata
    result: Any  # services.detector.diagnose.DiagnosisResult
    diagnosed_at: float
    cluster_id: str = ""
    anomaly_score: float = 0.0
    model_version: str = ""


class DetectorCore:
    def __init__(self, diagnoser: Any, data_dir: Path) -> None:
        self.diagnoser = diagnoser
        self.data_dir = data_dir
        self._lock = threading.Lock()
        # Diagnoses by (tenant, failure id). Replaced by the detector store (SQLite, evidence sealed).
        self._diagnoses: dict[tuple[str, str], StoredDiagnosis] = {}
        self._outcomes: set[tuple[str, str]] = set()

    @classmethod
    def open(cls, config: ServiceConfig, confidence_threshold: float) -> DetectorCore:
        from services.detector.patterns import KnowledgeBase, default_patterns

        knowledge = KnowledgeBase(default_patterns())
        try:
            from services.detector.diagnose import Diagnoser
        except ImportError:  # the full pipeline is being built; patterns alone meanwhile
            return cls(_PatternDiagnoser(knowledge, confidence_threshold), config.data_dir)
        return cls(Diagnoser(knowledge, model=None, confidence_threshold=confidence_threshold), config.data_dir)

    def set_threshold(self, value: float) -> None:
        self.diagnoser.confidence_threshold = value

    def diagnose(self, meta: FailureMetadata, log: bytes, junit: bytes | None) -> StoredDiagnosis:
        return self._keep(meta, self.diagnoser.diagnose(log, junit))

    def diagnose_stream(self, meta: FailureMetadata, chunks: Iterable[bytes], junit: bytes | None) -> StoredDiagnosis:
        return self._keep(meta, self.diagnoser.diagnose_stream(chunks, junit))

    def _keep(self, meta: FailureMetadata, result: Any) -> StoredDiagnosis:
        stored = StoredDiagnosis(metadata=meta, result=result, diagnosed_at=time.time(),
                                 model_version=getattr(result, "model_version", "") or "")
        with self._lock:
            self._diagnoses[(meta.tenant, meta.failure_id)] = stored
        return stored

    def get(self, tenant: str, failure_id: str) -> StoredDiagnosis:
        with self._lock:
            stored = self._diagnoses.get((tenant, failure_id))
        if stored is None:
            raise NotFound("diagnosis", failure_id)
        return stored

    def record_outcome(self, tenant: str, outcome_id: str, failure_id: str, success: bool,
                       failure_class: FailureClass) -> bool:
        with self._lock:
            if (tenant, outcome_id) in self._outcomes:
                return False
            self._outcomes.add((tenant, outcome_id))
        return True

    def close(self) -> None:
        pass


@dataclass
class _Evidence:
    line: int
    text: str


@dataclass
class _PatternResult:
    failure_class: FailureClass
    confidence: float
    evidence: list[_Evidence]
    signature: str
    template: str
    decided_by: str
    remediation_hint: str
    redaction_count: int
    failed_tests: tuple = ()
    flaky_tests: tuple = ()


class _PatternDiagnoser:
    """Redact, scan with the knowledge base, take the highest-priority class."""

    def __init__(self, knowledge: Any, confidence_threshold: float) -> None:
        self.knowledge = knowledge
        self.confidence_threshold = confidence_threshold

    def diagnose(self, log: bytes, junit: bytes | None = None) -> _PatternResult:
        from services.common.errors import InvalidArgument
        from services.detector.fingerprint import normalise, signature
        from services.detector.redaction import redact

        if not log:
            raise InvalidArgument("log", "is empty")
        redacted = redact(log.decode("utf-8", errors="replace"))
        matches = self.knowledge.scan(redacted.text)
        if not matches:
            return _PatternResult(FailureClass.UNKNOWN, 0.0, [], signature([]), "", "none", "", redacted.count)
        best = max(matches, key=lambda m: (m.pattern.priority, -m.line_no))
        same = [m for m in matches if m.pattern.failure_class is best.pattern.failure_class][:10]
        evidence = [_Evidence(m.line_no, m.line[:500]) for m in same]
        confidence = min(0.99, 0.7 + 0.05 * len(same))
        return _PatternResult(best.pattern.failure_class, confidence, evidence,
                              signature(e.text for e in evidence), normalise(best.line),
                              f"pattern:{best.pattern.pattern_id}", best.pattern.remediation_hint, redacted.count)

    def diagnose_stream(self, chunks: Iterable[bytes], junit: bytes | None = None) -> _PatternResult:
        return self.diagnose(b"".join(chunks), junit)
