"""Failure clusters: same signature one cluster, near-duplicates merge, rows round-trip."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.common.vocabulary import FailureClass as FC
from services.detector.clusters import ClusterIndex, signature_of

OOM_A = ["FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
         "[1234:0x5a8f3c0]    93412 ms: Mark-Compact 4050.2 (4131.5) -> 4049.7 MB"]
OOM_B = ["FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
         "[998:0x11aa3c0]    1200 ms: Mark-Compact 2011.0 (2100.5) -> 2010.9 MB"]
DISK = ["OSError: [Errno 28] No space left on device: '/tmp/pip-unpack-1/x.whl'"]


def test_signature_masks_variables_and_drops_duplicates() -> None:
    assert signature_of(OOM_A) == signature_of(OOM_B)
    assert signature_of(["x 1", "x 2", ""]) == ("x <NUM>",)


def test_same_failure_in_two_repositories_is_one_cluster_with_both() -> None:
    index = ClusterIndex()
    a = index.assign(OOM_A, failure_class=FC.OUT_OF_MEMORY, repository="acme/web", pipeline="p1", seen_at=100.0)
    b = index.assign(OOM_B, failure_class=FC.OUT_OF_MEMORY, repository="acme/api", pipeline="p2", seen_at=50.0)
    c = index.assign(DISK, failure_class=FC.DISK_FULL, repository="acme/web", pipeline="p1", seen_at=120.0)
    assert a == b != c
    row = index.get(a)
    assert row.count == 2 and row.first_seen == 50.0 and row.last_seen == 100.0
    assert row.repositories == ("acme/web", "acme/api") and row.pipelines == ("p1", "p2")
    assert row.representative_evidence == tuple(OOM_A)
    assert [r.cluster_id for r in index.list()] == [c, a]  # most recent first
    assert [r.cluster_id for r in index.list(FC.DISK_FULL)] == [c]


def test_near_duplicates_merge_but_different_failures_do_not() -> None:
    index = ClusterIndex(merge_threshold=0.6)
    base = ["error[E0308]: mismatched types", "expected `u64`, found `usize`", "could not compile `billing` (lib)"]
    near = ["error[E0308]: mismatched types", "expected `u64`, found `usize`", "could not compile `billing` (bin)"]
    other = ["error[E0425]: cannot find value `total` in this scope"]
    a = index.assign(base, failure_class=FC.COMPILE_ERROR, repository="r", pipeline="p", seen_at=1)
    assert index.assign(near, failure_class=FC.COMPILE_ERROR, repository="r", pipeline="p", seen_at=2) == a
    assert index.assign(other, failure_class=FC.COMPILE_ERROR, repository="r", pipeline="p", seen_at=3) != a
    # the same words under another class are another problem
    assert index.assign(base, failure_class=FC.LINT, repository="r", pipeline="p", seen_at=4) != a


def test_rows_restore_to_an_equivalent_index() -> None:
    index = ClusterIndex()
    first = index.assign(OOM_A, failure_class=FC.OUT_OF_MEMORY, repository="r", pipeline="p", seen_at=1)
    index.assign(DISK, failure_class=FC.DISK_FULL, repository="r", pipeline="p", seen_at=2)
    restored = ClusterIndex.restore(index.rows())
    assert sorted(restored.rows(), key=lambda r: r.cluster_id) == sorted(index.rows(), key=lambda r: r.cluster_id)
    assert restored.assign(OOM_B, failure_class=FC.OUT_OF_MEMORY, repository="r2", pipeline="p", seen_at=3) == first
    assert restored.get(first).count == 2


def test_errors_name_what_is_wrong() -> None:
    index = ClusterIndex()
    with pytest.raises(NotFound, match="c-nope"):
        index.get("c-nope")
    with pytest.raises(InvalidArgument, match="repository"):
        index.assign(DISK, failure_class=FC.DISK_FULL, repository="", pipeline="p", seen_at=1)
    with pytest.raises(InvalidArgument, match="limit: must be >= 1, got 0"):
        index.list(limit=0)
