"""Inbound: what partner systems read of the messages this node received (their streams) and
their acknowledgements (``acknowledged`` entries, idempotent per partner)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from customs.gateway.v1 import partner_pb2
from gateway.domain.kinds import kind_name
from gateway.errors import (
    FieldViolation,
    GatewayError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from gateway.exchange import _store as store
from gateway.ledger import Entry, Event
from gateway.pki.access import Principal
from gateway.pki.identity import Jurisdiction
from gateway.store import Connection, integrity_errors

if TYPE_CHECKING:
    from gateway.exchange.core import Exchange

__all__ = ["Acknowledged", "Followers", "acknowledge", "acknowledge_many", "follow_inbound"]

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
    outcome = acknowledge_many(ex, [(message_id, origin)], partner)[0]
    if isinstance(outcome, GatewayError):
        raise outcome
    return outcome


# Per acknowledgement of a call: the answer AcknowledgeInbound gives, or the error it raises.
Acknowledged = partner_pb2.AcknowledgeInboundResponse | GatewayError

_ATTEMPTS = 3  # reads and commits of one call when a concurrent call acknowledged the same


def acknowledge_many(
    ex: Exchange, wanted: Sequence[tuple[str, Jurisdiction | None]], partner: Principal
) -> list[Acknowledged]:
    """Ledger a partner's acknowledgements of many inbound messages, one result each, in order.

    Each (message id, origin or None) is what :func:`acknowledge` takes and answers what it
    would: its own ``acknowledged`` entry (idempotent per partner: ``duplicate`` with the
    first entry's index), or ``NotFoundError`` / ``InvalidArgumentError`` for that one alone.
    A message named twice in one call is recorded once (the second answer is ``duplicate``).
    The new entries of the call are appended in one group commit (ADR 0056); this returns
    once they are durable.
    """
    who = partner.identity.uri
    origins = [j.value for j in Jurisdiction if j is not ex.jurisdiction]
    # Only UUIDs were ever received (receive checks): nothing else is looked up (a NUL byte
    # is not even a PostgreSQL text value); it answers NOT_FOUND below.
    ids = list(
        dict.fromkeys(message_id for message_id, _ in wanted if store.is_stored_id(message_id))
    )
    for _ in range(_ATTEMPTS):
        reader = ex.ledger.reader()
        received: dict[str, list[store.Received]] = {}
        done: dict[tuple[str, str], int] = {}
        for lo in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[lo : lo + _IDS_PER_QUERY]
            for row in store.received_with_ids(reader, origins, chunk):
                received.setdefault(row.message_id, []).append(row)
            done.update(store.acks_by(reader, who, origins, chunk))
        results: list[Acknowledged | None] = [None] * len(wanted)
        fresh: dict[tuple[str, str], tuple[store.Received, list[int]]] = {}
        for position, (message_id, origin) in enumerate(wanted):
            try:
                row = _inbound(received.get(message_id, []), message_id, origin)
            except GatewayError as exc:
                results[position] = exc
                continue
            key = (row.origin, message_id)
            if key in done:
                results[position] = partner_pb2.AcknowledgeInboundResponse(
                    ledger_index=done[key], duplicate=True
                )
            elif key in fresh:  # named again in the same call: recorded once
                fresh[key][1].append(position)
            else:
                fresh[key] = (row, [position])
        if not fresh:
            return [r for r in results if r is not None]
        rows = [row for row, _ in fresh.values()]
        entries = [
            Entry(Event.ACKNOWLEDGED, uuid.UUID(r.message_id), kind_name(r.kind), who, (r.digest,))
            for r in rows
        ]
        try:
            records = ex.ledger.append_many(entries, _adding(rows, who))
        except integrity_errors():
            continue  # another call acknowledged one of them meanwhile: read them again
        for (_, positions), record in zip(fresh.values(), records, strict=True):
            for n, position in enumerate(positions):
                results[position] = partner_pb2.AcknowledgeInboundResponse(
                    ledger_index=record.index, duplicate=n > 0
                )
        return [r for r in results if r is not None]
    raise UnavailableError(
        f"acknowledgements raced with others of the same partner {_ATTEMPTS} times; retry"
    )


_IDS_PER_QUERY = 500


def _adding(rows: list[store.Received], who: str) -> Callable[[Connection, int], None]:
    """The ledger callback that records ``who``'s acknowledgement rows of ``rows``."""

    def within(conn: Connection, first: int) -> None:
        for offset, r in enumerate(rows):
            store.add_ack(conn, r.origin, r.message_id, who, first + offset)

    return within


def _inbound(
    rows: list[store.Received], message_id: str, origin: Jurisdiction | None
) -> store.Received:
    """The one received message ``message_id`` names (from ``origin``, if given)."""
    rows = [r for r in rows if origin is None or r.origin == origin.value]
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
