"""The learned classifier: learns, calibrates, persists, stays fast on big logs."""

from __future__ import annotations

import pickle
import time

import pytest
from sklearn.metrics import f1_score

from bench.corpus import FAMILIES, generate_corpus
from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass
from services.detector.model import FailureModel, informative_lines, tokens


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(seed=0, samples_per_family=6)


@pytest.fixture(scope="module")
def model(corpus) -> FailureModel:
    return FailureModel().fit([s.text for s in corpus], [s.failure_class for s in corpus],
                              groups=[s.family for s in corpus])


def test_learns_families_it_has_seen_on_fresh_samples(model: FailureModel) -> None:
    fresh = generate_corpus(seed=99, samples_per_family=2)  # other names, numbers, noise
    predicted = [cls for cls, _ in model.predict_many([s.text for s in fresh])]
    truth = [s.failure_class for s in fresh]
    assert f1_score(truth, predicted, average="macro") >= 0.85


def test_predict_returns_a_class_and_a_probability(model: FailureModel, corpus) -> None:
    cls, probability = model.predict(corpus[0].text)
    assert isinstance(cls, FailureClass) and 0.0 <= probability <= 1.0
    probs = model.predict_proba(corpus[0].text)
    assert probs[cls] == pytest.approx(probability)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert set(model.classes) == {f.failure_class for f in FAMILIES}


def test_bytes_and_text_give_the_same_answer(model: FailureModel, corpus) -> None:
    text = corpus[10].text
    assert model.predict(text.encode()) == model.predict(text)


def test_a_megabyte_log_is_classified_from_its_tail_quickly(model: FailureModel) -> None:
    noise = "".join(f"2024-01-01T00:00:00.0000000Z [INFO] step {i} ok, downloaded {i * 7} kB\n" for i in range(16000))
    assert len(noise) > 1_000_000
    tail = ("npm ERR! code ENOSPC\nnpm ERR! nospc ENOSPC: no space left on device, write\n"
            "npm ERR! nospc Clear up some disk space and try again.\n##[error]Process completed with exit code 1.\n")
    log = (noise + tail).encode()
    model.predict(log)
    started = time.process_time()  # CPU time: other processes on a loaded machine do not count
    for _ in range(10):
        cls, _ = model.predict(log)
    per_call = (time.process_time() - started) / 10
    assert cls is FailureClass.DISK_FULL
    assert per_call < 0.05, f"predict took {per_call * 1000:.1f} ms CPU on a 1 MiB log"


def test_informative_lines_are_bounded_and_keep_error_lines() -> None:
    text = "\n".join(["fine"] * 5000 + ["FATAL ERROR: heap out of memory"] + ["fine"] * 10)
    lines = informative_lines(text)
    assert len(lines) <= 15 + 80
    assert "FATAL ERROR: heap out of memory" in lines


def test_tokens_split_camel_case_so_toolchains_share_words() -> None:
    assert tokens("java.lang.OutOfMemoryError") == ["java", "lang", "out", "of", "memory", "error"]


def test_save_and_load_round_trip(model: FailureModel, corpus, tmp_path) -> None:
    path = model.save(tmp_path / "model.bin")
    loaded = FailureModel.load(path)
    assert loaded.version == model.version and loaded.version.startswith("fm1-")
    texts = [s.text for s in corpus[::17]]
    assert loaded.predict_many(texts) == model.predict_many(texts)


def test_load_refuses_something_that_is_not_a_model(tmp_path) -> None:
    bogus = tmp_path / "bogus.bin"
    bogus.write_bytes(pickle.dumps({"format": "something-else/v9"}))
    with pytest.raises(ValueError, match="something-else/v9"):
        FailureModel.load(bogus)


def test_version_follows_the_training_data(corpus) -> None:
    few = [s for s in corpus if s.failure_class in (FailureClass.LINT, FailureClass.TIMEOUT)]
    texts, labels = [s.text for s in few], [s.failure_class for s in few]
    a = FailureModel().fit(texts, labels)
    b = FailureModel().fit(texts, labels)
    c = FailureModel().fit(texts[1:], labels[1:])
    assert a.version == b.version != c.version


def test_fit_rejects_bad_input_naming_the_field() -> None:
    with pytest.raises(InvalidArgument, match="labels"):
        FailureModel().fit(["a", "b"], [FailureClass.LINT])
    with pytest.raises(InvalidArgument, match="at least 2 distinct classes"):
        FailureModel().fit(["a"] * 4, [FailureClass.LINT] * 4)
    with pytest.raises(InvalidArgument, match="TIMEOUT has 1"):
        FailureModel().fit(["a"] * 4, [FailureClass.LINT] * 3 + [FailureClass.TIMEOUT])


def test_untrained_model_says_so() -> None:
    with pytest.raises(RuntimeError, match="not trained"):
        FailureModel().predict("anything")
