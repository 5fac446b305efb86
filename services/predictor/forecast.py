"""Risk forecasts: how likely a pipeline's (or job's) next run is to fail, and over the next N runs.

Two ways to answer, and each answer says which it used:

* the statistical prior (model version 0): a recency-weighted failure rate under a
  Beta(1, 9) prior (see `features.PRIOR_ALPHA`). Always available, needs no training;
  it is what a tenant gets at service start and until its own history can train a model.
* a trained `RiskModel` (version >= 1): logistic regression or gradient boosting
  (whichever forecasts a later slice of time better) over `features.FEATURE_NAMES`,
  calibrated on that later slice.

A new model replaces the active one only if it scores at least as well (Brier score)
on held-out *future* runs: the newest 20% of history, which it did not train on.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from services.common.errors import InvalidArgument
from services.predictor.features import (
    FEATURE_NAMES,
    PRIOR_ALPHA,
    PRIOR_BETA,
    RECENT_RUNS,
    LabelledExamples,
    ScopeState,
    TenantState,
    labelled_examples,
    stream_until,
)
from services.predictor.history import RunRecord, Scope, collapse_pipeline_runs, in_scope

log = logging.getLogger(__name__)

MAX_HORIZON = 100
INTERVAL_LEVEL = 0.8
HELDOUT_FRACTION = 0.2
# Below this much labelled history a tenant keeps the statistical prior: a boosted
# model fit on a few hundred runs is noisier than the prior it would replace.
MIN_TRAINING_RUNS = 300
MIN_TRAINING_FAILURES = 20
# How quickly a forecast reverts from "now" to the pipeline's long-run rate, per run.
MEAN_REVERSION = 0.8  # chosen on seed 11 of the simulator; the evaluation reports seed 7
PRIOR_VERSION = 0


@dataclass(frozen=True)
class RiskFactor:
    name: str
    value: float
    description: str


@dataclass(frozen=True)
class RiskForecast:
    scope: Scope
    has_history: bool
    next_run_failure_probability: float
    horizon_runs: int
    expected_failure_rate: float  # expected share of the next `horizon_runs` runs that fail
    interval_low: float  # the share of failing runs lies in [low, high] with INTERVAL_LEVEL
    interval_high: float
    interval_level: float
    runs_considered: int
    history_span_seconds: float
    model_version: int  # 0 = the statistical prior
    method: str
    factors: tuple[RiskFactor, ...]
    explanation: str


class RiskModel:
    """A calibrated failure classifier: the better, on a later slice of time, of
    a logistic regression and gradient-boosted trees, followed by a calibration map.

    Why two: the signals interact and have thresholds (memory at 95% of the limit
    matters, at 60% it does not; a tenant-wide outage matters only to jobs that fetch),
    which boosted trees capture and a linear model cannot; but with a few thousand runs
    the trees overfit and the logistic regression (few parameters, calibrated by
    construction) forecasts the future better. Rather than guess the crossover, each
    training fits both on the earlier 80% of its runs and keeps whichever scores the
    better Brier on the latest 20%. Why a calibration map on that later slice: boosted
    scores are sharp but not frequencies, and the latest runs also correct for drift.
    """

    def __init__(self, classifier: object, calibrator: object, kind: str, calibration_method: str,
                 trained_runs: int, trained_until: float) -> None:
        self.classifier = classifier
        self.calibrator = calibrator
        self.kind = kind
        self.calibration_method = calibration_method
        self.trained_runs = trained_runs
        self.trained_until = trained_until
        self.feature_names = FEATURE_NAMES
        self.version = PRIOR_VERSION  # assigned when stored

    @property
    def matches_features(self) -> bool:
        """False for a model stored by a release that computed different features."""
        return getattr(self, "feature_names", None) == FEATURE_NAMES

    def describe(self) -> str:
        return f"{self.kind}, {self.calibration_method} calibration, {self.trained_runs} runs"

    def predict(self, features: Sequence[Sequence[float]]) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        x = np.asarray(features, dtype=float).reshape(-1, len(FEATURE_NAMES))
        with threadpool_limits(1):
            raw = self.classifier.predict_proba(x)[:, 1]  # type: ignore[attr-defined]
        return np.clip(_calibrate(self.calibrator, self.calibration_method, raw), 0.001, 0.999)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        pickle.dump(self, buffer, protocol=pickle.HIGHEST_PROTOCOL)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(blob: bytes, version: int) -> RiskModel:
        # Only blobs this service wrote to its own store are ever loaded.
        model = pickle.loads(blob)  # noqa: S301
        if not isinstance(model, RiskModel):
            raise TypeError(f"stored model is a {type(model).__name__}, not a RiskModel")
        model.version = version
        return model


def _calibrate(calibrator: object, method: str, raw: np.ndarray) -> np.ndarray:
    if method == "no":
        return raw
    if method == "isotonic":
        return np.asarray(calibrator.predict(raw))  # type: ignore[attr-defined]
    logits = _logit(raw).reshape(-1, 1)
    return np.asarray(calibrator.predict_proba(logits)[:, 1])  # type: ignore[attr-defined]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def prior_probabilities(features: Sequence[Sequence[float]]) -> np.ndarray:
    """The statistical prior's answer for feature rows: the decayed posterior rate."""
    x = np.asarray(features, dtype=float).reshape(-1, len(FEATURE_NAMES))
    return x[:, FEATURE_NAMES.index("decayed_failure_rate")]


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((np.asarray(probabilities) - np.asarray(labels)) ** 2))


def fit_risk_model(examples: LabelledExamples, seed: int = 0) -> RiskModel:
    """Fit on the earlier 80% of `examples` (by time); choose and calibrate on the latest 20%."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x = np.asarray(examples.features, dtype=float)
    y = np.asarray(examples.labels, dtype=int)
    times = np.asarray(examples.times, dtype=float)
    if len(y) < MIN_TRAINING_RUNS or y.sum() < MIN_TRAINING_FAILURES or y.sum() == len(y):
        raise InvalidArgument(
            "history",
            f"training needs >= {MIN_TRAINING_RUNS} finished runs with >= {MIN_TRAINING_FAILURES} failures"
            f" and some successes, got {len(y)} runs with {int(y.sum())} failures",
        )
    order = np.argsort(times, kind="stable")
    x, y = x[order], y[order]
    split = int(len(y) * 0.8)
    if y[:split].sum() == 0 or y[:split].sum() == split:
        raise InvalidArgument("history", "training needs failures and successes in its earlier 80%")
    candidates: dict[str, object] = {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000)),
        "gradient boosting": HistGradientBoostingClassifier(
            max_iter=80, learning_rate=0.08, max_leaf_nodes=15, min_samples_leaf=max(40, split // 100),
            l2_regularization=1.0, early_stopping=False, random_state=seed,
        ),
    }
    # One thread: OpenMP over 2 shared cores is an order of magnitude slower, not faster.
    with threadpool_limits(1):
        scored = []
        for kind, classifier in candidates.items():
            classifier.fit(x[:split], y[:split])  # type: ignore[attr-defined]
            raw = classifier.predict_proba(x[split:])[:, 1]  # type: ignore[attr-defined]
            scored.append((brier_score(raw, y[split:]), kind, classifier, raw))
    _, kind, classifier, raw = min(scored, key=lambda item: item[0])
    labels = y[split:]
    # Isotonic needs plenty of rows of both kinds; with few, a 2-parameter sigmoid is safer.
    if len(labels) >= 4000 and min(labels.sum(), (1 - labels).sum()) >= 200:
        calibrator: object = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, labels)
        method = "isotonic"
    elif labels.sum() > 0 and labels.sum() < len(labels):
        calibrator = LogisticRegression(C=1.0).fit(_logit(raw).reshape(-1, 1), labels)
        method = "sigmoid"
    else:
        calibrator, method = None, "no"
    return RiskModel(classifier, calibrator, kind, method, trained_runs=len(y),
                     trained_until=float(times.max()))


# -- forecasting ---------------------------------------------------------------------------


def validate_horizon(horizon: int) -> None:
    if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= MAX_HORIZON:
        raise InvalidArgument("horizon", f"horizon must be between 1 and {MAX_HORIZON} runs, got {horizon!r}")


def forecast_risk(
    scope: Scope,
    history: Sequence[RunRecord],
    now: float,
    horizon: int = 10,
    model: RiskModel | None = None,
) -> RiskForecast:
    """Forecast for `scope` at `now` from `history`.

    `history` is the tenant's runs the caller has at hand; it must contain the scope's
    own runs and should contain the tenant's runs of the last 6 hours (for the outage
    signal). A scope with job "" is the whole pipeline: its job runs are merged per run.
    With `model` None the statistical prior answers.
    """
    validate_horizon(horizon)
    own = [r for r in history if in_scope(r, scope) and r.started_at <= now]
    others = [r for r in history if not in_scope(r, scope)]
    if not scope.job:
        own = collapse_pipeline_runs(own)
    stream = stream_until([*own, *others], now)
    state = stream.state(scope)
    tenant_state = stream.tenants.get(scope.tenant) or TenantState()
    row = stream.features(scope, now)

    if state.runs == 0:
        return _no_history(scope, horizon, now, state, model)

    if model is None:
        probability = float(prior_probabilities([row])[0])
        method, version = f"statistical prior Beta({PRIOR_ALPHA:g},{PRIOR_BETA:g}) with recency decay", 0
    else:
        probability = float(model.predict([row])[0])
        method, version = f"risk model v{model.version} ({model.describe()})", model.version

    probability = round(probability, 4)  # the sentence quotes exactly the number returned
    long_run = (PRIOR_ALPHA + state.failures) / (PRIOR_ALPHA + PRIOR_BETA + state.runs)
    expected = _expected_rate(probability, long_run, horizon)
    # Uncertainty about the rate itself: it rests on the recent (decayed) runs plus the prior.
    weight = PRIOR_ALPHA + PRIOR_BETA + state.decayed_runs
    low, high = _rate_interval(expected, weight, horizon)
    span = (state.last_at or now) - (state.first_at or now)
    factors = _factors(state, tenant_state, row)
    explanation = _sentence(probability, state.runs, span, factors, horizon, expected)
    return RiskForecast(
        scope=scope, has_history=True, next_run_failure_probability=probability,
        horizon_runs=horizon, expected_failure_rate=round(expected, 4), interval_low=round(low, 4),
        interval_high=round(high, 4), interval_level=INTERVAL_LEVEL, runs_considered=state.runs,
        history_span_seconds=span, model_version=version, method=method, factors=tuple(factors),
        explanation=explanation,
    )


def _no_history(scope: Scope, horizon: int, now: float, state: ScopeState,
                model: RiskModel | None) -> RiskForecast:
    prior = PRIOR_ALPHA / (PRIOR_ALPHA + PRIOR_BETA)
    low, high = _rate_interval(prior, PRIOR_ALPHA + PRIOR_BETA, horizon)
    return RiskForecast(
        scope=scope, has_history=False, next_run_failure_probability=prior, horizon_runs=horizon,
        expected_failure_rate=prior, interval_low=round(low, 4), interval_high=round(high, 4),
        interval_level=INTERVAL_LEVEL, runs_considered=0, history_span_seconds=0.0, model_version=0,
        method=f"statistical prior Beta({PRIOR_ALPHA:g},{PRIOR_BETA:g})", factors=(),
        explanation=(
            f"no history for {scope.describe()}: risk {prior:.2f} is the prior for a CI job "
            f"(about 1 run in {round(1 / prior)} fails), not a measurement"
        ),
    )


def _expected_rate(next_probability: float, long_run: float, horizon: int) -> float:
    """Mean over the next `horizon` runs of a probability that reverts from now to the long run."""
    weights = MEAN_REVERSION ** np.arange(horizon)
    return float(np.mean(long_run + (next_probability - long_run) * weights))


def _rate_interval(rate: float, weight: float, horizon: int) -> tuple[float, float]:
    """Central interval for the share of `horizon` runs that fail: Beta-binomial, so it
    carries both the uncertainty about the rate and the luck of a few runs."""
    a = max(rate * weight, 1e-3)
    b = max((1 - rate) * weight, 1e-3)
    tail = (1 - INTERVAL_LEVEL) / 2
    low = stats.betabinom.ppf(tail, horizon, a, b) / horizon
    high = stats.betabinom.ppf(1 - tail, horizon, a, b) / horizon
    # Shares of a few runs are coarse (of 1 run: 0 or 1); keep the expectation inside.
    return float(min(low, rate)), float(max(high, rate))


def _factors(state: ScopeState, tenant: TenantState, row: list[float]) -> list[RiskFactor]:
    feature = dict(zip(FEATURE_NAMES, row, strict=True))
    factors: list[RiskFactor] = []
    recent = state.recent_outcomes()
    recent_failures = sum(recent)
    long_rate = state.failures / state.runs if state.runs else 0.0
    recent_rate = recent_failures / len(recent) if recent else 0.0
    if state.streak >= 2:
        words = f"failing now ({state.streak} failures in a row)"
    elif recent_failures >= 3 and recent_rate >= long_rate + 0.1:
        words = f"failure rate rising ({recent_failures} of last {len(recent)})"
    elif len(recent) >= 5 and recent_rate <= long_rate - 0.1:
        words = f"failure rate falling ({recent_failures} of last {len(recent)})"
    else:
        words = f"{recent_failures} of last {len(recent)} failed"
    factors.append(RiskFactor("recent_failure_rate", recent_rate, words))
    if feature["last_failure_genuine_break"]:
        broke = state.last_failure_class.name
        factors.append(RiskFactor("last_failure_genuine_break", 1.0,
                                  f"last run broke ({broke}), which persists until fixed"))
    flaky = state.flaky_tests()
    if flaky:
        names = ", ".join(flaky[:2]) + (f" and {len(flaky) - 2} more" if len(flaky) > 2 else "")
        factors.append(RiskFactor("flaky_tests_present", float(len(flaky)),
                                  f"flaky test{'s' if len(flaky) > 1 else ''} {names} present"))
    memory = feature["memory_fraction_last"]
    memory_slope = feature["memory_fraction_slope"]
    if memory >= 0.8 or (memory >= 0.5 and memory_slope >= 0.03):
        trend = f", rising {memory_slope * 100:.0f} points per 10 runs" if memory_slope >= 0.01 else ""
        factors.append(RiskFactor("memory_fraction_last", memory,
                                  f"peak memory at {memory:.0%} of limit{trend}"))
    if feature["oom_recent"] > 0:
        count = int(feature["oom_recent"])
        factors.append(RiskFactor("oom_recent", float(count),
                                  f"{count} out-of-memory failure{'s' if count > 1 else ''}"
                                  f" in last {RECENT_RUNS}"))
    outages = round(math.expm1(feature["tenant_outage_failures_6h"]))
    if outages >= 2:
        deps = sorted({d for _, names in tenant.outage_failures for d in names})
        which = f" ({', '.join(deps[:3])})" if deps else ""
        factors.append(RiskFactor("tenant_outage_failures_6h", float(outages),
                                  f"{outages} dependency/network failures across the tenant"
                                  f" in the last 6h{which}"))
    drift = feature["duration_trend"]
    if drift >= 0.1:
        factors.append(RiskFactor("duration_trend", drift, f"duration growing {drift:.0%} per 10 runs"))
    return factors


def _sentence(probability: float, runs: int, span_seconds: float, factors: list[RiskFactor],
              horizon: int, expected: float) -> str:
    days = span_seconds / 86_400.0
    span = f"{days:.0f} days" if days >= 2 else f"{span_seconds / 3600.0:.0f} hours"
    reasons = ", ".join(f.description for f in factors)
    text = f"risk {probability:.2f} from {runs} run{'s' if runs != 1 else ''} over {span}: {reasons}"
    if horizon > 1:
        text += f"; about {expected:.0%} of the next {horizon} runs expected to fail"
    if runs < 10:
        text += " (little history: mostly the prior)"
    return text


# -- retraining and the replacement rule ---------------------------------------------------


@dataclass(frozen=True)
class RetrainReport:
    replaced: bool
    candidate: RiskModel | None
    incumbent_version: int
    candidate_brier: float | None  # on the held-out future runs
    incumbent_brier: float
    train_runs: int
    heldout_runs: int
    heldout_from: float  # runs that started at or after this time were held out
    reason: str


def split_by_time(examples: LabelledExamples, heldout_fraction: float = HELDOUT_FRACTION
                  ) -> tuple[LabelledExamples, LabelledExamples, float]:
    """Earlier runs to train on, the newest `heldout_fraction` to judge on, and the cut time."""
    order = sorted(range(len(examples.labels)), key=lambda i: examples.times[i])
    cut_index = int(len(order) * (1 - heldout_fraction))
    cut_time = examples.times[order[cut_index]] if order else 0.0

    def take(indices: list[int]) -> LabelledExamples:
        return LabelledExamples(
            [examples.features[i] for i in indices], [examples.labels[i] for i in indices],
            [examples.times[i] for i in indices], [examples.scopes[i] for i in indices],
        )

    return take(order[:cut_index]), take(order[cut_index:]), cut_time


def retrain(runs: Sequence[RunRecord], incumbent: RiskModel | None, seed: int = 0) -> RetrainReport:
    """Train a candidate on all but the newest 20% of `runs` and judge it, and the
    incumbent (the prior when None), on those newest runs. The candidate should
    replace the incumbent only if `report.replaced` (Brier score no worse)."""
    examples = labelled_examples(runs)
    train, heldout, cut_time = split_by_time(examples)
    y_heldout = np.asarray(heldout.labels)
    incumbent_p = (prior_probabilities(heldout.features) if incumbent is None
                   else incumbent.predict(heldout.features)) if heldout.labels else np.array([])
    incumbent_brier = brier_score(incumbent_p, y_heldout) if heldout.labels else float("nan")
    incumbent_version = PRIOR_VERSION if incumbent is None else incumbent.version
    try:
        candidate = fit_risk_model(train, seed=seed)
    except InvalidArgument as error:
        return RetrainReport(False, None, incumbent_version, None, incumbent_brier, len(train.labels),
                             len(heldout.labels), cut_time,
                             f"not enough history to train: {error.description}")
    if len(heldout.labels) < 50 or y_heldout.sum() == 0:
        return RetrainReport(False, candidate, incumbent_version, None, incumbent_brier, len(train.labels),
                             len(heldout.labels), cut_time,
                             f"held-out future too small to judge ({len(heldout.labels)} runs,"
                             f" {int(y_heldout.sum())} failures); keeping v{incumbent_version}")
    candidate_brier = brier_score(candidate.predict(heldout.features), y_heldout)
    replaced = candidate_brier <= incumbent_brier
    verdict = "replaces" if replaced else "does not replace"
    reason = (f"candidate Brier {candidate_brier:.4f} vs v{incumbent_version} {incumbent_brier:.4f} on "
              f"{len(heldout.labels)} held-out future runs: candidate {verdict} v{incumbent_version}")
    log.info("retrain: %s", reason)
    return RetrainReport(replaced, candidate, incumbent_version, candidate_brier, incumbent_brier,
                         len(train.labels), len(heldout.labels), cut_time, reason)
