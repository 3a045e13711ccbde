"""Receive: envelopes delivered by a peer node verified, de-duplicated, ledgered (``received``)
and receipted.

A batch's ``received`` entries are appended together, in one job of the ledger writer and one
commit; each is still all-or-none with its message row and its inbound row (ADR 0004, 0057).
Receipts are signed after the commit, outside the ledger writer, and the batch's payloads are
told to the listeners at once (ADR 0054).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from google.rpc import code_pb2, status_pb2

from customs.gateway.v1 import envelope_pb2, partner_pb2
from gateway.domain.kinds import KINDS, subject_of, validate_request
from gateway.envelope import (
    NotReleasableError,
    OpenedEnvelope,
    ReplayError,
    open_envelope,
    proto_jurisdiction,
    sign_receipt,
)
from gateway.errors import (
    FieldViolation,
    GatewayError,
    InvalidArgumentError,
    PermissionDeniedError,
    to_status,
)
from gateway.exchange import _store as store
from gateway.exchange._shared import EPOCH, ms, retain_until_ms, timestamp, whole_ms, winner
from gateway.ledger import Entry, Event, Record
from gateway.pki.access import Principal
from gateway.pki.bundle import TrustBundle
from gateway.store import Connection, integrity_errors

if TYPE_CHECKING:
    from gateway.exchange.core import Exchange, Told

__all__ = ["Outcome", "receive"]

log = logging.getLogger("gateway.exchange")

# Per envelope of a batch: (message id, receipt, error), exactly one of the last two set.
Outcome = tuple[str, envelope_pb2.SignedReceipt | None, status_pb2.Status | None]


@dataclass(frozen=True)
class _Prepared:
    """A received envelope checked and ready to record: its ``received`` entry and the rows
    that go with it (``within``)."""

    opened: OpenedEnvelope
    received_at: dt.datetime
    entry: Entry
    within: Callable[[Connection, int], None]


@dataclass(frozen=True)
class _Receiving:
    """A received envelope whose ledger entry is committed (``record``) or queued (``future``,
    exactly one of the two set); its receipt is signed after the commit, outside the ledger
    writer (ADR 0054)."""

    opened: OpenedEnvelope
    received_at: dt.datetime
    record: Record | None
    future: Future[list[Record]] | None = None


def receive(
    ex: Exchange, envelopes: Sequence[envelope_pb2.Envelope], sender: Principal
) -> list[Outcome]:
    """Verify, de-duplicate and ledger each envelope from peer node ``sender``, in order.

    Returns (message id, receipt, error) per envelope; a refusal does not stop the others.
    The envelopes are checked first and their ``received`` entries then queued together,
    so a batch shares one group commit (each entry is still all-or-none on its own).
    """
    results: list[Outcome] = []
    prepared: list[tuple[int, _Prepared]] = []
    # Once per batch, not per envelope: the trust in force, the clock, and the rows of the
    # messages already recorded (a repeated delivery), read in a few queries (ADR 0057).
    bundle, crls = ex.trust()
    now = ex.now()
    opening: list[OpenedEnvelope | status_pb2.Status] = []
    for envelope in envelopes:
        try:
            opening.append(_open(ex, envelope, sender, bundle, crls, now))
        except GatewayError as exc:
            opening.append(_refused("?", sender, exc))
        except Exception as exc:  # a defect here: this envelope alone, not the batch
            opening.append(_internal("?", exc))
    known = _recorded(
        ex, sender, [o.header.message_id for o in opening if isinstance(o, OpenedEnvelope)]
    )
    for opened in opening:
        if not isinstance(opened, OpenedEnvelope):
            results.append(("?", None, opened))
            continue
        message_id = opened.header.message_id
        try:
            accepted = _accept(ex, opened, known.get(message_id))
        except GatewayError as exc:
            results.append((message_id, None, _refused(message_id, sender, exc)))
            continue
        except Exception as exc:  # a defect here: this envelope alone, not the batch
            results.append((message_id, None, _internal(message_id, exc)))
            continue
        if isinstance(accepted, _Prepared):
            prepared.append((len(results), accepted))
            results.append((message_id, None, None))
        else:
            results.append((message_id, accepted, None))
    queued = zip(
        (position for position, _ in prepared),
        _record(ex, [p for _, p in prepared]),
        strict=True,
    )
    told: list[Told] = []
    for position, receiving in queued:  # committed together: all durable at once
        message_id = receiving.opened.header.message_id
        try:
            results[position] = (message_id, _received(ex, receiving, told), None)
        except GatewayError as exc:
            results[position] = (message_id, None, _refused(message_id, sender, exc))
    if told:
        ex.wake_followers()  # partner streams first: they read the committed rows
        ex.tell_payloads(told)  # the watchlist view: one commit for the batch
    return results


def _refused(message_id: str, sender: Principal, exc: GatewayError) -> status_pb2.Status:
    log.warning(
        "REFUSED message %s from %s: %s",
        message_id,
        sender.identity.uri,
        exc,
        extra={"event": "refused", "message_id": message_id, "status": exc.status},
    )
    return to_status(exc)


def _recorded(
    ex: Exchange, sender: Principal, message_ids: list[str]
) -> dict[str, store.MessageRow]:
    """The rows already recorded of ``message_ids`` from ``sender``'s jurisdiction, by id."""
    reader, origin = ex.ledger.reader(), sender.jurisdiction.value
    found: dict[str, store.MessageRow] = {}
    for lo in range(0, len(message_ids), _IDS_PER_QUERY):
        found.update(
            store.MessageRow.get_many(reader, origin, message_ids[lo : lo + _IDS_PER_QUERY])
        )
    return found


_IDS_PER_QUERY = 500


def _open(
    ex: Exchange,
    envelope: envelope_pb2.Envelope,
    sender: Principal,
    bundle: TrustBundle,
    crls: Sequence[x509.CertificateRevocationList],
    now: dt.datetime,
) -> OpenedEnvelope:
    opened = open_envelope(envelope, bundle, crls, now=now)
    header = opened.header
    if opened.origin is not sender.jurisdiction:
        raise PermissionDeniedError(
            f"message {header.message_id} originates from {opened.origin} "
            f"but was delivered by {sender.identity.uri}: nodes deliver only their own"
        )
    me = proto_jurisdiction(ex.jurisdiction)
    if me not in header.recipients:
        raise NotReleasableError(
            f"message {header.message_id} is not addressed to {ex.jurisdiction}"
        )
    if me not in header.handling.releasable_to:
        raise NotReleasableError(
            f"message {header.message_id} is not releasable to {ex.jurisdiction}"
        )
    try:
        uuid.UUID(header.message_id)
    except ValueError:
        raise InvalidArgumentError(f"message id {header.message_id!r} is not a UUID") from None
    return opened


def _record(ex: Exchange, prepared: list[_Prepared]) -> list[_Receiving]:
    """Record the ``received`` entries of a batch with one ``append_many``: one job for the
    ledger writer, not one per envelope (ADR 0057). Each entry stays all-or-none with its rows;
    if the batch meets a unique key (the same message delivered twice at once), nothing of it
    is recorded and each entry is queued again on its own, as before: the one that lost
    answers with the winner's receipt."""
    if len(prepared) > 1:
        parts = [p.within for p in prepared]

        def within(conn: Connection, first: int) -> None:
            for offset, part in enumerate(parts):
                part(conn, first + offset)

        try:
            records = ex.ledger.append_many([p.entry for p in prepared], within)
        except integrity_errors():
            pass  # each on its own, below
        else:
            # Committed: the records as they are, not a Future each (a Future costs a
            # Condition and an RLock per entry).
            return [
                _Receiving(p.opened, p.received_at, record)
                for p, record in zip(prepared, records, strict=True)
            ]
    return [
        _Receiving(p.opened, p.received_at, None, ex.ledger.queue_append([p.entry], p.within))
        for p in prepared
    ]


def _accept(
    ex: Exchange, opened: OpenedEnvelope, existing: store.MessageRow | None
) -> envelope_pb2.SignedReceipt | _Prepared:
    """The receipt of a message already recorded (``existing``, its row), or its ``received``
    entry and rows, to record."""
    header, origin = opened.header, opened.origin.value
    if existing is not None:
        return _known(ex, existing, opened)
    kind = header.kind
    subject, version = subject_of(kind, opened.payload)
    row = KINDS[kind]
    problems = _payload_violations(opened, header.created_at.ToDatetime(dt.UTC), version)
    if problems:
        listed = "; ".join(str(p) for p in problems[:5])
        raise InvalidArgumentError(
            f"message {header.message_id}: payload is invalid: {listed}", problems
        )
    # Whole milliseconds, as stored: the receipt can be signed again, the same, from the row.
    received_at = whole_ms(ex.now())

    def within(conn: Connection, index: int) -> None:
        store.MessageRow(
            header.message_id,
            "in",
            origin,
            kind,
            subject,
            version,
            opened.digest,
            None,
            opened.envelope.SerializeToString(),
            index,
            ms(received_at),
            None,  # the receipt is signed after the commit (ADR 0054)
        ).insert(conn, retain_until_ms(opened.payload))
        store.record_version(conn, origin, subject, version, row.final)
        store.add_inbound(conn, origin, header.message_id, kind)

    entry = Entry(Event.RECEIVED, uuid.UUID(header.message_id), row.name, origin, (opened.digest,))
    return _Prepared(opened, received_at, entry, within)


def _received(ex: Exchange, receiving: _Receiving, told: list[Told]) -> envelope_pb2.SignedReceipt:
    """Wait for a queued ``received`` entry to be durable; return its receipt, signed now
    (outside the ledger writer), and add the payload to ``told``."""
    opened = receiving.opened
    header, kind = opened.header, opened.header.kind
    record = receiving.record
    if record is None:
        assert receiving.future is not None
        try:
            record = receiving.future.result()[0]
        except integrity_errors() as exc:  # delivered twice at once: the other one won
            return _known(
                ex, winner(ex.ledger.reader(), opened.origin.value, header.message_id, exc), opened
            )
    receipt = _receipt(ex, header.message_id, opened.digest, record.index, receiving.received_at)
    log.info(
        "received %s %s from %s",
        KINDS[kind].name,
        header.message_id,
        opened.origin.value,
        extra={"event": "received", "message_id": header.message_id},
    )
    told.append((opened.origin, kind, opened.payload, header.message_id, receiving.received_at))
    return receipt


def _receipt(
    ex: Exchange, message_id: str, digest: bytes, index: int, received_at: dt.datetime
) -> envelope_pb2.SignedReceipt:
    """This node's signed receipt for a message recorded at ``index``: a function of what the
    message's row stores (Ed25519 signatures are deterministic)."""
    return sign_receipt(
        envelope_pb2.ReceiptBody(
            message_id=message_id,
            message_digest=digest,
            recipient=proto_jurisdiction(ex.jurisdiction),
            recipient_node=ex.signer.identity.uri,
            ledger_index=index,
            received_at=timestamp(received_at),
        ),
        ex.signer,
    )


def _known(
    ex: Exchange, row: store.MessageRow, opened: OpenedEnvelope
) -> envelope_pb2.SignedReceipt:
    if row.digest != opened.digest or row.direction != "in":
        log.error(
            "REPLAY OR FORGERY: message %s arrived again with digest %s, recorded with %s",
            row.message_id,
            opened.digest.hex(),
            row.digest.hex(),
            extra={"event": "replay", "message_id": row.message_id},
        )
        raise ReplayError(
            f"message {row.message_id} was already recorded with digest "
            f"{row.digest.hex()[:16]}..., this one has {opened.digest.hex()[:16]}..."
        )
    if row.receipt is not None:  # stored by nodes before ADR 0054
        return envelope_pb2.SignedReceipt.FromString(row.receipt)
    received_at = EPOCH + dt.timedelta(milliseconds=row.created_ms)
    return _receipt(ex, row.message_id, row.digest, row.ledger_index, received_at)


def _payload_violations(
    opened: OpenedEnvelope, created: dt.datetime, version: int
) -> list[FieldViolation]:
    """Domain violations of a received payload, judged at its creation time by its origin.

    The sequence of versions is the origin's to keep (a recipient may not have been sent every
    version), so the version rule is given ``version - 1`` as the last known version: a
    recipient checks the content, and the merged view ignores stale versions.
    """
    addressing = partner_pb2.Addressing(
        message_id=opened.header.message_id,
        recipients=opened.header.recipients,
        handling=opened.header.handling,
    )
    request = KINDS[opened.header.kind].request_for(addressing, opened.payload)
    return validate_request(
        request, origin=opened.header.origin, now=created, last_version=version - 1
    )


def _internal(message_id: str, exc: Exception) -> status_pb2.Status:
    """An unexpected failure on one envelope of a batch: logged with an incident id; the
    envelope alone answers INTERNAL (not final: the sender retries it), the others go on."""
    incident = uuid.uuid4().hex[:12]
    log.error("receiving message %s failed (incident %s)", message_id, incident, exc_info=exc)
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error (incident {incident})"
    )
