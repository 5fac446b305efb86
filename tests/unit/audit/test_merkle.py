"""RFC 6962 / 9162 reference vectors, then properties of every proof up to a few hundred leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit import compact, merkle
from services.common.errors import InvalidArgument

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc6962_reference.json").read_text())
LEAVES = [bytes.fromhex(h) for h in VECTORS["leaves_hex"]]
ROOTS = [bytes.fromhex(h) for h in VECTORS["roots"]]


def _leaves(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert merkle.root_hash([]) == bytes.fromhex(VECTORS["empty_root"])


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_roots(size: int) -> None:
    assert merkle.root_hash(LEAVES[:size]) == ROOTS[size - 1]


@pytest.mark.parametrize("vector", VECTORS["inclusion"], ids=lambda v: f"{v['index']}@{v['tree_size']}")
def test_reference_inclusion_proofs(vector: dict) -> None:
    index, size = vector["index"], vector["tree_size"]
    expected = [bytes.fromhex(h) for h in vector["proof"]]
    assert merkle.inclusion_proof(LEAVES, index, size) == expected
    assert merkle.verify_inclusion(merkle.leaf_hash(LEAVES[index]), index, size, expected, ROOTS[size - 1])


@pytest.mark.parametrize("vector", VECTORS["consistency"], ids=lambda v: f"{v['old_size']}-{v['new_size']}")
def test_reference_consistency_proofs(vector: dict) -> None:
    old, new = vector["old_size"], vector["new_size"]
    expected = [bytes.fromhex(h) for h in vector["proof"]]
    assert merkle.consistency_proof(LEAVES, old, new) == expected
    assert merkle.verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], expected)


@pytest.mark.parametrize("vector", VECTORS["inclusion"][1:], ids=lambda v: f"{v['index']}@{v['tree_size']}")
def test_reference_inclusion_negative_cases(vector: dict) -> None:
    index, size = vector["index"], vector["tree_size"]
    proof = [bytes.fromhex(h) for h in vector["proof"]]
    leaf, root = merkle.leaf_hash(LEAVES[index]), ROOTS[size - 1]
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    wrong = [
        (leaf, index + 1, size, proof, root),
        (leaf, index ^ 2, size, proof, root),
        (leaf, index, size * 2, proof, root),
        (leaf, index, size // 2, proof, root),
        (merkle.leaf_hash(b"WrongLeaf"), index, size, proof, root),
        (leaf, index, size, proof, merkle.EMPTY_ROOT),
        (leaf, index, size, proof, some),
        (leaf, index, size, proof + [b""], root),
        (leaf, index, size, proof + [root], root),
        (leaf, index, size, [root] + proof, root),
        (leaf, index, size, proof[:-1], root),
        (leaf, index, size, proof[:1] + [some] + proof[1:], root),
    ]
    if index > 0:
        wrong.append((leaf, index - 1, size, proof, root))
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        wrong.append((leaf, index, size, flipped, root))
    for args in wrong:
        assert not merkle.verify_inclusion(*args)


def test_trivial_consistency_cases() -> None:
    r1 = merkle.root_hash(LEAVES[:1])
    assert merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    assert not merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, ROOTS[4], [])  # proves nothing
    assert merkle.verify_consistency(1, 1, r1, r1, [])
    assert not merkle.verify_consistency(1, 1, r1, ROOTS[1], [])
    assert not merkle.verify_consistency(2, 1, ROOTS[1], r1, [])
    assert not merkle.verify_consistency(1, 2, r1, ROOTS[1], [])
    assert not merkle.verify_consistency(1, 1, r1, r1, [merkle.EMPTY_ROOT])


EDGE_CASES = json.loads((Path(__file__).parent / "vectors" / "consistency_edge_cases.json").read_text())


@pytest.mark.parametrize("case", EDGE_CASES["consistency"],
                         ids=lambda c: f"{c['old_size']}-{c['new_size']}:{c['desc']}")
def test_consistency_edge_cases_match_the_reference(case: dict) -> None:
    """Negative vectors included: a proof from the empty tree, or equal sizes with different roots."""
    proof = [bytes.fromhex(h) for h in case["proof"]]
    old_root, new_root = bytes.fromhex(case["old_root"]), bytes.fromhex(case["new_root"])
    assert merkle.verify_consistency(case["old_size"], case["new_size"], old_root, new_root, proof) is case["valid"]


def test_preconditions_name_the_field() -> None:
    leaves = _leaves(64)
    with pytest.raises(InvalidArgument, match=r"tree_size 90 is beyond the log \(size 64\)") as err:
        merkle.inclusion_proof(leaves, 3, 90)
    assert err.value.field == "tree_size"
    with pytest.raises(InvalidArgument, match="old_size 10 is larger than new_size 5") as err:
        merkle.consistency_proof(leaves, 10, 5)
    assert err.value.field == "old_size"
    with pytest.raises(InvalidArgument) as err:
        merkle.inclusion_proof(leaves, 64, 64)
    assert err.value.field == "index"
    with pytest.raises(InvalidArgument, match="new_size 65 is beyond the log"):
        merkle.consistency_proof(leaves, 1, 65)


# One list of 300 leaves serves every property below: prefixes are the smaller trees.
BIG = _leaves(300)
BIG_HASHES = [merkle.leaf_hash(x) for x in BIG]
BIG_ROOTS = [merkle.root_hash(BIG[:n]) for n in range(len(BIG) + 1)]


def _flip(proof: list[bytes], which: int, bit: int) -> list[bytes]:
    out = list(proof)
    i = which % len(out)
    pos = (bit // 8) % merkle.HASH_SIZE
    out[i] = out[i][:pos] + bytes([out[i][pos] ^ (1 << (bit % 8))]) + out[i][pos + 1 :]
    return out


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_inclusion_proof_verifies_and_tampering_fails(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, len(BIG)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = merkle.inclusion_proof(BIG, index, size)
    assert merkle.verify_inclusion(BIG_HASHES[index], index, size, proof, BIG_ROOTS[size])
    if proof:
        which, bit = data.draw(st.integers(0, 10**6)), data.draw(st.integers(0, 255))
        assert not merkle.verify_inclusion(BIG_HASHES[index], index, size, _flip(proof, which, bit), BIG_ROOTS[size])
        assert not merkle.verify_inclusion(BIG_HASHES[index], index, size, proof[:-1], BIG_ROOTS[size])
    other = data.draw(st.integers(0, size - 1))
    if other != index:
        assert not merkle.verify_inclusion(BIG_HASHES[index], other, size, proof, BIG_ROOTS[size])
    # A doubled size needs one more level than the proof has.
    assert not merkle.verify_inclusion(BIG_HASHES[index], index, size * 2, proof, BIG_ROOTS[size])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_consistency_proof_verifies_and_tampering_fails(data: st.DataObject) -> None:
    new = data.draw(st.integers(1, len(BIG)), label="new_size")
    old = data.draw(st.integers(1, new), label="old_size")
    proof = merkle.consistency_proof(BIG, old, new)
    assert merkle.verify_consistency(old, new, BIG_ROOTS[old], BIG_ROOTS[new], proof)
    if proof:
        which, bit = data.draw(st.integers(0, 10**6)), data.draw(st.integers(0, 255))
        assert not merkle.verify_consistency(old, new, BIG_ROOTS[old], BIG_ROOTS[new], _flip(proof, which, bit))
        assert not merkle.verify_consistency(old, new, BIG_ROOTS[old], BIG_ROOTS[new], proof[:-1])
        assert not merkle.verify_consistency(old, new, BIG_ROOTS[new], BIG_ROOTS[old], proof)
        if new + 1 <= len(BIG):
            assert not merkle.verify_consistency(old, new, BIG_ROOTS[old], BIG_ROOTS[new + 1], proof)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, len(BIG)), st.data())
def test_compact_proofs_equal_reference(size: int, data: st.DataObject) -> None:
    tree = compact.CompactRange()
    stored: dict[compact.NodeId, bytes] = {}
    for node, value in tree.extend(BIG_HASHES[:size]):
        stored[node] = value
    fetch = lambda ids: {i: stored[i] for i in ids if i in stored}  # noqa: E731
    assert tree.root() == BIG_ROOTS[size] == compact.root_at(size, fetch)
    index = data.draw(st.integers(0, size - 1))
    assert compact.inclusion_proof(index, size, fetch) == merkle.inclusion_proof(BIG, index, size)
    old = data.draw(st.integers(0, size))
    assert compact.consistency_proof(old, size, fetch) == merkle.consistency_proof(BIG, old, size)


@given(st.integers(0, 40), st.integers(0, 2**40))
def test_node_storage_key_round_trips(level: int, index: int) -> None:
    node = compact.NodeId(level, index)
    assert compact.NodeId.from_storage_key(node.storage_key) == node


@given(st.integers(0, 2**40), st.integers(0, 2**20))
def test_range_nodes_cover_the_range_with_few_aligned_nodes(lo: int, width: int) -> None:
    nodes = compact.range_nodes(lo, lo + width)
    position = lo
    for node in nodes:
        assert node.index << node.level == position
        position += 1 << node.level
    assert position == lo + width
    assert len(nodes) <= 2 * max(1, width.bit_length())


@settings(max_examples=30, deadline=None)
@given(st.integers(1, len(BIG)))
def test_compact_range_append_above_leaf_is_append_without_the_leaf(size: int) -> None:
    full, above = compact.CompactRange(), compact.CompactRange()
    for leaf in BIG_HASHES[:size]:
        completed = full.append(leaf)
        assert completed[0] == (compact.NodeId(0, full.size - 1), leaf)
        assert above.append_above_leaf(leaf) == [(node.storage_key, value) for node, value in completed[1:]]
    assert above.size == full.size == size and above.root() == full.root() == BIG_ROOTS[size]
    assert above.nodes == compact.range_nodes(0, size) and len(above.hashes) == size.bit_count()
