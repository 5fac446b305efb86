"""The diagnosis hot path's shortcuts change nothing a user sees: presentation stripping in
two passes equals the one-pass definition, and the entropy gate never spares a secret."""

from __future__ import annotations

import random
import re
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from services.detector.diagnose import strip_presentation
from services.detector.redaction import _looks_random, _may_hold_random_value, redact

REFERENCE = re.compile(
    rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|(?m:^)\[?[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z\]? (?:[0-9]{2}[OE]\+? )?"
)


def test_runner_timestamps_and_colours_are_stripped_line_by_line() -> None:
    block = (b"2024-05-01T10:00:00.1234567Z \x1b[31merror\x1b[0m: boom\n"
             b"[2024-05-01T10:00:01Z] 01O step two\n"
             b"plain 2024-05-01T10:00:00Z not a prefix\n")
    assert strip_presentation(block) == b"error: boom\nstep two\nplain 2024-05-01T10:00:00Z not a prefix\n"


PIECES = [b"2024-05-01T10:00:00.5Z ", b"text ", b"\n", b"Z ", b"[2024-01-02T03:04:05Z] 12E+ ", b"x", b"Z] "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30))
def test_stamps_are_stripped_as_the_one_pass_definition_says(parts: list[bytes]) -> None:
    block = b"".join(parts)
    assert strip_presentation(block) == REFERENCE.sub(b"", block)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\x1b[1;31m", b"\x1b[0K", b"\x1bM", b"text", b"\n", b"\x1b"]), max_size=30))
def test_colours_are_stripped_as_the_one_pass_definition_says(parts: list[bytes]) -> None:
    block = b"".join(parts)
    assert strip_presentation(block) == REFERENCE.sub(b"", block)


def test_the_entropy_gate_lets_every_random_value_through() -> None:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "+/_="
    for _ in range(2000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(20, 60)))
        name = rng.choice(["KEY", "x.y-z", "a=b", "token"])
        line = f"{name}={value}"
        if _looks_random(value):
            assert _may_hold_random_value(line), line
    assert "[REDACTED" in redact("export SESSION=Zx9Qm2Lr7Tb4Wn8Kp3Vd6Hs1\n").text
    assert redact("#5 sha256:0e4b6d7c2a1f9e8b3d5c4a6f7e2b1d0c9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d\n").count == 0
