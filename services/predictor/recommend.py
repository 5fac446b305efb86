"""Proactive interventions: fix what is about to hurt before it fails a run.

Four patterns, each with the evidence that triggered it and an action in the planner's
vocabulary (`ActionKind` plus string parameters), so an operator can accept one into a
healing plan:

* a test whose flakiness is rising          -> QUARANTINE_TEST
* peak memory trending toward the limit      -> RAISE_RESOURCE_LIMIT
* dependency fetch failures clustering       -> ESCALATE (pin or mirror it: no automatic action exists)
* a pipeline whose duration keeps drifting   -> ESCALATE (split or re-time it)

All are ranked by one expected benefit: runner-minutes saved per week (a failure avoided
saves the re-run of the job; a drift undone saves its excess on every run).
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from services.common.vocabulary import ActionKind, FailureClass
from services.predictor.features import slope
from services.predictor.history import RunRecord, Scope

LOOKBACK_DAYS = 14.0
RECENT_DAYS = 7.0
DAY = 86_400.0
MIN_FLAKES_RECENT = 3
MEMORY_RUNS = 20
MEMORY_HORIZON_RUNS = 50  # warn when the limit is reached within this many runs at the current pace
MEMORY_HEADROOM = 1.25
MEMORY_STEP_MB = 512
OUTAGE_GAP_S = 2 * 3600.0  # failures closer than this belong to one burst
MIN_DEPENDENCY_FAILURES = 5
DRIFT_MIN_RUNS = 30
DRIFT_MIN_PER_DAY = 0.005  # 0.5% slower every day is 15% a month
DRIFT_MIN_TOTAL = 0.06
DRIFT_CONFIDENCE = 0.99
DRIFT_MIN_LOWER_PER_DAY = 0.001  # even the slope's lower 99% bound is a real slowdown
STILL_FLAKING_S = 3 * DAY


@dataclass(frozen=True)
class Recommendation:
    # "quarantine_test", "raise_memory_limit", "pin_or_mirror_dependency" or "split_or_retime"
    intervention: str
    action: ActionKind
    scope: Scope  # the job or pipeline to act on; for a dependency, the tenant (repository "")
    parameters: dict[str, str] = field(hash=False)
    expected_benefit_minutes_per_week: float = 0.0
    expected_failures_avoided_per_week: float = 0.0
    summary: str = ""
    evidence: tuple[str, ...] = ()

    @property
    def recommendation_id(self) -> str:
        """Stable across calls while the same problem persists, so it can be accepted by id."""
        parameters = self.parameters
        target = parameters.get("test") or parameters.get("dependency") or parameters.get("resource", "")
        identity = "|".join((self.intervention, self.scope.tenant, self.scope.repository, self.scope.pipeline,
                             self.scope.job, target))
        return "rec-" + hashlib.sha256(identity.encode()).hexdigest()[:16]

    @property
    def repository(self) -> str:
        return self.scope.repository

    @property
    def pipeline(self) -> str:
        return self.scope.pipeline

    @property
    def job(self) -> str:
        return self.scope.job

    @property
    def expected_benefit(self) -> float:
        """Runner-minutes saved per week: the one unit recommendations are ranked by."""
        return self.expected_benefit_minutes_per_week

    @property
    def title(self) -> str:
        return self.summary


def recommend(runs: Sequence[RunRecord], now: float) -> list[Recommendation]:
    """Recommendations for the tenant whose `runs` (the last LOOKBACK_DAYS) are given,
    best expected benefit first."""
    recent = [r for r in runs if now - LOOKBACK_DAYS * DAY <= r.started_at <= now]
    by_scope: dict[Scope, list[RunRecord]] = defaultdict(list)
    for run in recent:
        by_scope[run.scope].append(run)
    for scope_runs in by_scope.values():
        scope_runs.sort(key=lambda r: r.started_at)
    found: list[Recommendation] = []
    for scope, scope_runs in by_scope.items():
        found.extend(_flaky_tests(scope, scope_runs, now))
        memory = _memory(scope, scope_runs, now)
        if memory is not None:
            found.append(memory)
        drift = _drift(scope, scope_runs, now)
        if drift is not None:
            found.append(drift)
    found.extend(_dependencies(recent, by_scope, now))
    found.sort(key=lambda r: (-r.expected_benefit_minutes_per_week, r.summary))
    return found


def _rerun_minutes(runs: Sequence[RunRecord]) -> float:
    durations = [r.duration_s for r in runs if r.counts_for_risk and not r.failed]
    return statistics.median(durations) / 60.0 if durations else 10.0


def _scope_parameters(scope: Scope) -> dict[str, str]:
    return {"repository": scope.repository, "pipeline": scope.pipeline, "job": scope.job}


def _flaky_tests(scope: Scope, runs: list[RunRecord], now: float) -> list[Recommendation]:
    split = now - RECENT_DAYS * DAY
    recent = [r for r in runs if r.started_at >= split and r.counts_for_risk]
    earlier = [r for r in runs if r.started_at < split and r.counts_for_risk]
    recent_flakes: dict[str, int] = defaultdict(int)
    last_flake: dict[str, float] = {}
    earlier_flakes: dict[str, int] = defaultdict(int)
    for run in recent:
        for test in run.flaky_tests:
            recent_flakes[test] += 1
            last_flake[test] = max(last_flake.get(test, 0.0), run.started_at)
    for run in earlier:
        for test in run.flaky_tests:
            earlier_flakes[test] += 1
    found = []
    for test, count in recent_flakes.items():
        before = earlier_flakes.get(test, 0)
        recent_rate = count / len(recent)
        earlier_rate = before / len(earlier) if earlier else 0.0
        over = now - last_flake[test] > STILL_FLAKING_S
        if count < MIN_FLAKES_RECENT or recent_rate < earlier_rate or over:
            continue  # flakiness that is rare, falling or over does not pay for lost coverage
        trend = "rising" if recent_rate > earlier_rate * 1.2 else "steady"
        # The recent pace, continued for a week, is what quarantine avoids.
        per_week = count * 7.0 / RECENT_DAYS
        minutes = per_week * _rerun_minutes(runs)
        evidence = (
            f"{test} flaked in {count} of the last {len(recent)} runs ({RECENT_DAYS:.0f} days), "
            f"{'up from' if trend == 'rising' else 'after'} {before} of {len(earlier)} "
            f"the {RECENT_DAYS:.0f} days before",
            f"each flaky failure costs a re-run of {scope.describe()} "
            f"(~{_rerun_minutes(runs):.0f} runner-minutes)",
        )
        found.append(Recommendation(
            "quarantine_test", ActionKind.QUARANTINE_TEST, scope,
            {**_scope_parameters(scope), "test": test},
            round(minutes, 1), round(per_week, 2),
            f"quarantine {test} in {scope.describe()} (flakiness {trend})", evidence,
        ))
    return found


def _memory(scope: Scope, runs: list[RunRecord], now: float) -> Recommendation | None:
    measured = [r for r in runs if r.memory_fraction is not None and r.counts_for_risk]
    if len(measured) < 5:
        return None
    last = measured[-MEMORY_RUNS:]
    fractions = [r.memory_fraction or 0.0 for r in last]
    per_run = slope(fractions)
    ooms = [r for r in runs if r.failed and r.failure_class == FailureClass.OUT_OF_MEMORY
            and r.started_at >= now - RECENT_DAYS * DAY]
    current = fractions[-1]
    runs_to_limit = (1.0 - current) / per_run if per_run > 0 else math.inf
    approaching = per_run >= 0.003 and runs_to_limit <= MEMORY_HORIZON_RUNS and current >= 0.6
    still_tight = bool(ooms) and current >= 0.8  # memory back to normal after OOMs: the leak was fixed
    if not approaching and not still_tight:
        return None
    limit = last[-1].memory_limit_mb
    runs_per_week = len([r for r in runs if r.started_at >= now - RECENT_DAYS * DAY]) * 7.0 / RECENT_DAYS
    if approaching:
        # Runs in the coming week whose projected peak is over the limit would fail.
        over = max(0.0, runs_per_week - max(runs_to_limit, 0.0))
        per_week = max(over, len(ooms) * 7.0 / RECENT_DAYS)
    else:
        per_week = len(ooms) * 7.0 / RECENT_DAYS
    projected_peak = max(max(r.peak_memory_mb for r in last),
                         (current + max(per_run, 0.0) * min(runs_per_week, MEMORY_HORIZON_RUNS)) * limit)
    new_limit = int(math.ceil(projected_peak * MEMORY_HEADROOM / MEMORY_STEP_MB) * MEMORY_STEP_MB)
    new_limit = max(new_limit, int(limit) + MEMORY_STEP_MB)
    evidence = [
        f"peak memory went from {fractions[0]:.0%} to {current:.0%} of the {limit:.0f} MB limit "
        f"over the last "
        f"{len(last)} runs ({per_run * 100:+.1f} points per run)",
    ]
    if approaching and runs_to_limit > 0:
        evidence.append(f"at this pace it reaches the limit in about {runs_to_limit:.0f} runs")
    if ooms:
        evidence.append(f"{len(ooms)} out-of-memory failure{'s' if len(ooms) > 1 else ''} in the last "
                        f"{RECENT_DAYS:.0f} days")
    if per_run >= 0.003:
        evidence.append("steady growth run over run suggests a leak: raising the limit buys time, not a fix")
    return Recommendation(
        "raise_memory_limit", ActionKind.RAISE_RESOURCE_LIMIT, scope,
        {**_scope_parameters(scope), "resource": "memory", "memory_limit_mb": str(new_limit),
         "current_limit_mb": str(int(limit))},
        round(per_week * _rerun_minutes(runs), 1), round(per_week, 2),
        f"raise the memory limit of {scope.describe()} from {limit:.0f} MB to {new_limit} MB",
        tuple(evidence),
    )


def _dependencies(runs: Sequence[RunRecord], by_scope: dict[Scope, list[RunRecord]], now: float
                  ) -> list[Recommendation]:
    failures: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.failed:
            for dependency in run.failed_dependencies:
                failures[dependency].append(run)
    found = []
    for dependency, hits in failures.items():
        if len(hits) < MIN_DEPENDENCY_FAILURES:
            continue
        hits.sort(key=lambda r: r.started_at)
        bursts = [[hits[0]]]
        for run in hits[1:]:
            if run.started_at - bursts[-1][-1].started_at <= OUTAGE_GAP_S:
                bursts[-1].append(run)
            else:
                bursts.append([run])
        pipelines = {(r.repository, r.pipeline) for r in hits}
        longest = max(b[-1].started_at - b[0].started_at for b in bursts) / 3600.0
        days = LOOKBACK_DAYS
        per_week = len(hits) * 7.0 / days
        minutes = sum(_rerun_minutes(by_scope.get(r.scope, [r])) for r in hits) * 7.0 / days
        tenant = hits[0].tenant
        evidence = (
            f"{len(hits)} fetch failures of {dependency} in {len(bursts)} "
            f"burst{'s' if len(bursts) > 1 else ''} over the last {days:.0f} days, "
            f"across {len(pipelines)} pipeline{'s' if len(pipelines) > 1 else ''}",
            f"longest burst {longest:.1f}h; failures cluster in time, so the cause is the source, "
            f"not the jobs",
        )
        found.append(Recommendation(
            "pin_or_mirror_dependency", ActionKind.ESCALATE, Scope(tenant, "", "", ""),
            {"intervention": "pin_or_mirror_dependency", "dependency": dependency,
             "pipelines": ",".join(sorted(f"{repo}/{name}" for repo, name in pipelines))},
            round(minutes, 1), round(per_week, 2),
            f"pin or mirror {dependency} ({len(pipelines)} pipelines affected)", evidence,
        ))
    return found


def _drift(scope: Scope, runs: list[RunRecord], now: float) -> Recommendation | None:
    good = [r for r in runs if r.counts_for_risk and not r.failed]
    if len(good) < DRIFT_MIN_RUNS:
        return None
    # Divide out the time-of-day/week effect (busy afternoons run slower), so that only a
    # change over the days is left to fit.
    slots: dict[tuple[bool, int], list[float]] = defaultdict(list)
    for run in good:
        slots[_slot(run.started_at)].append(run.duration_s)
    overall = statistics.median(r.duration_s for r in good)
    slot_median = {key: statistics.median(v) if len(v) >= 3 else overall for key, v in slots.items()}
    xs = [(run.started_at - now) / DAY for run in good]
    ys = [run.duration_s / slot_median[_slot(run.started_at)] for run in good]
    if max(xs) - min(xs) < 3.0:
        return None
    # Theil-Sen: a slow runner or two (a 4x run) must not read as a trend.
    with np.errstate(invalid="ignore"):  # identical durations make the interval undefined (NaN)
        fit = stats.theilslopes(ys, xs, alpha=DRIFT_CONFIDENCE)
    per_day, intercept, low_slope = float(fit.slope), float(fit.intercept), float(fit.low_slope)
    if not math.isfinite(low_slope):
        return None
    start_level = intercept + per_day * min(xs)
    end_level = intercept + per_day * max(xs)
    if start_level <= 0:
        return None
    relative_per_day = per_day / start_level
    total = end_level / start_level - 1.0
    span_days = max(xs) - min(xs)
    if (relative_per_day < DRIFT_MIN_PER_DAY or total < DRIFT_MIN_TOTAL
            or low_slope / start_level < DRIFT_MIN_LOWER_PER_DAY):
        return None
    runs_per_week = len([r for r in runs if r.started_at >= now - RECENT_DAYS * DAY]) * 7.0 / RECENT_DAYS
    # The excess at the end of the window, at the scale of the median run.
    excess_minutes = overall * (total / (1 + total / 2)) / 60.0
    evidence = (
        f"successful runs are {total:+.0%} slower than {span_days:.0f} days ago "
        f"({relative_per_day:+.1%} per day, at least {low_slope / start_level:+.1%} "
        f"with {DRIFT_CONFIDENCE:.0%} confidence;"
        f" time-of-day effects removed)",
        f"{runs_per_week:.0f} runs a week each spend ~{excess_minutes:.0f} runner-minutes more than "
        f"{span_days:.0f} days ago (median duration {overall / 60:.0f}m)",
    )
    return Recommendation(
        "split_or_retime", ActionKind.ESCALATE, scope,
        {**_scope_parameters(scope), "intervention": "split_or_retime",
         "duration_growth_per_day": f"{relative_per_day:.4f}"},
        round(excess_minutes * runs_per_week, 1), 0.0,
        f"split or re-time {scope.describe()} (duration {total:+.0%} in {span_days:.0f} days)", evidence,
    )


def _slot(t: float) -> tuple[bool, int]:
    weekday = int(t // DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return weekday >= 5, int((t % DAY) // 3600.0) // 3
