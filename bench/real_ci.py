"""Loader for the real-world CI log corpus in data/real_ci/ (stdlib only).

labels.jsonl has one object per job log; logs that may not be redistributed are not
committed ("committed": false, "path": "mirror:...") and are read from data/real_ci/local/
once data/real_ci/materialise_local.py has copied them there. See data/real_ci/LABELLING.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "data" / "real_ci"


@dataclass(frozen=True)
class RealLog:
    id: str
    source: str
    provider: str
    failure_class: str  # a services.common.vocabulary.FailureClass name
    label_confidence: str  # "high" | "medium" | "low"
    decisive_lines: tuple[int, ...]  # 1-based, in the file at `path`
    path: Path
    committed: bool
    decisive_lines_by: str = "source"  # "source" (the source marks them) or "labeller"


@dataclass(frozen=True)
class ToolSample:
    path: Path
    source: str
    tool: str
    failure_class: str
    license: str


def local_path(root: Path, mirror_path: str) -> Path:
    """Where materialise_local.py puts an uncommitted log given as 'mirror:<owner+name>/<path>'."""
    rest = mirror_path.removeprefix("mirror:")
    return root / "local" / rest


def read_labels(root: Path = DEFAULT_ROOT) -> list[dict]:
    text = (root / "labels.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_corpus(root: Path = DEFAULT_ROOT, include_local: bool = True) -> list[RealLog]:
    """Every labelled log whose bytes are available here.

    Uncommitted logs are included only if include_local and they have been materialised;
    the others are skipped (and counted in a log message)."""
    out: list[RealLog] = []
    skipped = 0
    for e in read_labels(root):
        if e["committed"]:
            path = root / e["path"]
        else:
            path = local_path(root, e["path"])
            if not include_local or not path.exists():
                skipped += 1
                continue
        out.append(
            RealLog(
                id=e["id"],
                source=e["source"],
                provider=e["provider"],
                failure_class=e["failure_class"],
                label_confidence=e["label_confidence"],
                decisive_lines=tuple(e["decisive_lines"]),
                path=path,
                committed=e["committed"],
                decisive_lines_by=e.get("decisive_lines_by", "source"),
            )
        )
    if skipped:
        log.info("real_ci: skipped %d uncommitted log(s) that are not materialised in %s", skipped, root / "local")
    return out


def read_log(log_: RealLog) -> bytes:
    return log_.path.read_bytes()


def load_tools(root: Path = DEFAULT_ROOT) -> list[ToolSample]:
    p = root / "tools.jsonl"
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        out.append(
            ToolSample(
                path=root / e["path"],
                source=e["source"],
                tool=e["tool"],
                failure_class=e["failure_class"],
                license=e["license"],
            )
        )
    return out
