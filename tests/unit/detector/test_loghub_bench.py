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
    code = bench.main(["--data", str(tmp_path), "--systems", "HDFS", "Hadoop", "--out", str(out), "--repeats", "1"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["systems"]["HDFS"]["ours_ga"] == 1.0
    assert result["summary"]["ours_ga_tuned"] == 1.0 and result["summary"]["ours_ga_held_out"] == 1.0
    assert "HDFS" in capsys.readouterr().out


def test_split_is_eight_and_eight_and_disjoint() -> None:
    assert len(bench.TUNED) == len(bench.HELD_OUT) == 8
    assert set(bench.TUNED).isdisjoint(bench.HELD_OUT)
    assert set(bench.TUNED) | set(bench.HELD_OUT) == set(bench.SYSTEMS)
