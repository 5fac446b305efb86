"""Evidence: the few lines of a log that explain its failure.

While a log streams past, the collector keeps, for each failure class, the
first lines that matched one of its patterns with a little context around
them and the step (GitHub group, GitLab command, Jenkins stage) they ran in.
Once the class is decided, `select` returns those lines, 1-based line numbers
of the original log, bounded to MAX_EVIDENCE_LINES lines and MAX_EVIDENCE_BYTES.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import re2

from services.common.vocabulary import FailureClass
from services.detector.patterns import Match

MAX_EVIDENCE_LINES = 20
MAX_EVIDENCE_BYTES = 4096
MAX_LINE_CHARS = 400
CONTEXT_BEFORE = 2
CONTEXT_AFTER = 3
CANDIDATES_PER_CLASS = 4

_STEP_OPTIONS = re2.Options()
_STEP_OPTIONS.never_capture = True
# Where a step begins: GitHub groups, GitLab sections and commands, Jenkins stages,
# Gradle tasks, BuildKit steps. The last one before the evidence names the failing step.
STEP_HEADER = re2.compile(
    rb"(?m)^(?:[0-9T:.\-]+Z )?(?:##\[group\]Run |\$ |\[Pipeline\] \{ \(|> Task :|#[0-9]+ \[[^\]]+\] (?:RUN|COPY|FROM) |section_start:[0-9]+:)[^\n]*",
    _STEP_OPTIONS,
)


@dataclass(frozen=True)
class EvidenceLine:
    line: int  # 1-based line number in the original log
    text: str


def clip(text: str, limit: int = MAX_LINE_CHARS) -> str:
    text = text.rstrip("\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _Candidate:
    match: Match
    step: EvidenceLine | None
    lines: dict[int, str] = field(default_factory=dict)
    wanted_until: int = 0  # last line number of context still to capture


class EvidenceCollector:
    """Bounded memory: a few candidates per class, a few lines per candidate."""

    def __init__(self) -> None:
        self._candidates: dict[FailureClass, list[_Candidate]] = {}
        self._open: list[_Candidate] = []
        self._previous_lines: deque[tuple[int, str]] = deque(maxlen=CONTEXT_BEFORE)
        self._last_step: EvidenceLine | None = None

    def observe(self, first_line_no: int, block: str, block_bytes: bytes, matches: Sequence[Match]) -> None:
        """Feed one block of complete lines (its first line is `first_line_no`)."""
        steps = self._steps(first_line_no, block_bytes)
        lines: list[str] | None = None
        step_index = 0
        for match in matches:
            while step_index < len(steps) and steps[step_index].line <= match.line_no:
                self._last_step = steps[step_index]
                step_index += 1
            kept = self._candidates.setdefault(match.pattern.failure_class, [])
            if len(kept) >= CANDIDATES_PER_CLASS or any(c.match.line_no == match.line_no for c in kept):
                continue
            if lines is None:
                lines = block.split("\n")
            candidate = _Candidate(match, self._last_step, wanted_until=match.line_no + CONTEXT_AFTER)
            for offset in range(CONTEXT_BEFORE, 0, -1):
                number = match.line_no - offset
                index = number - first_line_no
                if index >= 0:
                    candidate.lines[number] = clip(lines[index])
                else:
                    candidate.lines.update((n, t) for n, t in self._previous_lines if n == number)
            kept.append(candidate)
            self._open.append(candidate)
        if steps[step_index:]:
            self._last_step = steps[-1]
        if self._open:
            if lines is None:
                lines = block.split("\n")
            self._capture_following(first_line_no, lines)
        # Remember the last lines for the next block's "before" context.
        real_lines = block.rsplit("\n", CONTEXT_BEFORE + 1)
        if block.endswith("\n"):
            real_lines = real_lines[:-1]
        last_line = first_line_no + _line_count(block) - 1
        tail = real_lines[-CONTEXT_BEFORE:]
        self._previous_lines.extend((last_line - len(tail) + 1 + i, clip(t)) for i, t in enumerate(tail))

    def _steps(self, first_line_no: int, block_bytes: bytes) -> list[EvidenceLine]:
        steps = []
        counted_to, line_no = 0, first_line_no
        for found in STEP_HEADER.finditer(block_bytes):
            line_no += block_bytes.count(b"\n", counted_to, found.start())
            counted_to = found.start()
            steps.append(EvidenceLine(line_no, clip(found.group().decode("utf-8", "replace"))))
        return steps

    def _capture_following(self, first_line_no: int, lines: list[str]) -> None:
        still_open = []
        last_in_block = first_line_no + len(lines) - (2 if lines and lines[-1] == "" else 1)
        for candidate in self._open:
            start = max(candidate.match.line_no, first_line_no)
            for number in range(start, min(candidate.wanted_until, last_in_block) + 1):
                candidate.lines[number] = clip(lines[number - first_line_no])
            if candidate.wanted_until > last_in_block:
                still_open.append(candidate)
        self._open = still_open

    def classes(self) -> list[FailureClass]:
        return list(self._candidates)

    def matched_lines(self, failure_class: FailureClass) -> list[EvidenceLine]:
        return [EvidenceLine(c.match.line_no, clip(c.match.line)) for c in self._candidates.get(failure_class, [])]

    def select(self, failure_class: FailureClass, deciding: Match | None = None) -> list[EvidenceLine]:
        """The evidence for the decided class: its step, its matched lines, their context."""
        candidates = sorted(
            self._candidates.get(failure_class, []),
            key=lambda c: (deciding is None or c.match.line_no != deciding.line_no, c.match.line_no),
        )
        chosen: dict[int, str] = {}
        # Matched lines and the step first (they explain); context fills what room is left.
        for candidate in candidates:
            if candidate.step is not None:
                chosen.setdefault(candidate.step.line, candidate.step.text)
            chosen.setdefault(candidate.match.line_no, clip(candidate.match.line))
        for candidate in candidates:
            for number, text in sorted(candidate.lines.items()):
                if len(chosen) >= MAX_EVIDENCE_LINES:
                    break
                chosen.setdefault(number, text)
        return bound([EvidenceLine(n, t) for n, t in sorted(chosen.items())])


def _line_count(block: str) -> int:
    return block.count("\n") + (0 if block.endswith("\n") or not block else 1)


def bound(lines: Sequence[EvidenceLine]) -> list[EvidenceLine]:
    """At most MAX_EVIDENCE_LINES lines and MAX_EVIDENCE_BYTES bytes of text, in order."""
    kept: list[EvidenceLine] = []
    size = 0
    for line in lines[:MAX_EVIDENCE_LINES]:
        text = clip(line.text)
        cost = len(text.encode("utf-8")) + 1
        if size + cost > MAX_EVIDENCE_BYTES:
            break
        kept.append(EvidenceLine(line.line, text))
        size += cost
    return kept
