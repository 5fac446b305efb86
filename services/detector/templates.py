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
   classify the value. A compound name keeps its names and masks its parts
   (``a.py::test_x[<ID>]``, ``pkg.Cls.m(<HOST>)``, ``Exception(<PATH>)``). A core
   with no digit and no path or address shape is a word and stays, quoted or not:
   words are what tell two messages apart.
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
   usually differ in meaning; but a word right after a noun that names a value
   (``for user cyrus``, ``on host alpha``) varies after `MIN_DISTINCT_AFTER_KEY` (2).
   Drain (drain3, pinned, still the baseline in
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
from collections.abc import Callable, Iterable, Sequence
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
    # (Both month shapes start with a capital; saying so first lets the scan skip ahead.)
    (re.compile(rf"(?=[A-Z])\b(?:{_DAY},? )?{_MONTH} +\d{{1,2}},? (?:\d{{4}} )?\d{{1,2}}:\d{{2}}(?::\d{{2}})?"
                rf"(?:[.,]\d+)?(?: [A-Z]{{3,4}})?(?: \d{{4}})?\b"), "<TIME>"),
    (re.compile(rf"(?=[A-Z\d])\b(?:{_DAY},? )?\d{{1,2}} {_MONTH} \d{{4}}"
                rf"(?: \d{{1,2}}:\d{{2}}(?::\d{{2}})?)?\b"), "<TIME>"),
    # A number and its unit, spaced: "3.4 MB", "1302 ms", "<1 sec" (glued units are a token shape).
    (re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)? (?:[KMGTP]i?B|[kKMGT]b|B|bytes|ms|us|µs|ns|s|secs?|seconds?"
                r"|mins?|minutes?|h|hrs?|hours?|days?|%)(?![\w.])"), "<NUM>"),
    # Dot leaders ("illegal instruction......0"): what follows is a value, not part of the word.
    (re.compile(r"(\.{3,})(?=\S)"), r"\1 "),
]
_UNITS = (r"(?:[KMGTP]i?B|[kKMGT]b|B|bytes|ms|us|µs|ns|s|secs?|seconds?|mins?|minutes?|h|hrs?|hours?|days?|%)")
# What each line shape needs inside one whitespace token (`_line_shapes_through`): a date
# (`2017-05-16`), a month name ending the token (`Jun`, before its day), a unit starting
# it (`MB`, after its number), a dot leader.
_DATE_HINT = re.compile(r"\d{4}[-/]\d{1,2}[-/]\d")
_UNIT_HINT = re.compile(rf"{_UNITS}(?![\w.])")
_UNIT_FIRST = frozenset("KMGTPkBbmuµnshd%")
_MONTHS = frozenset("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())
_LOWER = "abcdefghijklmnopqrstuvwxyz"
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
# All token shapes in one pattern: a fullmatch of an alternation is the first alternative
# that spans the whole core, the same answer as trying them one by one, in one call.
_ANY_TOKEN_SHAPE = re.compile("|".join(
    f"(?P<s{i}>{'(?i:' if pattern.flags & re.I else '(?:'}{pattern.pattern}))"
    for i, (pattern, _) in enumerate(_TOKEN_SHAPES)))
_SHAPE_MASK = {f"s{i}": mask for i, (_, mask) in enumerate(_TOKEN_SHAPES)}
_NUMBER_START = frozenset("+-.0123456789")
_ALL_HEX = re.compile(r"[0-9a-fA-F]+")
_QUOTES = "'\"`"
_EMPTY_PAIRS = {"()", "[]", "{}", "<>", "''", '""'}
_HAS_DIGIT = re.compile(r"\d")
# Where a compound name splits: `::` and brackets always; a parenthesis after a qualified
# name (`pkg.Class.method(`, a stack frame), not after a bare word (`LOCAL(0)` is a value).
_COMPOUND = re.compile(r"(::|[\[\]])")
_CALL = re.compile(r"([A-Za-z_$][\w$]*(?:\.[\w$<>-]+)*)(\()(.+)")
# What a parenthesis after a bare word must hold for the word to be a name, not part of a value.
_WRAPPED_SHAPES = frozenset({"<PATH>", "<URL>", "<IP>", "<HOST>", "<UUID>", "<HEX>", "<TIME>"})
_PAIR = re.compile(r"([A-Za-z_][\w.-]*)([=:])(.+)")
_CACHE_LIMIT = 200_000
_token_cache: dict[str, str] = {}
# Raw token -> its masked form, or "" when it may be part of a line shape (`mask_tokens`),
# and then which shapes (`_shape_hints`).
_fast_cache: dict[str, str] = {}
_shape_hints: dict[str, tuple[int, ...]] = {}
# A token with its digits folded (`_FOLD_DIGITS`) -> its masked form, when that form has no digit
# (`_first_sight`).
_by_shape: dict[str, str] = {}
# The same for a whole line that may hold a line-wide shape (`mask_tokens`).
_line_by_shape: dict[str, tuple[str, ...]] = {}
# Every digit folds to 1. The one shape that names a digit is the `0x` of a hex number, so
# text holding "0x" (any case) is never cached by its folded form ("0x5" is hex, "1x2" is not).
_FOLD_DIGITS = str.maketrans("0123456789", "1111111111")


def _foldable(text: str) -> bool:
    return "0x" not in text and "0X" not in text
# Masked tokens that carry a constant (a word, a key): the skeleton a template is matched on.
_WORDS: set[str] = set()
_NOT_WORDS: set[str] = set()
_PLACEHOLDER = re.compile(r"<[A-Z]+>|<\*>")
_PUNCTUATION = set(_OPEN + _CLOSE + "-=#*@/\\|~^+&$%")
MIN_DISTINCT = 4
# A word right after a noun that names a value (`for user cyrus`, `on host alpha`,
# `device: sda`) is that value: two different ones are enough to see it vary.
MIN_DISTINCT_AFTER_KEY = 2
_VALUE_NOUNS = frozenset(
    "user users username uid gid pid host hostname port file filename path dir directory session job task "
    "container pod node instance volume device interface table database queue topic thread process package "
    "module account group domain client server peer address".split())
# A word is only widened to <*> when the template keeps this many words besides it:
# two one-word messages are two messages, however many of them there are.
MIN_WORDS_TO_WIDEN = 2


def reset_caches() -> None:
    """Forget every cached token (a benchmark's cold start; memory is bounded without it)."""
    for cache in (_token_cache, _fast_cache, _shape_hints, _by_shape, _line_by_shape, _WORDS, _NOT_WORDS):
        cache.clear()


def strip_decorations(line: str) -> str:
    """The text a person reads: no colour codes, runner timestamps or section markers."""
    # Each rule only where its first character can be: a regex scan costs more than a test.
    if "\x1b" in line:
        line = _ANSI.sub("", line)
    if line.startswith("section_"):
        line = _GITLAB_SECTION.sub("", line)
    if line[:1].isdigit():
        line = _GITHUB_STAMP.sub("", line)
    return line.rstrip("\r\n")


def _classify_core(core: str) -> str:
    """The placeholder for one token core, or the core itself if it is a word."""
    if core.isalpha():
        return core  # letters only: no shape has none of digits, ':', '/', '\\', '-', '.'
    if core.isdigit() and core.isascii():
        return "<NUM>"
    if (_HAS_DIGIT.search(core) is None and ":" not in core and "/" not in core and "\\" not in core
            and len(core) != 36 and "=" not in core):
        return core  # no digit, no address or path mark, not UUID-long: no shape, no pair, a word
    if core[0] == "<" and core[-1] == ">" and core[1:-1].isupper() or core == WILDCARD:
        return core
    # Every token shape has an address or path mark, or starts like a number, or is all
    # hex (a UUID too, when 36 long): a core with none of these skips the shapes' regex.
    if (":" in core or "/" in core or "\\" in core or core[0] in _NUMBER_START or len(core) == 36
            or _ALL_HEX.fullmatch(core)):
        shape = _ANY_TOKEN_SHAPE.fullmatch(core)
        if shape is not None:
            return _SHAPE_MASK[shape.lastgroup]  # type: ignore[index]
    pair = _PAIR.fullmatch(core)
    if pair is not None:
        key, sep, value = pair.groups()
        if sep == "=" or _HAS_DIGIT.search(value) or value.startswith(("/", "\\")):
            return f"{key}{sep}{_mask_token(value)}"
    digit = _HAS_DIGIT.search(core) is not None
    if digit or "/" in core or "\\" in core:
        # A compound name: each part masked on its own, so the names around the variable
        # part stay. `pkg.Class.method(Foo.java:42)` (a stack frame), `Exception(/x/y.spec)`:
        # the name and its masked argument (`LOCAL(0)` stays one value); `a.py::test_x[3]`,
        # `error[E0308`: split at `::` and brackets.
        call = _CALL.fullmatch(core)
        if call is not None:
            name, paren, argument = call.groups()
            masked_argument = _classify_core(argument)
            if "." in name or masked_argument in _WRAPPED_SHAPES:
                return name + paren + masked_argument
        parts = _COMPOUND.split(core)
        if len(parts) > 1:
            return "".join(part if i % 2 else _classify_core(part) if part else ""
                           for i, part in enumerate(parts))
    return "<ID>" if digit else core


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
    if core:
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


def _line_shapes_through(token: str) -> tuple[int, ...]:
    """The line shapes (`_LINE_SHAPES` indices) that could match through this whitespace token.

    A necessary condition only: a line none of whose tokens has one is masked token by
    token with no line-wide regex scan (the fast path), and a line-wide scan runs only
    the shapes some token allows; a shape that cannot match changes nothing, so the
    result is the same as running every shape on every line. String tests first: a
    regex search costs more than they do.
    """
    shapes: tuple[int, ...] = ()
    if ("-" in token or "/" in token) and _DATE_HINT.search(token):
        shapes += (0,)
    # A month name then lower-case letters to the end: the last capital starts it.
    capital = len(token.rstrip(_LOWER)) - 1
    if capital >= 0 and token[capital:capital + 3] in _MONTHS:
        shapes += (1, 2)
    if token[0] in _UNIT_FIRST and _UNIT_HINT.match(token):
        shapes += (3,)
    if "..." in token:
        shapes += (4,)
    return shapes


def _first_sight(token: str) -> str:
    """The masked token, or "" if the token may take part in a line shape; cached.

    Every decision masking makes (the shapes, the hints, `key=value`) sees a digit only
    as a digit, never which one, except the 0 of `0x` (`_foldable`); folding every digit
    to 1 keeps every length, so a token whose masked form has no digit left masks exactly
    as any token with the same folded form. Tokens are cached by that form too
    (``blk_-1608999687919862906`` -> ``blk_-1111111111111111111``): a new block id, port
    or count is then a look-up, not a classification.
    """
    shape = token.translate(_FOLD_DIGITS) if _foldable(token) else token
    if shape != token:
        masked = _by_shape.get(shape)
        if masked is not None:
            _fast_cache[token] = masked
            return masked
    hints = _line_shapes_through(token)
    if hints:
        _shape_hints[token] = hints
        masked = ""
    else:
        masked = _mask_token(token)
        if shape != token and _HAS_DIGIT.search(masked) is None:
            if len(_by_shape) >= _CACHE_LIMIT:
                _by_shape.clear()
            _by_shape[shape] = masked
    _fast_cache[token] = masked
    return masked


def mask_tokens(line: str) -> list[str]:
    """The line's tokens with their variable parts masked (<NUM>, <IP>, <PATH>, <*>...)."""
    return list(_masked(line))


def _masked(line: str, _cached: Callable[[str], str | None] = _fast_cache.get) -> tuple[str, ...]:
    """`mask_tokens` as a tuple, what the miner keys on (`_cached` is bound once: the caches
    are cleared, never replaced)."""
    text = line[:MAX_LINE_CHARS]
    # Decorations start with ESC, "section_" or a runner's "2024-05-01T..." stamp.
    if "\x1b" in text or text[4:5] == "-" and text[:4].isdigit() or text.startswith("section_"):
        text = strip_decorations(text)  # (else it is the line as it is: split ignores the line end)
    tokens = text.split()
    masked = tuple(map(_cached, tokens))
    if None in masked:
        if len(_fast_cache) >= _CACHE_LIMIT:
            _fast_cache.clear()
            _shape_hints.clear()
        masked = tuple([m if m is not None else _first_sight(t) for t, m in zip(tokens, masked, strict=True)])
    if "" not in masked:
        return masked  # type: ignore[return-value]  # every None was filled in above
    # A line-wide shape may match. By the argument of `_first_sight`, lines that differ
    # only in which digits they have mask alike when the result keeps no digit.
    shape = text.translate(_FOLD_DIGITS) if _foldable(text) else ""
    known = _line_by_shape.get(shape) if shape else None
    if known is not None:
        return known
    shapes = {i for t, m in zip(tokens, masked, strict=True) if not m
              for i in (_shape_hints.get(t) or _line_shapes_through(t))}
    for i, (pattern, mask) in enumerate(_LINE_SHAPES):
        if i in shapes:
            text = pattern.sub(mask, text)
    result = tuple([m or _mask_token(t) for t in text.split() for m in (_cached(t),)])
    if shape and _HAS_DIGIT.search(" ".join(result)) is None:
        if len(_line_by_shape) >= _CACHE_LIMIT:
            _line_by_shape.clear()
        _line_by_shape[shape] = result
    return result


def _is_word(token: str) -> bool:
    if token in _WORDS:
        return True
    if token in _NOT_WORDS:
        return False
    rest = _PLACEHOLDER.sub("", token) if token != WILDCARD else "x"
    word = not set(rest) <= _PUNCTUATION
    (_WORDS if word else _NOT_WORDS).add(token)
    return word


def _names_a_value(word: str) -> bool:
    """Whether a skeleton word is a noun naming the value after it (`user`, `host:`, `(pid`)."""
    return word.strip(_OPEN + _CLOSE + "=").lower() in _VALUE_NOUNS


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
        self._joined: dict[int, str] = {}  # template id -> its text, joined once per change
        self._word_at: dict[int, list[int]] = {}  # skeleton position -> index in the text
        self._merged_into: dict[int, int] = {}
        self._wild_by_length: dict[int, list[int]] = {}
        # (skeleton length, position, the other words) -> {word at that position: template id}
        self._by_gap: dict[tuple[int, int, tuple[str, ...]], dict[str, int]] = {}
        self._next_id = 1

    def add(self, line: str) -> tuple[int, str]:
        """Learn from one raw log line; returns (template_id, template_text)."""
        tokens = _masked(line) or ("<EMPTY>",)
        tid = self._exact.get(tokens)
        if tid is None:
            tid = self._learn(tokens)
            self._exact[tokens] = tid
        elif tid in self._merged_into:
            tid = self.resolve(tid)
        text = self._joined.get(tid)
        if text is None:
            text = self._joined[tid] = " ".join(self._texts[tid])
        return tid, text

    def match(self, line: str) -> int | None:
        """The id of an existing template that fits the line, or None if it is new."""
        tokens = _masked(line) or ("<EMPTY>",)
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
        word_at = self._word_at[tid]
        for position, word in enumerate(skeleton if n >= MIN_WORDS_TO_WIDEN else ()):
            if word == WILDCARD:
                continue
            key = (n, position, skeleton[:position] + skeleton[position + 1:])
            seen = self._by_gap.setdefault(key, {})
            seen.setdefault(word, tid)
            # The token right before it (not across a masked value) names a value, and the
            # words seen are not verbs of state (`Instance spawned` / `Instance destroyed`).
            after_key = position and word_at[position - 1] == word_at[position] - 1 \
                and _names_a_value(skeleton[position - 1]) and not any(w.endswith("ed") for w in seen)
            if len(seen) >= (MIN_DISTINCT_AFTER_KEY if after_key else self.min_distinct):
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
            self._joined.pop(other, None)
            widened.update(i for i, (a, b) in enumerate(zip(skeleton, other_skeleton, strict=True)) if a != b)
            self._merged_into[other] = keep
            wild = self._wild_by_length.get(len(skeleton), [])
            if other in wild:
                wild.remove(other)
        for i in widened:
            skeleton[i] = WILDCARD
            if i < len(self._word_at[keep]):
                self._texts[keep][self._word_at[keep][i]] = WILDCARD
        self._joined.pop(keep, None)
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
    parser.add_argument("--min-distinct", type=int, default=MIN_DISTINCT,
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
