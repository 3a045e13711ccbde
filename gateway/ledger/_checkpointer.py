"""A thread that makes a checkpoint whenever the ledger has grown since the last one.

Growth by ``witnessed`` entries alone does not call for a checkpoint (ADR 0015): a witness
records each cosigning in its own log, and if that growth were checkpointed and witnessed in
turn, three idle nodes would cosign each other's growth forever. Such entries are signed with
the next checkpoint that other entries call for.
"""

from __future__ import annotations

import logging
import threading

from gateway.ledger._entry import Event
from gateway.ledger._store import Ledger
from gateway.store.leases import ALWAYS_HELD, Lease

QUIET_EVENTS = frozenset({Event.WITNESSED})
# An entry that is not quiet: its event (byte 18, 1-based, of its canonical bytes) is not 6
# (the byte is a parameter: both stores compare a blob with a blob, ADR 0070).
_LOUD = (
    "SELECT 1 FROM ledger_entries WHERE idx >= ? AND idx < ? AND substr(leaf, 18, 1) != ? LIMIT 1"
)
_QUIET_BYTE = b"\x06"
assert {int(e) for e in QUIET_EVENTS} == {6}, "keep _LOUD in step with QUIET_EVENTS"


def calls_for_checkpoint(ledger: Ledger, start: int, end: int) -> bool:
    """Whether entries ``[start, end)`` include one that is not quiet (not ``witnessed``)."""
    # fetchall: the statement completes, so this thread's reader keeps no snapshot open
    return bool(ledger.reader().execute(_LOUD, (start, end, _QUIET_BYTE)).fetchall())


_log = logging.getLogger(__name__)


class Checkpointer:
    """Checkpoints the ledger every ``interval`` seconds if it grew; the node runs it."""

    def __init__(self, ledger: Ledger, interval: float = 10.0, lease: Lease = ALWAYS_HELD) -> None:
        """``lease``: replicas of one node checkpoint on one of them at a time (ADR 0072); a
        checkpoint made twice of one size is the same note (Ed25519 signs deterministically)."""
        if interval <= 0:
            raise ValueError(f"checkpoint interval must be positive, got {interval}")
        self._ledger = ledger
        self._interval = interval
        self._lease = lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.made = 0

    def due(self) -> bool:
        """Whether the ledger grew since the latest checkpoint by an entry that is not quiet."""
        latest = self._ledger.checkpoint_size()
        size = self._ledger.size()
        if size == 0 or (latest is not None and latest >= size):
            return False
        return calls_for_checkpoint(self._ledger, latest or 0, size)

    def run_once(self) -> bool:
        """Make a checkpoint if :meth:`due` and this replica holds the checkpointer's lease;
        return whether one was made."""
        if not self._lease.held() or not self.due():
            return False
        self._ledger.checkpoint()
        self.made += 1
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once()
            except Exception:  # keep checkpointing through a transient failure
                _log.exception("periodic checkpoint of %s failed", self._ledger.origin)

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            raise RuntimeError("checkpointer already started")
        self._thread = threading.Thread(target=self._loop, name="ledger-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it; a checkpoint in progress completes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
