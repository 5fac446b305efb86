"""Log templates: the constant part of a log line, with its variables masked.

Two lines that differ only in numbers, ids, paths or hosts share a template;
templates are what failure signatures, clusters and anomaly novelty are made of.
Mining is drain3's fixed-depth parse tree, in memory, over lines that were first
stripped of CI decoration (ANSI colours, runner timestamps, GitLab section
markers) and masked here, because masking before Drain is what keeps
"took 3.2s" and "took 41.0s" in one template instead of two.

CLI (a contract): `python -m services.detector.templates LOGFILE --json` prints one
`{"line": n, "template_id": id, "template": text}` per input line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drain3 import TemplateMiner as _DrainMiner
from drain3.template_miner_config import TemplateMinerConfig

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
_GITHUB_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z ")
# GitLab's collapsible sections: "section_start:1700000000:name\r\x1b[0K..." -> keep what follows.
_GITLAB_SECTION = re.compile(r"^section_(?:start|end):\d+:[\w.-]+(?:\[[^\]]*\])?\r?")

# Order matters: wider shapes first, so a URL is not eaten piecewise as a path and numbers.
_MASKS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>()]+", re.I), "<URL>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<UUID>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<TIME>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<IP>"),
    (re.compile(r"(?:\b0x[0-9a-f]+\b)|(?:\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,}\b)", re.I), "<HEX>"),
    (re.compile(r"(?:[\w.@~-]*/)+[\w.@-]+\.[A-Za-z]\w{0,5}\b|(?:/[\w.@-]+){2,}/?"), "<PATH>"),
    (re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)*(?:[a-zA-Z]{1,3})?(?![\w])"), "<NUM>"),
]

# A line longer than this is data (a minified bundle, a base64 blob), not a message.
MAX_LINE_CHARS = 2000


def strip_decorations(line: str) -> str:
    """The text a person reads: no colour codes, runner timestamps or section markers."""
    line = _ANSI.sub("", line)
    line = _GITLAB_SECTION.sub("", line)
    line = _GITHUB_STAMP.sub("", line)
    return line.rstrip("\r\n")


def normalise_line(line: str) -> str:
    """Decorations stripped and variable parts masked (<NUM>, <HEX>, <PATH>, <URL>, ...)."""
    text = strip_decorations(line[:MAX_LINE_CHARS]).strip()
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return " ".join(text.split())


def _drain_config(similarity_threshold: float, depth: int) -> TemplateMinerConfig:
    config = TemplateMinerConfig()
    config.drain_sim_th = similarity_threshold
    config.drain_depth = depth
    config.parametrize_numeric_tokens = True
    # Masking is done by normalise_line; drain3's own masker would redo it slower.
    config.masking_instructions = []
    config.profiling_enabled = False
    return config


class TemplateMiner:
    """Online template mining over one stream of lines (in memory, no persistence).

    `add` learns; `match` only looks up. Template ids are stable for the life of the
    miner; a template's text may widen (a constant becomes `<*>`) as it sees more lines.
    """

    def __init__(self, similarity_threshold: float = 0.5, depth: int = 4) -> None:
        if not 0.0 < similarity_threshold <= 1.0:
            raise ValueError(f"similarity_threshold must be in (0, 1], got {similarity_threshold}")
        if depth < 3:
            raise ValueError(f"depth must be >= 3, got {depth}")
        self._drain = _DrainMiner(config=_drain_config(similarity_threshold, depth))

    def add(self, line: str) -> tuple[int, str]:
        """Learn from one raw log line; returns (template_id, template_text)."""
        normalised = normalise_line(line) or "<EMPTY>"
        result = self._drain.add_log_message(normalised)
        return int(result["cluster_id"]), str(result["template_mined"])

    def match(self, line: str) -> int | None:
        """The id of an existing template that fits the line, or None if it is new."""
        normalised = normalise_line(line) or "<EMPTY>"
        cluster = self._drain.match(normalised)
        return None if cluster is None else int(cluster.cluster_id)

    def template(self, template_id: int) -> str:
        cluster = self._drain.drain.id_to_cluster.get(template_id)
        if cluster is None:
            raise KeyError(f"template_id {template_id} is unknown to this miner")
        return str(cluster.get_template())

    def __len__(self) -> int:
        return len(self._drain.drain.clusters)


@dataclass(frozen=True)
class LineTemplate:
    line: int  # 1-based, as editors count
    template_id: int
    template: str


def mine_templates(lines: Iterable[str], miner: TemplateMiner | None = None) -> list[LineTemplate]:
    """Every line with its template, as the miner sees them after reading all lines.

    Two passes, so that lines read early report the final (widened) template, not
    the narrower one that existed when they were read.
    """
    miner = miner or TemplateMiner()
    ids = [miner.add(line)[0] for line in lines]
    final = {tid: miner.template(tid) for tid in set(ids)}
    return [LineTemplate(n, tid, final[tid]) for n, tid in enumerate(ids, start=1)]


def grouping_accuracy(predicted: Sequence[object], truth: Sequence[object]) -> float:
    """Loghub's grouping accuracy: the share of lines whose predicted group holds
    exactly the lines of their true group (no more, no fewer)."""
    if len(predicted) != len(truth):
        raise ValueError(f"predicted has {len(predicted)} labels, truth has {len(truth)}")
    if not truth:
        return 1.0
    by_pred: dict[object, set[int]] = {}
    by_true: dict[object, set[int]] = {}
    for i, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        by_pred.setdefault(p, set()).add(i)
        by_true.setdefault(t, set()).add(i)
    correct = sum(len(members) for members in by_true.values()
                  if by_pred[predicted[next(iter(members))]] == members)
    return correct / len(truth)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.detector.templates",
                                     description="Mine log templates (drain3) from a log file.")
    parser.add_argument("logfile", help="path of the log, or - for standard input")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {line, template_id, template}")
    parser.add_argument("--similarity", type=float, default=0.5, help="Drain similarity threshold (0, 1]")
    args = parser.parse_args(argv)
    try:
        if args.logfile == "-":
            text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        else:
            with open(args.logfile, "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
        rows = mine_templates(text.splitlines(), TemplateMiner(similarity_threshold=args.similarity))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump([{"line": r.line, "template_id": r.template_id, "template": r.template} for r in rows],
                  sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        for r in rows:
            print(f"{r.line}\t{r.template_id}\t{r.template}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
