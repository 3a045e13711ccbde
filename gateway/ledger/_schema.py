"""The ledger's tables in SQLite, created through sqlite-utils, with append-only triggers."""

from __future__ import annotations

import sqlite3

import sqlite_utils

ENTRIES = "ledger_entries"
TILES = "ledger_tiles"
CHECKPOINTS = "ledger_checkpoints"
COSIGNATURES = "ledger_cosignatures"
META = "ledger_meta"
TABLES = (ENTRIES, TILES, CHECKPOINTS, COSIGNATURES, META)
SCHEMA_VERSION = "2"


def create(conn: sqlite3.Connection) -> None:
    """Create the ledger tables and their triggers if missing (inside the caller's transaction).

    ``ledger_tiles`` holds one row per complete tile of subtree hashes, keyed by an integer
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
    for table in TABLES:
        for action in ("UPDATE", "DELETE"):
            conn.execute(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} "
                f"BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
            )
