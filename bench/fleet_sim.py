"""Fleet simulation: does Healing Guard's planner heal a CI fleet, and does it learn?

A seeded world of repositories across three tenants produces four weeks of job failures
with a known root cause each: flaky tests, lost or broken runners, dependency outages
(registry blips, and corrupt caches that only a cache clear fixes), memory growth that
needs a higher limit, full disks, slow runners, misconfiguration, and genuine bugs
(compile errors, real test failures, lint). Halfway through, the package mirror starts
serving corrupt archives, so the best action for dependency failures changes.

Every strategy sees the same failures, and the same random outcome draws per failure:

  no healing            every failure goes to a human
  gitlab retry: 2       GitLab's static `retry: {max: 2, when: [runner_system_failure,
                        script_failure]}`: plain re-runs of everything but timeouts
  retry everything x3   plain re-runs, up to 3, for every failure
  healing guard         this project's planner (services.planner.planning), in process,
                        with outcomes fed back (learning), default policies
  healing guard,        the same planner with nothing learned (policy priors only,
  no learning           exploration off): what the learning adds

Healing Guard never sees the ground truth. It sees an *observed* class and a confidence
from a simulated classifier, in one of two modes:

  measured (default)    replays the detector as measured on real CI logs by
                        `python -m bench.real_ci_eval` (bench/results/real_ci_eval.json, key
                        "classifier_behaviour"): for a failure whose true class is C the answer
                        is drawn from the confusion row of C, smoothed towards the pooled
                        behaviour (empirical Bayes: 13 pseudo-answers shaped like the pooled
                        confusion, so a row of one or three logs shrinks towards the measured
                        overall accuracy rather than towards uniform); a class the corpus has no row for (FLAKY_TEST,
                        DISK_FULL today) gets the pooled behaviour (the measured UNKNOWN rate,
                        the measured accuracy, wrong answers spread over the other classes as
                        measured). A right answer's confidence is drawn from the measured
                        confidences of right answers, a wrong one's from those of wrong
                        answers; UNKNOWN gets a confidence below the eval's threshold.
                        (--smoothing-prior uniform is plain add-one smoothing instead: it
                        flattens thin rows towards uniform, which reads a class seen in one
                        log as right 14% of the time.)
  assumed (--accuracy)  the old classifier: right with the given probability; a wrong answer
                        is UNKNOWN 40 % of the time, another class otherwise; confidence only
                        partly informative.

It also sees the detector's cluster id, which follows the root cause for a share
`--cluster-purity` of failures (default: the measured grouping accuracy in
bench/results/loghub_grouping.json); the rest get a fresh cluster or another cause's cluster,
half each. Then a flaky-test name when the detector has flaky history for it, and the
predictor's risk. The baselines see what GitLab sees: runner system failure or script failure.

Whether an action heals a failure is decided by the success odds in ODDS, which are
assumptions; `--sensitivity` re-runs the world with each of them halved and doubled.

Run: .venv/bin/python -m bench.fleet_sim [--days 28] [--seed 7] [--accuracy X] [--cluster-purity P]
                                         [--sensitivity]
Writes bench/results/fleet_sim.json and bench/results/fleet_sim_learning_curve.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.common.vocabulary import GENUINE_BREAKS, ActionKind, FailureClass
from services.planner.costs import CostModel, estimate_cost
from services.planner.learning import LearnedStats
from services.planner.planning import PlanRequest, outcome_for, plan_healing
from services.planner.policy import Policy, default_policies

A = ActionKind
F = FailureClass
RESULTS = Path(__file__).parent / "results"
DAY_MIN = 24 * 60.0

# Ground-truth root causes: (class, subtype, share of failures).
CAUSES: list[tuple[F, str, float]] = [
    (F.FLAKY_TEST, "flaky", 0.25),
    (F.INFRASTRUCTURE, "bad-runner", 0.12),
    (F.DEPENDENCY_FETCH, "registry-blip", 0.08),
    (F.DEPENDENCY_FETCH, "corrupt-cache", 0.04),
    (F.NETWORK, "network-blip", 0.06),
    (F.OUT_OF_MEMORY, "memory-growth", 0.10),
    (F.DISK_FULL, "disk-full", 0.05),
    (F.TIMEOUT, "slow-runner", 0.05),
    (F.COMPILE_ERROR, "compile", 0.08),
    (F.TEST_FAILURE, "test-bug", 0.10),
    (F.LINT, "lint", 0.04),
    (F.CONFIGURATION, "config", 0.02),
    (F.PERMISSION, "permission", 0.01),
]
HEALABLE = {F.FLAKY_TEST, F.INFRASTRUCTURE, F.DEPENDENCY_FETCH, F.NETWORK, F.OUT_OF_MEMORY, F.DISK_FULL,
            F.TIMEOUT}
# How far into the job a failing re-run gets before it fails (compile and lint fail fast).
FAIL_FRACTION = {F.COMPILE_ERROR: 0.3, F.LINT: 0.15, F.TEST_FAILURE: 0.8}
OBSERVABLE_CLASSES = [c for c in F if c not in (F.FAILURE_CLASS_UNSPECIFIED, F.UNKNOWN)]
EVIDENCE = {
    F.FLAKY_TEST: "FAILED tests/test_checkout.py::test_payment_retry - AssertionError (passed on this commit before)",
    F.TEST_FAILURE: "FAILED tests/test_orders.py::test_total - assert 41 == 42",
    F.COMPILE_ERROR: "error[E0308]: mismatched types: expected `u32`, found `String`",
    F.LINT: "src/app.py:12:1: F401 'os' imported but unused",
    F.DEPENDENCY_FETCH: "npm ERR! network request to https://registry.npmjs.org/left-pad failed",
    F.NETWORK: "curl: (28) Connection timed out after 30001 milliseconds",
    F.OUT_OF_MEMORY: "java.lang.OutOfMemoryError: Java heap space",
    F.DISK_FULL: "No space left on device",
    F.TIMEOUT: "ERROR: Job failed: execution took longer than 1h0m0s seconds",
    F.INFRASTRUCTURE: "ERROR: Job failed (system failure): runner lost contact with the coordinator",
    F.CONFIGURATION: "yaml: line 14: did not find expected key",
    F.PERMISSION: "remote: Permission to acme/api.git denied to deploy-bot.",
    F.UNKNOWN: "Process exited with code 1",
}


@dataclass(frozen=True)
class Repo:
    name: str
    tenant: str
    job_minutes: float
    flake_rate: float
    memory_limit_mb: int = 4096


@dataclass(frozen=True)
class Failure:
    """One failed job: the truth (hidden from Healing Guard) and what the detector reports."""

    index: int
    at_min: float
    repo: Repo
    truth: F
    subtype: str
    observed: F
    confidence: float
    cluster_id: str
    flaky_test: str | None
    risk: float
    # Pre-drawn uniforms so every strategy faces the same luck on the same failure.
    draws: tuple[float, ...]


@dataclass
class Tally:
    name: str
    failures: int = 0
    healable: int = 0
    healed: int = 0
    genuine: int = 0
    genuine_escalated: int = 0
    genuine_escalated_without_retry: int = 0
    reruns_on_genuine: int = 0
    reruns: int = 0
    runner_minutes: float = 0.0
    usd: float = 0.0
    human_escalations: int = 0
    recovery_minutes: float = 0.0
    healable_recovery_minutes: float = 0.0
    # per day: [healable seen, healed]
    by_day: dict[int, list[int]] = field(default_factory=dict)
    # per root cause (and half of the run): [seen, healed]
    by_cause: dict[str, list[int]] = field(default_factory=dict)

    def row(self) -> dict[str, float | int | str]:
        return {
            "strategy": self.name,
            "failures": self.failures,
            "healable": self.healable,
            "healed_without_human": self.healed,
            "healed_share": self.healed / max(self.healable, 1),
            "genuine_bugs": self.genuine,
            "reruns_wasted_on_genuine_bugs": self.reruns_on_genuine,
            "genuine_escalated_share": self.genuine_escalated / max(self.genuine, 1),
            "genuine_escalated_without_retry_share": self.genuine_escalated_without_retry / max(self.genuine, 1),
            "reruns": self.reruns,
            "reruns_on_genuine_share_of_own_reruns": self.reruns_on_genuine / max(self.reruns, 1),
            "runner_minutes": round(self.runner_minutes, 1),
            "runner_usd": round(self.usd, 2),
            "human_escalations": self.human_escalations,
            "humans_paged": self.human_escalations,
            "mttr_minutes": self.recovery_minutes / max(self.failures, 1),
            "mttr_healable_minutes": self.healable_recovery_minutes / max(self.healable, 1),
        }


# --- the classifier the planner listens to ---------------------------------------------------

OUTCOMES: list[F] = [*OBSERVABLE_CLASSES, F.UNKNOWN]
REAL_CI_EVAL = RESULTS / "real_ci_eval.json"
GROUPING_EVAL = RESULTS / "loghub_grouping.json"


class Classifier:
    """What the detector answers for a failure of a given true class."""

    mode = ""

    def classify(self, truth: F, rng: random.Random) -> tuple[F, float]:
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        raise NotImplementedError


@dataclass
class AssumedClassifier(Classifier):
    """The old assumed-accuracy detector: usually right and confident; when wrong, less sure.

    With `informative=False` a wrong answer is exactly as confident as a right one (the
    worst case for the planner's confidence threshold).
    """

    accuracy: float
    informative: bool = True
    mode = "assumed"

    def classify(self, truth: F, rng: random.Random) -> tuple[F, float]:
        right = rng.random() < self.accuracy
        confidence = rng.betavariate(14, 2) if right or not self.informative else rng.betavariate(6, 4)
        if right:
            return truth, confidence
        if rng.random() < 0.4:
            return F.UNKNOWN, confidence
        return rng.choice([c for c in OBSERVABLE_CLASSES if c is not truth]), confidence

    def describe(self) -> dict[str, object]:
        return {"mode": self.mode, "accuracy": self.accuracy, "informative_confidence": self.informative,
                "note": "assumed accuracy (--accuracy); a wrong answer is UNKNOWN 40% of the time"}


@dataclass
class MeasuredClassifier(Classifier):
    """Replays a measured confusion matrix and the measured confidences of right and wrong answers.

    rows[C] lists (answer, probability) over OUTCOMES for a failure whose true class is C.
    """

    rows: dict[F, list[tuple[F, float]]]
    pooled_classes: tuple[F, ...]
    confidence_right: tuple[float, ...]
    confidence_wrong: tuple[float, ...]
    threshold: float
    source: dict[str, object] = field(default_factory=dict)
    pooled: dict[str, float] = field(default_factory=dict)
    prior: str = "uniform"
    mode = "measured"

    @classmethod
    def from_confusion(cls, confusion: dict[str, dict[str, int]], confidence_right: list[float],
                       confidence_wrong: list[float], threshold: float, smoothing: float = 1.0,
                       source: dict[str, object] | None = None, prior: str = "uniform",
                       flaky_as_test_failure: bool = False) -> MeasuredClassifier:
        counts: dict[F, dict[F, float]] = {}
        for truth_name, row in confusion.items():
            truth = FailureClass[truth_name]
            if truth not in OBSERVABLE_CLASSES:
                continue  # a log whose truth is UNKNOWN says nothing about a known cause
            counts[truth] = {FailureClass[answer]: float(n) for answer, n in row.items()
                            if FailureClass[answer] in OUTCOMES}
        total = sum(sum(r.values()) for r in counts.values())
        if total == 0:
            raise ValueError("the confusion matrix is empty")
        right = sum(r.get(t, 0.0) for t, r in counts.items())
        unknown = sum(r.get(F.UNKNOWN, 0.0) for r in counts.values())
        # Where wrong answers land, as measured (the answer's class, pooled over all truths).
        wrong_to: dict[F, float] = {}
        for t, r in counts.items():
            for answer, n in r.items():
                if answer is not t and answer is not F.UNKNOWN:
                    wrong_to[answer] = wrong_to.get(answer, 0.0) + n
        wrong_mass = (total - right - unknown) / total

        def pooled_row(truth: F) -> dict[F, float]:
            spread = {o: w for o, w in wrong_to.items() if o is not truth}
            if not spread:
                spread = {o: 1.0 for o in OBSERVABLE_CLASSES if o is not truth}
            weight = sum(spread.values())
            probs = {o: wrong_mass * w / weight for o, w in spread.items()}
            probs[truth] = right / total
            probs[F.UNKNOWN] = unknown / total
            return probs

        rows: dict[F, list[tuple[F, float]]] = {}
        pooled_classes: list[F] = []
        for truth in OBSERVABLE_CLASSES:
            shape = pooled_row(truth)
            if truth in counts:
                measured = counts[truth]
                mass = sum(measured.values()) + smoothing * len(OUTCOMES)
                if prior == "pooled":  # the same prior mass, shaped like the pooled behaviour
                    pseudo = {o: smoothing * len(OUTCOMES) * shape.get(o, 0.0) for o in OUTCOMES}
                else:  # add-one: the same pseudo-count for every answer
                    pseudo = {o: smoothing for o in OUTCOMES}
                rows[truth] = [(o, (measured.get(o, 0.0) + pseudo[o]) / mass) for o in OUTCOMES]
                continue
            pooled_classes.append(truth)
            rows[truth] = [(o, shape.get(o, 0.0)) for o in OUTCOMES]
        if flaky_as_test_failure and F.TEST_FAILURE in rows:
            # The pessimistic reading: from its log alone a flaky failure looks like a failed test,
            # so it is answered as a TEST_FAILURE is (and escalated unless flaky history says more).
            rows[F.FLAKY_TEST] = list(rows[F.TEST_FAILURE])
            pooled_classes = [c for c in pooled_classes if c is not F.FLAKY_TEST]
        return cls(rows=rows, pooled_classes=tuple(pooled_classes),
                   confidence_right=tuple(confidence_right) or (1.0,),
                   confidence_wrong=tuple(confidence_wrong) or (1.0,), threshold=threshold,
                   source=dict(source or {}), prior=prior,
                   pooled={"accuracy": right / total, "unknown_rate": unknown / total, "wrong_rate": wrong_mass,
                           "logs": total, "smoothing_per_outcome": smoothing})

    @classmethod
    def from_eval(cls, path: Path = REAL_CI_EVAL, smoothing: float = 1.0,
                  prior: str = "uniform", flaky_as_test_failure: bool = False) -> MeasuredClassifier:
        document = json.loads(path.read_text())
        behaviour = document["classifier_behaviour"]
        try:
            shown = str(path.resolve().relative_to(Path(__file__).resolve().parent.parent))
        except ValueError:
            shown = str(path)
        return cls.from_confusion(
            behaviour["confusion"], behaviour["confidence_right"], behaviour["confidence_wrong"],
            float(document.get("confidence_threshold", 0.6)), smoothing, prior=prior,
            flaky_as_test_failure=flaky_as_test_failure,
            source={"eval_file": shown, "eval_commit": document.get("commit"),
                    "eval_split": document.get("split"), "eval_logs": document.get("logs")})

    def probability(self, truth: F, answer: F) -> float:
        return dict(self.rows[truth])[answer]

    def classify(self, truth: F, rng: random.Random) -> tuple[F, float]:
        answers, weights = zip(*self.rows[truth], strict=True)
        answer = rng.choices(answers, weights=weights)[0]
        if answer is F.UNKNOWN:
            return answer, rng.uniform(0.0, self.threshold) * 0.999
        pool = self.confidence_right if answer is truth else self.confidence_wrong
        return answer, rng.choice(pool)

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            **self.source,
            "smoothing": (f"add-{self.pooled.get('smoothing_per_outcome', 1.0):g} (Dirichlet) over "
                          f"{len(OUTCOMES)} answers (12 classes and UNKNOWN) for classes with a measured row")
                         if self.prior == "uniform" else
                         (f"Dirichlet prior of {self.pooled.get('smoothing_per_outcome', 1.0) * len(OUTCOMES):g} "
                          "pseudo-counts shaped like the pooled behaviour, for classes with a measured row"),
            "pooled_classes": [c.name for c in self.pooled_classes],
            "pooled_note": "classes with no measured row get the pooled behaviour: the measured UNKNOWN rate, "
                           "the measured accuracy, and wrong answers spread over the other classes as measured",
            "pooled": self.pooled,
            "confidence_threshold": self.threshold,
            "confidence_right_n": len(self.confidence_right),
            "confidence_wrong_n": len(self.confidence_wrong),
            "per_class": {t.name: {"right": self.probability(t, t), "unknown": self.probability(t, F.UNKNOWN),
                                   "pooled": t in self.pooled_classes} for t in OBSERVABLE_CLASSES},
        }


def default_cluster_purity(path: Path = GROUPING_EVAL) -> tuple[float, str]:
    """The share of failures whose cluster id follows the root cause, and where it came from.

    The grouping accuracy the miner reaches on the Loghub systems it was NOT tuned on
    (summary.ours_ga_held_out), else its mean over all systems, else 0.9. The real-CI
    same-cause figure in the same file is not used: it comes from generated reruns of one
    log (run noise redrawn), not from measured reruns, so it says 1.0 too easily.
    """
    if not path.exists():
        return 0.9, f"default 0.9 ({path.name} not found)"
    summary = json.loads(path.read_text()).get("summary", {})
    for key, what in (("ours_ga_held_out", "grouping accuracy on the 8 held-out Loghub systems"),
                      ("ours_ga_mean", "mean grouping accuracy over the Loghub systems")):
        value = summary.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value), f"{path.name}: {what}, summary.{key} = {value:.4f}"
    return 0.9, f"default 0.9 (no grouping figure in {path.name})"


# --- the world -----------------------------------------------------------------------------

SUBTYPES = sorted({subtype for _, subtype, _ in CAUSES})


def build_world(seed: int, days: int, failures_per_day: int, classifier: Classifier,
                cluster_purity: float = 0.9) -> list[Failure]:
    rng = random.Random(seed)
    tenants = ["acme", "globex", "initech"]
    repos = [
        Repo(
            name=f"repo-{i:02d}",
            tenant=tenants[i % len(tenants)],
            job_minutes=math.exp(rng.gauss(math.log(12), 0.6)),
            flake_rate=rng.uniform(0.15, 0.5),
        )
        for i in range(40)
    ]
    shares = [share for _, _, share in CAUSES]
    failures: list[Failure] = []
    total = days * failures_per_day
    for index in range(total):
        at = rng.uniform(0, days * DAY_MIN)
        repo = rng.choice(repos)
        cls, subtype, _ = rng.choices(CAUSES, weights=shares)[0]
        if cls is F.DEPENDENCY_FETCH and at > days * DAY_MIN / 2:
            # The mirror starts serving corrupt archives: most dependency failures now
            # need a cache clear, which plain retries cannot provide.
            subtype = "corrupt-cache" if rng.random() < 0.75 else "registry-blip"
        observed, confidence = classifier.classify(cls, rng)
        # The fingerprint follows the log (the root cause), not the classifier's answer, for a
        # share cluster_purity of failures; the rest get a fresh cluster or another cause's
        # (half each). Hashed: the planner gets an opaque id, never the subtype's name.
        purity_draw = rng.random()
        if purity_draw < cluster_purity:
            signature = f"{repo.name}:{subtype}"
        elif purity_draw < cluster_purity + (1.0 - cluster_purity) / 2:
            signature = f"singleton-{index}"
        else:
            signature = f"{repo.name}:{rng.choice([s for s in SUBTYPES if s != subtype])}"
        cluster = "c-" + hashlib.sha1(signature.encode()).hexdigest()[:10]
        flaky_name = "tests/test_checkout.py::test_payment_retry" \
            if cls is F.FLAKY_TEST and rng.random() < 0.6 else None
        risk = min(0.95, max(0.02, rng.gauss(0.3 if cls in GENUINE_BREAKS else 0.2, 0.1)))
        draws = tuple(rng.random() for _ in range(8))
        failures.append(Failure(index, at, repo, cls, subtype, observed, confidence, cluster, flaky_name,
                                risk, draws))
    failures.sort(key=lambda f: f.at_min)
    return failures


# --- ground truth: the per-action success odds ---------------------------------------------
# The chance that one action makes a failed job of this root cause pass. ALL of these are
# assumptions, set by hand: no published per-action pass rate for CI healing actions was found
# to anchor them. `--sensitivity` halves and doubles each in turn (capped at 1.0).
ODDS: dict[str, float] = {
    # Plain re-run of a flaky test: fleet mean of the per-repo pass chance 1 - flake rate, flake
    # rate ~ U(0.15, 0.5) per repo (scaled per repo around this mean). Assumption: the flaky-test
    # literature reports that most flaky failures pass on a re-run, but no rate for this mix.
    "flaky/rerun": 0.675,
    # Quarantining a known flaky test lets the job pass unless another test flakes. Assumption.
    "flaky/quarantine": 0.97,
    # A lost or broken runner: a fresh runner almost always works. Assumption.
    "bad-runner/fresh-runner": 0.97,
    # A plain re-run lands on the same broken runner about half the time. Assumption.
    "bad-runner/rerun": 0.48,
    # A registry or network blip has passed by the time any re-running action runs. Assumption.
    "blip/rerun": 0.85,
    # Quarantining a test does nothing for a network blip except by luck. Assumption.
    "blip/quarantine": 0.10,
    # A corrupt cache: clearing it fixes the job. Assumption.
    "corrupt-cache/clear-cache": 0.95,
    # Anything else re-uses the corrupt cache. Assumption.
    "corrupt-cache/other": 0.03,
    # Memory growth: a higher memory limit fits the job. Assumption.
    "memory/raise-limit": 0.93,
    # A fresh runner (less memory pressure from neighbours) sometimes helps. Assumption.
    "memory/fresh-runner": 0.12,
    # A plain re-run rarely fits in the same limit. Assumption.
    "memory/other": 0.06,
    # A full disk: clearing the cache frees enough space. Assumption.
    "disk/clear-cache": 0.85,
    # A fresh runner has an empty disk. Assumption.
    "disk/fresh-runner": 0.95,
    # A plain re-run may land on another runner with space. Assumption.
    "disk/other": 0.30,
    # A slow runner: a fresh runner is usually fast enough. Assumption.
    "slow/fresh-runner": 0.80,
    # A longer time limit lets the slow job finish. Assumption.
    "slow/raise-limit": 0.70,
    # A plain re-run may get a faster runner. Assumption.
    "slow/other": 0.55,
}
FLAKY_RERUN_MEAN = 0.675  # the mean of 1 - U(0.15, 0.5): ODDS["flaky/rerun"] at this value is 1 - flake rate


def rerun_heals(failure: Failure, kind: ActionKind, draw: float, odds: dict[str, float] | None = None) -> bool:
    """Ground truth: does this action, on this failure, make the job pass?"""
    o = ODDS if odds is None else odds
    sub = failure.subtype
    if failure.truth in GENUINE_BREAKS or failure.truth in (F.CONFIGURATION, F.PERMISSION):
        return False
    if kind is A.ESCALATE or kind is A.ROLLBACK:
        return False
    p: float
    if sub == "flaky":
        if kind is A.QUARANTINE_TEST and failure.flaky_test:
            p = o["flaky/quarantine"]
        else:
            p = min(1.0, o["flaky/rerun"] * (1.0 - failure.repo.flake_rate) / FLAKY_RERUN_MEAN)
    elif sub == "bad-runner":
        p = o["bad-runner/fresh-runner"] if kind is A.RETRY_ON_FRESH_RUNNER else o["bad-runner/rerun"]
    elif sub == "registry-blip" or sub == "network-blip":
        p = o["blip/rerun"] if kind is not A.QUARANTINE_TEST else o["blip/quarantine"]
    elif sub == "corrupt-cache":
        p = o["corrupt-cache/clear-cache"] if kind is A.CLEAR_CACHE else o["corrupt-cache/other"]
    elif sub == "memory-growth":
        p = {A.RAISE_RESOURCE_LIMIT: o["memory/raise-limit"],
             A.RETRY_ON_FRESH_RUNNER: o["memory/fresh-runner"]}.get(kind, o["memory/other"])
    elif sub == "disk-full":
        p = {A.CLEAR_CACHE: o["disk/clear-cache"],
             A.RETRY_ON_FRESH_RUNNER: o["disk/fresh-runner"]}.get(kind, o["disk/other"])
    elif sub == "slow-runner":
        p = {A.RETRY_ON_FRESH_RUNNER: o["slow/fresh-runner"],
             A.RAISE_RESOURCE_LIMIT: o["slow/raise-limit"]}.get(kind, o["slow/other"])
    else:
        p = 0.0
    return draw < p


# --- strategies -------------------------------------------------------------------------------

HUMAN_RESPONSE_MIN = 90.0
HUMAN_FIX_MIN = {True: 60.0, False: 20.0}  # genuine bug vs. a human re-running or fixing infra


def _record(tally: Tally, failure: Failure, healed: bool, escalated: bool, reruns: int, minutes: float,
            usd: float, elapsed: float) -> None:
    genuine = failure.truth in GENUINE_BREAKS
    tally.failures += 1
    tally.reruns += reruns
    tally.runner_minutes += minutes
    tally.usd += usd
    if escalated:
        tally.human_escalations += 1
        elapsed += HUMAN_RESPONSE_MIN + HUMAN_FIX_MIN[genuine] + failure.repo.job_minutes
    tally.recovery_minutes += elapsed
    if genuine:
        tally.genuine += 1
        tally.reruns_on_genuine += reruns
        tally.genuine_escalated += int(escalated)
        tally.genuine_escalated_without_retry += int(escalated and reruns == 0)
    if failure.truth in HEALABLE:
        tally.healable += 1
        tally.healed += int(healed)
        tally.healable_recovery_minutes += elapsed
        day = tally.by_day.setdefault(int(failure.at_min // DAY_MIN), [0, 0])
        day[0] += 1
        day[1] += int(healed)
    cause = tally.by_cause.setdefault(failure.subtype, [0, 0])
    cause[0] += 1
    cause[1] += int(healed)


def _rerun_minutes(failure: Failure, kind: ActionKind, healed: bool, model: CostModel) -> tuple[float, float]:
    cost = estimate_cost(kind, failure.repo.job_minutes * 60, model, failure.repo.memory_limit_mb)
    fraction = 1.0 if healed else FAIL_FRACTION.get(failure.truth, 0.7)
    return cost.runner_minutes * fraction, cost.usd * fraction


def static_retry(name: str, max_retries: int, retried: Callable[[Failure], bool],
                 odds: dict[str, float] | None = None) -> Callable[..., None]:
    def run(failure: Failure, tally: Tally, model: CostModel) -> None:
        reruns, minutes, usd, elapsed = 0, 0.0, 0.0, 0.0
        healed = False
        if retried(failure):
            for attempt in range(max_retries):
                healed = rerun_heals(failure, A.RETRY, failure.draws[attempt], odds)
                m, u = _rerun_minutes(failure, A.RETRY, healed, model)
                reruns, minutes, usd, elapsed = reruns + 1, minutes + m, usd + u, elapsed + m + 1.0
                if healed:
                    break
        _record(tally, failure, healed, not healed, reruns, minutes, usd, elapsed)

    run.__name__ = name
    return run


def gitlab_reason_retried(failure: Failure) -> bool:
    """GitLab's failure_reason: runner_system_failure, script_failure, or a timeout (not retried)."""
    return failure.truth is not F.TIMEOUT


class HealingGuard:
    def __init__(self, seed: int, learn: bool, policies: dict[F, Policy],
                 odds: dict[str, float] | None = None) -> None:
        self.rng = random.Random(seed)
        self.odds = odds
        self.learn = learn
        self.stats = LearnedStats(half_life_s=7 * 86400.0)
        self.policies = policies if learn else {
            c: dataclasses.replace(p, exploration=False) for c, p in policies.items()
        }
        self.duplicates_ignored = 0
        self.plan_seconds = 0.0
        self.plans = 0
        self.sample_rationale = ""

    def __call__(self, failure: Failure, tally: Tally, model: CostModel) -> None:
        request = PlanRequest(
            tenant=failure.repo.tenant,
            failure_id=f"failure-{failure.index}",
            failure_class=failure.observed,
            confidence=failure.confidence,
            evidence=(EVIDENCE[failure.observed],),
            cluster_id=failure.cluster_id,
            attempt=0,
            flaky_test=failure.flaky_test if failure.observed is F.FLAKY_TEST else None,
            job_duration_s=failure.repo.job_minutes * 60,
            risk=failure.risk,
            risk_summary=f"{failure.repo.name}: the next run fails with probability {failure.risk:.0%} "
                         "(predictor forecast from its last 20 runs).",
            runner=f"runner-{failure.index % 17}",
            memory_limit_mb=failure.repo.memory_limit_mb,
        )
        started = time.perf_counter()
        stats = self.stats if self.learn else LearnedStats()
        plan = plan_healing(request, self.policies[failure.observed], stats, self.rng,
                            now=failure.at_min * 60, cost_model=model)
        self.plan_seconds += time.perf_counter() - started
        self.plans += 1
        if not self.sample_rationale and failure.observed is F.OUT_OF_MEMORY and failure.at_min > 10 * DAY_MIN:
            self.sample_rationale = plan.rationale
        reruns, minutes, usd, elapsed = 0, 0.0, 0.0, 0.0
        healed = escalated = False
        for step, action in enumerate(plan.actions):
            if action.kind is A.ESCALATE:
                escalated = True
                break
            healed = rerun_heals(failure, action.kind, failure.draws[step], self.odds)
            m, u = _rerun_minutes(failure, action.kind, healed, model)
            reruns, minutes, usd, elapsed = reruns + 1, minutes + m, usd + u, elapsed + m + 1.0
            if self.learn:
                outcome = outcome_for(plan, action.idempotency_key, healed, f"outcome-{failure.index}-{step}",
                                      at=failure.at_min * 60 + elapsed * 60)
                self.stats.record(outcome)
                if failure.draws[7] < 0.05:  # executors sometimes report twice
                    self.duplicates_ignored += int(not self.stats.record(outcome))
            if healed:
                break
        _record(tally, failure, healed, escalated, reruns, minutes, usd, elapsed)


SHORT_NAMES = {
    "gitlab retry: 2": "gitlab", "retry everything x3": "retry-all", "healing guard, no learning": "hg static",
    "healing guard": "hg", "hg 1 attempt, no learning": "hg1 static", "hg 1 attempt, learning": "hg1 learn",
}
ONE_ATTEMPT: dict[F, Policy] = {
    c: dataclasses.replace(p, max_attempts=min(p.max_attempts, 1)) for c, p in default_policies().items()
}


def no_healing(failure: Failure, tally: Tally, model: CostModel) -> None:
    _record(tally, failure, False, True, 0, 0.0, 0.0, 0.0)


# --- run, report, plot -----------------------------------------------------------------------


CORE_STRATEGIES = ("no healing", "gitlab retry: 2", "retry everything x3", "healing guard")


def simulate(seed: int, days: int, failures_per_day: int, classifier: Classifier,
             cluster_purity: float = 0.9, odds: dict[str, float] | None = None,
             failures: list[Failure] | None = None, core_only: bool = False) -> dict[str, object]:
    """Run every strategy on one world. `failures` re-uses a world; `core_only` skips the
    no-learning and one-attempt variants (what the sensitivity runs need)."""
    if failures is None:
        failures = build_world(seed, days, failures_per_day, classifier, cluster_purity)
    model = CostModel()
    hg = HealingGuard(seed, learn=True, policies=default_policies(), odds=odds)
    strategies: list[tuple[str, Callable[..., None]]] = [
        ("no healing", no_healing),
        ("gitlab retry: 2", static_retry("gitlab", 2, gitlab_reason_retried, odds)),
        ("retry everything x3", static_retry("all", 3, lambda f: True, odds)),
        ("healing guard, no learning", HealingGuard(seed, learn=False, policies=default_policies(), odds=odds)),
        ("healing guard", hg),
        # A tenant that allows one healing attempt per run: now the order is everything,
        # and only learning can fix a first choice that stops working.
        ("hg 1 attempt, no learning", HealingGuard(seed, learn=False, policies=ONE_ATTEMPT, odds=odds)),
        ("hg 1 attempt, learning", HealingGuard(seed, learn=True, policies=ONE_ATTEMPT, odds=odds)),
    ]
    if core_only:
        strategies = [s for s in strategies if s[0] in CORE_STRATEGIES]
    tallies = {name: Tally(name) for name, _ in strategies}
    for failure in failures:
        for name, strategy in strategies:
            strategy(failure, tallies[name], model)
    n = max(len(failures), 1)
    observed_accuracy = sum(f.observed is f.truth for f in failures) / n
    observed_unknown = sum(f.observed is F.UNKNOWN for f in failures) / n
    rows = [t.row() for t in tallies.values()]
    everything = tallies["retry everything x3"].reruns_on_genuine
    guard = tallies["healing guard"]
    return {
        "failures": failures,
        "tallies": tallies,
        "rows": rows,
        "observed_accuracy": observed_accuracy,
        "observed_unknown_rate": observed_unknown,
        "wasted_ratio_vs_retry_everything": guard.reruns_on_genuine / max(everything, 1),
        "targets": targets_for(rows),
        "duplicates_ignored": hg.duplicates_ignored,
        "plan_ms_mean": 1000 * hg.plan_seconds / max(hg.plans, 1),
        "sample_rationale": hg.sample_rationale,
    }


TARGET_HEALED = "healed share >= retry-everything's"
TARGET_WASTED = "reruns wasted on genuine bugs <= 10% of Healing Guard's reruns"


def targets_for(rows: list[dict[str, float | int | str]]) -> dict[str, bool]:
    by = {r["strategy"]: r for r in rows}
    guard, everything = by["healing guard"], by["retry everything x3"]
    return {
        TARGET_HEALED: float(guard["healed_share"]) >= float(everything["healed_share"]),
        TARGET_WASTED: float(guard["reruns_on_genuine_share_of_own_reruns"]) <= 0.10,
    }


def sensitivity(seed: int, days: int, failures_per_day: int, classifier: Classifier,
                cluster_purity: float) -> dict[str, object]:
    """Halve and double each entry of ODDS in turn (capped at 1.0), on one shared world."""
    world = build_world(seed, days, failures_per_day, classifier, cluster_purity)
    variants: list[dict[str, object]] = []
    settings: list[tuple[str, str, dict[str, float]]] = [("baseline", "x1", dict(ODDS))]
    for key, value in ODDS.items():
        for label, factor in (("x0.5", 0.5), ("x2", 2.0)):
            settings.append((key, label, {**ODDS, key: min(1.0, value * factor)}))
    for key, label, odds in settings:
        result = simulate(seed, days, failures_per_day, classifier, cluster_purity, odds=odds,
                          failures=world, core_only=True)
        result_rows = result["rows"]
        assert isinstance(result_rows, list)
        by = {r["strategy"]: r for r in result_rows}
        g, everything, gitlab = by["healing guard"], by["retry everything x3"], by["gitlab retry: 2"]
        variants.append({
            "entry": key, "factor": label, "value": odds.get(key, 0.0) if key != "baseline" else None,
            "healed_share": g["healed_share"],
            "reruns_wasted_on_genuine_bugs": g["reruns_wasted_on_genuine_bugs"],
            "wasted_share_of_own_reruns": g["reruns_on_genuine_share_of_own_reruns"],
            "humans_paged": g["humans_paged"],
            "retry_everything_healed_share": everything["healed_share"],
            "gitlab_retry_2_healed_share": gitlab["healed_share"],
            "targets": result["targets"],
        })
    return {"days": days, "failures_per_day": failures_per_day, "failures": len(world), "seed": seed,
            "note": "each ODDS entry halved and doubled in turn (capped at 1.0), all else fixed; one shared "
                    "world (same failures, classifier answers and outcome draws); strategies run: no healing, "
                    "gitlab retry: 2, retry everything x3, healing guard (learning)",
            "variants": variants}


def plot(tallies: dict[str, Tally], days: int, path: Path, subtitle: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    panels = [
        ("default policies (2 attempts)", [n for n in tallies if not n.startswith("hg 1 attempt")]),
        ("one healing attempt per run: learning vs. policy order", [
            "retry everything x3", "hg 1 attempt, no learning", "hg 1 attempt, learning"]),
    ]
    for ax, (title, names) in zip(axes, panels, strict=True):
        for name in names:
            tally = tallies[name]
            xs = sorted(tally.by_day)
            ys = [tally.by_day[d][1] / max(tally.by_day[d][0], 1) for d in xs]
            ax.plot([x + 1 for x in xs], ys, marker="o", markersize=3, label=name)
        ax.axvline(days / 2 + 0.5, color="grey", linestyle="--", linewidth=1)
        ax.text(days / 2 + 0.7, 0.05, "mirror starts serving\ncorrupt archives", fontsize=8, color="grey")
        ax.set_xlabel("day")
        ax.set_ylim(0, 1.02)
        ax.set_title(title, fontsize=10)
        ax.legend(loc="lower left", fontsize=8)
    axes[0].set_ylabel("healable failures healed without a human (daily share)")
    fig.suptitle("Fleet simulation: healing per strategy over time" + (f"\n{subtitle}" if subtitle else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: object) -> str:
    return f"{float(x):.1%}"  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--failures-per-day", type=int, default=120)
    parser.add_argument("--accuracy", type=float, default=None,
                        help="use the old assumed-accuracy classifier instead of the measured one")
    parser.add_argument("--eval-file", type=Path, default=REAL_CI_EVAL,
                        help="the real-CI evaluation whose classifier behaviour is replayed (measured mode)")
    parser.add_argument("--smoothing", type=float, default=1.0,
                        help="Dirichlet pseudo-count per answer added to each measured confusion row")
    parser.add_argument("--smoothing-prior", choices=("uniform", "pooled"), default="pooled",
                        help="shape of the smoothing prior: the pooled behaviour (the default; thin rows shrink "
                             "towards the pooled accuracy) or uniform (add-one; thin rows flatten towards uniform)")
    parser.add_argument("--flaky-as-test-failure", action="store_true",
                        help="pessimistic: flaky failures are answered as test failures are (the corpus has no "
                             "flaky log, so by default they get the pooled behaviour)")
    parser.add_argument("--cluster-purity", type=float, default=None,
                        help="share of failures whose cluster id follows the root cause "
                             "(default: from bench/results/loghub_grouping.json)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also halve and double each success-odds entry in turn")
    parser.add_argument("--sensitivity-days", type=int, default=None,
                        help="days simulated per sensitivity variant (default: --days; fewer to shorten the run)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    classifier: Classifier
    if args.accuracy is not None:
        classifier = AssumedClassifier(args.accuracy)
        mode_line = f"classifier: ASSUMED accuracy {args.accuracy:.0%} (--accuracy; not measured)"
    else:
        classifier = MeasuredClassifier.from_eval(args.eval_file, args.smoothing, args.smoothing_prior,
                                                  args.flaky_as_test_failure)
        src = classifier.source
        pooled = classifier.pooled
        mode_line = (f"classifier: MEASURED, replaying {src['eval_file']} (commit {src['eval_commit']}, "
                     f"{pooled['logs']:.0f} real CI logs, leave-one-source-out): accuracy {pooled['accuracy']:.1%}, "
                     f"UNKNOWN {pooled['unknown_rate']:.1%}, wrong {pooled['wrong_rate']:.1%}; rows "
                     + (f"add-{args.smoothing:g} smoothed" if args.smoothing_prior == "uniform" else
                        f"smoothed towards the pooled behaviour ({args.smoothing * len(OUTCOMES):g} pseudo-counts)")
                     + "; no measured row, so pooled behaviour for: "
                     + (", ".join(c.name for c in classifier.pooled_classes) or "none"))
    if args.cluster_purity is not None:
        purity, purity_source = args.cluster_purity, "--cluster-purity"
    else:
        purity, purity_source = default_cluster_purity()
    if not 0.0 <= purity <= 1.0:
        parser.error("--cluster-purity must be within [0, 1]")

    result = simulate(args.seed, args.days, args.failures_per_day, classifier, purity)
    rows = result["rows"]
    assert isinstance(rows, list)
    print(f"fleet simulation: {len(result['failures'])} failures over {args.days} days, "  # type: ignore[arg-type]
          f"seed {args.seed}")
    print(mode_line)
    if isinstance(classifier, MeasuredClassifier):
        cells = ", ".join(f"{c.name} {classifier.probability(c, c):.0%}"
                          + ("*" if c in classifier.pooled_classes else "") for c in OBSERVABLE_CLASSES)
        print(f"  P(right answer) per true class (* pooled): {cells}")
    print(f"  as drawn in this world: accuracy {result['observed_accuracy']:.1%}, "
          f"UNKNOWN {result['observed_unknown_rate']:.1%}")
    print(f"cluster purity {purity:.3f} ({purity_source}); the rest get a fresh or a wrong cluster, half each")

    header = f"{'strategy':<28}{'healed':>8}{'wasted':>8}{'wasted':>8}{'humans':>8}{'esc.gen':>9}" \
             f"{'runner':>9}{'MTTR':>7}"
    sub = f"{'':<28}{'share':>8}{'reruns':>8}{'% own':>8}{'paged':>8}{'no retry':>9}{'min':>9}{'min':>7}"
    print(header)
    print(sub)
    for r in rows:
        print(f"{r['strategy']:<28}{r['healed_share']:>8.1%}{r['reruns_wasted_on_genuine_bugs']:>8}"
              f"{r['reruns_on_genuine_share_of_own_reruns']:>8.1%}{r['humans_paged']:>8}"
              f"{r['genuine_escalated_without_retry_share']:>9.1%}"
              f"{r['runner_minutes']:>9.0f}{r['mttr_minutes']:>7.0f}")
    targets = result["targets"]
    assert isinstance(targets, dict)
    print("healed share by root cause:")
    tallies = result["tallies"]
    assert isinstance(tallies, dict)
    names = list(tallies)
    print(f"  {'cause':<16}" + "".join(f"{SHORT_NAMES.get(n, n[:11]):>12}" for n in names[1:]))
    first = tallies[names[0]]
    for cause in sorted(first.by_cause):
        if cause in ("compile", "test-bug", "lint", "config", "permission"):
            continue
        cells = "".join(f"{t.by_cause[cause][1] / max(t.by_cause[cause][0], 1):>12.1%}"
                        for t in list(tallies.values())[1:])
        print(f"  {cause:<16}{cells}")
    ratio = result["wasted_ratio_vs_retry_everything"]
    print(f"healing guard wastes {ratio:.1%} of the reruns that 'retry everything x3' wastes on genuine bugs")
    for target, met in targets.items():
        print(f"  target {target}: {'MET' if met else 'MISSED'}")

    sens: dict[str, object] | None = None
    if args.sensitivity:
        days = args.days if args.sensitivity_days is None else min(args.sensitivity_days, args.days)
        sens = sensitivity(args.seed, days, args.failures_per_day, classifier, purity)
        note = "" if days == args.days else f" (shortened to {days} days to keep the run short)"
        print(f"sensitivity: each success-odds entry halved and doubled, {sens['failures']} failures over "
              f"{days} days{note}, healing guard beside retry-everything:")
        print(f"  {'entry':<28}{'factor':>7}{'value':>7}{'healed':>8}{'retry-all':>10}{'wasted':>8}"
              f"{'wasted':>8}{'paged':>7}  targets")
        print(f"  {'':<28}{'':>7}{'':>7}{'share':>8}{'share':>10}{'reruns':>8}{'% own':>8}{'':>7}")
        for v in sens["variants"]:  # type: ignore[attr-defined]
            value = "" if v["value"] is None else f"{v['value']:.2f}"
            met = "/".join("met" if m else "missed" for m in v["targets"].values())
            print(f"  {v['entry']:<28}{v['factor']:>7}{value:>7}{_pct(v['healed_share']):>8}"
                  f"{_pct(v['retry_everything_healed_share']):>10}{v['reruns_wasted_on_genuine_bugs']:>8}"
                  f"{_pct(v['wasted_share_of_own_reruns']):>8}{v['humans_paged']:>7}  {met}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    subtitle = f"classifier: {classifier.mode}" + (
        f" ({classifier.source['eval_file']} @ {classifier.source['eval_commit']})"
        if isinstance(classifier, MeasuredClassifier) else f" accuracy {args.accuracy:.0%}") \
        + f"; cluster purity {purity:.3f}"
    plot(tallies, args.days, RESULTS / "fleet_sim_learning_curve.png", subtitle)
    command = ".venv/bin/python -m bench.fleet_sim" + (" " + " ".join(argv if argv is not None else
                                                                         sys.argv[1:])).rstrip()
    document = {
        "command": command,
        "seed": args.seed,
        "days": args.days,
        "failures": len(result["failures"]),  # type: ignore[arg-type]
        "classifier_mode": classifier.mode,
        "classifier": classifier.describe(),
        "classifier_accuracy_observed": result["observed_accuracy"],
        "classifier_unknown_rate_observed": result["observed_unknown_rate"],
        "cluster_purity": {"value": purity, "source": purity_source,
                           "meaning": "share of failures whose cluster id follows the root cause; the rest get a "
                                      "fresh cluster or another cause's cluster, half each"},
        "odds": {"values": dict(ODDS),
                 "note": "per-action success odds: all assumptions (see the comments on ODDS in bench/fleet_sim.py)"},
        "strategies": rows,
        "wasted_ratio_vs_retry_everything": ratio,
        "targets": targets,
        "duplicate_outcomes_ignored": result["duplicates_ignored"],
        "plan_healing_mean_ms": result["plan_ms_mean"],
        "healed_share_by_cause": {name: {c: v[1] / max(v[0], 1) for c, v in sorted(t.by_cause.items())}
                                  for name, t in tallies.items()},
        "learning_curve": {name: {str(d + 1): v[1] / max(v[0], 1) for d, v in sorted(t.by_day.items())}
                           for name, t in tallies.items()},
        "sensitivity": sens if sens is not None else "not run (pass --sensitivity)",
        "sample_rationale": result["sample_rationale"],
        "wall_seconds": time.perf_counter() - started,
    }
    (RESULTS / "fleet_sim.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"plan_healing mean {result['plan_ms_mean']:.2f} ms; duplicate outcomes ignored: "
          f"{result['duplicates_ignored']}; wall {document['wall_seconds']:.1f} s")
    print(f"wrote {RESULTS / 'fleet_sim.json'} and {RESULTS / 'fleet_sim_learning_curve.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
