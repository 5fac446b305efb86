"""The knowledge base of failure patterns, and the fast scan that applies it.

A pattern is a line-scoped RE2 expression that, when it matches a line of a CI
log, is evidence for one failure class. RE2 matches in linear time whatever the
expression, so a tenant's pattern can never stall the detector (no
catastrophic backtracking); constructs RE2 refuses (backreferences,
lookaround) are refused here with the RE2 error.

The scan compiles every enabled pattern into one alternation and runs it once
over the whole buffer (RE2's DFA, like grep), then attributes each matching
line to the patterns that match it with an RE2 set. Work is linear in the log
size plus the number of matching lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import re2

from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass

MAX_EXPRESSION_LENGTH = 1024
MAX_DESCRIPTION_LENGTH = 2048
MAX_PATTERN_ID_LENGTH = 128
MIN_PRIORITY, MAX_PRIORITY = 0, 100
# The combined DFA of a few hundred patterns needs more than RE2's 8 MiB default;
# without it RE2 falls back to the NFA and the scan gets ~50x slower.
COMBINED_MAX_MEM = 256 << 20
# A line longer than this is attributed on its first bytes only (minified bundles).
MAX_ATTRIBUTED_LINE = 8192

BUILTIN_TENANT = ""
_UNCLASSIFIABLE = {FailureClass.FAILURE_CLASS_UNSPECIFIED, FailureClass.UNKNOWN}


@dataclass(frozen=True)
class Pattern:
    """One rule: lines matching `expression` are evidence for `failure_class`.

    `tenant` is "" for the built-in defaults every tenant sees. Higher
    `priority` wins when patterns of several classes match one log: a root
    cause (disk full) outranks its symptoms (tests failing).
    """

    pattern_id: str
    tenant: str
    failure_class: FailureClass
    expression: str
    description: str = ""
    remediation_hint: str = ""
    priority: int = 50
    enabled: bool = True

    @property
    def builtin(self) -> bool:
        return self.tenant == BUILTIN_TENANT


@dataclass(frozen=True)
class Match:
    """A pattern matching one line of the scanned text (line_no is 1-based)."""

    pattern: Pattern
    line_no: int
    line: str
    start: int = 0  # byte offset of the line in the scanned buffer


def _new_match(pattern: Pattern, line_no: int, line: str, start: int) -> Match:
    """Match(pattern, line_no, line, start) without the frozen dataclass's per-field
    object.__setattr__ calls (the scan builds one per matching line and pattern)."""
    match = object.__new__(Match)
    match.__dict__.update(pattern=pattern, line_no=line_no, line=line, start=start)
    return match


def _options(max_mem: int | None = None) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    if max_mem is not None:
        options.max_mem = max_mem
    return options


def compile_expression(expression: str, field: str = "pattern.expression") -> re2._Regexp:
    """Compile a pattern expression with RE2, or say exactly why not."""
    if not isinstance(expression, str) or not expression:
        raise InvalidArgument(field, "must be a non-empty RE2 expression")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise InvalidArgument(
            field, f"must be at most {MAX_EXPRESSION_LENGTH} characters, got {len(expression)}"
        )
    if "\n" in expression:
        raise InvalidArgument(field, "must be a single line (patterns match one log line)")
    try:
        compiled = re2.compile(expression.encode("utf-8"), _options())
    except re2.error as error:
        raise InvalidArgument(
            field,
            f"is not a valid RE2 expression ({error}); RE2 has no backreferences or lookaround",
        ) from None
    if compiled.search(b"") is not None:
        raise InvalidArgument(field, "matches the empty string, so it would match every line")
    return compiled


def validate_pattern(pattern: Pattern) -> Pattern:
    """Check every field of a pattern; return it with its class as a FailureClass."""
    if not pattern.pattern_id or len(pattern.pattern_id) > MAX_PATTERN_ID_LENGTH:
        raise InvalidArgument(
            "pattern.pattern_id", f"must be 1..{MAX_PATTERN_ID_LENGTH} characters, got {len(pattern.pattern_id)}"
        )
    if not all(c.isalnum() or c in "-_.:" for c in pattern.pattern_id):
        raise InvalidArgument(
            "pattern.pattern_id", f"may use letters, digits and -_.: only, got {pattern.pattern_id!r}"
        )
    try:
        failure_class = FailureClass(int(pattern.failure_class))
    except (ValueError, TypeError):
        raise InvalidArgument(
            "pattern.failure_class", f"must be one of FLAKY_TEST..PERMISSION (1..12), got {pattern.failure_class!r}"
        ) from None
    if failure_class in _UNCLASSIFIABLE:
        raise InvalidArgument(
            "pattern.failure_class",
            f"must be a concrete class (FLAKY_TEST..PERMISSION, 1..12), got {failure_class.name}",
        )
    if not MIN_PRIORITY <= pattern.priority <= MAX_PRIORITY:
        raise InvalidArgument(
            "pattern.priority", f"must be in [{MIN_PRIORITY}, {MAX_PRIORITY}], got {pattern.priority}"
        )
    for field in ("description", "remediation_hint"):
        value = getattr(pattern, field)
        if len(value) > MAX_DESCRIPTION_LENGTH:
            raise InvalidArgument(
                f"pattern.{field}", f"must be at most {MAX_DESCRIPTION_LENGTH} characters, got {len(value)}"
            )
    compile_expression(pattern.expression)
    return dataclasses.replace(pattern, failure_class=failure_class)


class KnowledgeBase:
    """An immutable set of patterns compiled for one fast pass over a log.

    Build one per (tenant, pattern version) and reuse it: compiling a few
    hundred patterns takes milliseconds, scanning is the hot path.
    """

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self._patterns: tuple[Pattern, ...] = tuple(validate_pattern(p) for p in patterns)
        self._enabled: tuple[Pattern, ...] = tuple(p for p in self._patterns if p.enabled)
        self._combined: re2._Regexp | None = None
        self._attribution: re2.Set | None = None
        if self._enabled:
            options = _options(COMBINED_MAX_MEM)
            options.never_capture = True
            alternation = "|".join(f"(?:{p.expression})" for p in self._enabled)
            self._combined = re2.compile(("(?m)" + alternation).encode("utf-8"), options)
            attribution = re2.Set.SearchSet(_options(COMBINED_MAX_MEM))
            for pattern in self._enabled:
                attribution.Add(pattern.expression.encode("utf-8"))
            attribution.Compile()
            self._attribution = attribution

    @property
    def patterns(self) -> tuple[Pattern, ...]:
        return self._patterns

    def get(self, pattern_id: str) -> Pattern | None:
        return next((p for p in self._patterns if p.pattern_id == pattern_id), None)

    def scan(self, text: str | bytes, first_line_no: int = 1) -> list[Match]:
        """Every (pattern, line) match in `text`, in line order."""
        buffer = text.encode("utf-8", "replace") if isinstance(text, str) else text
        return list(self.scan_bytes(buffer, first_line_no))

    def scan_bytes(self, buffer: bytes, first_line_no: int = 1) -> Iterator[Match]:
        """Scan UTF-8 bytes; `first_line_no` numbers the buffer's first line."""
        if self._combined is None or self._attribution is None or not buffer:
            return
        search = self._combined._regexp.Match
        attribute = self._attribution._set.Match
        enabled = self._enabled
        unanchored = re2._Anchor.UNANCHORED
        count, rfind, find = buffer.count, buffer.rfind, buffer.find
        new_match = _new_match
        position, line_no, counted_to = 0, first_line_no, 0
        end = len(buffer)
        while position < end:
            found = search(unanchored, buffer, position, end)[0][0]
            if found < 0:
                return
            line_start = rfind(b"\n", 0, found) + 1
            line_end = find(b"\n", found)
            if line_end < 0:
                line_end = end
            line_no += count(b"\n", counted_to, line_start)
            counted_to = line_start
            line = buffer[line_start : min(line_end, line_start + MAX_ATTRIBUTED_LINE)]
            indices = attribute(line)
            if indices:
                text = line.decode("utf-8", "replace")
                for index in sorted(indices):
                    yield new_match(enabled[index], line_no, text, line_start)
            # One report per line: continue after it (patterns are line-scoped).
            position = line_end + 1

    def __len__(self) -> int:
        return len(self._patterns)


def by_class(matches: Sequence[Match]) -> dict[FailureClass, list[Match]]:
    grouped: dict[FailureClass, list[Match]] = {}
    for match in matches:
        grouped.setdefault(match.pattern.failure_class, []).append(match)
    return grouped


def default_patterns() -> list[Pattern]:
    """The curated built-in knowledge base (tenant "")."""
    from services.detector.knowledge_base.defaults import DEFAULT_RULES

    return [
        Pattern(
            pattern_id=rule_id,
            tenant=BUILTIN_TENANT,
            failure_class=failure_class,
            expression=expression,
            description=description,
            remediation_hint=hint,
            priority=priority,
        )
        for rule_id, failure_class, priority, expression, description, hint in DEFAULT_RULES
    ]


def command_patterns() -> list[Pattern]:
    """What a failing step's command says, as patterns over the command text (tenant "")."""
    from services.detector.knowledge_base.defaults import COMMAND_RULES, HINT

    return [
        Pattern(pattern_id=rule_id, tenant=BUILTIN_TENANT, failure_class=failure_class, expression=expression,
                description=description, remediation_hint=HINT[failure_class], priority=priority)
        for rule_id, failure_class, priority, expression, description in COMMAND_RULES
    ]
