"""Proofs from stored subtree hashes in O(log n): compact ranges and node ids.

A *node* is a complete (perfect) subtree: `NodeId(level, index)` covers leaves
[index * 2**level, (index + 1) * 2**level). Once complete, a node's hash never
changes, so the store persists it exactly once, when the append that completes it
commits. Every range [lo, hi) that appears in RFC 9162's recursive split of a tree
(MTH, PATH, SUBPROOF) decomposes into at most 2·log2(n) such nodes — its *compact
range* — and the range's hash is those node hashes folded right to left. So a root,
an inclusion proof or a consistency proof reads O(log n) stored hashes and never
touches the leaves.

`CompactRange` is the right border of the growing tree (the nodes covering
[0, size)); appending a leaf hash to it yields the nodes that became complete.

Nothing here speaks SQL: callers pass a `fetch(node_ids) -> {node_id: hash}`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256 as _sha256

from services.audit.merkle import EMPTY_ROOT, largest_power_of_two_below, node_hash
from services.common.errors import InvalidArgument


@dataclass(frozen=True, order=True)
class NodeId:
    level: int
    index: int

    @property
    def storage_key(self) -> int:
        """The node's in-order position in an infinite tree: unique, and an int for SQL."""
        return ((2 * self.index + 1) << self.level) - 1

    @classmethod
    def from_storage_key(cls, key: int) -> NodeId:
        level = ((key + 1) & -(key + 1)).bit_length() - 1
        return cls(level, ((key + 1) >> level) // 2)


NodeFetch = Callable[[Sequence[NodeId]], dict[NodeId, bytes]]


def range_nodes(lo: int, hi: int) -> list[NodeId]:
    """The maximal complete subtrees covering [lo, hi), left to right."""
    nodes: list[NodeId] = []
    while lo < hi:
        # Largest aligned power of two that starts at lo and stays within hi.
        level = (lo & -lo).bit_length() - 1 if lo else (hi - lo).bit_length() - 1
        while (1 << level) > hi - lo:
            level -= 1
        nodes.append(NodeId(level, lo >> level))
        lo += 1 << level
    return nodes


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """Hash of an RFC 9162 subtree from its compact range's node hashes (left to right)."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_ranges(index: int, tree_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PATH(index, D[tree_size]), in proof order."""
    if not 0 <= index < tree_size:
        raise InvalidArgument("index", f"index {index} is outside the tree (must be 0 <= index < {tree_size})")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        k = largest_power_of_two_below(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo = lo + k
    ranges.reverse()  # RFC order: deepest sibling first
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PROOF(old_size, D[new_size]), in proof order."""
    if old_size < 0 or old_size > new_size:
        raise InvalidArgument("old_size", f"old_size {old_size} must be between 0 and new_size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    ranges: list[tuple[int, int]] = []
    lo, hi, complete = 0, new_size, True
    while True:
        if hi == old_size:
            if not complete:
                ranges.append((lo, hi))
            break
        k = largest_power_of_two_below(hi - lo)
        if old_size - lo <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, complete = lo + k, False
    ranges.reverse()
    return ranges


def hashes_of_ranges(ranges: Sequence[tuple[int, int]], fetch: NodeFetch) -> list[bytes]:
    """Hash each range from its compact range, reading every needed node in one fetch."""
    per_range = [range_nodes(lo, hi) for lo, hi in ranges]
    wanted = sorted({node for nodes in per_range for node in nodes})
    found = fetch(wanted)
    missing = [node for node in wanted if node not in found]
    if missing:
        raise LookupError(f"subtree hashes missing from storage: {missing[:3]}")
    return [fold_range([found[node] for node in nodes]) for nodes in per_range]


def root_at(tree_size: int, fetch: NodeFetch) -> bytes:
    return hashes_of_ranges([(0, tree_size)], fetch)[0]


def inclusion_proof(index: int, tree_size: int, fetch: NodeFetch) -> list[bytes]:
    return hashes_of_ranges(inclusion_ranges(index, tree_size), fetch)


def consistency_proof(old_size: int, new_size: int, fetch: NodeFetch) -> list[bytes]:
    return hashes_of_ranges(consistency_ranges(old_size, new_size), fetch)


class CompactRange:
    """The complete subtrees covering [0, size): enough to append and to compute the root.

    `hashes` are the border's node hashes, left to right: one per set bit of `size`,
    largest subtree first (the nodes are `range_nodes(0, size)`).
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size.bit_count() != len(hashes):
            raise ValueError(f"a compact range of size {size} has {size.bit_count()} nodes, got {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    @property
    def nodes(self) -> list[NodeId]:
        return range_nodes(0, self.size)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    def append_above_leaf(self, leaf_hash: bytes) -> list[tuple[int, bytes]]:
        """Add one leaf; returns the nodes above level 0 it completed, as (storage key, hash), lowest first.

        The store keeps leaf hashes with the entries, so these are all it has to write.
        """
        hashes = self.hashes
        index = self.size
        level = 0
        value = leaf_hash
        completed: list[tuple[int, bytes]] = []
        # Merge while the new node is a right child whose left sibling is on the border.
        while index & 1:
            value = _sha256(b"\x01" + hashes.pop() + value).digest()  # merkle.node_hash, inlined
            index >>= 1
            level += 1
            completed.append((((2 * index + 1) << level) - 1, value))
        hashes.append(value)
        self.size += 1
        return completed

    def append(self, leaf_hash: bytes) -> list[tuple[NodeId, bytes]]:
        """Add one leaf; returns every node completed by it (the leaf itself first)."""
        leaf = NodeId(0, self.size)
        return [(leaf, leaf_hash)] + [
            (NodeId.from_storage_key(key), value) for key, value in self.append_above_leaf(leaf_hash)
        ]

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[tuple[NodeId, bytes]]:
        completed: list[tuple[NodeId, bytes]] = []
        for h in leaf_hashes:
            completed.extend(self.append(h))
        return completed

    def root(self) -> bytes:
        return fold_range(self.hashes)
