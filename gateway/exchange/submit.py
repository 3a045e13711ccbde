"""Submit: a partner's message validated, signed, ledgered (``sent``) and queued for delivery.

One transaction holds the ``sent`` entries, the message row, the subject's version and the
outbox rows (ADR 0004); the partner is answered after it is durable.

:func:`submit_many` does the same for many messages of one bulk call (ADR 0053): each entry is
still its own message, validated, sealed, given its ``sent`` entries, its row and its outbox
rows, and idempotent by its message id; what is shared is the commit (ADR 0054): every accepted
entry of the call goes into one ``append_many``, one transaction and one fsync, and the answer
comes once all of them are durable. A refused entry is answered in its place and does not stop
the others.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import logging
import uuid
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from customs.gateway.v1 import envelope_pb2, partner_pb2
from gateway.domain.kinds import (
    Kind,
    RequestChecks,
    SubmitRequest,
    check_request,
    kind_of_request,
)
from gateway.envelope import (
    Sealer,
    jurisdiction_of,
    proto_jurisdiction,
    seal_with_digest,
)
from gateway.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    GatewayError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    to_status,
)
from gateway.exchange import _store as store
from gateway.exchange._shared import EPOCH, ms, retain_until_ms, timestamp, whole_ms, winner
from gateway.ledger import Entry, Event
from gateway.store import Connection, integrity_errors

if TYPE_CHECKING:
    from gateway.exchange.core import Exchange, Told

__all__ = ["AMEND", "END", "NEW", "PUBLISH", "Mode", "submit", "submit_many"]

log = logging.getLogger("gateway.exchange")


class Mode(enum.Enum):
    """Whether a submit creates a subject (version 1), amends it, or ends it (final);
    ``PUBLISH`` is new or amend as the payload's version says (watchlist entries)."""

    NEW = "new"
    AMEND = "amend"
    END = "end"
    PUBLISH = "publish"


NEW, AMEND, END, PUBLISH = Mode.NEW, Mode.AMEND, Mode.END, Mode.PUBLISH


_LEDGER_INDEX = store.MessageRow.LEDGER_INDEX  # its position in a message row's values


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
    if mode is Mode.NEW:  # most submits: read nothing first, the write checks (ADR 0076)
        answer = _submit(ex, request, mode, optimistic=True)
        if answer is not None:
            return answer
    answer = _submit(ex, request, mode, optimistic=False)
    assert answer is not None  # the careful path answers or raises
    return answer


def _submit(
    ex: Exchange, request: SubmitRequest, mode: Mode, *, optimistic: bool
) -> partner_pb2.SubmitResponse | None:
    """One attempt at :func:`submit`.

    ``optimistic`` (a new subject only): skip the read of the message id and the subject's
    version and take both as absent. The write refuses if either is not (the message row's
    key; ``advance_version`` with nothing known), so nothing is recorded twice; then, as on
    any refusal in validation, None is returned and the caller goes the careful way, which
    reads first and gives the duplicate answer or the error that names the stored version.
    """
    # Whole milliseconds, as stored: a retry's answer (from created_ms) has the same
    # accepted_at, to the digit, as the first one (and the envelope's created_at).
    now = whole_ms(ex.now())
    row = kind_of_request(request)
    kind, payload = row.kind, row.payload_of(request)
    addressing = request.addressing
    request_digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
    reader = ex.ledger.reader()
    origin = ex.jurisdiction.value
    subject, version = row.subject(payload)
    known: tuple[int, bool] | None = None
    if not optimistic:
        existing, known = store.message_and_version(reader, origin, addressing.message_id, subject)
        if existing is not None:
            return _same_request(existing, request_digest)
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
            _check_keeps_recipients(
                store.recipients_of(reader, origin, subject), subject, addressing
            )
    except GatewayError as exc:  # another replica may have recorded this very id meanwhile
        if optimistic:
            return None
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
    # The digest is hashed from the bytes just signed (ADR 0058), not read back out.
    envelope, digest = seal_with_digest(header, payload.SerializeToString(), ex.signer)
    recipients = [jurisdiction_of(r) for r in addressing.recipients]
    names = [r.value for r in recipients if r is not None]
    message_uuid = uuid.UUID(addressing.message_id)
    entries = [Entry(Event.SENT, message_uuid, row.name, r, (digest,)) for r in names]
    # The message row's values made here, not in the ledger writer (which holds the GIL for
    # every caller of a group commit): ``within`` only puts the ledger index in.
    message: list[object] = [
        addressing.message_id,
        "out",
        origin,
        kind,
        subject,
        version,
        digest,
        request_digest,
        envelope.SerializeToString(),
        None,  # the ledger index, in ``within``
        ms(now),
        None,
        retain_until_ms(payload),
    ]

    def within(conn: Connection, first_index: int) -> None:
        try:  # the version read above is checked by its write (ADR 0074)
            store.advance_version(conn, origin, subject, known, version, row.final, names)
        except integrity_errors() as exc:  # a concurrent submit moved the subject on
            raise FailedPreconditionError(
                f"{subject} changed while this request was processed; retry with a new version"
            ) from exc
        message[_LEDGER_INDEX] = first_index
        store.MessageRow.insert_value_row(conn, message)
        store.enqueue(conn, addressing.message_id, names)

    try:
        records = ex.ledger.append_many(entries, within)
    # The same id won a race (here or on another replica, ADR 0073), by its key or by moving
    # the subject's version first: answer as for a retry.
    except _race_lost() as exc:
        if optimistic:
            return None
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
    earlier: AbstractSet[str], subject: str, addressing: partner_pb2.Addressing
) -> None:
    """An amendment, revocation or withdrawal goes to everyone who had an earlier version
    (``earlier``: every jurisdiction sent one, in the store or earlier in the same bulk call):
    otherwise a dropped recipient would keep the old version live (in its watchlist view,
    in screening) for ever."""
    named = {j.value for j in map(jurisdiction_of, addressing.recipients) if j is not None}
    dropped = sorted(earlier - named)
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


# -- bulk ---------------------------------------------------------------------------------------

_ATTEMPTS = 3  # a call whose subjects or ids another call moved meanwhile is prepared again
_LOOKUP = 500  # message ids per existence query


class _Moved(Exception):
    """A concurrent submit recorded a subject or a message id of this call first."""


@dataclass(slots=True)
class _Prepared:
    """An accepted entry of a bulk call, sealed, waiting for the commit (its fields set once:
    a plain class, as a frozen dataclass's ``__init__`` costs a call per field)."""

    position: int
    message_id: str
    kind: Kind
    payload: Message
    subject: str
    known: tuple[int, bool] | None  # the subject's state before it, checked by its write
    version: int
    request_digest: bytes
    envelope: bytes
    digest: bytes
    names: list[str]


def submit_many(
    ex: Exchange, requests: Sequence[SubmitRequest], mode: Mode, field: str
) -> partner_pb2.BulkSubmitResponse:
    """Submit each of ``requests`` as :func:`submit` would, in one group commit.

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
            return _attempt(ex, requests, mode, field)
        except _Moved:
            continue
    raise UnavailableError(
        "other calls kept changing the same entries while this one was prepared; nothing of "
        "it was recorded: retry it"
    )


def _attempt(
    ex: Exchange, requests: Sequence[SubmitRequest], mode: Mode, field: str
) -> partner_pb2.BulkSubmitResponse:
    now = whole_ms(ex.now())
    origin = ex.jurisdiction.value
    me = proto_jurisdiction(ex.jurisdiction)
    # Once per call, not per entry: the checks' memo of addressings, the sealers (the signer,
    # the origin node and the creation time encoded once per kind), the recipients' names.
    checks = RequestChecks(origin=me, now=now)
    sealers: dict[int, Sealer] = {}
    created_at = timestamp(now)
    recipient_names: dict[tuple[int, ...], list[str]] = {}
    reader = ex.ledger.reader()
    existing = _existing(reader, origin, [r.addressing.message_id for r in requests])
    kinds = [kind_of_request(r) for r in requests]
    payloads = [k.payload_of(r) for k, r in zip(kinds, requests, strict=True)]
    subjects = [k.subject(p) for k, p in zip(kinds, payloads, strict=True)]
    stored = store.last_versions(reader, origin, [subject for subject, _ in subjects])
    # The results are made in the response itself: no copy of each at the end.
    response = partner_pb2.BulkSubmitResponse()
    results: list[partner_pb2.BulkEntryResult] = []
    prepared: list[_Prepared] = []
    repeats: list[partner_pb2.BulkEntryResult] = []  # of an entry accepted earlier in the call
    first_use: dict[str, int] = {}  # message id -> position of its accepted entry
    digests: dict[str, bytes] = {}
    # The subjects' state as this call leaves it (each entry's write checks the state before).
    pending: dict[str, tuple[int, bool] | None] = {}
    pending_recipients: dict[str, set[str]] = {}
    for position, request in enumerate(requests):
        message_id = request.addressing.message_id
        result = response.results.add(position=position, message_id=message_id)
        results.append(result)
        request_digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        kind = kinds[position]
        subject, version = subjects[position]
        try:
            row = existing.get(message_id)
            if row is not None:
                result.accepted.CopyFrom(_same_request(row, request_digest))
                result.outcome = partner_pb2.BULK_OUTCOME_DUPLICATE
                response.duplicates += 1
                continue
            if message_id in first_use:
                if digests[message_id] != request_digest:
                    raise AlreadyExistsError(
                        f"message id {message_id} was already used for a different message "
                        f"({field}[{first_use[message_id]}])"
                    )
                result.outcome = partner_pb2.BULK_OUTCOME_DUPLICATE  # answered after the commit
                response.duplicates += 1
                repeats.append(result)
                continue
            if subject not in pending:
                seen = stored.get(subject)
                pending[subject] = seen.known if seen is not None else None
                pending_recipients[subject] = set(seen.recipients) if seen is not None else set()
            known = pending[subject]
            # first: a malformed request is INVALID_ARGUMENT, naming every field
            wire, handling = checks.check(
                request, last_version=known[0] if known is not None else None
            )
            entry_mode = mode
            if entry_mode is Mode.PUBLISH:
                entry_mode = Mode.NEW if version <= 1 else Mode.AMEND
            _check_mode(entry_mode, subject, known)
            if known is not None:
                _check_keeps_recipients(pending_recipients[subject], subject, request.addressing)
        except GatewayError as exc:
            _refuse(result, exc, f"{field}[{position}]")
            response.refused += 1
            continue
        first_use[message_id], digests[message_id] = position, request_digest
        sealer = sealers.get(kind.kind)
        if sealer is None:
            sealer = sealers[kind.kind] = Sealer(
                kind=kind.kind,
                origin=me,
                origin_node=ex.signer.identity.uri,
                created_at=created_at,
                signer=ex.signer,
            )
        payload = payloads[position]
        envelope, digest = sealer.seal(message_id, wire, handling, payload.SerializeToString())
        names = recipient_names.get(wire)
        if names is None:
            names = recipient_names[wire] = [
                j.value for j in map(jurisdiction_of, wire) if j is not None
            ]
        prepared.append(
            _Prepared(
                position,
                message_id,
                kind,
                payload,
                subject,
                known,
                version,
                request_digest,
                envelope,
                digest,
                names,
            )
        )
        pending[subject] = (version, kind.final)
        pending_recipients[subject].update(names)
    if prepared:
        indexes = _commit(ex, prepared, now)
        _answer(ex, prepared, indexes, results, now)
        response.accepted = len(prepared)
    for result in repeats:  # a repeat of an accepted entry of this call: its answer again
        result.accepted.CopyFrom(results[first_use[result.message_id]].accepted)
        result.accepted.duplicate = True
    return response


def _existing(conn: Connection, origin: str, ids: list[str]) -> dict[str, store.MessageRow]:
    found: dict[str, store.MessageRow] = {}
    unique = sorted(set(ids))
    for start in range(0, len(unique), _LOOKUP):
        found.update(store.MessageRow.get_many(conn, origin, unique[start : start + _LOOKUP]))
    return found


def _refuse(result: partner_pb2.BulkEntryResult, exc: GatewayError, prefix: str) -> None:
    """Answer ``result`` with the status ``exc`` gives, its field paths under ``prefix``."""
    if isinstance(exc, InvalidArgumentError):
        violations = [FieldViolation(f"{prefix}.{v.field}", v.description) for v in exc.violations]
        exc = InvalidArgumentError(f"{prefix}: {exc}", violations)
    result.outcome = partner_pb2.BULK_OUTCOME_REFUSED
    result.refused.CopyFrom(to_status(exc))


def _commit(
    ex: Exchange,
    prepared: list[_Prepared],
    now: dt.datetime,
) -> list[int]:
    """Record every prepared entry in one transaction; return each one's first ledger index."""
    origin = ex.jurisdiction.value
    created_ms = ms(now)
    entries: list[Entry] = []
    offsets: list[int] = []
    # Every row's values made here, in the caller's thread: the writer (one for the node, the
    # GIL held) only puts each message's ledger index in (column _LEDGER_INDEX) and inserts.
    # One executemany per table for the whole call (ADR 0074), rows in request order.
    messages: list[list[object]] = []
    versions: list[tuple[str, tuple[int, bool] | None, int, bool, list[str]]] = []
    queued: list[tuple[str, list[str]]] = []
    sent = Event.SENT
    for item in prepared:
        offset = len(entries)
        offsets.append(offset)
        message_id, kind, digest, names = item.message_id, item.kind, item.digest, item.names
        message_uuid = uuid.UUID(message_id)
        name, digests = kind.name, (digest,)
        entries.extend([Entry(sent, message_uuid, name, r, digests) for r in names])
        messages.append(
            [
                message_id,
                "out",
                origin,
                kind.kind,
                item.subject,
                item.version,
                digest,
                item.request_digest,
                item.envelope,
                offset,  # plus the first index, in ``within``
                created_ms,
                None,
                retain_until_ms(item.payload),
            ]
        )
        versions.append((item.subject, item.known, item.version, kind.final, names))
        queued.append((message_id, names))
    version_rows = store.advance_rows(origin, versions)
    outbox_rows = store.outbox_rows(queued)

    def within(conn: Connection, first: int) -> None:
        for row, offset in zip(messages, offsets, strict=True):
            row[_LEDGER_INDEX] = first + offset  # set, not added: a rerun gives the same rows
        store.MessageRow.insert_values(conn, messages)
        store.advance_versions(conn, version_rows)  # refuses a subject moved meanwhile
        store.enqueue_many(conn, outbox_rows)

    try:
        records = ex.ledger.append_many(entries, within)
    # A message id or a subject of this call was recorded meanwhile (by the id's key, or by a
    # version write finding another state than this call read): nothing of it was recorded.
    except integrity_errors() as exc:
        raise _Moved(str(exc)) from exc
    return [records[0].index + offset for offset in offsets]


def _answer(
    ex: Exchange,
    prepared: list[_Prepared],
    indexes: list[int],
    results: list[partner_pb2.BulkEntryResult],
    now: dt.datetime,
) -> None:
    """Fill in the accepted results, tell the listeners and wake the deliverers."""
    told: list[Told] = []
    recipients: set[str] = set()
    accepted_at = timestamp(now)
    for item, index in zip(prepared, indexes, strict=True):
        message_id = item.message_id
        result = results[item.position]
        result.outcome = partner_pb2.BULK_OUTCOME_ACCEPTED
        accepted = result.accepted  # set in place: no SubmitResponse built and copied
        accepted.message_id = message_id
        accepted.ledger_index = index
        accepted.digest = item.digest
        accepted.accepted_at.CopyFrom(accepted_at)
        told.append((ex.jurisdiction, item.kind.kind, item.payload, message_id, now))
        recipients.update(item.names)
    log.info(
        "sent %d message(s) of one bulk call at ledger indexes %d..%d",
        len(prepared),
        indexes[0],
        indexes[-1],
        extra={"event": "sent_bulk", "count": len(prepared)},
    )
    ex.tell_payloads(told)
    ex.tell_outbox(sorted(recipients))
