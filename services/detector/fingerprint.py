"""Failure fingerprints: the evidence with its run-specific noise taken out.

Two failures with the same cause print the same lines except for timestamps, ids,
paths, counts, durations, runner names and temporary directories. `normalise` masks
those, with the template miner's own masking (`services.detector.templates.normalise_line`:
one implementation of the variable shapes for templates, clusters and signatures), and
`signature` hashes the normalised evidence, so the same break on another run, runner or
day gets the same signature and lands in the same group, while lines that differ in a
word (another test name, another error) keep different signatures.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from services.detector.templates import normalise_line

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
MAX_NORMALISED_LENGTH = 512


def strip_ansi(line: str) -> str:
    """The line without colour codes, and nothing else changed (for showing, not matching)."""
    return ANSI_ESCAPE.sub("", line)


def normalise(line: str) -> str:
    """The line with timestamps, ids, paths, numbers... masked (<TIME>, <HEX>, <PATH>, <NUM>, ...).

    Idempotent: normalising a normalised line changes nothing (the masks are tokens the
    masking keeps as they are), repeated to a fixed point in case a cut at
    `MAX_NORMALISED_LENGTH` leaves a token that masks differently.
    """
    line = line[: MAX_NORMALISED_LENGTH * 4]
    for _ in range(8):
        normalised = normalise_line(line)[:MAX_NORMALISED_LENGTH].rstrip()
        if normalised == line:
            break
        line = normalised
    return line


def signature(lines: Iterable[str]) -> str:
    """sha256 (hex) of the normalised lines, one per line, blank lines dropped."""
    normalised = [n for n in (normalise(line) for line in lines) if n]
    return hashlib.sha256("\n".join(normalised).encode("utf-8")).hexdigest()
