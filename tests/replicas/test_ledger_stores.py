"""The ledger on both stores: versioned schemas, identical bytes, database-sequenced appends."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import DatabaseSource, WitnessPolicy, check_ledger, write_export
from gateway.ledger import Ledger, LedgerOriginError
from gateway.merkle import MemoryTree
from gateway.notes import NoteSigner
from gateway.store import Connection, Database, SchemaVersionError, open_database
from tests.ledger.conftest import ORIGIN, make_entry

pytestmark = pytest.mark.postgres


UNWITNESSED = WitnessPolicy.unwitnessed()  # these tests check the log, not witnessing
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, KEY)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Database]:
    db = open_database(postgres_url, Path("unused"))
    yield db
    db.close()


class FixedClock:
    """Milliseconds that advance by one per call, from a fixed start: the same on both runs."""

    def __init__(self) -> None:
        self.now = 1_790_000_000_000

    def __call__(self) -> int:
        self.now += 1
        return self.now


def fill(ledger: Ledger) -> None:
    for batch in range(5):
        ledger.append_many([make_entry(batch * 10 + i) for i in range(7 + batch)])
        if batch % 2:
            ledger.checkpoint()


def test_schema_created_once_and_versioned_on_both(
    tmp_path: Path, pg: Database, signer: NoteSigner
) -> None:
    for where in (tmp_path / "ledger.db", pg):
        Ledger.open(where, origin=ORIGIN, signer=signer).close()
        with Ledger.open(where, origin=ORIGIN, signer=signer) as again:
            rows = again.reader().execute("SELECT name, version FROM store_schema").fetchall()
            assert rows == [("ledger", 1)]


def test_newer_schema_is_refused(pg: Database, signer: NoteSigner) -> None:
    Ledger.open(pg, origin=ORIGIN, signer=signer).close()
    conn = pg.connect()
    conn.execute("UPDATE store_schema SET version = 9 WHERE name = 'ledger'")
    conn.close()
    with pytest.raises(SchemaVersionError, match="version 9; this gateway knows versions up to 1"):
        Ledger.open(pg, origin=ORIGIN, signer=signer)


def test_another_origin_is_refused(pg: Database, signer: NoteSigner) -> None:
    Ledger.open(pg, origin=ORIGIN, signer=signer).close()
    other = "cn.customs-exchange/ledger"
    with pytest.raises(LedgerOriginError, match=r"is the ledger of 'hk\.customs-exchange/ledger'"):
        Ledger.open(pg, origin=other, signer=NoteSigner(other, KEY))


def test_append_only_triggers_on_postgres(pg: Database, signer: NoteSigner) -> None:
    with Ledger.open(pg, origin=ORIGIN, signer=signer) as ledger:
        ledger.append(make_entry(0))
    conn = pg.connect()
    try:
        for sql in (
            "UPDATE ledger_entries SET leaf = ''",
            "DELETE FROM ledger_entries",
            "TRUNCATE ledger_entries",
        ):
            with pytest.raises(psycopg.IntegrityError, match="ledger_entries is append-only"):
                conn.execute(sql)
    finally:
        conn.close()


def test_same_entries_same_clock_give_identical_ledgers(
    tmp_path: Path, pg: Database, signer: NoteSigner
) -> None:
    results = []
    for where in (tmp_path / "ledger.db", pg):
        with Ledger.open(where, origin=ORIGIN, signer=signer, clock=FixedClock()) as ledger:
            fill(ledger)
            size = ledger.size()
            results.append(
                (
                    size,
                    ledger.leaves(0, size),
                    ledger.root(),
                    [ledger.inclusion_proof(i, size) for i in range(size)],
                    ledger.consistency_proof(3, size),
                    [(c.note, c.created_ms) for c in ledger.checkpoints()],
                )
            )
    assert results[0][0] == 45
    assert results[0] == results[1]


def test_two_writers_on_one_database_give_one_ledger(
    tmp_path: Path, pg: Database, signer: NoteSigner
) -> None:
    first = Ledger.open(pg, origin=ORIGIN, signer=signer)
    second = Ledger.open(pg, origin=ORIGIN, signer=signer)
    errors: list[BaseException] = []

    def load(ledger: Ledger, base: int) -> None:
        try:
            for i in range(40):
                futures = [ledger.queue_append([make_entry(base + i * 5 + j)]) for j in range(5)]
                for future in futures:
                    future.result()
                if i % 10 == 9:
                    ledger.checkpoint()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=load, args=(ledger, base))
        for ledger, base in ((first, 0), (second, 10_000), (first, 20_000), (second, 30_000))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    try:
        assert first.size() == second.size() == 800
        all_leaves = first.leaves(0, 800)
        assert [i for i, _ in all_leaves] == list(range(800))  # no gap, no index twice
        records = first.entries(0, 800)
        assert len({record.entry for record in records}) == 800  # nothing twice
        writers = [(r.entry.message_id.int - 1) // 10_000 % 2 for r in records]
        switches = sum(a != b for a, b in itertools.pairwise(writers))
        assert switches > 10  # the two writers really interleaved: each caught up on the other
        expected = MemoryTree(leaf for _, leaf in all_leaves).root()
        assert first.root() == second.root() == expected
        assert first.consistency_proof(100, 800) == second.consistency_proof(100, 800)
        for checkpoint in first.checkpoints(limit=1000):
            assert checkpoint.root_hash == first.root(checkpoint.size)
    finally:
        first.close()
        second.close()
    with Ledger.open(pg, origin=ORIGIN, signer=signer) as reopened:  # every stored tile checks
        assert reopened.root() == expected
    # The offline auditor, over the export of the database: every entry, tile and checkpoint.
    export = tmp_path / "two-writers.export"
    write_export(DatabaseSource(conn=pg.dedicated(), where=pg.where), export)
    result = check_ledger(export, signer.verifier, policy=UNWITNESSED)
    assert result.entries == 800


def test_export_of_either_store_is_byte_identical(
    tmp_path: Path, pg: Database, signer: NoteSigner
) -> None:
    exports = []
    for name, where in (("sqlite", tmp_path / "ledger.db"), ("postgresql", pg)):
        with Ledger.open(where, origin=ORIGIN, signer=signer, clock=FixedClock()) as ledger:
            fill(ledger)
        export = tmp_path / f"{name}.export"
        if isinstance(where, Database):
            write_export(DatabaseSource(conn=where.dedicated(), where=where.where), export)
        else:
            write_export(where, export)
        check_ledger(export, signer.verifier, policy=UNWITNESSED)
        exports.append(export.read_bytes())
    assert len(exports[0]) > 45 * 60
    assert exports[0] == exports[1]


def test_a_failing_request_is_rolled_back_alone_on_postgres(
    pg: Database, signer: NoteSigner
) -> None:
    """The batch runs pipelined without savepoints; a request that fails (in Python, or in the
    database) sends the batch again with savepoints, and only that request fails."""
    with Ledger.open(pg, origin=ORIGIN, signer=signer) as ledger:
        ledger.write(lambda conn: conn.execute("CREATE TABLE side (k INTEGER PRIMARY KEY)"))

        def row(k: int) -> Callable[[Connection, int], None]:
            return lambda conn, index: conn.execute("INSERT INTO side(k) VALUES (?)", (k,))

        def refuse(conn: Connection, index: int) -> None:
            raise ValueError("refused by the caller")

        futures = [
            ledger.queue_append([make_entry(0)], row(1)),
            ledger.queue_append([make_entry(1)], refuse),
            ledger.queue_append([make_entry(2)], row(1)),  # duplicate key: IntegrityError
            ledger.queue_append([make_entry(3), make_entry(4)], row(2)),
        ]
        assert [r.index for r in futures[0].result()] == [0]
        with pytest.raises(ValueError, match="refused by the caller"):
            futures[1].result()
        with pytest.raises(psycopg.IntegrityError):
            futures[2].result()
        assert [r.index for r in futures[3].result()] == [1, 2]
        assert ledger.size() == 3
        assert [r.entry for r in ledger.entries(0, 3)] == [make_entry(i) for i in (0, 3, 4)]
        side = ledger.reader().execute("SELECT k FROM side ORDER BY k").fetchall()
        assert side == [(1,), (2,)]
    with Ledger.open(pg, origin=ORIGIN, signer=signer) as reopened:
        assert reopened.size() == 3


def test_readers_share_the_pool_whatever_the_threads(pg: Database, signer: NoteSigner) -> None:
    """Forty reading threads use at most the pool's connections, not one each."""
    with Ledger.open(pg, origin=ORIGIN, signer=signer) as ledger:
        ledger.append_many([make_entry(i) for i in range(40)])
        seen: list[int] = []
        barrier = threading.Barrier(40)

        def read() -> None:
            barrier.wait()
            for _ in range(5):
                assert len(ledger.leaves(0, 40)) == 40
            (count,) = (
                ledger.reader()
                .execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                .fetchone()
            )
            seen.append(int(count))

        threads = [threading.Thread(target=read) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(seen) == 40
        assert max(seen) <= 16 + 1  # the pool's, and the writer's


def test_a_stale_writer_commits_after_the_guard_refuses_its_size(
    pg: Database, signer: NoteSigner
) -> None:
    """A writer's commit checks the tree-state row in its first write (ADR 0075): when another
    replica appended meanwhile, that attempt fails whole, and the batch runs again locked, after
    the entries it had not seen; nothing is lost or written twice."""
    first = Ledger.open(pg, origin=ORIGIN, signer=signer)
    second = Ledger.open(pg, origin=ORIGIN, signer=signer)
    try:
        assert first.append(make_entry(0)).index == 0
        assert second.append(make_entry(1)).index == 1  # its guard expected size 0
        assert first.append(make_entry(2)).index == 2  # and this one expected 1
        assert second.append(make_entry(3)).index == 3
        (stored,) = pg.dedicated().execute("SELECT size FROM ledger_tree").fetchone()
        assert stored == 4
        assert [r.entry for r in second.entries(0, 4)] == [make_entry(i) for i in range(4)]
        expected = MemoryTree(leaf for _, leaf in first.leaves(0, 4)).root()
        assert first.root(4) == second.root(4) == expected
    finally:
        first.close()
        second.close()


def test_held_back_inserts_go_before_whatever_may_read_them(pg: Database) -> None:
    """While deferring, plain INSERTs are merged per statement text, and sent before a read, an
    UPDATE or an upsert of their table; the transaction's result is what the statements in the
    written order give."""
    conn = pg.dedicated()
    try:
        conn.execute("CREATE TABLE held_a (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        conn.execute("CREATE TABLE held_b (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        deferring = conn.deferring  # type: ignore[attr-defined]
        with deferring():
            conn.execute("BEGIN")
            conn.execute("INSERT INTO held_a (k, v) VALUES (?, ?)", (1, "a1"))
            conn.execute("INSERT INTO held_b (k, v) VALUES (?, ?),(?, ?)", (1, "b1", 2, "b2"))
            conn.executemany("INSERT INTO held_a (k, v) VALUES (?, ?)", [(2, "a2"), (3, "a3")])
            # an upsert of another table goes at once; of held_a only after held_a's rows
            conn.execute(
                "INSERT INTO held_b (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = 'up'",
                (9, "b9"),
            )
            conn.execute(
                "INSERT INTO held_a (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = 'up'",
                (3, "x"),
            )
            assert conn.execute("SELECT count(*) FROM held_b").fetchone() == (3,)
            conn.execute("INSERT INTO held_b (k, v) VALUES (?, ?)", (4, "b4"))
            conn.execute("UPDATE held_b SET v = 'changed' WHERE k = 4")
            conn.execute("COMMIT")
        assert conn.execute("SELECT k, v FROM held_a ORDER BY k").fetchall() == [
            (1, "a1"),
            (2, "a2"),
            (3, "up"),
        ]
        assert conn.execute("SELECT k, v FROM held_b ORDER BY k").fetchall() == [
            (1, "b1"),
            (2, "b2"),
            (4, "changed"),
            (9, "b9"),
        ]
        with deferring():  # a duplicate merged into one statement: refused when sent
            conn.execute("BEGIN")
            conn.execute("INSERT INTO held_a (k, v) VALUES (?, ?)", (7, "x"))
            conn.execute("INSERT INTO held_a (k, v) VALUES (?, ?)", (7, "y"))
            with pytest.raises(psycopg.IntegrityError):
                conn.execute("COMMIT")
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM held_a WHERE k = 7").fetchone() == (0,)
    finally:
        conn.execute("DROP TABLE IF EXISTS held_a")
        conn.execute("DROP TABLE IF EXISTS held_b")
        conn.close()
