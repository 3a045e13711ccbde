"""Leases: the node's singletons (checkpointer, each peer's deliverer, the witness client,
retention) run on one replica at a time (ADR 0072).

A lease is a row in the database (name, holder, epoch, expiry), taken and renewed by one
statement that reads the database's clock, never a replica's: replicas whose clocks differ still
agree on who holds what. A replica keeps its leases with one thread (:class:`LeaseKeeper`)
renewing every ``ttl / 4`` seconds on a connection of its own. A replica that dies (SIGKILL, a
lost machine) stops renewing, and another replica takes each of its leases at its first renewal
after the expiry: within ``ttl`` plus one renewal interval.

Two walls keep a replica whose lease ran out from doing work twice:

1. :meth:`Lease.held` answers from the replica's own monotonic clock, with a deadline that ends
   before the database's expiry (it is counted from before the renewing statement was sent, and
   cut by a margin): a worker checks it before each round.
2. :meth:`Lease.fence` runs inside the transaction that commits the work: it locks the lease row
   (``FOR SHARE``) only if this holder still holds it under the same epoch and it has not
   expired, else raises :class:`LeaseLostError` and the work's transaction rolls back. The lock
   makes a takeover wait until that transaction has committed: work is committed under a valid
   lease or not at all (the epoch is the fencing token).

On SQLite a data directory has one process (a file lock enforces it): :data:`ALWAYS_HELD`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.errors import FailedPreconditionError

if TYPE_CHECKING:  # imported by a node on PostgreSQL only (ADR 0070): SQLite nodes load no driver
    import psycopg

__all__ = [
    "ALWAYS_HELD",
    "LEASE_TABLE",
    "AlwaysHeld",
    "Lease",
    "LeaseKeeper",
    "LeaseLostError",
    "LeaseRow",
    "PostgresLease",
    "create_lease_table",
    "read_leases",
    "replica_id",
]

log = logging.getLogger("gateway.store.leases")

LEASE_TABLE = "gateway_leases"


class _Executes(Protocol):
    """A connection in the middle of a transaction (portable SQL, ``?`` placeholders)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any:
        """Run one statement."""


class LeaseLostError(FailedPreconditionError):
    """Work was about to be committed by a replica that no longer holds the lease for it."""


class Lease(Protocol):
    """The right to run one singleton, as one replica sees it."""

    name: str

    def held(self) -> bool:
        """Whether this replica holds the lease now (a deadline that ends before the lease's
        expiry in the database)."""

    def wait(self, timeout: float) -> bool:
        """Block until the lease is held or ``timeout`` seconds passed; return :meth:`held`."""

    def fence(self, conn: _Executes) -> None:
        """Inside the transaction that commits work done under this lease: raise
        :class:`LeaseLostError` unless the lease is still this replica's (same epoch, not
        expired), and keep anyone from taking it over until that transaction ends."""


class AlwaysHeld:
    """The lease of a node that is its only process (SQLite): always held, nothing to fence."""

    name = "*"

    def held(self) -> bool:
        """Always True."""
        return True

    def wait(self, timeout: float) -> bool:
        """Returns True at once."""
        return True

    def fence(self, conn: _Executes) -> None:
        """Nothing to check."""


ALWAYS_HELD = AlwaysHeld()


def replica_id() -> str:
    """A name for this process as a lease holder: host, process id and a random part (a
    restarted process with a reused pid is another holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def create_lease_table(conn: _Executes) -> None:
    """Create the lease table if it is missing (PostgreSQL; part of the node's schema)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {LEASE_TABLE} ("
        "name TEXT PRIMARY KEY, "
        "holder TEXT NOT NULL, "
        "epoch BIGINT NOT NULL, "
        "expires_at TIMESTAMPTZ NOT NULL, "
        "acquired_at TIMESTAMPTZ NOT NULL)"
    )


# Take the lease if it is free or expired, or renew it if it is ours and not expired; a new
# holder, or ourselves after an expiry, gets the next epoch. Returns nothing when another
# replica holds it.
_TAKE = (
    f"INSERT INTO {LEASE_TABLE} AS l (name, holder, epoch, expires_at, acquired_at) "  # noqa: S608
    "VALUES (%(name)s, %(holder)s, 1, clock_timestamp() + make_interval(secs => %(ttl)s), "
    "clock_timestamp()) "
    "ON CONFLICT (name) DO UPDATE SET "
    "holder = EXCLUDED.holder, "
    "epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp() "
    "THEN l.epoch ELSE l.epoch + 1 END, "
    "acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp() "
    "THEN l.acquired_at ELSE clock_timestamp() END, "
    "expires_at = EXCLUDED.expires_at "
    "WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp() "
    "RETURNING epoch"
)
_RELEASE = (
    f"UPDATE {LEASE_TABLE} SET expires_at = clock_timestamp() "  # noqa: S608
    "WHERE name = %(name)s AND holder = %(holder)s AND expires_at > clock_timestamp()"
)
_FENCE = (
    f"SELECT epoch FROM {LEASE_TABLE} WHERE name = ? AND holder = ? AND epoch = ? "  # noqa: S608
    "AND expires_at > clock_timestamp() FOR SHARE"
)


@dataclass(frozen=True)
class LeaseRow:
    """A lease as the database has it: who holds it, under which epoch, since when (ms since
    the epoch) and for how many more seconds (negative: ran out that long ago), both by the
    database's clock."""

    name: str
    holder: str
    epoch: int
    acquired_ms: int
    expires_in_seconds: float


_READ = (
    "SELECT name, holder, epoch, "  # noqa: S608
    "CAST(EXTRACT(EPOCH FROM acquired_at) * 1000 AS BIGINT), "
    "CAST(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) AS DOUBLE PRECISION) "
    f"FROM {LEASE_TABLE} ORDER BY name"
)


def read_leases(conn: _Executes) -> list[LeaseRow]:
    """Every lease row, in name order (PostgreSQL; for ``customs-gateway status``)."""
    return [
        LeaseRow(str(name), str(holder), int(epoch), int(acquired), float(left))
        for name, holder, epoch, acquired, left in conn.execute(_READ).fetchall()
    ]


class PostgresLease:
    """One lease as this replica sees it; kept by a :class:`LeaseKeeper`."""

    def __init__(self, name: str, holder: str) -> None:
        self.name = name
        self.holder = holder
        self.epoch = 0  # the fencing token of the current tenure; 0 before the first
        self._until = 0.0  # monotonic deadline of the current tenure
        self._changed = threading.Condition()
        self.tenures = 0  # how many times this replica took the lease (status, tests)

    def held(self) -> bool:
        """Whether this replica holds the lease now (see the module's first wall)."""
        return time.monotonic() < self._until

    def wait(self, timeout: float) -> bool:
        """Block until the lease is held or ``timeout`` seconds passed; return :meth:`held`."""
        with self._changed:
            self._changed.wait_for(self.held, timeout)
        return self.held()

    def fence(self, conn: _Executes) -> None:
        """Raise :class:`LeaseLostError` unless this tenure still holds the lease in the
        database, and lock its row until the caller's transaction ends (second wall)."""
        epoch = self.epoch
        if (
            not self.held()
            or conn.execute(_FENCE, (self.name, self.holder, epoch)).fetchone() is None
        ):
            raise LeaseLostError(
                f"lease {self.name} (epoch {epoch}) is no longer held by {self.holder}: "
                "the work is not committed"
            )

    def _renewed(self, epoch: int, until: float) -> bool:
        """Record a successful take or renewal; True when this starts a new tenure."""
        new = epoch != self.epoch or not self.held()
        with self._changed:
            self.epoch, self._until = epoch, until
            if new:
                self.tenures += 1
            self._changed.notify_all()
        return new

    def _lost(self) -> bool:
        """Another replica holds it (or the database cannot say): end the tenure at once;
        True when this replica believed it held it."""
        was = self.held()
        self._until = 0.0
        return was


class LeaseKeeper:
    """Takes and renews this replica's leases in one thread, on a connection of its own."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        names: list[str],
        *,
        ttl: float = 5.0,
        holder: str | None = None,
        on_change: Callable[[PostgresLease, bool], None] | None = None,
    ) -> None:
        """``connect`` opens a new connection to the node's database; ``ttl`` is the lease's
        length in seconds; ``on_change(lease, held)`` is told each tenure's start and end."""
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl}")
        self._connect = connect
        self.ttl = ttl
        self.interval = ttl / 4
        self._margin = ttl / 4  # the local deadline ends this much before the database's
        self.holder = holder or replica_id()
        self.leases = {name: PostgresLease(name, self.holder) for name in names}
        self._on_change = on_change
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def lease(self, name: str) -> PostgresLease:
        """The lease called ``name`` (one of ``names``)."""
        return self.leases[name]

    def start(self) -> None:
        """Take what is free now, then keep renewing in the background."""
        self.renew_once()
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """Stop renewing; with ``release``, give the leases up at once so another replica
        takes them at its next renewal (a graceful stop), else they run out after ``ttl``."""
        import psycopg

        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        held = [lease for lease in self.leases.values() if lease.held()]
        for lease in held:
            lease._lost()
        if release and held:
            try:
                conn = self._connection()
                for lease in held:
                    conn.execute(_RELEASE, {"name": lease.name, "holder": self.holder})
            except psycopg.Error as exc:
                log.warning("leases not released (they run out in %.1f s): %s", self.ttl, exc)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            self._conn.autocommit = True
        return self._conn

    def renew_once(self) -> None:
        """One round: take or renew every lease (each in its own statement)."""
        import psycopg

        for lease in self.leases.values():
            started = time.monotonic()
            try:
                row = (
                    self._connection()
                    .execute(_TAKE, {"name": lease.name, "holder": self.holder, "ttl": self.ttl})
                    .fetchone()
                )
            except psycopg.Error as exc:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                # The database may or may not have renewed it: the local deadline runs on.
                log.warning("lease %s not renewed: %s", lease.name, exc)
                continue
            if row is None:
                if lease._lost():
                    self._changed(lease, held=False)
                continue
            if lease._renewed(int(row[0]), started + self.ttl - self._margin):
                self._changed(lease, held=True)

    def _changed(self, lease: PostgresLease, *, held: bool) -> None:
        log.info(
            "lease %s %s (epoch %d)",
            lease.name,
            "taken" if held else "lost to another replica",
            lease.epoch,
            extra={
                "event": "lease-taken" if held else "lease-lost",
                "lease": lease.name,
                "epoch": lease.epoch,
                "holder": self.holder,
            },
        )
        if self._on_change is not None:
            self._on_change(lease, held)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew_once()
            except Exception:  # keep renewing; a lease not renewed runs out on its own
                log.exception("lease renewal failed")
