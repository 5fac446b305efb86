"""The learned classifier: names the failure class where the patterns are unsure.

Only the informative part of a log is read: its last lines (CI jobs stop at the
first failing step, so the cause is near the end) and the error-looking lines of
its last 32 KiB. Lines are normalised (colours, timestamps, numbers, paths
masked) and split into word tokens (camelCase and snake_case split, so
`OutOfMemoryError` and `out of memory` share words). Beside the words the model
reads *features* the detector has already computed: the failing step's command
words, its framing and exit code, and which knowledge-base patterns matched
(`kb:<pattern id>`, `kbclass:<class>`), so it learns how far each tool format can
be trusted. TF-IDF over those tokens feeds a multinomial logistic regression whose
probabilities are calibrated (CalibratedClassifierCV, sigmoid, folds grouped by
source so the probabilities are honest about logs unlike the training ones).

Training uses scikit-learn; running does not. A trained model is *compiled* to
plain arrays (vocabulary, idf, weights, the calibration sigmoids) and that is
what predicts, what is saved and what is loaded: a gzip'd JSON document, which
loading cannot make run code (no pickle), and which needs only numpy to apply,
so `python -m services.detector.diagnose` does not pay scikit-learn's import.
`FailureModel.reference_proba` keeps scikit-learn's own answer for tests that
cross-check the compiled arithmetic.

Nothing is loaded at import.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import re2

from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass
from services.detector.templates import normalise_line

log = logging.getLogger(__name__)

MODEL_FORMAT = "healing-guard/failure-model/v2"

# RE2 (linear time, ~100x faster than `re` on this alternation): scanning 32 KiB is ~0.1 ms.
_ERROR_LOOKING = re2.compile(
    r"(?i)error|fail|fatal|denied|exception|panic|killed|timed? ?out|refused|unable|cannot|could not|"
    r"not found|no space|traceback|abort|forbidden|unauthori[sz]ed|invalid|flak|rerun|retr(?:y|ied)|"
    r"exceeded|\bE\d{3,4}\b|✘|✖|\bwarn|exited with|exit code|offenses?|violations?"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]+")
# Features travel in the document after this separator line, one per line, verbatim.
_FEATURES = "\n\x1ffeatures\x1f\n"


@dataclass(frozen=True)
class ModelConfig:
    tail_bytes: int = 32 * 1024
    tail_lines: int = 15
    max_error_lines: int = 80
    regularisation_c: float = 4.0
    calibration_folds: int = 3
    min_document_frequency: int = 2
    seed: int = 0


def informative_lines(text: str | bytes, config: ModelConfig = ModelConfig()) -> list[str]:
    """The normalised lines the model reads: the last lines, then the error-looking lines.

    Bounded whatever the log's size: only the last `tail_bytes` are decoded and scanned,
    in one regex pass over the text rather than one per line.
    """
    if isinstance(text, bytes):
        tail = text[-config.tail_bytes:].decode("utf-8", errors="replace")
    else:
        tail = text[-config.tail_bytes:]
    if len(text) > config.tail_bytes:  # the first line is probably a fragment
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
    """Lower-case word tokens; camelCase split; masks (<NUM>, <PATH>...) kept as words.

    Feature lines (after the features separator) are tokens as they stand."""
    text, _, features = document.partition(_FEATURES)
    words = [w.lower() for word in _WORD.findall(text) for w in _CAMEL.split(word) if len(w) > 1]
    return words + [f for f in features.split("\n") if f]


def make_document(text: str | bytes, features: Sequence[str] = (), config: ModelConfig = ModelConfig()) -> str:
    """What the model reads of one log: its informative lines, then the detector's features."""
    body = "\n".join(informative_lines(text, config))
    clean = [f.strip().lower().replace("\n", " ") for f in features if f and f.strip()]
    return body + _FEATURES + "\n".join(clean) if clean else body


@dataclass
class TrainingReport:
    samples: int
    classes: list[str]
    seconds: float
    created_at: float = field(default_factory=time.time)
    # What the artefact was trained on and how it scored on data it never saw (filled by the builder).
    data: dict[str, Any] = field(default_factory=dict)
    held_out: dict[str, Any] = field(default_factory=dict)


def _encode(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f8").tobytes()).decode("ascii")


def _decode(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8").reshape(shape)


@dataclass(frozen=True)
class CompiledModel:
    """A trained model as plain arrays: TF-IDF (sublinear tf, l2) -> linear scores ->
    one sigmoid per class -> normalised. Exactly scikit-learn's arithmetic, without it."""

    classes: tuple[FailureClass, ...]
    vocabulary: dict[str, int]
    idf: np.ndarray  # (V,)
    weights: np.ndarray  # (C, V)
    intercepts: np.ndarray  # (C,)
    sigmoid_a: np.ndarray  # (C,)
    sigmoid_b: np.ndarray  # (C,)
    # Two classes: one row of weights scores the second class; the first gets the rest.
    binary: bool = False

    def proba(self, document: str) -> np.ndarray:
        counts = Counter(t for t in tokens(document) if t in self.vocabulary)
        if counts:
            index = np.fromiter((self.vocabulary[t] for t in counts), dtype=np.int64, count=len(counts))
            values = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * self.idf[index]
            values /= math.sqrt(float(values @ values))
            scores = self.weights[:, index] @ values + self.intercepts
        else:
            scores = self.intercepts.copy()
        calibrated = 1.0 / (1.0 + np.exp(self.sigmoid_a * scores + self.sigmoid_b))
        if self.binary:
            return np.array([1.0 - calibrated[0], calibrated[0]])
        total = float(calibrated.sum())
        if total <= 0.0:
            return np.full(len(self.classes), 1.0 / len(self.classes))
        return calibrated / total

    def to_dict(self) -> dict[str, Any]:
        words = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        return {"classes": [c.name for c in self.classes], "vocabulary": words,
                "idf": _encode(self.idf), "weights": _encode(self.weights), "intercepts": _encode(self.intercepts),
                "sigmoid_a": _encode(self.sigmoid_a), "sigmoid_b": _encode(self.sigmoid_b), "binary": self.binary}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompiledModel:
        classes = tuple(FailureClass[name] for name in data["classes"])
        words = list(data["vocabulary"])
        binary = bool(data.get("binary", False))
        c, v = 1 if binary else len(classes), len(words)
        return cls(classes, {w: i for i, w in enumerate(words)}, _decode(data["idf"], (v,)),
                   _decode(data["weights"], (c, v)), _decode(data["intercepts"], (c,)),
                   _decode(data["sigmoid_a"], (c,)), _decode(data["sigmoid_b"], (c,)), binary)


def _compile(vectorizer: Any, classifier: Any) -> CompiledModel:
    """The fitted TfidfVectorizer + CalibratedClassifierCV(ensemble=False) as arrays."""
    (calibrated,) = classifier.calibrated_classifiers_
    estimator = calibrated.estimator
    classes = tuple(FailureClass(int(c)) for c in classifier.classes_)
    coef, intercept = np.asarray(estimator.coef_, dtype=np.float64), np.asarray(estimator.intercept_, dtype=np.float64)
    a = np.array([float(cal.a_) for cal in calibrated.calibrators])
    b = np.array([float(cal.b_) for cal in calibrated.calibrators])
    vocabulary = {str(w): int(i) for w, i in vectorizer.vocabulary_.items()}
    return CompiledModel(classes, vocabulary, np.asarray(vectorizer.idf_, dtype=np.float64), coef, intercept, a, b,
                         binary=len(classes) == 2)


class FailureModel:
    """A calibrated classifier from log text (and detector features) to FailureClass."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        self.config = config
        self._compiled: CompiledModel | None = None
        self._reference: tuple[Any, Any] | None = None  # scikit-learn objects, only after fit()
        self.version: str = "untrained"
        self.report: TrainingReport | None = None

    @property
    def is_trained(self) -> bool:
        return self._compiled is not None

    @property
    def classes(self) -> list[FailureClass]:
        return list(self._compiled.classes) if self._compiled else []

    def fit(self, texts: Sequence[str | bytes], labels: Sequence[FailureClass | int],
            groups: Sequence[str] | None = None,
            features: Sequence[Sequence[str]] | None = None) -> FailureModel:
        """Train on logs and their classes; `groups` (e.g. a source per log) makes calibration
        hold out whole groups; `features` are the detector's features per log. Returns self."""
        if features is not None and len(features) != len(texts):
            raise InvalidArgument("features", f"need one feature list per text: {len(texts)} texts, "
                                              f"{len(features)} feature lists")
        documents = [make_document(t, features[i] if features is not None else (), self.config)
                     for i, t in enumerate(texts)]
        return self.fit_documents(documents, labels, groups)

    def fit_documents(self, documents: Sequence[str], labels: Sequence[FailureClass | int],
                      groups: Sequence[str] | None = None) -> FailureModel:
        """Train on documents already made by `make_document` (a stored training set)."""
        from sklearn.calibration import CalibratedClassifierCV  # noqa: PLC0415  (training only)
        from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
        from sklearn.model_selection import GroupKFold, StratifiedKFold  # noqa: PLC0415

        if len(documents) != len(labels):
            raise InvalidArgument("labels", f"need one label per text: {len(documents)} texts, {len(labels)} labels")
        if groups is not None and len(groups) != len(documents):
            raise InvalidArgument("groups", f"need one group per text: {len(documents)} texts, {len(groups)} groups")
        y = np.array([int(FailureClass(label)) for label in labels])
        distinct, counts = np.unique(y, return_counts=True)
        if len(distinct) < 2:
            raise InvalidArgument("labels", f"need at least 2 distinct classes, got {len(distinct)}")
        folds = self.config.calibration_folds
        if counts.min() < folds:
            rare = FailureClass(int(distinct[counts.argmin()])).name
            raise InvalidArgument("labels", f"every class needs >= {folds} examples; {rare} has {counts.min()}")
        started = time.perf_counter()
        vectorizer = TfidfVectorizer(analyzer=tokens, sublinear_tf=True, dtype=np.float64,
                                     min_df=min(self.config.min_document_frequency, len(documents)))
        x = vectorizer.fit_transform(documents)
        base = LogisticRegression(C=self.config.regularisation_c, max_iter=3000, class_weight="balanced",
                                  random_state=self.config.seed)
        cv: object
        if groups is not None and len(set(groups)) >= folds:
            cv = list(GroupKFold(n_splits=folds).split(x, y, groups=list(groups)))
        else:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.config.seed)
        # One model on all data, calibrated on out-of-fold predictions: one model to run per log.
        classifier = CalibratedClassifierCV(base, method="sigmoid", cv=cv, ensemble=False)
        classifier.fit(x, y)
        self._compiled = _compile(vectorizer, classifier)
        self._reference = (vectorizer, classifier)
        digest = hashlib.sha256(repr(self.config).encode())
        for doc, label in zip(documents, y, strict=True):
            digest.update(doc.encode())
            digest.update(int(label).to_bytes(2, "big"))
        self.version = f"fm2-{digest.hexdigest()[:12]}"
        self.report = TrainingReport(len(documents), [c.name for c in self._compiled.classes],
                                     time.perf_counter() - started)
        log.info("trained failure model %s on %d logs in %.1fs", self.version, len(documents), self.report.seconds)
        return self

    def _require(self) -> CompiledModel:
        if self._compiled is None:
            raise RuntimeError("FailureModel is not trained: call fit() or load() first")
        return self._compiled

    def predict_proba(self, text: str | bytes, features: Sequence[str] = ()) -> dict[FailureClass, float]:
        """Calibrated probability of every class the model knows."""
        return self.proba_of_document(make_document(text, features, self.config))

    def proba_of_document(self, document: str) -> dict[FailureClass, float]:
        compiled = self._require()
        return dict(zip(compiled.classes, map(float, compiled.proba(document)), strict=True))

    def predict_proba_many(self, texts: Sequence[str | bytes],
                           features: Sequence[Sequence[str]] | None = None) -> list[dict[FailureClass, float]]:
        return [self.predict_proba(t, features[i] if features is not None else ()) for i, t in enumerate(texts)]

    def predict(self, text: str | bytes, features: Sequence[str] = ()) -> tuple[FailureClass, float]:
        """The most probable class and its probability."""
        probs = self.predict_proba(text, features)
        best = max(probs, key=probs.__getitem__)
        return best, probs[best]

    def predict_many(self, texts: Sequence[str | bytes],
                     features: Sequence[Sequence[str]] | None = None) -> list[tuple[FailureClass, float]]:
        return [self.predict(t, features[i] if features is not None else ()) for i, t in enumerate(texts)]

    def reference_proba(self, document: str) -> dict[FailureClass, float]:
        """scikit-learn's own probabilities for a document (only on a model fitted in this process)."""
        if self._reference is None:
            raise RuntimeError("reference_proba needs a model fitted in this process")
        vectorizer, classifier = self._reference
        row = classifier.predict_proba(vectorizer.transform([document]))[0]
        return {FailureClass(int(c)): float(p) for c, p in zip(classifier.classes_, row, strict=True)}

    # ------------------------------------------------------------------ persistence

    def to_bytes(self) -> bytes:
        compiled = self._require()
        payload = {"format": MODEL_FORMAT, "version": self.version, "config": asdict(self.config),
                   "report": asdict(self.report) if self.report else None, "model": compiled.to_dict()}
        return gzip.compress(json.dumps(payload, sort_keys=True).encode("utf-8"), mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes) -> FailureModel:
        """Load a saved model: JSON and arrays only, so a file from anywhere cannot run code."""
        try:
            payload = json.loads(gzip.decompress(data))
        except (OSError, EOFError, ValueError) as exc:
            raise ValueError(f"not a failure model of format {MODEL_FORMAT}: {exc}") from None
        if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"not a failure model of format {MODEL_FORMAT}: found {found!r}")
        try:
            model = cls(ModelConfig(**payload["config"]))
            model._compiled = CompiledModel.from_dict(payload["model"])
            report = payload.get("report")
            model.report = TrainingReport(**report) if report else None
            model.version = str(payload["version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"damaged failure model: {exc}") from None
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
    ModelConfig(regularisation_c=16.0),
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
    """Choose a configuration by cross-validation *within* the given logs, grouped by source.

    Each candidate is trained on some groups and scored (macro-F1, answers below
    `threshold` counted as UNKNOWN) on the groups it did not see, so the choice
    rewards generalising to unseen sources. Call it with the training part of an
    outer split only: the outer test groups must never reach it. Ties keep the
    earlier (simpler) candidate.
    """
    from sklearn.metrics import f1_score  # noqa: PLC0415
    from sklearn.model_selection import GroupKFold  # noqa: PLC0415

    if len(groups) != len(texts) or len(labels) != len(texts):
        raise InvalidArgument("groups", f"need one label and one group per text: {len(texts)} texts, "
                                        f"{len(labels)} labels, {len(groups)} groups")
    if len(set(groups)) < folds:
        raise InvalidArgument("groups", f"need at least {folds} distinct groups, got {len(set(groups))}")
    y = np.array([int(FailureClass(label)) for label in labels])
    splits = list(GroupKFold(n_splits=folds).split(np.zeros(len(y)), y, groups=list(groups)))
    scores: list[tuple[ModelConfig, float]] = []
    for candidate in candidates:
        config = ModelConfig(**{**asdict(candidate), "seed": seed})
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


# The artefact `make model` builds (bench/build_model.py), committed with the code.
DEFAULT_MODEL_PATH = Path(__file__).parent / "models" / "failure-model.json.gz"


def load_default_model(path: str | Path | None = None) -> FailureModel:
    """The built model artefact (never trained here: `make model` builds it)."""
    target = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not target.exists():
        raise FileNotFoundError(2, "no failure model artefact; run `make model`", str(target))
    return FailureModel.load(target)


DEFAULT_TRAINING_SET_PATH = DEFAULT_MODEL_PATH.with_name("training-set.jsonl.gz")


@dataclass(frozen=True)
class TrainingDocument:
    document: str  # as make_document made it
    failure_class: FailureClass
    group: str  # the source it came from


def save_training_set(items: Sequence[TrainingDocument], path: str | Path = DEFAULT_TRAINING_SET_PATH) -> Path:
    """The documents the artefact was trained on (no raw logs), for tenants' retraining."""
    lines = [json.dumps({"document": i.document, "class": i.failure_class.name, "group": i.group}, sort_keys=True)
             for i in items]
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
    tmp.replace(target)
    return target


def load_training_set(path: str | Path = DEFAULT_TRAINING_SET_PATH) -> list[TrainingDocument]:
    target = Path(path)
    if not target.exists():
        return []
    rows = [json.loads(line) for line in gzip.decompress(target.read_bytes()).decode("utf-8").splitlines() if line]
    return [TrainingDocument(r["document"], FailureClass[r["class"]], r["group"]) for r in rows]
