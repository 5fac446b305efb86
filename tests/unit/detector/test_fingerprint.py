import string

from hypothesis import given, settings
from hypothesis import strategies as st

from services.detector.fingerprint import normalise, signature
from services.detector.templates import normalise_line

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
        "at 2025-03-11 10:09:44.118 GET https://api.acme.io/v1/x?id=7 from 10.1.2.3:8443 "
        "in 300ms at /home/runner/work/web/src/app.py sha 9f2c1e7a4b3d"
    )
    assert normalise(line) == "at <TIME> GET <URL> from <IP> in <NUM> at <PATH> sha <HEX>"


def test_normalise_is_the_miners_masking() -> None:
    line = "FAILED tests/test_api.py::test_login[chrome-3] - AssertionError: assert 401 == 200"
    assert normalise(line) == normalise_line(line)


# The same cause seen in two runs: what differs is the runner, the checkout, the clock,
# the temp dir, the ids. Each pair must share its signature.
SAME_CAUSE = [
    ("2024-05-01T10:00:01.1234567Z FAILED tests/test_api.py::test_login[chrome-3] - AssertionError: assert 401 == 200",
     "2024-05-09T22:41:13.7654321Z FAILED tests/test_api.py::test_login[chrome-7] - AssertionError: assert 401 == 200"),
    ("E   FileNotFoundError: [Errno 2] No such file or directory: '/tmp/pytest-of-runner/pytest-3/t0/out.json'",
     "E   FileNotFoundError: [Errno 2] No such file or directory: '/tmp/pytest-of-ci/pytest-118/t0/out.json'"),
    ("Runner name: 'GitHub Actions 12'", "Runner name: 'GitHub Actions 1043'"),
    ("error: failed to push some refs to 'git@github.com:acme/web.git' (hint: 3f9c2e1a7b)",
     "error: failed to push some refs to 'git@github.com:acme/web.git' (hint: 0d41be99c2)"),
    ("Error response from daemon: container 4f2a9c1e7b3d0a11 is not running",
     "Error response from daemon: container 9b0e77d2c41f8e03 is not running"),
    ("npm ERR! request to https://registry.npmjs.org/left-pad failed, reason: connect ETIMEDOUT 104.16.3.35:443",
     "npm ERR! request to https://registry.npmjs.org/left-pad failed, reason: connect ETIMEDOUT 104.16.1.34:443"),
    ("    at com.acme.OrderServiceTest.refund(OrderServiceTest.java:88)",
     "    at com.acme.OrderServiceTest.refund(OrderServiceTest.java:91)"),
    ("##[error]The job running on runner ubuntu-22-04-x64-9f3a has exceeded the maximum execution time of 360 min",
     "##[error]The job running on runner ubuntu-22-04-x64-1c7e has exceeded the maximum execution time of 360 min"),
    ("Test timed out after 30.004s: test_sync (took 30004 ms, pid 48213)",
     "Test timed out after 30.117s: test_sync (took 30117 ms, pid 9120)"),
    ("/home/runner/work/web/web/src/app.ts(12,5): error TS2322: Type 'string' is not assignable to type 'number'.",
     "/Users/runner/work/web/web/src/app.ts(12,5): error TS2322: Type 'string' is not assignable to type 'number'."),
    ("storage write check failed: AccessDenied, request_id: \"4DGERBD62D4JFCZB\" }",
     "storage write check failed: AccessDenied, request_id: \"SJF9RM80BGD8C5RK\" }"),
]

# Different causes, often in the same words: a different test, error, package or exit.
DIFFERENT_CAUSE = [
    ("FAILED tests/test_api.py::test_login[chrome-3] - AssertionError: assert 401 == 200",
     "FAILED tests/test_api.py::test_logout[chrome-3] - AssertionError: assert 401 == 200"),
    ("E   FileNotFoundError: [Errno 2] No such file or directory: '/tmp/x/out.json'",
     "E   PermissionError: [Errno 13] Permission denied: '/tmp/x/out.json'"),
    ("npm ERR! 404 Not Found - GET https://registry.npmjs.org/left-pad - Not found",
     "npm ERR! code ERESOLVE"),
    ("    at com.acme.OrderServiceTest.refund(OrderServiceTest.java:88)",
     "    at com.acme.OrderServiceTest.cancel(OrderServiceTest.java:88)"),
    ("error[E0308]: mismatched types", "error[E0425]: cannot find value `x` in this scope"),
    ("ModuleNotFoundError: No module named 'requests'", "ModuleNotFoundError: No module named 'numpy'"),
    ("Killed (out of memory)", "Segmentation fault (core dumped)"),
    ("##[error]Process completed with exit code 1.", "##[error]The operation was canceled."),
]


def test_the_same_cause_in_two_runs_shares_a_signature() -> None:
    for first, second in SAME_CAUSE:
        assert signature([first]) == signature([second]), (normalise(first), normalise(second))


def test_different_causes_get_different_signatures_in_realistic_pairs() -> None:
    for first, second in DIFFERENT_CAUSE:
        assert signature([first]) != signature([second]), normalise(first)


def test_a_signature_is_of_the_whole_evidence_in_order() -> None:
    lines = ["FAILED tests/a.py::test_x - assert 1 == 2", "FAILED tests/b.py::test_y - assert 3 == 4"]
    assert signature(lines) != signature(lines[:1])
    assert signature(lines) == signature([*lines, "", "   "])


def test_ansi_colour_is_ignored() -> None:
    assert normalise("\x1b[31merror\x1b[0m: boom") == "error: boom"
