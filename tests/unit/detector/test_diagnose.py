import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass
from services.detector.diagnose import Diagnoser, main
from services.detector.evidence import MAX_EVIDENCE_BYTES, MAX_EVIDENCE_LINES
from services.detector.fingerprint import strip_ansi
from services.detector.patterns import KnowledgeBase, default_patterns

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
MANIFEST = json.loads((EXAMPLES / "manifest.json").read_text())


@pytest.fixture(scope="module")
def diagnoser() -> Diagnoser:
    return Diagnoser(KnowledgeBase(default_patterns()))


@pytest.mark.parametrize("sample", MANIFEST, ids=[s["file"] for s in MANIFEST])
def test_every_example_is_classified_as_expected(diagnoser: Diagnoser, sample: dict) -> None:
    log = (EXAMPLES / sample["file"]).read_bytes()
    junit = (EXAMPLES / sample["junit"]).read_bytes() if sample.get("junit") else None
    result = diagnoser.diagnose(log, junit)
    assert result.failure_class.name == sample["expected_class"], result.candidate_classes
    assert result.confidence >= diagnoser.confidence_threshold
    assert result.decided_by.startswith("pattern:")
    file_lines = log.decode("utf-8").split("\n")
    assert result.evidence and len(result.evidence) <= MAX_EVIDENCE_LINES
    assert sum(len(e.text.encode()) + 1 for e in result.evidence) <= MAX_EVIDENCE_BYTES
    for line in result.evidence:
        # 1-based line numbers of the file; text is that line minus colour and timestamp.
        assert line.text[:40] in strip_ansi(file_lines[line.line - 1])


def test_planted_secrets_never_reach_the_result(diagnoser: Diagnoser) -> None:
    for sample in MANIFEST:
        result = diagnoser.diagnose((EXAMPLES / sample["file"]).read_bytes())
        dumped = json.dumps(result.to_json())
        for secret in ("AKIA4HQZ7XK2M9PLWT3R", "Xr7!pq-Lk2v9Zm#t", "ghp_R8k2Lq9Zt", "Zq81mVvT4wPe"):
            assert secret not in dumped


def test_flaky_test_is_named(diagnoser: Diagnoser) -> None:
    result = diagnoser.diagnose((EXAMPLES / "flaky_pytest_rerun.log").read_bytes())
    assert result.flaky_tests == ["tests/jobs/test_scheduler.py::test_debounce_window_coalesces_bursts"]


def test_junit_failures_are_reported(diagnoser: Diagnoser) -> None:
    result = diagnoser.diagnose(
        (EXAMPLES / "test_failure_jest.log").read_bytes(), (EXAMPLES / "test_failure_jest.junit.xml").read_bytes()
    )
    assert len(result.failed_tests) == 2 and "rejects an expired code" in result.failed_tests[1]


def test_empty_log_is_invalid_argument(diagnoser: Diagnoser) -> None:
    with pytest.raises(InvalidArgument, match="log: is empty"):
        diagnoser.diagnose(b"")
    with pytest.raises(InvalidArgument, match="log"):
        diagnoser.diagnose_stream([b"", b""])


def test_zero_byte_chunks_and_tiny_chunks_give_the_same_diagnosis(diagnoser: Diagnoser) -> None:
    log = (EXAMPLES / "oom_killed.log").read_bytes()
    whole = diagnoser.diagnose(log)
    pieces = [b""] + [log[i : i + 13] for i in range(0, len(log), 13)] + [b""]
    streamed = diagnoser.diagnose_stream(iter(pieces))
    assert (streamed.failure_class, streamed.signature, streamed.evidence) == (
        whole.failure_class, whole.signature, whole.evidence
    )


def test_invalid_utf8_is_replaced_not_fatal(diagnoser: Diagnoser) -> None:
    log = b"\xff\xfe garbage \xc3\x28\n" + "caf\u00e9 ".encode()[:4] + b"\nwrite: No space left on device\n"
    result = diagnoser.diagnose(log)
    assert result.failure_class == FailureClass.DISK_FULL
    assert result.evidence[-1].line == 3


def test_multibyte_character_split_across_chunks(diagnoser: Diagnoser) -> None:
    encoded = "✓ ok\n✘ JavaScript heap out of memory\n".encode()
    split = diagnoser.diagnose_stream([encoded[:1], encoded[1:2], encoded[2:]])
    assert split.failure_class == FailureClass.OUT_OF_MEMORY
    assert "\ufffd" not in split.redacted_excerpt


def test_unmatched_log_is_unknown_with_tail_evidence(diagnoser: Diagnoser) -> None:
    result = diagnoser.diagnose(b"step one\nstep two\nsomething odd happened: error 42\nbye\n")
    assert result.failure_class == FailureClass.UNKNOWN and result.decided_by == "none"
    assert result.evidence[0].line == 3


class _FakeModel:
    version = "fake-1"

    def __init__(self, answer: FailureClass, confidence: float) -> None:
        self.answer, self.confidence, self.calls = answer, confidence, 0

    def predict(self, text: str | bytes, features: Sequence[str] = ()) -> tuple[FailureClass, float]:
        self.calls += 1
        return self.answer, self.confidence


def test_model_decides_only_when_no_pattern_does() -> None:
    model = _FakeModel(FailureClass.NETWORK, 0.9)
    diagnoser = Diagnoser(KnowledgeBase(default_patterns()), model=model)
    assert diagnoser.diagnose(b"weird thing\n").decided_by == "model:fake-1"
    assert diagnoser.diagnose(b"No space left on device\n").failure_class == FailureClass.DISK_FULL
    assert model.calls == 1


def test_unsure_model_gives_unknown() -> None:
    diagnoser = Diagnoser(KnowledgeBase(default_patterns()), model=_FakeModel(FailureClass.NETWORK, 0.3))
    assert diagnoser.diagnose(b"weird thing\n").failure_class == FailureClass.UNKNOWN


def test_root_cause_outranks_symptoms(diagnoser: Diagnoser) -> None:
    log = (
        b"FAILED tests/test_a.py::test_x - OSError\n=== 1 failed, 3 passed in 2.0s ===\n"
        b"OSError: [Errno 28] No space left on device\n"
    )
    assert diagnoser.diagnose(log).failure_class == FailureClass.DISK_FULL


def test_evidence_stays_bounded_on_a_large_noisy_log(diagnoser: Diagnoser) -> None:
    noise = b"".join(b"line %d: npm ERR! network ECONNRESET " % i + b"x" * 900 + b"\n" for i in range(3000))
    result = diagnoser.diagnose(noise)
    assert result.failure_class == FailureClass.DEPENDENCY_FETCH
    assert len(result.evidence) <= MAX_EVIDENCE_LINES
    assert sum(len(e.text.encode()) + 1 for e in result.evidence) <= MAX_EVIDENCE_BYTES
    assert len(result.redacted_excerpt) <= 8192
    assert result.bytes_scanned == len(noise)


def test_cli_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(EXAMPLES / "oom_node_heap.log"), "--json", "--no-model"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["failure_class"] == "OUT_OF_MEMORY"
    assert 0 <= data["confidence"] <= 1 and len(data["signature"]) == 64
    assert all(set(e) == {"line", "text"} and e["line"] >= 1 for e in data["evidence"])


def test_cli_runs_as_a_module_and_reports_missing_files() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.detector.diagnose", str(EXAMPLES / "timeout_job.log"), "--no-model"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0 and done.stdout.startswith("TIMEOUT")
    missing = subprocess.run(
        [sys.executable, "-m", "services.detector.diagnose", "/nonexistent.log", "--no-model"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode == 1 and "cannot read" in missing.stderr
