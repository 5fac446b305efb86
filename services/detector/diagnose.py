"""Diagnose one failed CI job from its log: redact, scan, decide, fingerprint.

The log is processed as it arrives, block by block, in bounded memory: each
block is decoded (invalid UTF-8 replaced, never fatal), redacted, stripped of
ANSI colour, scanned once with the knowledge base, and reduced to evidence
candidates, test outcomes and a tail window. A 100 MiB log costs one pass and
a few hundred KiB of memory.

How the class is decided (in this order):
1. Patterns. Every class with a matching pattern is a candidate; the class of
   the highest-priority matching pattern wins (ties: more matching lines, then
   the earlier line). Confidence = 0.5 + 0.45 * priority/100, +0.05 when the
   class matched on 3+ lines, -0.1 when another class came within 10 priority
   points. JUnit failures count as TEST_FAILURE evidence at priority 55.
   A failure the log shows passing on re-run turns TEST_FAILURE into FLAKY_TEST.
2. The model (optional), only when no pattern reaches the threshold: it sees
   the evidence and the tail of the redacted log. If it agrees with a weak
   pattern decision, the two confidences combine as independent evidence.
3. Below `confidence_threshold`: UNKNOWN, decided_by "none".

CLI: python -m services.detector.diagnose LOGFILE [--junit FILE] [--json]
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import functools
import json
import logging
import re
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import re2

from services.common.errors import HealingGuardError, InvalidArgument
from services.common.vocabulary import FailureClass
from services.detector import fingerprint
from services.detector.evidence import (
    MAX_EVIDENCE_LINES,
    EvidenceCollector,
    EvidenceLine,
    bound,
    clip,
)
from services.detector.junit import JUnitReport, parse_junit, test_id
from services.detector.patterns import (
    KnowledgeBase,
    Match,
    Pattern,
    command_patterns,
    default_patterns,
)
from services.detector.redaction import StreamingRedactor
from services.detector.steps import FailedStep, StepTracker

logger = logging.getLogger(__name__)

BLOCK_BYTES = 1 << 20  # chunks are gathered into blocks of about this size before scanning
TAIL_LINES = 200
TAIL_BYTES = 64 << 10
MAX_EXCERPT_BYTES = 8 << 10
MAX_MODEL_INPUT_BYTES = 64 << 10
MAX_TRACKED_TESTS = 10_000
JUNIT_PRIORITY = 55
JUNIT_PATTERN_ID = "junit.failed-testcase"
RECENT_MATCHES = 64
# A match inside the failing step (or after it) outranks one of equal priority before it.
IN_STEP_BONUS = 0.05

# Presentation noise removed before scanning (line breaks are kept): ANSI colour
# and the timestamp prefixes GitHub, GitLab and Jenkins' timestamper put on lines,
# so patterns can anchor on the tool's own output with ^.
# Two passes, each with a literal first byte so `re` jumps between candidates instead
# of trying every position (about 3x faster on 1 MiB than one alternation anchored on ^).
_ANSI = re.compile(rb"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])")
_LINE_STAMP = re.compile(rb"\n\[?[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z\]? (?:[0-9]{2}[OE]\+? )?")


def strip_presentation(block: bytes) -> bytes:
    """`block` (whole lines) without ANSI colour and runner timestamp prefixes; line breaks kept."""
    if b"\x1b" in block:
        block = _ANSI.sub(b"", block)
    if b"Z " in block or b"Z] " in block:
        block = _LINE_STAMP.sub(b"\n", b"\n" + block)[1:]
    return block

_STATUS_OPTIONS = re2.Options()
_STATUS_OPTIONS.max_mem = 64 << 20
# Test outcome lines that let the log itself show a test failing then passing.
_TEST_STATUS = re2.compile(
    rb"(?m)^(?:[0-9T:.\-]+Z )?(?:"
    rb"([^\s]+::[^\s]+) (RERUN|PASSED|FAILED|ERROR)\b"  # pytest -v: id, status
    rb"|(RERUN|FAILED|ERROR) ([^\s]+::[^\s]+)"  # pytest short summary: status, id
    # playwright
    rb"|\s*(\xe2\x9c\x93|\xe2\x9c\x98|ok|x)\s+[0-9]+ (\[[^\]]+\] .+?)(?: \(retry #[0-9]+\))?(?: \([0-9.]+m?s\))?\s*$"
    rb")",
    _STATUS_OPTIONS,
)


class FailureModel(Protocol):
    """What the trained classifier offers (services.detector.model provides one)."""

    version: str

    def predict(self, text: str | bytes, features: Sequence[str] = ()) -> tuple[FailureClass, float]: ...


@dataclass(frozen=True)
class DiagnosisResult:
    failure_class: FailureClass
    confidence: float
    evidence: list[EvidenceLine]
    signature: str
    template: str
    decided_by: str  # "pattern:<id>" | "model:<version>" | "none"
    pattern_id: str
    remediation_hint: str
    redaction_count: int
    failed_tests: list[str]
    flaky_tests: list[str]
    bytes_scanned: int
    redacted_excerpt: str
    lines_scanned: int = 0
    redaction_kinds: dict[str, int] = field(default_factory=dict)
    # Every class some pattern matched, with its best priority (for explanations).
    candidate_classes: dict[str, int] = field(default_factory=dict)
    # The last lines of the log, redacted and clipped (anomaly features, template novelty).
    tail_lines: tuple[str, ...] = field(default=(), repr=False)
    # The step or command that failed, from the provider's framing (None: the log shows none).
    failed_step: FailedStep | None = None
    # The line the decision rests on (the deciding pattern's match), real log text.
    decisive_line: EvidenceLine | None = None
    # What the model reads (or would read) of this log: its text and the detector's features.
    model_input: str = field(default="", repr=False)
    model_features: tuple[str, ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        for internal in ("tail_lines", "model_input", "model_features"):
            data.pop(internal)
        step = self.failed_step
        data["failed_step"] = None if step is None else {
            "name": step.name, "command": step.command, "exit_code": step.exit_code, "framing": step.framing,
            "start_line": step.start_line, "line": step.end_line,
        }
        data["failure_class"] = self.failure_class.name
        data["confidence"] = round(self.confidence, 4)
        return data


@dataclass
class _ClassTally:
    best: Match
    count: int = 0


class _TestOutcomes:
    """Which tests the log shows failing, and which of those later passed."""

    def __init__(self) -> None:
        self.failed: dict[str, None] = {}
        self.recovered: dict[str, None] = {}

    def observe(self, block_bytes: bytes) -> None:
        if b"::" not in block_bytes and b"\xe2\x9c" not in block_bytes:
            return
        for found in _TEST_STATUS.finditer(block_bytes):
            name = found.group(1) or found.group(4)
            status = found.group(2) or found.group(3)
            if name is None and found.group(6) is not None:
                name = found.group(6)
                status = b"PASSED" if found.group(5) in (b"\xe2\x9c\x93", b"ok") else b"FAILED"
            if name is None or status is None:
                continue
            test = name.decode("utf-8", "replace").strip()
            if status == b"PASSED":
                if test in self.failed:
                    self.recovered.setdefault(test, None)
            elif len(self.failed) < MAX_TRACKED_TESTS:
                self.failed.setdefault(test, None)

    @property
    def flaky(self) -> list[str]:
        return list(self.recovered)

    @property
    def still_failing(self) -> list[str]:
        return [t for t in self.failed if t not in self.recovered]


class _LogScan:
    """The state of one diagnosis while its log streams past (bounded)."""

    def __init__(self, knowledge_base: KnowledgeBase) -> None:
        self._knowledge_base = knowledge_base
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._redactor = StreamingRedactor()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.bytes_scanned = 0
        self.lines = 0
        self.tallies: dict[FailureClass, _ClassTally] = {}
        self.evidence = EvidenceCollector()
        self.tests = _TestOutcomes()
        self.tail: deque[tuple[int, str]] = deque(maxlen=TAIL_LINES)
        self.steps = StepTracker()
        # The last matches of each class: the failing step is usually near the end, and its
        # matches are the ones that explain the failure.
        self.recent: dict[FailureClass, deque[Match]] = {}

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.bytes_scanned += len(chunk)
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= BLOCK_BYTES:
            self._flush()

    def finish(self) -> None:
        self._flush()
        tail = self._decoder.decode(b"", final=True).encode("utf-8")
        self._process(self._redactor.feed_bytes(tail) + self._redactor.finish_bytes())

    @property
    def redaction_count(self) -> int:
        return self._redactor.count

    @property
    def redaction_kinds(self) -> dict[str, int]:
        return dict(self._redactor.kinds)

    def _flush(self) -> None:
        if not self._pending:
            return
        raw = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        self._process(self._redactor.feed_bytes(self._valid_utf8(raw)))

    def _valid_utf8(self, raw: bytes) -> bytes:
        """`raw` as valid UTF-8: invalid sequences replaced by U+FFFD, as decoding with
        errors="replace" would (ASCII, the common case, passes through untouched)."""
        if not self._decoder.getstate()[0]:
            if raw.isascii():
                return raw
            try:
                raw.decode("utf-8")  # strict: complete, valid UTF-8 is already what we want
                return raw
            except UnicodeDecodeError:
                pass  # invalid, or a character split across blocks: the decoder replaces or keeps it
        return self._decoder.decode(raw).encode("utf-8")

    def _process(self, encoded: bytes) -> None:
        """One block of redacted, valid UTF-8 lines: everything but the decision."""
        if not encoded:
            return
        encoded = strip_presentation(encoded)
        first_line_no = self.lines + 1
        matches = list(self._knowledge_base.scan_bytes(encoded, first_line_no))
        for match in matches:
            recent = self.recent.get(match.pattern.failure_class)
            if recent is None:
                recent = self.recent[match.pattern.failure_class] = deque(maxlen=RECENT_MATCHES)
            recent.append(match)
            tally = self.tallies.get(match.pattern.failure_class)
            if tally is None:
                self.tallies[match.pattern.failure_class] = _ClassTally(match, 1)
            else:
                tally.count += 1
                if match.pattern.priority > tally.best.pattern.priority:
                    tally.best = match
        self.evidence.observe(first_line_no, encoded, matches)
        self.tests.observe(encoded)
        self.steps.observe(first_line_no, encoded)
        line_count = encoded.count(b"\n") + (0 if encoded.endswith(b"\n") else 1)
        self._remember_tail(encoded, first_line_no + line_count - 1)
        self.lines += line_count

    def _remember_tail(self, block: bytes, last_line_no: int) -> None:
        window = block[-TAIL_BYTES:]
        lines = window.split(b"\n")
        if block.endswith(b"\n"):
            lines = lines[:-1]
        if len(window) < len(block) and lines:
            lines = lines[1:]  # the first piece may be a partial line
        lines = lines[-TAIL_LINES:]
        first = last_line_no - len(lines) + 1
        self.tail.extend((first + i, clip(line.decode("utf-8", "replace"))) for i, line in enumerate(lines))


def _pattern_confidence(priority: int, count: int, runner_up: int | None) -> float:
    confidence = 0.5 + 0.45 * priority / 100
    if count >= 3:
        confidence += 0.05
    if runner_up is not None and priority - runner_up < 10:
        confidence -= 0.1
    return max(0.0, min(1.0, confidence))


OUTSIDE_STEP_PENALTY = 15
WARNING_PENALTY = 20
AFTER_STEP_GRACE = 3  # lines after the failure report that still belong to it
# Causes a provider reports for the job after the failing step's own output ends.
JOB_LEVEL_CLASSES = frozenset({
    FailureClass.TIMEOUT, FailureClass.INFRASTRUCTURE, FailureClass.OUT_OF_MEMORY, FailureClass.DISK_FULL,
})
# Classes whose words turn up in harmless lines (retries, warnings, cleanup) most often.
NOISE_CLASSES = frozenset({
    FailureClass.NETWORK, FailureClass.PERMISSION, FailureClass.CONFIGURATION, FailureClass.DEPENDENCY_FETCH,
})
COMMAND_LINE_PENALTY = 20
# A line that shows a command being run (shell trace, GitLab/Travis `$ `, a GitHub step
# header): its words are the command's, not an error it printed.
_COMMAND_LINE = re.compile(r"\++ |\$ |##\[group\]Run |Run ")
# Warnings, and the side effects a job has after its work (uploading reports, artifacts,
# metrics, writing a build cache), whose failures do not fail the job.
_WARNING_LINE = re.compile(r"(?i)\bwarn(?:ing)?s?\b|\bwarn\(|^W: |\[WARN|\bupload(?:ing)?\b|\bsccache\b"
                           r"|\btelemetry\b|\bmetrics?\b")


@functools.cache
def _command_rules() -> tuple[tuple[Pattern, re2._Regexp], ...]:
    return tuple((p, re2.compile(p.expression)) for p in command_patterns())


@functools.cache
def _exit_code_patterns() -> dict[int, Pattern]:
    """Exit codes the shell and the kernel give meaning to, as weak priors."""
    from services.detector.knowledge_base.defaults import EXIT_CODE_RULES, HINT  # noqa: PLC0415

    return {code: Pattern(pattern_id=rule_id, tenant="", failure_class=failure_class, expression=f"exit {code}",
                          description=description, remediation_hint=HINT[failure_class], priority=priority)
            for code, rule_id, failure_class, priority, description in EXIT_CODE_RULES}


TEST_OUTPUT_PENALTY = 25
# What a test prints while it fails (a refused connection, a denied file, a bad setting, its
# own time limit) is the test's failure when the run goes on to report failed tests.
_TEST_SYMPTOM_CLASSES = frozenset({FailureClass.NETWORK, FailureClass.PERMISSION, FailureClass.CONFIGURATION})
# Time limits of one test or call, not of the job: inside a test run they are a failing test.
_TEST_LEVEL_TIMEOUTS = frozenset({"timeout.js-test", "timeout.timed-out-after", "timeout.deadline",
                                  "timeout.generic-exceeded", "timeout.wait-condition"})


def _inside_test_output(
    tallies: dict[FailureClass, _ClassTally], scan: _LogScan
) -> dict[FailureClass, _ClassTally]:
    tests = tallies.get(FailureClass.TEST_FAILURE)
    if tests is None or tests.best.pattern.priority < 50:
        return tallies
    last_test_line = max((m.line_no for m in scan.recent.get(FailureClass.TEST_FAILURE, ())), default=0)
    for failure_class in (_TEST_SYMPTOM_CLASSES | {FailureClass.TIMEOUT}) & tallies.keys():
        best = tallies[failure_class].best
        if failure_class == FailureClass.TIMEOUT and best.pattern.pattern_id not in _TEST_LEVEL_TIMEOUTS:
            continue
        if best.line_no < last_test_line:
            demoted = dataclasses.replace(best.pattern, priority=max(0, best.pattern.priority - TEST_OUTPUT_PENALTY))
            tallies[failure_class] = _ClassTally(Match(demoted, best.line_no, best.line, best.start),
                                                 tallies[failure_class].count)
    return tallies


def _with_step_end(lines: list[EvidenceLine], step: FailedStep | None) -> list[EvidenceLine]:
    """The evidence, with the line that reported the step's failure when the log has it."""
    text = getattr(step, "end_text", "") if step is not None else ""
    if step is None or not text or step.end_line <= 0 or any(e.line == step.end_line for e in lines):
        return lines
    return bound(sorted([*lines, EvidenceLine(step.end_line, clip(text))], key=lambda e: e.line))


_FEATURE_WORD = re.compile(r"[a-z][a-z0-9+_.-]*")


def model_features(step: FailedStep | None, tallies: dict[FailureClass, _ClassTally]) -> list[str]:
    """What the model reads beside the log's words: the failing step and the patterns' votes."""
    features: list[str] = []
    if step is not None:
        features.append(f"framing:{step.framing}")
        features.append(f"exit:{step.exit_code}" if step.exit_code is not None else "exit:none")
        words = _FEATURE_WORD.findall(step.command.lower())[:6]
        features.extend(f"cmd:{w.rsplit('/', 1)[-1]}" for w in words)
        features.extend(f"stepname:{w}" for w in _FEATURE_WORD.findall(step.name.lower())[:4])
    else:
        features.append("framing:none")
    for failure_class, tally in tallies.items():
        features.append(f"kb:{tally.best.pattern.pattern_id}")
        features.append(f"kbclass:{failure_class.name.lower()}")
    return features


class Diagnoser:
    """Classifies failed CI jobs; one instance serves many diagnoses (thread-safe)."""

    def __init__(
        self,
        knowledge_base: KnowledgeBase | None = None,
        model: FailureModel | None = None,
        confidence_threshold: float = 0.6,
    ) -> None:
        if not 0.0 <= confidence_threshold <= 1.0:
            raise InvalidArgument("confidence_threshold", f"must be in [0, 1], got {confidence_threshold}")
        self.knowledge_base = knowledge_base if knowledge_base is not None else KnowledgeBase(default_patterns())
        self.model = model
        self.confidence_threshold = confidence_threshold

    def diagnose(self, log: bytes, junit_xml: bytes | None = None) -> DiagnosisResult:
        if not log:
            raise InvalidArgument("log", "is empty; send the job log (at least one byte)")
        step = BLOCK_BYTES
        return self.diagnose_stream((log[i : i + step] for i in range(0, len(log), step)), junit_xml)

    def diagnose_stream(self, chunks: Iterable[bytes], junit_xml: bytes | None = None) -> DiagnosisResult:
        report = parse_junit(junit_xml) if junit_xml else None
        scan = _LogScan(self.knowledge_base)
        for chunk in chunks:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise InvalidArgument("log", f"chunks must be bytes, got {type(chunk).__name__}")
            scan.feed(bytes(chunk))
        if scan.bytes_scanned == 0:
            raise InvalidArgument("log", "is empty; send the job log (at least one byte)")
        scan.finish()
        return self._decide(scan, report)

    def _decide(self, scan: _LogScan, report: JUnitReport | None) -> DiagnosisResult:
        step = scan.steps.finish()
        # Where the failing step began; unknown (0) when the framing shows only its end.
        window_start = step.start_line if step is not None else 0
        tallies = self._weighed_tallies(scan, step, window_start)
        command = self._command_match(step)
        if command is not None and command.pattern.failure_class not in tallies:
            tallies[command.pattern.failure_class] = _ClassTally(command, 1)
        ranked = sorted(
            tallies.items(),
            key=lambda item: (-item[1].best.pattern.priority, -item[1].count, -item[1].best.line_no),
        )
        failed_tests = list(dict.fromkeys(
            [test_id(t.classname, t.name) for t in report.failed] if report else scan.tests.still_failing
        ))
        flaky_tests = scan.tests.flaky
        winner: FailureClass | None = None
        deciding: Match | None = None
        confidence = 0.0
        if ranked:
            winner, tally = ranked[0]
            deciding = tally.best
            runner_up = ranked[1][1].best.pattern.priority if len(ranked) > 1 else None
            confidence = _pattern_confidence(tally.best.pattern.priority, tally.count, runner_up)
            if command is not None and command.pattern.failure_class == winner and deciding is not command:
                confidence = min(0.99, confidence + 0.1)  # the tool's output and its command agree
        if report and report.failed and (
            winner is None or deciding is None or deciding.pattern.priority < JUNIT_PRIORITY
        ):
            winner, deciding = FailureClass.TEST_FAILURE, None
            confidence = _pattern_confidence(JUNIT_PRIORITY, len(report.failed), None)
        if winner == FailureClass.TEST_FAILURE and flaky_tests and not failed_tests:
            winner = FailureClass.FLAKY_TEST
        decided_by, pattern_id, hint = "none", "", ""
        if winner is not None and confidence >= self.confidence_threshold:
            pattern = deciding.pattern if deciding is not None and deciding.pattern.failure_class == winner else None
            pattern = pattern or self._class_pattern(winner, scan)
            pattern_id = pattern.pattern_id if pattern else JUNIT_PATTERN_ID
            decided_by = f"pattern:{pattern_id}"
            hint = pattern.remediation_hint if pattern else ""
        evidence = self._evidence(scan, winner, deciding, report, step, window_start)
        features = tuple(model_features(step, tallies))
        model_input = self._model_input(evidence, scan)
        if decided_by == "none" and self.model is not None:
            model_class, model_confidence = self.model.predict(model_input, features)
            if winner is not None and model_class == winner:
                model_confidence = 1 - (1 - model_confidence) * (1 - confidence)
            if (
                model_class not in (FailureClass.UNKNOWN, FailureClass.FAILURE_CLASS_UNSPECIFIED)
                and model_confidence >= self.confidence_threshold
            ):
                if model_class != winner:
                    deciding = tallies[model_class].best if model_class in tallies else None
                winner, confidence = FailureClass(model_class), float(model_confidence)
                decided_by = f"model:{self.model.version}"
                hint = self._hint_for(winner)
                evidence = self._evidence(scan, winner, deciding, report, step, window_start)
        if decided_by == "none":
            winner = FailureClass.UNKNOWN
        assert winner is not None
        template = (
            fingerprint.normalise(deciding.line) if deciding is not None and decided_by != "none" else ""
        )
        signature_lines = [e.text for e in evidence]
        if winner != FailureClass.UNKNOWN and scan.evidence.matched_lines(winner):
            signature_lines = [e.text for e in scan.evidence.matched_lines(winner)]
        return DiagnosisResult(
            failure_class=winner,
            confidence=round(min(1.0, max(0.0, confidence)), 4),
            evidence=evidence,
            signature=fingerprint.signature([winner.name, *signature_lines]),
            template=template or (fingerprint.normalise(evidence[0].text) if evidence else ""),
            decided_by=decided_by,
            pattern_id=pattern_id,
            remediation_hint=hint,
            redaction_count=scan.redaction_count,
            failed_tests=failed_tests[:100],
            flaky_tests=flaky_tests[:100],
            bytes_scanned=scan.bytes_scanned,
            redacted_excerpt=self._excerpt(evidence, scan),
            lines_scanned=scan.lines,
            redaction_kinds=scan.redaction_kinds,
            candidate_classes={c.name: t.best.pattern.priority for c, t in ranked},
            tail_lines=tuple(t for _, t in scan.tail),
            failed_step=step,
            decisive_line=(
                EvidenceLine(deciding.line_no, clip(deciding.line))
                if deciding is not None and decided_by != "none" else None
            ),
            model_input=model_input,
            model_features=features,
        )

    def _weighed_tallies(
        self, scan: _LogScan, step: FailedStep | None, window_start: int
    ) -> dict[FailureClass, _ClassTally]:
        """Each class's best match, judged by where it sits relative to the failing step.

        Priorities rank root causes above symptoms, but a real log also prints errors that
        explain nothing: a warning, a cleanup step's complaint, a step that passed. So a
        match loses priority when it is
        - before the failing step began (printed by a step that passed): OUTSIDE_STEP_PENALTY;
        - after the step's failure report, unless its class is one the provider reports at job
          level after the step (time limit, lost runner, memory, disk): OUTSIDE_STEP_PENALTY;
        - on a line that calls itself a warning, for the classes noise is made of (network,
          permission, configuration, dependency): WARNING_PENALTY.
        """
        end_line = step.end_line + AFTER_STEP_GRACE if step is not None and step.end_line else 0
        weighed: dict[FailureClass, _ClassTally] = {}
        for failure_class, tally in scan.tallies.items():
            best: Match | None = None
            best_priority = -1
            best_rank: tuple[int, bool, int] = (-1, False, 0)
            inside = 0
            candidates = list(scan.recent.get(failure_class, ()))
            if all(m.line_no != tally.best.line_no for m in candidates):
                candidates.append(tally.best)
            for match in candidates:
                penalty = 0
                if window_start > 0 and match.line_no < window_start:
                    penalty += OUTSIDE_STEP_PENALTY
                elif end_line and match.line_no > end_line and failure_class not in JOB_LEVEL_CLASSES:
                    penalty += OUTSIDE_STEP_PENALTY
                else:
                    inside += 1
                if failure_class in NOISE_CLASSES and _WARNING_LINE.search(match.line):
                    penalty += WARNING_PENALTY
                if _COMMAND_LINE.match(match.line):
                    penalty += COMMAND_LINE_PENALTY  # the command as traced, not what it printed
                priority = max(0, match.pattern.priority - penalty)
                # Ties go to the provider's own error annotation, then to the line nearest where
                # the step failed (the last: a log repeats its error as it gives up).
                rank = (priority, match.line.startswith("##[error]"), match.line_no)
                if best is None or rank > best_rank:
                    best, best_priority, best_rank = match, priority, rank
            assert best is not None
            if best_priority != best.pattern.priority:
                best = Match(dataclasses.replace(best.pattern, priority=best_priority), best.line_no, best.line,
                             best.start)
            weighed[failure_class] = _ClassTally(best, inside if window_start > 0 and inside else tally.count)
        return _inside_test_output(weighed, scan)

    def _command_match(self, step: FailedStep | None) -> Match | None:
        """What the failed command itself says (`rubocop` -> LINT), or failing that its exit
        code (127: not found), as a match on the line that reported the failure."""
        if step is None:
            return None
        text = step.end_text or step.command or step.name
        line = step.end_line or step.start_line
        if step.command or step.name:
            subject = f"{step.command}\n{step.name}".lower()
            for pattern, compiled in _command_rules():
                if compiled.search(subject) is not None:
                    return Match(pattern, line, text, 0)
        exit_prior = _exit_code_patterns().get(step.exit_code) if step.exit_code is not None else None
        return Match(exit_prior, line, text, 0) if exit_prior is not None and text else None

    def _class_pattern(self, failure_class: FailureClass, scan: _LogScan) -> Pattern | None:
        tally = scan.tallies.get(failure_class)
        return tally.best.pattern if tally else None

    def _hint_for(self, failure_class: FailureClass) -> str:
        from services.detector.knowledge_base.defaults import HINT

        return HINT.get(failure_class, "")

    def _evidence(
        self,
        scan: _LogScan,
        winner: FailureClass | None,
        deciding: Match | None,
        report: JUnitReport | None,
        step: FailedStep | None = None,
        window_start: int = 0,
    ) -> list[EvidenceLine]:
        if winner is not None and winner in scan.tallies:
            lines = scan.evidence.select(winner, deciding, window_start)
            return _with_step_end(lines, step)
        if deciding is not None and winner is not None and deciding.pattern.failure_class == winner:
            return _with_step_end([EvidenceLine(deciding.line_no, clip(deciding.line))], step)
        if winner == FailureClass.TEST_FAILURE and report and report.failed:
            # Evidence from the report; line 0 marks lines that are not in the log.
            lines = []
            for test in report.failed[:5]:
                lines.append(EvidenceLine(0, f"{test_id(test.classname, test.name)}: {test.message}"))
            return bound(lines)
        # No pattern: the last lines that look like an error, else the very end of the log.
        errorish = [(n, t) for n, t in scan.tail if re.search(r"(?i)error|fail|fatal|exception|panic", t)]
        chosen = errorish[-8:] if errorish else [(n, t) for n, t in scan.tail if t.strip()][-8:]
        return bound([EvidenceLine(n, t) for n, t in chosen][:MAX_EVIDENCE_LINES])

    def _model_input(self, evidence: Sequence[EvidenceLine], scan: _LogScan) -> str:
        text = "\n".join(e.text for e in evidence) + "\n" + "\n".join(t for _, t in scan.tail)
        return text[-MAX_MODEL_INPUT_BYTES:]

    def _excerpt(self, evidence: Sequence[EvidenceLine], scan: _LogScan) -> str:
        parts = [f"{e.line}: {e.text}" for e in evidence]
        parts.append("...")
        parts.extend(f"{n}: {t}" for n, t in list(scan.tail)[-20:])
        excerpt = "\n".join(parts)
        return excerpt if len(excerpt) <= MAX_EXCERPT_BYTES else excerpt[:MAX_EXCERPT_BYTES]


def _load_model(path: Path | None = None) -> FailureModel | None:
    """The model artefact (`make model` builds it), or None with a note: patterns alone decide."""
    from services.detector import model as model_module  # noqa: PLC0415  (numpy: only when wanted)

    try:
        return model_module.load_default_model(path)
    except (OSError, ValueError) as error:
        print(f"note: no failure model ({error}); patterns only", file=sys.stderr)
        return None


def _read_chunks(path: Path, size: int = BLOCK_BYTES) -> Iterable[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.detector.diagnose", description="Diagnose a CI job log without the mesh."
    )
    parser.add_argument("log", type=Path, help="the job log file")
    parser.add_argument("--junit", type=Path, help="a JUnit XML report of the same job")
    parser.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    parser.add_argument("--no-model", action="store_true", help="patterns only, even if a trained model is available")
    parser.add_argument("--model", type=Path, default=None,
                        help="a model artefact (default: services/detector/models/failure-model.json.gz)")
    parser.add_argument("--threshold", type=float, default=0.6, help="confidence below which the class is UNKNOWN")
    args = parser.parse_args(argv)
    try:
        junit = args.junit.read_bytes() if args.junit else None
        if not args.log.is_file():
            raise FileNotFoundError(2, "no such file", str(args.log))
        model = None if args.no_model else _load_model(args.model)
        diagnoser = Diagnoser(model=model, confidence_threshold=args.threshold)
        result = diagnoser.diagnose_stream(_read_chunks(args.log), junit)
    except OSError as error:
        print(f"error: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    except HealingGuardError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return 0
    print(f"{result.failure_class.name}  confidence {result.confidence:.2f}  ({result.decided_by})")
    if result.remediation_hint:
        print(f"hint: {result.remediation_hint}")
    step = result.failed_step
    if step is not None:
        exit_text = f" (exit {step.exit_code})" if step.exit_code is not None else ""
        label = step.command or step.name or "(unnamed step)"
        print(f"failed step: {label}{exit_text}, {step.framing}, reported at line {step.end_line}")
    if result.decisive_line is not None:
        print(f"decisive line {result.decisive_line.line}: {result.decisive_line.text}")
    print(f"signature: {result.signature[:16]}  template: {result.template}")
    if result.failed_tests:
        print("failed tests: " + ", ".join(result.failed_tests[:10]))
    if result.flaky_tests:
        print("flaky tests: " + ", ".join(result.flaky_tests[:10]))
    print(f"scanned {result.bytes_scanned} bytes, {result.lines_scanned} lines; "
          f"{result.redaction_count} secrets redacted")
    print("evidence:")
    for line in result.evidence:
        print(f"  {line.line:>6} | {line.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
