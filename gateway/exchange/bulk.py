"""Bulk submit: many single-entry requests answered together, recorded in one group commit.

Each entry is its own message, exactly as a single submit (ADR 0053): validated, sealed
(signed), given its ``sent`` entries, its payload row and its outbox rows, and idempotent by
its message id. What is shared is the commit (ADR 0054): every accepted entry of the call goes
into one ``append_many`` of the ledger, so a call of a thousand entries costs one transaction
and one fsync, and the answer comes once all of them are durable. A refused entry (invalid, a
message id reused for other content, a stale version) is answered in its place and does not
stop the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from customs.gateway.v1 import envelope_pb2, partner_pb2
from gateway.domain.validate import check_request
from gateway.envelope import envelope_digest, jurisdiction_of, proto_jurisdiction, seal
from gateway.errors import (
    AlreadyExistsError,
    FieldViolation,
    GatewayError,
    InvalidArgumentError,
    UnavailableError,
    to_status,
)
from gateway.exchange import _store as store
from gateway.exchange.core import (
    _FINAL_KINDS,
    Exchange,
    Mode,
    SubmitRequest,
    Told,
    _ms,
    _payload,
    _retain_until_ms,
    _timestamp,
    _whole_ms,
    kind_name,
    subject_of,
)
from gateway.ledger import Entry, Event
from gateway.store import Connection, integrity_errors

__all__ = ["submit_many"]

log = logging.getLogger("gateway.exchange")

_ATTEMPTS = 3  # a call whose subjects or ids another call moved meanwhile is prepared again
_LOOKUP = 500  # message ids per existence query


class _Moved(Exception):
    """A concurrent submit recorded a subject or a message id of this call first."""


@dataclass(frozen=True)
class _Prepared:
    """An accepted entry, sealed, waiting for the commit."""

    position: int
    request: SubmitRequest
    kind: int
    subject: str
    version: int
    request_digest: bytes
    envelope: envelope_pb2.Envelope
    digest: bytes
    names: list[str]


def submit_many(
    exchange: Exchange, requests: Sequence[SubmitRequest], mode: Mode, field: str
) -> partner_pb2.BulkSubmitResponse:
    """Submit each of ``requests`` as :meth:`Exchange.submit` would, in one group commit.

    Returns one result per request, in order, once every accepted entry is durable: accepted
    (with its ledger index and digest), duplicate (a retry: the first answer again) or refused
    (the status a single submit would have raised; field paths prefixed ``<field>[i].``).
    A retried call creates nothing twice: entries already recorded answer as duplicates.

    Raises:
        UnavailableError: other calls kept recording the same subjects or ids meanwhile
            (nothing of this call was recorded; retry it).
        LedgerClosedError: the commit failed (nothing of this call was recorded; retry it).
    """
    for _ in range(_ATTEMPTS):
        try:
            return _attempt(exchange, requests, mode, field)
        except _Moved:
            continue
    raise UnavailableError(
        "other calls kept changing the same entries while this one was prepared; nothing of "
        "it was recorded: retry it"
    )


def _attempt(
    exchange: Exchange, requests: Sequence[SubmitRequest], mode: Mode, field: str
) -> partner_pb2.BulkSubmitResponse:
    now = _whole_ms(exchange.now())
    origin = exchange.jurisdiction.value
    me = proto_jurisdiction(exchange.jurisdiction)
    reader = exchange.ledger.reader()
    existing = _existing(reader, origin, [r.addressing.message_id for r in requests])
    stored = store.last_versions(reader, origin, [_subject(r) for r in requests])
    results: list[partner_pb2.BulkEntryResult] = []
    prepared: list[_Prepared] = []
    first_use: dict[str, tuple[int, bytes]] = {}  # message id -> (position, request digest)
    # The subjects' state as read (checked again inside the commit) and as this call leaves it.
    read: dict[str, tuple[int, bool] | None] = {}
    pending: dict[str, tuple[int, bool] | None] = {}
    pending_recipients: dict[str, set[str]] = {}
    for position, request in enumerate(requests):
        addressing = request.addressing
        message_id = addressing.message_id
        result = partner_pb2.BulkEntryResult(position=position, message_id=message_id)
        results.append(result)
        request_digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        try:
            row = existing.get(message_id)
            if row is not None:
                result.accepted.CopyFrom(exchange._same_request(row, request_digest))
                result.outcome = partner_pb2.BULK_OUTCOME_DUPLICATE
                continue
            if message_id in first_use:
                earlier, digest = first_use[message_id]
                if digest != request_digest:
                    raise AlreadyExistsError(
                        f"message id {message_id} was already used for a different message "
                        f"({field}[{earlier}])"
                    )
                result.outcome = partner_pb2.BULK_OUTCOME_DUPLICATE  # answered after the commit
                continue
            kind, payload = _payload(request)
            subject, version = subject_of(kind, payload)
            if subject not in pending:
                read[subject] = pending[subject] = stored.get(subject)
            known = pending[subject]
            check_request(
                request, origin=me, now=now, last_version=known[0] if known is not None else None
            )
            entry_mode = mode
            if entry_mode is Mode.PUBLISH:
                entry_mode = Mode.NEW if version <= 1 else Mode.AMEND
            exchange._check_mode(entry_mode, subject, known)
            if known is not None:
                _check_keeps_recipients(reader, origin, subject, addressing, pending_recipients)
        except GatewayError as exc:
            _refuse(result, exc, f"{field}[{position}]")
            continue
        first_use[message_id] = (position, request_digest)
        header = envelope_pb2.EnvelopeHeader(
            message_id=message_id,
            kind=kind,
            origin=me,
            origin_node=exchange.signer.identity.uri,
            recipients=addressing.recipients,
            created_at=_timestamp(now),
            handling=addressing.handling,
        )
        envelope = seal(header, payload.SerializeToString(), exchange.signer)
        names = [j.value for j in map(jurisdiction_of, addressing.recipients) if j is not None]
        prepared.append(
            _Prepared(
                position,
                request,
                kind,
                subject,
                version,
                request_digest,
                envelope,
                envelope_digest(envelope),
                names,
            )
        )
        pending[subject] = (version, kind in _FINAL_KINDS)
        pending_recipients.setdefault(subject, set()).update(names)
    if prepared:
        indexes = _commit(exchange, prepared, read, now)
        _answer(exchange, prepared, indexes, results, now)
    response = partner_pb2.BulkSubmitResponse(results=results)
    _answer_repeats(results, first_use)
    for result in results:
        if result.outcome == partner_pb2.BULK_OUTCOME_ACCEPTED:
            response.accepted += 1
        elif result.outcome == partner_pb2.BULK_OUTCOME_DUPLICATE:
            response.duplicates += 1
        else:
            response.refused += 1
    return response


def _subject(request: SubmitRequest) -> str:
    kind, payload = _payload(request)
    return subject_of(kind, payload)[0]


def _existing(conn: Connection, origin: str, ids: list[str]) -> dict[str, store.MessageRow]:
    found: dict[str, store.MessageRow] = {}
    unique = sorted(set(ids))
    for start in range(0, len(unique), _LOOKUP):
        found.update(store.MessageRow.get_many(conn, origin, unique[start : start + _LOOKUP]))
    return found


def _check_keeps_recipients(
    conn: Connection,
    origin: str,
    subject: str,
    addressing: partner_pb2.Addressing,
    pending: dict[str, set[str]],
) -> None:
    """As a single submit: a later version goes to everyone who had an earlier one, also an
    earlier one sent by this same call."""
    named = {j.value for j in map(jurisdiction_of, addressing.recipients) if j is not None}
    had = store.recipients_of(conn, origin, subject) | pending.get(subject, set())
    dropped = sorted(had - named)
    if dropped:
        problem = FieldViolation(
            "addressing.recipients",
            f"must include {', '.join(dropped)}, which received an earlier version of "
            f"{subject}; to stop sharing it, revoke or withdraw it to them",
        )
        raise InvalidArgumentError(str(problem), [problem])


def _refuse(result: partner_pb2.BulkEntryResult, exc: GatewayError, prefix: str) -> None:
    """Answer ``result`` with the status ``exc`` gives, its field paths under ``prefix``."""
    if isinstance(exc, InvalidArgumentError):
        violations = [FieldViolation(f"{prefix}.{v.field}", v.description) for v in exc.violations]
        exc = InvalidArgumentError(f"{prefix}: {exc}", violations)
    result.outcome = partner_pb2.BULK_OUTCOME_REFUSED
    result.refused.CopyFrom(to_status(exc))


def _commit(
    exchange: Exchange,
    prepared: list[_Prepared],
    read: dict[str, tuple[int, bool] | None],
    now: dt.datetime,
) -> list[int]:
    """Record every prepared entry in one transaction; return each one's first ledger index."""
    origin = exchange.jurisdiction.value
    entries: list[Entry] = []
    offsets: list[int] = []
    for item in prepared:
        offsets.append(len(entries))
        message_uuid = uuid.UUID(item.request.addressing.message_id)
        kind = kind_name(item.kind)
        entries.extend(Entry(Event.SENT, message_uuid, kind, r, (item.digest,)) for r in item.names)
    created_ms = _ms(now)
    subjects = sorted({item.subject for item in prepared})
    expected = {s: v for s in subjects if (v := read[s]) is not None}

    def within(conn: Connection, first: int) -> None:
        if store.last_versions(conn, origin, subjects) != expected:
            raise _Moved("a subject of this call was changed by another call")
        for item, offset in zip(prepared, offsets, strict=True):
            store.MessageRow(
                item.request.addressing.message_id,
                "out",
                origin,
                item.kind,
                item.subject,
                item.version,
                item.digest,
                item.request_digest,
                item.envelope.SerializeToString(),
                first + offset,
                created_ms,
                None,
            ).insert(conn, _retain_until_ms(_payload(item.request)[1]))
            store.record_version(
                conn, origin, item.subject, item.version, item.kind in _FINAL_KINDS
            )
            store.enqueue(conn, item.request.addressing.message_id, item.names)

    try:
        records = exchange.ledger.append_many(entries, within)
    except integrity_errors() as exc:  # a message id of this call was recorded meanwhile
        raise _Moved(str(exc)) from exc
    return [records[0].index + offset for offset in offsets]


def _answer(
    exchange: Exchange,
    prepared: list[_Prepared],
    indexes: list[int],
    results: list[partner_pb2.BulkEntryResult],
    now: dt.datetime,
) -> None:
    """Fill in the accepted results, tell the listeners and wake the deliverers."""
    told: list[Told] = []
    recipients: set[str] = set()
    accepted_at = _timestamp(now)
    for item, index in zip(prepared, indexes, strict=True):
        result = results[item.position]
        result.outcome = partner_pb2.BULK_OUTCOME_ACCEPTED
        result.accepted.CopyFrom(
            partner_pb2.SubmitResponse(
                message_id=item.request.addressing.message_id,
                ledger_index=index,
                digest=item.digest,
                accepted_at=accepted_at,
            )
        )
        told.append(
            (
                exchange.jurisdiction,
                item.kind,
                _payload(item.request)[1],
                item.request.addressing.message_id,
                now,
            )
        )
        recipients.update(item.names)
    log.info(
        "sent %d message(s) of one bulk call at ledger indexes %d..%d",
        len(prepared),
        results[prepared[0].position].accepted.ledger_index,
        results[prepared[-1].position].accepted.ledger_index,
        extra={"event": "sent_bulk", "count": len(prepared)},
    )
    exchange._tell_many(told)
    for listener in exchange._outbox_listeners:
        listener(sorted(recipients))


def _answer_repeats(
    results: list[partner_pb2.BulkEntryResult], first_use: dict[str, tuple[int, bytes]]
) -> None:
    """An entry repeating an accepted one of the same call (same id, same content) gets that
    one's answer again, as a retry would (an entry repeating a refused one was judged again,
    with the same outcome)."""
    for result in results:
        if result.outcome != partner_pb2.BULK_OUTCOME_DUPLICATE or result.HasField("accepted"):
            continue
        earlier = results[first_use[result.message_id][0]]
        result.accepted.CopyFrom(earlier.accepted)
        result.accepted.duplicate = True
