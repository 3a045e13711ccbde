"""Errors of the storage layer, split by whose fault they are.

An operator's mistake (a bad URL, an unreachable server, a database of another schema version
or another node) is a :class:`StoreConfigError`, shown in one line at start-up; a failure of the
database while serving is the driver's own error, wrapped where it crosses into the gateway.
"""

from __future__ import annotations

import sqlite3
import sys

from gateway.errors import FailedPreconditionError, GatewayError, UnavailableError

__all__ = [
    "SchemaVersionError",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailableError",
    "database_errors",
    "integrity_errors",
]


# What a caller catches instead of ``sqlite3.Error``/``sqlite3.IntegrityError``: either store's.
# Functions, not constants: psycopg is imported only by a node that uses PostgreSQL (its import
# costs a SQLite node 0.1-0.2 s of start-up), and an error of a driver not loaded cannot occur.


def database_errors() -> tuple[type[Exception], ...]:
    """Every driver's base error class, for ``except database_errors():``."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


def integrity_errors() -> tuple[type[Exception], ...]:
    """Every driver's constraint-violation class (a duplicate key, a refused trigger)."""
    psycopg = sys.modules.get("psycopg")
    return (
        (sqlite3.IntegrityError,)
        if psycopg is None
        else (sqlite3.IntegrityError, psycopg.IntegrityError)
    )


class StoreError(GatewayError):
    """Base of the storage layer's own errors."""


class StoreConfigError(StoreError, FailedPreconditionError):
    """The storage the configuration names cannot be used as it is (an operator's mistake)."""


class StoreUnavailableError(StoreError, UnavailableError):
    """The database server cannot be reached or refused the connection."""


class SchemaVersionError(StoreConfigError):
    """The database holds a schema version this gateway does not know (newer, or corrupt)."""
