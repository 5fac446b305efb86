import time

import pytest

from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass
from services.detector.patterns import KnowledgeBase, Pattern, default_patterns, validate_pattern


def _pattern(expression: str, failure_class: FailureClass = FailureClass.NETWORK, **kw: object) -> Pattern:
    return Pattern(pattern_id=kw.pop("pattern_id", "t.one"), tenant="acme", failure_class=failure_class, expression=expression, **kw)  # type: ignore[arg-type]


def test_backreference_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_pattern(_pattern(r"(a)\1"))
    assert refused.value.field == "pattern.expression"
    assert "RE2" in refused.value.message


def test_lookahead_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="pattern.expression"):
        validate_pattern(_pattern(r"error(?=: fatal)"))


@pytest.mark.parametrize("bad", [FailureClass.FAILURE_CLASS_UNSPECIFIED, FailureClass.UNKNOWN, 99])
def test_unclassifiable_class_is_refused(bad: object) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_pattern(_pattern("boom", bad))  # type: ignore[arg-type]
    assert refused.value.field == "pattern.failure_class"


def test_overlong_and_empty_matching_expressions_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="at most 1024"):
        validate_pattern(_pattern("a" * 1025))
    with pytest.raises(InvalidArgument, match="empty string"):
        validate_pattern(_pattern("x*"))
    with pytest.raises(InvalidArgument, match="pattern.priority"):
        validate_pattern(_pattern("boom", priority=101))


def test_catastrophic_expression_runs_in_linear_time() -> None:
    knowledge_base = KnowledgeBase([_pattern(r"(a+)+$")])
    hostile = "a" * 50_000 + "!"
    started = time.perf_counter()
    matches = knowledge_base.scan(hostile + "\n" + "a" * 30)
    # A backtracking engine needs ~2^50000 steps here; RE2 is linear. Generous bound, not a benchmark.
    assert time.perf_counter() - started < 2.0
    assert [m.line_no for m in matches] == [2]


def test_scan_reports_every_pattern_matching_a_line_with_1_based_numbers() -> None:
    knowledge_base = KnowledgeBase([
        _pattern("connection reset", pattern_id="net.reset"),
        _pattern("(?i)reset by peer", pattern_id="net.peer"),
        _pattern("No space left", FailureClass.DISK_FULL, pattern_id="disk"),
    ])
    text = "ok\nread: connection reset by peer\nfine\nwrite: No space left on device\n"
    matches = knowledge_base.scan(text)
    assert [(m.pattern.pattern_id, m.line_no) for m in matches] == [("net.reset", 2), ("net.peer", 2), ("disk", 4)]
    assert matches[2].line == "write: No space left on device"


def test_disabled_patterns_do_not_match() -> None:
    knowledge_base = KnowledgeBase([_pattern("boom", enabled=False)])
    assert knowledge_base.scan("boom\n") == []


def test_defaults_cover_every_concrete_class_and_compile() -> None:
    patterns = default_patterns()
    covered = {p.failure_class for p in patterns}
    concrete = set(FailureClass) - {FailureClass.FAILURE_CLASS_UNSPECIFIED, FailureClass.UNKNOWN}
    assert covered == concrete
    assert len({p.pattern_id for p in patterns}) == len(patterns)
    assert all(p.tenant == "" and p.remediation_hint for p in patterns)
    KnowledgeBase(patterns)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory", FailureClass.OUT_OF_MEMORY),
        ("Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space", FailureClass.OUT_OF_MEMORY),
        ("ERROR: Job failed: exit code 137", FailureClass.OUT_OF_MEMORY),
        ("cp: error writing 'x.tar': No space left on device", FailureClass.DISK_FULL),
        ("npm error code ECONNRESET", FailureClass.DEPENDENCY_FETCH),
        ("E: Failed to fetch http://deb.debian.org/debian/pool/main/c/curl.deb  500", FailureClass.DEPENDENCY_FETCH),
        ("dial tcp: lookup db.internal on 10.0.0.2:53: no such host", FailureClass.NETWORK),
        ("--- FAIL: TestParseConfig (0.00s)", FailureClass.TEST_FAILURE),
        ("main.go:14:2: undefined: fetchUser", FailureClass.COMPILE_ERROR),
        ("src/app.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.", FailureClass.COMPILE_ERROR),
        ("✖ 4 problems (4 errors, 0 warnings)", FailureClass.LINT),
        ("ERROR: Job failed: execution took longer than 1h0m0s seconds", FailureClass.TIMEOUT),
        ("Build timed out (after 30 minutes). Marking the build as failed.", FailureClass.TIMEOUT),
        ("FATAL: Agent linux-7 went offline during the build", FailureClass.INFRASTRUCTURE),
        ("Error: Input required and not supplied: token", FailureClass.CONFIGURATION),
        ("Error: User: arn:aws:sts::1:assumed-role/ci is not authorized to perform: s3:PutObject", FailureClass.PERMISSION),
        ("Tests run: 12, Failures: 0, Errors: 0, Skipped: 0, Flakes: 2", FailureClass.FLAKY_TEST),
    ],
)
def test_default_patterns_recognise_tool_wording(line: str, expected: FailureClass) -> None:
    matches = KnowledgeBase(default_patterns()).scan(line)
    best = max(matches, key=lambda m: m.pattern.priority)
    assert best.pattern.failure_class == expected


def test_ordinary_lines_match_nothing() -> None:
    ordinary = "\n".join([
        "Run actions/checkout@v4", "added 1184 packages, and audited 1185 packages in 21s",
        "Compiling serde v1.0.217", "collected 412 items", "Successfully installed ruff-0.8.4",
        "[INFO] BUILD SUCCESS", "Test Suites: 8 passed, 8 total", "ok  	github.com/acme/web/pkg	0.41s",
    ])
    assert KnowledgeBase(default_patterns()).scan(ordinary) == []
