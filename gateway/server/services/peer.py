"""PeerExchange: delivery and witnessing between nodes of different jurisdictions."""

from __future__ import annotations

import grpc

from customs.gateway.v1 import peer_pb2, peer_pb2_grpc
from gateway.errors import FieldViolation, InvalidArgumentError
from gateway.exchange.core import Exchange
from gateway.exchange.witness import witness_cosign
from gateway.server.interceptors import current_caller

__all__ = ["MAX_BATCH", "PeerService"]

MAX_BATCH = 2000  # envelopes in one DeliverBatch (a bulk call's entries in one or two; ADR 0054)


class PeerService(peer_pb2_grpc.PeerExchangeServicer):  # type: ignore[misc]  # generated, untyped
    """Receives envelopes (returning signed receipts) and cosigns checkpoints."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    def DeliverBatch(
        self, request: peer_pb2.DeliverBatchRequest, context: grpc.ServicerContext
    ) -> peer_pb2.DeliverBatchResponse:
        count = len(request.envelopes)
        if not 1 <= count <= MAX_BATCH:
            problem = FieldViolation("envelopes", f"1 to {MAX_BATCH} envelopes, got {count}")
            raise InvalidArgumentError(str(problem), [problem])
        response = peer_pb2.DeliverBatchResponse()
        for message_id, receipt, error in self._exchange.receive(
            request.envelopes, current_caller()
        ):
            result = response.results.add(message_id=message_id)
            if receipt is not None:
                result.receipt.CopyFrom(receipt)
            if error is not None:
                result.error.CopyFrom(error)
        return response

    def CosignCheckpoint(
        self, request: peer_pb2.CosignCheckpointRequest, context: grpc.ServicerContext
    ) -> peer_pb2.CosignCheckpointResponse:
        return witness_cosign(self._exchange, request, current_caller())
