"""The learned classifier: learns, calibrates, persists, stays fast on big logs."""

from __future__ import annotations

import gzip
import json
import pickle

import pytest
from sklearn.metrics import f1_score

from bench.corpus import FAMILIES, generate_corpus
from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass
from services.detector.model import FailureModel, informative_lines, make_document, tokens


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


def test_a_megabyte_log_is_classified_from_its_tail(model: FailureModel) -> None:
    # Its speed is measured in bench/detector_eval.py (predict_ms_on_1MiB_log), not asserted here.
    noise = "".join(f"2024-01-01T00:00:00.0000000Z [INFO] step {i} ok, downloaded {i * 7} kB\n" for i in range(16000))
    assert len(noise) > 1_000_000
    tail = ("npm ERR! code ENOSPC\nnpm ERR! nospc ENOSPC: no space left on device, write\n"
            "npm ERR! nospc Clear up some disk space and try again.\n##[error]Process completed with exit code 1.\n")
    log = (noise + tail).encode()
    cls, _ = model.predict(log)
    assert cls is FailureClass.DISK_FULL
    read = informative_lines(log)
    assert len(read) <= 15 + 80 and any("no space left on device" in line for line in read)


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
    assert loaded.version == model.version and loaded.version.startswith("fm2-")
    texts = [s.text for s in corpus[::17]]
    assert loaded.predict_many(texts) == model.predict_many(texts)


def test_load_refuses_something_that_is_not_a_model(tmp_path) -> None:
    bogus = tmp_path / "bogus.bin"
    bogus.write_bytes(gzip.compress(json.dumps({"format": "something-else/v9"}).encode()))
    with pytest.raises(ValueError, match="something-else/v9"):
        FailureModel.load(bogus)


class _Boom:
    def __reduce__(self):  # what a hostile pickle would run on load
        return (pytest.fail, ("a saved model was unpickled",))


def test_a_pickle_is_refused_without_being_unpickled(tmp_path) -> None:
    hostile = tmp_path / "hostile.bin"
    hostile.write_bytes(pickle.dumps({"format": "healing-guard/failure-model/v2", "x": _Boom()}))
    with pytest.raises(ValueError, match="not a failure model"):
        FailureModel.load(hostile)


def test_compiled_arithmetic_matches_scikit_learn(model: FailureModel, corpus) -> None:
    # The runtime predicts from plain arrays; scikit-learn's own pipeline is the reference.
    for sample in corpus[::7]:
        document = make_document(sample.text, ["cmd:npm", "kb:dep.npm-network"])
        ours, reference = model.proba_of_document(document), model.reference_proba(document)
        assert ours.keys() == reference.keys()
        assert max(abs(ours[c] - reference[c]) for c in ours) < 1e-9


def test_two_class_models_match_scikit_learn_too(corpus) -> None:
    two = [s for s in corpus if s.failure_class in (FailureClass.LINT, FailureClass.TIMEOUT)]
    trained = FailureModel().fit([s.text for s in two], [s.failure_class for s in two])
    for sample in two[::3]:
        document = make_document(sample.text)
        ours, reference = trained.proba_of_document(document), trained.reference_proba(document)
        assert max(abs(ours[c] - reference[c]) for c in ours) < 1e-9


def test_features_reach_the_model(corpus) -> None:
    # The same text, told apart only by a feature: the model must learn to read features.
    texts = ["step failed"] * 12
    labels = [FailureClass.LINT] * 4 + [FailureClass.TEST_FAILURE] * 4 + [FailureClass.TIMEOUT] * 4
    features = [["cmd:rubocop"]] * 4 + [["cmd:rspec"]] * 4 + [["framing:timeout"]] * 4
    trained = FailureModel().fit(texts, labels, features=features)
    assert trained.predict("step failed", ["cmd:rubocop"])[0] == FailureClass.LINT
    assert trained.predict("step failed", ["cmd:rspec"])[0] == FailureClass.TEST_FAILURE


def test_version_follows_the_training_data(corpus) -> None:
    few = [s for s in corpus if s.failure_class in (FailureClass.LINT, FailureClass.TIMEOUT, FailureClass.DISK_FULL)]
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
        FailureModel().fit(["a"] * 7, [FailureClass.LINT] * 3 + [FailureClass.DISK_FULL] * 3 + [FailureClass.TIMEOUT])


def test_untrained_model_says_so() -> None:
    with pytest.raises(RuntimeError, match="not trained"):
        FailureModel().predict("anything")
