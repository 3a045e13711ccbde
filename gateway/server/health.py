"""Can the ledger commit? The storage probe behind the node's health status.

A node that answers SERVING while every write fails sends partners and peers into retries they
cannot see the end of. The probe asks the two questions a commit needs answered, the way a commit
asks them, every ``limits.storage_probe_seconds``:

1. the data directory takes a new file, written and fsynced (a full disk or a read-only file
   system refuses it; SQLite's write-ahead log would run into the same wall as it grows);
2. the ledger's writer commits a transaction (through the same group-commit thread and
   connection as every ledger entry, ``synchronous=FULL``): one row of the probe's own table,
   never the ledger's.

The first failure turns health NOT_SERVING with the reason in the log; the first success after
turns it SERVING again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.errors import GatewayError
from gateway.ledger import Ledger
from gateway.store import Connection, database_errors, ddl

__all__ = ["StorageProbe"]

log = logging.getLogger("gateway.server")

_PROBE_FILE = ".storage-probe"
_PROBE_BYTES = 4096  # one page: a full file system cannot take it


def _write_probe(conn: Connection) -> None:
    conn.execute(
        ddl(
            conn,
            "CREATE TABLE IF NOT EXISTS node_storage_probe "
            "(id INTEGER PRIMARY KEY CHECK (id = 1), probed_ms INTEGER NOT NULL)",
        )
    )
    conn.execute(
        "INSERT INTO node_storage_probe (id, probed_ms) VALUES (1, ?) "
        "ON CONFLICT (id) DO UPDATE SET probed_ms = excluded.probed_ms",
        (int(time.time() * 1000),),
    )


class StorageProbe:
    """Runs the two checks; calls ``changed(problem)`` when the outcome changes (``None``: the
    ledger can commit; else why not, one line)."""

    def __init__(
        self, ledger: Ledger, data_dir: Path, changed: Callable[[str | None], None]
    ) -> None:
        self._ledger = ledger
        self._path = data_dir / _PROBE_FILE
        self._changed = changed
        self._lock = threading.Lock()
        self._last: str | bool | None = False  # False: not probed yet
        self.runs = 0

    def problem(self) -> str | None:
        """Why the ledger cannot commit now, or ``None`` when it can (runs both checks)."""
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"\0" * _PROBE_BYTES)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.unlink(self._path)
        except OSError as exc:
            return f"data directory {self._path.parent}: {exc.strerror or exc}"
        failures: tuple[type[Exception], ...] = (GatewayError, *database_errors())
        try:
            self._ledger.write(_write_probe)
        except failures as exc:
            return f"ledger {self._ledger.where}: {exc}"
        return None

    @property
    def last_problem(self) -> str | None:
        """Why the last probe failed, or ``None`` if it succeeded (or none ran yet)."""
        last = self._last
        return last if isinstance(last, str) else None

    def run(self) -> None:
        """Probe once and report a change of outcome."""
        with self._lock:
            problem = self.problem()
            self.runs += 1
            if problem == self._last:
                return
            self._last = problem
        self._changed(problem)
