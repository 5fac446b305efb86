import string

from hypothesis import given, settings
from hypothesis import strategies as st

from services.detector.fingerprint import normalise, signature

_TEXT = st.text(alphabet=string.printable + "é✓●│", max_size=120)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_normalise_is_idempotent(line: str) -> None:
    once = normalise(line)
    assert normalise(once) == once


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.sampled_from(["connect to db failed after", "worker exited with code", "OOM in shard", "retry"]),
    a=st.integers(min_value=0, max_value=10**12),
    b=st.integers(min_value=0, max_value=10**12),
)
def test_lines_differing_only_in_a_number_share_a_signature(prefix: str, a: int, b: int) -> None:
    assert signature([f"{prefix} {a} attempts"]) == signature([f"{prefix} {b} attempts"])


@settings(max_examples=100, deadline=None)
@given(st.uuids(), st.uuids(), st.datetimes(), st.datetimes())
def test_uuids_and_timestamps_do_not_change_the_signature(u1, u2, t1, t2) -> None:  # type: ignore[no-untyped-def]
    first = f"{t1.isoformat()}Z request {u1} failed: upstream reset"
    second = f"{t2.isoformat()}Z request {u2} failed: upstream reset"
    assert signature([first]) == signature([second])


def test_different_causes_get_different_signatures() -> None:
    assert signature(["error[E0308]: mismatched types"]) != signature(["error[E0425]: cannot find value"])


def test_placeholders_for_common_shapes() -> None:
    line = (
        "2025-03-11T10:09:44.118Z GET https://api.acme.io/v1/x?id=7 from 10.1.2.3:8443 "
        "in 300ms at /home/runner/work/web/src/app.py sha 9f2c1e7a4b3d"
    )
    assert normalise(line) == "<ts> GET <url> from <ip> in <dur> at <path> sha <hex>"


def test_ansi_colour_is_ignored() -> None:
    assert normalise("\x1b[31merror\x1b[0m: boom") == "error: boom"
