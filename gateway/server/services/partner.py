"""PartnerGateway: what partner systems of the node's own jurisdiction call."""

from __future__ import annotations

import base64
import struct
import threading
from collections.abc import Callable, Iterator, Sequence

import grpc

from customs.gateway.v1 import partner_pb2, partner_pb2_grpc
from gateway.domain.kinds import KINDS
from gateway.envelope import jurisdiction_of
from gateway.errors import FieldViolation, GatewayError, InvalidArgumentError, to_status
from gateway.exchange import _store as store
from gateway.exchange.core import AMEND, END, NEW, PUBLISH, Exchange, Mode, SubmitRequest
from gateway.exchange.watchlists import Watchlists
from gateway.server.interceptors import current_caller, current_stream
from gateway.server.limits import Limits

# Told of every bulk call's outcome: (method, accepted, duplicates, refused).
BulkObserver = Callable[[str, int, int, int], None]

__all__ = ["BulkObserver", "PartnerService", "decode_cursor", "encode_cursor"]

_CURSOR = struct.Struct(">4sQ")
_CURSOR_MAGIC = b"cgw1"


def encode_cursor(seq: int) -> str:
    """The opaque cursor after inbound message number ``seq``."""
    return base64.urlsafe_b64encode(_CURSOR.pack(_CURSOR_MAGIC, seq)).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The inbound sequence number in ``cursor`` (0 for an empty cursor)."""
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        magic, seq = _CURSOR.unpack(raw)
    except (ValueError, struct.error):
        magic, seq = b"", 0
    if magic != _CURSOR_MAGIC:
        problem = FieldViolation("cursor", "not a cursor from this node's stream")
        raise InvalidArgumentError(str(problem), [problem])
    return int(seq)


class PartnerService(partner_pb2_grpc.PartnerGatewayServicer):  # type: ignore[misc]  # generated, untyped
    """Submit, status, watchlists, inbound stream and acknowledgement."""

    def __init__(
        self,
        exchange: Exchange,
        watchlists: Watchlists,
        stopping: threading.Event,
        limits: Limits | None = None,
        observe_bulk: BulkObserver | None = None,
    ):
        self._exchange = exchange
        self._watchlists = watchlists
        self._stopping = stopping
        self._limits = limits or Limits.for_workers(32)
        self._observe_bulk = observe_bulk

    def PublishWatchlistEntry(
        self, request: partner_pb2.PublishWatchlistEntryRequest, context: grpc.ServicerContext
    ) -> partner_pb2.SubmitResponse:
        return self._exchange.submit(request, PUBLISH)

    def RevokeWatchlistEntry(
        self, request: partner_pb2.RevokeWatchlistEntryRequest, context: grpc.ServicerContext
    ) -> partner_pb2.SubmitResponse:
        return self._exchange.submit(request, END)

    def PublishWatchlistEntries(
        self, request: partner_pb2.PublishWatchlistEntriesRequest, context: grpc.ServicerContext
    ) -> partner_pb2.BulkSubmitResponse:
        return self._bulk("PublishWatchlistEntries", request, request.entries, "entries", PUBLISH)

    def RevokeWatchlistEntries(
        self, request: partner_pb2.RevokeWatchlistEntriesRequest, context: grpc.ServicerContext
    ) -> partner_pb2.BulkSubmitResponse:
        return self._bulk(
            "RevokeWatchlistEntries", request, request.revocations, "revocations", END
        )

    def _bulk(
        self,
        method: str,
        request: partner_pb2.PublishWatchlistEntriesRequest
        | partner_pb2.RevokeWatchlistEntriesRequest,
        entries: Sequence[SubmitRequest],
        field: str,
        mode: Mode,
    ) -> partner_pb2.BulkSubmitResponse:
        """Refuse a call beyond the bulk limits (RESOURCE_EXHAUSTED) or without entries
        (INVALID_ARGUMENT); otherwise one result per entry (ADR 0053)."""
        self._limits.check_bulk(field, len(entries), request.ByteSize())
        if not entries:
            problem = FieldViolation(
                field, f"at least one is required, at most {self._limits.bulk_entries}"
            )
            raise InvalidArgumentError(str(problem), [problem])
        response = self._exchange.submit_many(entries, mode, field)
        if self._observe_bulk is not None:
            self._observe_bulk(method, response.accepted, response.duplicates, response.refused)
        return response

    def SubmitSeizureNotice(
        self, request: partner_pb2.SubmitSeizureNoticeRequest, context: grpc.ServicerContext
    ) -> partner_pb2.SubmitResponse:
        return self._exchange.submit(request, NEW)

    def AmendSeizureNotice(
        self, request: partner_pb2.SubmitSeizureNoticeRequest, context: grpc.ServicerContext
    ) -> partner_pb2.SubmitResponse:
        return self._exchange.submit(request, AMEND)

    def WithdrawSeizureNotice(
        self, request: partner_pb2.WithdrawSeizureNoticeRequest, context: grpc.ServicerContext
    ) -> partner_pb2.SubmitResponse:
        return self._exchange.submit(request, END)

    def GetDeliveryStatus(
        self, request: partner_pb2.GetDeliveryStatusRequest, context: grpc.ServicerContext
    ) -> partner_pb2.DeliveryStatus:
        return self._exchange.delivery_status(request.message_id)

    def ListWatchlist(
        self, request: partner_pb2.ListWatchlistRequest, context: grpc.ServicerContext
    ) -> partner_pb2.ListWatchlistResponse:
        return self._watchlists.list(request)

    def ScreenDeclaration(
        self, request: partner_pb2.ScreenDeclarationRequest, context: grpc.ServicerContext
    ) -> partner_pb2.ScreenDeclarationResponse:
        return self._watchlists.screen(request)

    def GetWatchlistEntry(
        self, request: partner_pb2.GetWatchlistEntryRequest, context: grpc.ServicerContext
    ) -> partner_pb2.WatchlistItem:
        return self._watchlists.get(request)

    def AcknowledgeInbound(
        self, request: partner_pb2.AcknowledgeInboundRequest, context: grpc.ServicerContext
    ) -> partner_pb2.AcknowledgeInboundResponse:
        origin = jurisdiction_of(request.origin) if request.origin else None
        return self._exchange.acknowledge(request.message_id, current_caller(), origin)

    def AcknowledgeInboundMessages(
        self,
        request: partner_pb2.AcknowledgeInboundMessagesRequest,
        context: grpc.ServicerContext,
    ) -> partner_pb2.AcknowledgeInboundMessagesResponse:
        """Many acknowledgements, one result each, in order (ADR 0056); beyond the bulk limits
        RESOURCE_EXHAUSTED, without any INVALID_ARGUMENT."""
        field = "acknowledgements"
        acks = request.acknowledgements
        self._limits.check_bulk(field, len(acks), request.ByteSize())
        if not acks:
            problem = FieldViolation(
                field, f"at least one is required, at most {self._limits.bulk_entries}"
            )
            raise InvalidArgumentError(str(problem), [problem])
        wanted = [(a.message_id, jurisdiction_of(a.origin) if a.origin else None) for a in acks]
        outcomes = self._exchange.acknowledge_many(wanted, current_caller())
        response = partner_pb2.AcknowledgeInboundMessagesResponse()
        for position, (ack, outcome) in enumerate(zip(acks, outcomes, strict=True)):
            result = response.results.add(position=position, message_id=ack.message_id)
            if isinstance(outcome, GatewayError):
                result.outcome = partner_pb2.BULK_OUTCOME_REFUSED
                result.refused.CopyFrom(to_status(_under(f"{field}[{position}]", outcome)))
                response.refused += 1
            else:
                result.acknowledged.CopyFrom(outcome)
                if outcome.duplicate:
                    result.outcome = partner_pb2.BULK_OUTCOME_DUPLICATE
                    response.duplicates += 1
                else:
                    result.outcome = partner_pb2.BULK_OUTCOME_ACCEPTED
                    response.acknowledged += 1
        return response

    def StreamInbound(
        self, request: partner_pb2.StreamInboundRequest, context: grpc.ServicerContext
    ) -> Iterator[partner_pb2.InboundMessage]:
        """Everything after the cursor, then new messages as they arrive, until cancelled.

        The stream also ends when the node stops, when the caller's certificate is revoked
        (UNAUTHENTICATED) or when it reaches its lifetime (UNAVAILABLE: open a new stream from
        the last cursor); the guard is checked while the stream waits, not only when it sends.
        """
        guard = current_stream()
        after = decode_cursor(request.cursor)
        context.add_callback(self._exchange.wake_followers)  # a cancelled stream ends at once
        rows = self._exchange.follow_inbound(
            after,
            request.kinds,
            lambda: context.is_active() and not self._stopping.is_set() and guard.alive(),
        )
        for row in rows:
            yield self._message(row)
        if context.is_active() and not self._stopping.is_set():
            guard.check()  # raises why the stream ends

    @staticmethod
    def _message(row: store.InboundRow) -> partner_pb2.InboundMessage:
        message = partner_pb2.InboundMessage(
            cursor=encode_cursor(row.seq),
            message_id=row.message_id,
            kind=row.kind,  # type: ignore[arg-type]
            origin=f"JURISDICTION_{row.origin}",
            ledger_index=row.ledger_index,
        )
        if row.envelope is not None:  # None once erased at the end of retention
            message.envelope.ParseFromString(row.envelope)  # parsed in place, not copied
            getattr(message, KINDS[row.kind].inbound_field).ParseFromString(
                message.envelope.payload
            )
        return message


def _under(prefix: str, exc: GatewayError) -> GatewayError:
    """``exc`` with its field paths under ``prefix`` (``acknowledgements[3].origin``)."""
    if not isinstance(exc, InvalidArgumentError) or not exc.violations:
        return exc
    violations = [FieldViolation(f"{prefix}.{v.field}", v.description) for v in exc.violations]
    return InvalidArgumentError(f"{prefix}: {exc}", violations)
