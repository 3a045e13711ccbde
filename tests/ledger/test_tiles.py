"""Subtree hashes in tiles: exactly the complete tiles are stored, each holding the right
hashes; the incomplete tail is rebuilt at open (also after a crash mid-tile); every proof equals
the pure Merkle core's; a file whose tiles do not end where its entries do is refused."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ledger import Ledger, LedgerCorruptError
from gateway.ledger._tiles import (
    ROW_OFFSETS,
    TILE_BYTES,
    TILE_HEIGHT,
    TileFrontier,
    TileReader,
    rebuild,
    tile_key,
    tiles_stored,
)
from gateway.merkle import (
    MemoryTree,
    Node,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    tree_root,
)
from gateway.notes import NoteSigner
from tests.ledger.conftest import ORIGIN, make_entry

H = TILE_HEIGHT
ROOT = Path(__file__).resolve().parents[2]


def _expected_tiles(tree: MemoryTree) -> dict[int, bytes]:
    """Every complete tile of ``tree``, built from the reference tree's nodes."""
    tiles: dict[int, bytes] = {}
    t = 0
    while count := tiles_stored(t, tree.size):
        for k in range(count):
            nodes = [
                Node(t * H + j, (k << (H - j)) + i) for j in range(H) for i in range(1 << (H - j))
            ]
            tiles[tile_key(t, k)] = b"".join(tree.subtree_hashes(nodes))
        t += 1
    return tiles


def _stored_tiles(path: Path) -> dict[int, bytes]:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT id, hashes FROM ledger_tiles ORDER BY id").fetchall()
    conn.close()
    return {key: bytes(blob) for key, blob in rows}


def _check_proofs(ledger: Ledger, tree: MemoryTree, sizes: list[int]) -> None:
    for n in sizes:
        assert ledger.root(n) == tree_root(n, tree), f"root of {n}"
        for index in sorted({0, n // 2, n - 1, max(0, n - 17)}):
            assert ledger.inclusion_proof(index, n) == inclusion_proof(index, n, tree), (index, n)
        for first in sorted({1, n // 3 or 1, n}):
            assert ledger.consistency_proof(first, n) == consistency_proof(first, n, tree)


SIZES = [0, 1, 2, 15, 16, 17, 31, 32, 33, 255, 256, 257, 271, 272, 4095, 4096, 4097]


@pytest.mark.parametrize("size", SIZES, ids=[f"size-{s}" for s in SIZES])
def test_exactly_the_complete_tiles_are_stored_and_the_tail_is_rebuilt_at_open(
    ledger_path: Path, signer: NoteSigner, size: int
) -> None:
    tree = MemoryTree()
    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer, cache_limit=0) as ledger:
        for record in ledger.append_many([make_entry(i) for i in range(size)]):
            tree.append(record.encode())
        assert ledger.root() == tree.root()
    stored = _stored_tiles(ledger_path)
    assert stored == _expected_tiles(tree)
    assert all(len(blob) == TILE_BYTES for blob in stored.values())
    assert list(stored) == sorted(stored), "keys grow in completion order"
    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer, cache_limit=0) as again:
        assert again.size() == size
        assert again.root() == tree.root()
        sizes = sorted({s for s in (1, size // 2, size - 1, size) if 1 <= s <= size})
        _check_proofs(again, tree, sizes)
        for record in again.append_many([make_entry(i) for i in range(size, size + 17)]):
            tree.append(record.encode())
        _check_proofs(again, tree, [size + 17])
    assert _stored_tiles(ledger_path) == _expected_tiles(tree)


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(0, 600),
    batches=st.lists(st.integers(0, 300), min_size=1, max_size=5),
)
def test_tile_frontier_emits_the_tiles_of_the_reference_tree(
    start: int, batches: list[int]
) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(start + sum(batches))]
    tree = MemoryTree(leaves)
    prefix = MemoryTree(leaves[:start])
    emitted = dict(_expected_tiles(prefix))
    frontier = TileFrontier()
    keep: list[list[bytes]] = [[] for _ in range(12)]
    frontier.extend([leaf_hash(x) for x in leaves[:start]], keep, 0)
    at = start
    for count in batches:
        # a copy grown with other leaves (a rolled-back request) must leave the original alone
        frontier.copy().extend([leaf_hash(b"other")] * count, [[] for _ in range(12)], 99)
        for key, blob in frontier.extend([leaf_hash(x) for x in leaves[at : at + count]], keep, 0):
            assert key not in emitted, f"tile {key} emitted twice"
            emitted[key] = blob
        at += count
        assert frontier.size == at
        assert frontier.root() == tree_root(at, tree)
    assert emitted == _expected_tiles(tree)
    assert keep[: tree.size.bit_length()] == [
        list(tree.subtree_hashes([Node(level, p) for p in range(tree.size >> level)]))
        for level in range(tree.size.bit_length())
    ]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(st.integers(1, 150), min_size=1, max_size=5),
    limit=st.sampled_from([0, 3, 30, 1 << 18]),
    data=st.data(),
)
def test_every_proof_equals_the_pure_core_and_a_reader_of_the_file_alone(
    signer: NoteSigner, batches: list[int], limit: int, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        tree = MemoryTree()
        done = 0
        with Ledger.open(path, origin=ORIGIN, signer=signer, cache_limit=limit) as ledger:
            for count in batches:
                for record in ledger.append_many(
                    [make_entry(i) for i in range(done, done + count)]
                ):
                    tree.append(record.encode())
                done += count
            conn = sqlite3.connect(path)
            from_file = TileReader(64, [], rebuild(conn, done).view(), conn)
            for _ in range(10):
                n = data.draw(st.integers(1, done), label="size")
                index = data.draw(st.integers(0, n - 1), label="index")
                first = data.draw(st.integers(1, n), label="first")
                expected = inclusion_proof(index, n, tree)
                assert ledger.inclusion_proof(index, n) == expected
                assert inclusion_proof(index, n, from_file) == expected
                assert ledger.consistency_proof(first, n) == consistency_proof(first, n, tree)
                assert tree_root(n, from_file) == ledger.root(n) == tree_root(n, tree)
            conn.close()


CRASHING_WRITER = """
import os, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gateway.ledger import Ledger
from gateway.notes import NoteSigner
from tests.ledger.conftest import ORIGIN, make_entry

signer = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
ledger = Ledger.open(sys.argv[1], origin=ORIGIN, signer=signer)
for start, count in ((0, 20), (20, 3), (23, 4)):
    ledger.append_many([make_entry(i) for i in range(start, start + count)])
os.kill(os.getpid(), 9)
"""


def test_reopen_after_a_kill_mid_tile_continues_the_same_tree(
    ledger_path: Path, signer: NoteSigner
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(ledger_path)], env=env, check=False
    )
    assert done.returncode == -9
    tree = MemoryTree()
    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer) as ledger:
        assert ledger.size() == 27  # 16 in a stored tile, 11 in the rebuilt tail
        for record in ledger.entries(0, 27):
            tree.append(record.encode())
        assert ledger.root() == tree.root()
        for record in ledger.append_many([make_entry(i) for i in range(27, 40)]):
            tree.append(record.encode())
        _check_proofs(ledger, tree, [27, 31, 32, 33, 40])
    assert _stored_tiles(ledger_path) == _expected_tiles(tree)


def _drop_tile_triggers(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TRIGGER ledger_tiles_no_update")
    conn.execute("DROP TRIGGER ledger_tiles_no_delete")


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("DELETE FROM ledger_tiles WHERE id = 8448", r"should end at tile 8448, ends at 8193"),
        (f"DELETE FROM ledger_tiles WHERE id = {tile_key(1, 1)}", r"tile 8193 is missing"),
        ("DELETE FROM ledger_entries WHERE idx >= 520", r"should end at tile 8193, ends at 8448"),
        ("UPDATE ledger_tiles SET hashes = x'00' WHERE id = 8448", r"8448 is 1 bytes, not 960"),
        ("DELETE FROM ledger_entries WHERE idx = 520", r"ledger has 533 entries but its last"),
    ],
    ids=["last-tile-lost", "level-1-tile-lost", "entries-lost", "tile-cut", "tail-entry-lost"],
)
def test_tiles_that_do_not_end_where_the_entries_do_are_refused_at_open(
    ledger_path: Path, signer: NoteSigner, sql: str, match: str
) -> None:
    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer) as ledger:
        # level 0: 33 tiles, the last keyed 528 * 16; level 1: 2 tiles, the last 512 * 16 + 1
        ledger.append_many([make_entry(i) for i in range(534)])
    conn = sqlite3.connect(ledger_path)
    _drop_tile_triggers(conn)
    conn.execute("DROP TRIGGER ledger_entries_no_delete")
    conn.execute(sql)
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorruptError, match=match):
        Ledger.open(ledger_path, origin=ORIGIN, signer=signer)


@pytest.mark.parametrize("index", [530, 533, 100], ids=["tail-entry", "last-entry", "tiled-entry"])
def test_an_altered_entry_under_the_last_checkpoint_is_refused_at_open(
    ledger_path: Path, signer: NoteSigner, index: int
) -> None:
    """Every entry is rehashed at open and every stored tile checked against them (ADR 0014):
    an altered entry, in the tail or inside a complete tile, no longer gives the last signed
    checkpoint's root, and the node does not start on it."""
    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer) as ledger:
        ledger.append_many([make_entry(i) for i in range(534)])
        ledger.checkpoint()
    conn = sqlite3.connect(ledger_path)
    conn.execute("DROP TRIGGER ledger_entries_no_update")
    (leaf,) = conn.execute("SELECT leaf FROM ledger_entries WHERE idx = ?", (index,)).fetchone()
    altered = bytearray(leaf)
    altered[-1] ^= 0x01  # the last byte of a digest
    conn.execute("UPDATE ledger_entries SET leaf = ? WHERE idx = ?", (bytes(altered), index))
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorruptError, match=r"last signed checkpoint \(size 534\)"):
        Ledger.open(ledger_path, origin=ORIGIN, signer=signer)


@pytest.mark.parametrize(
    ("slot", "key", "named"),
    [
        (13, tile_key(0, 0), "level 0, position 13 (tile 0/0, row 256)"),
        (16 + 3, tile_key(0, 5), "level 1, position 43 (tile 0/5, row 1536)"),
        (28 + 1, tile_key(1, 1), "level 7, position 3 (tile 1/1, row 8193)"),
    ],
    ids=["leaf-hash", "inner-hash", "level-1-tile"],
)
@pytest.mark.parametrize("checkpointed", [True, False], ids=["signed", "unsigned"])
def test_a_bad_stored_hash_is_refused_at_open_and_named(
    ledger_path: Path, signer: NoteSigner, slot: int, key: int, named: str, checkpointed: bool
) -> None:
    """One corrupted subtree hash: the node would serve failing proofs from it, so it does not
    start, and says it is a bad stored hash, not an altered entry."""
    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer) as ledger:
        ledger.append_many([make_entry(i) for i in range(534)])
        if checkpointed:
            ledger.checkpoint()
    conn = sqlite3.connect(ledger_path)
    _drop_tile_triggers(conn)
    (blob,) = conn.execute("SELECT hashes FROM ledger_tiles WHERE id = ?", (key,)).fetchone()
    blob = bytearray(blob)
    blob[32 * slot] ^= 0xFF
    conn.execute("UPDATE ledger_tiles SET hashes = ? WHERE id = ?", (bytes(blob), key))
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorruptError, match=f"stored subtree hash at {re.escape(named)}") as e:
        Ledger.open(ledger_path, origin=ORIGIN, signer=signer)
    assert "a bad stored hash" in str(e.value)
    assert "altered" not in str(e.value)


def test_a_schema_version_1_file_is_refused(ledger_path: Path, signer: NoteSigner) -> None:
    conn = sqlite3.connect(ledger_path)
    conn.execute("CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.executemany(
        "INSERT INTO ledger_meta VALUES (?, ?)", [("origin", ORIGIN), ("schema_version", "1")]
    )
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorruptError, match="unknown schema version 1"):
        Ledger.open(ledger_path, origin=ORIGIN, signer=signer)


def test_row_offsets_follow_the_documented_formula() -> None:
    assert ROW_OFFSETS == (0, 16, 24, 28)
    assert [32 - 2 ** (5 - j) for j in range(H)] == list(ROW_OFFSETS)
    assert tile_key(0, 0) == 16 * 16
    assert tile_key(1, 0) == 256 * 16 + 1
