"""Log templates: the constant part of a log line, with its variables masked.

Two lines that differ only in numbers, ids, paths or hosts share a template;
templates are what failure signatures, clusters and anomaly novelty are made of.

How a line becomes a template, with one configuration for every input:

1. **Decorations** go: ANSI colours, runner timestamps, GitLab section markers.
2. **Variable shapes** are masked (`mask_tokens`): the multi-word shapes first
   (timestamps such as ``2017-05-16 05:00:00`` or ``Fri Jun 17 07:07:00 2005``),
   then each whitespace token is split into its surrounding punctuation and its
   core, and the core is classified: URL, UUID, IPv4/IPv6 (with port), host:port,
   POSIX or Windows path, hex id, time of day, number (with a unit, ``12ms``,
   ``3.4MB``), any other token with a digit in it (an id such as
   ``Package_KB31~6.1.1.0``). ``key=value`` and ``key:value`` keep the key and
   classify the value. A core with no digit and no path or address shape is a
   word and stays: words are what tell two messages apart.
3. **Mining** (`TemplateMiner`) groups lines by their *skeleton*: the masked
   tokens that still carry a word (``uid=<NUM>`` keeps ``uid=``), in order, with
   tokens that are only placeholders and punctuation dropped. Dropping them is what
   copes with variable-length messages: ``sent 0 bytes`` and ``sent 12 bytes
   (1.2 KB)`` are one message whose variable part took one token or three. A
   skeleton is a dictionary look-up (the fast path; no similarity threshold that
   splits one message or merges two). The variables left are words, found by
   *position cardinality*: skeletons of one length that agree everywhere but at one
   position, where at least `min_distinct` different words were seen, are one
   template with ``<*>`` there. Fewer values (``user=root`` / ``user=guest``,
   ``VM Started`` / ``VM Paused``) stay apart, because that is how such words
   usually differ in meaning. Drain (drain3, pinned, still the baseline in
   `bench/loghub_grouping.py`) was the miner before: its fixed depth and
   similarity threshold merged messages that differ in one meaningful word and
   split one message whose variable part changes its length.

Template ids are stable for the life of a miner; when two templates turn out to
be one, the later id resolves to the earlier (`resolve`).

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

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
_GITHUB_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z ")
# GitLab's collapsible sections: "section_start:1700000000:name\r\x1b[0K..." -> keep what follows.
_GITLAB_SECTION = re.compile(r"^section_(?:start|end):\d+:[\w.-]+(?:\[[^\]]*\])?\r?")

# A line longer than this is data (a minified bundle, a base64 blob), not a message.
MAX_LINE_CHARS = 2000
WILDCARD = "<*>"

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*"
# Shapes that span spaces, replaced before the line is split into tokens.
_LINE_SHAPES: list[tuple[re.Pattern[str], str]] = [
    # 2017-05-16 05:00:00,123 / 2016/9/27:20:30:31.455 / 2025-03-11T10:09:44Z
    (re.compile(r"(?<![\w/.-])\d{4}[-/]\d{1,2}[-/]\d{1,2}(?:[T :]\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?)?"
                r"(?:Z|[+-]\d{2}:?\d{2})?(?![\w/])"), "<TIME>"),
    # Fri Jun 17 07:07:00 2005 / Jun 17 07:07:00 / 17 Jun 2005 07:07:00
    (re.compile(rf"\b(?:{_DAY},? )?{_MONTH} +\d{{1,2}},? (?:\d{{4}} )?\d{{1,2}}:\d{{2}}(?::\d{{2}})?(?:[.,]\d+)?"
                rf"(?: [A-Z]{{3,4}})?(?: \d{{4}})?\b"), "<TIME>"),
    (re.compile(rf"\b(?:{_DAY},? )?\d{{1,2}} {_MONTH} \d{{4}}(?: \d{{1,2}}:\d{{2}}(?::\d{{2}})?)?\b"), "<TIME>"),
    # A number and its unit, spaced: "3.4 MB", "1302 ms", "<1 sec" (glued units are a token shape).
    (re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)? (?:[KMGTP]i?B|[kKMGT]b|B|bytes|ms|us|µs|ns|s|secs?|seconds?"
                r"|mins?|minutes?|h|hrs?|hours?|days?|%)(?![\w.])"), "<NUM>"),
    # Dot leaders ("illegal instruction......0"): what follows is a value, not part of the word.
    (re.compile(r"(\.{3,})(?=\S)"), r"\1 "),
]

_OPEN = "([{<\"'`"
_CLOSE = ")]}>\"'`,;:.!?"
_TOKEN_SHAPES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.I), "<URL>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<UUID>"),
    (re.compile(r"(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?"), "<IP>"),
    (re.compile(r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?"), "<TIME>"),
    (re.compile(r"\[?(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?:%\w+)?\]?(?::\d{1,5})?", re.I), "<IP>"),
    (re.compile(r"(?:[A-Za-z]:\\|\\\\)[^\s]*|(?:[\w.@~+-]*/)+[\w.@~+*-]+/?(?::\d+)*|/"), "<PATH>"),
    (re.compile(r"[\w.-]+\.[A-Za-z]{2,}:\d{1,5}"), "<HOST>"),
    (re.compile(r"0x[0-9a-f]+|(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,}", re.I), "<HEX>"),
    (re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:[a-zA-Zµ%]{1,7})?|[-+]?\.\d+|\d+(?:h|m|min|s|ms)(?:\d+(?:m|s|ms))+"),
     "<NUM>"),
]
_QUOTES = "'\"`"
_EMPTY_PAIRS = {"()", "[]", "{}", "<>", "''", '""'}
_HAS_DIGIT = re.compile(r"\d")
_PAIR = re.compile(r"([A-Za-z_][\w.-]*)([=:])(.+)")
_CACHE_LIMIT = 200_000
_token_cache: dict[str, str] = {}
# Masked tokens that carry a constant (a word, a key): the skeleton a template is matched on.
_WORDS: set[str] = set()
_NOT_WORDS: set[str] = set()
_PLACEHOLDER = re.compile(r"<[A-Z]+>|<\*>")
_PUNCTUATION = set(_OPEN + _CLOSE + "-=#*@/\\|~^+&$%")
MIN_DISTINCT = 4
# A word is only widened to <*> when the template keeps this many words besides it:
# two one-word messages are two messages, however many of them there are.
MIN_WORDS_TO_WIDEN = 2


def strip_decorations(line: str) -> str:
    """The text a person reads: no colour codes, runner timestamps or section markers."""
    line = _ANSI.sub("", line)
    line = _GITLAB_SECTION.sub("", line)
    line = _GITHUB_STAMP.sub("", line)
    return line.rstrip("\r\n")


def _classify_core(core: str) -> str:
    """The placeholder for one token core, or the core itself if it is a word."""
    if core[0] == "<" and core[-1] == ">" and core[1:-1].isupper() or core == WILDCARD:
        return core
    for pattern, mask in _TOKEN_SHAPES:
        if pattern.fullmatch(core):
            return mask
    pair = _PAIR.fullmatch(core)
    if pair is not None:
        key, sep, value = pair.groups()
        if sep == "=" or _HAS_DIGIT.search(value) or value.startswith(("/", "\\")):
            return f"{key}{sep}{_mask_token(value)}"
    if _HAS_DIGIT.search(core) is not None:
        return "<ID>"
    return core


def _mask_token(token: str) -> str:
    cached = _token_cache.get(token)
    if cached is not None:
        return cached
    if token == WILDCARD:
        return token
    core = token.lstrip(_OPEN)
    head = token[: len(token) - len(core)]
    stripped = core.rstrip(_CLOSE)
    tail, core = core[len(stripped):], stripped
    if core and head and tail and head[-1] in _QUOTES and tail[0] == head[-1]:
        masked = head + "<STR>" + tail  # a quoted single word is a value: 'widget', "main"
    elif core:
        masked = head + _classify_core(core) + tail
    elif head and tail and head[-1] + tail[0] in _EMPTY_PAIRS:
        masked = head + WILDCARD + tail  # "()", "''": a value that happens to be empty
    else:
        masked = token
    if len(_token_cache) >= _CACHE_LIMIT:
        _token_cache.clear()
        _WORDS.clear()
        _NOT_WORDS.clear()
    _token_cache[token] = masked
    return masked


def mask_tokens(line: str) -> list[str]:
    """The line's tokens with their variable parts masked (<NUM>, <IP>, <PATH>, <*>...)."""
    text = strip_decorations(line[:MAX_LINE_CHARS])
    for pattern, mask in _LINE_SHAPES:
        text = pattern.sub(mask, text)
    return [_mask_token(token) for token in text.split()]


def _is_word(token: str) -> bool:
    if token in _WORDS:
        return True
    if token in _NOT_WORDS:
        return False
    rest = _PLACEHOLDER.sub("", token) if token != WILDCARD else "x"
    word = not set(rest) <= _PUNCTUATION
    (_WORDS if word else _NOT_WORDS).add(token)
    return word


def _skeleton(tokens: Sequence[str]) -> tuple[str, ...]:
    """The constant words of a masked line, in order: variables of any number and kind dropped."""
    return tuple(t for t in tokens if _is_word(t)) or (WILDCARD,)


def normalise_line(line: str) -> str:
    """Decorations stripped and variable parts masked (<NUM>, <HEX>, <PATH>, <URL>, ...)."""
    return " ".join(mask_tokens(line))


class TemplateMiner:
    """Online template mining over one stream of lines (in memory, no persistence).

    `add` learns; `match` only looks up. Template ids are stable for the life of the
    miner (a merged id resolves to the surviving one, `resolve`); a template's text
    may widen (a word becomes `<*>`) as the miner sees more lines.
    """

    def __init__(self, min_distinct: int = MIN_DISTINCT, similarity_threshold: float = 0.5, depth: int = 4) -> None:
        # similarity_threshold and depth are accepted for callers written against the
        # Drain-based miner; position cardinality has neither.
        if not 0.0 < similarity_threshold <= 1.0:
            raise ValueError(f"similarity_threshold must be in (0, 1], got {similarity_threshold}")
        if depth < 3:
            raise ValueError(f"depth must be >= 3, got {depth}")
        if min_distinct < 2:
            raise ValueError(f"min_distinct must be >= 2, got {min_distinct}")
        self.min_distinct = min_distinct
        self._exact: dict[tuple[str, ...], int] = {}
        self._by_skeleton: dict[tuple[str, ...], int] = {}
        self._skeletons: dict[int, list[str]] = {}
        self._texts: dict[int, list[str]] = {}
        self._word_at: dict[int, list[int]] = {}  # skeleton position -> index in the text
        self._merged_into: dict[int, int] = {}
        self._wild_by_length: dict[int, list[int]] = {}
        # (skeleton length, position, the other words) -> {word at that position: template id}
        self._by_gap: dict[tuple[int, int, tuple[str, ...]], dict[str, int]] = {}
        self._next_id = 1

    def add(self, line: str) -> tuple[int, str]:
        """Learn from one raw log line; returns (template_id, template_text)."""
        tokens = tuple(mask_tokens(line)) or ("<EMPTY>",)
        tid = self._exact.get(tokens)
        if tid is None:
            tid = self._learn(tokens)
            self._exact[tokens] = tid
        else:
            tid = self.resolve(tid)
        return tid, " ".join(self._texts[tid])

    def match(self, line: str) -> int | None:
        """The id of an existing template that fits the line, or None if it is new."""
        tokens = tuple(mask_tokens(line)) or ("<EMPTY>",)
        tid = self._exact.get(tokens)
        if tid is not None:
            return self.resolve(tid)
        skeleton = _skeleton(tokens)
        tid = self._by_skeleton.get(skeleton)
        return self.resolve(tid) if tid is not None else self._fitting(skeleton)

    def resolve(self, template_id: int) -> int:
        """The id a template is known by now (itself, unless it was merged into another)."""
        while template_id in self._merged_into:
            template_id = self._merged_into[template_id]
        return template_id

    def template(self, template_id: int) -> str:
        tokens = self._texts.get(self.resolve(template_id))
        if tokens is None:
            raise KeyError(f"template_id {template_id} is unknown to this miner")
        return " ".join(tokens)

    def __len__(self) -> int:
        return len(self._texts)

    def _fitting(self, skeleton: tuple[str, ...]) -> int | None:
        for tid in self._wild_by_length.get(len(skeleton), ()):
            template = self._skeletons[tid]
            if all(t == WILDCARD or t == s for t, s in zip(template, skeleton, strict=True)):
                return tid
        return None

    def _learn(self, tokens: tuple[str, ...]) -> int:
        skeleton = _skeleton(tokens)
        known = self._by_skeleton.get(skeleton)
        if known is not None:
            return self.resolve(known)
        tid = self._fitting(skeleton)
        if tid is not None:
            self._by_skeleton[skeleton] = tid
            return tid
        tid, self._next_id = self._next_id, self._next_id + 1
        self._by_skeleton[skeleton] = tid
        self._skeletons[tid] = list(skeleton)
        self._texts[tid] = list(tokens)
        self._word_at[tid] = [i for i, t in enumerate(tokens) if _is_word(t)]
        if WILDCARD in skeleton:
            self._wild_by_length.setdefault(len(skeleton), []).append(tid)
        n = len(skeleton)
        for position, word in enumerate(skeleton if n >= MIN_WORDS_TO_WIDEN else ()):
            if word == WILDCARD:
                continue
            key = (n, position, skeleton[:position] + skeleton[position + 1:])
            seen = self._by_gap.setdefault(key, {})
            seen.setdefault(word, tid)
            if len(seen) >= self.min_distinct:
                tid = self._widen(tid, position, {self.resolve(t) for t in seen.values()})
        return tid

    def _widen(self, tid: int, position: int, members: set[int]) -> int:
        """Merge `members` (skeletons differing only at `position`) into the oldest, `<*>` there."""
        members.add(tid)
        keep = min(members)
        skeleton = self._skeletons[keep]
        widened = {position}
        for other in members - {keep}:
            other_skeleton = self._skeletons.pop(other)
            del self._texts[other], self._word_at[other]
            widened.update(i for i, (a, b) in enumerate(zip(skeleton, other_skeleton, strict=True)) if a != b)
            self._merged_into[other] = keep
            wild = self._wild_by_length.get(len(skeleton), [])
            if other in wild:
                wild.remove(other)
        for i in widened:
            skeleton[i] = WILDCARD
            if i < len(self._word_at[keep]):
                self._texts[keep][self._word_at[keep][i]] = WILDCARD
        wild = self._wild_by_length.setdefault(len(skeleton), [])
        if keep not in wild:
            wild.append(keep)
        return keep


@dataclass(frozen=True)
class LineTemplate:
    line: int  # 1-based, as editors count
    template_id: int
    template: str


def mine_templates(lines: Iterable[str], miner: TemplateMiner | None = None) -> list[LineTemplate]:
    """Every line with its template, as the miner sees them after reading all lines.

    Two passes, so that lines read early report the final (merged, widened)
    template, not the narrower one that existed when they were read.
    """
    miner = miner or TemplateMiner()
    ids = [miner.add(line)[0] for line in lines]
    final_ids = {tid: miner.resolve(tid) for tid in set(ids)}
    final = {tid: miner.template(tid) for tid in set(final_ids.values())}
    return [LineTemplate(n, final_ids[tid], final[final_ids[tid]]) for n, tid in enumerate(ids, start=1)]


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
                                     description="Mine log templates from a log file.")
    parser.add_argument("logfile", help="path of the log, or - for standard input")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {line, template_id, template}")
    parser.add_argument("--min-distinct", type=int, default=3,
                        help="distinct words seen at one position before it becomes <*> (>= 2)")
    parser.add_argument("--similarity", type=float, default=0.5, help=argparse.SUPPRESS)  # kept for old scripts
    args = parser.parse_args(argv)
    try:
        if args.logfile == "-":
            text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        else:
            with open(args.logfile, "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
        miner = TemplateMiner(min_distinct=args.min_distinct, similarity_threshold=args.similarity)
        rows = mine_templates(text.splitlines(), miner)
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
