"""The synthetic corpus the model trains on and the evaluation splits."""

from __future__ import annotations

from collections import Counter

from bench.corpus import FAMILIES, family_folds, generate_corpus
from services.common.vocabulary import FailureClass


def test_every_class_has_several_families_and_every_toolchain_appears() -> None:
    per_class = Counter(f.failure_class for f in FAMILIES)
    assert set(per_class) == set(FailureClass) - {FailureClass.FAILURE_CLASS_UNSPECIFIED}
    assert min(per_class.values()) >= 4
    toolchains = {f.toolchain for f in FAMILIES}
    for needed in ["pytest", "unittest", "jest", "mocha", "go test", "cargo", "maven", "gradle", "npm", "pip",
                   "docker build", "kubectl/helm", "terraform", "github actions", "gitlab"]:
        assert needed in toolchains
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)


def test_generation_is_deterministic_and_seed_dependent() -> None:
    a = generate_corpus(seed=3, samples_per_family=2)
    assert a == generate_corpus(seed=3, samples_per_family=2)
    assert [s.text for s in a] != [s.text for s in generate_corpus(seed=4, samples_per_family=2)]
    assert {s.provider for s in a} == {"github_actions", "gitlab"}


def test_logs_carry_realistic_noise() -> None:
    texts = "".join(s.text for s in generate_corpus(seed=0, samples_per_family=2))
    assert "\x1b[" in texts and "##[group]" in texts and "section_start:" in texts


def test_family_folds_never_share_a_family_between_train_and_test() -> None:
    samples = generate_corpus(seed=0, samples_per_family=2)
    for train, test in family_folds(samples, 4):
        train_families = {samples[i].family for i in train}
        test_families = {samples[i].family for i in test}
        assert not train_families & test_families
        # every class is tested and still trained on
        assert {samples[i].failure_class for i in test} == {samples[i].failure_class for i in train}
