"""A whole tree in memory: the reference source for tests, tools and small logs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.merkle._hash import leaf_hash
from gateway.merkle._tree import Frontier, Node
from gateway.merkle.errors import TreeRangeError


class MemoryTree:
    """Every perfect node of a log held in a dict; implements :class:`SubtreeSource`."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._frontier = Frontier()
        self._nodes: dict[Node, bytes] = {}
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return self._frontier.size

    def append(self, leaf: bytes) -> int:
        """Add the entry bytes ``leaf``; return its index."""
        return self.append_hash(leaf_hash(leaf))

    def append_hash(self, h: bytes) -> int:
        """Add an already hashed leaf; return its index."""
        index = self._frontier.size
        self._nodes.update(self._frontier.append(h))
        return index

    def root(self) -> bytes:
        """The current tree head."""
        return self._frontier.root()

    def subtree_hashes(self, nodes: Sequence[Node]) -> list[bytes]:
        """The stored hash of each perfect node."""
        try:
            return [self._nodes[n] for n in nodes]
        except KeyError as e:
            raise TreeRangeError(
                f"no perfect node {e.args[0]} in a tree of size {self.size}"
            ) from e
