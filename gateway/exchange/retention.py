"""Retention: payloads erased at the end of their retention, each by an ``erased`` ledger entry
(digest only) in the same transaction that drops the envelope (ADR 0035)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.domain.kinds import kind_name
from gateway.errors import FailedPreconditionError
from gateway.exchange import _store as store
from gateway.exchange._shared import ms
from gateway.ledger import Entry, Event
from gateway.store import Connection

if TYPE_CHECKING:
    from gateway.exchange.core import Exchange

__all__ = ["erase_expired"]

log = logging.getLogger("gateway.exchange")


def erase_expired(ex: Exchange) -> int:
    """Erase every stored payload whose retention has ended; return how many.

    Each erasure is an ``erased`` ledger entry (digest only) written in the same transaction
    that drops the envelope, so the ledger still verifies and shows when the data went.
    """
    now_ms = ms(ex.now())
    erased = 0
    for row in store.expired(ex.ledger.reader(), now_ms):
        entry = Entry(
            Event.ERASED, uuid.UUID(row.message_id), kind_name(row.kind), row.origin, (row.digest,)
        )
        try:
            ex.ledger.append(entry, _eraser(row.origin, row.message_id, now_ms))
        except FailedPreconditionError:  # erased meanwhile by another sweep
            continue
        erased += 1
        ex.tell_erased(row.kind, row.message_id)
        log.info(
            "erased payload of %s at the end of its retention",
            row.message_id,
            extra={"event": "erased", "message_id": row.message_id},
        )
    return erased


def _eraser(origin: str, message_id: str, erased_ms: int) -> Callable[[Connection, int], None]:
    def erase(conn: Connection, index: int) -> None:
        store.erase(conn, origin, message_id, erased_ms, index)

    return erase
