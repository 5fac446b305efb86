"""Whole job logs in the providers' real framings, written here in the tools' real formats:
the class, the failed step and a decisive line that is the log's own text at its number."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.vocabulary import FailureClass
from services.detector.diagnose import Diagnoser

LOGS = Path(__file__).parent / "logs"
ROOT = Path(__file__).resolve().parents[3]

CASES = [
    # (file, class, failed command, exit code, a phrase the decisive line contains)
    ("travis_rubocop.log", FailureClass.LINT, "bundle exec rubocop", 1, "offenses detected"),
    ("travis_maven_compile.log", FailureClass.COMPILE_ERROR,
     "mvn install -DskipTests=true -Dmaven.javadoc.skip=true -B -V", 1, "cannot find symbol"),
    ("travis_npm_install.log", FailureClass.DEPENDENCY_FETCH, "npm install", 1, "npm ERR! network"),
    ("travis_no_output.log", FailureClass.TIMEOUT, None, None, "No output has been received"),
    ("gha_pytest.log", FailureClass.TEST_FAILURE, "python -m pytest -q", 1, "FAILED tests/test_totals.py"),
    ("gitlab_cmake.log", FailureClass.CONFIGURATION, "cmake .. -DCMAKE_BUILD_TYPE=Release", 1,
     "Configuring incomplete"),
]


@pytest.mark.parametrize(("name", "expected", "command", "exit_code", "phrase"), CASES, ids=[c[0] for c in CASES])
def test_real_framings_give_class_step_and_real_decisive_line(name, expected, command, exit_code, phrase) -> None:
    data = (LOGS / name).read_bytes()
    result = Diagnoser().diagnose(data)
    assert result.failure_class is expected
    if command is None:
        assert result.failed_step is None or result.failed_step.command == ""
    else:
        assert result.failed_step is not None
        assert (result.failed_step.command, result.failed_step.exit_code) == (command, exit_code)
    decisive = result.decisive_line
    assert decisive is not None and phrase in decisive.text
    lines = data.decode().splitlines()
    assert lines[decisive.line - 1].endswith(decisive.text.rstrip())  # the log's own text, at its number


def test_the_decisive_line_is_not_a_template() -> None:
    result = Diagnoser().diagnose((LOGS / "travis_rubocop.log").read_bytes())
    assert result.decisive_line is not None
    assert result.decisive_line.text == "42 files inspected, 2 offenses detected"
    assert "<NUM>" in result.template  # the template is for grouping only


def test_a_passing_step_before_the_failing_one_does_not_decide() -> None:
    # pip's retried download in the install step passed; the failing step is the tests.
    result = Diagnoser().diagnose((LOGS / "gha_pytest.log").read_bytes())
    assert result.failure_class is FailureClass.TEST_FAILURE
    assert "NETWORK" in result.candidate_classes or "DEPENDENCY_FETCH" in result.candidate_classes


def test_cli_json_carries_the_contract_keys() -> None:
    out = subprocess.run([sys.executable, "-m", "services.detector.diagnose", str(LOGS / "gha_pytest.log"), "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    data = json.loads(out)
    assert data["failure_class"] == "TEST_FAILURE" and 0.0 <= data["confidence"] <= 1.0
    assert all(isinstance(e["line"], int) and isinstance(e["text"], str) for e in data["evidence"])
    assert data["signature"] and data["failed_step"]["command"] == "python -m pytest -q"
    assert data["failed_step"]["exit_code"] == 1 and data["failed_step"]["line"] == 24


def test_an_exit_code_alone_is_a_weak_prior() -> None:
    log = (b"##[group]Run ./scripts/train.sh --epochs 3\n./scripts/train.sh --epochs 3\n"
           b"shell: /usr/bin/bash -e {0}\n##[endgroup]\nepoch 1/3\nepoch 2/3\n"
           b"##[error]Process completed with exit code 127.\n")
    result = Diagnoser().diagnose(log)
    assert result.failure_class is FailureClass.CONFIGURATION
    assert result.pattern_id == "exit.127-not-found"
    assert result.decisive_line is not None and result.decisive_line.line == 7
    # A tool's own message outranks the exit code's prior.
    louder = log.replace(b"epoch 2/3\n", b"epoch 2/3\nError: ENOSPC: no space left on device, write\n")
    assert Diagnoser().diagnose(louder).failure_class is FailureClass.DISK_FULL
