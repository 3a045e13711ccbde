"""Errors of the storage layer, split by whose fault they are.

An operator's mistake (a bad URL, an unreachable server, a database of another schema version
or another node) is a :class:`StoreConfigError`, shown in one line at start-up; a failure of the
database while serving is the driver's own error, wrapped where it crosses into the gateway.
"""

from __future__ import annotations

import sqlite3

import psycopg

from gateway.errors import FailedPreconditionError, GatewayError, UnavailableError

__all__ = [
    "DATABASE_ERRORS",
    "INTEGRITY_ERRORS",
    "SchemaVersionError",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailableError",
]

# What a caller catches instead of ``sqlite3.Error``/``sqlite3.IntegrityError``: either store's.
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)


class StoreError(GatewayError):
    """Base of the storage layer's own errors."""


class StoreConfigError(StoreError, FailedPreconditionError):
    """The storage the configuration names cannot be used as it is (an operator's mistake)."""


class StoreUnavailableError(StoreError, UnavailableError):
    """The database server cannot be reached or refused the connection."""


class SchemaVersionError(StoreConfigError):
    """The database holds a schema version this gateway does not know (newer, or corrupt)."""
