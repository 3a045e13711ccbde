"""Explicit, versioned schemas: one ``store_schema`` row per store (ADR 0070).

A store (the ledger, the exchange, the revocation state, ...) declares its versions as steps:
step 1 creates its tables, step ``n`` upgrades ``n - 1`` to ``n``. :func:`ensure_schema` runs the
missing steps inside the caller's transaction and refuses a database whose version is newer
than this gateway knows. Step 1 is written ``IF NOT EXISTS``, so a SQLite file made before the
version rows existed is adopted as version 1 without a change to its tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.store._database import Connection
from gateway.store.errors import SchemaVersionError

__all__ = ["SCHEMA_TABLE", "Schema", "append_only", "ensure_schema", "schema_version"]

SCHEMA_TABLE = "store_schema"
_SCHEMA_LOCK = 0x637573746F6D73  # pg_advisory_xact_lock key: first replicas create one schema


@dataclass(frozen=True)
class Schema:
    """A store's schema: ``steps[n]`` brings version ``n - 1`` to ``n`` (1 creates it)."""

    name: str
    steps: Mapping[int, Callable[[Connection], None]]

    @property
    def version(self) -> int:
        """The version this gateway writes."""
        return max(self.steps)


def schema_version(conn: Connection, name: str) -> int:
    """The stored version of store ``name``: 0 when it has none (never created)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} "
        "(name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    row = conn.execute(f"SELECT version FROM {SCHEMA_TABLE} WHERE name = ?", (name,)).fetchone()  # noqa: S608
    return 0 if row is None else int(row[0])


def ensure_schema(conn: Connection, schema: Schema) -> int:
    """Create or upgrade ``schema`` to its latest version, inside the caller's transaction.

    Returns the version found before (0: created now). On PostgreSQL, a transaction-scoped
    advisory lock makes replicas starting together run the steps once.

    Raises:
        SchemaVersionError: the stored version is newer than this gateway's.
    """
    if conn.dialect == "postgresql":
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
    found = schema_version(conn, schema.name)
    if found > schema.version:
        raise SchemaVersionError(
            f"the {schema.name} schema in this database is version {found}; this gateway knows "
            f"versions up to {schema.version}: run the newer gateway, or restore the database"
        )
    for version in range(found + 1, schema.version + 1):
        schema.steps[version](conn)
    if found != schema.version:
        conn.execute(
            f"INSERT INTO {SCHEMA_TABLE}(name, version) VALUES (?, ?) "  # noqa: S608
            "ON CONFLICT (name) DO UPDATE SET version = excluded.version",
            (schema.name, schema.version),
        )
    return found


def append_only(conn: Connection, table: str, message: str | None = None) -> None:
    """Add triggers that refuse UPDATE and DELETE on ``table`` (and TRUNCATE on PostgreSQL).

    The second wall behind the code that only ever inserts: on SQLite ``RAISE(ABORT)``
    triggers, on PostgreSQL a PL/pgSQL function raising an exception. Idempotent.
    """
    if conn.dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            text = message or f"{table} is append-only: {action} refused"
            conn.execute(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} "
                f"BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{text}'); END"
            )
        return
    conn.execute(
        "CREATE OR REPLACE FUNCTION store_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
        "USING ERRCODE = 'integrity_constraint_violation'; END $$"
    )
    for action in ("UPDATE", "DELETE", "TRUNCATE"):
        name = f"{table}_no_{action.lower()}"
        each = "STATEMENT" if action == "TRUNCATE" else "ROW"
        conn.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        conn.execute(
            f"CREATE TRIGGER {name} BEFORE {action} ON {table} "
            f"FOR EACH {each} EXECUTE FUNCTION store_append_only()"
        )
