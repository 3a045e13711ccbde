"""The storage layer stays behind its port: the pure core and the auditor load none of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.store import Database
from gateway.store._database import WAL_AUTOCHECKPOINT, _to_format

PURE_CORE = (
    "gateway.merkle",
    "gateway.notes",
    "gateway.entries",
    "gateway.domain",
    "gateway.envelope",
)
STORE = ("gateway.store", "gateway.ledger", "psycopg", "psycopg_pool", "sqlite3", "sqlite_utils")


def test_the_pure_core_loads_no_database_code() -> None:
    script = "import json, sys\n" + "".join(f"import {m}\n" for m in PURE_CORE)
    script += "print(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    loaded = json.loads(out)
    assert "gateway.merkle" in loaded
    assert [m for m in loaded if any(m == f or m.startswith(f + ".") for f in STORE)] == []


@pytest.mark.parametrize(
    ("portable", "psycopg_form"),
    [
        ("SELECT a FROM t WHERE b = ? AND c > ?", "SELECT a FROM t WHERE b = %s AND c > %s"),
        ("SELECT '?', \"?\" FROM t WHERE b = ?", "SELECT '?', \"?\" FROM t WHERE b = %s"),
        (
            "SELECT a FROM t WHERE b LIKE 'x%' AND c = ?",
            "SELECT a FROM t WHERE b LIKE 'x%%' AND c = %s",
        ),
        ("SELECT 5 % ?", "SELECT 5 %% %s"),
        ("SELECT 'it''s ?' || ?", "SELECT 'it''s ?' || %s"),
    ],
    ids=["placeholders", "quoted-marks", "percent-in-literal", "modulo", "escaped-quote"],
)
def test_placeholders_are_translated_outside_quotes_only(portable: str, psycopg_form: str) -> None:
    assert _to_format(portable) == psycopg_form


def test_sqlite_database_gives_sqlite_connections(tmp_path: Path) -> None:
    db = Database("sqlite", path=tmp_path / "x.db")
    conn = db.dedicated()
    try:
        assert conn.dialect == "sqlite"
        assert conn.execute("SELECT ? + 1", (1,)).fetchone() == (2,)
    finally:
        conn.close()


def test_sqlite_wal_is_checkpointed_past_wal_autocheckpoint_pages(tmp_path: Path) -> None:
    """ADR 0083: a commit of 2,000-7,000 pages (a bulk call into a large store) stays in the WAL
    until it holds WAL_AUTOCHECKPOINT pages, committed and readable by a new connection."""
    db = Database("sqlite", path=tmp_path / "x.db")
    conn = db.dedicated()
    try:
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (WAL_AUTOCHECKPOINT,)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (v BLOB)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (zeroblob(3000))", [()] * 2000)
        conn.execute("COMMIT")
        wal = (tmp_path / "x.db-wal").stat().st_size
        assert 2000 * 4096 < wal < WAL_AUTOCHECKPOINT * 4096  # past SQLite's default of 1,000
        reader = db.dedicated(read_only=True)
        try:
            assert reader.execute("SELECT count(*) FROM t").fetchone() == (2000,)
        finally:
            reader.close()
    finally:
        conn.close()


@pytest.mark.postgres
def test_portable_sql_runs_on_postgres(postgres_url: str) -> None:
    """The translated forms are what PostgreSQL runs: quotes, percent signs and placeholders."""
    db = Database("postgresql", url=postgres_url)
    conn = db.dedicated()
    try:
        assert conn.dialect == "postgresql"
        row = conn.execute("SELECT 'a?%' || ?, 7 % ?, 'it''s'", ("b", 4)).fetchone()
        assert row == ("a?%b", 3, "it's")
    finally:
        conn.close()
        db.close()
