"""The exchange's tables are versioned: an older store is upgraded in place at open."""

from __future__ import annotations

from pathlib import Path

from gateway.exchange import _store as store
from gateway.store import Schema, ensure_schema, open_database, schema_version


def test_version_1_is_upgraded_to_find_messages_by_subject(tmp_path: Path) -> None:
    """An update or revocation asks who was sent the subject before: with the index that
    question reads the subject's rows only, not every message (a bulk revoke of a large list
    otherwise slowed with the size of the list)."""
    db = open_database(None, tmp_path / "ledger.db")
    conn = db.dedicated()
    try:
        conn.execute("BEGIN IMMEDIATE")
        ensure_schema(conn, Schema("exchange", {1: store.EXCHANGE_SCHEMA.steps[1]}))
        conn.execute("COMMIT")
        assert schema_version(conn, "exchange") == 1

        conn.execute("BEGIN IMMEDIATE")
        store.create_schema(conn)
        conn.execute("COMMIT")

        assert schema_version(conn, "exchange") == store.EXCHANGE_SCHEMA.version == 2
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT DISTINCT o.recipient FROM exchange_outbox o "
                "JOIN exchange_messages m ON m.message_id = o.message_id AND m.origin = ? "
                "WHERE m.subject = ?",
                ("CN", "watchlist/x/y"),
            )
        )
        assert "exchange_messages_subject" in plan
        assert store.recipients_of(conn, "CN", "watchlist/x/y") == set()
    finally:
        conn.close()
        db.close()
