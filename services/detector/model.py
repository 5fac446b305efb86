"""The learned classifier: names the failure class where the patterns are silent.

Only the informative part of a log is read: its last lines (CI jobs stop at the
first failing step, so the cause is near the end) and the error-looking lines of
its last 32 KiB. Lines are normalised (colours, timestamps, numbers,
paths masked) and split into word tokens (camelCase and snake_case split, so
`OutOfMemoryError` and `out of memory` share words), then TF-IDF over words feeds
a logistic regression whose probabilities are calibrated
(CalibratedClassifierCV, sigmoid). When the caller knows which generator or
repository each training log came from, calibration folds are grouped by it, so
the probabilities are honest about logs unlike anything seen in training.

Nothing is loaded at import; `train_default_model()` builds a model from the
project's synthetic corpus when no stored model exists.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import re2
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import FeatureUnion

from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass
from services.detector.templates import normalise_line

log = logging.getLogger(__name__)

MODEL_FORMAT = "healing-guard/failure-model/v1"

# RE2 (linear time, ~100x faster than `re` on this alternation): scanning 32 KiB is ~0.1 ms.
_ERROR_LOOKING = re2.compile(
    r"(?i)error|fail|fatal|denied|exception|panic|killed|timed? ?out|refused|unable|cannot|could not|"
    r"not found|no space|traceback|abort|forbidden|unauthori[sz]ed|invalid|flak|rerun|retr(?:y|ied)|"
    r"exceeded|\bE\d{3,4}\b|✘|✖|\bwarn"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]+")


@dataclass(frozen=True)
class ModelConfig:
    tail_bytes: int = 32 * 1024
    tail_lines: int = 15
    max_error_lines: int = 80
    regularisation_c: float = 4.0
    calibration_folds: int = 3
    min_document_frequency: int = 2
    # Word pairs memorise a toolchain's phrasing; single words carry across toolchains
    # (measured on held-out families: macro-F1 0.48 with words vs 0.38 with pairs).
    ngram_max: int = 1
    # Character 3-5-grams within words as a second view ("ETIMEDOUT", "timed-out" and
    # "timeout" share pieces); off by default, chosen per training set by select_config.
    char_ngrams: bool = False
    seed: int = 0


def informative_lines(text: str | bytes, config: ModelConfig = ModelConfig()) -> list[str]:
    """The normalised lines the model reads: the last lines, then the error-looking lines.

    Bounded whatever the log's size: only the last `tail_bytes` are decoded and scanned,
    in one regex pass over the text rather than one per line.
    """
    if isinstance(text, bytes):
        tail = text[-config.tail_bytes:].decode("utf-8", errors="replace")
        cut = len(text) > config.tail_bytes
    else:
        tail = text[-config.tail_bytes:]
        cut = len(text) > config.tail_bytes
    if cut:  # the first line is probably a fragment
        tail = tail[tail.find("\n") + 1:]
    last = tail.splitlines()[-config.tail_lines:] if config.tail_lines > 0 else []
    errors: list[str] = []
    line_end = -1
    for match in _ERROR_LOOKING.finditer(tail):
        if match.start() < line_end:
            continue  # this line is already taken
        start = tail.rfind("\n", 0, match.start()) + 1
        line_end = tail.find("\n", match.end())
        line_end = len(tail) if line_end < 0 else line_end
        errors.append(tail[start:line_end])
    chosen = last + errors[-config.max_error_lines:]
    return [n for n in (normalise_line(line) for line in chosen) if n]


def tokens(document: str) -> list[str]:
    """Lower-case word tokens; camelCase split; masks (<NUM>, <PATH>...) kept as words."""
    return [w.lower() for word in _WORD.findall(document) for w in _CAMEL.split(word) if len(w) > 1]


def _document(text: str | bytes, config: ModelConfig) -> str:
    return "\n".join(informative_lines(text, config))


def _vectorizer(config: ModelConfig, n_texts: int) -> TfidfVectorizer | FeatureUnion:
    min_df = min(config.min_document_frequency, n_texts)
    words = TfidfVectorizer(tokenizer=tokens, lowercase=False, token_pattern=None, ngram_range=(1, config.ngram_max),
                            sublinear_tf=True, min_df=min_df, dtype=np.float32)
    if not config.char_ngrams:
        return words
    chars = TfidfVectorizer(analyzer="char_wb", lowercase=True, ngram_range=(3, 5), sublinear_tf=True,
                            min_df=min_df, max_features=60_000, dtype=np.float32)
    return FeatureUnion([("words", words), ("chars", chars)])


@dataclass
class TrainingReport:
    samples: int
    classes: list[str]
    seconds: float
    created_at: float = field(default_factory=time.time)


class FailureModel:
    """A calibrated classifier from log text to FailureClass."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        self.config = config
        self._vectorizer: TfidfVectorizer | FeatureUnion | None = None
        self._classifier: CalibratedClassifierCV | None = None
        self._classes: list[FailureClass] = []
        self.version: str = "untrained"
        self.report: TrainingReport | None = None

    @property
    def is_trained(self) -> bool:
        return self._classifier is not None

    @property
    def classes(self) -> list[FailureClass]:
        return list(self._classes)

    def fit(self, texts: Sequence[str | bytes], labels: Sequence[FailureClass | int],
            groups: Sequence[str] | None = None) -> FailureModel:
        """Train on logs and their classes; `groups` (e.g. a repository or generator per log)
        makes calibration hold out whole groups. Returns self."""
        if len(texts) != len(labels):
            raise InvalidArgument("labels", f"need one label per text: {len(texts)} texts, {len(labels)} labels")
        if groups is not None and len(groups) != len(texts):
            raise InvalidArgument("groups", f"need one group per text: {len(texts)} texts, {len(groups)} groups")
        y = np.array([int(FailureClass(label)) for label in labels])
        distinct, counts = np.unique(y, return_counts=True)
        if len(distinct) < 2:
            raise InvalidArgument("labels", f"need at least 2 distinct classes, got {len(distinct)}")
        folds = self.config.calibration_folds
        if counts.min() < folds:
            rare = FailureClass(int(distinct[counts.argmin()])).name
            raise InvalidArgument("labels", f"every class needs >= {folds} examples; {rare} has {counts.min()}")
        started = time.perf_counter()
        documents = [_document(t, self.config) for t in texts]
        vectorizer = _vectorizer(self.config, len(texts))
        x = vectorizer.fit_transform(documents)
        base = LogisticRegression(C=self.config.regularisation_c, max_iter=2000, class_weight="balanced",
                                  random_state=self.config.seed)
        cv: object
        if groups is not None and len(set(groups)) >= folds:
            cv = list(GroupKFold(n_splits=folds).split(x, y, groups=list(groups)))
        else:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.config.seed)
        # One model on all data, calibrated on out-of-fold predictions: one model to run per log.
        classifier = CalibratedClassifierCV(base, method="sigmoid", cv=cv, ensemble=False)
        classifier.fit(x, y)
        self._vectorizer, self._classifier = vectorizer, classifier
        self._classes = [FailureClass(int(c)) for c in classifier.classes_]
        digest = hashlib.sha256(repr(self.config).encode())
        for doc, label in zip(documents, y, strict=True):
            digest.update(doc.encode())
            digest.update(int(label).to_bytes(2, "big"))
        self.version = f"fm1-{digest.hexdigest()[:12]}"
        self.report = TrainingReport(len(texts), [c.name for c in self._classes], time.perf_counter() - started)
        log.info("trained failure model %s on %d logs in %.1fs", self.version, len(texts), self.report.seconds)
        return self

    def predict_proba(self, text: str | bytes) -> dict[FailureClass, float]:
        """Calibrated probability of every class the model knows."""
        return self.predict_proba_many([text])[0]

    def predict_proba_many(self, texts: Sequence[str | bytes]) -> list[dict[FailureClass, float]]:
        if self._classifier is None or self._vectorizer is None:
            raise RuntimeError("FailureModel is not trained: call fit() or load() first")
        x = self._vectorizer.transform([_document(t, self.config) for t in texts])
        return [dict(zip(self._classes, map(float, row), strict=True)) for row in self._classifier.predict_proba(x)]

    def predict(self, text: str | bytes) -> tuple[FailureClass, float]:
        """The most probable class and its probability."""
        return self.predict_many([text])[0]

    def predict_many(self, texts: Sequence[str | bytes]) -> list[tuple[FailureClass, float]]:
        out = []
        for probs in self.predict_proba_many(texts):
            best = max(probs, key=probs.__getitem__)
            out.append((best, probs[best]))
        return out

    # ------------------------------------------------------------------ persistence

    def to_bytes(self) -> bytes:
        if self._classifier is None:
            raise RuntimeError("cannot save an untrained FailureModel")
        payload = {"format": MODEL_FORMAT, "version": self.version, "sklearn": sklearn.__version__,
                   "config": self.config, "classes": [int(c) for c in self._classes],
                   "vectorizer": self._vectorizer, "classifier": self._classifier, "report": self.report}
        return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> FailureModel:
        # Models are written only by this service into its own storage; pickle is not
        # safe for files from anywhere else.
        payload = pickle.load(io.BytesIO(data))
        if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"not a failure model of format {MODEL_FORMAT}: found {found!r}")
        if payload["sklearn"] != sklearn.__version__:
            log.warning("failure model %s was saved with scikit-learn %s, running %s",
                        payload["version"], payload["sklearn"], sklearn.__version__)
        model = cls(payload["config"])
        model._vectorizer, model._classifier = payload["vectorizer"], payload["classifier"]
        model._classes = [FailureClass(c) for c in payload["classes"]]
        model.version, model.report = payload["version"], payload["report"]
        return model

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file then rename): a crash never leaves half a model."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | Path) -> FailureModel:
        return cls.from_bytes(Path(path).read_bytes())


# What select_config tries: few candidates, so selection itself cannot overfit much.
CANDIDATE_CONFIGS: tuple[ModelConfig, ...] = (
    ModelConfig(),
    ModelConfig(regularisation_c=1.0),
    ModelConfig(char_ngrams=True),
    ModelConfig(char_ngrams=True, regularisation_c=1.0),
)


@dataclass(frozen=True)
class Selection:
    config: ModelConfig
    # mean inner-fold macro-F1 of every candidate, in CANDIDATE order
    scores: list[tuple[ModelConfig, float]]
    folds: int


def select_config(texts: Sequence[str | bytes], labels: Sequence[FailureClass | int], groups: Sequence[str],
                  candidates: Sequence[ModelConfig] = CANDIDATE_CONFIGS, threshold: float = 0.6,
                  folds: int = 3, seed: int = 0) -> Selection:
    """Choose a configuration by cross-validation *within* the given logs, grouped by family.

    Each candidate is trained on some groups and scored (macro-F1, answers below
    `threshold` counted as UNKNOWN) on the groups it did not see, so the choice
    rewards generalising to unseen families. Call it with the training part of an
    outer split only: the outer test families must never reach it. Ties keep the
    earlier (simpler) candidate.
    """
    if len(groups) != len(texts) or len(labels) != len(texts):
        raise InvalidArgument("groups", f"need one label and one group per text: {len(texts)} texts, "
                                        f"{len(labels)} labels, {len(groups)} groups")
    if len(set(groups)) < folds:
        raise InvalidArgument("groups", f"need at least {folds} distinct groups, got {len(set(groups))}")
    y = np.array([int(FailureClass(label)) for label in labels])
    splits = list(GroupKFold(n_splits=folds).split(np.zeros(len(y)), y, groups=list(groups)))
    scores: list[tuple[ModelConfig, float]] = []
    for candidate in candidates:
        config = ModelConfig(**{**candidate.__dict__, "seed": seed})
        fold_scores = []
        for train, test in splits:
            inner_groups = [groups[i] for i in train]
            try:
                model = FailureModel(config).fit([texts[i] for i in train], [labels[i] for i in train],
                                                 groups=inner_groups)
            except InvalidArgument:
                continue  # a class too rare in this inner fold: skip the fold
            predicted = [int(c) if p >= threshold else int(FailureClass.UNKNOWN)
                         for c, p in model.predict_many([texts[i] for i in test])]
            fold_scores.append(f1_score(y[test], predicted, average="macro", labels=sorted(set(y[test])),
                                        zero_division=0))
        scores.append((config, float(np.mean(fold_scores)) if fold_scores else 0.0))
    best = max(range(len(scores)), key=lambda i: (scores[i][1], -i))
    return Selection(scores[best][0], scores, folds)


def train_default_model(seed: int = 0, samples_per_family: int = 24) -> FailureModel:
    """A model trained on the project's synthetic corpus (every class, every toolchain).

    About 2-4 s on one core. The service calls this at start when it has no stored model.
    """
    from bench.corpus import generate_corpus  # the corpus generator is only needed here

    samples = generate_corpus(seed=seed, samples_per_family=samples_per_family)
    return FailureModel(ModelConfig(seed=seed)).fit([s.text for s in samples], [s.failure_class for s in samples],
                                                    groups=[s.family for s in samples])


def load_default_model(cache_path: str | Path | None = None) -> FailureModel:
    """The stored model at `cache_path` if there is a valid one; otherwise a freshly trained
    default model, saved there when a path is given (so the next start is instant)."""
    if cache_path is not None and Path(cache_path).exists():
        try:
            return FailureModel.load(cache_path)
        except (ValueError, OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            log.warning("stored failure model %s unusable (%s); training the default model", cache_path, exc)
    model = train_default_model()
    if cache_path is not None:
        model.save(cache_path)
    return model
