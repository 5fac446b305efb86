"""Build the detector's model artefact: `make model` (python -m bench.build_model).

Trains the failure model the way bench.real_ci_eval scores it (the same documents, the
same augmentation, the same configuration), on every committed real source this time, and writes

  services/detector/models/failure-model.json.gz   the model (JSON + arrays; no pickle)
  services/detector/models/training-set.jsonl.gz   the documents it learned from, for
                                                   tenants' retraining (no raw logs)

The artefact records what it was trained on (sources, log counts, the sha256 of
labels.jsonl, the commit) and the held-out scores of the same recipe from
bench/results/real_ci_eval.json (run that first; without it the scores say "not measured").
The detector loads this file at start and never trains.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

from bench.real_ci import DEFAULT_ROOT, load_corpus, read_log
from bench.real_ci_eval import RESULTS, SEED, SYNTHETIC_PER_FAMILY, Example, _augmentation, _commit, _document, train
from services.common.vocabulary import FailureClass
from services.detector.diagnose import Diagnoser
from services.detector.model import (
    DEFAULT_MODEL_PATH,
    DEFAULT_TRAINING_SET_PATH,
    TrainingDocument,
    save_training_set,
)


def main() -> int:
    # Only logs committed here: a clean clone rebuilds the same artefact, and nothing derived
    # from logs without a redistribution licence (kept local for evaluation) ships in it.
    corpus = load_corpus(DEFAULT_ROOT, include_local=False)
    patterns = Diagnoser(confidence_threshold=0.6)
    examples = [Example(log, FailureClass[log.failure_class], patterns.diagnose(read_log(log) or b"\n"))
                for log in corpus]
    augmentation = _augmentation()
    model = train(examples, augmentation)
    assert model.report is not None
    labels = DEFAULT_ROOT / "labels.jsonl"
    model.report.data = {
        "real_logs": len(examples),
        "real_logs_per_source": dict(Counter(e.log.source for e in examples)),
        "labels_sha256": hashlib.sha256(labels.read_bytes()).hexdigest(),
        "augmentation": {"generated_per_family": SYNTHETIC_PER_FAMILY, "documents": len(augmentation[0]),
                         "seed": SEED},
        "commit": _commit(),
    }
    evaluation = RESULTS / "real_ci_eval.json"
    if evaluation.exists():
        data = json.loads(evaluation.read_text())
        model.report.held_out = {
            "split": data["split"],
            "commit": data.get("commit"),
            **{name: {k: v for k, v in s.items() if k in ("macro_f1", "accuracy", "unknown_rate",
                                                           "wrong_class_rate_among_confident")}
               for name, s in data["systems"].items()},
        }
    else:
        model.report.held_out = {"note": "not measured: run python -m bench.real_ci_eval first"}
    DEFAULT_MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    model.save(DEFAULT_MODEL_PATH)
    documents = [TrainingDocument(_document(e.patterns), e.truth, e.log.source) for e in examples]
    documents += [TrainingDocument(d, c, g) for d, c, g in zip(*augmentation, strict=True)]
    save_training_set(documents, DEFAULT_TRAINING_SET_PATH)
    size = Path(DEFAULT_MODEL_PATH).stat().st_size
    print(f"model {model.version}: {len(examples)} real logs + {len(augmentation[0])} augmentation documents, "
          f"{len(model.classes)} classes; wrote {DEFAULT_MODEL_PATH} ({size / 1024:.0f} KiB) "
          f"and {DEFAULT_TRAINING_SET_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
