"""Wake-ups across replicas: PostgreSQL LISTEN/NOTIFY (ADR 0073).

Every commit that adds ledger entries notifies the channel :data:`LEDGER_CHANNEL` (a trigger on
the ledger's table, so no writer can forget it, and PostgreSQL sends it only once the
transaction has committed). Each replica listens on a connection of its own
(:class:`Listener`) and, for each notification, calls what wakes its waiting work: partner
streams (``Exchange.wake_followers``), its deliverers (another replica's submit filled the
outbox), its status. A notification lost with a dropped connection costs nothing but latency:
streams and deliverers also poll, and the listener wakes everything once it has reconnected.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by a node on PostgreSQL only (ADR 0070)
    import psycopg

__all__ = ["LEDGER_CHANNEL", "Listener", "create_ledger_trigger"]

log = logging.getLogger("gateway.store.notify")

LEDGER_CHANNEL = "customs_gateway_ledger"

# How long one wait for notifications lasts, so how long :meth:`Listener.stop` waits for the
# thread: a wait that times out is a local poll() with no traffic to the server, so a short one
# costs nothing, and a node's stop does not wait a second for it (0.7 s of every stop of a node
# on PostgreSQL before).
_WAIT_SECONDS = 0.1


def create_ledger_trigger(conn: Any, table: str = "ledger_entries") -> None:
    """Make every statement that inserts into ``table`` notify :data:`LEDGER_CHANNEL` on
    commit (PostgreSQL; idempotent). Notifications of one transaction are folded into one."""
    conn.execute(
        "CREATE OR REPLACE FUNCTION customs_gateway_notify_ledger() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN "
        f"PERFORM pg_notify('{LEDGER_CHANNEL}', ''); RETURN NULL; END $$"
    )
    conn.execute(
        f"CREATE OR REPLACE TRIGGER customs_gateway_notify AFTER INSERT ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION customs_gateway_notify_ledger()"
    )


class Listener:
    """A thread listening on ``channels`` and calling every ``wake`` for each notification.

    ``wake`` callables must be quick and must not raise (a failure is logged and the others are
    still called). After a lost connection the listener reconnects and calls them all once:
    whatever was notified meanwhile is then seen by polling.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        wake: Sequence[Callable[[], object]],
        *,
        channels: Sequence[str] = (LEDGER_CHANNEL,),
        retry_seconds: float = 1.0,
    ) -> None:
        self._connect = connect
        self._wake = list(wake)
        self._channels = tuple(channels)
        self._retry = retry_seconds
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="db-listener", daemon=True)
        self.listening = threading.Event()  # set while LISTEN is in force
        self.received = 0  # notifications seen (tests, status)

    def add(self, wake: Callable[[], object]) -> None:
        """Also call ``wake`` for each notification (before :meth:`start`)."""
        self._wake.append(wake)

    def start(self) -> None:
        """Start listening (in the background; :attr:`listening` says when LISTEN is on)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the connection."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)  # a wait for notifications ends within _WAIT_SECONDS

    def _call(self) -> None:
        for wake in self._wake:
            try:
                wake()
            except Exception:
                log.exception("wake-up after a notification failed")

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                self.listening.clear()
                if self._stop.is_set():
                    break
                log.warning(
                    "database notifications lost (%s); reconnecting in %.1f s",
                    exc,
                    self._retry,
                    extra={"event": "listen-lost"},
                )
                self._stop.wait(self._retry)
            finally:
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()

    def _listen(self) -> None:
        from psycopg import sql

        conn = self._connect()
        conn.autocommit = True
        self._conn = conn
        for channel in self._channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self.listening.set()
        self._call()  # whatever was committed before LISTEN took effect
        while not self._stop.is_set():
            for _ in conn.notifies(timeout=_WAIT_SECONDS, stop_after=1):
                self.received += 1
                self._call()
