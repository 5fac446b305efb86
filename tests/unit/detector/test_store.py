import dataclasses
import json
import os
from pathlib import Path

import pytest

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.common.vocabulary import FailureClass
from services.detector.diagnose import Diagnoser
from services.detector.patterns import Pattern
from services.detector.sealing import Sealer
from services.detector.store import DetectorStore, FailureRecord


@pytest.fixture()
def store(tmp_path: Path) -> DetectorStore:
    return DetectorStore.open(str(tmp_path / "detector.db"), Sealer(os.urandom(32)))


def _failure(tenant: str, failure_id: str = "f-1") -> FailureRecord:
    return FailureRecord(
        tenant, failure_id, "github_actions", "acme/web", "ci", "build", "9400", 1, "a" * 40, "main", 137, 81.0, "r-1"
    )


def test_diagnosis_round_trip_with_evidence_sealed_at_rest(store: DetectorStore, tmp_path: Path) -> None:
    store.upsert_failure(_failure("acme"))
    result = Diagnoser().diagnose(b"step\nUnique-Marker-Line: JavaScript heap out of memory\n")
    store.save_diagnosis("acme", "f-1", result)
    stored = store.get_diagnosis("acme", "f-1")
    assert stored.failure_class == FailureClass.OUT_OF_MEMORY and stored.evidence == result.evidence
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"Unique-Marker-Line" not in raw
    assert store.failures_with_signature("acme", result.signature) == ["f-1"]


def test_tenants_are_isolated(store: DetectorStore) -> None:
    store.upsert_failure(_failure("acme"))
    store.save_diagnosis("acme", "f-1", Diagnoser().diagnose(b"No space left on device\n"))
    with pytest.raises(NotFound):
        store.get_diagnosis("globex", "f-1")
    with pytest.raises(NotFound):
        store.get_failure("globex", "f-1")
    assert store.upsert_failure(_failure("acme")) is False  # the same job attempt again: refreshed, not new
    assert store.upsert_failure(_failure("globex")) is True  # the same id in another tenant is another failure


def test_shredding_makes_evidence_unreadable(store: DetectorStore) -> None:
    store.upsert_failure(_failure("acme"))
    store.save_diagnosis("acme", "f-1", Diagnoser().diagnose(b"No space left on device\n"))
    store.shred_tenant("acme")
    with pytest.raises(FailedPrecondition):
        store.get_diagnosis("acme", "f-1")


def test_tenant_patterns_crud_and_visibility(store: DetectorStore) -> None:
    mine = Pattern("acme.vault-sealed", "acme", FailureClass.INFRASTRUCTURE, r"Vault is sealed", priority=90)
    store.create_pattern(mine)
    with pytest.raises(AlreadyExists):
        store.create_pattern(mine)
    assert mine.pattern_id in {p.pattern_id for p in store.list_patterns("acme")}
    assert mine.pattern_id not in {p.pattern_id for p in store.list_patterns("globex")}
    with pytest.raises(NotFound):
        store.get_pattern("globex", mine.pattern_id)
    knowledge_base = store.knowledge_base("acme")
    assert Diagnoser(knowledge_base).diagnose(b"error: Vault is sealed\n").pattern_id == "acme.vault-sealed"
    store.update_pattern(
        Pattern("acme.vault-sealed", "acme", FailureClass.CONFIGURATION, r"Vault is sealed", enabled=False)
    )
    assert store.get_pattern("acme", "acme.vault-sealed").enabled is False
    store.delete_pattern("acme", "acme.vault-sealed")
    with pytest.raises(NotFound):
        store.delete_pattern("acme", "acme.vault-sealed")


def test_builtin_patterns_are_visible_and_read_only(store: DetectorStore) -> None:
    builtin = store.get_pattern("globex", "disk.no-space")
    assert builtin.tenant == ""
    with pytest.raises(PermissionDenied, match="read-only"):
        store.update_pattern(Pattern("disk.no-space", "acme", FailureClass.DISK_FULL, "x+y"))
    with pytest.raises(PermissionDenied):
        store.delete_pattern("acme", "disk.no-space")
    with pytest.raises(PermissionDenied):
        store.create_pattern(Pattern("new", "", FailureClass.DISK_FULL, "full"))


def test_bad_pattern_is_refused_and_nothing_is_stored(store: DetectorStore) -> None:
    with pytest.raises(InvalidArgument, match="pattern.expression"):
        store.create_pattern(Pattern("acme.bad", "acme", FailureClass.NETWORK, r"(a)\1"))
    assert store.list_patterns("acme", include_builtin=False) == []


def test_test_history_and_flaky_on_commit(store: DetectorStore) -> None:
    store.record_test_result("acme", "tests/a.py::t", "c1", "r1", passed=False)
    assert not store.flaky_on_commit("acme", "tests/a.py::t", "c1")
    store.record_test_result("acme", "tests/a.py::t", "c1", "r2", passed=True)
    assert store.flaky_on_commit("acme", "tests/a.py::t", "c1")
    assert not store.flaky_on_commit("globex", "tests/a.py::t", "c1")
    assert [r.passed for r in store.test_history("acme", "tests/a.py::t")] == [True, False]


def test_outcomes(store: DetectorStore) -> None:
    store.record_outcome("acme", "f-1", "RETRY", True, "passed on attempt 2")
    assert store.outcomes("acme", "f-1") == [("RETRY", True, "passed on attempt 2")]
    assert store.outcomes("globex", "f-1") == []


GITHUB_LOG = b"""##[group]Run npm test
npm test
##[endgroup]
> web@1.0.0 test
FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory
##[error]Process completed with exit code 134.
"""


def test_failed_step_and_decisive_line_survive_the_round_trip_sealed(store: DetectorStore, tmp_path: Path) -> None:
    store.upsert_failure(_failure("acme"))
    result = Diagnoser().diagnose(GITHUB_LOG)
    assert result.failed_step is not None and result.decisive_line is not None
    store.save_diagnosis("acme", "f-1", result)
    stored = store.get_diagnosis("acme", "f-1")
    assert stored.failed_step == result.failed_step and stored.failed_step.end_text == result.failed_step.end_text
    assert stored.decisive_line == result.decisive_line
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"npm test" not in raw and b"exit code 134" not in raw  # log text: sealed like the evidence


def test_a_diagnosis_without_step_or_decisive_line_reads_back_as_none(store: DetectorStore) -> None:
    store.upsert_failure(_failure("acme"))
    result = dataclasses.replace(Diagnoser().diagnose(GITHUB_LOG), failed_step=None, decisive_line=None)
    store.save_diagnosis("acme", "f-1", result)
    stored = store.get_diagnosis("acme", "f-1")
    assert stored.failed_step is None and stored.decisive_line is None


def test_a_diagnosis_stored_before_steps_were_kept_still_loads(store: DetectorStore) -> None:
    store.upsert_failure(_failure("acme"))
    result = Diagnoser().diagnose(GITHUB_LOG)
    store.save_diagnosis("acme", "f-1", result)
    # What the previous version sealed: no "failed_step", no "decisive_line".
    older = json.dumps({
        "evidence": [[e.line, e.text] for e in result.evidence], "excerpt": result.redacted_excerpt,
        "template": result.template, "failed_tests": [], "flaky_tests": [], "flaky_evidence": [],
    }).encode()
    sealed = store._sealer.seal(store._tenant_key("acme"), "f-1", older)
    with store._db.transaction() as conn:
        conn.execute("UPDATE diagnoses SET sealed_evidence = ? WHERE tenant = 'acme' AND failure_id = 'f-1'", (sealed,))
    stored = store.get_diagnosis("acme", "f-1")
    assert stored.failed_step is None and stored.decisive_line is None
    assert stored.evidence == result.evidence and stored.failure_class == result.failure_class
