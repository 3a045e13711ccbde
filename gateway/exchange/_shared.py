"""Small helpers shared by the exchange's concern modules: times as stored, and races."""

from __future__ import annotations

import datetime as dt

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.domain.dates import EPOCH, FIRST_TIMESTAMP_SECOND, LAST_TIMESTAMP_SECOND
from gateway.exchange import _store as store
from gateway.store import Connection

__all__ = ["EPOCH", "ms", "retain_until_ms", "timestamp", "whole_ms", "winner"]


def timestamp(when: dt.datetime) -> Timestamp:
    """``when`` as a protobuf Timestamp."""
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def ms(when: dt.datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding: whole-ms times round-trip)."""
    return (when - EPOCH) // dt.timedelta(milliseconds=1)


def whole_ms(when: dt.datetime) -> dt.datetime:
    """``when`` truncated to a whole millisecond."""
    return when.replace(microsecond=when.microsecond - when.microsecond % 1000)


def retain_until_ms(payload: Message) -> int | None:
    """When the payload's retention ends (ms since the epoch), or None if it has no end."""
    retain = getattr(payload, "retain_until", None)
    if retain is None or not payload.HasField("retain_until"):
        return None
    seconds, nanos = retain.seconds, retain.nanos
    if 0 <= nanos < 1_000_000_000 and FIRST_TIMESTAMP_SECOND <= seconds <= LAST_TIMESTAMP_SECOND:
        # What ToMilliseconds gives a valid Timestamp, without its Python-level checks.
        return int(seconds * 1000 + nanos // 1_000_000)
    return int(retain.ToMilliseconds())  # raises ValueError, naming what is out of range


def winner(conn: Connection, origin: str, message_id: str, exc: Exception) -> store.MessageRow:
    """The row that won a race to record (origin, message id); if there is none, another
    constraint failed, and ``exc`` is raised again rather than mistaken for a race."""
    row = store.MessageRow.get(conn, origin, message_id)
    if row is None:
        raise exc
    return row
