"""Submit: a partner's message validated, signed, ledgered (``sent``) and queued for delivery.

One transaction holds the ``sent`` entries, the message row, the subject's version and the
outbox rows (ADR 0004); the partner is answered after it is durable.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import logging
import uuid
from typing import TYPE_CHECKING

from customs.gateway.v1 import envelope_pb2, partner_pb2
from gateway.domain.kinds import SubmitRequest, check_request, kind_of_request
from gateway.envelope import envelope_digest, jurisdiction_of, proto_jurisdiction, seal
from gateway.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    GatewayError,
    InvalidArgumentError,
    NotFoundError,
)
from gateway.exchange import _store as store
from gateway.exchange._shared import EPOCH, ms, retain_until_ms, timestamp, whole_ms, winner
from gateway.ledger import Entry, Event
from gateway.store import Connection, integrity_errors

if TYPE_CHECKING:
    from gateway.exchange.core import Exchange

__all__ = ["AMEND", "END", "NEW", "PUBLISH", "Mode", "submit"]

log = logging.getLogger("gateway.exchange")


class Mode(enum.Enum):
    """Whether a submit creates a subject (version 1), amends it, or ends it (final);
    ``PUBLISH`` is new or amend as the payload's version says (watchlist entries)."""

    NEW = "new"
    AMEND = "amend"
    END = "end"
    PUBLISH = "publish"


NEW, AMEND, END, PUBLISH = Mode.NEW, Mode.AMEND, Mode.END, Mode.PUBLISH


def submit(ex: Exchange, request: SubmitRequest, mode: Mode) -> partner_pb2.SubmitResponse:
    """Validate, sign, ledger (``sent``, one entry per recipient) and queue a partner's message.

    Returns only after the entries and the outbox rows are durable. A retry with the same
    message id and the same request gets the first answer again (``duplicate``).

    Raises:
        ValidationError: every bad field, with its path.
        AlreadyExistsError: the message id was used for another request.
        NotFoundError: amending or ending something this node never published.
        FailedPreconditionError: a new subject that exists, or one already ended.
    """
    # Whole milliseconds, as stored: a retry's answer (from created_ms) has the same
    # accepted_at, to the digit, as the first one (and the envelope's created_at).
    now = whole_ms(ex.now())
    row = kind_of_request(request)
    kind, payload = row.kind, row.payload_of(request)
    addressing = request.addressing
    request_digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
    reader = ex.ledger.reader()
    existing = store.MessageRow.get(reader, ex.jurisdiction.value, addressing.message_id)
    if existing is not None:
        return _same_request(existing, request_digest)
    origin = ex.jurisdiction.value
    subject, version = row.subject(payload)
    known = store.last_version(reader, origin, subject)
    try:
        check_request(  # first: a malformed request is INVALID_ARGUMENT, naming every field
            request,
            origin=proto_jurisdiction(ex.jurisdiction),
            now=now,
            last_version=known[0] if known else None,
        )
        if mode is Mode.PUBLISH:
            mode = Mode.NEW if version <= 1 else Mode.AMEND
        _check_mode(mode, subject, known)
        if known is not None:
            _check_keeps_recipients(reader, origin, subject, addressing)
    except GatewayError as exc:  # another replica may have recorded this very id meanwhile
        return _same_request(
            winner(ex.ledger.reader(), origin, addressing.message_id, exc), request_digest
        )
    header = envelope_pb2.EnvelopeHeader(
        message_id=addressing.message_id,
        kind=kind,
        origin=proto_jurisdiction(ex.jurisdiction),
        origin_node=ex.signer.identity.uri,
        recipients=addressing.recipients,
        created_at=timestamp(now),
        handling=addressing.handling,
    )
    envelope = seal(header, payload.SerializeToString(), ex.signer)
    digest = envelope_digest(envelope)
    recipients = [jurisdiction_of(r) for r in addressing.recipients]
    names = [r.value for r in recipients if r is not None]
    message_uuid = uuid.UUID(addressing.message_id)
    entries = [Entry(Event.SENT, message_uuid, row.name, r, (digest,)) for r in names]

    def within(conn: Connection, first_index: int) -> None:
        latest = store.last_version(conn, origin, subject)
        if latest != known:  # a concurrent submit moved the subject on
            raise FailedPreconditionError(
                f"{subject} changed while this request was processed; retry with a new version"
            )
        store.MessageRow(
            addressing.message_id,
            "out",
            origin,
            kind,
            subject,
            version,
            digest,
            request_digest,
            envelope.SerializeToString(),
            first_index,
            ms(now),
            None,
        ).insert(conn, retain_until_ms(payload))
        store.record_version(conn, origin, subject, version, row.final)
        store.enqueue(conn, addressing.message_id, names)

    try:
        records = ex.ledger.append_many(entries, within)
    # The same id won a race (here or on another replica, ADR 0073), by its key or by moving
    # the subject's version first: answer as for a retry.
    except _race_lost() as exc:
        return _same_request(
            winner(ex.ledger.reader(), origin, addressing.message_id, exc), request_digest
        )
    log.info(
        "sent %s %s to %s at ledger index %d",
        row.name,
        addressing.message_id,
        ",".join(names),
        records[0].index,
        extra={"event": "sent", "message_id": addressing.message_id},
    )
    ex.tell_payload(ex.jurisdiction, kind, payload, addressing.message_id, now)
    ex.tell_outbox(names)
    return partner_pb2.SubmitResponse(
        message_id=addressing.message_id,
        ledger_index=records[0].index,
        digest=digest,
        accepted_at=header.created_at,  # the same instant, converted once
    )


def _check_mode(mode: Mode, subject: str, known: tuple[int, bool] | None) -> None:
    if known is not None and known[1]:
        raise FailedPreconditionError(f"{subject} was revoked or withdrawn at version {known[0]}")
    if mode is NEW and known is not None:
        raise FailedPreconditionError(
            f"{subject} exists at version {known[0]}; send an amendment with a higher version"
        )
    if mode in (AMEND, END) and known is None:
        raise NotFoundError(f"{subject} was never published by this node")


def _check_keeps_recipients(
    conn: Connection, origin: str, subject: str, addressing: partner_pb2.Addressing
) -> None:
    """An amendment, revocation or withdrawal goes to everyone who had an earlier version:
    otherwise a dropped recipient would keep the old version live (in its watchlist view,
    in screening) for ever."""
    named = {j.value for j in map(jurisdiction_of, addressing.recipients) if j is not None}
    dropped = sorted(store.recipients_of(conn, origin, subject) - named)
    if dropped:
        problem = FieldViolation(
            "addressing.recipients",
            f"must include {', '.join(dropped)}, which received an earlier version of "
            f"{subject}; to stop sharing it, revoke or withdraw it to them",
        )
        raise InvalidArgumentError(str(problem), [problem])


def _race_lost() -> tuple[type[Exception], ...]:
    """How a submit that lost the race for its message id fails, before the duplicate answer:
    on the id's key, or on the subject's version the winner moved first (ADR 0073)."""
    return (FailedPreconditionError, *integrity_errors())


def _same_request(row: store.MessageRow, request_digest: bytes) -> partner_pb2.SubmitResponse:
    if row.direction != "out" or row.request_digest != request_digest:
        raise AlreadyExistsError(
            f"message id {row.message_id} was already used for a different message"
        )
    return partner_pb2.SubmitResponse(
        message_id=row.message_id,
        ledger_index=row.ledger_index,
        digest=row.digest,
        duplicate=True,
        accepted_at=timestamp(EPOCH + dt.timedelta(milliseconds=row.created_ms)),
    )
