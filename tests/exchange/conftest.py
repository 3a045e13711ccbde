"""Three real nodes on loopback (CN, HK, MO) peering with each other, and partner clients."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from customs.gateway.v1 import audit_pb2_grpc, common_pb2, partner_pb2, partner_pb2_grpc
from gateway.domain.fixtures import seed_notice_request, seed_publish_request
from gateway.ledger import Event, decode_record
from gateway.pki import Jurisdiction, Role
from gateway.server import LISTEN_ADDRESS_FILE, Node, load_config
from tests.support import ALL, World, channel_to

T = TypeVar("T")

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO
PROTO = {
    CN: common_pb2.JURISDICTION_CN,
    HK: common_pb2.JURISDICTION_HK,
    MO: common_pb2.JURISDICTION_MO,
}


@dataclass
class Trio:
    """The three nodes and their configs; nodes can be stopped and started again (each binds
    port 0 and its peers read the port it got from its address file)."""

    world: World
    root: Path
    configs: dict[Jurisdiction, Path] = field(default_factory=dict)
    nodes: dict[Jurisdiction, Node] = field(default_factory=dict)
    _channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def ports(self) -> dict[Jurisdiction, int]:
        """The port each node last bound, as its address file says (also once it stopped)."""
        ports = {}
        for j in self.configs:
            path = address_file(self.root, j)
            if path.exists():
                ports[j] = int(path.read_text().strip().rpartition(":")[2])
        return ports

    def start(self, j: Jurisdiction) -> Node:
        node = Node(load_config(self.configs[j]))
        node.start()
        self.nodes[j] = node
        return node

    def stop(self, j: Jurisdiction) -> None:
        self.nodes.pop(j).stop(grace=0.5)

    def channel(self, at: Jurisdiction, who: Jurisdiction, role: Role) -> grpc.Channel:
        channel = channel_to(self.world, self.nodes[at], self.world.cred(who, role))
        self._channels.append(channel)
        return channel

    def partner(self, j: Jurisdiction) -> Any:
        """A PartnerGateway stub for the partner of ``j`` at ``j``'s node."""
        return partner_pb2_grpc.PartnerGatewayStub(self.channel(j, j, Role.PARTNER))

    def auditor(self, j: Jurisdiction) -> Any:
        """A LedgerAudit stub at ``j``'s node (as ``j``'s auditor)."""
        return audit_pb2_grpc.LedgerAuditStub(self.channel(j, j, Role.AUDITOR))

    def entries(self, j: Jurisdiction, event: Event | None = None) -> list[Any]:
        """The decoded ledger records of ``j``'s node, optionally of one event."""
        ledger = self.nodes[j].ledger
        records = [decode_record(leaf) for _, leaf in ledger.leaves(0, ledger.size())]
        return [r for r in records if event is None or r.entry.event is event]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        for j in list(self.nodes):
            self.stop(j)


def data_dir(root: Path, j: Jurisdiction) -> Path:
    """Where the trio's node of ``j`` keeps its data."""
    return root / f"{j.value.lower()}-data"


def address_file(root: Path, j: Jurisdiction) -> Path:
    """The file in which ``j``'s node writes the address it bound."""
    return data_dir(root, j) / LISTEN_ADDRESS_FILE


def write_trio_configs(world: World, root: Path) -> dict[Jurisdiction, Path]:
    """A node config per jurisdiction listening on port 0 and peering with the other two
    through the address files they write once they have bound theirs."""
    configs = {}
    for j in ALL:
        path = world.write_config(
            j,
            data_dir(root, j),
            peers={p: address_file(root, p) for p in ALL if p is not j},
            server="checkpoint_interval_seconds = 0.3",
        )
        configs[j] = path
    return configs


@pytest.fixture
def trio(world: World, tmp_path: Path) -> Iterator[Trio]:
    """CN, HK and MO nodes running on loopback, peering with each other."""
    t = Trio(world, tmp_path, write_trio_configs(world, tmp_path))
    try:
        for j in ALL:
            t.start(j)
        yield t
    finally:
        t.close()


def notice_request(
    origin: Jurisdiction, recipients: list[Jurisdiction], now: dt.datetime | None = None
) -> partner_pb2.SubmitSeizureNoticeRequest:
    """The seed seizure notice with fresh ids, from ``origin`` to ``recipients``."""
    request = seed_notice_request(now or dt.datetime.now(dt.UTC))
    _readdress(request.addressing, recipients)
    request.notice.notice_id = str(uuid.uuid4())
    request.notice.case_reference = f"{origin.value}-{uuid.uuid4().hex[:8]}"
    return request


def entry_request(
    recipients: list[Jurisdiction], now: dt.datetime | None = None
) -> partner_pb2.PublishWatchlistEntryRequest:
    """The seed watchlist entry with fresh ids, to ``recipients``."""
    request = seed_publish_request(now or dt.datetime.now(dt.UTC))
    _readdress(request.addressing, recipients)
    request.entry.entry_id = str(uuid.uuid4())
    return request


def _readdress(addressing: partner_pb2.Addressing, recipients: list[Jurisdiction]) -> None:
    """A fresh message id, sent and releasable to ``recipients`` only."""
    addressing.message_id = str(uuid.uuid4())
    del addressing.recipients[:]
    addressing.recipients.extend(PROTO[r] for r in recipients)
    del addressing.handling.releasable_to[:]
    addressing.handling.releasable_to.extend(PROTO[r] for r in recipients)


def read_stream(stub: Any, cursor: str = "", *, expect: int, timeout: float = 15.0) -> list[Any]:
    """Read exactly ``expect`` messages from StreamInbound (fails on fewer within ``timeout``)."""
    call = stub.StreamInbound(partner_pb2.StreamInboundRequest(cursor=cursor), timeout=timeout)
    got = []
    try:
        for message in call:
            got.append(message)
            if len(got) == expect:
                break
    finally:
        call.cancel()
    return got
