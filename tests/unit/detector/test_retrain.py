"""Retraining: a candidate replaces the model only if it scores at least as well."""

from __future__ import annotations

import pytest

from bench.corpus import FAMILIES, generate_corpus
from services.common.errors import FailedPrecondition, NotFound
from services.common.vocabulary import FailureClass as FC
from services.detector.model import FailureModel
from services.detector.retrain import LabelledLog, ModelRegistry, held_out_split, retrain

CLASSES = {FC.DISK_FULL, FC.OUT_OF_MEMORY, FC.PERMISSION, FC.LINT}


def confirmed_logs(seed: int, per_family: int) -> list[LabelledLog]:
    families = [f for f in FAMILIES if f.failure_class in CLASSES]
    # each sample's "repository" is its family and index, so groups are many and varied
    return [LabelledLog(s.text, s.failure_class, f"{s.family}/{i % 3}")
            for i, s in enumerate(generate_corpus(seed, per_family, families=families))]


@pytest.fixture(scope="module")
def confirmed() -> list[LabelledLog]:
    return confirmed_logs(seed=5, per_family=6)


def test_first_model_is_always_accepted(confirmed) -> None:
    result, model = retrain(None, confirmed)
    assert result.accepted and result.old_score == 0.0
    assert result.version == result.candidate_version == model.version
    assert result.new_score > 0.8
    assert result.trained_on + result.held_out == len(confirmed)


def test_a_better_candidate_replaces_a_weaker_model(confirmed) -> None:
    narrow = [c for c in confirmed if c.failure_class in {FC.DISK_FULL, FC.LINT}]
    weak = FailureModel().fit([c.text for c in narrow], [c.failure_class for c in narrow])
    result, model = retrain(weak, confirmed)
    assert result.accepted and result.new_score > result.old_score
    assert model.version == result.candidate_version != weak.version


def test_a_worse_candidate_is_rejected_and_the_old_model_stays(confirmed) -> None:
    _, current = retrain(None, confirmed)
    # A poisoned base corpus: many logs with rotated labels drown the confirmed ones.
    rotate = {FC.DISK_FULL: FC.OUT_OF_MEMORY, FC.OUT_OF_MEMORY: FC.PERMISSION, FC.PERMISSION: FC.LINT,
              FC.LINT: FC.DISK_FULL}
    poisoned = [LabelledLog(c.text, rotate[c.failure_class], "base") for c in confirmed_logs(seed=6, per_family=10)]
    result, model = retrain(current, confirmed, base=poisoned)
    assert not result.accepted and result.new_score < result.old_score
    assert model is current and result.version == current.version != result.candidate_version


def test_too_few_labels_is_a_failed_precondition(confirmed) -> None:
    with pytest.raises(FailedPrecondition, match="needs >= 20 outcome-confirmed labels, have 5"):
        retrain(None, confirmed[:5])


def test_held_out_split_keeps_groups_whole(confirmed) -> None:
    train, test = held_out_split(confirmed, 0.25, seed=0)
    assert not {confirmed[i].group for i in train} & {confirmed[i].group for i in test}
    assert sorted(train + test) == list(range(len(confirmed)))


def test_registry_keeps_versions_and_a_current_pointer(confirmed, tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(NotFound):
        registry.load()
    _, first = retrain(None, confirmed, seed=0)
    _, second = retrain(None, confirmed, seed=1)
    registry.publish(first)
    registry.publish(second, make_current=False)
    assert registry.versions() == sorted({first.version, second.version})
    assert registry.current_version() == first.version
    assert registry.load().version == first.version
    assert registry.load(second.version).version == second.version
