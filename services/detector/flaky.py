"""Flaky tests: the same test failed and passed on the same commit.

The code did not change between the two runs, so the test's verdict depends on
something other than the code: that is the definition of flaky, and the run ids of
both outcomes are the evidence. Runs are recorded per (test, run id) once, so a
report delivered twice is counted once.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import InvalidArgument

MAX_RUNS_PER_TEST = 2000  # history kept per test; the oldest runs fall off


@dataclass(frozen=True)
class TestRun:
    __test__ = False  # not a pytest class

    test: str
    commit: str
    run_id: str
    passed: bool
    at: float  # unix seconds


@dataclass(frozen=True)
class FlakyEvidence:
    test: str
    commit: str
    failed_run_ids: tuple[str, ...]
    passed_run_ids: tuple[str, ...]


@dataclass(frozen=True)
class FlakinessRate:
    test: str
    runs: int
    failures: int
    flaky_failures: int  # failures on a commit where the test also passed
    flaky_commits: int
    rate: float  # flaky_failures / runs: how often this test fails for no code reason


class FlakyTracker:
    def __init__(self, max_runs_per_test: int = MAX_RUNS_PER_TEST) -> None:
        self._runs: dict[str, deque[TestRun]] = defaultdict(lambda: deque(maxlen=max_runs_per_test))
        self._seen: dict[str, set[str]] = defaultdict(set)

    def record(self, run: TestRun) -> bool:
        """Remember one outcome; False if this (test, run id) was already recorded."""
        for name in ("test", "commit", "run_id"):
            if not getattr(run, name):
                raise InvalidArgument(name, "must be a non-empty string")
        if run.run_id in self._seen[run.test]:
            return False
        runs = self._runs[run.test]
        if len(runs) == runs.maxlen:
            self._seen[run.test].discard(runs[0].run_id)
        runs.append(run)
        self._seen[run.test].add(run.run_id)
        return True

    def record_many(self, runs: Iterable[TestRun]) -> int:
        return sum(self.record(r) for r in runs)

    def evidence(self, test: str, commit: str) -> FlakyEvidence | None:
        """Proof that `test` is flaky on `commit`, or None if it has not both failed and passed there."""
        return self._evidence_since(test, commit, None)

    def flaky_evidence(self, test: str, since: float | None = None) -> list[FlakyEvidence]:
        """Every commit on which `test` both failed and passed (runs at or after `since`)."""
        commits: dict[str, None] = {}
        for r in self._runs.get(test, ()):
            if since is None or r.at >= since:
                commits.setdefault(r.commit, None)
        found = (self._evidence_since(test, c, since) for c in commits)
        return [e for e in found if e is not None]

    def rate(self, test: str, window_seconds: float, now: float) -> FlakinessRate:
        """Flakiness of `test` over the runs of the last `window_seconds` before `now`."""
        if window_seconds <= 0:
            raise InvalidArgument("window_seconds", f"must be > 0, got {window_seconds}")
        since = now - window_seconds
        runs = [r for r in self._runs.get(test, ()) if since <= r.at <= now]
        passed_commits = {r.commit for r in runs if r.passed}
        failures = [r for r in runs if not r.passed]
        flaky = [r for r in failures if r.commit in passed_commits]
        return FlakinessRate(test, len(runs), len(failures), len(flaky), len({r.commit for r in flaky}),
                             len(flaky) / len(runs) if runs else 0.0)

    def flaky_tests(self, window_seconds: float, now: float, min_rate: float = 0.0) -> list[FlakinessRate]:
        """Tests with flaky failures in the window, flakiest first."""
        rates = (self.rate(t, window_seconds, now) for t in self._runs)
        return sorted((r for r in rates if r.flaky_failures and r.rate >= min_rate), key=lambda r: (-r.rate, r.test))

    def history(self, test: str, limit: int = 100) -> list[TestRun]:
        """The test's most recent runs, newest first."""
        if limit < 1:
            raise InvalidArgument("limit", f"must be >= 1, got {limit}")
        return sorted(self._runs.get(test, ()), key=lambda r: (-r.at, r.run_id))[:limit]

    def _evidence_since(self, test: str, commit: str, since: float | None) -> FlakyEvidence | None:
        same = [r for r in self._runs.get(test, ()) if r.commit == commit and (since is None or r.at >= since)]
        failed = tuple(r.run_id for r in same if not r.passed)
        passed = tuple(r.run_id for r in same if r.passed)
        return FlakyEvidence(test, commit, failed, passed) if failed and passed else None
