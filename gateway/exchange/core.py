"""The exchange: one node's :class:`Exchange`, a facade over the modules split by concern.

- :mod:`~gateway.exchange.submit`: a partner's message signed, ledgered (``sent``) and queued.
- :mod:`~gateway.exchange.receive`: a peer's envelopes verified, ledgered and receipted.
- :mod:`~gateway.exchange.inbound`: partner streams and acknowledgements.
- :mod:`~gateway.exchange.retention`: payloads erased at the end of their retention.
- :mod:`~gateway.exchange.status`: where a sent message is, per recipient.

The facade holds what they share (the ledger, the signer, the trust in force, the clock and the
listeners); none of them writes SQL, which lives in ``_store`` (ADR 0016). Every path follows
the durability contract of DESIGN.md section 3: the ledger entry and the exchange rows it
implies are written in one transaction, and the caller is answered only after that transaction
is durable (``Ledger.append`` returns after the fsync of its group commit).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence

from cryptography import x509
from google.protobuf.message import Message
from google.rpc import status_pb2

from customs.gateway.v1 import envelope_pb2, partner_pb2
from gateway.domain.kinds import KINDS, SubmitRequest, kind_name, subject_of
from gateway.envelope import Signer
from gateway.exchange import _store as store
from gateway.exchange import inbound, receive, retention, status, submit
from gateway.exchange._shared import EPOCH
from gateway.exchange.inbound import Followers
from gateway.exchange.submit import AMEND, END, NEW, PUBLISH, Mode
from gateway.ledger import Ledger
from gateway.pki.access import Principal
from gateway.pki.bundle import TrustBundle
from gateway.pki.identity import Jurisdiction

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
    "Told",
    "Trust",
    "kind_name",
    "subject_of",
]

log = logging.getLogger("gateway.exchange")

# (bundle, CRLs) as loaded now: follows rotations.
Trust = Callable[[], tuple[TrustBundle, Sequence[x509.CertificateRevocationList]]]
# Told of every payload this node sends or accepts: (origin, kind, payload, message id, when).
PayloadListener = Callable[[Jurisdiction, int, Message, str, dt.datetime], None]
Told = tuple[Jurisdiction, int, Message, str, dt.datetime]
# Told of payloads in batches (a bulk submit, a delivered batch, a page of the replay): one call
# per batch, so a listener that persists (the watchlist view) commits once per batch (ADR 0054).
PayloadsListener = Callable[[Sequence[Told]], None]

_REPLAY_PAGE = 1000  # payloads told to the listeners at once at start (bounded memory)


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
        self.followers = Followers()
        self._trust = trust
        self._clock = clock
        self._listeners: list[PayloadsListener] = []
        self._erasure_listeners: list[Callable[[int, str], None]] = []
        self._outbox_listeners: list[Callable[[Sequence[str]], None]] = []

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

    def on_outbox(self, listener: Callable[[Sequence[str]], None]) -> None:
        """Call ``listener(recipients)`` (cheaply, without blocking) whenever the outbox grows,
        with the jurisdiction codes the new rows are for."""
        self._outbox_listeners.append(listener)

    def tell_payload(
        self, origin: Jurisdiction, kind: int, payload: Message, message_id: str, at: dt.datetime
    ) -> None:
        """Tell every payload listener of a payload now durable; a listener's failure is
        logged, never raised (a view must never fail the write that already happened)."""
        self.tell_payloads([(origin, kind, payload, message_id, at)])

    def tell_payloads(self, told: Sequence[Told]) -> None:
        """:meth:`tell_payload` for a batch of durable payloads, in one call per listener."""
        if not told:
            return
        for listener in self._listeners:
            try:
                listener(told)
            except Exception:  # a view must never fail the write that already happened
                log.exception(
                    "payload listener failed for %d payload(s) from %s", len(told), told[0][3]
                )

    def tell_erased(self, kind: int, message_id: str) -> None:
        """Tell every erasure listener of a durable erasure; failures are logged, not raised."""
        for listener in self._erasure_listeners:
            try:
                listener(kind, message_id)
            except Exception:  # a view must never fail the erasure that already happened
                log.exception("erasure listener failed for %s", message_id)

    def tell_outbox(self, recipients: Sequence[str]) -> None:
        """Tell every outbox listener that rows for ``recipients`` were queued."""
        for listener in self._outbox_listeners:
            listener(recipients)

    def still_stored(self, message_ids: set[str]) -> set[str]:
        """Which of ``message_ids`` still have their payload (not erased) at this node."""
        return store.still_stored(self.ledger.reader(), message_ids)

    def replay(self, kinds: Sequence[int]) -> int:
        """Tell the listeners of every stored payload of ``kinds``, oldest first (at start);
        return the count. Rows are streamed, so memory does not grow with history."""
        count = 0
        page: list[Told] = []
        for row in store.stored_payloads(self.ledger.reader(), kinds):
            envelope = envelope_pb2.Envelope.FromString(row.envelope)
            payload = KINDS[row.kind].payload.FromString(envelope.payload)
            at = EPOCH + dt.timedelta(milliseconds=row.created_ms)  # exact, as ms() inverts
            page.append((Jurisdiction(row.origin), row.kind, payload, row.message_id, at))
            count += 1
            if len(page) == _REPLAY_PAGE:
                self.tell_payloads(page)
                page = []
        self.tell_payloads(page)
        return count

    # -- the concerns ----------------------------------------------------------------------------

    def submit(self, request: SubmitRequest, mode: Mode) -> partner_pb2.SubmitResponse:
        """A partner's message, durable and queued: see :func:`gateway.exchange.submit.submit`."""
        return submit.submit(self, request, mode)

    def submit_many(
        self, requests: Sequence[SubmitRequest], mode: Mode, field: str
    ) -> partner_pb2.BulkSubmitResponse:
        """Many partner messages in one group commit, one result each: see
        :func:`gateway.exchange.submit.submit_many`."""
        return submit.submit_many(self, requests, mode, field)

    def receive(
        self, envelopes: Sequence[envelope_pb2.Envelope], sender: Principal
    ) -> list[tuple[str, envelope_pb2.SignedReceipt | None, status_pb2.Status | None]]:
        """A peer's envelopes, each receipted or refused: see
        :func:`gateway.exchange.receive.receive`."""
        return receive.receive(self, envelopes, sender)

    def follow_inbound(
        self, after: int, kinds: Sequence[int], keep_going: Callable[[], bool]
    ) -> Iterator[store.InboundRow]:
        """Received messages after ``after``, then each new one: see
        :func:`gateway.exchange.inbound.follow_inbound`."""
        return inbound.follow_inbound(self, after, kinds, keep_going)

    def wake_followers(self) -> None:
        """Wake every :meth:`follow_inbound`: something arrived, or it should check
        ``keep_going`` (at shutdown)."""
        self.followers.wake()

    def acknowledge(
        self, message_id: str, partner: Principal, origin: Jurisdiction | None = None
    ) -> partner_pb2.AcknowledgeInboundResponse:
        """A partner's acknowledgement, ledgered once: see
        :func:`gateway.exchange.inbound.acknowledge`."""
        return inbound.acknowledge(self, message_id, partner, origin)

    def acknowledge_many(
        self, wanted: Sequence[tuple[str, Jurisdiction | None]], partner: Principal
    ) -> list[inbound.Acknowledged]:
        """A partner's acknowledgements of many messages in one group commit, one result each:
        see :func:`gateway.exchange.inbound.acknowledge_many`."""
        return inbound.acknowledge_many(self, wanted, partner)

    def erase_expired(self) -> int:
        """Erase every payload whose retention has ended; return how many: see
        :func:`gateway.exchange.retention.erase_expired`."""
        return retention.erase_expired(self)

    def delivery_status(self, message_id: str) -> partner_pb2.DeliveryStatus:
        """Where a message this node sent is, per recipient: see
        :func:`gateway.exchange.status.delivery_status`."""
        return status.delivery_status(self, message_id)
