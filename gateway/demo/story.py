"""The seed case, told step by step against three running nodes (partner systems' view)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from customs.gateway.v1 import common_pb2, partner_pb2, partner_pb2_grpc
from gateway.demo.cluster import Cluster
from gateway.domain.fixtures import seed_declaration, seed_notice_request, seed_publish_request
from gateway.errors import UnavailableError
from gateway.pki import Jurisdiction, Role
from gateway.transport import secure_channel

__all__ = ["Partners", "wait_until"]

T = TypeVar("T")
CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


def wait_until(what: str, predicate: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll until ``predicate`` returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except grpc.RpcError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise UnavailableError(f"demo: timed out waiting for {what}")
        time.sleep(0.1)


class Partners:
    """The partner systems of each jurisdiction, calling their own node."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._channels: dict[Jurisdiction, grpc.Channel] = {}

    def stub(self, j: Jurisdiction) -> Any:
        """A PartnerGateway stub of ``j``'s partner at ``j``'s node (reconnects as needed)."""
        if j not in self._channels:
            node = self._cluster.nodes[j]
            self._channels[j] = secure_channel(
                node.address, self._cluster.client(j, Role.PARTNER), node.identity
            )
        return partner_pb2_grpc.PartnerGatewayStub(self._channels[j])

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def publish_entry(self) -> partner_pb2.SubmitResponse:
        request = seed_publish_request(dt.datetime.now(dt.UTC))
        response: partner_pb2.SubmitResponse = self.stub(HK).PublishWatchlistEntry(
            request, timeout=10
        )
        return response

    def submit_notice(self) -> tuple[partner_pb2.SubmitSeizureNoticeRequest, Any]:
        request = seed_notice_request(dt.datetime.now(dt.UTC))
        return request, self.stub(CN).SubmitSeizureNotice(request, timeout=10)

    def status(self, j: Jurisdiction, message_id: str) -> Any:
        return self.stub(j).GetDeliveryStatus(
            partner_pb2.GetDeliveryStatusRequest(message_id=message_id), timeout=5
        )

    def read_inbound(self, j: Jurisdiction, count: int, timeout: float = 30.0) -> list[Any]:
        call = self.stub(j).StreamInbound(partner_pb2.StreamInboundRequest(), timeout=timeout)
        got = []
        try:
            for message in call:
                got.append(message)
                if len(got) == count:
                    break
        finally:
            call.cancel()
        return got

    def acknowledge(self, j: Jurisdiction, message_id: str) -> Any:
        return self.stub(j).AcknowledgeInbound(
            partner_pb2.AcknowledgeInboundRequest(message_id=message_id), timeout=5
        )

    def screen(self, j: Jurisdiction) -> Any:
        """The seed declaration as a port system typed it: the consignee in its Cantonese
        romanisation only, the container number spaced and in lower case."""
        declaration = seed_declaration()
        del declaration.parties[0].names[:]
        declaration.parties[0].names.add(full_name="WAH NAM METALS TRADING CO., LTD.")
        declaration.container_numbers[0] = "tghu 765433 5"
        return self.stub(j).ScreenDeclaration(
            partner_pb2.ScreenDeclarationRequest(declaration=declaration), timeout=5
        )


def state_name(state: int) -> str:
    """``delivered`` for ``DELIVERY_STATE_DELIVERED``."""
    return partner_pb2.DeliveryState.Name(state).removeprefix("DELIVERY_STATE_").lower()


def jurisdiction_name(value: int) -> str:
    """``HK`` for ``JURISDICTION_HK``."""
    return common_pb2.Jurisdiction.Name(value).removeprefix("JURISDICTION_")


def short(message_id: str) -> str:
    """The first block of a UUID, for readable output."""
    return str(uuid.UUID(message_id)).split("-")[0]
