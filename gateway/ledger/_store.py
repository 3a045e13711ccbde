"""The ledger in SQLite: one writer thread with group commit, readers on their own connections.

Every append waits until its transaction is durable (WAL, ``synchronous=FULL``): appends from
concurrent callers queue up, the writer drains the queue and commits them together with one
fsync. Each request runs inside its own SAVEPOINT, together with the caller's ``within``
callback, so other components (outbox, payload store) write their rows in the same transaction
as the entry; a request that fails is rolled back alone and gets its exception.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

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
from gateway.ledger.errors import LedgerClosedError, LedgerCorruptError, LedgerRangeError
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

log = logging.getLogger("gateway.ledger")
T = TypeVar("T")
Within = Callable[[sqlite3.Connection, int], None]
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


@dataclass
class _Append:
    entries: list[Entry]
    within: Within | None
    future: Future[list[Record]]


@dataclass
class _Task:
    fn: Callable[[sqlite3.Connection], Any]
    future: Future[Any]


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


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _check_meta(conn: sqlite3.Connection, path: Path, origin: str) -> None:
    meta = dict(conn.execute("SELECT key, value FROM ledger_meta").fetchall())
    if not meta:
        conn.executemany(
            "INSERT INTO ledger_meta(key, value) VALUES (?, ?)",
            [("origin", origin), ("schema_version", _schema.SCHEMA_VERSION)],
        )
        return
    if meta.get("origin") != origin:
        raise LedgerCorruptError(f"{path} is the ledger of {meta.get('origin')!r}, not {origin!r}")
    if meta.get("schema_version") != _schema.SCHEMA_VERSION:
        raise LedgerCorruptError(f"{path}: unknown schema version {meta.get('schema_version')}")


def _load_frontier(conn: sqlite3.Connection) -> TileFrontier:
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


def _check_last_checkpoint(conn: sqlite3.Connection, size: int, source: TileReader) -> None:
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


class Ledger:
    """A node's append-only, signed ledger in one SQLite file. Thread-safe.

    Open it with :meth:`open`; every method may be called from any thread.
    """

    def __init__(
        self,
        path: Path,
        origin: str,
        signer: NoteSigner,
        conn: sqlite3.Connection,
        frontier: TileFrontier,
        checkpoint_size: int | None,
        last_time: int,
        upper: _UpperLevels | None = None,
        cache_limit: int = CACHED_HASHES,
    ) -> None:
        """Use :meth:`open`; this wires an already opened connection to a new writer thread."""
        self.path = path
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
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer = threading.Thread(
            target=self._run, name=f"ledger-writer:{origin}", daemon=True
        )
        self._writer.start()

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        origin: str,
        signer: NoteSigner,
        schema: Callable[[sqlite3.Connection], None] | None = None,
        cache_limit: int = CACHED_HASHES,
    ) -> Ledger:
        """Open or create the ledger at ``path`` and start its writer thread.

        Args:
            path: the SQLite file (created if missing).
            origin: the checkpoint origin line, fixed when the ledger is created.
            signer: the node's Ed25519 note signer for checkpoints.
            schema: run once at open inside a transaction, for other components' tables.
            cache_limit: at most this many subtree hashes of the upper tree levels are kept in
                memory (read at open, then kept by the writer), so a proof reads only the
                lowest levels from SQLite; the lowest cached level rises as the log grows.

        Raises:
            LedgerCorruptError: the file holds another origin or inconsistent rows.
        """
        path = Path(path)
        Checkpoint(origin, 0, bytes(32))  # validates the origin line
        conn = _connect(path)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN IMMEDIATE")
            _schema.create(conn)
            _check_meta(conn, path, origin)
            if schema is not None:
                schema(conn)
            conn.execute("COMMIT")
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
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        return cls(
            path, origin, signer, conn, frontier, checkpoint_size, last_time, upper, cache_limit
        )

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is _STOP:
                break
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
                batch.append(job)
                count += len(job.entries) if isinstance(job, _Append) else 1
            self._commit(batch)
        self._wconn.close()

    def _commit(self, batch: list[_Append | _Task]) -> None:
        conn = self._wconn
        at_start = self._frontier.copy()
        stamp = max(_now_ms(), self._last_time)
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
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
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._frontier = at_start
            self._upper.truncate(at_start.size)
            # The SQLite detail goes to the log only: error texts reach callers of other
            # jurisdictions, who need to know that nothing was recorded, not why.
            log.error("ledger commit of %d request(s) failed", len(batch), exc_info=exc)
            failure = LedgerClosedError("ledger commit failed, nothing recorded; retry later")
            for job in batch:
                job.future.set_exception(failure)
            return
        self._pending = self._frontier.view()  # before the size: readers check the size first
        self._size = self._frontier.size
        self._last_time = stamp
        self._bound_cache()
        for future, value, error in outcomes:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def _append_rows(self, conn: sqlite3.Connection, job: _Append, stamp: int) -> list[Record]:
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
        conn.executemany(
            "INSERT INTO ledger_entries(idx, leaf) VALUES (?, ?)", zip(count(first), leaves)
        )
        if tiles:
            conn.executemany("INSERT INTO ledger_tiles(id, hashes) VALUES (?, ?)", tiles)
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

    def _submit(self, job: _Append | _Task) -> None:
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
        return self.queue_append(entries, within).result()

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

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer connection inside a group-committed transaction.

        For other components' rows that go with no ledger entry. Returns after the commit is
        durable; an exception from ``fn`` rolls back only ``fn``'s writes and is raised here.
        """
        future: Future[T] = Future()
        self._submit(_Task(fn, future))
        return future.result()

    # -- reading -------------------------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection to the ledger file (WAL: never blocks writes)."""
        if self._closed:
            raise LedgerClosedError(f"ledger {self.origin} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.own_reader()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def own_reader(self) -> sqlite3.Connection:
        """A new read-only connection to the ledger file that the caller closes: for threads
        that come and go (:meth:`reader` keeps one per thread until the ledger closes)."""
        if self._closed:
            raise LedgerClosedError(f"ledger {self.origin} is closed")
        conn = _connect(self.path)
        conn.execute("PRAGMA query_only = ON")
        return conn

    def size(self) -> int:
        """The number of durable entries."""
        return self._size

    def _source(self) -> TileReader:
        upper = self._upper
        return TileReader(upper.low, upper.levels, self._pending, self.reader())

    def cached_hashes(self) -> tuple[int, int]:
        """(lowest level kept in memory, number of subtree hashes kept): bounded by the limit."""
        upper = self._upper
        return upper.low, upper.count()

    def _check_size(self, size: int, what: str) -> None:
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
        return (
            self.reader()
            .execute(
                "SELECT idx, leaf FROM ledger_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            )
            .fetchall()
        )

    def entries(self, start: int, end: int, limit: int = MAX_PAGE) -> list[Record]:
        """Decoded entries of ``[start, end)``, at most ``limit``; see :meth:`leaves`."""
        return [decode_record(leaf) for _, leaf in self.leaves(start, end, limit)]

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint(self) -> SignedCheckpoint:
        """Sign and store a checkpoint of the current size, or return the stored one of that size.

        The tree head comes from the writer's own state inside the transaction that stores it,
        so a checkpoint is never of a size that is not durable.
        """

        def make(conn: sqlite3.Connection) -> SignedCheckpoint:
            size = self._frontier.size
            if self._checkpoint_size == size:
                found = self._read_checkpoints(conn, size, 1, exact=True)
                if found:
                    return found[0]
            body = Checkpoint(self.origin, size, self._frontier.root())
            note = sign_note(body.body(), [self.signer])
            created = _now_ms()
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

        def store(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT note FROM ledger_checkpoints WHERE size = ?", (size,)
            ).fetchone()
            if row is None:
                raise LedgerRangeError(f"no checkpoint of size {size} to cosign")
            timestamp = None
            if verifier is not None:
                timestamp = verify_cosignature(parse_note(row[0]).text, line, verifier)
            conn.execute(
                "INSERT OR IGNORE INTO ledger_cosignatures"
                "(size, line, key_name, timestamp, added_ms) VALUES (?,?,?,?,?)",
                (size, line, sig.name, timestamp, _now_ms()),
            )

        self.write(store)

    def _read_checkpoints(
        self, conn: sqlite3.Connection, min_size: int, limit: int, exact: bool = False
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
        """The tree size of the latest stored checkpoint, or None before the first."""
        return self._checkpoint_size

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The largest stored checkpoint with every cosignature collected, or None."""
        size = self._checkpoint_size
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

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
