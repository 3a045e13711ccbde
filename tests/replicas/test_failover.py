"""Failover for callers (issue 14 point 3): several addresses for one node, round robin over the
replicas that are up, and a call retried on another replica when one dies.

Two real CN nodes on loopback stand in for two replicas (each on its own SQLite file here: the
channel and the config are what is tested; one shared PostgreSQL database is tests/replicas'
scenario tests).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from customs.gateway.v1 import partner_pb2_grpc
from gateway.ledger import Event, decode_record
from gateway.pki import Jurisdiction, Role
from gateway.server import LISTEN_ADDRESS_FILE, Node, PeerConfig, load_config
from gateway.transport import FAILOVER_SERVICE_CONFIG, failover_target, secure_channel
from tests.exchange.conftest import notice_request
from tests.support import World, wait_for

CN, HK = Jurisdiction.CN, Jurisdiction.HK


@pytest.mark.parametrize(
    ("addresses", "target"),
    [
        (["10.0.0.1:7443"], "10.0.0.1:7443"),
        (["10.0.0.1:7443", "10.0.0.2:7444"], "ipv4:10.0.0.1:7443,10.0.0.2:7444"),
        (["[::1]:7443", "[fe80::1]:7443"], "ipv6:[::1]:7443,[fe80::1]:7443"),
        (["[::1]:7443", "127.0.0.1:7443"], "ipv4:127.0.0.1:7443"),
        (["localhost:7443", "127.0.0.2:7443"], "ipv4:127.0.0.1:7443,127.0.0.2:7443"),
        (["no-such-host.invalid:7443", "127.0.0.2:7443"], "ipv4:127.0.0.2:7443"),
        (["a.invalid:1", "b.invalid:2"], "a.invalid:1"),
    ],
    ids=[
        "one",
        "two-v4",
        "two-v6",
        "v4-preferred",
        "name-resolved",
        "unresolved-left-out",
        "none-resolves",
    ],
)
def test_failover_target(addresses: list[str], target: str) -> None:
    assert failover_target(addresses) == target


def test_address_files_leave_out_what_is_not_there_yet(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / LISTEN_ADDRESS_FILE, tmp_path / "b" / LISTEN_ADDRESS_FILE
    peer = PeerConfig(CN, "", address_files=(first, second))
    assert peer.targets() == [f"unix:{first}"]  # nothing bound yet: fails at once, named
    second.parent.mkdir()
    second.write_text("127.0.0.1:7002\n")
    assert peer.targets() == ["127.0.0.1:7002"]
    first.parent.mkdir()
    first.write_text("127.0.0.1:7001\n")
    assert peer.targets() == ["127.0.0.1:7001", "127.0.0.1:7002"]
    assert peer.target() == "127.0.0.1:7001,127.0.0.1:7002"


def test_config_takes_addresses_and_address_files(world: World, tmp_path: Path) -> None:
    files = [Path("cn-1/listen-address"), Path("cn-2/listen-address")]
    config = load_config(world.write_config(HK, tmp_path / "hk", peers={CN: files}))
    assert config.peers[0].address_files == tuple((tmp_path / f).resolve() for f in files)
    listed = ["127.0.0.1:7001", "cn.example:7443"]
    config = load_config(world.write_config(HK, tmp_path / "hk2", peers={CN: listed}))
    assert config.peers[0].addresses == tuple(listed)
    assert config.peers[0].targets() == listed


@pytest.fixture
def replicas(world: World, tmp_path: Path) -> Iterator[list[Node]]:
    """Two CN nodes of the same identity on loopback, each on its own port."""
    nodes = []
    try:
        for i in (1, 2):
            node = Node(load_config(world.write_config(CN, tmp_path / f"cn-{i}" / "data")))
            node.start()
            nodes.append(node)
        yield nodes
    finally:
        for node in nodes:
            node.stop(grace=0.2)


def _sent(node: Node) -> int:
    ledger = node.ledger
    records = [decode_record(leaf) for _, leaf in ledger.leaves(0, ledger.size())]
    return sum(r.entry.event is Event.SENT for r in records)


def test_a_partner_channel_spreads_calls_and_retries_on_the_replica_left(
    world: World, replicas: list[Node]
) -> None:
    """Round robin: both replicas take submits. One dies: every later submit still succeeds,
    on the other (a call that met the dead one is retried there, UNAVAILABLE never surfaces)."""
    identity = world.client_identity(world.cred(CN, Role.PARTNER))
    addresses = [node.address for node in replicas]
    with secure_channel(addresses, identity, replicas[0].config.identity) as channel:
        stub = partner_pb2_grpc.PartnerGatewayStub(channel)
        for _ in range(8):
            stub.SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
        first, second = _sent(replicas[0]), _sent(replicas[1])
        assert first + second == 8
        assert min(first, second) > 0, (first, second)
        replicas[0].kill()
        for _ in range(8):
            stub.SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
        assert _sent(replicas[1]) == second + 8


def test_a_peer_delivers_to_the_replica_left(
    world: World, replicas: list[Node], tmp_path: Path
) -> None:
    """HK knows CN by the address files of both replicas; with one replica gone, HK's
    deliveries go to the other: the peer channel fails over as a partner's does."""
    files = [node.config.data_dir / LISTEN_ADDRESS_FILE for node in replicas]
    hk = Node(load_config(world.write_config(HK, tmp_path / "hk" / "data", peers={CN: files})))
    hk.start()
    try:
        identity = world.client_identity(world.cred(HK, Role.PARTNER))
        with secure_channel(hk.address, identity, hk.config.identity) as channel:
            stub = partner_pb2_grpc.PartnerGatewayStub(channel)
            replicas[0].kill()
            ids = []
            for _ in range(5):
                request = notice_request(HK, [CN])
                stub.SubmitSeizureNotice(request, timeout=10)
                ids.append(uuid.UUID(request.addressing.message_id))

            def received_by_survivor() -> bool:
                ledger = replicas[1].ledger
                got = {
                    decode_record(leaf).entry.message_id
                    for _, leaf in ledger.leaves(0, ledger.size())
                }
                return set(ids) <= got

            wait_for(received_by_survivor, what="HK's messages at the CN replica left")
    finally:
        hk.stop(grace=0.2)


def test_one_address_keeps_a_plain_channel(world: World, replicas: list[Node]) -> None:
    """A single address is dialled as before: no retry on another replica, so a dead node is
    UNAVAILABLE at once (the delivery backoff, not gRPC, retries it)."""
    identity = world.client_identity(world.cred(CN, Role.PARTNER))
    address = replicas[0].address
    replicas[0].kill()
    with secure_channel([address], identity, replicas[0].config.identity) as channel:
        stub = partner_pb2_grpc.PartnerGatewayStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.SubmitSeizureNotice(notice_request(CN, [HK]), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_the_service_config_in_the_partners_guide_is_the_gateway_s() -> None:
    """docs/partners.md shows partners the policy the gateway's own peers use: same balancing,
    same retry policy (a change to one without the other fails here)."""
    guide = (Path(__file__).parents[2] / "docs" / "partners.md").read_text(encoding="utf-8")
    section = guide.split("### Several replicas", 1)[1]
    shown = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    ours = FAILOVER_SERVICE_CONFIG
    assert shown["loadBalancingConfig"] == ours["loadBalancingConfig"]
    (shown_method,) = shown["methodConfig"]
    (our_method,) = ours["methodConfig"]
    assert shown_method["retryPolicy"] == our_method["retryPolicy"]
    assert shown_method["name"][0] in our_method["name"]
