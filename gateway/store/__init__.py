"""Storage behind one interface: SQLite (the embedded default) or PostgreSQL (ADR 0070).

The ledger, the exchange and the server's own tables take a :class:`Connection` and write
portable SQL; :func:`open_database` picks the implementation from the node's ``[storage]``
configuration. The pure core and the auditor import nothing of this package.
"""

from gateway.store._database import (
    Connection,
    Cursor,
    Database,
    Dialect,
    PostgresConnection,
    SqliteConnection,
    check_url,
    open_database,
    redact,
)
from gateway.store._schema import (
    SCHEMA_TABLE,
    Schema,
    append_only,
    ddl,
    ensure_schema,
    schema_version,
)
from gateway.store.errors import (
    SchemaVersionError,
    StoreConfigError,
    StoreError,
    StoreUnavailableError,
    database_errors,
    integrity_errors,
)

__all__ = [
    "SCHEMA_TABLE",
    "Connection",
    "Cursor",
    "Database",
    "Dialect",
    "PostgresConnection",
    "Schema",
    "SchemaVersionError",
    "SqliteConnection",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailableError",
    "append_only",
    "check_url",
    "database_errors",
    "ddl",
    "ensure_schema",
    "integrity_errors",
    "open_database",
    "redact",
    "schema_version",
]
