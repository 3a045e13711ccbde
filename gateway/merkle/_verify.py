"""Proof verification exactly as RFC 9162 sections 2.1.3.2 and 2.1.4.2, step by step.

The edge cases the RFC leaves to the caller are decided in docs/adr/0010: a tree of size 0 has no
inclusion proofs, ``first == 0`` never proves anything, and ``first == second`` holds exactly when
the proof is empty and the two roots are equal.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.merkle._hash import HASH_SIZE, node_hash
from gateway.merkle.errors import ConsistencyProofError, InclusionProofError


def _hex(h: bytes) -> str:
    return h.hex() if h else "(empty)"


def _check_hashes(proof: Sequence[bytes], error: type[Exception], what: str) -> None:
    for position, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise error(f"{what}: proof hash {position} is {len(h)} bytes, not {HASH_SIZE}")


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` implies for ``leaf_hash`` at ``index`` (RFC 9162 2.1.3.2, 1-4).

    Raises:
        InclusionProofError: the index, size, leaf hash or proof length cannot fit together.
    """
    what = f"inclusion of leaf {index} in tree size {size}"
    if len(leaf_hash) != HASH_SIZE:
        raise InclusionProofError(f"{what}: leaf hash is {len(leaf_hash)} bytes, not {HASH_SIZE}")
    _check_hashes(proof, InclusionProofError, what)
    # (1) leaf_index must be below tree_size.
    if index < 0 or index >= size:
        raise InclusionProofError(f"{what}: leaf index is not below the tree size")
    # (2) fn = leaf_index, sn = tree_size - 1.
    fn, sn = index, size - 1
    # (3) r = hash.
    r = leaf_hash
    # (4) for each p in inclusion_path:
    for p in proof:
        # (4a) if sn is 0, stop and fail.
        if sn == 0:
            raise InclusionProofError(f"{what}: proof has {len(proof)} hashes, too many")
        # (4b) if LSB(fn) is set or fn == sn: r = HASH(0x01 || p || r) ...
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # ... and if LSB(fn) is not set, shift both until LSB(fn) is set or fn is 0.
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            # otherwise r = HASH(0x01 || r || p).
            r = node_hash(r, p)
        # (4c) shift both right once.
        fn >>= 1
        sn >>= 1
    # (5, first half) sn must be 0.
    if sn != 0:
        raise InclusionProofError(f"{what}: proof has {len(proof)} hashes, too few")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    RFC 9162 section 2.1.3.2, steps numbered as there.

    Raises:
        InclusionProofError: the proof does not verify; the message names index, size and hashes.
    """
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    # (5, second half) r must equal root_hash.
    if computed != root:
        raise InclusionProofError(
            f"inclusion of leaf {index} in tree size {size}: root {_hex(root)} "
            f"!= recomputed {computed.hex()}"
        )


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``second`` leaves with ``second_root`` extends the ``first`` one.

    RFC 9162 section 2.1.4.2, steps numbered as there, for ``0 < first < second``; for
    ``first == second`` the proof must be empty and the roots equal (ADR 0010).

    Raises:
        ConsistencyProofError: the proof does not verify; the message names sizes and hashes.
    """
    what = f"consistency from size {first} to size {second}"
    if first <= 0:
        raise ConsistencyProofError(f"{what}: the first size must be at least 1")
    if first > second:
        raise ConsistencyProofError(f"{what}: the first size is larger than the second")
    if first == second:
        if proof:
            raise ConsistencyProofError(f"{what}: equal sizes need an empty proof")
        if first_root != second_root:
            raise ConsistencyProofError(
                f"{what}: equal sizes but roots differ: {_hex(first_root)} != {_hex(second_root)}"
            )
        return
    _check_hashes(proof, ConsistencyProofError, what)
    # (1) an empty consistency_path fails.
    if not proof:
        raise ConsistencyProofError(f"{what}: the proof is empty")
    path = list(proof)
    # (2) if first is an exact power of 2, prepend first_hash.
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    # (3) fn = first - 1, sn = second - 1.
    fn, sn = first - 1, second - 1
    # (4) if LSB(fn) is set, shift both until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # (5) fr = sr = the first value of the path.
    fr = sr = path[0]
    # (6) for each subsequent c:
    for c in path[1:]:
        # (6a) if sn is 0, stop and fail.
        if sn == 0:
            raise ConsistencyProofError(f"{what}: proof has {len(proof)} hashes, too many")
        # (6b) if LSB(fn) is set or fn == sn: fold c on the left of both ...
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            # ... and if LSB(fn) is not set, shift both until LSB(fn) is set or fn is 0.
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            # otherwise fold c on the right of sr only.
            sr = node_hash(sr, c)
        # (6c) shift both right once.
        fn >>= 1
        sn >>= 1
    # (7) fr == first_hash, sr == second_hash and sn == 0.
    if sn != 0:
        raise ConsistencyProofError(f"{what}: proof has {len(proof)} hashes, too few")
    if fr != first_root:
        raise ConsistencyProofError(
            f"{what}: first root {_hex(first_root)} != recomputed {fr.hex()}"
        )
    if sr != second_root:
        raise ConsistencyProofError(
            f"{what}: second root {_hex(second_root)} != recomputed {sr.hex()}"
        )
