"""JUnit XML reports, parsed without trusting them.

defusedxml refuses entity declarations (billion laughs), external entities
(XXE) and DTD fetches instead of expanding them; a refused or malformed report
is InvalidArgument("junit_xml", ...). Sizes are bounded before parsing, and
failure output is truncated, so a hostile report costs little.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field

import defusedxml
import defusedxml.ElementTree as SafeElementTree

from services.common.errors import InvalidArgument

MAX_JUNIT_BYTES = 16 << 20
MAX_OUTPUT_CHARS = 4096
MAX_TEST_CASES = 100_000


@dataclass(frozen=True)
class FailedTest:
    name: str
    classname: str
    message: str
    output: str
    kind: str  # "failure" (an assertion) or "error" (the test could not run)


@dataclass(frozen=True)
class JUnitReport:
    failed: list[FailedTest] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    skipped: int = 0

    @property
    def total(self) -> int:
        return len(self.failed) + len(self.passed) + self.skipped


def test_id(classname: str, name: str) -> str:
    """How a test is named in history and in diagnoses: classname::name, or name alone."""
    if classname and classname != name:
        return f"{classname}::{name}"
    return name


def _truncate(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 20] + "\n...[truncated]"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_junit(xml: bytes, max_bytes: int = MAX_JUNIT_BYTES) -> JUnitReport:
    """Failed and passed test cases of a JUnit report (any nesting of testsuites)."""
    if not xml or not xml.strip():
        raise InvalidArgument("junit_xml", "is empty; omit it or send a JUnit XML report")
    if len(xml) > max_bytes:
        raise InvalidArgument("junit_xml", f"must be at most {max_bytes} bytes, got {len(xml)}")
    try:
        root = SafeElementTree.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as refused:
        raise InvalidArgument(
            "junit_xml", f"refused: {type(refused).__name__} (DTDs and entities are not allowed)"
        ) from None
    except ElementTree.ParseError as error:
        raise InvalidArgument("junit_xml", f"is not well-formed XML ({error})") from None
    if _local(root.tag) not in ("testsuites", "testsuite", "testcase"):
        raise InvalidArgument(
            "junit_xml", f"root element must be <testsuites> or <testsuite>, got <{_local(root.tag)}>"
        )
    failed: list[FailedTest] = []
    passed: list[str] = []
    skipped = 0
    for count, case in enumerate(root.iter()):
        if _local(case.tag) != "testcase":
            continue
        if count > MAX_TEST_CASES * 4:
            raise InvalidArgument("junit_xml", f"has more than {MAX_TEST_CASES} test cases")
        name = case.get("name", "")
        classname = case.get("classname", "")
        outcome: FailedTest | str | None = None
        for child in case:
            tag = _local(child.tag)
            if tag in ("failure", "error"):
                outcome = FailedTest(
                    name=name,
                    classname=classname,
                    message=_truncate(child.get("message", "") or "", 1024),
                    output=_truncate((child.text or "").strip()),
                    kind=tag,
                )
                break
            if tag == "skipped":
                outcome = "skipped"
        if isinstance(outcome, FailedTest):
            failed.append(outcome)
        elif outcome == "skipped":
            skipped += 1
        else:
            passed.append(test_id(classname, name))
    return JUnitReport(failed=failed, passed=passed, skipped=skipped)
