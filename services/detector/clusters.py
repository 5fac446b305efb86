"""Failure clusters: failures that share a signature are one problem, seen many times.

A signature is the set of templates of a failure's evidence lines (variables masked,
so two runs of one broken test match). Near-duplicates merge: a new failure joins
the cluster of its failure class whose signature words overlap most, if the
Jaccard similarity reaches `merge_threshold`; otherwise it starts a cluster. One
index holds one tenant's clusters; `rows()` / `restore()` let the store persist it.
"""

from __future__ import annotations

import builtins
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from services.common.errors import InvalidArgument, NotFound
from services.common.vocabulary import FailureClass
from services.detector.templates import normalise_line

MAX_TRACKED = 50  # distinct repositories / pipelines remembered per cluster
MAX_EVIDENCE_LINES = 10
_WORD = re.compile(r"<[A-Z]+>|[A-Za-z_][A-Za-z0-9_]+")


@dataclass(frozen=True)
class ClusterRow:
    """One cluster, flat enough for a table row (lists, not sets, so it serialises)."""

    cluster_id: str
    failure_class: FailureClass
    signature: tuple[str, ...]  # normalised evidence lines of the first failure
    count: int
    first_seen: float  # unix seconds
    last_seen: float
    repositories: tuple[str, ...]
    pipelines: tuple[str, ...]
    representative_evidence: tuple[str, ...]  # the first failure's evidence, as reported


def signature_of(evidence_lines: Iterable[str]) -> tuple[str, ...]:
    """Distinct normalised evidence lines, in order: what makes two failures the same."""
    seen: dict[str, None] = {}
    for line in evidence_lines:
        normal = normalise_line(line)
        if normal:
            seen.setdefault(normal, None)
    return tuple(seen)


def _words(signature: Sequence[str]) -> frozenset[str]:
    return frozenset(w.lower() for line in signature for w in _WORD.findall(line))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass
class _Cluster:
    row: ClusterRow
    words: frozenset[str] = field(default_factory=frozenset)


class ClusterIndex:
    """One tenant's failure clusters, in memory."""

    def __init__(self, merge_threshold: float = 0.6) -> None:
        if not 0.0 < merge_threshold <= 1.0:
            raise ValueError(f"merge_threshold must be in (0, 1], got {merge_threshold}")
        self.merge_threshold = merge_threshold
        self._clusters: dict[str, _Cluster] = {}
        self._by_word: dict[tuple[FailureClass, str], set[str]] = defaultdict(set)

    def assign(self, evidence_lines: Sequence[str], *, failure_class: FailureClass, repository: str,
               pipeline: str, seen_at: float) -> str:
        """File one failure under its cluster (existing or new); returns the cluster id."""
        if not repository:
            raise InvalidArgument("repository", "must be set to file a failure in a cluster")
        signature = signature_of(evidence_lines)
        words = _words(signature) or frozenset({f"<{failure_class.name}>"})
        best_id, best_similarity = None, 0.0
        candidates = set().union(*(self._by_word.get((failure_class, w), set()) for w in words))
        for cid in sorted(candidates):
            similarity = _jaccard(words, self._clusters[cid].words)
            if similarity > best_similarity:
                best_id, best_similarity = cid, similarity
        if best_id is not None and best_similarity >= self.merge_threshold:
            cluster = self._clusters[best_id]
            row = cluster.row
            cluster.row = replace(
                row, count=row.count + 1, first_seen=min(row.first_seen, seen_at),
                last_seen=max(row.last_seen, seen_at),
                repositories=_bounded_add(row.repositories, repository),
                pipelines=_bounded_add(row.pipelines, pipeline) if pipeline else row.pipelines)
            return best_id
        cluster_id = self._new_id(failure_class, signature)
        row = ClusterRow(cluster_id, failure_class, signature, 1, seen_at, seen_at, (repository,),
                         (pipeline,) if pipeline else (), tuple(evidence_lines[:MAX_EVIDENCE_LINES]))
        self._insert(row)
        return cluster_id

    def get(self, cluster_id: str) -> ClusterRow:
        try:
            return self._clusters[cluster_id].row
        except KeyError:
            raise NotFound("cluster", cluster_id) from None

    def list(self, failure_class: FailureClass | None = None, limit: int = 100) -> builtins.list[ClusterRow]:
        """Clusters, most recently seen first."""
        if limit < 1:
            raise InvalidArgument("limit", f"must be >= 1, got {limit}")
        rows = [c.row for c in self._clusters.values() if failure_class is None or c.row.failure_class is failure_class]
        return sorted(rows, key=lambda r: (-r.last_seen, r.cluster_id))[:limit]

    def rows(self) -> builtins.list[ClusterRow]:
        return [c.row for c in self._clusters.values()]

    @classmethod
    def restore(cls, rows: Iterable[ClusterRow], merge_threshold: float = 0.6) -> ClusterIndex:
        index = cls(merge_threshold)
        for row in rows:
            index._insert(row)
        return index

    def __len__(self) -> int:
        return len(self._clusters)

    def _insert(self, row: ClusterRow) -> None:
        words = _words(row.signature) or frozenset({f"<{row.failure_class.name}>"})
        self._clusters[row.cluster_id] = _Cluster(row, words)
        for w in words:
            self._by_word[(row.failure_class, w)].add(row.cluster_id)

    def _new_id(self, failure_class: FailureClass, signature: tuple[str, ...]) -> str:
        digest = hashlib.sha256("\n".join((failure_class.name, *signature)).encode()).hexdigest()
        cluster_id = f"c-{digest[:12]}"
        n = 1
        while cluster_id in self._clusters:  # same signature below the merge threshold of itself: impossible
            n += 1                           # in practice, but ids must never collide
            cluster_id = f"c-{digest[:12]}-{n}"
        return cluster_id


def _bounded_add(values: tuple[str, ...], value: str) -> tuple[str, ...]:
    if value in values or len(values) >= MAX_TRACKED:
        return values
    return (*values, value)
