"""The in-memory upper tree levels give exactly the proofs the stored nodes give.

Every proof is compared with :class:`MemoryTree` (every node in a dict, no cache) and with a
reader that takes every node from the stored tiles (the incomplete tail rebuilt from the file),
while the lowest cached level rises with the log, after a rolled-back request, and after a
reopen with another limit.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ledger import Entry, Ledger
from gateway.ledger._tiles import TileReader, rebuild
from gateway.merkle import MemoryTree, consistency_proof, inclusion_proof, tree_root
from gateway.notes import NoteSigner
from tests.ledger.conftest import ORIGIN, make_entry

LIMITS = st.sampled_from([0, 1, 5, 40, 1 << 16])


def _same_as_memory(ledger: Ledger, tree: MemoryTree, data: st.DataObject) -> None:
    size = ledger.size()
    assert ledger.root() == tree.root()
    conn = sqlite3.connect(ledger.path)
    stored = TileReader(64, [], rebuild(conn, size).view(), conn)
    for _ in range(6):
        n = data.draw(st.integers(1, size), label="size")
        index = data.draw(st.integers(0, n - 1), label="index")
        first = data.draw(st.integers(1, n), label="first")
        assert ledger.root(n) == tree_root(n, tree) == tree_root(n, stored)
        assert ledger.inclusion_proof(index, n) == inclusion_proof(index, n, tree)
        assert ledger.inclusion_proof(index, n) == inclusion_proof(index, n, stored)
        assert ledger.consistency_proof(first, n) == consistency_proof(first, n, tree)
    _, cached = ledger.cached_hashes()
    assert cached <= ledger._cache_limit, f"{cached} hashes cached, limit {ledger._cache_limit}"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(st.integers(1, 70), min_size=1, max_size=6),
    limit=LIMITS,
    reopen_limit=LIMITS,
    data=st.data(),
)
def test_cached_proofs_equal_stored_proofs_while_growing_and_after_reopen(
    signer: NoteSigner, batches: list[int], limit: int, reopen_limit: int, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        tree = MemoryTree()
        done = 0
        with Ledger.open(path, origin=ORIGIN, signer=signer, cache_limit=limit) as ledger:
            for count in batches:
                records = ledger.append_many([make_entry(i) for i in range(done, done + count)])
                for record in records:
                    tree.append(record.encode())
                done += count
                _same_as_memory(ledger, tree, data)
        with Ledger.open(path, origin=ORIGIN, signer=signer, cache_limit=reopen_limit) as again:
            _same_as_memory(again, tree, data)
            records = again.append_many([make_entry(i) for i in range(done, done + 9)])
            for record in records:
                tree.append(record.encode())
            _same_as_memory(again, tree, data)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    before=st.integers(1, 40), failed=st.integers(1, 40), after=st.integers(1, 40), data=st.data()
)
def test_a_rolled_back_request_leaves_no_cached_node_behind(
    signer: NoteSigner, before: int, failed: int, after: int, data: st.DataObject
) -> None:
    def refuse(_conn: sqlite3.Connection, _index: int) -> None:
        raise ValueError("refused by the caller")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        tree = MemoryTree()
        with Ledger.open(path, origin=ORIGIN, signer=signer, cache_limit=8) as ledger:
            for record in ledger.append_many([make_entry(i) for i in range(before)]):
                tree.append(record.encode())
            bad: list[Entry] = [make_entry(1000 + i) for i in range(failed)]
            with pytest.raises(ValueError, match="refused by the caller"):
                ledger.append_many(bad, refuse)
            for record in ledger.append_many(
                [make_entry(i) for i in range(before, before + after)]
            ):
                tree.append(record.encode())
            _same_as_memory(ledger, tree, data)


def test_the_cache_is_bounded_and_read_back_at_open(ledger_path: Path, signer: NoteSigner) -> None:
    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer, cache_limit=100) as ledger:
        ledger.append_many([make_entry(i) for i in range(1000)])
        # levels >= 4 of 1000 leaves: 62 + 31 + 15 + 7 + 3 + 1 = 119 > 100; the next tile
        # base level is 8: 3 + 1
        assert ledger.cached_hashes() == (8, 4)
    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer, cache_limit=1 << 16) as ledger:
        assert ledger.cached_hashes() == (0, 1994)
