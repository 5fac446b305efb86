import pytest

from services.common.errors import InvalidArgument
from services.detector.junit import MAX_OUTPUT_CHARS, parse_junit

REPORT = b"""<?xml version="1.0"?>
<testsuites><testsuite name="s">
  <testcase classname="tests.test_a" name="test_ok" time="0.1"/>
  <testcase classname="tests.test_a" name="test_bad"><failure message="assert 1 == 2">trace</failure></testcase>
  <testcase classname="tests.test_b" name="test_boom"><error message="RuntimeError">boom</error></testcase>
  <testcase classname="tests.test_b" name="test_skip"><skipped/></testcase>
</testsuite></testsuites>"""


def test_failed_passed_and_skipped_are_separated() -> None:
    report = parse_junit(REPORT)
    assert [(t.classname, t.name, t.kind) for t in report.failed] == [
        ("tests.test_a", "test_bad", "failure"), ("tests.test_b", "test_boom", "error"),
    ]
    assert report.failed[0].message == "assert 1 == 2"
    assert report.passed == ["tests.test_a::test_ok"]
    assert report.skipped == 1


def test_billion_laughs_is_refused_not_expanded() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">' + b"".join(
        f'<!ENTITY a{i} "{"&a" + (str(i - 1) if i > 1 else "") + ";" * 1}' .encode() + b"&a;&a;&a;&a;&a;&a;&a;&a;&a;\">"
        for i in range(1, 10)
    ) + b']><testsuite name="&a9;"/>'
    with pytest.raises(InvalidArgument) as refused:
        parse_junit(bomb)
    assert refused.value.field == "junit_xml"


def test_external_entity_is_refused() -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<testsuite><testcase name="a"><failure>&x;</failure></testcase></testsuite>'
    )
    with pytest.raises(InvalidArgument, match="junit_xml"):
        parse_junit(xxe)


@pytest.mark.parametrize("bad", [b"", b"   ", b"<testsuite><testcase>", b"<html/>"])
def test_malformed_reports_are_invalid_argument(bad: bytes) -> None:
    with pytest.raises(InvalidArgument, match="junit_xml"):
        parse_junit(bad)


def test_size_limit_and_output_truncation() -> None:
    with pytest.raises(InvalidArgument, match="at most 100 bytes"):
        parse_junit(REPORT, max_bytes=100)
    huge = (
        b'<testsuite><testcase name="t"><failure message="m">' + b"x" * 100_000 + b"</failure></testcase></testsuite>"
    )
    assert len(parse_junit(huge).failed[0].output) <= MAX_OUTPUT_CHARS
