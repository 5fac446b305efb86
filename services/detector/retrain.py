"""Retraining from outcome-confirmed labels, with a guard against getting worse.

A candidate model is trained on the confirmed labels (plus an optional base
corpus) minus a held-out split; it replaces the current model only if its macro-F1
on that held-out split is at least the current model's. The split holds out whole
groups (repositories) when there are enough of them, so the comparison rewards
generalising, not remembering. Models are versioned; `ModelRegistry` keeps them on
disk with an atomic pointer to the one in force.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.vocabulary import FailureClass
from services.detector.model import FailureModel, ModelConfig, make_document

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledLog:
    text: str | bytes
    failure_class: FailureClass
    group: str  # where it came from (repository); the held-out split keeps groups whole
    # What the model reads of it, when stored that way (the artefact's training set has no raw logs).
    document: str = ""


@dataclass(frozen=True)
class RetrainResult:
    accepted: bool
    old_score: float  # macro-F1 of the current model on the held-out split (0.0 if none)
    new_score: float  # macro-F1 of the candidate on the same split
    version: str  # the version in force after this call
    candidate_version: str
    trained_on: int
    held_out: int


def macro_f1(model: FailureModel, logs: Sequence[LabelledLog], confidence_threshold: float | None = None) -> float:
    """Macro-F1 over the classes present; below `confidence_threshold` a prediction counts as UNKNOWN."""
    predictions = model.predict_many([item.text for item in logs])
    predicted = [int(FailureClass.UNKNOWN) if confidence_threshold is not None and p < confidence_threshold else int(c)
                 for c, p in predictions]
    truth = [int(item.failure_class) for item in logs]
    return float(f1_score(truth, predicted, labels=sorted(set(truth)), average="macro", zero_division=0))


def held_out_split(logs: Sequence[LabelledLog], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) indices: whole groups held out when there are at least 4, else stratified."""
    if not 0.0 < fraction < 1.0:
        raise InvalidArgument("holdout_fraction", f"must be in (0, 1), got {fraction}")
    y = np.array([int(item.failure_class) for item in logs])
    groups = [item.group for item in logs]
    if len(set(groups)) >= 4:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        train, test = next(splitter.split(np.zeros(len(logs)), y, groups))
    else:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        train, test = next(splitter.split(np.zeros(len(logs)), y))
    return [int(i) for i in train], [int(i) for i in test]


def retrain(current: FailureModel | None, confirmed: Sequence[LabelledLog], *,
            base: Sequence[LabelledLog] = (), holdout_fraction: float = 0.25, seed: int = 0,
            min_confirmed: int = 20, confidence_threshold: float | None = None,
            config: ModelConfig | None = None) -> tuple[RetrainResult, FailureModel]:
    """Train a candidate; keep whichever of current and candidate scores better (ties go to the
    candidate, which has seen newer labels). Returns the result and the model in force."""
    if len(confirmed) < min_confirmed:
        raise FailedPrecondition(f"retraining needs >= {min_confirmed} outcome-confirmed labels, have {len(confirmed)}",
                                 reason="NOT_ENOUGH_LABELS")
    train_idx, test_idx = held_out_split(confirmed, holdout_fraction, seed)
    held_out = [confirmed[i] for i in test_idx]
    training = [confirmed[i] for i in train_idx] + list(base)
    candidate_config = config or (current.config if current is not None else ModelConfig(seed=seed))
    candidate = FailureModel(candidate_config).fit_documents(
        [item.document or make_document(item.text, (), candidate_config) for item in training],
        [item.failure_class for item in training], groups=[item.group for item in training])
    new_score = macro_f1(candidate, held_out, confidence_threshold)
    old_score = macro_f1(current, held_out, confidence_threshold) if current is not None and current.is_trained else 0.0
    accepted = new_score >= old_score
    in_force = candidate if accepted else current
    assert in_force is not None  # accepted is True whenever there is no current model
    log.info("retrain: candidate %s macro-F1 %.3f vs current %s %.3f on %d held-out logs: %s",
             candidate.version, new_score, current.version if current else "none", old_score, len(held_out),
             "accepted" if accepted else "rejected")
    return (RetrainResult(accepted, old_score, new_score, in_force.version, candidate.version,
                          len(training), len(held_out)), in_force)


class ModelRegistry:
    """Versioned models in one folder: `<version>.model` files and a CURRENT pointer."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def publish(self, model: FailureModel, make_current: bool = True) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = model.save(self.root / f"{model.version}.model")
        if make_current:
            pointer = self.root / "CURRENT.tmp"
            pointer.write_text(model.version + "\n")
            pointer.replace(self.root / "CURRENT")
        return path

    def versions(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.model")) if self.root.exists() else []

    def current_version(self) -> str | None:
        pointer = self.root / "CURRENT"
        return pointer.read_text().strip() if pointer.exists() else None

    def load(self, version: str | None = None) -> FailureModel:
        """The given version, or the current one."""
        wanted = version or self.current_version()
        if wanted is None:
            raise NotFound("model", "CURRENT", f"no current model in {self.root}")
        path = self.root / f"{wanted}.model"
        if not path.exists():
            raise NotFound("model", wanted)
        return FailureModel.load(path)
