"""Property tests: every generated proof verifies; any alteration of it fails.

Proof generation (stored subtree hashes, one fetch per proof) is checked against a direct
transcription of the RFC 9162 recursive definitions, then against the RFC verifier.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.merkle import (
    ConsistencyProofError,
    Frontier,
    InclusionProofError,
    MemoryTree,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(4, "big")).digest()[: i % 7] for i in range(n)]


TREE = MemoryTree(_leaves(MAX_SIZE))
LEAVES = _leaves(MAX_SIZE)


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(d: list[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH, literally."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return leaf_hash(d[0])
    k = _k(len(d))
    return node_hash(_mth(d[:k]), _mth(d[k:]))


def _path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH, literally."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*_path(m, d[:k]), _mth(d[k:])]
    return [*_path(m - k, d[k:]), _mth(d[:k])]


def _subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF, literally."""
    n = len(d)
    if m == n:
        return [] if b else [_mth(d)]
    k = _k(n)
    if m <= k:
        return [*_subproof(m, d[:k], b), _mth(d[k:])]
    return [*_subproof(m - k, d[k:], False), _mth(d[:k])]


sizes = st.integers(min_value=1, max_value=MAX_SIZE)


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return draw(st.integers(0, size - 1)), size


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    second = draw(sizes)
    return draw(st.integers(1, second)), second


@settings(max_examples=200)
@given(sizes)
def test_root_matches_the_rfc_definition(size: int) -> None:
    assert tree_root(size, TREE) == _mth(LEAVES[:size])


@settings(max_examples=200)
@given(index_and_size())
def test_inclusion_proof_matches_the_rfc_definition_and_verifies(case: tuple[int, int]) -> None:
    index, size = case
    proof = inclusion_proof(index, size, TREE)
    assert proof == _path(index, LEAVES[:size])
    verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, tree_root(size, TREE))


@settings(max_examples=200)
@given(two_sizes())
def test_consistency_proof_matches_the_rfc_definition_and_verifies(case: tuple[int, int]) -> None:
    first, second = case
    proof = consistency_proof(first, second, TREE)
    assert proof == _subproof(first, LEAVES[:second], True)
    verify_consistency(first, second, tree_root(first, TREE), tree_root(second, TREE), proof)


def _sides(index: int, size: int) -> list[bool]:
    """For each proof hash, whether it sits left of the path (the shape the verifier sees)."""
    return [a < index for a, _ in inclusion_ranges(index, size)]


def _shape(first: int, second: int) -> tuple[bool, list[bool]]:
    """What the consistency verifier sees of the sizes: power-of-two start, proof hash sides."""
    if not 0 < first <= second:
        return (False, [])
    return (first & (first - 1) == 0, [b <= first for _, b in consistency_ranges(first, second)])


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=300)
@given(
    index_and_size(),
    st.sampled_from(["proof", "root", "leaf", "index", "size", "drop", "add"]),
    st.integers(0, 10_000),
)
def test_any_altered_inclusion_proof_fails(case: tuple[int, int], what: str, salt: int) -> None:
    index, size = case
    proof = inclusion_proof(index, size, TREE)
    root = tree_root(size, TREE)
    leaf = leaf_hash(LEAVES[index])
    if what == "proof":
        if not proof:
            proof = [leaf]
        else:
            at = salt % len(proof)
            proof[at] = _flip(proof[at], salt)
    elif what == "root":
        root = _flip(root, salt)
    elif what == "leaf":
        leaf = _flip(leaf, salt)
    elif what == "index":
        other = salt % (size + 1)
        index = other if other != index else index + 1
        if LEAVES[index % size] == LEAVES[case[0]] and index < size:
            return  # two equal leaves: the proof legitimately fits both positions' hash
    elif what == "size":
        size = max(index + 1, (size + 1 + salt % 5) if salt % 2 else size - 1 - salt % 5)
        if size == case[1]:
            size += 1
        if _sides(index, size) == _sides(index, case[1]):
            # Same length and same left/right pattern: the RFC algorithm computes the same
            # root for both sizes; only the signed (size, root) pair of a checkpoint binds it.
            return
    elif what == "drop":
        if not proof:
            proof = [root]
        else:
            proof.pop(salt % len(proof))
    else:
        proof.insert(salt % (len(proof) + 1), hashlib.sha256(bytes([salt % 256])).digest())
    with pytest.raises(InclusionProofError, match=f"leaf {index} in tree size {size}"):
        verify_inclusion(leaf, index, size, proof, root)


@settings(max_examples=300)
@given(
    two_sizes(),
    st.sampled_from(["proof", "first_root", "second_root", "first", "second", "drop", "add"]),
    st.integers(0, 10_000),
)
def test_any_altered_consistency_proof_fails(case: tuple[int, int], what: str, salt: int) -> None:
    first, second = case
    proof = consistency_proof(first, second, TREE)
    r1, r2 = tree_root(first, TREE), tree_root(second, TREE)
    if what == "proof":
        if not proof:
            proof = [r1]
        else:
            at = salt % len(proof)
            proof[at] = _flip(proof[at], salt)
    elif what == "first_root":
        r1 = _flip(r1, salt)
    elif what == "second_root":
        r2 = _flip(r2, salt)
    elif what == "first":
        first = first + 1 + salt % 3 if salt % 2 or first == 1 else first - 1
    elif what == "second":
        second = second + 1 + salt % 3 if salt % 2 or second == first else second - 1
    elif what == "drop":
        if not proof:
            proof = [r1]
        else:
            proof.pop(salt % len(proof))
    else:
        proof.insert(salt % (len(proof) + 1), hashlib.sha256(bytes([salt % 256])).digest())
    if what in ("first", "second") and _shape(first, second) == _shape(*case):
        return  # the RFC algorithm sees the same shape: only the signed sizes bind these
    with pytest.raises(ConsistencyProofError, match=f"from size {first} to size {second}"):
        verify_consistency(first, second, r1, r2, proof)


@settings(max_examples=100)
@given(sizes)
def test_frontier_restored_from_its_border_continues_the_same_tree(size: int) -> None:
    full = Frontier()
    for leaf in LEAVES[:size]:
        full.append(leaf_hash(leaf))
    border = full.border()
    restored = Frontier(size, [h for _, h in border])
    assert restored.root() == full.root() == _mth(LEAVES[:size])
    if size < MAX_SIZE:
        restored.append(leaf_hash(LEAVES[size]))
        assert restored.root() == _mth(LEAVES[: size + 1])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: inclusion_proof(0, 0, TREE), "leaf 0 in a tree of size 0"),
        (lambda: inclusion_proof(5, 5, TREE), "leaf 5 in a tree of size 5"),
        (lambda: consistency_proof(0, 5, TREE), "from size 0 to size 5"),
        (lambda: consistency_proof(6, 5, TREE), "from size 6 to size 5"),
        (lambda: tree_root(MAX_SIZE + 1, TREE), "no perfect node"),
    ],
    ids=["empty-tree", "index-at-size", "first-zero", "first-above-second", "beyond-the-tree"],
)
def test_degenerate_requests_are_refused(call: object, match: str) -> None:
    from gateway.merkle import TreeRangeError

    with pytest.raises(TreeRangeError, match=match):
        call()  # type: ignore[operator]


def test_append_keyed_names_the_same_nodes_as_append() -> None:
    from gateway.merkle import node_id

    a, b = Frontier(), Frontier()
    for leaf in LEAVES[:100]:
        plain = [(node_id(n.level, n.pos), h) for n, h in a.append(leaf_hash(leaf))]
        assert b.append_keyed(leaf_hash(leaf)) == plain


@given(st.integers(0, 70), st.lists(st.integers(0, 40), min_size=1, max_size=6))
def test_extend_keyed_names_the_same_nodes_as_append_keyed(start: int, batches: list[int]) -> None:
    one, many = Frontier(), Frontier()
    leaves = [leaf_hash(bytes([i % 256, i // 256])) for i in range(start + sum(batches))]
    one.extend_keyed(leaves[:start])
    for h in leaves[:start]:
        many.append_keyed(h)
    at = start
    for count in batches:
        expected = [node for h in leaves[at : at + count] for node in many.append_keyed(h)]
        assert one.extend_keyed(leaves[at : at + count]) == expected
        at += count
    assert one.root() == many.root()
    assert one.size == many.size == at
