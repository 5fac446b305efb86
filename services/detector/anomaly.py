"""How unusual a log is against the tenant's own history.

Features are cheap and bounded (a 1 MiB log costs a few ms): size, the share of
error-looking lines, and template novelty (the share of lines whose template the
tenant's miner has never seen). An IsolationForest fitted on the tenant's past
logs scores a new one; the score is the forest's anomaly score s from Liu et al.
(2008): about 0.5 or below is ordinary, towards 1 is unlike anything seen.

Cold start: with fewer than `min_history` past logs there is nothing to compare
with, and `score` answers exactly 0.5 ("no evidence either way"); `is_cold` says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import astuple, dataclass

import numpy as np
from sklearn.ensemble import IsolationForest

from services.common.errors import InvalidArgument
from services.detector.templates import TemplateMiner

COLD_START_SCORE = 0.5
MAX_SAMPLED_LINES = 2000  # ratios are estimated on the last lines; counts use the whole log
_ERROR_LOOKING = re.compile(r"error|fail|fatal|exception|panic|denied|killed|timed? ?out|traceback", re.I)


@dataclass(frozen=True)
class LogFeatures:
    line_count: int
    byte_count: int
    error_line_ratio: float
    novel_template_ratio: float
    distinct_template_ratio: float
    longest_line: int

    def vector(self) -> list[float]:
        line_count, byte_count, error_ratio, novel, distinct, longest = astuple(self)
        return [math.log1p(line_count), math.log1p(byte_count), error_ratio, novel, distinct, math.log1p(longest)]


def extract_features(log: str | bytes, miner: TemplateMiner | None = None, learn: bool = False) -> LogFeatures:
    """Features of one log. Novelty is measured against `miner` (the tenant's templates);
    with `learn` the log's templates are added to it afterwards."""
    text = log.decode("utf-8", errors="replace") if isinstance(log, bytes) else log
    byte_count = len(log) if isinstance(log, bytes) else len(text.encode("utf-8", errors="replace"))
    line_count = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    tail_start = len(text)
    for _ in range(MAX_SAMPLED_LINES + 1):
        tail_start = text.rfind("\n", 0, tail_start)
        if tail_start < 0:
            break
    sampled = text[tail_start + 1:].splitlines()
    if not sampled:
        return LogFeatures(line_count, byte_count, 0.0, 0.0, 0.0, 0)
    errors = sum(1 for line in sampled if _ERROR_LOOKING.search(line))
    novel, distinct = 0.0, 0.0
    if miner is not None:
        matched = [miner.match(line) for line in sampled]
        novel = sum(1 for m in matched if m is None) / len(sampled)
        if learn:
            ids = [miner.add(line)[0] for line in sampled]
            distinct = len(set(ids)) / len(sampled)
        else:
            distinct = len({m for m in matched if m is not None}) / len(sampled)
    return LogFeatures(line_count, byte_count, errors / len(sampled), novel, distinct,
                       max(len(line) for line in sampled))


class AnomalyScorer:
    """IsolationForest over a tenant's past LogFeatures."""

    def __init__(self, min_history: int = 20, seed: int = 0) -> None:
        if min_history < 2:
            raise InvalidArgument("min_history", f"must be >= 2, got {min_history}")
        self.min_history = min_history
        self.seed = seed
        self._forest: IsolationForest | None = None
        self.history_size = 0

    @property
    def is_cold(self) -> bool:
        return self._forest is None

    def fit(self, history: Sequence[LogFeatures]) -> AnomalyScorer:
        self.history_size = len(history)
        if len(history) < self.min_history:
            self._forest = None
            return self
        x = np.array([f.vector() for f in history], dtype=float)
        self._forest = IsolationForest(n_estimators=100, max_samples=min(256, len(history)),
                                       random_state=self.seed).fit(x)
        return self

    def score(self, features: LogFeatures) -> float:
        """Anomaly score in [0, 1]; exactly 0.5 while the history is too short to judge."""
        if self._forest is None:
            return COLD_START_SCORE
        s = -float(self._forest.score_samples(np.array([features.vector()], dtype=float))[0])
        return min(1.0, max(0.0, s))
