"""One storage interface over SQLite (the embedded default) and PostgreSQL (ADR 0070).

Callers write the project's portable SQL: ``?`` placeholders, ``INSERT ... ON CONFLICT ... DO
NOTHING / DO UPDATE`` (SQLite >= 3.24 and PostgreSQL both accept it), no vendor functions
except behind :attr:`Connection.dialect`. A :class:`Database` hands out connections whose
``execute``/``executemany`` take that SQL and return cursors with ``fetchone``/``fetchall``/
``fetchmany``; on PostgreSQL the placeholders are translated to ``%s`` (once per statement text).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from gateway.store.errors import StoreConfigError, StoreUnavailableError

if TYPE_CHECKING:  # imported when PostgreSQL is used: a SQLite node never loads the driver
    import psycopg
    import psycopg_pool

__all__ = [
    "Connection",
    "Cursor",
    "Database",
    "Dialect",
    "PooledReader",
    "PostgresConnection",
    "Rows",
    "SqliteConnection",
    "check_url",
    "open_database",
    "redact",
]

Dialect = Literal["sqlite", "postgresql"]
CONNECT_TIMEOUT = 5  # seconds: an unreachable server is named at start-up, not waited on
WAL_AUTOCHECKPOINT = 10_000
"""Pages (40 MiB at SQLite's 4 KiB) a SQLite WAL grows to before a commit checkpoints it
(ADR 0083; SQLite's default is 1,000). A bulk call writes every page of each uuid-keyed
index until the index has many more pages than the call has entries (2,000 entries into
40,000 stored: 4,000-7,500 pages a call); checkpointing after every such call copied the same
pages back to the database file each time. Durability is unchanged: each commit is in the
WAL, fsynced (``synchronous=FULL``), before it returns."""


class Cursor(Protocol):
    """What ``execute`` returns: rows as tuples."""

    def fetchone(self) -> Any:
        """The next row, or None."""

    def fetchall(self) -> list[Any]:
        """Every remaining row."""

    def fetchmany(self, size: int = ...) -> list[Any]:
        """Up to ``size`` more rows."""


class Connection(Protocol):
    """A connection taking portable SQL. ``sqlite3.Connection`` subclasses and
    :class:`PostgresConnection` both satisfy it."""

    @property
    def dialect(self) -> Dialect:
        """``"sqlite"`` or ``"postgresql"``, for the few statements that differ."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any:
        """Run one statement with ``?`` placeholders; returns a :class:`Cursor`."""

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        """Run one statement once per parameter row."""

    def close(self) -> None:
        """Close (or give back to its pool) this connection."""


class SqliteConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` that says its dialect: no wrapper on the embedded hot path."""

    @property
    def dialect(self) -> Dialect:
        """Always ``"sqlite"``."""
        return "sqlite"


_SUBSTITUTE = {"?": "%s", "%": "%%"}
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


@functools.lru_cache(maxsize=1024)
def _to_format(sql: str) -> str:
    """``?`` outside quotes becomes ``%s``, and every ``%`` becomes ``%%`` (psycopg's format
    style)."""

    def replace(m: re.Match[str]) -> str:
        text = m.group(0)
        # psycopg reads % everywhere, quoted or not; a ? in quotes is text
        return _SUBSTITUTE.get(text) or text.replace("%", "%%")

    return _TOKEN.sub(replace, sql)


@functools.lru_cache(maxsize=1024)
def _is_plain_insert(sql: str) -> bool:
    """An ``INSERT`` that returns no rows (no ``RETURNING``): its cursor is never read."""
    return sql.lstrip()[:6].upper() == "INSERT" and "RETURNING" not in sql.upper()


# A plain multi-row INSERT of the project's SQL: the text up to VALUES, then one placeholder
# tuple repeated (no ON CONFLICT, no RETURNING): rows of the same text can be sent as one.
_MERGEABLE = re.compile(
    r"(INSERT\s+INTO\s+(\w+)\s*\([^()]*\)\s*VALUES)\s*(\((?:\s*\?\s*,)*\s*\?\s*\))"
    r"(?:\s*,\s*\3)*\s*",
    re.IGNORECASE,
)
_INSERT_INTO = re.compile(r"\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)
_MAX_PARAMETERS = 30_000  # per merged statement (PostgreSQL takes at most 65,535)


@functools.lru_cache(maxsize=1024)
def _mergeable(sql: str) -> tuple[str, str, int] | None:
    """(the text up to VALUES, one placeholder tuple, its placeholders) of a plain multi-row
    INSERT, else None."""
    m = _MERGEABLE.fullmatch(sql)
    if m is None:
        return None
    return f"{m.group(1)} ", m.group(3), m.group(3).count("?")


@functools.lru_cache(maxsize=1024)
def _insert_target(sql: str) -> str | None:
    """The table an INSERT writes, else None (any other statement)."""
    m = _INSERT_INTO.match(sql)
    return m.group(1).lower() if m else None


class PostgresConnection:
    """A psycopg connection in autocommit mode that takes portable SQL.

    Transactions are explicit statements (``BEGIN``, ``SAVEPOINT``, ``COMMIT``), as on the
    SQLite side, so the ledger's transaction code is the same text on both.
    """

    __slots__ = ("_conn", "_deferred", "_inserts", "_pool")

    def __init__(
        self, conn: psycopg.Connection[Any], pool: psycopg_pool.ConnectionPool | None = None
    ) -> None:
        self._conn = conn
        self._pool = pool
        self._inserts: psycopg.Cursor[Any] | None = None
        # While deferring: plain INSERTs' rows by (text up to VALUES, placeholder tuple).
        self._deferred: dict[tuple[str, str, int], list[Any]] | None = None

    @property
    def dialect(self) -> Dialect:
        """Always ``"postgresql"``."""
        return "postgresql"

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection itself (LISTEN/NOTIFY, advisory locks)."""
        return self._conn

    @property
    def in_transaction(self) -> bool:
        """True between ``BEGIN`` and ``COMMIT``/``ROLLBACK`` (also in a failed transaction)."""
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        """Run one statement; see :class:`Connection`."""
        if self._deferred is not None:
            shape = _mergeable(sql) if parameters else None
            if shape is not None:
                self._deferred.setdefault(shape, []).extend(parameters)
                return self._insert_cursor()
            self._flush_before(sql)
        if parameters:
            if _is_plain_insert(sql):
                return self._insert_cursor().execute(_to_format(sql), parameters)
            return self._conn.execute(_to_format(sql), parameters)
        return self._conn.execute(sql)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        """Run one statement per row, pipelined (one round trip for the lot)."""
        if self._deferred is not None:
            shape = _mergeable(sql)
            if shape is not None:
                rows = self._deferred.setdefault(shape, [])
                for row in parameters:
                    rows.extend(row)
                return
            self._flush_before(sql)
        if _is_plain_insert(sql):
            self._insert_cursor().executemany(_to_format(sql), parameters)
            return
        with self._conn.cursor() as cur:
            cur.executemany(_to_format(sql), parameters)

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Within the block, plain multi-row INSERTs (no ON CONFLICT, no RETURNING) are held
        back and sent as one INSERT per statement text, rows in the order given, just before
        the next statement that is not such an INSERT (a read, an UPDATE, COMMIT; an upsert
        only if its table has rows held back) or when the block ends (ADR 0075).

        For a writer's group commit: requests of the same kind then cost one statement in all
        instead of one each. Statements run in another order than written, so it is only for a
        transaction that is run again statement by statement if it fails (the ledger's writer
        does, with a savepoint per request); no row count or result of a held-back INSERT can
        be read. On an exception the held-back rows are dropped (the caller rolls back).
        """
        self._deferred = {}
        try:
            yield
            self._flush()
        finally:
            self._deferred = None

    def _flush_before(self, sql: str) -> None:
        """Send held-back rows that ``sql`` may depend on: all of them, unless ``sql`` is an
        INSERT into a table none of them is for."""
        deferred = self._deferred
        if not deferred:
            return
        target = _insert_target(sql)
        if target is None or any(_insert_target(text) == target for text, _, _ in deferred):
            self._flush()

    def _flush(self) -> None:
        deferred, self._deferred = self._deferred, {}
        if not deferred:
            return
        cur = self._insert_cursor()
        for (head, row, width), values in deferred.items():
            step = max(1, _MAX_PARAMETERS // width) * width
            for start in range(0, len(values), step):
                chunk = values[start : start + step]
                cur.execute(_to_format(head + ",".join([row] * (len(chunk) // width))), chunk)

    def _insert_cursor(self) -> psycopg.Cursor[Any]:
        """One cursor kept for every INSERT without RETURNING (ADR 0075): such a statement
        answers no rows and no caller reads its row count, so nothing is lost when the next one
        reuses the cursor, and the cursor's adapters stay resolved instead of being looked up
        again for each new cursor (in a writer's commit, a quarter of its Python time)."""
        cur = self._inserts
        if cur is None or cur.closed:
            cur = self._inserts = self._conn.cursor()
        return cur

    def close(self) -> None:
        """Give the connection back to its pool, or close it."""
        self._inserts = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            if self.in_transaction:
                self._conn.rollback()
            pool.putconn(self._conn)
        elif not self._conn.closed:
            self._conn.close()


class Rows:
    """A read's whole result, already fetched: what :class:`PooledReader` returns."""

    __slots__ = ("_at", "_rows")

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows
        self._at = 0

    def fetchone(self) -> Any:
        """The next row, or None."""
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[Any]:
        """Every remaining row."""
        rows = self._rows[self._at :] if self._at else self._rows
        self._at = len(self._rows)
        return rows

    def fetchmany(self, size: int = 1) -> list[Any]:
        """Up to ``size`` more rows."""
        rows = self._rows[self._at : self._at + size]
        self._at += len(rows)
        return rows

    def __iter__(self) -> Iterator[Any]:
        while (row := self.fetchone()) is not None:
            yield row


class PooledReader:
    """Autocommit reads on PostgreSQL, each statement on a connection borrowed from the pool
    for that statement only, its rows fetched before the connection goes back: any number of
    threads read through at most the pool's connections (one kept connection per reading
    thread would exhaust the server's). Each pooled connection keeps one cursor for these
    reads, so its adapters are resolved once, not for every statement (ADR 0075)."""

    __slots__ = ("_cursors", "_pool")

    def __init__(self, pool: psycopg_pool.ConnectionPool) -> None:
        self._pool = pool
        self._cursors: weakref.WeakKeyDictionary[psycopg.Connection[Any], psycopg.Cursor[Any]]
        self._cursors = weakref.WeakKeyDictionary()

    @property
    def dialect(self) -> Dialect:
        """Always ``"postgresql"``."""
        return "postgresql"

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        """Run one read; the result holds every row."""
        with self._pool.connection() as conn:
            cur = self._cursors.get(conn)  # the connection is this thread's until it goes back
            if cur is None or cur.closed:
                cur = self._cursors[conn] = conn.cursor()
            if parameters:
                cur.execute(_to_format(sql), parameters)
            else:
                cur.execute(sql)
            return Rows(cur.fetchall() if cur.description is not None else [])

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        """Readers do not write."""
        raise NotImplementedError("a pooled reader does not write")

    def close(self) -> None:
        """Nothing to close: the pool's connections are the database's."""


def check_url(url: str) -> str:
    """Return ``url`` if it names a PostgreSQL database; else raise StoreConfigError."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise StoreConfigError(f"storage url is not a URL: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreConfigError(
            f"storage url must start with postgresql:// (got {parts.scheme or 'no'} scheme)"
        )
    import psycopg

    if not parts.path.strip("/"):
        raise StoreConfigError("storage url names no database (postgresql://host/DATABASE)")
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreConfigError(f"storage url cannot be read: {exc}") from None
    return url


def redact(url: str) -> str:
    """``url`` without its password, for log lines and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class Database:
    """Where one store's tables live: a SQLite file or a PostgreSQL database. Thread-safe.

    :meth:`connect` gives a new connection the caller closes (on PostgreSQL, from a pool);
    :meth:`dedicated` gives one outside the pool, for a thread that keeps it (a writer, a
    per-thread reader).
    """

    def __init__(self, dialect: Dialect, *, path: Path | None = None, url: str | None = None):
        """Use :func:`open_database`."""
        self.dialect: Dialect = dialect
        self.path = path
        self.url = url
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Database({self.where})"

    @property
    def where(self) -> str:
        """The file or the URL without its password: for messages."""
        return str(self.path) if self.url is None else redact(self.url)

    def dedicated(self, *, read_only: bool = False) -> Connection:
        """A new connection that the caller keeps and closes (not from the pool)."""
        if self.dialect == "sqlite":
            assert self.path is not None
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=30,
                factory=SqliteConnection,
            )
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
            if read_only:
                conn.execute("PRAGMA query_only = ON")
            return conn
        kept = self._pg_connect(read_only)
        # No server-side prepared statements on a kept connection: psycopg's cache of them
        # loses track when a pipeline fails (a statement it prepared there is gone after the
        # rollback), and the writer runs whole transactions in its pipeline (ADR 0074).
        kept.prepare_threshold = None
        return PostgresConnection(kept)

    def connect(self) -> Connection:
        """A connection for a short task; ``close()`` gives it back (PostgreSQL: to the pool)."""
        if self.dialect == "sqlite":
            return self.dedicated()
        import psycopg_pool

        pool = self._get_pool()
        try:
            conn = pool.getconn()
        except psycopg_pool.PoolTimeout as exc:
            raise StoreUnavailableError(f"database {self.where}: no connection: {exc}") from None
        return PostgresConnection(conn, pool)

    def pooled_reader(self) -> Connection:
        """PostgreSQL: a reader that borrows a pool connection per statement (thread-safe)."""
        return PooledReader(self._get_pool())

    def _pg_connect(self, read_only: bool = False) -> psycopg.Connection[Any]:
        import psycopg

        assert self.url is not None
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.OperationalError as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreUnavailableError(f"database {self.where} unreachable: {detail}") from None
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def _get_pool(self) -> psycopg_pool.ConnectionPool:
        import psycopg_pool

        with self._lock:
            if self._pool is None:
                self._pool = psycopg_pool.ConnectionPool(
                    self.url or "",
                    min_size=1,
                    max_size=16,
                    kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                    timeout=30,
                    name=f"store:{self.where}",
                    open=True,
                )
            return self._pool

    def close(self) -> None:
        """Close the pool (PostgreSQL); connections handed out stay the callers'."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def open_database(url: str | None, path: Path) -> Database:
    """The database a store uses: PostgreSQL at ``url`` if given, else the SQLite file ``path``.

    For PostgreSQL the server is reached once here, so an unreachable server or a refused login
    is named at start-up.

    Raises:
        StoreConfigError: ``url`` is not a PostgreSQL URL.
        StoreUnavailableError: the server cannot be reached.
    """
    if url is None:
        return Database("sqlite", path=Path(path))
    db = Database("postgresql", url=check_url(url))
    db._pg_connect().close()
    return db
