"""Anomaly score: cold start is 0.5, ordinary logs score low, strange ones high."""

from __future__ import annotations

import random

import pytest

from services.common.errors import InvalidArgument
from services.detector.anomaly import COLD_START_SCORE, AnomalyScorer, extract_features
from services.detector.templates import TemplateMiner


def ordinary_log(rng: random.Random) -> str:
    lines = [
        f"Step {i}: compiling module_{rng.randint(1, 40)} ({rng.randint(1, 900)} ms)"
        for i in range(rng.randint(40, 60))
    ]
    lines += [f"Downloaded {rng.randint(1, 900)} kB" for _ in range(rng.randint(5, 10))]
    lines.append("ERROR: Job failed: exit code 1")
    return "\n".join(lines) + "\n"


def strange_log(rng: random.Random) -> str:
    lines = [f"kernel: [{rng.random():.6f}] BUG: unable to handle page fault for address {rng.getrandbits(48):#x}"
             for _ in range(400)]
    lines += ["segfault at 0 ip error 4 in libc.so.6 FATAL panic traceback"] * 200
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def trained() -> tuple[AnomalyScorer, TemplateMiner]:
    rng = random.Random(1)
    miner = TemplateMiner()
    history = [extract_features(ordinary_log(rng), miner, learn=True) for _ in range(60)]
    return AnomalyScorer(min_history=20).fit(history), miner


def test_cold_start_answers_one_half() -> None:
    scorer = AnomalyScorer(min_history=20).fit([extract_features("a\nb\n")] * 19)
    assert scorer.is_cold and scorer.score(extract_features("anything\n")) == COLD_START_SCORE


def test_strange_logs_score_higher_than_ordinary_ones(trained) -> None:
    scorer, miner = trained
    rng = random.Random(2)
    ordinary = [scorer.score(extract_features(ordinary_log(rng), miner)) for _ in range(10)]
    strange = [scorer.score(extract_features(strange_log(rng), miner)) for _ in range(3)]
    assert not scorer.is_cold
    assert all(0.0 <= s <= 1.0 for s in ordinary + strange)
    assert min(strange) > max(ordinary)
    assert sum(ordinary) / len(ordinary) < 0.55 and min(strange) > 0.6


def test_novelty_is_measured_against_the_tenants_templates() -> None:
    miner = TemplateMiner()
    extract_features("alpha 1\nbeta 2\n", miner, learn=True)
    assert extract_features("alpha 7\nbeta 9\n", miner).novel_template_ratio == 0.0
    assert extract_features("alpha 7\ngamma delta epsilon\n", miner).novel_template_ratio == 0.5


def test_features_of_a_megabyte_log_count_every_line() -> None:
    big = "".join(f"line {i} of a long build log\n" for i in range(40000)).encode()
    features = extract_features(big, TemplateMiner())
    assert features.line_count == 40000 and features.byte_count == len(big)


def test_min_history_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="min_history"):
        AnomalyScorer(min_history=1)
