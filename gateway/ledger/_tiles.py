"""Subtree hashes stored as tiles: one row per complete tile of ``TILE_HEIGHT`` tree levels.

Tile ``(t, k)`` holds every perfect node of levels ``B = t * TILE_HEIGHT`` up to
``B + TILE_HEIGHT - 1`` whose leaves lie in ``[k << (B + H), (k + 1) << (B + H))``
(``H = TILE_HEIGHT``): ``2**H`` nodes of level ``B``, then ``2**(H-1)`` of level ``B + 1``, and
so on up to the 2 nodes of level ``B + H - 1``, 32 bytes each, level by level, left to right.
Level ``B + H`` is the bottom row of the tile level above. This is the layout of C2SP
tlog-tiles and Trillian, with the inner levels stored too (so a proof never rehashes).

A tile is stored once it is complete, i.e. when node ``(B + H, k)`` completes. The nodes of the
incomplete rightmost tile of each tile level live only in memory (:class:`TileFrontier`): the
writer keeps them as it builds the tree, and :func:`rebuild` recomputes them at open from the
last ``< 2**H`` entries and the top rows of the last ``< 2**H`` tiles of each level.

The row key grows with the log: ``end * 16 + t`` where ``end = (k + 1) << (B + H)`` is the
number of leaves at which the tile completed, so every insert goes to the end of the B-tree
(tiles completed by the same append are keyed lowest tile level first).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

from gateway.ledger.errors import LedgerCorruptError
from gateway.merkle import EMPTY_ROOT, Node, fold, leaf_hash, node_hash
from gateway.store import Connection

TILE_HEIGHT = 4
_H = TILE_HEIGHT

ROW_OFFSETS = tuple((1 << (_H + 1)) - (1 << (_H + 1 - j)) for j in range(_H))  # in hashes
TILE_HASHES = (1 << (_H + 1)) - 2  # 30 hashes, 960 bytes
TILE_BYTES = 32 * TILE_HASHES
MAX_SIZE = 1 << 58  # keys stay below 2**63


def tile_key(t: int, k: int) -> int:
    """The row key of tile ``(t, k)``: the leaf count it completes at, times 16, plus ``t``."""
    return ((k + 1) << (_H * (t + 1) + 4)) | t


def tile_of(level: int, pos: int) -> tuple[int, int]:
    """``(row key, byte offset)`` of perfect node ``(level, pos)`` inside its tile."""
    t, j = divmod(level, _H)
    width = _H - j
    return tile_key(t, pos >> width), (ROW_OFFSETS[j] + (pos & ((1 << width) - 1))) << 5


def pending_start(level: int, size: int) -> int:
    """The first position of ``level`` that lies in an incomplete tile of a tree of ``size``."""
    width = _H - level % _H
    return ((size >> level) >> width) << width


def tiles_stored(t: int, size: int) -> int:
    """How many tiles of tile level ``t`` a tree of ``size`` leaves has completed."""
    return size >> (_H * (t + 1))


class PendingView:
    """The nodes of incomplete tiles at one durable tree size; immutable, shared with readers.

    ``hashes[level][pos - starts[level]]`` is node ``(level, pos)`` for ``pos >= starts[level]``.
    """

    __slots__ = ("hashes", "size", "starts")

    def __init__(self, size: int, starts: tuple[int, ...], hashes: tuple[list[bytes], ...]):
        self.size = size
        self.starts = starts
        self.hashes = hashes


class TileFrontier:
    """The writer's tree state: the RFC 9162 frontier plus the nodes of incomplete tiles.

    :meth:`extend` appends leaf hashes and returns the tiles they complete, as rows to insert;
    :meth:`copy` is what a rolled-back request restores. Memory is O(log n * 2**H).
    """

    __slots__ = ("_pend", "_stack", "size")

    def __init__(
        self,
        size: int = 0,
        stack: list[tuple[int, bytes]] | None = None,
        pend: list[list[bytes]] | None = None,
    ) -> None:
        self.size = size
        self._stack: list[tuple[int, bytes]] = stack if stack is not None else []
        self._pend: list[list[bytes]] = pend if pend is not None else [[]]

    def copy(self) -> TileFrontier:
        """An independent copy (a few dozen short lists)."""
        return TileFrontier(self.size, list(self._stack), [list(p) for p in self._pend])

    def root(self) -> bytes:
        """``MTH(D[0:size])``."""
        if not self._stack:
            return EMPTY_ROOT
        return fold([h for _, h in self._stack])

    def view(self) -> PendingView:
        """An immutable snapshot of the incomplete tiles' nodes, for readers."""
        size = self.size
        pend = self._pend
        return PendingView(
            size,
            tuple(pending_start(level, size) for level in range(len(pend))),
            tuple(list(p) for p in pend),
        )

    def extend(
        self, leaf_hashes: Sequence[bytes], keep: list[list[bytes]], keep_from: int
    ) -> list[tuple[int, bytes]]:
        """Append leaf hashes; return every tile they complete as ``(key, 960-byte blob)``.

        Each completed node of level ``keep_from`` or above is also appended to
        ``keep[level]`` (which must have a list for every level of the new tree).
        """
        n = self.size
        if n + len(leaf_hashes) > MAX_SIZE:
            raise LedgerCorruptError(f"ledger cannot grow beyond {MAX_SIZE} entries")
        stack = self._stack
        pend = self._pend
        while len(pend) <= (n + len(leaf_hashes)).bit_length():
            pend.append([])
        sha = hashlib.sha256
        tiles: list[tuple[int, bytes]] = []
        keep_leaves = keep_from == 0
        pend0 = pend[0]
        for h in leaf_hashes:
            pend0.append(h)
            if keep_leaves:
                keep[0].append(h)
            level = 0
            while stack and stack[-1][0] == level:
                h = sha(b"\x01" + stack.pop()[1] + h).digest()
                level += 1
                pend[level].append(h)
                if level >= keep_from:
                    keep[level].append(h)
                if not level % _H:  # node (level, k) completes tile (t, k) below it
                    base = level - _H
                    rows = pend[base:level]
                    tiles.append(
                        (((n + 1) << 4) | (base // _H), b"".join([h for row in rows for h in row]))
                    )
                    for row in rows:
                        row.clear()
            stack.append((level, h))
            n += 1
        self.size = n
        return tiles


def _fetch(conn: Connection, keys: list[int]) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    for at in range(0, len(keys), 900):
        chunk = keys[at : at + 900]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id, hashes FROM ledger_tiles WHERE id IN ({marks})"  # noqa: S608
        found.update(conn.execute(sql, chunk).fetchall())
    return found


def _tile(found: dict[int, bytes], key: int) -> bytes:
    blob = found.get(key)
    if blob is None:
        raise LedgerCorruptError(f"ledger tile {key} is missing")
    if len(blob) != TILE_BYTES:
        raise LedgerCorruptError(f"ledger tile {key} is {len(blob)} bytes, not {TILE_BYTES}")
    return bytes(blob)


def check_tiles_end(conn: Connection, size: int) -> None:
    """Fail unless the stored tiles are exactly those a tree of ``size`` entries completed.

    Raises:
        LedgerCorruptError: the last tile of some tile level is missing, or a tile lies beyond.
    """
    last = conn.execute("SELECT max(id) FROM ledger_tiles").fetchone()[0]
    expected = [tile_key(t, tiles_stored(t, size) - 1) for t in range(16) if tiles_stored(t, size)]
    if last != (max(expected) if expected else None):
        raise LedgerCorruptError(
            f"ledger of {size} entries should end at tile {max(expected, default=None)}, "
            f"ends at {last}"
        )
    if expected:
        found = _fetch(conn, expected)
        for key in expected:
            _tile(found, key)


def rebuild(conn: Connection, size: int) -> TileFrontier:
    """The writer's state for a stored tree of ``size`` entries (at open).

    Recomputes the incomplete tiles' nodes from the last entries and the top rows of the
    last complete tiles: at most ``2**H`` rows per tile level, never the whole log.

    Raises:
        LedgerCorruptError: a tile it needs is missing or malformed, or entries are missing.
    """
    height = size.bit_length()
    pend: list[list[bytes]] = [[] for _ in range(height + 1)]
    for level in range(height):
        count = size >> level
        start = pending_start(level, size)
        if level == 0:
            rows = conn.execute(
                "SELECT idx, leaf FROM ledger_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, size),
            ).fetchall()
            if [i for i, _ in rows] != list(range(start, size)):
                raise LedgerCorruptError(f"ledger entries {start}..{size - 1} are not all stored")
            pend[0] = [leaf_hash(bytes(leaf)) for _, leaf in rows]
        elif level % _H == 0:  # each node is the root of a complete tile of the level below
            t = level // _H - 1
            found = _fetch(conn, [tile_key(t, k) for k in range(start, count)])
            top = ROW_OFFSETS[_H - 1] << 5
            for k in range(start, count):
                blob = _tile(found, tile_key(t, k))
                pend[level].append(node_hash(blob[top : top + 32], blob[top + 32 : top + 64]))
        else:
            below = pend[level - 1]
            pend[level] = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(pend[level]) != count - start:  # pragma: no cover - follows from the above
            raise LedgerCorruptError(f"level {level}: rebuilt {len(pend[level])} nodes")
    stack = [(level, pend[level][-1]) for level in reversed(range(height)) if size >> level & 1]
    return TileFrontier(size, stack, pend)


def load_levels(conn: Connection, size: int, low: int, pending: PendingView) -> list[list[bytes]]:
    """Every perfect node of level ``low`` and above of a tree of ``size``: ``[level][pos]``.

    ``low`` must be a multiple of the tile height, so whole tile levels are read.
    """
    height = size.bit_length()
    levels: list[list[bytes]] = [[] for _ in range(max(low, height))]
    for t in range(low // _H, (height + _H - 1) // _H):
        keys = [tile_key(t, k) for k in range(tiles_stored(t, size))]
        found = _fetch(conn, keys)
        for key in keys:
            blob = _tile(found, key)
            for j in range(_H):
                level = t * _H + j
                if level < height:
                    at, end = ROW_OFFSETS[j] << 5, (ROW_OFFSETS[j] + (1 << (_H - j))) << 5
                    levels[level] += [blob[i : i + 32] for i in range(at, end, 32)]
    for level in range(low, height):
        levels[level] += pending.hashes[level]
        if len(levels[level]) != size >> level:  # pragma: no cover - follows from the tiles
            raise LedgerCorruptError(f"level {level}: loaded {len(levels[level])} nodes")
    return levels


class TileReader:
    """A :class:`gateway.merkle.SubtreeSource`: nodes of levels >= ``low`` from memory, nodes of
    incomplete tiles from the writer's last published view, the rest from stored tiles (one
    query, usually one row)."""

    __slots__ = ("_conn", "_levels", "_low", "_pending")

    def __init__(
        self, low: int, levels: list[list[bytes]], pending: PendingView, conn: Connection
    ) -> None:
        self._low = low
        self._levels = levels
        self._pending = pending
        self._conn = conn

    def subtree_hashes(self, nodes: Sequence[Node]) -> list[bytes]:
        low, levels = self._low, self._levels
        starts, pend = self._pending.starts, self._pending.hashes
        out: list[bytes] = []
        want: dict[int, list[tuple[int, int]]] = {}
        for level, pos in nodes:
            if level >= low:
                out.append(levels[level][pos])
            elif pos >= starts[level]:
                out.append(pend[level][pos - starts[level]])
            else:
                t, j = divmod(level, _H)
                width = _H - j
                key = (((pos >> width) + 1) << (_H * (t + 1) + 4)) | t
                offset = (ROW_OFFSETS[j] + (pos & ((1 << width) - 1))) << 5
                slots = want.get(key)
                if slots is None:
                    want[key] = [(len(out), offset)]
                else:
                    slots.append((len(out), offset))
                out.append(b"")
        if want:
            if len(want) == 1:
                ((key, slots),) = want.items()
                row = self._conn.execute(
                    "SELECT hashes FROM ledger_tiles WHERE id = ?", (key,)
                ).fetchone()
                if row is None or len(row[0]) != TILE_BYTES:
                    raise LedgerCorruptError(f"ledger tile {key} is missing or malformed")
                blob = row[0]
                for i, offset in slots:
                    out[i] = blob[offset : offset + 32]
            else:
                found = _fetch(self._conn, list(want))
                for key, slots in want.items():
                    blob = _tile(found, key)
                    for i, offset in slots:
                        out[i] = blob[offset : offset + 32]
        return out


def _first_difference(stored: bytes, computed: bytes) -> tuple[int, int]:
    """(level within the tile, position within that level) of the first differing hash."""
    for slot in range(TILE_HASHES):
        if stored[32 * slot : 32 * slot + 32] != computed[32 * slot : 32 * slot + 32]:
            row = max(r for r in range(_H) if ROW_OFFSETS[r] <= slot)
            return row, slot - ROW_OFFSETS[row]
    return 0, 0  # pragma: no cover - called only when the blobs differ


def _pages(conn: Connection, sql: str, page: int = 10_000) -> Iterator[list[Any]]:
    """The rows of ``sql`` (keyed by its first column, ``WHERE key > ?``) page by page: memory
    stays bounded on both stores (a PostgreSQL client cursor holds its whole result)."""
    after = -1
    while rows := conn.execute(f"{sql} LIMIT {page}", (after,)).fetchall():
        yield rows
        after = rows[-1][0]


def _rows(pages: Iterator[list[Any]]) -> Iterator[Any]:
    for rows in pages:
        yield from rows


def verify_and_rebuild(
    conn: Connection, size: int, signed: tuple[int, bytes] | None
) -> TileFrontier:
    """The writer's state at open, every stored tile checked against the entries first.

    Rehashes all ``size`` entries (RFC 9162) and compares each tile they complete with its
    stored row: stored subtree hashes are a cache, and a proof is never served from one the
    entries do not confirm (ADR 0014). ``signed`` is the last signed checkpoint (size, root):
    the entries must still give it, which tells an altered entry from a bad stored hash.

    Raises:
        LedgerCorruptError: entries missing or altered under the last signed checkpoint, or a
            stored tile that is missing, extra or not what the entries give (named by tile,
            level and position).
    """
    frontier = TileFrontier()
    entries = _pages(conn, "SELECT idx, leaf FROM ledger_entries WHERE idx > ? ORDER BY idx")
    tiles = _rows(_pages(conn, "SELECT id, hashes FROM ledger_tiles WHERE id > ? ORDER BY id"))
    stored = next(tiles, None)
    bad: str | None = None
    signed_size, signed_root = signed if signed is not None else (-1, b"")
    root_at_signed = EMPTY_ROOT if signed_size == 0 else None
    for rows in entries:
        if rows[0][0] != frontier.size or rows[-1][0] != frontier.size + len(rows) - 1:
            raise LedgerCorruptError(f"ledger entries from {frontier.size} are not all stored")
        hashes = [leaf_hash(bytes(leaf)) for _, leaf in rows]
        cut = signed_size - frontier.size
        parts = [hashes[:cut], hashes[cut:]] if 0 < cut <= len(hashes) else [hashes]
        for part in parts:
            for key, blob in frontier.extend(part, [], 1 << 30):
                if stored is None or stored[0] != key:
                    bad = bad or f"ledger tile row {key} is missing (found {stored and stored[0]})"
                    continue
                if bytes(stored[1]) != blob and bad is None:
                    t = key & 15
                    k = ((key >> 4) >> (_H * (t + 1))) - 1
                    row, at = _first_difference(bytes(stored[1]), blob)
                    level, pos = _H * t + row, (k << (_H - row)) + at
                    bad = (
                        f"stored subtree hash at level {level}, position {pos} (tile {t}/{k}, "
                        f"row {key}) is not what the entries give"
                    )
                stored = next(tiles, None)
            if frontier.size == signed_size:
                root_at_signed = frontier.root()
    if signed is not None and root_at_signed != signed_root:
        computed = root_at_signed.hex() if root_at_signed is not None else "(entries missing)"
        raise LedgerCorruptError(
            f"the first {signed_size} entries hash to {computed}, but the ledger's last signed "
            f"checkpoint (size {signed_size}) says {signed_root.hex()}: the ledger was altered; "
            "run customs-gateway audit verify on it"
        )
    if stored is not None:
        bad = bad or f"ledger tile row {stored[0]} is beyond the {size} entries"
    if bad is not None:
        raise LedgerCorruptError(
            f"{bad}: a bad stored hash (the entries still give the last signed checkpoint); "
            "no proof is served from unchecked hashes, so the node does not start; restore "
            "ledger_tiles from a backup, and run customs-gateway audit verify on the file"
        )
    if frontier.size != size:  # pragma: no cover - checked by the caller's count
        raise LedgerCorruptError(f"ledger has {frontier.size} entries, expected {size}")
    return frontier
