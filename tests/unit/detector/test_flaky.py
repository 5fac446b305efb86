"""Flaky evidence: failed and passed on one commit; rates over a window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.detector.flaky import FlakyTracker, TestRun


def run(test: str, commit: str, run_id: str, passed: bool, at: float) -> TestRun:
    return TestRun(test, commit, run_id, passed, at)


def test_failed_then_passed_on_one_commit_is_flaky_with_both_run_ids() -> None:
    tracker = FlakyTracker()
    tracker.record_many([run("t_login", "abc", "101", False, 10), run("t_login", "abc", "102", True, 20),
                         run("t_login", "def", "103", False, 30)])
    evidence = tracker.evidence("t_login", "abc")
    assert evidence is not None
    assert evidence.failed_run_ids == ("101",) and evidence.passed_run_ids == ("102",)
    assert tracker.evidence("t_login", "def") is None  # failed only: a real failure so far
    assert [e.commit for e in tracker.flaky_evidence("t_login")] == ["abc"]
    assert tracker.flaky_evidence("t_login", since=15) == []  # the failure on abc is older


def test_a_report_delivered_twice_counts_once() -> None:
    tracker = FlakyTracker()
    assert tracker.record(run("t", "c", "1", False, 1))
    assert not tracker.record(run("t", "c", "1", False, 1))
    assert tracker.rate("t", 100, now=50).runs == 1


def test_rate_counts_flaky_failures_within_the_window() -> None:
    tracker = FlakyTracker()
    tracker.record_many([
        run("t", "c1", "1", False, 100), run("t", "c1", "2", True, 110),   # flaky
        run("t", "c2", "3", False, 200),                                    # real failure
        run("t", "c3", "4", True, 300), run("t", "c3", "5", True, 310),
        run("t", "c0", "0", False, 10), run("t", "c0", "00", True, 11),    # flaky but outside window
    ])
    rate = tracker.rate("t", window_seconds=250, now=320)
    assert (rate.runs, rate.failures, rate.flaky_failures, rate.flaky_commits) == (5, 2, 1, 1)
    assert rate.rate == pytest.approx(0.2)
    assert [r.test for r in tracker.flaky_tests(250, now=320)] == ["t"]
    assert tracker.flaky_tests(250, now=320, min_rate=0.5) == []


def test_history_is_newest_first_and_bounded() -> None:
    tracker = FlakyTracker(max_runs_per_test=3)
    for i in range(5):
        tracker.record(run("t", "c", str(i), i % 2 == 0, float(i)))
    assert [r.run_id for r in tracker.history("t")] == ["4", "3", "2"]
    assert [r.run_id for r in tracker.history("t", limit=1)] == ["4"]
    assert tracker.record(run("t", "c", "0", True, 0.0))  # fell off, so it is new again


def test_bad_input_names_the_field() -> None:
    tracker = FlakyTracker()
    with pytest.raises(InvalidArgument, match="commit"):
        tracker.record(run("t", "", "1", True, 1))
    with pytest.raises(InvalidArgument, match="window_seconds: must be > 0, got 0"):
        tracker.rate("t", 0, now=1)


@given(st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3"]), st.booleans()), max_size=30))
def test_flaky_exactly_when_a_commit_has_both_outcomes(outcomes: list[tuple[str, bool]]) -> None:
    tracker = FlakyTracker()
    for i, (commit, passed) in enumerate(outcomes):
        tracker.record(run("t", commit, str(i), passed, float(i)))
    for commit in ("c1", "c2", "c3"):
        verdicts = {passed for c, passed in outcomes if c == commit}
        assert (tracker.evidence("t", commit) is not None) == (verdicts == {True, False})
