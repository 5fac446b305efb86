"""Integrity of the real-world CI log corpus (data/real_ci/)."""

from __future__ import annotations

import hashlib
import json

import pytest

from bench.real_ci import DEFAULT_ROOT, load_corpus, load_tools, local_path, read_labels
from services.common.vocabulary import FailureClass

ROOT = DEFAULT_ROOT
CLASSES = {c.name for c in FailureClass} - {"FAILURE_CLASS_UNSPECIFIED"}
KEYS = {
    "id", "source", "path", "committed", "sha256", "provider", "failure_class",
    "label_confidence", "label_basis", "decisive_lines", "decisive_lines_by",
}
PROVIDERS = {
    "github_actions", "gitlab", "travis", "jenkins", "buildkite", "taskcluster", "copr", "azure", "circleci", "other",
}


def _line_count(data: bytes) -> int:
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


@pytest.fixture(scope="module")
def labels() -> list[dict]:
    return read_labels(ROOT)


def test_every_line_parses_and_has_the_keys():
    lines = [x for x in (ROOT / "labels.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    assert lines
    for x in lines:
        e = json.loads(x)
        assert KEYS <= set(e), e.get("id")


def test_sorted_and_unique_ids(labels):
    ids = [e["id"] for e in labels]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids)
    for e in labels:
        assert e["id"].startswith(e["source"] + "/")


def test_fields_are_valid(labels):
    for e in labels:
        assert e["failure_class"] in CLASSES, e["id"]
        assert e["label_confidence"] in {"high", "medium", "low"}, e["id"]
        assert e["provider"] in PROVIDERS, e["id"]
        assert e["decisive_lines_by"] in {"source", "labeller"}, e["id"]
        assert e["label_basis"].strip(), e["id"]
        assert all(isinstance(n, int) and n >= 1 for n in e["decisive_lines"]), e["id"]
        if e["committed"]:
            assert not e["path"].startswith("mirror:")
        else:
            assert e["path"].startswith("mirror:")


def test_committed_files_exist_match_sha_and_decisive_lines_fit(labels):
    for e in labels:
        path = ROOT / e["path"] if e["committed"] else local_path(ROOT, e["path"])
        if not e["committed"] and not path.exists():
            continue  # not materialised here
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"], e["id"]
        n = _line_count(data)
        assert all(d <= n for d in e["decisive_lines"]), e["id"]


def test_no_committed_log_is_left_unlabelled(labels):
    labelled = {(ROOT / e["path"]).resolve() for e in labels if e["committed"]}
    on_disk = {p.resolve() for p in (ROOT / "logs").rglob("*") if p.is_file()}
    assert on_disk == labelled


def test_tools_index(labels):
    for t in load_tools(ROOT):
        assert t.path.is_file(), t.path
        assert t.failure_class in CLASSES
        assert t.license


def test_loader_round_trip(labels):
    logs = load_corpus(ROOT, include_local=False)
    assert len(logs) == sum(1 for e in labels if e["committed"])


def test_total_size_under_20_mb():
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file() and "local" not in p.relative_to(ROOT).parts)
    assert total < 20 * 1024 * 1024, total


def test_local_dir_is_ignored():
    assert "local/" in (ROOT / ".gitignore").read_text().split()
