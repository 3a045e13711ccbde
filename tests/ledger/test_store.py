"""The SQLite ledger: proofs from stored subtrees, group commit, callbacks, triggers, reopen."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.ledger import Ledger, LedgerCorruptError, LedgerRangeError, decode_record
from gateway.merkle import (
    MemoryTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from gateway.notes import NoteSigner, open_note, parse_checkpoint
from tests.ledger.conftest import ORIGIN, make_entry


def test_heads_and_proofs_match_a_tree_in_memory(ledger: Ledger) -> None:
    records = ledger.append_many([make_entry(i) for i in range(37)])
    assert [r.index for r in records] == list(range(37))
    tree = MemoryTree(r.encode() for r in records)
    for size in range(1, 38):
        root = ledger.root(size)
        assert root == MemoryTree(r.encode() for r in records[:size]).root()
        for index in range(size):
            proof = ledger.inclusion_proof(index, size)
            verify_inclusion(leaf_hash(records[index].encode()), index, size, proof, root)
        for first in range(1, size + 1):
            verify_consistency(
                first, size, ledger.root(first), root, ledger.consistency_proof(first, size)
            )
    assert ledger.root() == tree.root()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda lg: lg.inclusion_proof(0, 11), "tree size 11 is beyond the ledger size 10"),
        (lambda lg: lg.inclusion_proof(10, 10), "entry 10 is not below tree size 10"),
        (lambda lg: lg.consistency_proof(0, 5), "0 < first <= second, got 0, 5"),
        (lambda lg: lg.consistency_proof(6, 5), "got 6, 5"),
        (lambda lg: lg.root(11), "beyond the ledger size 10"),
        (lambda lg: lg.leaves(5, 11), "beyond the ledger size 10"),
    ],
    ids=["size-beyond", "index-at-size", "first-zero", "first-above", "root-beyond", "entries"],
)
def test_out_of_range_requests_name_the_numbers(ledger: Ledger, call: object, match: str) -> None:
    ledger.append_many([make_entry(i) for i in range(10)])
    with pytest.raises(LedgerRangeError, match=match):
        call(ledger)  # type: ignore[operator]


def test_entries_are_paged(ledger: Ledger) -> None:
    ledger.append_many([make_entry(i) for i in range(30)])
    page = ledger.entries(3, 30, limit=10)
    assert [r.index for r in page] == list(range(3, 13))
    assert page[0].entry == make_entry(3)


def test_concurrent_appends_share_commits_and_all_land(ledger: Ledger) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(20):
            index = ledger.append(make_entry(t * 100 + i)).index
            with lock:
                results.append(index)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(320))
    leaves = [leaf for _, leaf in ledger.leaves(0, 320, limit=1000)]
    assert len(leaves) == 320
    assert ledger.root() == MemoryTree(leaves).root()


def test_within_callback_commits_with_the_entry_and_a_failing_one_rolls_back_alone(
    ledger: Ledger,
) -> None:
    ledger.write(lambda c: c.execute("CREATE TABLE outbox (idx INTEGER PRIMARY KEY, dest TEXT)"))
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def good(conn: sqlite3.Connection, index: int) -> None:
        conn.execute("INSERT INTO outbox VALUES (?, 'CN')", (index,))

    def bad(conn: sqlite3.Connection, index: int) -> None:
        conn.execute("INSERT INTO outbox VALUES (?, 'MO')", (index,))
        raise ValueError(f"outbox refused entry {index}")

    def call(fn: object, i: int) -> None:
        barrier.wait()
        try:
            ledger.append(make_entry(i), within=fn)  # type: ignore[arg-type]
        except ValueError as e:
            errors.append(e)

    threads = [threading.Thread(target=call, args=(f, i)) for i, f in enumerate([good, bad, good])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1
    assert "outbox refused entry" in str(errors[0])
    assert ledger.size() == 2
    rows = ledger.reader().execute("SELECT idx, dest FROM outbox ORDER BY idx").fetchall()
    assert rows == [(0, "CN"), (1, "CN")]
    assert [r.index for r in ledger.entries(0, 2)] == [0, 1]


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE ledger_entries SET leaf = x'00' WHERE idx = 0",
        "DELETE FROM ledger_entries WHERE idx = 0",
        "UPDATE ledger_tiles SET hashes = x'00'",
        "DELETE FROM ledger_tiles",
        "DELETE FROM ledger_checkpoints",
        "UPDATE ledger_checkpoints SET note = ''",
        "DELETE FROM ledger_meta",
    ],
    ids=[
        "update-entry",
        "delete-entry",
        "update-tile",
        "delete-tile",
        "delete-checkpoint",
        "update-checkpoint",
        "delete-meta",
    ],
)
def test_triggers_refuse_update_and_delete(ledger: Ledger, ledger_path: Path, sql: str) -> None:
    ledger.append_many([make_entry(i) for i in range(16)])  # one complete tile
    ledger.checkpoint()
    conn = sqlite3.connect(ledger_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(sql)
    conn.close()


def test_reopen_continues_the_same_tree(ledger_path: Path, signer: NoteSigner) -> None:
    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer) as lg:
        lg.append_many([make_entry(i) for i in range(13)])
    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer) as lg:
        assert lg.size() == 13
        lg.append_many([make_entry(i) for i in range(13, 21)])
        leaves = [leaf for _, leaf in lg.leaves(0, 21)]
        assert lg.root() == MemoryTree(leaves).root()
        assert decode_record(leaves[20]).index == 20


def test_reopen_with_another_origin_is_refused(ledger_path: Path, signer: NoteSigner) -> None:
    Ledger.open(ledger_path, origin=ORIGIN, signer=signer).close()
    with pytest.raises(LedgerCorruptError, match=r"not 'mo\.customs-exchange/ledger'"):
        Ledger.open(ledger_path, origin="mo.customs-exchange/ledger", signer=signer)


def test_schema_hook_creates_other_tables_in_the_same_file(
    ledger_path: Path, signer: NoteSigner
) -> None:
    def schema(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS payloads (id TEXT PRIMARY KEY, body BLOB)")

    with Ledger.open(ledger_path, origin=ORIGIN, signer=signer, schema=schema) as lg:
        lg.write(lambda c: c.execute("INSERT INTO payloads VALUES ('m1', x'01')"))
        assert lg.reader().execute("SELECT id FROM payloads").fetchall() == [("m1",)]


def test_checkpoints_are_signed_stored_and_cosigned(ledger: Ledger, signer: NoteSigner) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.notes import NoteError, cosign

    assert ledger.latest_checkpoint() is None
    ledger.append_many([make_entry(i) for i in range(5)])
    first = ledger.checkpoint()
    assert ledger.checkpoint() == first  # same size: the stored one
    ledger.append_many([make_entry(i) for i in range(5, 9)])
    second = ledger.checkpoint()
    assert (first.size, second.size) == (5, 9)
    assert second.root_hash == ledger.root(9)
    note, _ = open_note(second.note, [signer.verifier])
    assert parse_checkpoint(note.text) == second.checkpoint
    witness = NoteSigner("mo.customs-exchange/witness", Ed25519PrivateKey.generate(), 0x04)
    line = cosign(second.checkpoint.body(), witness, 1_700_000_000)
    ledger.add_cosignature(9, line, witness.verifier)
    ledger.add_cosignature(9, line, witness.verifier)  # idempotent
    latest = ledger.latest_checkpoint()
    assert latest is not None
    _, verified = open_note(latest.note, [signer.verifier, witness.verifier])
    assert [v.timestamp for v in verified] == [None, 1_700_000_000]
    assert [c.size for c in ledger.checkpoints(min_size=6)] == [9]
    with pytest.raises(NoteError, match="does not verify"):
        ledger.add_cosignature(5, line, witness.verifier)
    with pytest.raises(LedgerRangeError, match="no checkpoint of size 7"):
        ledger.add_cosignature(7, line)
