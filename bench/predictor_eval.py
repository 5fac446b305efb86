"""How well the predictor sees failures coming, judged on a future it did not see.

    .venv/bin/python -m bench.predictor_eval [--seed 7] [--days 56] [--train-days 35]

Data: the seeded synthetic history of `bench.history_sim` (2 tenants x 25 pipelines,
8 weeks, with injected flaky tests, memory leaks, dependency outages, bug bursts,
duration drift and point anomalies, and their ground truth).

Split by TIME: the risk model trains on runs that started and ended in the first
`--train-days` days (5 weeks) and is then frozen; every metric below is measured on the
runs of the following weeks (3 weeks). Features at each run use only runs that had
finished before it started, as in service.

Forecasts: ROC AUC, Brier score, log loss and expected calibration error per run, and
precision at the top k risky jobs (every 6 hours, rank all jobs by risk of their next
run; a hit is a job whose next run fails), for the trained model, the service's
statistical prior (Beta(1,9) with recency decay, what a tenant gets before training) and
the naive baseline (the raw failure rate of the job's last 10 runs).
Anomalies: each test day is judged against the 28 days before it; precision, recall
and false-positive rate against the injected anomalies (early-leak runs, neither clearly
normal nor anomalous, are left out of both), for the detector and a naive baseline
(per-job mean + 3 standard deviations, no seasonality).
Writes bench/results/predictor_eval.json and bench/results/predictor_calibration.png.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.history_sim import DAY, HOUR, SimConfig, SimHistory, generate
from services.predictor.anomalies import detect_anomalies
from services.predictor.features import FeatureStream, LabelledExamples
from services.predictor.forecast import (
    INTERVAL_LEVEL,
    brier_score,
    fit_risk_model,
    forecast_risk,
    prior_probabilities,
    retrain,
)
from services.predictor.history import RunRecord, Scope
from services.predictor.recommend import MIN_FLAKES_RECENT, recommend

RESULTS = Path(__file__).resolve().parent / "results"
TOP_K = 10
CHECKPOINT_EVERY = 6 * HOUR
NAIVE_WINDOW = 10
ANOMALY_BASELINE_DAYS = 28
HORIZON = 10


# -- forecasts ---------------------------------------------------------------------------------


def replay(runs: list[RunRecord], checkpoints: list[float]) -> dict[str, object]:
    """Features, naive rates and labels for every run, and for every job at every checkpoint."""
    ordered = sorted(runs, key=lambda r: (r.started_at, r.run_id, r.attempt))
    stream = FeatureStream()
    rows, labels, starts, ends, naive = [], [], [], [], []
    cp_rows, cp_naive, cp_scopes, cp_times = [], [], [], []
    next_checkpoint = 0
    for run in ordered:
        while next_checkpoint < len(checkpoints) and checkpoints[next_checkpoint] <= run.started_at:
            t = checkpoints[next_checkpoint]
            stream.advance(t)
            for scope in list(stream.scopes):
                cp_rows.append(stream.features(scope, t))
                cp_naive.append(_naive(stream, scope))
                cp_scopes.append(scope)
                cp_times.append(t)
            next_checkpoint += 1
        stream.advance(run.started_at)
        if run.counts_for_risk:
            rows.append(stream.features(run.scope, run.started_at))
            naive.append(_naive(stream, run.scope))
            labels.append(int(run.failed))
            starts.append(run.started_at)
            ends.append(run.ended_at)
        stream.add(run)
    return {"rows": rows, "labels": labels, "starts": starts, "ends": ends, "naive": naive,
            "cp_rows": cp_rows, "cp_naive": cp_naive, "cp_scopes": cp_scopes, "cp_times": cp_times}


def _naive(stream: FeatureStream, scope: Scope) -> float:
    outcomes = stream.state(scope).recent_outcomes(NAIVE_WINDOW)
    return sum(outcomes) / len(outcomes) if outcomes else math.nan


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            error += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(error)


def precision_at_k(scores: np.ndarray, scopes: list[Scope], times: list[float],
                   next_failed: dict[tuple[Scope, float], int]) -> tuple[float, float]:
    by_time: dict[float, list[int]] = defaultdict(list)
    for i, t in enumerate(times):
        if (scopes[i], t) in next_failed:
            by_time[t].append(i)
    precisions = []
    for indices in by_time.values():
        if len(indices) < TOP_K:
            continue
        # Ties (common for the naive rate) are broken at random, not in the baseline's favour.
        jitter = np.random.default_rng(0).random(len(indices)) * 1e-9
        top = sorted(indices, key=lambda i: -(scores[i] + jitter[indices.index(i)]))[:TOP_K]
        precisions.append(sum(next_failed[(scopes[i], times[i])] for i in top) / TOP_K)
    if not precisions:
        return math.nan, math.nan
    # Standard error over checkpoints, to tell a real difference from a lucky week.
    return float(np.mean(precisions)), float(np.std(precisions, ddof=1) / math.sqrt(len(precisions)))


def evaluate_forecasts(history: SimHistory, cut: float) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    from sklearn.metrics import log_loss, roc_auc_score

    end = history.end
    checkpoints = list(np.arange(cut + CHECKPOINT_EVERY, end, CHECKPOINT_EVERY))
    data = replay(history.runs, checkpoints)
    starts = np.asarray(data["starts"])
    ends = np.asarray(data["ends"])
    rows = np.asarray(data["rows"])
    labels = np.asarray(data["labels"])
    naive = np.asarray(data["naive"])
    train_mask = ends < cut  # the label must have been known before the cut
    test_mask = starts >= cut
    train = LabelledExamples(rows[train_mask].tolist(), labels[train_mask].tolist(),
                             starts[train_mask].tolist(), [])
    started = time.perf_counter()
    model = fit_risk_model(train, seed=0)
    fit_seconds = time.perf_counter() - started
    train_rate = float(labels[train_mask].mean())

    y = labels[test_mask]
    predictions = {
        "model": model.predict(rows[test_mask]),
        "prior": prior_probabilities(rows[test_mask]),
        "naive_recent_rate": np.where(np.isnan(naive[test_mask]), train_rate, naive[test_mask]),
    }
    # Labels for checkpoints: did the job's next run after t fail?
    per_scope: dict[Scope, list[tuple[float, int]]] = defaultdict(list)
    for run in history.runs:
        if run.counts_for_risk:
            per_scope[run.scope].append((run.started_at, int(run.failed)))
    for values in per_scope.values():
        values.sort()
    next_failed: dict[tuple[Scope, float], int] = {}
    for scope, t in zip(data["cp_scopes"], data["cp_times"], strict=True):
        values = per_scope[scope]
        position = bisect.bisect_right(values, (t, 2))
        if position < len(values):
            next_failed[(scope, t)] = values[position][1]
    cp_rows = np.asarray(data["cp_rows"])
    cp_naive = np.asarray(data["cp_naive"])
    checkpoint_scores = {
        "model": model.predict(cp_rows),
        "prior": prior_probabilities(cp_rows),
        "naive_recent_rate": np.where(np.isnan(cp_naive), train_rate, cp_naive),
    }
    results: dict[str, object] = {
        "split": (f"train on runs that ended before day {(cut - history.config.start) / DAY:.0f}, "
                  f"test on runs that started from day {(cut - history.config.start) / DAY:.0f} to "
                  f"{(end - history.config.start) / DAY:.0f} (time split, model frozen)"),
        "train_runs": int(train_mask.sum()),
        "test_runs": int(test_mask.sum()),
        "test_failure_rate": round(float(y.mean()), 4),
        "model_kind": model.describe(),
        "fit_seconds": round(fit_seconds, 2),
        "checkpoints": len(checkpoints),
        "top_k": TOP_K,
        "top_k_base_rate": round(float(np.mean(list(next_failed.values()))), 4),
    }
    for name, p in predictions.items():
        top_k, top_k_se = precision_at_k(checkpoint_scores[name], data["cp_scopes"], data["cp_times"],
                                         next_failed)
        results[name] = {
            "roc_auc": round(float(roc_auc_score(y, p)), 4),
            "brier": round(brier_score(p, y), 5),
            "log_loss": round(float(log_loss(y, np.clip(p, 1e-4, 1 - 1e-4))), 4),
            "ece": round(expected_calibration_error(p, y), 4),
            "precision_at_k": round(top_k, 4),
            "precision_at_k_standard_error": round(top_k_se, 4),
        }
    results["horizon"] = evaluate_horizon(history, cut, model)
    return results, {"y": y, **predictions}


def evaluate_horizon(history: SimHistory, cut: float, model: object, horizon: int = HORIZON,
                     samples: int = 400) -> dict[str, object]:
    """Expected failure rate over the next `horizon` runs and its interval, against what happened."""
    import random

    rng = random.Random(1)
    by_scope: dict[Scope, list[RunRecord]] = defaultdict(list)
    by_tenant: dict[str, list[RunRecord]] = defaultdict(list)
    for run in history.runs:
        by_scope[run.scope].append(run)
        by_tenant[run.tenant].append(run)
    tenant_starts = {t: [r.started_at for r in runs] for t, runs in by_tenant.items()}
    scopes = sorted(by_scope)
    covered, errors, naive_errors, widths = 0, [], [], []
    taken = 0
    while taken < samples:
        scope = rng.choice(scopes)
        t = rng.uniform(cut, history.end - 3 * DAY)
        runs = by_scope[scope]
        past = [r for r in runs if r.started_at <= t]
        future = [r for r in runs if r.started_at > t and r.counts_for_risk][:horizon]
        if len(future) < horizon or len(past) < 10:
            continue
        taken += 1
        lo = bisect.bisect_left(tenant_starts[scope.tenant], t - 6 * HOUR)
        hi = bisect.bisect_right(tenant_starts[scope.tenant], t)
        recent_others = [r for r in by_tenant[scope.tenant][lo:hi] if r.scope != scope]
        forecast = forecast_risk(scope, past + recent_others, t, horizon, model)  # type: ignore[arg-type]
        actual = sum(r.failed for r in future) / horizon
        covered += forecast.interval_low <= actual <= forecast.interval_high
        widths.append(forecast.interval_high - forecast.interval_low)
        errors.append(abs(forecast.expected_failure_rate - actual))
        last = [int(r.failed) for r in past if r.counts_for_risk][-NAIVE_WINDOW:]
        naive_errors.append(abs(sum(last) / len(last) - actual))
    return {
        "horizon_runs": horizon,
        "samples": samples,
        "interval_level": INTERVAL_LEVEL,
        "interval_coverage": round(covered / samples, 3),
        "mean_interval_width": round(float(np.mean(widths)), 3),
        "mae_expected_rate_model": round(float(np.mean(errors)), 4),
        "mae_naive_recent_rate": round(float(np.mean(naive_errors)), 4),
        "mse_expected_rate_model": round(float(np.mean(np.square(errors))), 5),
        "mse_naive_recent_rate": round(float(np.mean(np.square(naive_errors))), 5),
    }


def plot_calibration(curves: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    y = curves["y"]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]},
                                         sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    styles = {"model": ("tab:blue", "risk model"), "prior": ("tab:green", "statistical prior"),
              "naive_recent_rate": ("tab:red", "naive: last-10 failure rate")}
    for name, (color, label) in styles.items():
        frac, mean = calibration_curve(y, curves[name], n_bins=10, strategy="quantile")
        top.plot(mean, frac, marker="o", color=color, label=label)
        bottom.hist(curves[name], bins=20, range=(0, 1), histtype="step", color=color)
    top.set_ylabel("observed failure rate")
    top.set_title("Reliability on held-out future runs (time split)")
    top.legend(loc="upper left")
    bottom.set_xlabel("predicted probability of failure")
    bottom.set_ylabel("runs")
    bottom.set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- anomalies ---------------------------------------------------------------------------------


def naive_anomalies(baseline: list[RunRecord], window: list[RunRecord]) -> set:
    """Per-job mean + 3 standard deviations on duration, queue and memory; no seasonality."""
    by_scope: dict[Scope, list[RunRecord]] = defaultdict(list)
    for run in baseline:
        if run.counts_for_risk:
            by_scope[run.scope].append(run)
    limits: dict[Scope, list[float]] = {}
    for scope, runs in by_scope.items():
        if len(runs) < 8:
            continue
        limits[scope] = []
        for values in ([r.duration_s for r in runs], [r.queue_s for r in runs],
                       [r.memory_fraction or 0.0 for r in runs]):
            limits[scope].append(statistics.mean(values) + 3 * statistics.pstdev(values))
    flagged = set()
    for run in window:
        limit = limits.get(run.scope)
        if limit and run.counts_for_risk:
            if run.duration_s > limit[0] or run.queue_s > limit[1] or (run.memory_fraction or 0.0) > limit[2]:
                flagged.add(run.key)
    return flagged


def _episode_active(history: SimHistory, run: RunRecord, slack: float = 2 * HOUR) -> bool:
    for e in history.episodes:
        if e.tenant != run.tenant or not (e.start - slack <= run.started_at <= e.end + slack):
            continue
        if e.kind == "outage" or (e.pipeline == run.pipeline and e.repository == run.repository
                                  and e.kind in ("bug", "flaky", "leak")):
            return True
    return False


def evaluate_anomalies(history: SimHistory, cut: float) -> dict[str, object]:
    tenants = sorted({r.tenant for r in history.runs})
    by_tenant = {t: [r for r in history.runs if r.tenant == t] for t in tenants}
    alerts: dict[object, object] = {}
    naive_alerts: set = set()
    bursts = []
    judged = set()
    day = cut
    started = time.perf_counter()
    calls = 0
    while day < history.end:
        for tenant in tenants:
            runs = by_tenant[tenant]
            baseline = [r for r in runs if day - ANOMALY_BASELINE_DAYS * DAY <= r.started_at < day]
            window = [r for r in runs if day <= r.started_at < day + DAY]
            for anomaly in detect_anomalies(baseline, window):
                if anomaly.metric == "failure_pattern":
                    bursts.append(anomaly)
                else:
                    alerts[anomaly.key] = anomaly
            calls += 1
            naive_alerts |= naive_anomalies(baseline, window)
            judged.update(r.key for r in window if r.counts_for_risk)
        day += DAY
    seconds_per_call = (time.perf_counter() - started) / max(calls, 1)
    truth = {k for k in judged if k in history.anomalies}
    unclear = {k for k in judged if k in history.ambiguous}
    negatives = judged - truth - unclear

    def score(flagged: set) -> dict[str, object]:
        hits = flagged & truth
        false = flagged & negatives
        per_kind = {}
        for kind in sorted(set(history.anomalies.values())):
            of_kind = {k for k in truth if history.anomalies[k] == kind}
            per_kind[kind] = {"injected": len(of_kind), "found": len(of_kind & flagged)}
        return {
            "alerts": len(flagged - unclear),
            "precision": round(len(hits) / max(1, len(hits) + len(false)), 4),
            "recall": round(len(hits) / max(1, len(truth)), 4),
            "false_positive_rate": round(len(false) / max(1, len(negatives)), 5),
            "recall_by_kind": per_kind,
        }

    burst_hits = sum(_episode_active(history, a.run) for a in bursts)
    examples = sorted(alerts.values(), key=lambda a: -a.score)
    return {
        "split": "each test day judged against the 28 days before it",
        "runs_judged": len(judged),
        "injected_anomalies": len(truth),
        "ambiguous_runs_excluded": len(unclear),
        "detector": score(set(alerts)),
        "naive_mean_3sd": score(naive_alerts),
        "failure_bursts": {"alerts": len(bursts),
                           "during_an_injected_episode": burst_hits,
                           "precision": round(burst_hits / max(1, len(bursts)), 4)},
        "seconds_per_tenant_day": round(seconds_per_call, 3),
        "example_reasons": [a.reason for a in examples[:3]] + [a.reason for a in examples[-2:]],
    }


# -- recommendations ---------------------------------------------------------------------------


def evaluate_recommendations(history: SimHistory, cut: float) -> dict[str, object]:
    """At the end of each test week: is each recommendation backed by a real injected cause?"""
    checks = dict.fromkeys(("quarantine_test", "raise_memory_limit", "pin_or_mirror_dependency",
                            "split_or_retime"), 0)
    correct = dict.fromkeys(checks, 0)
    found_causes = {"flaky": [0, 0], "leak": [0, 0], "drift": [0, 0], "outage": [0, 0]}
    observable_flaky = [0, 0]  # live flaky episodes whose test flaked >= MIN_FLAKES_RECENT times in 7 days
    examples = []
    now = cut + 7 * DAY
    while now <= history.end + 1:
        for tenant in sorted({r.tenant for r in history.runs}):
            runs = [r for r in history.runs if r.tenant == tenant and now - 14 * DAY <= r.started_at <= now]
            recs = recommend(runs, now)
            if len(examples) < 4:
                examples += [f"{r.summary}: {r.evidence[0]}" for r in recs[:2]]
            episodes = [e for e in history.episodes if e.tenant == tenant]
            matched: set[int] = set()
            for rec in recs:
                checks[rec.intervention] += 1
                hit = _matching_episode(rec, episodes, now)
                if hit is not None:
                    correct[rec.intervention] += 1
                    matched.add(hit)
            for index, e in enumerate(episodes):
                live = (e.start <= now <= e.end if e.kind in ("flaky", "leak", "drift")
                        else now - 14 * DAY <= e.start <= now)
                if e.kind in found_causes and live:
                    found_causes[e.kind][0] += 1
                    found_causes[e.kind][1] += index in matched
                    if e.kind == "flaky" and sum(
                            e.detail in r.flaky_tests for r in runs
                            if r.pipeline == e.pipeline and r.job == e.job and r.started_at >= now - 7 * DAY
                    ) >= MIN_FLAKES_RECENT:
                        observable_flaky[0] += 1
                        observable_flaky[1] += index in matched
        now += 7 * DAY
    return {
        "checked_at": "end of each test week, from the 14 days before",
        "precision": {k: (round(correct[k] / checks[k], 3) if checks[k] else None) for k in checks},
        "recommendations": checks,
        "live_causes_found": {k: f"{v[1]} of {v[0]}" for k, v in found_causes.items()},
        "observable_flaky_found": f"{observable_flaky[1]} of {observable_flaky[0]}",
        "examples": examples[:4],
    }


def _matching_episode(rec, episodes, now: float) -> int | None:
    for index, e in enumerate(episodes):
        same_job = e.pipeline == rec.scope.pipeline and e.job == rec.scope.job
        if rec.intervention == "quarantine_test" and e.kind == "flaky" and same_job \
                and e.detail == rec.parameters["test"] and e.start <= now <= e.end + 2 * DAY:
            return index
        if rec.intervention == "raise_memory_limit" and e.kind == "leak" and same_job \
                and e.start <= now and e.end >= now - 2 * DAY:
            return index
        if rec.intervention == "pin_or_mirror_dependency" and e.kind == "outage" \
                and e.detail == rec.parameters["dependency"] and now - 14 * DAY <= e.start <= now:
            return index
        if rec.intervention == "split_or_retime" and e.kind == "drift" and e.pipeline == rec.scope.pipeline \
                and e.job == rec.scope.job:
            return index
    return None


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=56)
    parser.add_argument("--train-days", type=int, default=35)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    history = generate(SimConfig(seed=args.seed, days=args.days))
    cut = history.config.start + args.train_days * DAY

    forecasts, curves = evaluate_forecasts(history, cut)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot_calibration(curves, RESULTS / "predictor_calibration.png")
    # The replacement rule as the service applies it, on the training weeks only.
    replacement = retrain([r for r in history.runs if r.ended_at < cut], incumbent=None)
    anomalies = evaluate_anomalies(history, cut)
    recommendations = evaluate_recommendations(history, cut)

    results = {
        "command": "python -m bench.predictor_eval " + " ".join(argv or []),
        "data": (f"bench.history_sim seed {args.seed}: {len(history.runs)} job runs, "
                 f"{history.config.tenants} tenants x {history.config.pipelines_per_tenant} pipelines, "
                 f"{args.days} days"),
        "forecast": forecasts,
        "replacement_rule": {
            "candidate_brier": replacement.candidate_brier,
            "prior_brier": round(replacement.incumbent_brier, 5),
            "replaced": replacement.replaced, "reason": replacement.reason,
        },
        "anomalies": anomalies,
        "recommendations": recommendations,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (RESULTS / "predictor_eval.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    print(f"data: {results['data']}")
    print(f"split: {forecasts['split']}; {forecasts['test_runs']} test runs, "
          f"failure rate {forecasts['test_failure_rate']:.1%}")
    print(f"model: {forecasts['model_kind']}")
    print(f"\n{'forecast':<22}{'ROC AUC':>9}{'Brier':>9}{'logloss':>9}{'ECE':>8}{f'P@{TOP_K}':>8}")
    for name in ("model", "prior", "naive_recent_rate"):
        m = forecasts[name]
        print(f"{name:<22}{m['roc_auc']:>9.3f}{m['brier']:>9.4f}{m['log_loss']:>9.3f}{m['ece']:>8.3f}"
              f"{m['precision_at_k']:>8.3f}")
    naive = forecasts["naive_recent_rate"]
    model = forecasts["model"]
    print(f"{'model / naive':<22}{model['roc_auc'] / naive['roc_auc']:>9.2f}"
          f"{model['brier'] / naive['brier']:>9.2f}"
          f"{model['log_loss'] / naive['log_loss']:>9.2f}{model['ece'] / max(naive['ece'], 1e-9):>8.2f}"
          f"{model['precision_at_k'] / naive['precision_at_k']:>8.2f}")
    print(f"(P@{TOP_K}: every 6h, top {TOP_K} jobs by risk, hit = next run fails; base rate "
          f"{forecasts['top_k_base_rate']:.3f}; "
          f"standard error ~{model['precision_at_k_standard_error']:.3f})")
    h = forecasts["horizon"]
    print(f"next {h['horizon_runs']} runs: expected-rate MAE {h['mae_expected_rate_model']:.4f} vs naive "
          f"{h['mae_naive_recent_rate']:.4f}, MSE {h['mse_expected_rate_model']:.4f} vs "
          f"{h['mse_naive_recent_rate']:.4f}; {h['interval_level']:.0%} interval covers "
          f"{h['interval_coverage']:.1%}"
          f" (mean width {h['mean_interval_width']:.2f}, {h['samples']} sampled job/times)")
    print(f"replacement rule on the training weeks: {replacement.reason}")
    print(f"\n{'anomalies':<22}{'alerts':>8}{'precision':>11}{'recall':>8}{'FPR':>9}")
    for name in ("detector", "naive_mean_3sd"):
        a = anomalies[name]
        print(f"{name:<22}{a['alerts']:>8}{a['precision']:>11.3f}{a['recall']:>8.3f}"
              f"{a['false_positive_rate']:>9.4f}")
    print(f"({anomalies['injected_anomalies']} injected among {anomalies['runs_judged']} runs judged; "
          f"failure-burst alerts during an injected episode: "
          f"{anomalies['failure_bursts']['during_an_injected_episode']}"
          f" of {anomalies['failure_bursts']['alerts']})")
    print("\nrecommendations precision:", recommendations["precision"])
    print("live causes found:", recommendations["live_causes_found"],
          f"(flaky tests that flaked >= {MIN_FLAKES_RECENT} times in the week: "
          f"{recommendations['observable_flaky_found']})")
    print(f"\nwrote {RESULTS / 'predictor_eval.json'} and {RESULTS / 'predictor_calibration.png'} "
          f"in {results['seconds']}s")


if __name__ == "__main__":
    main()
