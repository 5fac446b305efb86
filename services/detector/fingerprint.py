"""Failure fingerprints: the evidence with its run-specific noise taken out.

Two failures with the same cause print the same lines except for timestamps,
ids, paths, counts and durations. `normalise` replaces those with placeholders,
and `signature` hashes the normalised evidence, so the same break on another
run, runner or day gets the same signature and lands in the same group.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")

# Order matters: the wider shapes (URL, timestamp, UUID) go before the pieces
# they contain (paths, hex, numbers), so one shape becomes one placeholder.
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]]+"), "<url>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"), "<ts>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<date>"),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<ip>"),
    (re.compile(r"\[?\b(?:[0-9a-fA-F]{1,4}:){2,7}:?[0-9a-fA-F]{1,4}\b\]?(?::\d{1,5})?"), "<ip>"),
    (re.compile(r"(?:\b0x[0-9a-fA-F]+\b)|(?:\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}\b)"), "<hex>"),
    (re.compile(r"(?:[A-Za-z]:)?(?:[\w.@~+-]*/)+[\w.@~+-]*[\w@~+-]"), "<path>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?)\b"), "<dur>"),
    # Digits inside an identifier (E0308, k8s, sha256) are part of its name: kept.
    (re.compile(r"(?<!\w)\d+(?:[.,]\d+)*(?!\w)"), "<n>"),
    (re.compile(r"[ \t\r\f\v]+"), " "),
]
MAX_NORMALISED_LENGTH = 512


def strip_ansi(line: str) -> str:
    return ANSI_ESCAPE.sub("", line)


def _normalise_once(line: str) -> str:
    for pattern, placeholder in _RULES:
        line = pattern.sub(placeholder, line)
    return line.strip()


def normalise(line: str) -> str:
    """The line with timestamps, ids, paths, numbers... replaced by placeholders.

    Idempotent: normalising a normalised line changes nothing (repeated to a
    fixed point, because a replacement can expose a new shape, e.g. a path
    whose last segment was a number).
    """
    line = strip_ansi(line)[: MAX_NORMALISED_LENGTH * 2]
    for _ in range(8):
        normalised = _normalise_once(line)[:MAX_NORMALISED_LENGTH]
        if normalised == line:
            break
        line = normalised
    return line


def signature(lines: Iterable[str]) -> str:
    """sha256 (hex) of the normalised lines, one per line, blank lines dropped."""
    normalised = [n for n in (normalise(line) for line in lines) if n]
    return hashlib.sha256("\n".join(normalised).encode("utf-8")).hexdigest()
