"""The Loghub grouping bench on a tiny hand-made fixture (the real data is not in the repo)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from bench import loghub_grouping as bench

ROWS = [
    ("Accepted password for ci from 10.0.0.1 port 22 ssh2", "E1", "Accepted password for ci from <*> port <*> ssh2"),
    ("Accepted password for ci from 10.0.0.2 port 2201 ssh2", "E1", "Accepted password for ci from <*> port <*> ssh2"),
    ("Connection closed by 10.0.0.3 [preauth]", "E2", "Connection closed by <*> [preauth]"),
    ("Connection closed by 10.0.0.4 [preauth]", "E2", "Connection closed by <*> [preauth]"),
    ("took 12ms to flush 3.4 MB", "E3", "took <*> to flush <*>"),
]


def _write_fixture(folder: Path, system: str) -> None:
    with open(folder / f"{system}_2k.log_structured.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["LineId", "Content", "EventId", "EventTemplate"])
        for n, (content, event, template) in enumerate(ROWS, start=1):
            writer.writerow([n, content, event, template])


def test_grouping_accuracy_hand_made_example() -> None:
    # Truth groups {0,1,2}, {3}, {4,5}. Prediction splits the first group and merges the others.
    predicted = ["a", "a", "b", "c", "c", "c"]
    truth = ["x", "x", "x", "y", "z", "z"]
    assert bench.grouping_accuracy(predicted, truth) == 0.0
    assert bench.grouping_accuracy(["a", "a", "a", "b", "c", "c"], truth) == 1.0
    assert bench.grouping_accuracy(["a", "a", "a", "b", "b", "c"], truth) == 0.5


def test_parsing_accuracy_compares_templates_with_variables_collapsed() -> None:
    assert bench.comparable_template("took <NUM> in <*>.<*>s") == "took <*> in <*>"
    assert bench.parsing_accuracy(["took <NUM> ms"], ["took <*> ms"]) == 1.0
    assert bench.parsing_accuracy(["took <NUM> s"], ["took <*> ms"]) == 0.0


def test_bench_runs_on_a_fixture_and_writes_its_json(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _write_fixture(tmp_path, "HDFS")
    _write_fixture(tmp_path, "Hadoop")
    out = tmp_path / "result.json"
    code = bench.main(["--data", str(tmp_path), "--systems", "HDFS", "Hadoop", "--out", str(out), "--repeats", "1",
                       "--no-real-ci"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["systems"]["HDFS"]["ours_ga"] == 1.0
    assert result["summary"]["ours_ga_tuned"] == 1.0 and result["summary"]["ours_ga_held_out"] == 1.0
    assert "HDFS" in capsys.readouterr().out


def test_split_is_eight_and_eight_and_disjoint() -> None:
    assert len(bench.TUNED) == len(bench.HELD_OUT) == 8
    assert set(bench.TUNED).isdisjoint(bench.HELD_OUT)
    assert set(bench.TUNED) | set(bench.HELD_OUT) == set(bench.SYSTEMS)


def test_rerun_changes_run_noise_but_not_the_words() -> None:
    from bench.ci_signatures import rerun

    log = ("2022-05-11T15:11:03.8965328Z Runner name: 'GitHub Actions 12'\n"
           "2022-05-11T15:11:05.0963608Z FAILED tests/test_api.py::test_login - assert 1 == 2 (0.52s)\n"
           "2022-05-11T15:11:05.1Z error: /home/runner/work/web/web/src/a.py in /tmp/pytest-of-runner/pytest-3 "
           "container 4f2a9c1e7b3d pid 4821\n")
    again = rerun(log, seed=1)
    assert again != log and len(again.splitlines()) == len(log.splitlines())
    words = [w for w in log.split() if w.isalpha()]
    assert [w for w in again.split() if w.isalpha()] == words
    assert "4f2a9c1e7b3d" not in again and "/home/runner/work/" not in again and "2022-05-11T15:11:03" not in again
    assert rerun(log, seed=1) == again  # seeded: the bench is repeatable


def test_ci_signature_pairs_on_stub_logs(tmp_path: Path) -> None:
    from bench.ci_signatures import evaluate
    from bench.real_ci import RealLog

    logs = []
    for n, text in enumerate(["FAILED test_a - assert 1 == 2\n", "FAILED test_b - assert 1 == 2\n",
                              "npm ERR! code ERESOLVE\n"]):
        path = tmp_path / f"{n}.log"
        path.write_text(text)
        logs.append(RealLog(f"x/{n}", "x", "github_actions", "TEST_FAILURE" if n < 2 else "DEPENDENCY_FETCH",
                            "high", (1,), path, True))
    result = evaluate(logs, diagnose=lambda data: (data.decode().split(" - ")[0], []))
    assert result["same_cause_same_signature"] == 1.0
    assert result["different_cause_pairs"] == 3 and result["different_cause_different_signature"] == 1.0
    assert result["different_cause_pairs_same_class"] == 1
