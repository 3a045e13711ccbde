"""``bench.growth`` reads what it says from real SQLite WALs and a real node. Nothing here is
timed; speed is measured only by running the tool."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from bench.growth import main, wal_pages


def test_wal_pages_counts_the_last_transaction_by_btree(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the WAL keeps every frame
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
    conn.execute("CREATE TABLE s (v BLOB)")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO t VALUES (?, ?)", [(str(uuid.uuid4()), b"x" * 500) for _ in range(200)]
    )
    conn.execute("INSERT INTO s VALUES (x'00')")
    conn.execute("COMMIT")
    frames, owners = wal_pages(db)
    stored = dict(conn.execute("SELECT name, count(*) FROM dbstat GROUP BY name").fetchall())
    conn.close()
    assert frames == sum(owners.values())
    # Every page of t was written (the table is new), and the one page of s.
    assert owners["t"] >= stored["t"] > 20
    assert owners["s"] >= 1


def test_wal_pages_of_a_file_without_wal(tmp_path: Path) -> None:
    assert wal_pages(tmp_path / "none.db") == (0, {})


def test_growth_runs_rounds_on_a_node(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--rounds", "2", "--n", "20", "--pages-at", "1"])
    out = capsys.readouterr().out
    assert "round   0 stored      20" in out
    assert "round   1 stored      40" in out
    assert "watchlist-view.db:" in out
    assert "ledger.db:" in out
