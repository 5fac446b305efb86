"""RFC 9162 Merkle tree hashing, proofs and proof verification — the literal reference.

This module follows RFC 9162 section 2.1 word for word (MTH, PATH, SUBPROOF and the
verification algorithms of 2.1.3.2 and 2.1.4.2). It works on the whole list of leaves,
so it is O(n) per call: it is the yardstick the fast, storage-backed proofs of
`services.audit.compact` and `services.audit.store` are cross-checked against, and
the verification half is what an offline verifier runs.

    leaf hash  = SHA-256(0x00 || entry)
    node hash  = SHA-256(0x01 || left || right)
    empty tree = SHA-256("")

Preconditions are checked first and raise `InvalidArgument` naming the field.
Verification never raises for a wrong proof: it answers False.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from services.common.errors import InvalidArgument

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 leaf hash of one entry's bytes."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k (RFC 9162's split point); n must be >= 2."""
    return 1 << ((n - 1).bit_length() - 1)


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over entry bytes (not leaf hashes)."""
    return _mth([leaf_hash(leaf) for leaf in leaves])


def _mth(hashes: Sequence[bytes]) -> bytes:
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = largest_power_of_two_below(n)
    return node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def inclusion_proof(leaves: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """PATH(index, D[tree_size]): the audit path of leaf `index` in the first tree_size leaves."""
    _check_tree_size("tree_size", tree_size, len(leaves))
    if tree_size == 0:
        raise InvalidArgument("tree_size", "tree_size 0 has no leaves to prove; it must be >= 1")
    if not 0 <= index < tree_size:
        raise InvalidArgument("index", f"index {index} is outside the tree (must be 0 <= index < {tree_size})")
    return _path(index, [leaf_hash(leaf) for leaf in leaves[:tree_size]])


def _path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    n = len(hashes)
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return _path(m, hashes[:k]) + [_mth(hashes[k:])]
    return _path(m - k, hashes[k:]) + [_mth(hashes[:k])]


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]); empty when old_size is 0 or equals new_size."""
    _check_tree_size("new_size", new_size, len(leaves))
    if old_size < 0:
        raise InvalidArgument("old_size", f"old_size {old_size} is negative; it must be >= 0")
    if old_size > new_size:
        raise InvalidArgument("old_size", f"old_size {old_size} is larger than new_size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    return _subproof(old_size, [leaf_hash(leaf) for leaf in leaves[:new_size]], True)


def _subproof(m: int, hashes: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [_mth(hashes)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return _subproof(m, hashes[:k], complete) + [_mth(hashes[k:])]
    return _subproof(m - k, hashes[k:], False) + [_mth(hashes[:k])]


def _check_tree_size(field: str, size: int, log_size: int) -> None:
    if size < 0:
        raise InvalidArgument(field, f"{field} {size} is negative; it must be >= 0")
    if size > log_size:
        raise InvalidArgument(field, f"{field} {size} is beyond the log (size {log_size})")


def root_from_inclusion_proof(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes | None:
    """RFC 9162 2.1.3.2 steps 1-5: the root the proof leads to, or None if it cannot lead anywhere."""
    if not 0 <= index < tree_size or len(leaf) != HASH_SIZE:
        return None
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if len(p) != HASH_SIZE or sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True iff `proof` shows the leaf hash at `index` in the tree of `tree_size` with `root`."""
    computed = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)
    return computed is not None and computed == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True iff `proof` shows the tree (old_size, old_root) is a prefix of (new_size, new_root).

    As RFC 9162 section 2.1.4.2 and transparency-dev/merkle: equal sizes need an empty
    proof and equal roots; a proof from the empty tree (old_size 0, new_size > 0) proves
    nothing and is refused, whatever it holds. A monitor that saw only the empty tree
    trusts its next head on its signature, as it would a first head.
    """
    if old_size < 0 or new_size < 0 or old_size > new_size:
        return False
    if any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return False
    if not proof:
        return False
    path = list(proof)
    # Step 1: when old_size is a power of two the old root is itself the first node.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    # Step 3: skip the levels where the old tree's last leaf is a right child.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
