"""The exchange: submit, receive, acknowledge and report, on top of the ledger.

Every path follows the durability contract of DESIGN.md section 3: the ledger entry and the
exchange rows it implies are written in one transaction, and the caller is answered only after
that transaction is durable (``Ledger.append`` returns after the fsync of its group commit).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import cast

from cryptography import x509
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, status_pb2

from customs.gateway.v1 import common_pb2, domain_pb2, envelope_pb2, partner_pb2
from gateway.domain.validate import check_request, validate_request
from gateway.envelope import (
    PAYLOAD_TYPES,
    NotReleasableError,
    OpenedEnvelope,
    ReplayError,
    Signer,
    envelope_digest,
    jurisdiction_of,
    open_envelope,
    proto_jurisdiction,
    seal,
    sign_receipt,
)
from gateway.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    GatewayError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    to_status,
)
from gateway.exchange import _store as store
from gateway.ledger import Entry, Event, Ledger, Record
from gateway.pki.access import Principal
from gateway.pki.bundle import TrustBundle
from gateway.pki.identity import Jurisdiction
from gateway.store import Connection, integrity_errors

__all__ = [
    "AMEND",
    "END",
    "NEW",
    "PUBLISH",
    "Exchange",
    "Mode",
    "PayloadListener",
    "PayloadsListener",
    "SubmitRequest",
    "Trust",
    "kind_name",
    "subject_of",
]


def _race_lost() -> tuple[type[Exception], ...]:
    """How a submit that lost the race for its message id fails, before the duplicate answer:
    on the id's key, or on the subject's version the winner moved first (ADR 0073)."""
    return (FailedPreconditionError, *integrity_errors())


log = logging.getLogger("gateway.exchange")

SubmitRequest = (
    partner_pb2.PublishWatchlistEntryRequest
    | partner_pb2.RevokeWatchlistEntryRequest
    | partner_pb2.SubmitSeizureNoticeRequest
    | partner_pb2.WithdrawSeizureNoticeRequest
)
# (bundle, CRLs) as loaded now: follows rotations.
Trust = Callable[[], tuple[TrustBundle, Sequence[x509.CertificateRevocationList]]]
# Told of every payload this node sends or accepts: (origin, kind, payload, message id, when).
PayloadListener = Callable[[Jurisdiction, int, Message, str, dt.datetime], None]
Told = tuple[Jurisdiction, int, Message, str, dt.datetime]
# Told of payloads in batches (a bulk submit, a delivered batch): one call per batch, so a
# listener that persists (the watchlist view) commits once per batch, not once per payload.
PayloadsListener = Callable[[Sequence[Told]], None]

_INBOUND_PAGE = 500
_REPLAY_PAGE = 1000  # payloads told to the listeners at once at start (bounded memory)
_FINAL_KINDS = (
    common_pb2.MESSAGE_KIND_WATCHLIST_REVOCATION,
    common_pb2.MESSAGE_KIND_SEIZURE_WITHDRAWAL,
)


def kind_name(kind: int) -> str:
    """``SEIZURE_NOTICE`` for ``MESSAGE_KIND_SEIZURE_NOTICE``: the kind as ledgers record it."""
    return common_pb2.MessageKind.Name(kind).removeprefix("MESSAGE_KIND_")


def subject_of(kind: int, payload: Message) -> tuple[str, int]:
    """What a payload is a version of, and its version: ``("watchlist:<list>/<id>", 3)``."""
    if isinstance(payload, domain_pb2.WatchlistEntry | domain_pb2.WatchlistRevocation):
        return f"watchlist:{payload.watchlist}/{payload.entry_id}", payload.version
    if isinstance(payload, domain_pb2.SeizureNotice | domain_pb2.SeizureWithdrawal):
        return f"notice:{payload.notice_id}", payload.version
    raise InvalidArgumentError(f"no subject for message kind {kind}")


def _payload(request: SubmitRequest) -> tuple[common_pb2.MessageKind, Message]:
    if isinstance(request, partner_pb2.PublishWatchlistEntryRequest):
        return common_pb2.MESSAGE_KIND_WATCHLIST_ENTRY, request.entry
    if isinstance(request, partner_pb2.RevokeWatchlistEntryRequest):
        return common_pb2.MESSAGE_KIND_WATCHLIST_REVOCATION, request.revocation
    if isinstance(request, partner_pb2.SubmitSeizureNoticeRequest):
        return common_pb2.MESSAGE_KIND_SEIZURE_NOTICE, request.notice
    return common_pb2.MESSAGE_KIND_SEIZURE_WITHDRAWAL, request.withdrawal


def _timestamp(when: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _ms(when: dt.datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding: whole-ms times round-trip)."""
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)


def _whole_ms(when: dt.datetime) -> dt.datetime:
    """``when`` truncated to a whole millisecond."""
    return when.replace(microsecond=when.microsecond - when.microsecond % 1000)


def _retain_until_ms(payload: Message) -> int | None:
    retain = getattr(payload, "retain_until", None)
    if retain is None or not payload.HasField("retain_until"):
        return None
    return int(retain.ToMilliseconds())


class Mode(enum.Enum):
    """Whether a submit creates a subject (version 1), amends it, or ends it (final);
    ``PUBLISH`` is new or amend as the payload's version says (watchlist entries)."""

    NEW = "new"
    AMEND = "amend"
    END = "end"
    PUBLISH = "publish"


NEW, AMEND, END, PUBLISH = Mode.NEW, Mode.AMEND, Mode.END, Mode.PUBLISH


@dataclass(frozen=True)
class _Receiving:
    """A received envelope whose ledger entry is queued (its receipt is signed after the
    commit, outside the ledger writer: ADR 0054)."""

    opened: OpenedEnvelope
    received_at: dt.datetime
    future: Future[list[Record]]


class Exchange:
    """One node's exchange logic. Thread-safe; every method may be called from gRPC threads."""

    def __init__(
        self,
        *,
        jurisdiction: Jurisdiction,
        ledger: Ledger,
        signer: Signer,
        trust: Trust,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.jurisdiction = jurisdiction
        self.ledger = ledger
        self.signer = signer
        self.retired_signers: tuple[Signer, ...] = ()
        self._trust = trust
        self._clock = clock
        self._listeners: list[PayloadsListener] = []
        self._erasure_listeners: list[Callable[[int, str], None]] = []
        self._outbox_listeners: list[Callable[[Sequence[str]], None]] = []
        self._inbound_changed = threading.Condition()
        self._inbound_version = 0

    # -- wiring ----------------------------------------------------------------------------------

    def trust(self) -> tuple[TrustBundle, Sequence[x509.CertificateRevocationList]]:
        """The trust bundle and CRLs in force now."""
        return self._trust()

    def now(self) -> dt.datetime:
        """The exchange's clock."""
        return self._clock()

    def use_signer(self, signer: Signer) -> None:
        """Sign with ``signer`` from now on (a renewed signing pair); the ones before stay in
        :attr:`retired_signers`, for what they signed (a checkpoint still to be witnessed)."""
        self.retired_signers = (self.signer, *self.retired_signers)[:8]
        self.signer = signer

    def keep_own_certificate(self) -> None:
        """Store this node's signing certificate with the ledger, for auditors (idempotent)."""
        der = self.signer.certificate_der
        self.ledger.write(lambda conn: store.keep_certificate(conn, der))

    def on_payload(self, listener: PayloadListener) -> None:
        """Call ``listener`` for every payload this node records (sent or received)."""

        def each(told: Sequence[Told]) -> None:
            for item in told:
                listener(*item)

        self._listeners.append(each)

    def on_payloads(self, listener: PayloadsListener) -> None:
        """Call ``listener`` with the payloads this node records, a batch at a time (all those
        of one bulk submit or one delivered batch, in ledger order)."""
        self._listeners.append(listener)

    def on_erased(self, listener: Callable[[int, str], None]) -> None:
        """Call ``listener(kind, message_id)`` after each payload's erasure is durable."""
        self._erasure_listeners.append(listener)

    def still_stored(self, message_ids: set[str]) -> set[str]:
        """Which of ``message_ids`` still have their payload (not erased) at this node."""
        conn = self.ledger.reader()
        held: set[str] = set()
        ids = sorted(message_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            held.update(
                row[0]
                for row in conn.execute(
                    "SELECT message_id FROM exchange_messages "  # noqa: S608
                    f"WHERE envelope IS NOT NULL AND message_id IN ({marks})",
                    chunk,
                )
            )
        return held

    def on_outbox(self, listener: Callable[[Sequence[str]], None]) -> None:
        """Call ``listener(recipients)`` (cheaply, without blocking) whenever the outbox grows,
        with the jurisdiction codes the new rows are for."""
        self._outbox_listeners.append(listener)

    def _tell(
        self, origin: Jurisdiction, kind: int, payload: Message, message_id: str, at: dt.datetime
    ) -> None:
        self._tell_many([(origin, kind, payload, message_id, at)])

    def _tell_many(self, told: Sequence[Told]) -> None:
        if not told:
            return
        for listener in self._listeners:
            try:
                listener(told)
            except Exception:  # a view must never fail the write that already happened
                log.exception(
                    "payload listener failed for %d payload(s) from %s", len(told), told[0][3]
                )

    def replay(self, kinds: Sequence[int]) -> int:
        """Tell the listeners of every stored payload of ``kinds``, oldest first (at start);
        return the count. Rows are streamed, so memory does not grow with history."""
        conn = self.ledger.reader()
        count = 0
        marks = ",".join("?" * len(kinds))
        rows = conn.execute(
            "SELECT message_id, origin, kind, envelope, created_ms FROM exchange_messages "  # noqa: S608
            f"WHERE envelope IS NOT NULL AND kind IN ({marks}) ORDER BY ledger_index",
            list(kinds),
        )
        page: list[Told] = []
        for message_id, origin, kind, blob, created_ms in rows:
            envelope = envelope_pb2.Envelope.FromString(blob)
            payload = PAYLOAD_TYPES[kind].FromString(envelope.payload)
            at = _EPOCH + dt.timedelta(milliseconds=created_ms)  # exact, as _ms inverts
            page.append((Jurisdiction(origin), kind, payload, message_id, at))
            count += 1
            if len(page) == _REPLAY_PAGE:
                self._tell_many(page)
                page = []
        self._tell_many(page)
        return count

    # -- submit ----------------------------------------------------------------------------------

    def submit(self, request: SubmitRequest, mode: Mode) -> partner_pb2.SubmitResponse:
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
        now = _whole_ms(self._clock())
        kind, payload = _payload(request)
        addressing = request.addressing
        request_digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        reader = self.ledger.reader()
        existing = store.MessageRow.get(reader, self.jurisdiction.value, addressing.message_id)
        if existing is not None:
            return self._same_request(existing, request_digest)
        origin = self.jurisdiction.value
        subject, version = subject_of(kind, payload)
        known = store.last_version(reader, origin, subject)
        try:
            check_request(  # first: a malformed request is INVALID_ARGUMENT, naming every field
                request,
                origin=proto_jurisdiction(self.jurisdiction),
                now=now,
                last_version=known[0] if known else None,
            )
            if mode is Mode.PUBLISH:
                mode = Mode.NEW if version <= 1 else Mode.AMEND
            self._check_mode(mode, subject, known)
            if known is not None:
                self._check_keeps_recipients(reader, origin, subject, addressing)
        except GatewayError as exc:  # another replica may have recorded this very id meanwhile
            return self._same_request(
                self._winner(origin, addressing.message_id, exc), request_digest
            )
        header = envelope_pb2.EnvelopeHeader(
            message_id=addressing.message_id,
            kind=kind,
            origin=proto_jurisdiction(self.jurisdiction),
            origin_node=self.signer.identity.uri,
            recipients=addressing.recipients,
            created_at=_timestamp(now),
            handling=addressing.handling,
        )
        envelope = seal(header, payload.SerializeToString(), self.signer)
        digest = envelope_digest(envelope)
        recipients = [jurisdiction_of(r) for r in addressing.recipients]
        names = [r.value for r in recipients if r is not None]
        message_uuid = uuid.UUID(addressing.message_id)
        entries = [Entry(Event.SENT, message_uuid, kind_name(kind), r, (digest,)) for r in names]

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
                _ms(now),
                None,
            ).insert(conn, _retain_until_ms(payload))
            store.record_version(conn, origin, subject, version, kind in _FINAL_KINDS)
            store.enqueue(conn, addressing.message_id, names)

        try:
            records = self.ledger.append_many(entries, within)
        # The same id won a race (here or on another replica, ADR 0073), by its key or by moving
        # the subject's version first: answer as for a retry.
        except _race_lost() as exc:
            return self._same_request(
                self._winner(origin, addressing.message_id, exc), request_digest
            )
        log.info(
            "sent %s %s to %s at ledger index %d",
            kind_name(kind),
            addressing.message_id,
            ",".join(names),
            records[0].index,
            extra={"event": "sent", "message_id": addressing.message_id},
        )
        self._tell(self.jurisdiction, kind, payload, addressing.message_id, now)
        for listener in self._outbox_listeners:
            listener(names)
        return partner_pb2.SubmitResponse(
            message_id=addressing.message_id,
            ledger_index=records[0].index,
            digest=digest,
            accepted_at=header.created_at,  # the same instant, converted once
        )

    @staticmethod
    def _check_mode(mode: Mode, subject: str, known: tuple[int, bool] | None) -> None:
        if known is not None and known[1]:
            raise FailedPreconditionError(
                f"{subject} was revoked or withdrawn at version {known[0]}"
            )
        if mode is NEW and known is not None:
            raise FailedPreconditionError(
                f"{subject} exists at version {known[0]}; send an amendment with a higher version"
            )
        if mode in (AMEND, END) and known is None:
            raise NotFoundError(f"{subject} was never published by this node")

    def _winner(self, origin: str, message_id: str, exc: Exception) -> store.MessageRow:
        """The row that won a race to record (origin, message id); if there is none, another
        constraint failed, and ``exc`` is raised again rather than mistaken for a race."""
        row = store.MessageRow.get(self.ledger.reader(), origin, message_id)
        if row is None:
            raise exc
        return row

    @staticmethod
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

    @staticmethod
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
            accepted_at=_timestamp(_EPOCH + dt.timedelta(milliseconds=row.created_ms)),
        )

    # -- receive ---------------------------------------------------------------------------------

    def receive(
        self, envelopes: Sequence[envelope_pb2.Envelope], sender: Principal
    ) -> list[tuple[str, envelope_pb2.SignedReceipt | None, status_pb2.Status | None]]:
        """Verify, de-duplicate and ledger each envelope from peer node ``sender``, in order.

        Returns (message id, receipt, error) per envelope; a refusal does not stop the others.
        The envelopes are checked first and their ``received`` entries then queued together,
        so a batch shares one group commit (each entry is still all-or-none on its own).
        """
        results: list[tuple[str, envelope_pb2.SignedReceipt | None, status_pb2.Status | None]] = []
        queued: list[tuple[int, _Receiving]] = []
        for envelope in envelopes:
            message_id = "?"
            try:
                opened = self._open(envelope, sender)
                message_id = opened.header.message_id
                accepted = self._accept(opened)
            except GatewayError as exc:
                results.append((message_id, None, self._refused(message_id, sender, exc)))
                continue
            except Exception as exc:  # a defect here: this envelope alone, not the batch
                results.append((message_id, None, _internal(message_id, exc)))
                continue
            if isinstance(accepted, _Receiving):
                queued.append((len(results), accepted))
                results.append((message_id, None, None))
            else:
                results.append((message_id, accepted, None))
        told: list[Told] = []
        for position, receiving in queued:  # they share one group commit: all durable at once
            message_id = receiving.opened.header.message_id
            try:
                results[position] = (message_id, self._received(receiving, told), None)
            except GatewayError as exc:
                results[position] = (message_id, None, self._refused(message_id, sender, exc))
        if told:
            self.wake_followers()  # partner streams first: they read the committed rows
            self._tell_many(told)  # the watchlist view: one commit for the batch
        return results

    @staticmethod
    def _refused(message_id: str, sender: Principal, exc: GatewayError) -> status_pb2.Status:
        log.warning(
            "REFUSED message %s from %s: %s",
            message_id,
            sender.identity.uri,
            exc,
            extra={"event": "refused", "message_id": message_id, "status": exc.status},
        )
        return to_status(exc)

    def _open(self, envelope: envelope_pb2.Envelope, sender: Principal) -> OpenedEnvelope:
        bundle, crls = self._trust()
        opened = open_envelope(envelope, bundle, crls, now=self._clock())
        header = opened.header
        if opened.origin is not sender.jurisdiction:
            raise PermissionDeniedError(
                f"message {header.message_id} originates from {opened.origin} "
                f"but was delivered by {sender.identity.uri}: nodes deliver only their own"
            )
        me = proto_jurisdiction(self.jurisdiction)
        if me not in header.recipients:
            raise NotReleasableError(
                f"message {header.message_id} is not addressed to {self.jurisdiction}"
            )
        if me not in header.handling.releasable_to:
            raise NotReleasableError(
                f"message {header.message_id} is not releasable to {self.jurisdiction}"
            )
        try:
            uuid.UUID(header.message_id)
        except ValueError:
            raise InvalidArgumentError(f"message id {header.message_id!r} is not a UUID") from None
        return opened

    def _accept(self, opened: OpenedEnvelope) -> envelope_pb2.SignedReceipt | _Receiving:
        """The receipt of a message already recorded, or its ``received`` entry, queued."""
        header, origin = opened.header, opened.origin.value
        existing = store.MessageRow.get(self.ledger.reader(), origin, header.message_id)
        if existing is not None:
            return self._known(existing, opened)
        kind = header.kind
        subject, version = subject_of(kind, opened.payload)
        problems = _payload_violations(opened, header.created_at.ToDatetime(dt.UTC), version)
        if problems:
            listed = "; ".join(str(p) for p in problems[:5])
            raise InvalidArgumentError(
                f"message {header.message_id}: payload is invalid: {listed}", problems
            )
        # Whole milliseconds, as stored: the receipt can be signed again, the same, from the row.
        received_at = _whole_ms(self._clock())

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
                _ms(received_at),
                None,  # the receipt is signed after the commit (ADR 0054)
            ).insert(conn, _retain_until_ms(opened.payload))
            store.record_version(conn, origin, subject, version, kind in _FINAL_KINDS)
            store.add_inbound(conn, origin, header.message_id, kind)

        entry = Entry(
            Event.RECEIVED, uuid.UUID(header.message_id), kind_name(kind), origin, (opened.digest,)
        )
        future = self.ledger.queue_append([entry], within)
        return _Receiving(opened, received_at, future)

    def _received(self, receiving: _Receiving, told: list[Told]) -> envelope_pb2.SignedReceipt:
        """Wait for a queued ``received`` entry to be durable; return its receipt, signed now
        (outside the ledger writer), and add the payload to ``told``."""
        opened = receiving.opened
        header, kind = opened.header, opened.header.kind
        try:
            records = receiving.future.result()
        except integrity_errors() as exc:  # delivered twice at once: the other one won
            return self._known(self._winner(opened.origin.value, header.message_id, exc), opened)
        receipt = self._receipt(
            header.message_id, opened.digest, records[0].index, receiving.received_at
        )
        log.info(
            "received %s %s from %s",
            kind_name(kind),
            header.message_id,
            opened.origin.value,
            extra={"event": "received", "message_id": header.message_id},
        )
        told.append((opened.origin, kind, opened.payload, header.message_id, receiving.received_at))
        return receipt

    def _receipt(
        self, message_id: str, digest: bytes, index: int, received_at: dt.datetime
    ) -> envelope_pb2.SignedReceipt:
        """This node's signed receipt for a message recorded at ``index``: a function of what
        the message's row stores (Ed25519 signatures are deterministic)."""
        return sign_receipt(
            envelope_pb2.ReceiptBody(
                message_id=message_id,
                message_digest=digest,
                recipient=proto_jurisdiction(self.jurisdiction),
                recipient_node=self.signer.identity.uri,
                ledger_index=index,
                received_at=_timestamp(received_at),
            ),
            self.signer,
        )

    def _known(self, row: store.MessageRow, opened: OpenedEnvelope) -> envelope_pb2.SignedReceipt:
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
        received_at = _EPOCH + dt.timedelta(milliseconds=row.created_ms)
        return self._receipt(row.message_id, row.digest, row.ledger_index, received_at)

    # -- inbound ---------------------------------------------------------------------------------

    def follow_inbound(
        self, after: int, kinds: Sequence[int], keep_going: Callable[[], bool]
    ) -> Iterator[store.InboundRow]:
        """Received messages after inbound number ``after`` (of ``kinds``, all if empty), oldest
        first, then each new one as soon as it is durable, while ``keep_going()`` is true."""
        wanted = tuple(int(k) for k in kinds)
        while keep_going():
            with self._inbound_changed:
                seen = self._inbound_version
            rows = store.inbound_after(self.ledger.reader(), after, wanted, _INBOUND_PAGE)
            for row in rows:
                yield row
                after = row.seq
            if not rows:
                with self._inbound_changed:
                    if self._inbound_version == seen:  # nothing arrived meanwhile: wait
                        self._inbound_changed.wait(timeout=0.5)

    def wake_followers(self) -> None:
        """Wake every :meth:`follow_inbound`: something arrived, or it should check
        ``keep_going`` (at shutdown)."""
        with self._inbound_changed:
            self._inbound_version += 1
            self._inbound_changed.notify_all()

    # -- acknowledge -----------------------------------------------------------------------------

    def acknowledge(
        self, message_id: str, partner: Principal, origin: Jurisdiction | None = None
    ) -> partner_pb2.AcknowledgeInboundResponse:
        """Ledger a partner's acknowledgement of an inbound message (idempotent per partner).

        ``origin`` is needed only if two jurisdictions sent messages under the same id.
        """
        reader = self.ledger.reader()
        row = self._inbound(reader, message_id, origin)
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
            record = self.ledger.append(
                entry, lambda conn, index: store.add_ack(conn, row.origin, message_id, who, index)
            )
        except integrity_errors():
            done = store.ack_of(self.ledger.reader(), row.origin, message_id, who)
            if done is None:  # not a race with the same acknowledgement
                raise
            return partner_pb2.AcknowledgeInboundResponse(
                ledger_index=done.ledger_index, duplicate=True
            )
        return partner_pb2.AcknowledgeInboundResponse(ledger_index=record.index)

    @staticmethod
    def _inbound(
        conn: Connection, message_id: str, origin: Jurisdiction | None
    ) -> store.MessageRow:
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

    # -- retention -------------------------------------------------------------------------------

    def erase_expired(self) -> int:
        """Erase every stored payload whose retention has ended; return how many.

        Each erasure is an ``erased`` ledger entry (digest only) written in the same transaction
        that drops the envelope, so the ledger still verifies and shows when the data went.
        """
        now_ms = _ms(self._clock())
        rows = (
            self.ledger.reader()
            .execute(
                "SELECT message_id, origin, kind, digest FROM exchange_messages "
                "WHERE envelope IS NOT NULL AND retain_until_ms <= ? "
                "ORDER BY ledger_index",
                (now_ms,),
            )
            .fetchall()
        )
        erased = 0
        for message_id, origin, kind, digest in rows:
            entry = Entry(Event.ERASED, uuid.UUID(message_id), kind_name(kind), origin, (digest,))
            try:
                self.ledger.append(entry, _eraser(origin, message_id, now_ms))
            except FailedPreconditionError:  # erased meanwhile by another sweep
                continue
            erased += 1
            for listener in self._erasure_listeners:
                try:
                    listener(kind, message_id)
                except Exception:  # a view must never fail the erasure that already happened
                    log.exception("erasure listener failed for %s", message_id)
            log.info(
                "erased payload of %s at the end of its retention",
                message_id,
                extra={"event": "erased", "message_id": message_id},
            )
        return erased

    # -- status ----------------------------------------------------------------------------------

    def delivery_status(self, message_id: str) -> partner_pb2.DeliveryStatus:
        """Where a message this node sent is, per recipient."""
        reader = self.ledger.reader()
        row = store.MessageRow.get(reader, self.jurisdiction.value, message_id)
        if row is None or row.direction != "out":
            raise NotFoundError(f"no message {message_id!r} sent by this node")
        status = partner_pb2.DeliveryStatus(
            message_id=message_id,
            kind=cast(common_pb2.MessageKind, row.kind),
            ledger_index=row.ledger_index,
        )
        for out in store.outbox_of(reader, message_id):
            recipient = partner_pb2.RecipientStatus(
                recipient=proto_jurisdiction(Jurisdiction(out.recipient)),
                state=cast(partner_pb2.DeliveryState, out.state),
                attempts=out.attempts,
                last_error=out.last_error,
            )
            if out.state == store.FAILING:
                recipient.next_attempt_at.FromMilliseconds(out.next_attempt_ms)
            if out.receipt:
                recipient.receipt.ParseFromString(out.receipt)
            status.recipients.append(recipient)
        return status


def _eraser(origin: str, message_id: str, erased_ms: int) -> Callable[[Connection, int], None]:
    def erase(conn: Connection, index: int) -> None:
        store.erase(conn, origin, message_id, erased_ms, index)

    return erase


def _payload_violations(
    opened: OpenedEnvelope, created: dt.datetime, version: int
) -> list[FieldViolation]:
    """Domain violations of a received payload, judged at its creation time by its origin.

    The sequence of versions is the origin's to keep (a recipient may not have been sent every
    version), so the version rule is given ``version - 1`` as the last known version: a
    recipient checks the content, and the merged view ignores stale versions.
    """
    request: SubmitRequest
    payload = opened.payload
    addressing = partner_pb2.Addressing(
        message_id=opened.header.message_id,
        recipients=opened.header.recipients,
        handling=opened.header.handling,
    )
    if isinstance(payload, domain_pb2.WatchlistEntry):
        request = partner_pb2.PublishWatchlistEntryRequest(addressing=addressing, entry=payload)
    elif isinstance(payload, domain_pb2.WatchlistRevocation):
        request = partner_pb2.RevokeWatchlistEntryRequest(addressing=addressing, revocation=payload)
    elif isinstance(payload, domain_pb2.SeizureNotice):
        request = partner_pb2.SubmitSeizureNoticeRequest(addressing=addressing, notice=payload)
    else:
        assert isinstance(payload, domain_pb2.SeizureWithdrawal)
        request = partner_pb2.WithdrawSeizureNoticeRequest(
            addressing=addressing, withdrawal=payload
        )
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
