"""The node's merged watchlist view, kept current from every payload the exchange records, and
kept durably in its own SQLite file (or, on PostgreSQL, in the node's shared database) so its
version never goes backwards (ADR 0035).

The view's state (each entry's latest content, state and view version; the view version; the
time up to which validity boundaries were applied) is written in one transaction
(``synchronous=FULL``) after every change and before any answer shows it. At start the stored
view is loaded, then the stored payloads are replayed (what the view already holds changes
nothing; what a crash kept from it is applied), then erasures the view was not told of are
applied. Erased payloads are never written here: a tombstone keeps only the entry's key and
version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar, cast

from cryptography.hazmat.primitives import serialization
from google.protobuf.message import Message

from customs.gateway.v1 import common_pb2, domain_pb2, envelope_pb2, partner_pb2
from gateway.domain.kinds import KINDS
from gateway.domain.lenient import normalise_declaration
from gateway.domain.screening import (
    BLOCK_LIMIT,
    NAMES,
    EntryKey,
    Facts,
    Posting,
    ScreeningIndex,
    facts_and_postings,
)
from gateway.domain.validate import ValidationError
from gateway.domain.watchlist import (
    Boundary,
    StoredRecord,
    ViewRecord,
    WatchlistView,
    micros,
    validity,
)
from gateway.envelope import Signer, proto_jurisdiction
from gateway.errors import FieldViolation, NotFoundError
from gateway.pki.identity import Jurisdiction
from gateway.store import Connection, Database, Schema, ddl, ensure_schema

__all__ = ["WATCHLIST_KINDS", "StoredIndex", "ViewStore", "Watchlists"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# The kinds whose subject is a watchlist entry, from the table of kinds (ADR 0016).
WATCHLIST_KINDS = tuple(kind for kind, row in KINDS.items() if row.subject_prefix == "watchlist")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS view_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    advanced_to_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS view_entries (
    origin INTEGER NOT NULL,
    watchlist TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    entry BLOB NOT NULL,
    revocation BLOB NOT NULL,
    message_id TEXT NOT NULL,
    revocation_message_id TEXT NOT NULL,
    view_version INTEGER NOT NULL,
    state INTEGER NOT NULL,
    erased_version INTEGER NOT NULL,
    PRIMARY KEY (origin, watchlist, entry_id)
);
"""
_SQLITE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS view_version_never_decreases
BEFORE UPDATE OF version ON view_meta WHEN NEW.version < OLD.version
BEGIN SELECT RAISE(ABORT, 'the view version never decreases'); END
"""
_POSTGRES_TRIGGER = (
    "CREATE OR REPLACE FUNCTION view_version_never_decreases() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN IF NEW.version < OLD.version THEN "
    "RAISE EXCEPTION 'the view version never decreases'; END IF; RETURN NEW; END $$",
    "DROP TRIGGER IF EXISTS view_version_never_decreases ON view_meta",
    "CREATE TRIGGER view_version_never_decreases BEFORE UPDATE OF version ON view_meta "
    "FOR EACH ROW EXECUTE FUNCTION view_version_never_decreases()",
)
# A StoredRecord is the row: its fields name the columns, in order.
_UPSERT = (
    f"INSERT INTO view_entries ({', '.join(StoredRecord._fields)}) "  # noqa: S608 (constant names)
    f"VALUES ({', '.join('?' * len(StoredRecord._fields))}) "
    "ON CONFLICT (origin, watchlist, entry_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in StoredRecord._fields[3:])
)


_SCREENING_SCHEMA = """
ALTER TABLE view_meta ADD COLUMN indexed INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS screening_postings (
    tbl INTEGER NOT NULL,
    k TEXT NOT NULL,
    origin INTEGER NOT NULL,
    watchlist TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tbl, k, origin, watchlist, entry_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS screening_keys (
    origin INTEGER NOT NULL,
    watchlist TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    posted TEXT NOT NULL,
    PRIMARY KEY (origin, watchlist, entry_id)
) WITHOUT ROWID;
"""


def _create(conn: Connection) -> None:
    """Version 1: the view's tables and the trigger that keeps its version from decreasing."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(ddl(conn, statement))
    for statement in (_SQLITE_TRIGGER,) if conn.dialect == "sqlite" else _POSTGRES_TRIGGER:
        conn.execute(statement)


def _screening(conn: Connection) -> None:
    """Version 2: the screening index's postings and its number of entries (ADR 0038); filled
    from the view's entries at the next start, in one transaction."""
    for statement in _SCREENING_SCHEMA.split(";"):
        if statement.strip():
            conn.execute(ddl(conn, statement))


def _served_from_store(conn: Connection) -> None:
    """Version 3: what the view is served by from its tables (ADR 0038): each entry's validity
    (filled from the stored entries), and the indexes for boundaries, erasures and pages."""
    for column in ("valid_from_us", "valid_until_us"):
        conn.execute(f"ALTER TABLE view_entries ADD COLUMN {column} {ddl(conn, 'INTEGER')}")
    rows = conn.execute(
        "SELECT origin, watchlist, entry_id, entry FROM view_entries WHERE length(entry) > 0"
    ).fetchall()
    updates = []
    for origin, watchlist, entry_id, entry in rows:
        start, end = validity(domain_pb2.WatchlistEntry.FromString(bytes(entry)))
        if start is not None or end is not None:
            updates.append(
                (
                    None if start is None else micros(start),
                    None if end is None else micros(end),
                    origin,
                    watchlist,
                    entry_id,
                )
            )
    conn.executemany(
        "UPDATE view_entries SET valid_from_us = ?, valid_until_us = ? "
        "WHERE origin = ? AND watchlist = ? AND entry_id = ?",
        updates,
    )
    for statement in (
        "CREATE INDEX IF NOT EXISTS view_entries_from ON view_entries (valid_from_us)",
        "CREATE INDEX IF NOT EXISTS view_entries_until ON view_entries (valid_until_us)",
        "CREATE INDEX IF NOT EXISTS view_entries_message ON view_entries (message_id)",
        "CREATE INDEX IF NOT EXISTS view_entries_page "
        "ON view_entries (watchlist, view_version, origin, entry_id)",
    ):
        conn.execute(statement)


_POSTINGS_IN_ORDER = """
DROP TABLE screening_postings;
DROP TABLE screening_keys;
ALTER TABLE view_meta ADD COLUMN posted INTEGER NOT NULL DEFAULT 0;
UPDATE view_meta SET indexed = 0;
CREATE TABLE screening_postings (
    tbl INTEGER NOT NULL,
    k TEXT NOT NULL,
    n INTEGER NOT NULL,
    origin INTEGER NOT NULL,
    watchlist TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tbl, k, n)
) WITHOUT ROWID;
CREATE TABLE screening_keys (
    origin INTEGER NOT NULL,
    watchlist TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    posted TEXT NOT NULL,
    PRIMARY KEY (origin, watchlist, entry_id)
) WITHOUT ROWID;
"""


def _postings_in_order(conn: Connection) -> None:
    """Version 4: postings keyed by (table, key, the entry's indexing number) instead of the
    entry's key (ADR 0059): a new entry's postings go at the end of each bucket, so a batch
    dirties a few pages per key instead of one page per posting, and a bucket reads in the
    order its entries were indexed (as the in-memory storage's). The index is built again
    at the next start (its count is set to 0)."""
    for statement in _POSTINGS_IN_ORDER.split(";"):
        if statement.strip():
            conn.execute(ddl(conn, statement))


_CAPPED_KEYS = """
CREATE TABLE IF NOT EXISTS screening_counts (
    tbl INTEGER NOT NULL,
    k TEXT NOT NULL,
    total INTEGER NOT NULL,
    kept INTEGER NOT NULL,
    last_n INTEGER NOT NULL,
    PRIMARY KEY (tbl, k)
) WITHOUT ROWID
"""


def _capped_keys(conn: Connection) -> None:
    """Version 5: the name keys whose postings are capped (ADR 0079), with how many entries
    carry each (``total``), how many postings are kept (``kept``) and the indexing number of
    the last kept one (``last_n``). A key without a row keeps every posting, as every key of a
    file from before did: nothing to build again."""
    conn.execute(ddl(conn, _CAPPED_KEYS))


def _keys_in_order(conn: Connection) -> None:
    """Version 6: ``screening_keys`` indexed by indexing number, so that refilling a capped
    key reads the entries after its last kept one in order and stops once it has enough,
    instead of every row (ADR 0079: a bulk revoke of a capped key's oldest entries)."""
    conn.execute("CREATE INDEX IF NOT EXISTS screening_keys_n ON screening_keys (n)")


_SCREENING_IN_ENTRIES = """
ALTER TABLE view_entries ADD COLUMN screening_n INTEGER;
ALTER TABLE view_entries ADD COLUMN screening_posted TEXT;
UPDATE view_entries SET
    screening_n = (SELECT k.n FROM screening_keys AS k WHERE k.origin = view_entries.origin
        AND k.watchlist = view_entries.watchlist AND k.entry_id = view_entries.entry_id),
    screening_posted = (SELECT k.posted FROM screening_keys AS k
        WHERE k.origin = view_entries.origin AND k.watchlist = view_entries.watchlist
        AND k.entry_id = view_entries.entry_id)
WHERE EXISTS (SELECT 1 FROM screening_keys AS k WHERE k.origin = view_entries.origin
    AND k.watchlist = view_entries.watchlist AND k.entry_id = view_entries.entry_id);
CREATE INDEX view_entries_screening
ON view_entries (screening_n, origin, watchlist, entry_id) WHERE screening_n IS NOT NULL;
CREATE TABLE screening_postings_7 (
    tbl INTEGER NOT NULL,
    k TEXT NOT NULL,
    n INTEGER NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tbl, k, n)
) WITHOUT ROWID;
INSERT INTO screening_postings_7 (tbl, k, n, value)
SELECT p.tbl, p.k, p.n, p.value FROM screening_postings AS p
JOIN view_entries AS e ON e.screening_n = p.n;
DROP TABLE screening_postings;
ALTER TABLE screening_postings_7 RENAME TO screening_postings;
DROP TABLE screening_keys
"""


def _screening_in_entries(conn: Connection) -> None:
    """Version 7 (ADR 0084): an indexed entry's indexing number and posted keys are columns of
    its ``view_entries`` row (``screening_n``, ``screening_posted``), found by the view's own
    key, and in indexing order through a partial index; postings name their entry by indexing
    number alone. ``screening_keys`` (a second b-tree keyed by the entry, rewritten almost
    whole by each bulk call) is gone. The rows are copied, nothing is built again."""
    for statement in _SCREENING_IN_ENTRIES.split(";"):
        if statement.strip():
            conn.execute(ddl(conn, statement))


VIEW_SCHEMA = Schema(
    "watchlist_view",
    {
        1: _create,
        2: _screening,
        3: _served_from_store,
        4: _postings_in_order,
        5: _capped_keys,
        6: _keys_in_order,
        7: _screening_in_entries,
    },
)
CACHE_KIB = 32768
"""SQLite page cache of the view's connection (KiB; SQLite's default is 2,000): a bulk call
dirties about 2.6 pages per entry at 100,000 stored (ADR 0084); with a cache smaller than
that, SQLite evicts and reads again pages the call still writes, and spills dirty pages to
the WAL before the commit. Bounded: the view's memory still does not grow with its entries."""
_REFILL_READ = 2000
"""Entries a refill reads at a time (in indexing order)."""
_SCREENING_COLUMNS = (
    "INSERT INTO view_entries (origin, watchlist, entry_id, entry, revocation, message_id, "
    "revocation_message_id, view_version, state, erased_version, screening_n, "
    "screening_posted) VALUES (?, ?, ?, ?, ?, '', '', 0, 0, 0, ?, ?) "
    "ON CONFLICT (origin, watchlist, entry_id) DO UPDATE SET "
    "screening_n = excluded.screening_n, screening_posted = excluded.screening_posted"
)
"""An indexed entry's indexing number and posted keys, into its row (ADR 0084)."""
_RS, _US = "\x1e", "\x1f"  # separators of view_entries.screening_posted (keys hold \x1f themselves)
RECORDS_CACHE = 8192
"""View records kept in memory (read again from the store when evicted)."""
_COLUMNS = (
    "origin, watchlist, entry_id, entry, revocation, message_id, revocation_message_id, "
    "view_version, state, erased_version"
)
FACTS_CACHE = 8192
"""Facts of indexed entries kept in memory (computed again from the entry when evicted)."""
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
QUEUED_ENTRIES = 4000
"""Payloads a deferred view lets wait (:class:`Watchlists`); past that, telling it waits."""
POSTINGS_KEPT = 2 * BLOCK_LIMIT
"""Postings a name key keeps once more entries carry it (ADR 0079): the first ones in indexing
order. Never fewer than ``BLOCK_LIMIT + 1`` are kept (the bucket is filled again from
the entries' rows when drops bring it there), so a capped key is past the limit, and the
least common key of a query whose keys all are gives the same first entries as a full one."""
CAPPING_FROM = 16
"""Postings a name key must get in one flush before it is looked at for capping (a count
query): keys that grow slower keep every posting, which is always correct."""
_Wanted = tuple[
    int, domain_pb2.WatchlistEntry | domain_pb2.WatchlistRevocation, str, dt.datetime
]  # (origin, payload, message id, received at), as the view applies them


class StaleViewError(Exception):
    """Another replica saved the shared view since this one loaded it."""


class ViewStore:
    """The view's tables: a SQLite file of their own (WAL, ``synchronous=FULL``) or the node's
    PostgreSQL database. Used under the caller's lock."""

    def __init__(self, where: Path | Database) -> None:
        database = where if isinstance(where, Database) else Database("sqlite", path=where)
        if database.path is not None:
            # Private like the ledger (names of persons): SQLite gives -wal and -shm the same
            # mode.
            with contextlib.suppress(FileExistsError):
                os.close(
                    os.open(
                        database.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
                    )
                )
        self._conn = conn = database.dedicated()
        if conn.dialect == "sqlite":
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self._begin = "BEGIN IMMEDIATE" if conn.dialect == "sqlite" else "BEGIN"
        self._open = False  # a transaction begun by begin(), not yet ended
        self._base: int | None = None  # the version a shared store must still have at writes
        self._writing = False
        # PostgreSQL: replicas of the node share these tables (ADR 0070); each save checks
        # that no other replica saved since this one loaded, under the view_meta row lock.
        self.shared = conn.dialect == "postgresql"
        conn.execute(self._begin)
        try:
            ensure_schema(conn, VIEW_SCHEMA)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise

    @property
    def conn(self) -> Connection:
        """The view's connection (used under the caller's lock)."""
        return self._conn

    def begin(self, base: int | None = None) -> None:
        """Opens the transaction one call's changes are written in (the screening index writes
        as it goes; :meth:`save` or :meth:`end` ends it). With ``base`` (a shared store), the
        first write checks that the stored version is still ``base``."""
        if not self._open:
            self._conn.execute("BEGIN")
            self._open, self._base, self._writing = True, base, False

    def writing(self) -> None:
        """Called before the open transaction's first write. On a shared store, takes the
        view_meta row lock (replicas write one at a time, in one order: no deadlock) and
        refuses with :class:`StaleViewError` if another replica saved since ``base``."""
        if not self._open:
            raise RuntimeError("a write to the view's store outside begin()")
        if self._writing:
            return
        self._writing = True
        if self._base is not None:
            row = self._conn.execute("SELECT version FROM view_meta WHERE id = 1 FOR UPDATE")
            found = row.fetchone()
            if (0 if found is None else int(found[0])) != self._base:
                raise StaleViewError(f"the stored view moved past version {self._base}")

    def end(self) -> None:
        """Ends the open transaction without saving (nothing was written, or it is dropped)."""
        if self._open:
            self._open = False
            self._conn.execute("ROLLBACK")

    def load(self) -> tuple[list[StoredRecord], int, dt.datetime]:
        """Every stored record, the view version and the time the view had advanced to."""
        meta = self._conn.execute("SELECT version, advanced_to_us FROM view_meta").fetchone()
        if meta is None:
            return [], 0, _EPOCH
        rows = self._conn.execute(
            "SELECT origin, watchlist, entry_id, entry, revocation, message_id, "
            "revocation_message_id, view_version, state, erased_version FROM view_entries"
        ).fetchall()
        records = [StoredRecord(*row) for row in rows]
        return records, int(meta[0]), _EPOCH + dt.timedelta(microseconds=int(meta[1]))

    def meta(self) -> tuple[int, dt.datetime, int]:
        """The stored view version, the time the view had advanced to and the number of
        entries its screening index holds (0, the epoch and 0 before the first save)."""
        row = self._conn.execute(
            "SELECT version, advanced_to_us, indexed FROM view_meta"
        ).fetchone()
        if row is None:
            return 0, _EPOCH, 0
        return int(row[0]), _EPOCH + dt.timedelta(microseconds=int(row[1])), int(row[2])

    def posted(self) -> int:
        """The last indexing number the screening index gave an entry (0 before any)."""
        row = self._conn.execute("SELECT posted FROM view_meta").fetchone()
        return 0 if row is None else int(row[0])

    def indexable(self) -> bool:
        """Whether an entry is stored that the screening index would hold."""
        row = self._conn.execute(
            "SELECT 1 FROM view_entries WHERE length(entry) > 0 AND state <> ? LIMIT 1",
            (int(partner_pb2.EntryState.ENTRY_STATE_REVOKED),),
        ).fetchone()
        return row is not None

    def indexable_entries(
        self, batch: int = 1000
    ) -> Iterator[tuple[int, str, str, domain_pb2.WatchlistEntry]]:
        """The entries the screening index holds (neither erased nor revoked), read in
        batches by key."""
        revoked = int(partner_pb2.EntryState.ENTRY_STATE_REVOKED)
        after: tuple[int, str, str] = (-1, "", "")
        while True:
            rows = self._conn.execute(
                "SELECT origin, watchlist, entry_id, entry, state FROM view_entries "
                "WHERE (origin, watchlist, entry_id) > (?, ?, ?) "
                "ORDER BY origin, watchlist, entry_id LIMIT ?",
                (*after, batch),
            ).fetchall()
            if not rows:
                return
            for origin, watchlist, entry_id, entry, state in rows:
                after = (int(origin), str(watchlist), str(entry_id))
                if entry and int(state) != revoked:
                    yield (*after, domain_pb2.WatchlistEntry.FromString(bytes(entry)))

    def stored_version(self) -> int:
        """The view version stored now (0 before the first save)."""
        row = self._conn.execute("SELECT version FROM view_meta WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def save(
        self,
        records: list[StoredRecord],
        version: int,
        advanced_to: dt.datetime,
        base: int | None = None,
        index: StoredIndex | None = None,
    ) -> None:
        """Stores changed records, then what ``index`` has pending (into the same rows), with
        the view version, in the transaction :meth:`begin` opened (one is opened here if none
        is), all or nothing, durably; the transaction is ended either way.

        With ``base`` (a shared store), refuses with :class:`StaleViewError` unless the stored
        version is still ``base``: another replica saved since this view was loaded.
        """
        advanced_us = micros(advanced_to)
        conn = self._conn
        self.begin(base)
        try:
            self.writing()
            self.upsert(records)  # first: the index writes its columns into these rows
            if index is not None:
                index.flush()
            indexed, posted = (
                (self.meta()[2], self.posted()) if index is None else (index.count(), index.posted)
            )
            conn.execute(
                "INSERT INTO view_meta (id, version, advanced_to_us, indexed, posted) "
                "VALUES (1, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
                "advanced_to_us = excluded.advanced_to_us, indexed = excluded.indexed, "
                "posted = excluded.posted",
                (version, advanced_us, indexed, posted),
            )
            conn.execute("COMMIT")
            self._open = False
        except BaseException:
            self.end()
            raise

    def upsert(self, records: list[StoredRecord]) -> None:
        """Writes records in the open transaction (after :meth:`writing`): each record is the
        row (its fields are in the order of ``_UPSERT``'s columns)."""
        self._conn.executemany(_UPSERT, records)

    def close(self) -> None:
        """Closes the file."""
        self._conn.close()


def _record(row: Sequence[object]) -> ViewRecord:
    origin, watchlist, entry_id, entry, revocation, message_id, revoked_by, vv, state, erased = row
    return ViewRecord.from_stored(
        StoredRecord(
            int(cast(int, origin)), str(watchlist), str(entry_id), bytes(cast(bytes, entry)),
            bytes(cast(bytes, revocation)), str(message_id), str(revoked_by), int(cast(int, vv)),
            int(cast(int, state)), int(cast(int, erased)),
        )
    )  # fmt: skip


class StoredRecords:
    """The view's records served from its tables (ADR 0038): read by key, by message, by
    validity boundary and by page with indexed queries; what the view puts is kept pending
    (written before the next query, and by :meth:`ViewStore.save` with the call's changes);
    the :data:`RECORDS_CACHE` most recently used records are kept in memory. Memory does not
    grow with the number of entries. Used under the caller's lock; one per loaded view."""

    def __init__(self, store: ViewStore) -> None:
        self._store = store
        self._conn = store.conn
        self._cache: OrderedDict[tuple[int, str, str], ViewRecord] = OrderedDict()
        self._pending: dict[tuple[int, str, str], ViewRecord] = {}
        self._absent: set[tuple[int, str, str]] = set()  # known unknown, until the next save

    def _remember(self, record: ViewRecord) -> None:
        key = record.key
        self._cache[key] = record
        self._cache.move_to_end(key)
        while len(self._cache) > RECORDS_CACHE:
            self._cache.popitem(last=False)

    def get(self, origin: int, watchlist: str, entry_id: str) -> ViewRecord | None:
        """The record of an entry, None if unknown."""
        key = (origin, watchlist, entry_id)
        record = self._pending.get(key) or self._cache.get(key)
        if record is not None:
            return record
        if key in self._absent or "\x00" in watchlist + entry_id:
            return None  # no stored entry has a NUL (validated; PostgreSQL text refuses it)
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM view_entries "  # noqa: S608 (constant column names)
            "WHERE origin = ? AND watchlist = ? AND entry_id = ?",
            key,
        ).fetchone()
        if row is None:
            return None
        record = _record(row)
        self._remember(record)
        return record

    def prefetch(self, keys: Sequence[tuple[int, str, str]]) -> None:
        """Reads the records of ``keys`` into the cache in a few queries (a batch about to be
        applied), and notes which are unknown, so :meth:`get` needs no query for them."""
        self._absent.clear()
        wanted: dict[tuple[int, str], set[tuple[int, str, str]]] = {}
        for key in keys:
            if key not in self._pending and key not in self._cache:
                wanted.setdefault(key[:2], set()).add(key)
        for (origin, watchlist), group in wanted.items():
            ids = sorted({entry_id for _, _, entry_id in group})
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM view_entries WHERE origin = ? AND watchlist = ? "  # noqa: S608 (constant column names)
                    f"AND entry_id IN ({', '.join('?' * len(chunk))})",
                    (origin, watchlist, *chunk),
                ).fetchall()
                for row in rows:
                    record = _record(row)
                    self._remember(record)
                    group.discard(record.key)
            self._absent.update(group)  # what no row was found for

    def put(self, record: ViewRecord) -> None:
        """Keeps ``record`` pending until the next query or save."""
        self._pending[record.key] = record
        self._remember(record)

    def flush(self) -> None:
        """Writes the pending records (in the open transaction)."""
        if self._pending:
            self._store.writing()
            self._store.upsert([record.stored() for record in self._pending.values()])
            self._pending.clear()

    def saved(self) -> None:
        """The pending records were written by :meth:`ViewStore.save`."""
        self._pending.clear()
        self._absent.clear()

    def by_message(self, message_id: str) -> tuple[int, str, str] | None:
        """The entry whose content came in ``message_id``, None if none."""
        self.flush()
        row = self._conn.execute(
            "SELECT origin, watchlist, entry_id FROM view_entries WHERE message_id = ? LIMIT 1",
            (message_id,),
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), str(row[2]))

    def message_ids(self) -> set[str]:
        """Every message id the records show (content or revocation)."""
        self.flush()
        held: set[str] = set()
        for column in ("message_id", "revocation_message_id"):
            rows = self._conn.execute(
                f"SELECT {column} FROM view_entries WHERE {column} <> ''"  # noqa: S608 (constant column names)
            ).fetchall()
            held.update(str(row[0]) for row in rows)
        return held

    def schedule(self, boundary: Boundary) -> None:
        """Nothing: the boundaries are the records' validity columns."""

    def due(self, after: dt.datetime, upto: dt.datetime) -> list[Boundary]:
        """The records' boundaries in (``after``, ``upto``], in time order."""
        self.flush()
        low, high = micros(after), micros(upto)
        rows = self._conn.execute(
            "SELECT valid_from_us AS t, origin, watchlist, entry_id FROM view_entries "
            "WHERE valid_from_us > ? AND valid_from_us <= ? UNION ALL "
            "SELECT valid_until_us AS t, origin, watchlist, entry_id FROM view_entries "
            "WHERE valid_until_us > ? AND valid_until_us <= ? ORDER BY 1, 2, 3, 4",
            (low, high, low, high),
        ).fetchall()
        return [
            (_EPOCH + dt.timedelta(microseconds=int(t)), int(o), str(w), str(e))
            for t, o, w, e in rows
        ]

    def next_boundary(self, after: dt.datetime) -> dt.datetime | None:
        """The earliest boundary after ``after``, None if none."""
        self.flush()
        low = micros(after)
        found = [
            self._conn.execute(
                f"SELECT MIN({column}) FROM view_entries WHERE {column} > ?",  # noqa: S608 (constant column names)
                (low,),
            ).fetchone()[0]
            for column in ("valid_from_us", "valid_until_us")
        ]
        times = [int(t) for t in found if t is not None]
        return _EPOCH + dt.timedelta(microseconds=min(times)) if times else None

    def page(
        self,
        watchlist: str,
        since: int,
        upto: int,
        cursor: tuple[int, int, str] | None,
        limit: int,
    ) -> tuple[list[ViewRecord], bool]:
        """One page by (view version, origin, entry id), with one row more to tell if more
        follow."""
        if "\x00" in watchlist:
            return [], False  # no stored entry has a NUL (validated; PostgreSQL refuses it)
        self.flush()
        sql = (
            f"SELECT {_COLUMNS} FROM view_entries "  # noqa: S608 (constant column names)
            "WHERE watchlist = ? AND view_version > ? AND view_version <= ?"
        )
        args: list[object] = [watchlist, since, upto]
        if since == 0:
            sql += " AND state <> ?"
            args.append(int(partner_pb2.EntryState.ENTRY_STATE_ERASED))
        if cursor is not None:
            sql += " AND (view_version, origin, entry_id) > (?, ?, ?)"
            args.extend(cursor)
        sql += " ORDER BY view_version, origin, entry_id LIMIT ?"
        args.append(limit + 1)
        rows = self._conn.execute(sql, args).fetchall()
        return [_record(row) for row in rows[:limit]], len(rows) > limit

    def watchlists(self) -> list[str]:
        """Names of the watchlists with at least one record, sorted."""
        self.flush()
        rows = self._conn.execute(
            "SELECT DISTINCT watchlist FROM view_entries ORDER BY watchlist"
        ).fetchall()
        return [str(row[0]) for row in rows]

    def empty(self) -> bool:
        """Whether no record is kept."""
        self.flush()
        return self._conn.execute("SELECT 1 FROM view_entries LIMIT 1").fetchone() is None


class StoredIndex:
    """The screening index's storage in the view's tables (ADR 0038): postings, and each
    indexed entry's indexing number and posted keys in two columns of its ``view_entries`` row
    (ADR 0084: written after the records, by :meth:`ViewStore.save`), in the view's
    transaction (batched until the next query or save); facts computed again from the entry
    (``entry_of``) and kept for the :data:`FACTS_CACHE` most recently used entries. Memory does
    not grow with the number of entries. Used under the caller's lock; one per loaded view (a
    rollback drops it).

    A name key carried by more than :data:`POSTINGS_KEPT` entries is capped (ADR 0079): its
    bucket keeps the postings of the first entries in indexing order (at least
    ``BLOCK_LIMIT + 1`` of them, filled again from the entries' rows when drops bring it
    lower), and ``screening_counts`` counts its entries exactly. Every other key keeps every
    posting. :meth:`bucket_size` is exact for a capped key; :meth:`bucket` gives its kept
    prefix, which is all a query reads of a key past ``BLOCK_LIMIT``
    (``ScreeningIndex._name_candidates``): screening answers as with every posting kept."""

    def __init__(
        self,
        store: ViewStore,
        entry_of: Callable[[EntryKey], domain_pb2.WatchlistEntry | None] | None = None,
    ) -> None:
        self._store = store
        self._conn = store.conn
        self.entry_of = entry_of
        self.facts_at_put = False
        self._count = store.meta()[2]
        self.posted = store.posted()  # the last indexing number given (kept in view_meta)
        self._facts: OrderedDict[EntryKey, Facts] = OrderedDict()
        self._pending: dict[EntryKey, tuple[int, list[Posting]]] = {}
        self._stale: set[EntryKey] = set()
        # Capped name keys: [entries carrying it, postings kept, indexing number of the last
        # kept], as in screening_counts (few: a key needs POSTINGS_KEPT entries).
        self._capped: dict[str, list[int]] = {
            str(k): [int(total), int(kept), int(last_n)]
            for k, total, kept, last_n in self._conn.execute(
                "SELECT k, total, kept, last_n FROM screening_counts WHERE tbl = ?", (NAMES,)
            ).fetchall()
        }

    def count(self) -> int:
        """How many entries are indexed."""
        return self._count

    def clear(self) -> None:
        """Removes every posting, entry and count (in the open transaction), before the index
        is built again."""
        self._store.writing()
        for table in ("screening_postings", "screening_counts"):
            self._conn.execute(f"DELETE FROM {table}")  # noqa: S608 (constant names)
        self._conn.execute(
            "UPDATE view_entries SET screening_n = NULL, screening_posted = NULL "
            "WHERE screening_n IS NOT NULL"
        )
        self._capped.clear()
        self._pending.clear()
        self._stale.clear()

    def _remember(self, key: EntryKey, facts: Facts) -> None:
        self._facts[key] = facts
        self._facts.move_to_end(key)
        while len(self._facts) > FACTS_CACHE:
            self._facts.popitem(last=False)

    def facts(self, key: EntryKey) -> Facts:
        """The facts of an indexed entry, from the cache or computed from its entry."""
        facts = self._facts.get(key)
        if facts is not None:
            self._facts.move_to_end(key)
            return facts
        entry = None if self.entry_of is None else self.entry_of(key)
        if entry is None:
            raise KeyError(key)
        facts = facts_and_postings(entry)[0]
        self._remember(key, facts)
        return facts

    def bucket(self, table: int, key: str) -> list[tuple[EntryKey, str]]:
        """The entries posted under ``key`` with their values, in the order they were
        indexed (as :class:`MemoryIndexStorage`); of a capped key, the kept first ones."""
        self.flush()
        rows = self._conn.execute(
            "SELECT e.origin, e.watchlist, e.entry_id, p.value FROM screening_postings AS p "
            "JOIN view_entries AS e ON e.screening_n = p.n "
            "WHERE p.tbl = ? AND p.k = ? ORDER BY p.n",
            (table, key),
        ).fetchall()
        return [((int(o), str(w), str(e)), str(v)) for o, w, e, v in rows]

    def bucket_size(self, table: int, key: str, cap: int) -> int:
        """How many entries are posted under ``key``, counted up to ``cap + 1`` (all with a
        negative ``cap``); exactly for a capped key."""
        self.flush()
        if table == NAMES and (state := self._capped.get(key)) is not None:
            return state[0]
        if cap < 0:
            sql = "SELECT COUNT(*) FROM screening_postings WHERE tbl = ? AND k = ?"
            args: tuple[int, ...] = ()
        else:
            sql = (
                "SELECT COUNT(*) FROM (SELECT 1 FROM screening_postings "
                "WHERE tbl = ? AND k = ? LIMIT ?) AS b"
            )
            args = (cap + 1,)
        return int(self._conn.execute(sql, (table, key, *args)).fetchone()[0])

    def put(
        self, key: EntryKey, facts: Facts | None, postings: list[Posting], *, replacing: bool
    ) -> None:
        """Indexes an entry; what it had is removed first when ``replacing``. Its facts are
        computed when first asked for (:attr:`facts_at_put` is False: a bulk publish does
        not pay for facts no screen may need)."""
        if replacing:
            self._stale.add(key)
            self._facts.pop(key, None)
        else:
            self._count += 1
        self.posted += 1
        self._pending[key] = (self.posted, postings)
        if facts is not None:
            self._remember(key, facts)

    def drop(self, key: EntryKey) -> None:
        """Removes an indexed entry's postings."""
        self._count -= 1
        self._stale.add(key)
        self._pending.pop(key, None)
        self._facts.pop(key, None)

    def flush(self) -> None:
        """Writes the pending postings (in the open transaction)."""
        if not (self._stale or self._pending):
            return
        self._store.writing()
        changed: set[str] = set()  # capped keys whose count changed
        if self._stale:
            self._remove_stale(changed)
        if self._pending:
            self._insert_pending(changed)
        for index_key in sorted(changed):
            state = self._capped.get(index_key)
            if state is not None and state[1] <= BLOCK_LIMIT:
                self._refill(index_key)
        self._conn.executemany(
            "DELETE FROM screening_counts WHERE tbl = ? AND k = ?",
            [(NAMES, k) for k in sorted(changed) if k not in self._capped],
        )
        self._conn.executemany(
            "INSERT INTO screening_counts (tbl, k, total, kept, last_n) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (tbl, k) DO UPDATE SET total = excluded.total, kept = excluded.kept, "
            "last_n = excluded.last_n",
            [(NAMES, k, *self._capped[k]) for k in sorted(changed) if k in self._capped],
        )

    def _remove_stale(self, changed: set[str]) -> None:
        # Each indexed entry's view_entries row names its postings (screening_posted): the
        # row is written anyway, an index of the postings by entry would be another b-tree.
        capped = self._capped
        stale = sorted(self._stale)
        groups: dict[tuple[int, str], list[str]] = {}
        for origin, watchlist, entry_id in stale:
            groups.setdefault((origin, watchlist), []).append(entry_id)
        doomed = []
        gone = []  # the entries whose rows name postings
        for (origin, watchlist), ids in groups.items():
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = self._conn.execute(
                    "SELECT entry_id, screening_n, screening_posted FROM view_entries "  # noqa: S608 (placeholders only)
                    "WHERE origin = ? AND watchlist = ? "
                    f"AND entry_id IN ({', '.join('?' * len(chunk))}) "
                    "AND screening_n IS NOT NULL",
                    (origin, watchlist, *chunk),
                ).fetchall()
                for entry_id, n, posted_keys in rows:
                    gone.append((origin, watchlist, entry_id))
                    for posted in str(posted_keys).split(_RS) if posted_keys else ():
                        table, _, index_key = posted.partition(_US)
                        if capped and int(table) == NAMES and index_key in capped:
                            state = capped[index_key]
                            state[0] -= 1
                            changed.add(index_key)
                            if int(n) > state[2]:
                                continue  # never kept
                            state[1] -= 1
                        doomed.append((int(table), index_key, int(n)))
        self._conn.executemany(
            "DELETE FROM screening_postings WHERE tbl = ? AND k = ? AND n = ?", doomed
        )
        self._conn.executemany(
            "UPDATE view_entries SET screening_n = NULL, screening_posted = NULL "
            "WHERE origin = ? AND watchlist = ? AND entry_id = ?",
            gone,
        )
        self._stale.clear()

    def _insert_pending(self, changed: set[str]) -> None:
        # In indexing order: each bucket grows at its end.
        capped = self._capped
        pending = sorted(self._pending.items(), key=lambda item: item[1][0])
        arriving: dict[str, int] = {}
        for _, (_, postings) in pending:
            for table, index_key, _ in postings:
                if table == NAMES:
                    arriving[index_key] = arriving.get(index_key, 0) + 1
        room: dict[str, int] = {}  # capped keys: how many of their postings are still kept
        for index_key, more in arriving.items():
            state = capped.get(index_key)
            if state is None and more >= CAPPING_FROM:
                kept, last_n = self._conn.execute(
                    "SELECT COUNT(*), MAX(n) FROM screening_postings WHERE tbl = ? AND k = ?",
                    (NAMES, index_key),
                ).fetchone()
                if int(kept) + more <= POSTINGS_KEPT:
                    continue
                state = capped[index_key] = [int(kept), int(kept), int(last_n or 0)]
                room[index_key] = max(0, POSTINGS_KEPT - int(kept))
            if state is not None:
                state[0] += more
                changed.add(index_key)
                room.setdefault(index_key, 0)
        rows = []
        for _, (n, postings) in pending:
            for table, index_key, value in postings:
                if room and table == NAMES and index_key in room:
                    left = room[index_key]
                    if not left:
                        continue
                    room[index_key] = left - 1
                    state = capped[index_key]
                    state[1] += 1
                    state[2] = n
                rows.append((table, index_key, n, value))
        self._conn.executemany(
            "INSERT INTO screening_postings (tbl, k, n, value) VALUES (?, ?, ?, ?)", rows
        )
        # Into the entry's row. A row is made when there is none yet: the index used alone
        # (its property test), or flushed by a read of a bucket before ViewStore.save wrote
        # the records of the same change; the record's own write then fills the rest of the
        # row and leaves these two columns as they are (_UPSERT sets the record's columns).
        self._conn.executemany(
            _SCREENING_COLUMNS,
            [
                (
                    *key,
                    b"",
                    b"",
                    n,
                    _RS.join([f"{table}{_US}{index_key}" for table, index_key, _ in postings]),
                )
                for key, (n, postings) in pending
            ],
        )
        self._pending.clear()

    def _refill(self, index_key: str) -> None:
        """Tops a capped key's bucket up from the entries' rows (drops brought its kept
        postings to ``BLOCK_LIMIT``) to the first :data:`POSTINGS_KEPT` entries carrying it in
        indexing order: every one (and the key no longer capped) if no more carry it.

        The postings still kept are those of every entry carrying the key up to ``last_n``
        (a drop there removed its posting), so only entries after ``last_n`` are read, in
        indexing order, until enough are found."""
        total, kept, last_n = self._capped[index_key]
        element = f"{NAMES}{_US}{index_key}"
        escaped = element.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        wanted = POSTINGS_KEPT - kept
        added: list[int] = []
        after = last_n
        while len(added) < wanted:
            rows = self._conn.execute(
                "SELECT screening_n, screening_posted FROM view_entries "
                "WHERE screening_n > ? AND screening_posted LIKE ? ESCAPE '!' "
                "ORDER BY screening_n LIMIT ?",
                (after, f"%{escaped}%", _REFILL_READ),
            ).fetchall()
            for n, posted in rows:
                # LIKE may match more (case, a longer key): the exact test is here.
                if element in str(posted).split(_RS) and len(added) < wanted:
                    added.append(int(n))
            if len(rows) < _REFILL_READ:
                break
            after = int(rows[-1][0])
        self._conn.executemany(
            "INSERT INTO screening_postings (tbl, k, n, value) VALUES (?, ?, ?, '')",
            [(NAMES, index_key, n) for n in added],
        )
        if total <= POSTINGS_KEPT:
            del self._capped[index_key]
        else:
            self._capped[index_key] = [total, kept + len(added), added[-1] if added else last_n]


class Watchlists:
    """A :class:`WatchlistView` behind a lock, fed by the exchange (thread-safe), kept in
    ``path`` (``watchlist-view.db`` in the node's data directory). With ``reader`` (the
    ledger's read connection), items and hits carry the handling of their message. With
    ``ledger_size``, a view file found empty beside a ledger with history numbers its versions
    from three times that size, above any version the lost file can have shown.

    Page tokens are authenticated with a key derived from the node's signing key, so they stay
    valid across restarts of the same node and cannot be forged by callers.

    With ``deferred`` (the node), :meth:`apply_many` only queues what it is told and returns: a
    thread of the view applies the queued batches in order, several in one transaction, after
    the call that recorded them has answered (ADR 0059). Every query of the view (and every
    other change) first waits until what was queued before it is applied, so an answer of the
    view never misses a payload already told; a payload that is in the ledger but not yet in
    the stored view when the process dies is applied at the next start by the replay of
    stored payloads (ADR 0035). At most :data:`QUEUED_ENTRIES` payloads wait: past that,
    :meth:`apply_many` waits for the view to catch up.
    """

    def __init__(
        self,
        signer: Signer,
        clock: Callable[[], dt.datetime],
        path: Path | Database,
        reader: Callable[[], Connection] | None = None,
        ledger_size: int = 0,
        *,
        deferred: bool = False,
    ) -> None:
        raw = signer.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self._secret = hashlib.sha256(b"customs-gateway/page-token/v1\n" + raw).digest()
        self._store = ViewStore(path)
        self._reader = reader
        self._floor = 3 * ledger_size
        self._lock = threading.Lock()
        self._clock = clock
        self._base = 0  # the stored version the view was loaded at or last saved
        self._index: StoredIndex
        self._records: StoredRecords
        self._view = self._load()
        # Deferred application (the node): batches told and not yet applied, how many were
        # told and applied (a query waits for the count told before it), and the thread.
        self._queued = threading.Condition()
        self._queue: list[list[_Wanted]] = []
        self._waiting = 0  # payloads in _queue
        self._told = 0
        self._applied = 0
        self._closing = False
        self._applier: threading.Thread | None = None
        if deferred:
            self._applier = threading.Thread(
                target=self._apply_queued, name="watchlist-view", daemon=True
            )
            self._applier.start()

    def _load(self) -> WatchlistView:
        """The stored view, served from the store: its records and screening index stay in
        the database (ADR 0038); only the version and the time advanced to are read here. The
        index is built there in one transaction when the store has none yet (a file from
        before ADR 0038)."""
        self._store.end()
        records = StoredRecords(self._store)
        index = StoredIndex(self._store)
        view = WatchlistView(self._secret, ScreeningIndex(index), records)
        index.entry_of = view.entry
        self._records, self._index = records, index
        version, advanced_to, _ = self._store.meta()
        self._base = version
        if version == 0 and self._floor and records.empty():
            # A view file lost (or new) beside a ledger with history: versions start above any
            # this node can have shown (each ledger entry gives at most one change, an erasure
            # one more, validity two), so no partner's since_version meets a reused number;
            # rebuilt entries come again in their deltas.
            version = self._floor
            log.warning("watchlist view rebuilt from the ledger; its versions start at %d", version)
        view.resume(version=version, advanced_to=advanced_to)
        if index.count() == 0 and self._store.indexable():
            self._build_index(ScreeningIndex(index), version, advanced_to)
        return view

    def _build_index(self, index: ScreeningIndex, version: int, advanced_to: dt.datetime) -> None:
        """Indexes every stored entry that is neither erased nor revoked, in one transaction."""
        self._store.begin(self._store_base())
        try:
            self._index.clear()  # what a count of 0 left
            for origin, watchlist, entry_id, entry in self._store.indexable_entries():
                index.put((origin, watchlist, entry_id), entry, replacing=False)
            self._store.save([], version, advanced_to, self._store_base(), self._index)
        finally:
            self._store.end()
        log.info("screening index built in the store for %d entries", self._index.count())

    def _store_base(self) -> int | None:
        return self._base if self._store.shared else None

    def _commit(self) -> None:
        """Stores what the view changed (and the index's pending postings) and ends the
        transaction; if that fails, the view goes back to what is stored (a change never shown
        is applied again from the ledger at the next start)."""
        changes = self._view.take_changes()
        if not changes:
            self._store.end()
            self._records.saved()
            return
        try:
            self._store.save(
                changes, self._view.version, self._view.advanced_to, self._store_base(),
                self._index,
            )  # fmt: skip
        except Exception:
            self._view = self._load()
            raise
        self._records.saved()
        self._base = self._view.version

    def _changing(self, change: Callable[[], T]) -> T:
        """Run ``change`` on the view and store what it changed (caller holds the lock), in
        one transaction of the view's store.

        On a shared store the view is first reloaded if another replica saved since, and a
        change that loses the race to another replica is reloaded and run again once: every
        replica serves the one stored view, its versions never reused.
        """
        for attempt in (1, 2):
            if self._store.shared and self._store.stored_version() != self._base:
                self._view = self._load()
            self._store.begin(self._store_base())
            try:
                result = change()
            except StaleViewError:
                self._view = self._load()
                if attempt == 2:
                    raise
                continue
            except Exception:
                self._commit()  # what the view changed before (time advanced), as before
                raise
            try:
                self._commit()
            except StaleViewError:
                if attempt == 2:
                    raise
                continue
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _handling(self, message_id: str) -> common_pb2.Handling | None:
        """The handling of a stored message's envelope, None if unknown or erased."""
        if self._reader is None or not message_id:
            return None
        row = (
            self._reader()
            .execute(
                "SELECT envelope FROM exchange_messages "
                "WHERE message_id = ? AND envelope IS NOT NULL LIMIT 1",
                (message_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        header = envelope_pb2.EnvelopeHeader.FromString(
            envelope_pb2.Envelope.FromString(row[0]).header
        )
        return header.handling

    def caught_up(self) -> None:
        """Returns once every payload told before this call is applied (at once when not
        deferred)."""
        if self._applier is None:
            return
        with self._queued:
            told = self._told
            while self._applied < told:
                self._queued.wait()

    def _apply_queued(self) -> None:
        """The applier thread: applies what is queued, in order, several batches in one
        transaction (each batch alone again if that fails), until closed and drained."""
        while True:
            with self._queued:
                while not self._queue and not self._closing:
                    self._queued.wait()
                if not self._queue:
                    return
                batches, self._queue, self._waiting = self._queue, [], 0
                self._queued.notify_all()  # room for callers waiting to queue
            try:
                try:
                    self._apply_group([item for batch in batches for item in batch])
                except Exception:  # each batch alone: what was applied already changes nothing
                    for batch in batches:
                        self._apply_logged(batch)
            finally:
                with self._queued:
                    self._applied += len(batches)
                    self._queued.notify_all()

    @property
    def version(self) -> int:
        """The view version now."""
        self.caught_up()
        with self._lock:
            return self._view.version

    def apply(
        self, origin: Jurisdiction, kind: int, payload: Message, message_id: str, at: dt.datetime
    ) -> None:
        """Exchange listener: merge watchlist entries and revocations, ignore other kinds."""
        if kind not in WATCHLIST_KINDS:
            return
        # The table's watchlist kinds carry exactly these payload types (tests/domain/test_kinds).
        merged = cast(domain_pb2.WatchlistEntry | domain_pb2.WatchlistRevocation, payload)
        self.caught_up()
        with self._lock:
            self._changing(
                lambda: self._view.apply(
                    proto_jurisdiction(origin), merged, message_id, received_at=at
                )
            )

    def apply_many(
        self, told: Sequence[tuple[Jurisdiction, int, Message, str, dt.datetime]]
    ) -> None:
        """Exchange batch listener: :meth:`apply` for each payload, in order, stored in one
        commit (a bulk submit or a delivered batch costs one fsync of the view, not one each)."""
        wanted: list[_Wanted] = [
            (
                proto_jurisdiction(origin),
                cast(domain_pb2.WatchlistEntry | domain_pb2.WatchlistRevocation, payload),
                message_id,
                at,
            )
            for origin, kind, payload, message_id, at in told
            if kind in WATCHLIST_KINDS
        ]
        if not wanted:
            return
        if self._applier is None:
            with self._lock:
                self._changing(lambda: self._apply_all(wanted))
            return
        with self._queued:
            while self._waiting >= QUEUED_ENTRIES and not self._closing:
                self._queued.wait()
            self._queue.append(wanted)
            self._waiting += len(wanted)
            self._told += 1
            self._queued.notify_all()

    def _apply_logged(self, wanted: list[_Wanted]) -> None:
        try:
            self._apply_group(wanted)
        except Exception:  # a view must never fail the write that already happened
            log.exception(
                "watchlist view failed to apply %d payload(s) from %s", len(wanted), wanted[0][2]
            )

    def _apply_group(self, wanted: list[_Wanted]) -> None:
        with self._lock:
            self._changing(lambda: self._apply_all(wanted))

    def _apply_all(self, wanted: Sequence[_Wanted]) -> None:
        """Applies ``wanted`` in order (caller holds the lock, in :meth:`_changing`)."""
        self._records.prefetch([(o, p.watchlist, p.entry_id) for o, p, _, _ in wanted])
        for origin, payload, message_id, at in wanted:
            self._view.apply(origin, payload, message_id, received_at=at)

    def erased(self, kind: int, message_id: str) -> None:
        """Exchange erasure listener: the payload of ``message_id`` is gone."""
        if kind not in WATCHLIST_KINDS:
            return
        self.caught_up()
        with self._lock:
            self._changing(lambda: self._view.erase(message_id))

    def reconcile(self, still_stored: Callable[[set[str]], set[str]]) -> int:
        """Erase from the view every payload the store no longer holds (at start, after
        replay). ``still_stored`` returns which of the given message ids still have their
        payload. Returns how many were erased here."""

        def erase_gone() -> int:
            held = self._view.message_ids()
            gone = held - still_stored(held)
            return sum(self._view.erase(message_id) for message_id in sorted(gone))

        self.caught_up()
        with self._lock:
            return self._changing(erase_gone)

    def list(self, request: partner_pb2.ListWatchlistRequest) -> partner_pb2.ListWatchlistResponse:
        """A snapshot or delta page of one watchlist."""
        self.caught_up()
        with self._lock:
            return self._changing(lambda: self._view.list_watchlist(request, now=self._clock()))

    def get(self, request: partner_pb2.GetWatchlistEntryRequest) -> partner_pb2.WatchlistItem:
        """One entry of the view in its state now.

        Raises:
            ValidationError: origin, watchlist or entry_id missing (each at its field).
            NotFoundError: no such entry in this node's view, or it was erased.
        """
        problems = []
        if request.origin == common_pb2.JURISDICTION_UNSPECIFIED:
            problems.append(FieldViolation("origin", "required: the publishing jurisdiction"))
        if not request.watchlist:
            problems.append(FieldViolation("watchlist", "required"))
        if not request.entry_id:
            problems.append(FieldViolation("entry_id", "required"))
        if problems:
            raise ValidationError(problems)
        self.caught_up()
        with self._lock:
            item = self._changing(
                lambda: self._view.get(
                    request.origin, request.watchlist, request.entry_id, now=self._clock()
                )
            )
        if item is not None:
            handling = self._handling(item.message_id)
            if handling is not None:
                item.handling.CopyFrom(handling)
        if item is None:
            known = request.origin in common_pb2.Jurisdiction.values()
            origin = common_pb2.Jurisdiction.Name(request.origin) if known else str(request.origin)
            raise NotFoundError(
                f"no entry {request.entry_id[:100]!r} of {origin} in watchlist "
                f"{request.watchlist[:100]!r} at this node"
            )
        return item

    def screen(
        self, request: partner_pb2.ScreenDeclarationRequest
    ) -> partner_pb2.ScreenDeclarationResponse:
        """Screen a declaration, in normal form, against the entries active now; the response
        says what was normalised (container spacing and case, an IMO prefix...).

        Raises:
            ValidationError: what cannot be normalised into a valid value, at its field.
        """
        declaration, normalised, problems = normalise_declaration(request.declaration)
        if not request.HasField("declaration"):
            problems = [FieldViolation("declaration", "required")]
        if problems:
            raise ValidationError(problems)
        self.caught_up()
        with self._lock:
            response = self._changing(
                lambda: self._view.screen(
                    declaration, now=self._clock(), watchlists=tuple(request.watchlists)
                )
            )
        response.normalised.extend(normalised)
        for hit in response.hits:
            handling = self._handling(hit.message_id)
            if handling is not None:
                hit.handling.CopyFrom(handling)
        return response

    def close(self) -> None:
        """Applies what is queued, then closes the view's file."""
        if self._applier is not None:
            with self._queued:
                self._closing = True
                self._queued.notify_all()
            self._applier.join()
        with self._lock:
            self._store.close()
