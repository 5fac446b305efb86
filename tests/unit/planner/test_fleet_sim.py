"""The fleet simulation is evidence only if it is fair: check it on a small world."""

import random
from collections import Counter

import pytest

from bench import fleet_sim
from services.common.vocabulary import GENUINE_BREAKS, FailureClass

F = FailureClass


def test_planner_sees_only_the_observed_class_never_the_truth(monkeypatch):
    seen = []
    real = fleet_sim.plan_healing

    def spy(request, *args, **kwargs):
        seen.append(request)
        return real(request, *args, **kwargs)

    monkeypatch.setattr(fleet_sim, "plan_healing", spy)
    world = fleet_sim.build_world(seed=3, days=2, failures_per_day=60,
                                  classifier=fleet_sim.AssumedClassifier(0.8))
    guard = fleet_sim.HealingGuard(seed=3, learn=True, policies=fleet_sim.default_policies())
    tally = fleet_sim.Tally("hg")
    for failure in world:
        guard(failure, tally, fleet_sim.CostModel())
    by_id = {f"failure-{f.index}": f for f in world}
    assert any(by_id[r.failure_id].truth is not r.failure_class for r in seen)  # noise reached the planner
    for request in seen:
        failure = by_id[request.failure_id]
        assert request.failure_class is failure.observed
        assert failure.subtype not in request.cluster_id
        assert request.flaky_test is None or request.failure_class.name == "FLAKY_TEST"


def test_small_world_heals_and_spares_genuine_bugs():
    result = fleet_sim.simulate(seed=5, days=3, failures_per_day=80, classifier=fleet_sim.AssumedClassifier(0.95))
    rows = {r["strategy"]: r for r in result["rows"]}
    guard, everything = rows["healing guard"], rows["retry everything x3"]
    assert guard["healed_share"] > rows["gitlab retry: 2"]["healed_share"]
    assert guard["reruns_wasted_on_genuine_bugs"] < 0.2 * everything["reruns_wasted_on_genuine_bugs"]
    assert rows["no healing"]["healed_without_human"] == 0
    genuine = sum(1 for f in result["failures"] if f.truth in GENUINE_BREAKS)
    assert guard["genuine_bugs"] == genuine
    assert set(result["targets"]) == {fleet_sim.TARGET_HEALED, fleet_sim.TARGET_WASTED}


# A small hand-made confusion: {truth: {answer: count}}.
CONFUSION = {
    "TEST_FAILURE": {"TEST_FAILURE": 60, "UNKNOWN": 25, "FLAKY_TEST": 10, "COMPILE_ERROR": 5},
    "NETWORK": {"NETWORK": 30, "DEPENDENCY_FETCH": 10},
}
RIGHT = [0.7, 0.8, 0.9]
WRONG = [0.61, 0.65]


def _measured(smoothing=0.0):
    return fleet_sim.MeasuredClassifier.from_confusion(CONFUSION, RIGHT, WRONG, threshold=0.6, smoothing=smoothing)


def _frequencies(classifier, truth, n, seed=11):
    rng = random.Random(seed)
    answers = Counter()
    confidences = {True: [], False: [], None: []}
    for _ in range(n):
        answer, confidence = classifier.classify(truth, rng)
        answers[answer] += 1
        confidences[None if answer is F.UNKNOWN else answer is truth].append(confidence)
    return {a: c / n for a, c in answers.items()}, confidences


@pytest.mark.parametrize("truth", ["TEST_FAILURE", "NETWORK"])
def test_measured_classifier_reproduces_the_confusion_it_was_given(truth):
    row = CONFUSION[truth]
    total = sum(row.values())
    freq, confidences = _frequencies(_measured(), F[truth], 20000)
    for answer in fleet_sim.OUTCOMES:
        expected = row.get(answer.name, 0) / total
        assert freq.get(answer, 0.0) == pytest.approx(expected, abs=0.015), answer
    # Right answers carry the measured right confidences, wrong ones the wrong ones; UNKNOWN is below threshold.
    assert set(confidences[True]) <= set(RIGHT)
    assert set(confidences[False]) <= set(WRONG)
    assert all(c < 0.6 for c in confidences[None])


def test_add_one_smoothing_gives_every_answer_a_little_mass():
    measured = _measured(smoothing=1.0)
    n = 100 + len(fleet_sim.OUTCOMES)
    assert measured.probability(F.TEST_FAILURE, F.TEST_FAILURE) == pytest.approx(61 / n)
    assert measured.probability(F.TEST_FAILURE, F.DISK_FULL) == pytest.approx(1 / n)
    for truth in fleet_sim.OBSERVABLE_CLASSES:
        assert sum(p for _, p in measured.rows[truth]) == pytest.approx(1.0)


def test_a_class_without_a_measured_row_gets_the_pooled_behaviour():
    measured = _measured()
    assert F.DISK_FULL in measured.pooled_classes and F.TEST_FAILURE not in measured.pooled_classes
    # pooled: 140 logs, 90 right, 25 UNKNOWN, 25 wrong (10 FLAKY_TEST, 5 COMPILE_ERROR, 10 DEPENDENCY_FETCH)
    assert measured.probability(F.DISK_FULL, F.DISK_FULL) == pytest.approx(90 / 140)
    assert measured.probability(F.DISK_FULL, F.UNKNOWN) == pytest.approx(25 / 140)
    assert measured.probability(F.DISK_FULL, F.FLAKY_TEST) == pytest.approx(10 / 140)
    assert measured.probability(F.DISK_FULL, F.DEPENDENCY_FETCH) == pytest.approx(10 / 140)
    # FLAKY_TEST has no row either: the wrong answers that named it are spread over the others.
    assert measured.probability(F.FLAKY_TEST, F.FLAKY_TEST) == pytest.approx(90 / 140)
    assert measured.probability(F.FLAKY_TEST, F.COMPILE_ERROR) == pytest.approx(25 / 140 * 5 / 15)


def test_cluster_purity_sets_the_share_of_clusters_that_follow_the_cause():
    world = fleet_sim.build_world(seed=2, days=4, failures_per_day=200,
                                  classifier=fleet_sim.AssumedClassifier(0.9), cluster_purity=0.7)
    followed = sum(f.cluster_id == "c-" + fleet_sim.hashlib.sha1(f"{f.repo.name}:{f.subtype}".encode())
                   .hexdigest()[:10] for f in world)
    assert followed / len(world) == pytest.approx(0.7, abs=0.03)


def test_sensitivity_halves_and_doubles_every_odds_entry_capped_at_one():
    sens = fleet_sim.sensitivity(seed=1, days=1, failures_per_day=40,
                                 classifier=fleet_sim.AssumedClassifier(0.9), cluster_purity=0.9)
    variants = sens["variants"]
    assert len(variants) == 1 + 2 * len(fleet_sim.ODDS)
    for v in variants[1:]:
        base = fleet_sim.ODDS[v["entry"]]
        assert v["value"] == pytest.approx(min(1.0, base * (0.5 if v["factor"] == "x0.5" else 2.0)))


def test_pooled_prior_shrinks_a_thin_row_towards_the_pooled_behaviour():
    thin = {**CONFUSION, "OUT_OF_MEMORY": {"OUT_OF_MEMORY": 1}}
    uniform = fleet_sim.MeasuredClassifier.from_confusion(thin, RIGHT, WRONG, 0.6, smoothing=1.0)
    pooled = fleet_sim.MeasuredClassifier.from_confusion(thin, RIGHT, WRONG, 0.6, smoothing=1.0, prior="pooled")
    k = len(fleet_sim.OUTCOMES)
    assert uniform.probability(F.OUT_OF_MEMORY, F.OUT_OF_MEMORY) == pytest.approx(2 / (1 + k))
    assert pooled.probability(F.OUT_OF_MEMORY, F.OUT_OF_MEMORY) == pytest.approx((1 + k * 91 / 141) / (1 + k))
    assert sum(p for _, p in pooled.rows[F.OUT_OF_MEMORY]) == pytest.approx(1.0)
