"""Forecast features, computed the same way for training and for serving.

A `FeatureStream` replays history in time order and can say, at any moment `t`,
what a scope (a job, or a whole pipeline) looked like from everything that had
*finished* by `t`. Training asks it just before each run starts (the label is that
run's result); serving asks it at "now". One code path, so no train/serve skew and no
peeking at outcomes that were not known yet.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.common.vocabulary import GENUINE_BREAKS, FailureClass
from services.predictor.history import RunRecord, Scope

# Beta prior on a pipeline's failure probability: mean 0.10 (a typical CI job fails
# about one run in ten) with the weight of 10 runs, so 3 failures in 5 runs moves the
# estimate to 0.27 rather than 0.6, and 30 runs mostly speak for themselves.
PRIOR_ALPHA = 1.0
PRIOR_BETA = 9.0
# Per-run decay of the recency-weighted failure rate: a run 10 runs ago weighs 0.35.
FAILURE_DECAY = 0.9
RECENT_RUNS = 10
WINDOW_RUNS = 20
OUTAGE_WINDOW_S = 6 * 3600.0
RECENT_OUTAGE_WINDOW_S = 3600.0
OUTAGE_CLASSES = frozenset({FailureClass.DEPENDENCY_FETCH, FailureClass.NETWORK})

FEATURE_NAMES: tuple[str, ...] = (
    "decayed_failure_rate",
    "recent_failure_rate",
    "long_failure_rate",
    "last_run_failed",
    "failure_streak",
    "flaky_tests_present",
    "flaky_run_fraction",
    "memory_fraction_last",
    "memory_fraction_max_recent",
    "memory_fraction_slope",
    "oom_recent",
    "duration_trend",
    "tenant_outage_failures_6h",
    "tenant_outage_failures_1h",
    "hour_sin",
    "hour_cos",
    "is_weekend",
    "log_run_count",
    "log_hours_since_last_run",
    "last_failure_genuine_break",
    "exposed_to_outage",
)


def slope(values: Iterable[float]) -> float:
    """Least-squares slope of values against their index (0 for fewer than 3 points)."""
    ys = list(values)
    n = len(ys)
    if n < 3:
        return 0.0
    mean_x = (n - 1) / 2.0
    mean_y = sum(ys) / n
    num = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(ys))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return 0.0
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


@dataclass
class ScopeState:
    """What is known about one scope from its finished runs."""

    runs: int = 0
    failures: int = 0
    decayed_failures: float = 0.0
    decayed_runs: float = 0.0
    streak: int = 0
    first_at: float | None = None
    last_at: float | None = None
    outcomes: deque[int] = field(default_factory=lambda: deque(maxlen=WINDOW_RUNS))
    flaky: deque[tuple[str, ...]] = field(default_factory=lambda: deque(maxlen=WINDOW_RUNS))
    memory: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_RUNS))
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW_RUNS))
    ooms: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_RUNS))
    last_failure_class: FailureClass = FailureClass.FAILURE_CLASS_UNSPECIFIED
    last_failed: bool = False
    fetch_failures: int = 0  # ever failed fetching a dependency: exposed to outages

    def apply(self, run: RunRecord) -> None:
        self.first_at = run.started_at if self.first_at is None else min(self.first_at, run.started_at)
        self.last_at = run.started_at if self.last_at is None else max(self.last_at, run.started_at)
        fraction = run.memory_fraction
        if fraction is not None:
            self.memory.append(fraction)
        if not run.counts_for_risk:
            return
        failed = int(run.failed)
        self.runs += 1
        self.failures += failed
        self.decayed_failures = self.decayed_failures * FAILURE_DECAY + failed
        self.decayed_runs = self.decayed_runs * FAILURE_DECAY + 1.0
        self.streak = self.streak + 1 if failed else 0
        self.outcomes.append(failed)
        self.flaky.append(run.flaky_tests)
        self.ooms.append(int(run.failed and run.failure_class == FailureClass.OUT_OF_MEMORY))
        self.last_failed = run.failed
        if run.failed:
            self.last_failure_class = run.failure_class
            if run.failure_class in OUTAGE_CLASSES or run.failed_dependencies:
                self.fetch_failures += 1
        if not run.failed:
            self.durations.append(run.duration_s)

    # -- readable summaries, shared by features and explanations -----------------------

    def posterior_rate(self) -> float:
        """Recency-weighted failure rate under the Beta prior (the cold-start answer)."""
        return (PRIOR_ALPHA + self.decayed_failures) / (PRIOR_ALPHA + PRIOR_BETA + self.decayed_runs)

    def recent_outcomes(self, n: int = RECENT_RUNS) -> list[int]:
        return list(self.outcomes)[-n:]

    def flaky_tests(self) -> list[str]:
        counts: dict[str, int] = {}
        for names in self.flaky:
            for name in names:
                counts[name] = counts.get(name, 0) + 1
        return sorted(counts, key=lambda name: (-counts[name], name))

    def duration_trend(self) -> float:
        """Relative change of successful-run duration per 10 runs (0.1 = 10% slower)."""
        if len(self.durations) < 5:
            return 0.0
        median = _median(list(self.durations))
        return 10.0 * slope(self.durations) / median if median > 0 else 0.0

    def memory_slope(self) -> float:
        """Change of peak memory (fraction of limit) per 10 runs."""
        return 10.0 * slope(self.memory)


@dataclass
class TenantState:
    outage_failures: deque[tuple[float, tuple[str, ...]]] = field(default_factory=deque)

    def apply(self, run: RunRecord) -> None:
        if run.failed and (run.failure_class in OUTAGE_CLASSES or run.failed_dependencies):
            self.outage_failures.append((run.ended_at, run.failed_dependencies))

    def outage_failures_since(self, t: float, window: float) -> int:
        while self.outage_failures and self.outage_failures[0][0] < t - OUTAGE_WINDOW_S:
            self.outage_failures.popleft()
        return sum(1 for end, _ in self.outage_failures if end >= t - window)


class FeatureStream:
    """Replays runs in start-time order; a run becomes known when it ends."""

    def __init__(self) -> None:
        self.scopes: dict[Scope, ScopeState] = {}
        self.tenants: dict[str, TenantState] = {}
        self._pending: list[tuple[float, int, RunRecord]] = []
        self._sequence = 0
        self.clock = 0.0

    def advance(self, t: float) -> None:
        """Make known every run that ended by `t`."""
        self.clock = max(self.clock, t)
        while self._pending and self._pending[0][0] <= t:
            _, _, run = heapq.heappop(self._pending)
            self.scopes.setdefault(run.scope, ScopeState()).apply(run)
            self.tenants.setdefault(run.tenant, TenantState()).apply(run)

    def add(self, run: RunRecord) -> None:
        """A run started; its outcome is known from `run.ended_at` on."""
        self._sequence += 1
        heapq.heappush(self._pending, (run.ended_at, self._sequence, run))

    def state(self, scope: Scope) -> ScopeState:
        return self.scopes.get(scope) or ScopeState()

    def features(self, scope: Scope, t: float) -> list[float]:
        state = self.state(scope)
        tenant = self.tenants.get(scope.tenant) or TenantState()
        recent = state.recent_outcomes()
        memory = list(state.memory)
        hours = (t % 86_400.0) / 3600.0
        weekday = int(t // 86_400.0 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        since_last = (t - state.last_at) / 3600.0 if state.last_at is not None else 24.0 * 30
        recent_outages = math.log1p(tenant.outage_failures_since(t, RECENT_OUTAGE_WINDOW_S))
        return [
            state.posterior_rate(),
            (PRIOR_ALPHA + sum(recent)) / (PRIOR_ALPHA + PRIOR_BETA + len(recent)),
            (PRIOR_ALPHA + state.failures) / (PRIOR_ALPHA + PRIOR_BETA + state.runs),
            float(recent[-1]) if recent else 0.0,
            float(min(state.streak, 10)),
            float(len(state.flaky_tests())),
            sum(1 for names in state.flaky if names) / len(state.flaky) if state.flaky else 0.0,
            memory[-1] if memory else 0.0,
            max(memory[-5:]) if memory else 0.0,
            state.memory_slope(),
            float(sum(state.ooms)),
            state.duration_trend(),
            math.log1p(tenant.outage_failures_since(t, OUTAGE_WINDOW_S)),
            recent_outages,
            math.sin(2 * math.pi * hours / 24.0),
            math.cos(2 * math.pi * hours / 24.0),
            1.0 if weekday >= 5 else 0.0,
            math.log1p(state.runs),
            math.log1p(max(since_last, 0.0)),
            # A genuine break persists until fixed; a flaky failure says little about the next run.
            1.0 if state.last_failed and state.last_failure_class in GENUINE_BREAKS else 0.0,
            # Outages hit the jobs that fetch what is down; past fetch failures mark those jobs.
            recent_outages if state.fetch_failures else 0.0,
        ]


@dataclass(frozen=True)
class LabelledExamples:
    """Training rows: features just before each run, the run's result, and when."""

    features: list[list[float]]
    labels: list[int]
    times: list[float]
    scopes: list[Scope]


def labelled_examples(runs: Iterable[RunRecord]) -> LabelledExamples:
    """One example per success/failure run, from history strictly before it ended.

    Runs may span tenants and scopes; tenant-wide signals stay within each tenant.
    """
    ordered = sorted(runs, key=lambda r: (r.started_at, r.run_id, r.attempt))
    stream = FeatureStream()
    features: list[list[float]] = []
    labels: list[int] = []
    times: list[float] = []
    scopes: list[Scope] = []
    for run in ordered:
        stream.advance(run.started_at)
        if run.counts_for_risk:
            features.append(stream.features(run.scope, run.started_at))
            labels.append(int(run.failed))
            times.append(run.started_at)
            scopes.append(run.scope)
        stream.add(run)
    return LabelledExamples(features, labels, times, scopes)


def stream_until(runs: Iterable[RunRecord], now: float) -> FeatureStream:
    """A stream that knows every run in `runs` that ended by `now`."""
    stream = FeatureStream()
    for run in sorted(runs, key=lambda r: (r.started_at, r.run_id, r.attempt)):
        if run.started_at <= now:
            stream.add(run)
    stream.advance(now)
    return stream
