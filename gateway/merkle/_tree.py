"""Tree heads and proofs of any prefix of a log, over an abstract source of subtree hashes.

A *perfect node* ``(level, index)`` is the root of the complete subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes. Once a log has
grown past it, a perfect node never changes, so a store can keep each one as it completes and
answer any tree head or proof from O(log n) of them: every subtree that RFC 9162 puts in a proof
is either perfect or lies on the right border of the tree, and a right-border subtree is folded
from the perfect nodes that decompose it. Nothing here touches storage; the caller passes a
:class:`SubtreeSource`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from gateway.merkle._hash import EMPTY_ROOT, node_hash
from gateway.merkle.errors import TreeRangeError


class Node(NamedTuple):
    """A perfect subtree: leaves ``[pos << level, (pos + 1) << level)``."""

    level: int
    pos: int


class SubtreeSource(Protocol):
    """Anything that returns the hashes of perfect nodes it holds (a store, a list in memory)."""

    def subtree_hashes(self, nodes: Sequence[Node]) -> Sequence[bytes]:
        """The hashes of ``nodes``, in the same order. Raises if one is missing."""
        ...


def node_id(level: int, index: int) -> int:
    """The position of a perfect node in completion (post-) order, a single integer key.

    Appending leaf ``n`` (counting from 1) completes the nodes of levels 0 up to the number of
    trailing zero bits of ``n``; numbering nodes in that order makes a store's key grow with the
    log, so appends always write at the end of an index.
    """
    n = (index + 1) << level
    return 2 * (n - 1) - (n - 1).bit_count() + level


def perfect_nodes(start: int, end: int) -> list[Node]:
    """The perfect nodes that decompose ``[start, end)``, left to right.

    ``start`` must be a multiple of the largest power of two not above ``end - start``, which
    holds for every subtree of the RFC 9162 recursion and for every prefix ``[0, size)``.
    """
    remaining = end - start
    if remaining > 0 and not remaining & (remaining - 1):  # one perfect node: most proof steps
        level = remaining.bit_length() - 1
        return [Node(level, start >> level)]
    nodes: list[Node] = []
    position = start
    while remaining:
        level = remaining.bit_length() - 1
        nodes.append(Node(level, position >> level))
        position += 1 << level
        remaining -= 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root of a subtree from the hashes of its perfect nodes, left to right (RFC 9162 2.1.1).

    The decomposition is largest first, so the tree splits after the first node each time and
    the fold runs from the right.
    """
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def _largest_power_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose subtree hashes form ``PATH(index, D[0:size])``, bottom-up.

    RFC 9162 section 2.1.3.1. Raises:
        TreeRangeError: unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise TreeRangeError(f"inclusion proof for leaf {index} in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_below(end - start)
        if index - start < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The leaf ranges whose subtree hashes form ``PROOF(first, D[0:second])``, in proof order.

    RFC 9162 section 2.1.4.1; ``first == second`` gives the empty proof. Raises:
        TreeRangeError: unless ``0 < first <= second``.
    """
    if not 0 < first <= second:
        raise TreeRangeError(f"consistency proof from size {first} to size {second}")
    ranges: list[tuple[int, int]] = []
    start, end, m, complete = 0, second, first, True
    while m != end - start:
        k = _largest_power_below(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def hash_ranges(ranges: Sequence[tuple[int, int]], source: SubtreeSource) -> list[bytes]:
    """The subtree hash of each range, fetching every perfect node they need in ONE call."""
    wanted: list[Node] = []
    counts: list[int] = []
    for a, b in ranges:
        width = b - a
        if width > 0 and not width & (width - 1):  # a perfect node: most ranges of a proof
            level = width.bit_length() - 1
            wanted.append(Node(level, a >> level))
            counts.append(1)
        else:
            plan = perfect_nodes(a, b)
            wanted += plan
            counts.append(len(plan))
    fetched = source.subtree_hashes(wanted)
    result: list[bytes] = []
    at = 0
    for count in counts:
        result.append(fetched[at] if count == 1 else fold(fetched[at : at + count]))
        at += count
    return result


def tree_root(size: int, source: SubtreeSource) -> bytes:
    """``MTH(D[0:size])`` from at most log2(size)+1 perfect nodes; the empty tree hashes ``""``."""
    if size < 0:
        raise TreeRangeError(f"tree head of negative size {size}")
    if size == 0:
        return EMPTY_ROOT
    return hash_ranges([(0, size)], source)[0]


def inclusion_proof(index: int, size: int, source: SubtreeSource) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    The same hashes as :func:`inclusion_ranges` names, planned per level rather than per
    range (the proof is on a hot path): below level ``inner`` (where ``index`` and
    ``size - 1`` part), the sibling at each level is a perfect node, except that the one at
    level ``inner - 1`` lies right of ``index`` and may run past ``size`` (then it is folded
    from the perfect nodes of its part of the right border); above, each set bit of ``index``
    adds its perfect left sibling.

    Raises:
        TreeRangeError: unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise TreeRangeError(f"inclusion proof for leaf {index} in a tree of size {size}")
    inner = (index ^ (size - 1)).bit_length()
    wanted = [Node(level, (index >> level) ^ 1) for level in range(inner - 1)]
    border_start = len(wanted)
    if inner:
        start = ((index >> (inner - 1)) ^ 1) << (inner - 1)
        wanted += perfect_nodes(start, min(size, start + (1 << (inner - 1))))
    edge = len(wanted)
    wanted += [
        Node(level, (index >> level) ^ 1)
        for level in range(inner, size.bit_length())
        if index >> level & 1
    ]
    fetched = list(source.subtree_hashes(wanted))
    if edge - border_start > 1:
        fetched[border_start:edge] = [fold(fetched[border_start:edge])]
    return fetched


def consistency_proof(first: int, second: int, source: SubtreeSource) -> list[bytes]:
    """The RFC 9162 consistency proof from tree size ``first`` to ``second``."""
    return hash_ranges(consistency_ranges(first, second), source)


class Frontier:
    """The perfect nodes decomposing ``[0, size)``: the running state of an append-only tree.

    Appending a leaf hash returns every perfect node it completes (the leaf itself first), which
    is exactly what a store must keep; :meth:`root` is the tree head in O(log n) hashes. Memory
    is O(log n) whatever the size, which keeps the offline verifier flat.
    """

    __slots__ = ("_stack", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        nodes = perfect_nodes(0, size)
        if len(nodes) != len(hashes):
            raise TreeRangeError(
                f"a tree of size {size} has {len(nodes)} border nodes, got {len(hashes)}"
            )
        self.size = size
        self._stack: list[tuple[int, bytes]] = [
            (n.level, h) for n, h in zip(nodes, hashes, strict=True)
        ]

    def copy(self) -> Frontier:
        """An independent copy (cheap: at most 64 entries)."""
        other = Frontier()
        other.size = self.size
        other._stack = list(self._stack)
        return other

    def append(self, leaf_hash: bytes) -> list[tuple[Node, bytes]]:
        """Add one leaf; return the perfect nodes it completes, lowest level first."""
        index = self.size
        completed = [(Node(0, index), leaf_hash)]
        stack = self._stack
        level, h = 0, leaf_hash
        while stack and stack[-1][0] == level:
            _, left = stack.pop()
            h = node_hash(left, h)
            level += 1
            completed.append((Node(level, index >> level), h))
        stack.append((level, h))
        self.size = index + 1
        return completed

    def append_keyed(self, leaf_hash: bytes) -> list[tuple[int, bytes]]:
        """Like :meth:`append`, but name each completed node by its :func:`node_id` (faster).

        The nodes completed by one append have consecutive ids, starting at the leaf's.
        """
        n = self.size
        key = 2 * n - n.bit_count()
        completed = [(key, leaf_hash)]
        stack = self._stack
        level, h = 0, leaf_hash
        while stack and stack[-1][0] == level:
            h = node_hash(stack.pop()[1], h)
            level += 1
            completed.append((key + level, h))
        stack.append((level, h))
        self.size = n + 1
        return completed

    def extend_keyed(
        self,
        leaf_hashes: Sequence[bytes],
        keep: list[list[bytes]] | None = None,
        keep_from: int = 0,
    ) -> list[tuple[int, bytes]]:
        """Append many leaves; return every completed node as ``(node_id, hash)``, in id order.

        The same nodes as calling :meth:`append_keyed` once per leaf, in one loop (the ledger's
        batched append path). With ``keep``, each completed node of level ``keep_from`` or
        above is also appended to ``keep[level]`` (which must have a list for every level up
        to the new tree's height): perfect nodes of one level complete in position order, so
        ``keep[level][pos]`` is node ``(level, pos)`` if the lists held every earlier one.
        """
        n = self.size
        stack = self._stack
        sha = hashlib.sha256
        out: list[tuple[int, bytes]] = []
        add = out.append
        key = 2 * n - n.bit_count()
        collect = keep is not None
        for h in leaf_hashes:
            add((key, h))
            if collect and keep_from == 0:
                keep[0].append(h)  # type: ignore[index]
            level = 0
            while stack and stack[-1][0] == level:
                h = sha(b"\x01" + stack.pop()[1] + h).digest()
                level += 1
                add((key + level, h))
                if collect and level >= keep_from:
                    keep[level].append(h)  # type: ignore[index]
            stack.append((level, h))
            key += level + 1
        self.size = n + len(leaf_hashes)
        return out

    def root(self) -> bytes:
        """``MTH(D[0:size])`` of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        return fold([h for _, h in self._stack])

    def border(self) -> list[tuple[Node, bytes]]:
        """The perfect nodes decomposing ``[0, size)`` with their hashes, left to right."""
        return [
            (node, h) for node, (_, h) in zip(perfect_nodes(0, self.size), self._stack, strict=True)
        ]
