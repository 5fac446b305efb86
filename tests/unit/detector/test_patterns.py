
import pytest

from services.common.errors import InvalidArgument
from services.common.vocabulary import FailureClass
from services.detector.patterns import KnowledgeBase, Pattern, default_patterns, validate_pattern


def _pattern(expression: str, failure_class: FailureClass = FailureClass.NETWORK, **kw: object) -> Pattern:
    return Pattern(
        pattern_id=kw.pop("pattern_id", "t.one"),  # type: ignore[arg-type]
        tenant="acme", failure_class=failure_class, expression=expression, **kw,  # type: ignore[arg-type]
    )


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


@pytest.mark.timeout(300)
def test_catastrophic_expression_finishes() -> None:
    # A backtracking engine needs ~2^50000 steps here and would never finish; RE2 is linear.
    # (The timeout only stops a hang; speed is measured in bench/detector_speed.py.)
    knowledge_base = KnowledgeBase([_pattern(r"(a+)+$")])
    hostile = "a" * 50_000 + "!"
    matches = knowledge_base.scan(hostile + "\n" + "a" * 30)
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
        ("FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
         FailureClass.OUT_OF_MEMORY),
        ("Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space", FailureClass.OUT_OF_MEMORY),
        ("ERROR: Job failed: exit code 137", FailureClass.OUT_OF_MEMORY),
        ("cp: error writing 'x.tar': No space left on device", FailureClass.DISK_FULL),
        ("npm error code ECONNRESET", FailureClass.DEPENDENCY_FETCH),
        ("E: Failed to fetch http://deb.debian.org/debian/pool/main/c/curl.deb  500", FailureClass.DEPENDENCY_FETCH),
        ("dial tcp: lookup db.internal on 10.0.0.2:53: no such host", FailureClass.NETWORK),
        ("--- FAIL: TestParseConfig (0.00s)", FailureClass.TEST_FAILURE),
        ("main.go:14:2: undefined: fetchUser", FailureClass.COMPILE_ERROR),
        ("src/app.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.",
         FailureClass.COMPILE_ERROR),
        ("✖ 4 problems (4 errors, 0 warnings)", FailureClass.LINT),
        ("ERROR: Job failed: execution took longer than 1h0m0s seconds", FailureClass.TIMEOUT),
        ("Build timed out (after 30 minutes). Marking the build as failed.", FailureClass.TIMEOUT),
        ("FATAL: Agent linux-7 went offline during the build", FailureClass.INFRASTRUCTURE),
        ("Error: Input required and not supplied: token", FailureClass.CONFIGURATION),
        ("Error: User: arn:aws:sts::1:assumed-role/ci is not authorized to perform: s3:PutObject",
         FailureClass.PERMISSION),
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


# Documented wording of the tools (their docs, source and issue trackers), one line each.
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("npm ERR! notarget No matching version found for left-pad@^9.9.9.", FailureClass.DEPENDENCY_FETCH),
        ("npm error code E404", FailureClass.DEPENDENCY_FETCH),
        ("ERROR: Could not find a version that satisfies the requirement flask==9.0 (from versions: 2.3.3)",
         FailureClass.DEPENDENCY_FETCH),
        ("Because myapp depends on requests (>=99) which doesn't match any versions, version solving failed.",
         FailureClass.DEPENDENCY_FETCH),
        ("[ERROR] Failed to execute goal on project app: Could not find artifact com.acme:core:jar:1.2 in central",
         FailureClass.DEPENDENCY_FETCH),
        ("error: failed to select a version for the requirement `serde = \"^9.0\"`", FailureClass.DEPENDENCY_FETCH),
        ("go: github.com/acme/lib@v1.9.0: invalid version: unknown revision v1.9.0", FailureClass.DEPENDENCY_FETCH),
        ("requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.acme.io', port=443): Max retries "
         "exceeded with url: / (Caused by NewConnectionError('Failed to establish a new connection: "
         "[Errno 111] Connection refused'))", FailureClass.NETWORK),
        ("W: Failed to fetch http://archive.ubuntu.com/ubuntu/dists/jammy/InRelease  "
         "Temporary failure resolving 'archive.ubuntu.com'", FailureClass.NETWORK),
        ("Unable to connect to the server: net/http: TLS handshake timeout", FailureClass.NETWORK),
        ("error: RPC failed; curl 56 GnuTLS recv error (-9): A TLS packet with unexpected length was received.",
         FailureClass.NETWORK),
        ("ssh: Could not resolve hostname github.com: Temporary failure in name resolution", FailureClass.NETWORK),
        ("FAILED tests/test_api.py::test_slow - Failed: Timeout >5.0s", FailureClass.TIMEOUT),
        ("Error: waiting for RDS DB Instance (db) create: timeout while waiting for state to become 'available' "
         "(last state: 'creating', timeout: 40m0s)", FailureClass.TIMEOUT),
        ("thrown: \"Exceeded timeout of 5000 ms for a test.", FailureClass.TIMEOUT),
        ("ERROR: Job failed (system failure): prepare environment: waiting for pod running: timed out waiting for "
         "pod to start", FailureClass.INFRASTRUCTURE),
        ("The workflow is not valid. .github/workflows/ci.yml (Line: 20, Col: 14): Unrecognized named-value: "
         "'test_version'. Located at position 1 within expression: test_version", FailureClass.CONFIGURATION),
        ("│ Error: Unsupported argument", FailureClass.CONFIGURATION),
        ("Error: INSTALLATION FAILED: execution error at (web/templates/secret.yaml:4:11): image.tag is required",
         FailureClass.CONFIGURATION),
        ("./deploy.sh: line 3: DEPLOY_ENV: parameter null or not set", FailureClass.CONFIGURATION),
        ("fatal: Authentication failed for 'https://gitlab.com/acme/web.git/'", FailureClass.PERMISSION),
        ("Error from server (Forbidden): pods is forbidden: User \"system:serviceaccount:ci:deployer\" cannot list "
         "resource \"pods\" in API group \"\" in the namespace \"prod\"", FailureClass.PERMISSION),
        ("denied: Permission \"artifactregistry.repositories.uploadArtifacts\" denied on resource",
         FailureClass.PERMISSION),
    ],
)
def test_default_patterns_recognise_documented_messages(line: str, expected: FailureClass) -> None:
    matches = KnowledgeBase(default_patterns()).scan(line)
    assert matches, f"no default pattern matched {line!r}"
    best = max(matches, key=lambda m: m.pattern.priority)
    assert best.pattern.failure_class == expected


def test_a_retry_that_succeeded_cannot_decide_a_log_alone() -> None:
    """pip prints this and carries on; only the error that ended the job should decide."""
    line = ("  WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after "
            "connection broken by 'ReadTimeoutError(\"HTTPSConnectionPool(host='pypi.org', port=443): Read timed "
            "out. (read timeout=15)\")': /simple/requests/")
    matches = KnowledgeBase(default_patterns()).scan(line)
    assert matches and max(m.pattern.priority for m in matches) <= 30
