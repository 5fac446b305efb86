"""Runs that are unusual for their own pipeline: slow, stuck in the queue, memory-hungry,
or part of a burst of failures.

Two detectors, because each misses what the other sees:

* a robust per-job baseline (median and MAD of the preceding weeks), by weekday and
  part of day where there is enough history, since queue time at Monday 14:00 and at
  Sunday 03:00 are different normals. It alerts on one metric far above its normal and
  explains itself in words.
* an IsolationForest over the per-metric deviations of all the tenant's jobs (scale
  free, so one forest serves every pipeline), for runs that are moderately off on
  several metrics at once, which no single threshold catches.

Only the expensive direction alerts (longer, later, bigger): a run that is quicker than
usual is rarely something to act on, and failing runs are often short.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from services.predictor.history import RunKey, RunRecord, Scope

# 6 MADs is about 4 standard deviations of a normal metric: rare enough that a tenant
# with a thousand runs a day sees a handful of alerts, not hundreds.
ALERT_MADS = 6.0
JOINT_MADS = 3.5  # each of two metrics, when the forest also finds the run isolated
FOREST_QUANTILE = 0.995  # the forest's score must be beyond this share of the baseline's
MIN_BASELINE_RUNS = 8
MIN_SEASONAL_RUNS = 20
REFERENCE_SAMPLE = 2000
FOREST_RUNS = 4000
FAILURE_BURST_RUNS = 5
FAILURE_BURST_P = 1e-3

PARTS_OF_DAY = ((0, "nights"), (6, "mornings"), (12, "afternoons"), (18, "evenings"))
SLOT_HOURS = 3  # CI load changes within a morning; three-hour slots follow it closely enough
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Metric:
    name: str  # "duration", "queue", "memory"
    label: str
    min_excess: float  # below this absolute excess nothing is worth an alert
    min_relative_excess: float  # ... nor below this fraction of the median
    relative_floor: float  # MAD is at least this fraction of the median (a too-regular job)
    absolute_floor: float
    seasonal: bool


DURATION = Metric("duration", "duration", min_excess=180.0, min_relative_excess=0.25, relative_floor=0.02,
                  absolute_floor=5.0, seasonal=True)
QUEUE = Metric("queue", "queue time", min_excess=300.0, min_relative_excess=1.0, relative_floor=0.05,
               absolute_floor=5.0, seasonal=True)
MEMORY = Metric("memory", "peak memory", min_excess=0.10, min_relative_excess=0.0, relative_floor=0.02,
                absolute_floor=0.005, seasonal=False)
METRICS = (DURATION, QUEUE, MEMORY)


@dataclass(frozen=True)
class Deviation:
    metric: str
    value: float
    median: float
    mads: float  # how many MADs above the median (negative: below)
    context: str  # "for Monday mornings", "for weekday afternoons", "overall"
    baseline_runs: int


@dataclass(frozen=True)
class Anomaly:
    run: RunRecord
    metric: str  # the strongest unusual metric: "duration", "queue", "memory" or "failure_pattern"
    metrics: tuple[str, ...]  # every metric found unusual (several when the forest flagged a combination)
    detector: str  # "baseline" (one metric far off), "isolation_forest" (several moderately off), "burst"
    score: float  # strength: MADs above normal, or -log10 of the burst's chance under the usual rate
    isolation_score: float  # share of the baseline's runs less isolated than this (0.5 typical, 1 extreme)
    reason: str
    deviations: tuple[Deviation, ...]

    @property
    def key(self) -> RunKey:
        return self.run.key

    @property
    def started_at(self) -> float:
        return self.run.started_at


def metric_value(run: RunRecord, metric: Metric) -> float | None:
    if metric is DURATION:
        return run.duration_s
    if metric is QUEUE:
        return run.queue_s
    fraction = run.memory_fraction
    return fraction if fraction is not None else None


def _weekday(t: float) -> int:
    return int(t // 86_400.0 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0


def _part_of_day(t: float) -> int:
    return int((t % 86_400.0) // 3600.0) // 6


def _contexts(t: float) -> list[tuple[tuple[object, ...], str]]:
    """Baseline buckets for a run at `t`, most specific first."""
    day, part = _weekday(t), _part_of_day(t)
    slot = int((t % 86_400.0) // 3600.0) // SLOT_HOURS
    hours = f"{slot * SLOT_HOURS:02d}-{(slot + 1) * SLOT_HOURS:02d}h"
    weekend = day >= 5
    kind = "weekend" if weekend else "weekday"
    part_name = PARTS_OF_DAY[part][1]
    return [
        (("day", day, slot), f"for {WEEKDAYS[day]} {part_name} ({hours})"),
        (("kind", weekend, slot), f"for {kind} {part_name} ({hours})"),
        (("kind", weekend, "part", part), f"for {kind} {part_name}"),
        (("all",), "overall"),
    ]


class Baseline:
    """Median and MAD of each metric for one job, per seasonal bucket."""

    def __init__(self, runs: Sequence[RunRecord]) -> None:
        self.buckets: dict[str, dict[tuple[object, ...], tuple[float, float, int]]] = {}
        for metric in METRICS:
            groups: dict[tuple[object, ...], list[float]] = defaultdict(list)
            for run in runs:
                if not run.counts_for_risk or (metric is DURATION and run.failed):
                    continue  # failed runs stop early; they would drag the normal duration down
                value = metric_value(run, metric)
                if value is None:
                    continue
                keys = [key for key, _ in _contexts(run.started_at)] if metric.seasonal else [("all",)]
                for key in keys:
                    groups[key].append(value)
            summary = {}
            for key, values in groups.items():
                median = statistics.median(values)
                mad = statistics.median([abs(v - median) for v in values])
                mad = max(mad, metric.relative_floor * abs(median), metric.absolute_floor)
                summary[key] = (median, mad, len(values))
            self.buckets[metric.name] = summary
        outcomes = [int(r.failed) for r in runs if r.counts_for_risk]
        # Failure rate under the same Beta(1, 9) prior the forecasts use.
        self.failure_rate = (1.0 + sum(outcomes)) / (10.0 + len(outcomes))
        self.runs = len(outcomes)

    def deviation(self, run: RunRecord, metric: Metric) -> Deviation | None:
        value = metric_value(run, metric)
        summary = self.buckets.get(metric.name, {})
        if value is None:
            return None
        contexts = _contexts(run.started_at) if metric.seasonal else [(("all",), "overall")]
        for key, words in contexts:
            found = summary.get(key)
            needed = MIN_SEASONAL_RUNS if key != ("all",) else MIN_BASELINE_RUNS
            if found is not None and found[2] >= needed:
                median, mad, count = found
                return Deviation(metric.name, value, median, (value - median) / mad, words, count)
        return None


def _format(metric: str, value: float) -> str:
    if metric == "memory":
        return f"{value:.0%} of its limit"
    minutes = value / 60.0
    if minutes >= 90:
        return f"{minutes / 60.0:.1f}h"
    if minutes >= 1:
        return f"{minutes:.0f}m"
    return f"{value:.0f}s"


def describe(deviation: Deviation, scope: Scope) -> str:
    label = {"duration": "duration", "queue": "queue time", "memory": "peak memory"}[deviation.metric]
    who = "this job's" if scope.job else "this pipeline's"
    return (f"{label} {_format(deviation.metric, deviation.value)} is {deviation.mads:.1f} MADs above "
            f"{who} median {_format(deviation.metric, deviation.median)} {deviation.context}")


def _excess_ok(deviation: Deviation) -> bool:
    metric = next(m for m in METRICS if m.name == deviation.metric)
    excess = deviation.value - deviation.median
    return excess >= metric.min_excess and excess >= metric.min_relative_excess * abs(deviation.median)


def _deviation_row(deviations: dict[str, Deviation]) -> list[float]:
    # Clipped so one enormous outlier does not flatten the forest's view of the rest.
    return [float(np.clip(deviations[m.name].mads, -20, 20)) if m.name in deviations else 0.0
            for m in METRICS]


def detect_anomalies(baseline_runs: Sequence[RunRecord], window_runs: Sequence[RunRecord],
                     seed: int = 0) -> list[Anomaly]:
    """Anomalies among `window_runs`, each job judged against its own `baseline_runs`.

    Baseline runs should precede the window (the service uses the 28 days before it).
    Jobs with fewer than MIN_BASELINE_RUNS baseline runs are not judged on metrics.
    Returns the anomalies strongest first.
    """
    by_scope: dict[Scope, list[RunRecord]] = defaultdict(list)
    for run in baseline_runs:
        by_scope[run.scope].append(run)
    baselines = {scope: Baseline(runs) for scope, runs in by_scope.items()}

    forest, reference = _fit_forest(baselines, by_scope, seed)
    window_by_scope: dict[Scope, list[RunRecord]] = defaultdict(list)
    for run in window_runs:
        window_by_scope[run.scope].append(run)
    rows: list[list[float]] = []
    judged: list[tuple[RunRecord, dict[str, Deviation]]] = []
    found: list[Anomaly] = []
    for scope, runs in window_by_scope.items():
        baseline = baselines.get(scope)
        runs.sort(key=lambda r: r.started_at)
        if baseline is not None and baseline.runs >= MIN_BASELINE_RUNS:
            for run in runs:
                if run.counts_for_risk:
                    deviations = {m.name: d for m in METRICS if (d := baseline.deviation(run, m)) is not None}
                    rows.append(_deviation_row(deviations))
                    judged.append((run, deviations))
        found.extend(_failure_bursts(scope, by_scope.get(scope, []), runs, baseline))
    for (run, deviations), isolated in zip(judged, _isolation(forest, reference, rows), strict=True):
        anomaly = _judge(run, deviations, isolated)
        if anomaly is not None:
            found.append(anomaly)
    found.sort(key=lambda a: -a.score)
    return found


def _fit_forest(baselines: dict[Scope, Baseline], by_scope: dict[Scope, list[RunRecord]], seed: int
                ) -> tuple[object | None, np.ndarray]:
    from sklearn.ensemble import IsolationForest

    candidates = [(scope, run) for scope, runs in by_scope.items()
                  if baselines[scope].runs >= MIN_BASELINE_RUNS
                  for run in runs if run.counts_for_risk]
    # A forest sees 256 rows per tree; a few thousand baseline runs describe "normal" as well as all.
    if len(candidates) > FOREST_RUNS:
        candidates = random.Random(seed).sample(candidates, FOREST_RUNS)
    rows = []
    for scope, run in candidates:
        baseline = baselines[scope]
        deviations = {m.name: d for m in METRICS if (d := baseline.deviation(run, m)) is not None}
        rows.append(_deviation_row(deviations))
    if len(rows) < 50:
        return None, np.array([])
    matrix = np.asarray(rows)
    forest = IsolationForest(n_estimators=100, max_samples=min(256, len(rows)), random_state=seed)
    forest.fit(matrix)
    # The forest's scores are only meaningful relative to the baseline's own; a sample of
    # it is enough to place a window run among them, and scoring is the costly part.
    sample = np.random.default_rng(seed).choice(len(matrix), size=min(len(matrix), REFERENCE_SAMPLE),
                                                replace=False)
    reference = np.sort(-forest.score_samples(matrix[sample]))
    return forest, reference


def _isolation(forest: object | None, reference: np.ndarray, rows: list[list[float]]) -> list[float]:
    """Share of the baseline less isolated than each row (0.5 typical, 1.0 beyond all)."""
    if forest is None or not rows:
        return [0.0] * len(rows)
    scores = -forest.score_samples(np.asarray(rows))  # type: ignore[attr-defined]
    return [float(np.searchsorted(reference, s, side="right") / len(reference)) for s in scores]


def _judge(run: RunRecord, deviations: dict[str, Deviation], isolated: float) -> Anomaly | None:
    strong = [d for d in deviations.values() if d.mads >= ALERT_MADS and _excess_ok(d)]
    joint = [d for d in deviations.values() if d.mads >= JOINT_MADS]
    if strong:
        strong.sort(key=lambda d: -d.mads)
        reasons = [describe(d, run.scope) for d in strong]
        return Anomaly(run, strong[0].metric, tuple(d.metric for d in strong), "baseline",
                       round(strong[0].mads, 2), round(isolated, 4), "; ".join(reasons), tuple(strong))
    if len(joint) >= 2 and isolated >= FOREST_QUANTILE:
        joint.sort(key=lambda d: -d.mads)
        reasons = [describe(d, run.scope) for d in joint]
        return Anomaly(run, joint[0].metric, tuple(d.metric for d in joint), "isolation_forest",
                       round(joint[0].mads, 2), round(isolated, 4),
                       "unusual on several metrics at once: " + "; ".join(reasons), tuple(joint))
    return None


def _failure_bursts(scope: Scope, baseline_runs: list[RunRecord], window: list[RunRecord],
                    baseline: Baseline | None) -> list[Anomaly]:
    """The run at which a burst of failures becomes too unlikely for this job's normal rate."""
    rate = baseline.failure_rate if baseline is not None else 0.1
    history = [r for r in sorted(baseline_runs, key=lambda r: r.started_at) if r.counts_for_risk]
    recent = [int(r.failed) for r in history[-FAILURE_BURST_RUNS:]]
    in_burst = False
    found = []
    for run in window:
        if not run.counts_for_risk:
            continue
        recent = (recent + [int(run.failed)])[-FAILURE_BURST_RUNS:]
        failures = sum(recent)
        p = float(stats.binom.sf(failures - 1, len(recent), rate)) if failures else 1.0
        burst = run.failed and p < FAILURE_BURST_P
        if burst and not in_burst:
            who = "this job's" if scope.job else "this pipeline's"
            reason = (f"{failures} of the last {len(recent)} runs failed; {who} usual failure rate is "
                      f"{rate:.0%} (chance {p:.1g})")
            found.append(Anomaly(run, "failure_pattern", ("failure_pattern",), "burst",
                                 round(-math.log10(max(p, 1e-300)), 2), 0.0, reason, ()))
        in_burst = burst or (in_burst and run.failed)
    return found
