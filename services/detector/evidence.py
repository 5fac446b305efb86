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
# Beside the first candidates, the last ones of each class: the failing step is usually
# near the end of the log, and its lines are the evidence.
RECENT_CANDIDATES_PER_CLASS = 6
MAX_MATCHED_LINES = 8  # matched lines shown before context lines fill the rest

_UNANCHORED = re2._Anchor.UNANCHORED
_STEP_OPTIONS = re2.Options()
_STEP_OPTIONS.never_capture = True
# Where a step begins: GitHub groups, GitLab sections and commands, Jenkins stages,
# Gradle tasks, BuildKit steps. The last one before the evidence names the failing step.
STEP_HEADER = re2.compile(
    rb"(?m)^(?:[0-9T:.\-]+Z )?"
    rb"(?:##\[group\]Run |\$ |\[Pipeline\] \{ \(|> Task :|#[0-9]+ \[[^\]]+\] (?:RUN|COPY|FROM) |section_start:[0-9]+:)"
    rb"[^\n]*",
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
    # Context lines by number: raw bytes until `select` reads them (most candidates never are).
    lines: dict[int, str | bytes] = field(default_factory=dict)
    wanted_until: int = 0  # last line number of context still to capture


class EvidenceCollector:
    """Bounded memory: a few candidates per class, a few lines per candidate."""

    def __init__(self) -> None:
        self._candidates: dict[FailureClass, list[_Candidate]] = {}
        self._recent: dict[FailureClass, deque[_Candidate]] = {}
        self._open: list[tuple[_Candidate, int]] = []  # with the offset of its line in the block
        self._previous_lines: deque[tuple[int, str]] = deque(maxlen=CONTEXT_BEFORE)
        self._last_step: EvidenceLine | None = None

    def observe(self, first_line_no: int, block: bytes, matches: Sequence[Match]) -> None:
        """Feed one block of complete UTF-8 lines (its first line is `first_line_no`).

        Only the lines around new candidates are decoded, and the step a candidate ran in
        is looked up backwards from it, so a block costs little beyond its matches.
        """
        headers = _StepHeaders(block)
        steps: dict[int, EvidenceLine] = {}  # by header offset: candidates in one step share it
        for match in self._worth_keeping(matches):
            kept = self._candidates.setdefault(match.pattern.failure_class, [])
            recent = self._recent.get(match.pattern.failure_class)
            if any(c.match.line_no == match.line_no for c in kept) or (
                recent and recent[-1].match.line_no == match.line_no
            ):
                continue
            if len(kept) >= CANDIDATES_PER_CLASS and recent is None:
                recent = self._recent[match.pattern.failure_class] = deque(maxlen=RECENT_CANDIDATES_PER_CLASS)
            start = match.start
            found = headers.last_at(start)
            if found is None:
                step = self._last_step
            else:
                step = steps.get(found[0])
                if step is None:
                    step = steps[found[0]] = EvidenceLine(
                        match.line_no - block.count(b"\n", found[0], start), _decode_clip(block[found[0] : found[1]])
                    )
            candidate = _Candidate(match, step, wanted_until=match.line_no + CONTEXT_AFTER)
            before: list[tuple[int, str | bytes]] = []
            line_start, number = start, match.line_no
            while number > match.line_no - CONTEXT_BEFORE and line_start > 0:
                previous = block.rfind(b"\n", 0, line_start - 1) + 1
                number -= 1
                before.append((number, block[previous : line_start - 1]))
                line_start = previous
            if number > match.line_no - CONTEXT_BEFORE:
                wanted = range(match.line_no - CONTEXT_BEFORE, number)
                candidate.lines.update((n, t) for n, t in self._previous_lines if n in wanted)
            candidate.lines.update(sorted(before))
            if len(kept) < CANDIDATES_PER_CLASS:
                kept.append(candidate)
            else:
                assert recent is not None
                recent.append(candidate)
            self._open.append((candidate, start))
        last = _last_step_header(block, len(block))
        if last is not None:
            line_no = first_line_no + block.count(b"\n", 0, last[0])
            self._last_step = EvidenceLine(line_no, _decode_clip(block[last[0] : last[1]]))
        if self._open:
            self._capture_following(first_line_no, block)
        # Remember the last lines for the next block's "before" context.
        body = block[:-1] if block.endswith(b"\n") else block
        last_line = first_line_no + _line_count(block) - 1
        tail = body.rsplit(b"\n", CONTEXT_BEFORE)[-CONTEXT_BEFORE:] if body or block else []
        self._previous_lines.extend((last_line - len(tail) + 1 + i, _decode_clip(t)) for i, t in enumerate(tail))

    def _worth_keeping(self, matches: Sequence[Match]) -> list[Match]:
        """The matches that can still become candidates: per class, those that fill the first
        CANDIDATES_PER_CLASS and the last RECENT_CANDIDATES_PER_CLASS of this block (the deque
        would evict the rest unread), so a block full of matches costs a few candidates."""
        by_class: dict[FailureClass, list[Match]] = {}
        for match in matches:
            by_class.setdefault(match.pattern.failure_class, []).append(match)
        keep: list[Match] = []
        for failure_class, found in by_class.items():
            room = max(0, CANDIDATES_PER_CLASS - len(self._candidates.get(failure_class, ())))
            # a line can match several patterns of a class: room counts lines, so over-take a little
            head = found[: room * 4]
            tail = found[max(len(head), len(found) - RECENT_CANDIDATES_PER_CLASS * 4):]
            keep.extend(head + tail)
        keep.sort(key=lambda m: (m.line_no, m.start))
        return keep

    def _capture_following(self, first_line_no: int, block: bytes) -> None:
        """Each open candidate's line and the lines after it, up to its context's end."""
        still_open: list[tuple[_Candidate, int]] = []
        for candidate, offset in self._open:
            number = max(candidate.match.line_no, first_line_no)
            position = offset if candidate.match.line_no >= first_line_no else 0
            while number <= candidate.wanted_until and position < len(block):
                end = block.find(b"\n", position)
                end = len(block) if end < 0 else end
                candidate.lines[number] = block[position:end]
                number, position = number + 1, end + 1
            if number <= candidate.wanted_until:
                still_open.append((candidate, 0))
        self._open = still_open

    def classes(self) -> list[FailureClass]:
        return list(self._candidates)

    def _all(self, failure_class: FailureClass) -> list[_Candidate]:
        return [*self._candidates.get(failure_class, []), *self._recent.get(failure_class, ())]

    def matched_lines(self, failure_class: FailureClass) -> list[EvidenceLine]:
        return [EvidenceLine(c.match.line_no, clip(c.match.line)) for c in self._candidates.get(failure_class, [])]

    def select(
        self, failure_class: FailureClass, deciding: Match | None = None, from_line: int = 0
    ) -> list[EvidenceLine]:
        """The evidence for the decided class: its step, its matched lines, their context.

        With `from_line` (where the failing step began), only candidates from there on are
        used when there are any: the lines a person would point at are in the failing step."""
        every = self._all(failure_class)
        inside = [c for c in every if c.match.line_no >= from_line] if from_line > 0 else []
        pool = inside or every
        if deciding is not None and not any(c.match.line_no == deciding.line_no for c in pool):
            pool = [_Candidate(deciding, None, {deciding.line_no: clip(deciding.line)}), *pool]
        # The deciding line first, then the strongest matches, the latest first among equals
        # (nearest where the step gave up); at most MAX_MATCHED_LINES of them.
        candidates = sorted(
            pool,
            key=lambda c: (deciding is None or c.match.line_no != deciding.line_no,
                           -c.match.pattern.priority, -c.match.line_no),
        )[:MAX_MATCHED_LINES]
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
                if number not in chosen:
                    chosen[number] = text if isinstance(text, str) else _decode_clip(text)
        return bound([EvidenceLine(n, t) for n, t in sorted(chosen.items())])


def _line_count(block: bytes) -> int:
    return block.count(b"\n") + (0 if block.endswith(b"\n") or not block else 1)


def _decode_clip(line: bytes) -> str:
    return clip(line.decode("utf-8", "replace"))


class _StepHeaders:
    """The step headers of one block, read forwards once for lookups at increasing offsets
    (the candidates of a block come in line order)."""

    def __init__(self, block: bytes) -> None:
        self._block = block
        self._position = 0  # where the next header search starts
        self._last: tuple[int, int] | None = None  # the last header found at or before the last lookup
        self._next: tuple[int, int] | None = None  # the first header found after it, if searched

    def last_at(self, upto: int) -> tuple[int, int] | None:
        """Span of the last step header starting at or before offset `upto` (a line start);
        `upto` must not decrease from one call to the next."""
        following = self._next
        if following is not None:
            if following[0] < 0 or following[0] > upto:
                return self._last
            self._last, self._next = following, None
            self._position = following[1] + 1
        search, block, size = STEP_HEADER._regexp.Match, self._block, len(self._block)
        while self._position <= upto:
            span = search(_UNANCHORED, block, self._position, size)[0]
            if span[0] < 0 or span[0] > upto:
                self._next = span
                break
            self._last = span
            self._position = span[1] + 1
        return self._last


def _last_step_header(block: bytes, upto: int) -> tuple[int, int] | None:
    """Span of the last step header in `block` starting at or before offset `upto` (a
    line start, or the end of the block). Searched backwards in growing windows: step
    headers are frequent, so this reads a few KiB instead of the whole block."""
    search = STEP_HEADER._regexp.Match
    end = len(block) if upto >= len(block) else block.find(b"\n", upto)
    end = len(block) if end < 0 else end
    high, window = upto, 4096
    while True:
        low = max(0, high - window)
        low = block.rfind(b"\n", 0, low) + 1 if low else 0
        found = None
        position = low
        while position <= upto:
            span = search(_UNANCHORED, block, position, end)[0]
            if span[0] < 0 or span[0] > upto:
                break
            found = span
            position = span[1] + 1
        if found is not None:
            return found
        if low == 0:
            return None
        high, window = low, window * 4


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
