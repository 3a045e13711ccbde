"""Inbound: what partner systems read of the messages this node received (their streams) and
their acknowledgements (``acknowledged`` entries, idempotent per partner)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from customs.gateway.v1 import partner_pb2
from gateway.domain.kinds import kind_name
from gateway.errors import FieldViolation, InvalidArgumentError, NotFoundError
from gateway.exchange import _store as store
from gateway.ledger import Entry, Event
from gateway.pki.access import Principal
from gateway.pki.identity import Jurisdiction
from gateway.store import Connection, integrity_errors

if TYPE_CHECKING:
    from gateway.exchange.core import Exchange

__all__ = ["Followers", "acknowledge", "follow_inbound"]

_INBOUND_PAGE = 500  # rows per read: a delivered bulk batch streams in a few reads (ADR 0054)


class Followers:
    """Wakes the streams that wait for inbound messages: a version counter under a condition,
    so a stream that read nothing waits only if nothing arrived since it looked."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._version = 0

    def seen(self) -> int:
        """The version now, to pass to :meth:`wait` after reading."""
        with self._changed:
            return self._version

    def wait(self, seen: int, timeout: float) -> None:
        """Wait up to ``timeout`` seconds unless something changed since version ``seen``."""
        with self._changed:
            if self._version == seen:  # nothing arrived meanwhile: wait
                self._changed.wait(timeout=timeout)

    def wake(self) -> None:
        """Something arrived (or the streams should check whether to go on): wake them all."""
        with self._changed:
            self._version += 1
            self._changed.notify_all()


def follow_inbound(
    ex: Exchange, after: int, kinds: Sequence[int], keep_going: Callable[[], bool]
) -> Iterator[store.InboundRow]:
    """Received messages after inbound number ``after`` (of ``kinds``, all if empty), oldest
    first, then each new one as soon as it is durable, while ``keep_going()`` is true."""
    wanted = tuple(int(k) for k in kinds)
    while keep_going():
        seen = ex.followers.seen()
        rows = store.inbound_after(ex.ledger.reader(), after, wanted, _INBOUND_PAGE)
        for row in rows:
            yield row
            after = row.seq
        if not rows:
            ex.followers.wait(seen, timeout=0.5)


def acknowledge(
    ex: Exchange, message_id: str, partner: Principal, origin: Jurisdiction | None = None
) -> partner_pb2.AcknowledgeInboundResponse:
    """Ledger a partner's acknowledgement of an inbound message (idempotent per partner).

    ``origin`` is needed only if two jurisdictions sent messages under the same id.
    """
    reader = ex.ledger.reader()
    row = _inbound(reader, message_id, origin)
    who = partner.identity.uri
    done = store.ack_of(reader, row.origin, message_id, who)
    if done is not None:
        return partner_pb2.AcknowledgeInboundResponse(
            ledger_index=done.ledger_index, duplicate=True
        )
    entry = Entry(
        Event.ACKNOWLEDGED, uuid.UUID(message_id), kind_name(row.kind), who, (row.digest,)
    )
    try:
        record = ex.ledger.append(
            entry, lambda conn, index: store.add_ack(conn, row.origin, message_id, who, index)
        )
    except integrity_errors():
        done = store.ack_of(ex.ledger.reader(), row.origin, message_id, who)
        if done is None:  # not a race with the same acknowledgement
            raise
        return partner_pb2.AcknowledgeInboundResponse(
            ledger_index=done.ledger_index, duplicate=True
        )
    return partner_pb2.AcknowledgeInboundResponse(ledger_index=record.index)


def _inbound(conn: Connection, message_id: str, origin: Jurisdiction | None) -> store.MessageRow:
    rows = [
        r
        for r in store.MessageRow.with_id(conn, message_id)
        if r.direction == "in" and (origin is None or r.origin == origin.value)
    ]
    if not rows:
        raise NotFoundError(f"no inbound message {message_id!r} at this node")
    if len(rows) > 1:
        problem = FieldViolation(
            "origin",
            f"message id {message_id} was received from {' and '.join(r.origin for r in rows)}"
            "; name the origin",
        )
        raise InvalidArgumentError(str(problem), [problem])
    return rows[0]
