"""The ledger's tables, per dialect, with append-only triggers (ADR 0070).

SQLite keeps the tables it always had (created through sqlite-utils, ``RAISE(ABORT)``
triggers). PostgreSQL has the same tables with ``BIGINT``/``BYTEA`` columns, PL/pgSQL
append-only triggers, and one more: ``ledger_tree``, the single tree-state row that every
writing transaction locks, so the database sequences appends from several replicas (ADR 0071).
"""

from __future__ import annotations

import sqlite3

import sqlite_utils

from gateway.store import Connection, Schema, append_only

ENTRIES = "ledger_entries"
TILES = "ledger_tiles"
CHECKPOINTS = "ledger_checkpoints"
COSIGNATURES = "ledger_cosignatures"
META = "ledger_meta"
TREE = "ledger_tree"  # PostgreSQL only: the tree-state row (id 1, size)
TABLES = (ENTRIES, TILES, CHECKPOINTS, COSIGNATURES, META)
SCHEMA_VERSION = "2"  # the ledger format version kept in ledger_meta (docs/ledger-format.md)

_POSTGRES_TABLES = (
    f"CREATE TABLE IF NOT EXISTS {ENTRIES} (idx BIGINT PRIMARY KEY, leaf BYTEA NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {TILES} (id BIGINT PRIMARY KEY, hashes BYTEA NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS} (size BIGINT PRIMARY KEY, root BYTEA NOT NULL, "
    "note TEXT NOT NULL, created_ms BIGINT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {COSIGNATURES} (size BIGINT NOT NULL REFERENCES {CHECKPOINTS}"
    "(size), line TEXT NOT NULL, key_name TEXT NOT NULL, timestamp BIGINT, "
    "added_ms BIGINT NOT NULL, PRIMARY KEY (size, line))",
    f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {TREE} (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "size BIGINT NOT NULL CHECK (size >= 0))",
    f"INSERT INTO {TREE}(id, size) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",  # noqa: S608
)


def _create_sqlite(conn: sqlite3.Connection) -> None:
    """``ledger_tiles`` holds one row per complete tile of subtree hashes, keyed by an integer
    that grows with the log (``gateway.ledger._tiles``), so it is the table's rowid and every
    insert lands at the end of the B-tree: a proof reads its stored nodes from one row or two.
    """
    db = sqlite_utils.Database(conn)
    if not db.table(ENTRIES).exists():
        db.table(ENTRIES).create({"idx": int, "leaf": bytes}, pk="idx", not_null={"leaf"})
    if not db.table(TILES).exists():
        db.table(TILES).create({"id": int, "hashes": bytes}, pk="id", not_null={"hashes"})
    if not db.table(CHECKPOINTS).exists():
        db.table(CHECKPOINTS).create(
            {"size": int, "root": bytes, "note": str, "created_ms": int},
            pk="size",
            not_null={"root", "note", "created_ms"},
        )
    if not db.table(COSIGNATURES).exists():
        db.table(COSIGNATURES).create(
            {"size": int, "line": str, "key_name": str, "timestamp": int, "added_ms": int},
            pk=("size", "line"),
            not_null={"key_name", "added_ms"},
            foreign_keys=[("size", CHECKPOINTS, "size")],
        )
    if not db.table(META).exists():
        db.table(META).create({"key": str, "value": str}, pk="key", not_null={"value"})


def _create(conn: Connection) -> None:
    """Version 1: the tables and their append-only triggers."""
    if isinstance(conn, sqlite3.Connection):
        _create_sqlite(conn)
    else:
        for statement in _POSTGRES_TABLES:
            conn.execute(statement)
    for table in TABLES:
        append_only(conn, table)


LEDGER_SCHEMA = Schema("ledger", {1: _create})


def create(conn: Connection) -> None:
    """Create the ledger tables and their triggers if missing (inside the caller's transaction).

    Kept for callers that make a bare ledger file; :data:`LEDGER_SCHEMA` is the versioned form.
    """
    _create(conn)
