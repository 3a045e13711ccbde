"""A thread that makes a checkpoint whenever the ledger has grown since the last one."""

from __future__ import annotations

import logging
import threading

from gateway.ledger._store import Ledger

_log = logging.getLogger(__name__)


class Checkpointer:
    """Checkpoints the ledger every ``interval`` seconds if it grew; the node runs it."""

    def __init__(self, ledger: Ledger, interval: float = 10.0) -> None:
        if interval <= 0:
            raise ValueError(f"checkpoint interval must be positive, got {interval}")
        self._ledger = ledger
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.made = 0

    def run_once(self) -> bool:
        """Make a checkpoint if the ledger grew since the latest; return whether one was made."""
        latest = self._ledger.latest_checkpoint()
        size = self._ledger.size()
        if size == 0 or (latest is not None and latest.size >= size):
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
