"""Secret redaction: nothing a CI log leaks is stored, traced or shown.

The rule set is detect-secrets' maintained regex plugins (AWS, Azure storage,
GitHub, GitLab, Slack, Stripe, JWT, npm, PyPI, SendGrid, basic auth in URLs...)
adapted to RE2, plus what a CI log needs beyond them: multi-line private key
blocks, `*_TOKEN=` / `*_SECRET=` / `*_PASSWORD=` / `*_KEY=` assignments,
bearer headers, GCP and Azure credentials, and high-entropy values in
assignments. One RE2 alternation of every rule runs once over the whole text
(linear time); only the lines it flags are rewritten, rule by rule.

Each secret becomes `[REDACTED:<kind>]`. Line breaks are kept, so line numbers
of the redacted log are those of the original.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import cast

import re2

_PRIVATE_KEY_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY( BLOCK)?-----|PuTTY-User-Key-File-[0-9]+:")
_PRIVATE_KEY_END = re.compile(rb"-----END ([A-Z0-9 ]*)PRIVATE KEY( BLOCK)?-----|Private-MAC: [0-9a-f]+")
_REDACTED_KEY = b"[REDACTED:private_key]"
# A block with no END line is redacted to this many lines and then given up on.
MAX_PRIVATE_KEY_LINES = 200
MIN_ENTROPY_VALUE_LENGTH = 20
ENTROPY_THRESHOLD = 3.5  # bits per character over 20+ chars that mix lower, upper and digits; random base64 is ~4.3+
MASKED_VALUES = frozenset({"***", "xxx", "****", "<redacted>", "null", "none", "true", "false"})


@dataclass(frozen=True)
class RedactionRule:
    kind: str
    expression: str
    # Which capture group is the secret (0 = the whole match, trimmed of separators).
    group: int


@dataclass(frozen=True)
class RedactionResult:
    text: str
    count: int
    kinds: dict[str, int] = field(default_factory=dict)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


_WHOLE_MATCH_PLUGINS = {"GitHubTokenDetector", "GitLabTokenDetector", "NpmDetector"}
_SKIPPED_PLUGINS = {"IPPublicDetector", "PrivateKeyDetector"}


def _detect_secrets_rules() -> list[RedactionRule]:
    """detect-secrets' regex plugins, rewritten where RE2 lacks a construct.

    Lookbehind/lookahead only tighten the match boundaries there, so dropping
    them can only redact a little more, never less.
    """
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    rules = []
    # the library annotates the mapping's values with an unbound TypeVar (mypy reads it as Never)
    mapping = cast("dict[str, type]", get_mapping_from_secret_type_to_class())
    for secret_type, plugin in sorted(mapping.items()):
        if not issubclass(plugin, RegexBasedDetector) or plugin.__name__ in _SKIPPED_PLUGINS:
            continue
        # concrete plugins set denylist as a class attribute: a tuple of compiled patterns
        for regex in cast("Iterable[re.Pattern[str]]", plugin.denylist):
            expression = regex.pattern.replace("(?:(?<=\\W)|(?<=^))", "").replace("(?!\\w)", "")
            expression = re.sub(r"\{(\d+),(\d{4,})\}", lambda m: f"{{{m.group(1)},1000}}", expression)
            if regex.flags & re.IGNORECASE:
                expression = "(?i)" + expression
            group = 0 if plugin.__name__ in _WHOLE_MATCH_PLUGINS or regex.groups == 0 else 1
            rules.append(RedactionRule(_slug(secret_type), expression, group))
    return rules


_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*"
    r"(?:TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|PWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|_KEY|CREDENTIALS?|AUTH)"
    r"[A-Za-z0-9_]*"
)

_OWN_RULES = [
    RedactionRule("aws_access_key", r"\b(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}\b", 0),
    RedactionRule("aws_secret_key", r"(?i)aws_?secret_?(?:access_?)?key\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})\b", 1),
    RedactionRule("github_token", r"\bgithub_pat_[A-Za-z0-9_]{40,255}", 0),
    RedactionRule("github_token", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,255}", 0),
    RedactionRule("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}", 0),
    RedactionRule("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", 0),
    RedactionRule("gcp_api_key", r"\bAIza[0-9A-Za-z_-]{35}", 0),
    RedactionRule("gcp_oauth_secret", r"\bGOCSPX-[A-Za-z0-9_-]{28}", 0),
    RedactionRule("gcp_service_account_key", r"\"private_key_id\"\s*:\s*\"([0-9a-f]{40})\"", 1),
    RedactionRule("azure_client_secret", r"\b[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}", 0),
    RedactionRule("azure_sas_signature", r"(?i)[?&]sig=([A-Za-z0-9%+/=]{30,})", 1),
    RedactionRule("azure_connection_string", r"(?i)(?:AccountKey|SharedAccessKey)=([A-Za-z0-9+/=]{20,})", 1),
    RedactionRule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 0),
    RedactionRule(
        "bearer_token", r"(?i)\bauthorization\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+([A-Za-z0-9._~+/=-]{8,})", 1
    ),
    RedactionRule("url_password", r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\"']+:([^\s@/\"']+)@", 1),
    RedactionRule("secret_assignment", r"\b" + _SECRET_NAME + r"\b[\"']?\s*(?:=|:|:=|=>)\s*[\"']?([^\s\"',;]{3,})", 1),
    RedactionRule(
        "secret_assignment",
        r"(?i)\b(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|client[_-]?secret)"
        r"[\"']?\s*(?:=|:|:=|=>)\s*[\"']?([^\s\"',;]{6,})",
        1,
    ),
    RedactionRule("secret_flag", r"(?i)--(?:password|token|secret|api-key)[= ]([^\s\"']{4,})", 1),
    RedactionRule("high_entropy_value", r"\b[A-Za-z0-9_.-]+[\"']?\s*(?:=|:)\s*[\"']?([A-Za-z0-9+/_=-]{20,})", 1),
]


_UNANCHORED = re2._Anchor.UNANCHORED


@dataclass
class _CompiledRule:
    rule: RedactionRule
    regexp: re2._Regexp


@dataclass
class _RuleSet:
    rules: list[_CompiledRule]
    # Which rules can match a line: one RE2 set evaluation instead of ~50 searches.
    selector: re2.Set
    prefilter: re2._Regexp


_VALUE_CHAR = "[A-Za-z0-9+/_=-]"
_RANDOM_RUN = (  # noqa: UP032 -- {c} keeps the character class out of the way of the shape
    "{c}*(?:[A-Z]{c}*(?:[a-z]{c}*[0-9]|[0-9]{c}*[a-z])|[a-z]{c}*(?:[A-Z]{c}*[0-9]|[0-9]{c}*[A-Z])"
    "|[0-9]{c}*(?:[A-Z]{c}*[a-z]|[a-z]{c}*[A-Z]))"
).format(c=_VALUE_CHAR)

# Cheap triggers that every rule's match contains (a literal, a keyword, or the
# shape of a long token after "=" or ":"). One alternation of the full rules
# makes RE2's DFA too large to be fast; these keep the whole-text pass at DFA
# speed, and the full rules then run on the few lines flagged.
_TRIGGERS = [
    r"(?i)(?:token|secret|passw|pwd|passphrase|api_?key|access_?key|private_?key|_key|credential|auth|sig=|bearer|accountkey|cloudant|softlayer|ibm|cos)",
    r"A3T|AKIA|ASIA|ABIA|ACCA|gh[pousr]_|github_pat_|gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-|GR1348941|xox[abposr]-",
    r"hooks\.slack|eyJ|AIza|GOCSPX-|Q~|[rs]k_live_|SG\.|sq0csp-|pypi-Ag|npm_|T3BlbkFJ|AKC|AP[0-9A-F]",
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY|PuTTY-User-Key-File-|://[^\s/@]+:[^\s/@]+@",
    # The whole shape of the Twilio, Mailchimp, Telegram and Discord rules: shorter prefixes
    # flagged GitLab's "section_start:<epoch>:<name>" lines and long words, thousands per MiB.
    r"AC[a-z0-9]{32}|SK[a-z0-9]{32}|[0-9a-z]{32}-us[0-9]|[0-9]{8}:[0-9A-Za-z_-]{35}"
    r"|[MNO][a-zA-Z0-9_-]{23,25}\.[a-zA-Z0-9_-]{6}\.",
    # Keyword heads of the detect-secrets rules (AWS, Cloudant, SoftLayer) and of the
    # api-key/access-key spellings that the keyword trigger above does not name: each is a
    # substring of every match of its rule.
    r"(?i)aws.{0,20}?(?:key|pwd|pw|pass|token)|(?:cloudant|cl|clou)[_-]?(?:api)?(?:key|pwd|pw|pass|token)"
    r"|(?:softlayer|sl)[_-]?(?:api)?[_-]?(?:key|pwd|pass|token)|api-key|access-key",
    # A value the entropy rule could redact: after "=" or ":", a run of its characters that
    # mixes upper case, lower case and digits (`_looks_random` demands all three). Runs of
    # one case and digits (hex digests, "section_start:<epoch>:<name>", progress bars) do
    # not qualify, which spares a thousand lines per MiB of ordinary logs.
    r"[=:]\s*[\"']?" + _RANDOM_RUN,
]


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 128 << 20
    return options


@lru_cache(maxsize=1)
def _rule_set() -> _RuleSet:
    compiled = []
    selector = re2.Set.SearchSet(_options())
    for rule in _detect_secrets_rules() + _OWN_RULES:
        try:
            regexp = re2.compile(rule.expression, _options())
        except re2.error:
            # A future detect-secrets rule RE2 cannot express; our own rules cover the common kinds.
            continue
        selector.Add(rule.expression)
        compiled.append(_CompiledRule(rule, regexp))
    selector.Compile()
    prefilter_options = _options()
    prefilter_options.never_capture = True
    prefilter = re2.compile("|".join(f"(?:{t})" for t in _TRIGGERS).encode(), prefilter_options)
    return _RuleSet(compiled, selector, prefilter)


def shannon_entropy(value: str) -> float:
    counts = Counter(value)
    total = len(value)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


_HEX_ONLY = re.compile(r"[0-9a-fA-F-]+")
_LOWER, _UPPER, _DIGIT = re.compile(r"[a-z]"), re.compile(r"[A-Z]"), re.compile(r"[0-9]")


def _looks_random(value: str) -> bool:
    """A value worth redacting although no rule names it: long, mixed, high entropy.
    (Every condition must hold; the cheap ones are checked first.)"""
    if len(value) < MIN_ENTROPY_VALUE_LENGTH or "/" in value.strip("/") and value.count("/") > 2:
        return False
    if value.count("-") + value.count(".") + value.count("_") >= 3:
        return False  # dash-separated names (cache keys, image tags, versions), not random tokens
    if not (_UPPER.search(value) and _LOWER.search(value) and _DIGIT.search(value)):
        return False  # random tokens mix lower case, upper case and digits
    if _HEX_ONLY.fullmatch(value):
        return False  # commit shas, digests, UUIDs: ids the diagnosis needs, not secrets
    return shannon_entropy(value) >= ENTROPY_THRESHOLD


def _is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return (
        lowered in MASKED_VALUES
        or value.startswith(("$", "[REDACTED", "%", "{{", "<"))
        or set(value) <= set("*x•")
    )


def _redact_line(line: bytes, rules: _RuleSet, kinds: Counter[str]) -> bytes:
    """One line (UTF-8, no line break) with every rule that matches it applied."""
    # Named kinds first, the generic entropy rule last (it comes last in the list).
    for index in sorted(rules.selector._set.Match(line) or ()):
        line = _apply_bytes(line, rules.rules[index], kinds)
    return line


# Runs of the characters the entropy rule's value is made of (a possessive-free, linear
# pattern: a start inside a short run fails within 20 characters).
_VALUE_RUN = re.compile(rf"[A-Za-z0-9+/_=-]{{{MIN_ENTROPY_VALUE_LENGTH},}}")


def _may_hold_random_value(line: str) -> bool:
    """Cheap gate before the entropy rule: could any value it captures look random?

    The rule's value is a maximal run of its characters, or the part of such a run after
    an "=" in it; every one of those is checked here, so the gate never skips a value the
    rule would redact (it only spares the RE2 pass on lines of hashes, paths and names).
    """
    for run in _VALUE_RUN.finditer(line):
        value = run.group()
        if _looks_random(value):
            return True
        at = value.find("=")
        while at >= 0:
            if len(value) - at - 1 >= MIN_ENTROPY_VALUE_LENGTH and _looks_random(value[at + 1:]):
                return True
            at = value.find("=", at + 1)
    return False


def _apply(line: str, compiled: _CompiledRule, kinds: Counter[str]) -> str:
    """`line` with the matches of one rule replaced by `[REDACTED:<kind>]`."""
    return _apply_bytes(line.encode("utf-8", "surrogatepass"), compiled, kinds).decode("utf-8", "surrogatepass")


def _apply_bytes(line: bytes, compiled: _CompiledRule, kinds: Counter[str]) -> bytes:
    # RE2 on bytes directly: the re2 module's str API re-encodes the line and maps
    # offsets back on every match, which cost more than the matching itself.
    entropy = compiled.rule.kind == "high_entropy_value"
    if entropy and not _may_hold_random_value(line.decode("utf-8", "surrogatepass")):
        return line
    search = compiled.regexp._regexp.Match
    group = compiled.rule.group
    pieces: list[bytes] = []
    last, position, length = 0, 0, len(line)
    while position <= length:
        spans = search(_UNANCHORED, line, position, length)
        whole = spans[0]
        if whole[0] < 0:
            break
        position = whole[1] if whole[1] > whole[0] else whole[1] + 1
        start, end = spans[group] if spans[group][0] >= 0 else whole
        raw = line[start:end]
        if group == 0:
            stripped = raw.strip(b" \t=:\"'")
            start += raw.find(stripped)
            end = start + len(stripped)
            raw = stripped
        if not raw or start < last:
            continue
        secret = raw.decode("utf-8", "surrogatepass")
        if _is_placeholder(secret) or entropy and not _looks_random(secret):
            continue
        pieces.append(line[last:start])
        pieces.append(b"[REDACTED:%s]" % compiled.rule.kind.encode())
        kinds[compiled.rule.kind] += 1
        last = end
    if not pieces:
        return line
    pieces.append(line[last:])
    return b"".join(pieces)


class StreamingRedactor:
    """Redacts text that arrives in chunks; a private key block may span chunks.

    `feed` returns the redacted complete lines seen so far (ending in "\\n") and
    keeps the partial last line for the next call; `finish` flushes it.
    `feed_bytes`/`finish_bytes` do the same on UTF-8 bytes (one redactor uses one of the two).
    """

    def __init__(self, max_pending_line: int = 1 << 20) -> None:
        self._rules = _rule_set()
        self._pending = ""
        self._pending_bytes = b""
        self._in_private_key = 0  # lines redacted so far inside an open block (0 = not inside)
        self._max_pending_line = max_pending_line
        self.kinds: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return sum(self.kinds.values())

    def feed(self, text: str) -> str:
        text = self._pending + text
        cut = text.rfind("\n") + 1
        if cut == 0 and len(text) > self._max_pending_line:
            cut = len(text)  # a runaway line: redact what we have rather than buffer forever
        self._pending = text[cut:]
        return self._redact_block(text[:cut]) if cut else ""

    def finish(self) -> str:
        text, self._pending = self._pending, ""
        return self._redact_block(text) if text else ""

    def feed_bytes(self, data: bytes) -> bytes:
        """Like `feed`, for UTF-8 bytes (a runaway line is cut at a character boundary)."""
        data = self._pending_bytes + data if self._pending_bytes else data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > self._max_pending_line:
            cut = len(data)
            while cut > len(data) - 4 and cut > 0 and 0x80 <= data[cut - 1] < 0xC0:
                cut -= 1
            if cut > 0 and data[cut - 1] >= 0xC0:
                cut -= 1  # do not split the character that byte starts
            cut = cut or len(data)
        self._pending_bytes = data[cut:]
        return self.redact_lines(data[:cut]) if cut else b""

    def finish_bytes(self) -> bytes:
        data, self._pending_bytes = self._pending_bytes, b""
        return self.redact_lines(data) if data else b""

    def result(self, text: str) -> RedactionResult:
        return RedactionResult(text, self.count, dict(self.kinds))

    def _redact_block(self, block: str) -> str:
        encoded = block.encode("utf-8", "surrogatepass")
        redacted = self.redact_lines(encoded)
        return block if redacted is encoded else redacted.decode("utf-8", "surrogatepass")

    def redact_lines(self, encoded: bytes) -> bytes:
        """Redact whole lines of UTF-8 (the last may lack its line break); returns
        `encoded` itself when nothing changed."""
        out: list[bytes] = []
        last = 0
        # Lazily: redacting a line may open a private key block, which flags the lines after it.
        for line_start, line_end in self._flagged_lines(encoded):
            line = encoded[line_start:line_end]
            redacted = self._redact_flagged_line(line)
            if redacted != line:
                out.append(encoded[last:line_start])
                out.append(redacted)
                last = line_end
        if not out:
            return encoded
        out.append(encoded[last:])
        return b"".join(out)

    def _flagged_lines(self, encoded: bytes) -> Iterator[tuple[int, int]]:
        """(start, end) byte spans of lines a rule may match, or inside a key block."""
        search = self._rules.prefilter._regexp.Match
        unanchored = re2._Anchor.UNANCHORED
        position, end = 0, len(encoded)
        while position < end:
            if self._in_private_key:
                line_end = encoded.find(b"\n", position)
                line_end = end if line_end < 0 else line_end
                yield position, line_end
                position = line_end + 1
                continue
            span = search(unanchored, encoded, position, end)[0]
            if span[0] < 0:
                return
            line_start = encoded.rfind(b"\n", 0, span[0]) + 1
            line_end = encoded.find(b"\n", span[0])
            line_end = end if line_end < 0 else line_end
            yield line_start, line_end
            position = line_end + 1

    def _redact_flagged_line(self, line: bytes) -> bytes:
        if self._in_private_key:
            end = _PRIVATE_KEY_END.search(line)
            self._in_private_key += 1
            if end is None and self._in_private_key <= MAX_PRIVATE_KEY_LINES:
                return _REDACTED_KEY if line.decode("utf-8", "surrogatepass").strip() else line
            self._in_private_key = 0
            rest = line[end.end():] if end is not None else b""
            return _REDACTED_KEY + (self._redact_flagged_line(rest) if rest else b"")
        begin = _PRIVATE_KEY_BEGIN.search(line)
        if begin is not None:
            head = _redact_line(line[: begin.start()], self._rules, self.kinds)
            self.kinds["private_key"] += 1
            end = _PRIVATE_KEY_END.search(line, begin.end())
            if end is None:
                self._in_private_key = 1
                return head + _REDACTED_KEY
            rest = line[end.end():]
            return head + _REDACTED_KEY + (self._redact_flagged_line(rest) if rest else b"")
        return _redact_line(line, self._rules, self.kinds)


def redact(text: str) -> RedactionResult:
    """Redact every secret in `text`; line breaks are preserved."""
    redactor = StreamingRedactor()
    redacted = redactor.feed(text) + redactor.finish()
    return redactor.result(redacted)


def warm_up() -> None:
    """Compile the rule set now (first use otherwise pays ~50 ms)."""
    _rule_set()
