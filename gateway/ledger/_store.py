"""The ledger on a store: one writer thread with group commit, readers on their own connections.

Every append waits until its transaction is durable (SQLite: WAL, ``synchronous=FULL``;
PostgreSQL: the commit's WAL flush): appends from concurrent callers queue up, the writer drains
the queue and commits them together with one fsync. Each request's rows are written together
with the caller's ``within`` callback, so other components (outbox, payload store) write their
rows in the same transaction as the entry; a request that fails is rolled back alone and gets
its exception (the batch is then run again with a SAVEPOINT per request, ADR 0074).

On PostgreSQL several replicas may share the ledger (ADR 0071): each commit first locks the
single tree-state row, and if the stored size is ahead of this writer's frontier (another replica
appended) the writer catches up from the stored entries before appending. Readers compare their
size with that row and catch up on demand, so no replica serves a tree another has moved past.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from gateway.ledger import _schema
from gateway.ledger._entry import Entry, Record, decode_record, encode_many
from gateway.ledger._tiles import (
    TILE_HEIGHT,
    TileFrontier,
    TileReader,
    check_tiles_end,
    load_levels,
    verify_and_rebuild,
)
from gateway.ledger.errors import (
    LedgerClosedError,
    LedgerCorruptError,
    LedgerOriginError,
    LedgerRangeError,
)
from gateway.merkle import (
    MerkleError,
    consistency_proof,
    inclusion_proof,
    tree_root,
)
from gateway.notes import (
    Checkpoint,
    NoteSigner,
    Verifier,
    parse_checkpoint,
    parse_note,
    parse_signature_line,
    sign_note,
    verify_cosignature,
)
from gateway.store import Connection, Database, database_errors, ensure_schema

log = logging.getLogger("gateway.ledger")
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
Within = Callable[[Connection, int], None]
Clock = Callable[[], int]  # milliseconds since the epoch
MAX_BATCH_ENTRIES = 20_000
MAX_PAGE = 1000
CACHED_HASHES = 1 << 18  # upper tree levels kept in memory: at most this many hashes (~17 MiB)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A stored checkpoint: the parsed body, the note with every signature, and when made."""

    checkpoint: Checkpoint
    note: str
    created_ms: int

    @property
    def size(self) -> int:
        """The tree size it commits to."""
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        """The 32-byte root it commits to."""
        return self.checkpoint.root_hash


class _Reply(Protocol[T_contra]):
    """Where the writer puts a job's outcome: a :class:`Future` or a :class:`_Waiter`."""

    def set_result(self, result: T_contra, /) -> None: ...

    def set_exception(self, exception: BaseException | None, /) -> None: ...


class _Waiter(Generic[T]):
    """A one-shot reply for one blocked caller: a lock the writer releases once.

    Cheaper than a :class:`Future` on both sides (no Condition, no waiter list, no callbacks):
    the writer's wake is one C-level lock release, which matters because the writer wakes every
    caller of a group commit while holding the GIL. Only the thread that made it may wait.
    """

    __slots__ = ("_error", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._error: BaseException | None = None

    def set_result(self, result: T, /) -> None:
        """Give the caller ``result`` (called once, by the writer)."""
        self._value = result
        self._lock.release()

    def set_exception(self, exception: BaseException | None, /) -> None:
        """Make the caller raise ``exception`` (called once, by the writer)."""
        self._error = exception
        self._lock.release()

    def result(self) -> T:
        """Block until the writer answered; return the result or raise the exception."""
        self._lock.acquire()
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class _Append:
    entries: list[Entry]
    within: Within | None
    future: _Reply[list[Record]]


@dataclass
class _Task:
    fn: Callable[[Connection], Any]
    future: _Reply[Any]


@dataclass
class _Refresh:
    """Catch the writer's tree state up with the stored tree (no transaction, no lock)."""

    future: Future[None]


_STOP = object()


def _cached_total(size: int, low: int) -> int:
    """How many perfect nodes of level >= ``low`` a tree of ``size`` leaves has."""
    return sum(size >> level for level in range(low, size.bit_length()))


def _lowest_cached_level(size: int, limit: int) -> int:
    """The lowest tile base level from which every perfect node fits in ``limit`` hashes.

    A multiple of the tile height: the levels below it are read as whole tiles anyway, so a
    proof reads the same rows whether the cache starts at a tile's base or inside it.
    """
    low = 0
    while _cached_total(size, low) > limit:
        low += TILE_HEIGHT
    return low


class _UpperLevels:
    """Every perfect node of level ``low`` and above, in memory: ``levels[level][pos]``.

    Perfect nodes of one level complete in position order, so each level is a list that only
    grows at its end. The writer appends as it builds the tree and truncates on rollback; it
    replaces the whole object (never mutates ``low``) when ``low`` rises, so a reader that took
    a reference keeps a consistent view. Readers only ask for nodes of durable tree sizes.
    """

    __slots__ = ("levels", "low")

    def __init__(self, low: int, levels: list[list[bytes]]) -> None:
        self.low = low
        self.levels = levels

    def count(self) -> int:
        return sum(len(hashes) for hashes in self.levels[self.low :])

    def truncate(self, size: int) -> None:
        """Forget nodes beyond a tree of ``size`` leaves (after a rollback)."""
        for level in range(self.low, len(self.levels)):
            del self.levels[level][size >> level :]

    def room(self, end: int) -> list[list[bytes]]:
        """The level lists, with one for every level of a tree of ``end`` leaves."""
        while len(self.levels) <= end.bit_length():
            self.levels.append([])
        return self.levels


def _check_meta(conn: Connection, where: str, origin: str) -> None:
    meta = dict(conn.execute("SELECT key, value FROM ledger_meta").fetchall())
    if not meta:
        conn.executemany(
            "INSERT INTO ledger_meta(key, value) VALUES (?, ?)",
            [("origin", origin), ("schema_version", _schema.SCHEMA_VERSION)],
        )
        return
    if meta.get("origin") != origin:
        raise LedgerOriginError(f"{where} is the ledger of {meta.get('origin')!r}, not {origin!r}")
    if meta.get("schema_version") != _schema.SCHEMA_VERSION:
        raise LedgerCorruptError(f"{where}: unknown schema version {meta.get('schema_version')}")


def _load_frontier(conn: Connection) -> TileFrontier:
    """The writer's tree state at open, after checking that the stored tiles end where the
    entries do (a crash cannot leave one without the other: they commit together), and that
    every stored tile is what the entries give (ADR 0014)."""
    row = conn.execute("SELECT max(idx), count(*) FROM ledger_entries").fetchone()
    size = 0 if row[0] is None else row[0] + 1
    if row[1] != size:
        raise LedgerCorruptError(f"ledger has {row[1]} entries but its last index is {size - 1}")
    check_tiles_end(conn, size)
    last = conn.execute(
        "SELECT size, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1"
    ).fetchone()
    signed = None
    if last is not None:
        signed = (int(last[0]), parse_checkpoint(parse_note(last[1]).text).root_hash)
    return verify_and_rebuild(conn, size, signed)


def _check_last_checkpoint(conn: Connection, size: int, source: TileReader) -> None:
    """Refuse to go on from a ledger whose stored tree no longer gives the root of its own last
    signed checkpoint. The tail of fewer than 16 entries is rehashed from the entries at open
    (ADR 0012), so this catches those entries altered while the node was down, before the node
    signs anything on top of them. It is a self-check, not the security boundary: auditors and
    witnesses are.

    Raises:
        LedgerCorruptError: naming the checkpoint size and both roots.
    """
    (note,) = conn.execute("SELECT note FROM ledger_checkpoints WHERE size = ?", (size,)).fetchone()
    signed = parse_checkpoint(parse_note(note).text).root_hash
    stored = tree_root(size, source)
    if stored != signed:
        raise LedgerCorruptError(
            f"the first {size} entries hash to {stored.hex()}, but the ledger's last signed "
            f"checkpoint (size {size}) says {signed.hex()}: the ledger was altered; run "
            "customs-gateway audit verify on it"
        )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# PostgreSQL: one consistent snapshot of every table for the reads made at open.
_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


def _begin(conn: Connection) -> None:
    """Start a writing transaction: SQLite takes its write lock now (IMMEDIATE), not at the
    first write; PostgreSQL locks row by row (the tree-state row first, ADR 0071)."""
    conn.execute("BEGIN IMMEDIATE" if conn.dialect == "sqlite" else "BEGIN")


def _pipeline(conn: Connection) -> contextlib.AbstractContextManager[object]:
    """PostgreSQL's pipeline mode on ``conn`` (a no-op context on SQLite): statements are sent
    without waiting for each answer; a failure surfaces at the latest when the block ends."""
    raw = getattr(conn, "raw", None)
    return raw.pipeline() if raw is not None else contextlib.nullcontext()


def _deferring(conn: Connection) -> contextlib.AbstractContextManager[object]:
    """PostgreSQL: the requests' plain INSERTs of one group commit go as one statement per
    table (:meth:`PostgresConnection.deferring`, ADR 0075); a no-op context on SQLite, where a
    statement costs no round trip."""
    deferring = getattr(conn, "deferring", None)
    return deferring() if deferring is not None else contextlib.nullcontext()


# Rows up to this many go in one multi-row INSERT, more in an executemany: one statement text
# per row count, so a handful of texts for the usual requests (one entry per recipient).
_ROWS_PER_STATEMENT = 8


def _insert(conn: Connection, into: str, rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` (two columns each) into ``into`` ("table(a, b)"): few rows in one
    statement (on PostgreSQL an executemany in the writer's pipeline costs a round trip of its
    own; on SQLite each statement is a GIL hand-off or more, ADR 0074), many in an executemany."""
    if len(rows) > _ROWS_PER_STATEMENT:
        conn.executemany(f"INSERT INTO {into} VALUES (?, ?)", rows)  # noqa: S608
    else:
        conn.execute(
            f"INSERT INTO {into} VALUES " + ",".join(["(?, ?)"] * len(rows)),  # noqa: S608
            [value for row in rows for value in row],
        )


def _check_committed(cur: Any) -> None:
    """Make sure a COMMIT (its cursor, read once answered) committed: PostgreSQL answers a
    COMMIT of a failed transaction with ROLLBACK and no error, which must never be taken for
    durable."""
    status = getattr(cur, "statusmessage", "COMMIT")
    if status != "COMMIT":
        raise LedgerClosedError(f"the database rolled the transaction back ({status})")


class Ledger:
    """A node's append-only, signed ledger in a SQLite file or a PostgreSQL database.
    Thread-safe.

    Open it with :meth:`open`; every method may be called from any thread.
    """

    def __init__(
        self,
        database: Database,
        origin: str,
        signer: NoteSigner,
        conn: Connection,
        frontier: TileFrontier,
        checkpoint_size: int | None,
        last_time: int,
        upper: _UpperLevels | None = None,
        cache_limit: int = CACHED_HASHES,
        clock: Clock | None = None,
    ) -> None:
        """Use :meth:`open`; this wires an already opened connection to a new writer thread."""
        self.database = database
        self.path = database.path  # the SQLite file; None on PostgreSQL
        self.where = database.where
        self._shared = database.dialect == "postgresql"  # replicas may append too (ADR 0071)
        self._clock: Clock = clock or _now_ms
        self.origin = origin
        self.signer = signer
        self._wconn = conn
        self._frontier = frontier
        self._pending = frontier.view()
        self._size = frontier.size
        self._checkpoint_size = checkpoint_size
        self._last_time = last_time
        self._cache_limit = cache_limit
        self._upper = upper if upper is not None else _UpperLevels(0, [])
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[Connection] = []
        self._pooled: Connection | None = None
        # Shared store: no other replica appended at the last look, so the next commit checks
        # the tree-state row in its first write rather than reading it first (ADR 0075).
        self._uncontended = True
        self._readers_lock = threading.Lock()
        self._writer = threading.Thread(
            target=self._run, name=f"ledger-writer:{origin}", daemon=True
        )
        self._writer.start()

    @classmethod
    def open(
        cls,
        path: str | Path | Database,
        *,
        origin: str,
        signer: NoteSigner,
        schema: Callable[[Connection], None] | None = None,
        cache_limit: int = CACHED_HASHES,
        clock: Clock | None = None,
    ) -> Ledger:
        """Open or create the ledger at ``path`` and start its writer thread.

        Args:
            path: the SQLite file (created if missing), or an opened :class:`Database`.
            origin: the checkpoint origin line, fixed when the ledger is created.
            signer: the node's Ed25519 note signer for checkpoints.
            schema: run once at open inside a transaction, for other components' tables.
            cache_limit: at most this many subtree hashes of the upper tree levels are kept in
                memory (read at open, then kept by the writer), so a proof reads only the
                lowest levels from the store; the lowest cached level rises as the log grows.
            clock: milliseconds since the epoch for entry times and checkpoints (tests fix it).

        Raises:
            LedgerOriginError: the store holds the ledger of another origin.
            LedgerCorruptError: the store holds inconsistent rows.
            SchemaVersionError: the store's schema is newer than this gateway's.
        """
        database = path if isinstance(path, Database) else Database("sqlite", path=Path(path))
        Checkpoint(origin, 0, bytes(32))  # validates the origin line
        conn = database.dedicated()
        try:
            if conn.dialect == "sqlite":
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
            _begin(conn)
            ensure_schema(conn, _schema.LEDGER_SCHEMA)
            _check_meta(conn, database.where, origin)
            if schema is not None:
                schema(conn)
            conn.execute("COMMIT")
            # One snapshot for everything read at open: replicas may append meanwhile.
            conn.execute("BEGIN" if conn.dialect == "sqlite" else _SNAPSHOT)
            frontier = _load_frontier(conn)
            checkpoint_size = conn.execute("SELECT max(size) FROM ledger_checkpoints").fetchone()[0]
            row = conn.execute(
                "SELECT leaf FROM ledger_entries ORDER BY idx DESC LIMIT 1"
            ).fetchone()
            last_time = decode_record(row[0]).time_ms if row else 0
            low = _lowest_cached_level(frontier.size, cache_limit)
            levels = load_levels(conn, frontier.size, low, frontier.view())
            upper = _UpperLevels(low, levels)
            if checkpoint_size:
                reader = TileReader(low, levels, frontier.view(), conn)
                _check_last_checkpoint(conn, checkpoint_size, reader)
            conn.execute("COMMIT")
        except BaseException:
            if getattr(conn, "in_transaction", False):
                conn.execute("ROLLBACK")
            conn.close()
            raise
        return cls(
            database,
            origin,
            signer,
            conn,
            frontier,
            checkpoint_size,
            last_time,
            upper,
            cache_limit,
            clock,
        )

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        refreshes: list[_Refresh] = []
        while not stopping:
            job = self._queue.get()
            if job is _STOP:
                break
            if isinstance(job, _Refresh):
                self._refresh_now(job)
                continue
            batch = [job]
            count = len(job.entries) if isinstance(job, _Append) else 1
            while count < MAX_BATCH_ENTRIES:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                if isinstance(job, _Refresh):  # the commit catches up anyway
                    refreshes.append(job)
                    continue
                batch.append(job)
                count += len(job.entries) if isinstance(job, _Append) else 1
            self._commit(batch)
            for done in refreshes:
                done.future.set_result(None)
            refreshes.clear()
        self._wconn.close()

    def _commit(self, batch: list[_Append | _Task]) -> None:
        """Commit ``batch`` in one transaction, isolating a failing request in a savepoint.

        A savepoint costs two statements per request (on PostgreSQL two round trips, on SQLite
        GIL hand-offs, ADR 0074), so the batch first runs without them; only if a request fails
        is the transaction rolled back and the batch run again with a savepoint per request,
        which isolates the failing one. (Requests are database writes: running one again after
        a rollback has the effect of running it once.)
        """
        # One round trip, the usual case on a shared store (ADR 0075); None: run it again locked.
        guarded = self._shared and self._uncontended
        if guarded and self._commit_once(batch, savepoints=False, guarded=True) is not None:
            return
        if not self._commit_once(batch, savepoints=False):
            self._commit_once(batch, savepoints=True)

    def _commit_once(
        self, batch: list[_Append | _Task], *, savepoints: bool, guarded: bool = False
    ) -> bool | None:
        """One attempt; False (all rolled back, nobody answered) if a request failed without
        savepoints, else True with every caller answered. ``guarded`` (shared store, no
        savepoints): the tree-state row is locked and checked by the batch's first write instead
        of a read answered before the writes (ADR 0075); None if that attempt failed for any
        reason (all rolled back, nobody answered): the caller runs the batch again locked."""
        conn = self._wconn
        at_start = self._frontier.copy()
        last_time = self._last_time
        outcomes: list[tuple[_Reply[Any], Any, BaseException | None]] = []
        try:
            if not savepoints:
                try:
                    # PostgreSQL: statements go out without waiting for answers, the whole
                    # transaction in one round trip when guarded (ADR 0075), else two (the tree
                    # row's lock, then the rest with the COMMIT; ADR 0074), the requests' plain
                    # INSERTs merged per table. A failure surfaces here at the latest.
                    with _pipeline(conn), _deferring(conn):
                        if guarded:
                            self._guard_tree(conn, batch)
                            stored = None  # the guard moved the tree-state row already
                        else:
                            stored, last_time = self._lock_tree(conn, last_time)
                        stamp = max(self._clock(), last_time)
                        for job in batch:
                            value = (
                                self._append_rows(conn, job, stamp)
                                if isinstance(job, _Append)
                                else job.fn(conn)
                            )
                            outcomes.append((job.future, value, None))
                        self._store_size(conn, stored)
                        committed = conn.execute("COMMIT")
                except Exception:
                    # No transaction left (BEGIN failed, or the COMMIT's fate is unknown): the
                    # batch must not run again; everyone is told nothing was recorded.
                    if not getattr(conn, "in_transaction", True):
                        raise
                    conn.execute("ROLLBACK")
                    self._frontier = at_start
                    self._upper.truncate(at_start.size)
                    if guarded:
                        return None
                    return False
                _check_committed(committed)
            else:
                stored, last_time = self._lock_tree(conn, last_time)
                stamp = max(self._clock(), last_time)
                for job in batch:
                    conn.execute("SAVEPOINT request")
                    saved = self._frontier.copy()
                    try:
                        value = (
                            self._append_rows(conn, job, stamp)
                            if isinstance(job, _Append)
                            else job.fn(conn)
                        )
                        conn.execute("RELEASE request")
                        outcomes.append((job.future, value, None))
                    except Exception as exc:
                        conn.execute("ROLLBACK TO request")
                        conn.execute("RELEASE request")
                        self._frontier = saved
                        self._upper.truncate(saved.size)
                        outcomes.append((job.future, None, exc))
                self._store_size(conn, stored)
                _check_committed(conn.execute("COMMIT"))
        except Exception as exc:
            with contextlib.suppress(*database_errors()):
                conn.execute("ROLLBACK")
            self._frontier = at_start
            self._upper.truncate(at_start.size)
            # The SQLite detail goes to the log only: error texts reach callers of other
            # jurisdictions, who need to know that nothing was recorded, not why.
            log.error("ledger commit of %d request(s) failed", len(batch), exc_info=exc)
            failure = LedgerClosedError("ledger commit failed, nothing recorded; retry later")
            for job in batch:
                job.future.set_exception(failure)
            return True
        self._publish(stamp if any(isinstance(j, _Append) for j in batch) else last_time)
        for future, value, error in outcomes:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
        return True

    def _lock_tree(self, conn: Connection, last_time: int) -> tuple[int | None, int]:
        """Begin the writing transaction; on a shared store lock the tree-state row and catch
        up with what other replicas appended. Returns (the stored size or None, the time of
        the last entry)."""
        _begin(conn)
        if not self._shared:
            return None, last_time
        # (ADR 0071) The tree-state row, locked until COMMIT: one writer at a time over every
        # replica; what another replica appended is read, never assumed.
        (stored,) = conn.execute("SELECT size FROM ledger_tree WHERE id = 1 FOR UPDATE").fetchone()
        self._uncontended = stored == self._frontier.size  # else guarded commits would fail
        return stored, self._catch_up(conn, stored, last_time)

    def _guard_tree(self, conn: Connection, batch: list[_Append | _Task]) -> None:
        """Begin the writing transaction and, in its first statement, lock the tree-state row
        and move it to the size this batch will make, if it still holds this writer's size
        (ADR 0075). If another replica appended meanwhile, the CASE gives NULL, the NOT NULL
        column refuses it and the whole transaction fails: nothing of it commits, and the batch
        runs again under :meth:`_lock_tree`. Nothing is waited for here (pipeline): the writes
        follow at once, in the same round trip as the COMMIT."""
        _begin(conn)
        size = self._frontier.size
        end = size + sum(len(job.entries) for job in batch if isinstance(job, _Append))
        conn.execute(
            "UPDATE ledger_tree SET size = CASE WHEN size = ? THEN ? END WHERE id = 1",
            (size, end),
        )

    def _store_size(self, conn: Connection, stored: int | None) -> None:
        """On a shared store, move the tree-state row to this writer's size."""
        if stored is not None and self._frontier.size != stored:
            conn.execute("UPDATE ledger_tree SET size = ? WHERE id = 1", (self._frontier.size,))

    def _publish(self, last_time: int) -> None:
        """Show readers the writer's durable state (writer thread)."""
        self._pending = self._frontier.view()  # before the size: readers check the size first
        self._size = self._frontier.size
        self._last_time = last_time
        self._bound_cache()

    def _catch_up(self, conn: Connection, stored: int, last_time: int) -> int:
        """Extend the frontier over entries another replica stored, up to ``stored`` entries;
        returns the time of the last one (or ``last_time``). Their tiles are that replica's:
        computed here for the frontier and the cache, never inserted again. Also refreshes the
        latest checkpoint size, which another replica may have moved.

        Raises:
            LedgerCorruptError: the stored tree is smaller than this writer's (rolled back
                under it), or entries below ``stored`` are missing.
        """
        frontier = self._frontier
        if stored < frontier.size:
            raise LedgerCorruptError(
                f"the stored ledger has {stored} entries but this replica has seen "
                f"{frontier.size}: the database lost committed entries"
            )
        if stored == frontier.size:
            return last_time
        sha = hashlib.sha256
        while frontier.size < stored:
            first = frontier.size
            rows = conn.execute(
                "SELECT idx, leaf FROM ledger_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (first, min(stored, first + MAX_BATCH_ENTRIES)),
            ).fetchall()
            if not rows or rows[0][0] != first or rows[-1][0] != first + len(rows) - 1:
                raise LedgerCorruptError(f"ledger entries from {first} are not all stored")
            upper = self._upper
            frontier.extend(
                [sha(b"\x00" + bytes(leaf)).digest() for _, leaf in rows],
                upper.room(first + len(rows)),
                upper.low,
            )
            last_time = max(last_time, decode_record(bytes(rows[-1][1])).time_ms)
        self._checkpoint_size = conn.execute("SELECT max(size) FROM ledger_checkpoints").fetchone()[
            0
        ]
        return last_time

    def _refresh_now(self, job: _Refresh) -> None:
        """Catch up with the stored tree outside any transaction (writer thread): committed
        entries never change, so no lock is needed to read them."""
        at_start = self._frontier.copy()
        try:
            (stored,) = self._wconn.execute("SELECT size FROM ledger_tree WHERE id = 1").fetchone()
            self._publish(self._catch_up(self._wconn, stored, self._last_time))
        except Exception as exc:
            self._frontier = at_start
            self._upper.truncate(at_start.size)
            log.error("ledger catch-up failed", exc_info=exc)
            job.future.set_exception(LedgerClosedError("ledger catch-up failed; retry later"))
            return
        job.future.set_result(None)

    def _append_rows(self, conn: Connection, job: _Append, stamp: int) -> list[Record]:
        frontier = self._frontier
        first = frontier.size
        entries = job.entries
        leaves = encode_many(first, stamp, entries)
        sha = hashlib.sha256
        upper = self._upper
        tiles = frontier.extend(
            [sha(b"\x00" + leaf).digest() for leaf in leaves],
            upper.room(first + len(entries)),
            upper.low,
        )
        _insert(conn, "ledger_entries(idx, leaf)", list(zip(count(first), leaves)))
        if tiles:
            _insert(conn, "ledger_tiles(id, hashes)", tiles)
        records = [Record(index, stamp, e) for index, e in enumerate(entries, first)]
        if job.within is not None:
            job.within(conn, first)
        return records

    def _bound_cache(self) -> None:
        """Raise the lowest cached level while the cache holds more than its limit (writer)."""
        upper = self._upper
        if upper.count() <= self._cache_limit:
            return
        low = _lowest_cached_level(self._size, self._cache_limit)
        levels = [[] if level < low else hashes for level, hashes in enumerate(upper.levels)]
        self._upper = _UpperLevels(low, levels)

    def _submit(self, job: _Append | _Task | _Refresh) -> None:
        with self._close_lock:
            if self._closed:
                raise LedgerClosedError(f"ledger {self.origin} is closed")
            self._queue.put(job)

    # -- writing -------------------------------------------------------------------------------

    def append(self, entry: Entry, within: Within | None = None) -> Record:
        """Record ``entry``; return once it is durable (fsynced), with its index and time.

        Args:
            entry: what to record.
            within: called as ``within(conn, index)`` in the same transaction, after the entry
                is written, for the caller's own rows. It must not commit or roll back. If it
                raises, this entry and the callback's writes are rolled back and the exception
                is raised here; other callers sharing the commit are not affected.

        Raises:
            LedgerClosedError: the ledger is closed or the commit failed.
        """
        return self.append_many([entry], within)[0]

    def append_many(self, entries: Sequence[Entry], within: Within | None = None) -> list[Record]:
        """Record ``entries`` in order, all or none, in one transaction; see :meth:`append`.

        ``within`` receives the index of the first entry.
        """
        if not entries:
            return []
        waiter: _Waiter[list[Record]] = _Waiter()
        self._submit(_Append(list(entries), within, waiter))
        return waiter.result()

    def queue_append(
        self, entries: Sequence[Entry], within: Within | None = None
    ) -> Future[list[Record]]:
        """Queue ``entries`` as :meth:`append_many` does and return at once with its future.

        For a caller with several independent appends (each all-or-none on its own): queue
        them all, then wait on each future, so they share one group commit instead of one
        fsync each. The future's result or exception is what :meth:`append_many` would give.
        """
        future: Future[list[Record]] = Future()
        if not entries:
            future.set_result([])
            return future
        self._submit(_Append(list(entries), within, future))
        return future

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer connection inside a group-committed transaction.

        For other components' rows that go with no ledger entry. Returns after the commit is
        durable; an exception from ``fn`` rolls back only ``fn``'s writes and is raised here.
        """
        waiter: _Waiter[T] = _Waiter()
        self._submit(_Task(fn, waiter))
        return waiter.result()

    # -- reading -------------------------------------------------------------------------------

    def reader(self) -> Connection:
        """A connection for reads (never blocks writes): on SQLite this thread's own; on
        PostgreSQL one shared reader that borrows a pooled connection per statement."""
        if self._closed:
            raise LedgerClosedError(f"ledger {self.origin} is closed")
        if self._shared:  # one statement per pool connection: bounded whatever the threads
            if self._pooled is None:
                self._pooled = self.database.pooled_reader()
            return self._pooled
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.own_reader()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def own_reader(self) -> Connection:
        """A new read-only connection to the ledger's store that the caller closes: for threads
        that come and go (:meth:`reader` keeps one per thread until the ledger closes)."""
        if self._closed:
            raise LedgerClosedError(f"ledger {self.origin} is closed")
        if self._shared:
            return self.database.connect()  # from the pool; close() gives it back
        return self.database.dedicated(read_only=True)

    def size(self) -> int:
        """The number of durable entries (on a shared store: at least the stored tree's size
        when called, this replica catching up first if another appended)."""
        if self._shared:
            self._refresh_if_behind()
        return self._size

    def _refresh_if_behind(self, wanted: int | None = None) -> None:
        """Catch up when the stored tree (or ``wanted``) is beyond what this replica has seen."""
        if threading.current_thread() is self._writer:
            return  # inside a commit: the writer caught up under the row lock already
        if wanted is None:
            (wanted,) = (
                self.reader().execute("SELECT size FROM ledger_tree WHERE id = 1").fetchone()
            )
        if wanted > self._size:
            future: Future[None] = Future()
            self._submit(_Refresh(future))
            future.result()

    def _source(self) -> TileReader:
        upper = self._upper
        return TileReader(upper.low, upper.levels, self._pending, self.reader())

    def cached_hashes(self) -> tuple[int, int]:
        """(lowest level kept in memory, number of subtree hashes kept): bounded by the limit."""
        upper = self._upper
        return upper.low, upper.count()

    def _check_size(self, size: int, what: str) -> None:
        if self._shared and size > self._size:
            self._refresh_if_behind()
        current = self._size
        if not 0 <= size <= current:
            raise LedgerRangeError(f"{what}: tree size {size} is beyond the ledger size {current}")

    def root(self, size: int | None = None) -> bytes:
        """The RFC 9162 tree head of the first ``size`` entries (default: all)."""
        size = self._size if size is None else size
        self._check_size(size, "root")
        return tree_root(size, self._source())

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries.

        Raises:
            LedgerRangeError: unless ``0 <= index < size <= self.size()``.
        """
        self._check_size(size, f"inclusion proof of entry {index}")
        if not 0 <= index < size:
            raise LedgerRangeError(f"inclusion proof: entry {index} is not below tree size {size}")
        return inclusion_proof(index, size, self._source())

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """The RFC 9162 consistency proof from tree size ``first`` to ``second``.

        Raises:
            LedgerRangeError: unless ``0 < first <= second <= self.size()``.
        """
        self._check_size(second, f"consistency proof from {first}")
        if not 0 < first <= second:
            raise LedgerRangeError(
                f"consistency proof needs 0 < first <= second, got {first}, {second}"
            )
        try:
            return consistency_proof(first, second, self._source())
        except MerkleError as e:  # pragma: no cover - sizes were checked above
            raise LedgerRangeError(str(e)) from e

    def leaves(self, start: int, end: int, limit: int = MAX_PAGE) -> list[tuple[int, bytes]]:
        """Canonical entry bytes of ``[start, end)``, at most ``limit`` (the page), in order."""
        self._check_size(end, f"entries from {start}")
        if not 0 <= start <= end:
            raise LedgerRangeError(f"entries: start {start} is after end {end}")
        end = min(end, start + max(1, min(limit, MAX_PAGE)))
        rows = self.reader().execute(
            "SELECT idx, leaf FROM ledger_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        )
        return [(int(index), bytes(leaf)) for index, leaf in rows.fetchall()]

    def entries(self, start: int, end: int, limit: int = MAX_PAGE) -> list[Record]:
        """Decoded entries of ``[start, end)``, at most ``limit``; see :meth:`leaves`."""
        return [decode_record(leaf) for _, leaf in self.leaves(start, end, limit)]

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint(self) -> SignedCheckpoint:
        """Sign and store a checkpoint of the current size, or return the stored one of that size.

        The tree head comes from the writer's own state inside the transaction that stores it,
        so a checkpoint is never of a size that is not durable.
        """

        def make(conn: Connection) -> SignedCheckpoint:
            size = self._frontier.size
            if self._checkpoint_size == size or self._shared:  # another replica's, maybe
                found = self._read_checkpoints(conn, size, 1, exact=True)
                if found:
                    return found[0]
            body = Checkpoint(self.origin, size, self._frontier.root())
            note = sign_note(body.body(), [self.signer])
            created = self._clock()
            conn.execute(
                "INSERT INTO ledger_checkpoints(size, root, note, created_ms) VALUES (?,?,?,?)",
                (size, body.root_hash, note, created),
            )
            self._checkpoint_size = size
            return SignedCheckpoint(body, note, created)

        return self.write(make)

    def add_cosignature(self, size: int, line: str, verifier: Verifier | None = None) -> None:
        """Store a witness's cosignature line for the stored checkpoint of ``size``.

        With ``verifier``, the line is checked against the checkpoint first. Storing the same
        line twice is a no-op.

        Raises:
            LedgerRangeError: there is no checkpoint of that size.
            NoteError: the line is malformed or does not verify.
        """
        sig = parse_signature_line(line)
        line = sig.line

        def store(conn: Connection) -> None:
            row = conn.execute(
                "SELECT note FROM ledger_checkpoints WHERE size = ?", (size,)
            ).fetchone()
            if row is None:
                raise LedgerRangeError(f"no checkpoint of size {size} to cosign")
            timestamp = None
            if verifier is not None:
                timestamp = verify_cosignature(parse_note(row[0]).text, line, verifier)
            conn.execute(
                "INSERT INTO ledger_cosignatures(size, line, key_name, timestamp, added_ms) "
                "VALUES (?,?,?,?,?) ON CONFLICT (size, line) DO NOTHING",
                (size, line, sig.name, timestamp, self._clock()),
            )

        self.write(store)

    def _read_checkpoints(
        self, conn: Connection, min_size: int, limit: int, exact: bool = False
    ) -> list[SignedCheckpoint]:
        sql = (
            "SELECT size, note, created_ms FROM ledger_checkpoints WHERE size = ? LIMIT ?"
            if exact
            else "SELECT size, note, created_ms FROM ledger_checkpoints "
            "WHERE size >= ? ORDER BY size LIMIT ?"
        )
        rows = conn.execute(sql, (min_size, limit)).fetchall()
        result = []
        for size, note, created in rows:
            lines = conn.execute(
                "SELECT line FROM ledger_cosignatures WHERE size = ? ORDER BY added_ms, line",
                (size,),
            ).fetchall()
            parsed = parse_note(note + "".join(line for (line,) in lines))
            result.append(SignedCheckpoint(parse_checkpoint(parsed.text), parsed.render(), created))
        return result

    def checkpoint_size(self) -> int | None:
        """The tree size of the latest stored checkpoint, or None before the first (on a
        shared store, read from it: another replica may have made one)."""
        if self._shared:
            size = self.reader().execute("SELECT max(size) FROM ledger_checkpoints").fetchone()[0]
            return None if size is None else int(size)
        return self._checkpoint_size

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The largest stored checkpoint with every cosignature collected, or None."""
        size = self.checkpoint_size()
        if size is None:
            return None
        found = self._read_checkpoints(self.reader(), size, 1, exact=True)
        return found[0] if found else None

    def checkpoints(self, min_size: int = 0, limit: int = 100) -> list[SignedCheckpoint]:
        """Stored checkpoints of at least ``min_size``, smallest first, at most ``limit`` (1000)."""
        return self._read_checkpoints(self.reader(), min_size, max(1, min(limit, MAX_PAGE)))

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish queued writes, stop the writer and close every connection. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._writer.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self.database.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
