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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

from cryptography.hazmat.primitives import serialization
from google.protobuf.message import Message

from customs.gateway.v1 import common_pb2, domain_pb2, envelope_pb2, partner_pb2
from gateway.domain.kinds import KINDS
from gateway.domain.lenient import normalise_declaration
from gateway.domain.validate import ValidationError
from gateway.domain.watchlist import StoredRecord, WatchlistView
from gateway.envelope import Signer, proto_jurisdiction
from gateway.errors import FieldViolation, NotFoundError
from gateway.pki.identity import Jurisdiction
from gateway.store import Connection, Database, Schema, ddl, ensure_schema

__all__ = ["WATCHLIST_KINDS", "ViewStore", "Watchlists"]

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
_UPSERT = (
    "INSERT INTO view_entries (origin, watchlist, entry_id, entry, revocation, message_id, "
    "revocation_message_id, view_version, state, erased_version) "
    "VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (origin, watchlist, entry_id) DO UPDATE SET "
    "entry = excluded.entry, revocation = excluded.revocation, "
    "message_id = excluded.message_id, revocation_message_id = excluded.revocation_message_id, "
    "view_version = excluded.view_version, state = excluded.state, "
    "erased_version = excluded.erased_version"
)


def _create(conn: Connection) -> None:
    """Version 1: the view's tables and the trigger that keeps its version from decreasing."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(ddl(conn, statement))
    for statement in (_SQLITE_TRIGGER,) if conn.dialect == "sqlite" else _POSTGRES_TRIGGER:
        conn.execute(statement)


VIEW_SCHEMA = Schema("watchlist_view", {1: _create})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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
        self._begin = "BEGIN IMMEDIATE" if conn.dialect == "sqlite" else "BEGIN"
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
    ) -> None:
        """Stores changed records with the view version, all or nothing, durably.

        With ``base`` (a shared store), refuses with :class:`StaleViewError` unless the stored
        version is still ``base``: another replica saved since this view was loaded.
        """
        micros = (advanced_to - _EPOCH) // dt.timedelta(microseconds=1)
        conn = self._conn
        conn.execute(self._begin)
        try:
            if base is not None:
                row = conn.execute("SELECT version FROM view_meta WHERE id = 1 FOR UPDATE")
                found = row.fetchone()
                if (0 if found is None else int(found[0])) != base:
                    raise StaleViewError(f"the stored view moved past version {base}")
            conn.executemany(
                _UPSERT,
                [
                    (
                        r.origin, r.watchlist, r.entry_id, r.entry, r.revocation, r.message_id,
                        r.revocation_message_id, r.view_version, r.state, r.erased_version,
                    )
                    for r in records
                ],
            )  # fmt: skip
            conn.execute(
                "INSERT INTO view_meta (id, version, advanced_to_us) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
                "advanced_to_us = excluded.advanced_to_us",
                (version, micros),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Closes the file."""
        self._conn.close()


class Watchlists:
    """A :class:`WatchlistView` behind a lock, fed by the exchange (thread-safe), kept in
    ``path`` (``watchlist-view.db`` in the node's data directory). With ``reader`` (the
    ledger's read connection), items and hits carry the handling of their message. With
    ``ledger_size``, a view file found empty beside a ledger with history numbers its versions
    from three times that size, above any version the lost file can have shown.

    Page tokens are authenticated with a key derived from the node's signing key, so they stay
    valid across restarts of the same node and cannot be forged by callers.
    """

    def __init__(
        self,
        signer: Signer,
        clock: Callable[[], dt.datetime],
        path: Path | Database,
        reader: Callable[[], Connection] | None = None,
        ledger_size: int = 0,
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
        self._view = self._load()

    def _load(self) -> WatchlistView:
        view = WatchlistView(self._secret)
        records, version, advanced_to = self._store.load()
        self._base = version
        if version == 0 and not records and self._floor:
            # A view file lost (or new) beside a ledger with history: versions start above any
            # this node can have shown (each ledger entry gives at most one change, an erasure
            # one more, validity two), so no partner's since_version meets a reused number;
            # rebuilt entries come again in their deltas.
            version = self._floor
            log.warning("watchlist view rebuilt from the ledger; its versions start at %d", version)
        view.restore(records, version=version, advanced_to=advanced_to)
        return view

    def _commit(self) -> None:
        """Stores what the view changed; if that fails, the view goes back to what is stored
        (a change never shown is applied again from the ledger at the next start)."""
        changes = self._view.take_changes()
        if not changes:
            return
        base = self._base if self._store.shared else None
        try:
            self._store.save(changes, self._view.version, self._view.advanced_to, base)
        except Exception:
            self._view = self._load()
            raise
        self._base = self._view.version

    def _changing(self, change: Callable[[], T]) -> T:
        """Run ``change`` on the view and store what it changed (caller holds the lock).

        On a shared store the view is first reloaded if another replica saved since, and a
        save that loses the race to another replica is reloaded and run again once: every
        replica serves the one stored view, its versions never reused.
        """
        for attempt in (1, 2):
            if self._store.shared and self._store.stored_version() != self._base:
                self._view = self._load()
            try:
                result = change()
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

    @property
    def version(self) -> int:
        """The view version now."""
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
        with self._lock:
            for origin, kind, payload, message_id, at in told:
                if kind not in WATCHLIST_KINDS:
                    continue
                merged = cast(domain_pb2.WatchlistEntry | domain_pb2.WatchlistRevocation, payload)
                self._view.apply(proto_jurisdiction(origin), merged, message_id, received_at=at)
            self._commit()

    def erased(self, kind: int, message_id: str) -> None:
        """Exchange erasure listener: the payload of ``message_id`` is gone."""
        if kind not in WATCHLIST_KINDS:
            return
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

        with self._lock:
            return self._changing(erase_gone)

    def list(self, request: partner_pb2.ListWatchlistRequest) -> partner_pb2.ListWatchlistResponse:
        """A snapshot or delta page of one watchlist."""
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
        """Closes the view's file."""
        with self._lock:
            self._store.close()
