"""A node serves only mutual TLS: who gets through to health and reflection, and who does not."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from customs.gateway.v1 import audit_pb2, audit_pb2_grpc
from gateway.pki import Jurisdiction, Role, create_root_ca
from gateway.server import Node
from gateway.server.node import SERVICE_NAMES
from gateway.transport import ClientIdentity, secure_channel
from tests.support import World, channel_to, running_node


def _health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def test_partner_of_own_jurisdiction_reaches_health(world: World, hk_node: Node) -> None:
    with channel_to(world, hk_node, world.cred(Jurisdiction.HK, Role.PARTNER)) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        for name in SERVICE_NAMES:
            assert _health(channel, name) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("role", [Role.NODE, Role.PARTNER, Role.AUDITOR])
@pytest.mark.parametrize("jurisdiction", [Jurisdiction.CN, Jurisdiction.MO])
def test_health_is_open_to_any_authenticated_caller(
    world: World, hk_node: Node, jurisdiction: Jurisdiction, role: Role
) -> None:
    with channel_to(world, hk_node, world.cred(jurisdiction, role)) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_gateway_services(world: World, hk_node: Node) -> None:
    with channel_to(world, hk_node, world.cred(Jurisdiction.HK, Role.AUDITOR)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
    assert set(SERVICE_NAMES) <= names
    assert "grpc.health.v1.Health" in names


def _no_client_certificate(world: World, node: Node) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=world.client_identity(
            world.cred(Jurisdiction.HK, Role.PARTNER)
        ).root_certificates
    )
    return grpc.secure_channel(
        node.address,
        credentials,
        options=[("grpc.ssl_target_name_override", node.config.identity.dns_name)],
    )


def _unknown_ca(world: World, node: Node) -> grpc.Channel:
    rogue = create_root_ca(Jurisdiction.HK)  # an HK root that is not in the bundle
    cred = world.issue(Jurisdiction.HK, Role.PARTNER, "risk", ca=rogue, tag="-rogue")
    identity = ClientIdentity(
        cred.certificate.read_bytes(),
        cred.key.read_bytes(),
        world.client_identity(world.cred(Jurisdiction.HK, Role.PARTNER)).root_certificates,
    )
    credentials = grpc.ssl_channel_credentials(
        identity.root_certificates, identity.private_key, identity.certificate_chain
    )
    return grpc.secure_channel(
        node.address,
        credentials,
        options=[("grpc.ssl_target_name_override", node.config.identity.dns_name)],
    )


def _plaintext(_world: World, node: Node) -> grpc.Channel:
    return grpc.insecure_channel(node.address)


@pytest.mark.parametrize(
    "make_channel",
    [_no_client_certificate, _unknown_ca, _plaintext],
    ids=["no-client-certificate", "unknown-ca", "plaintext"],
)
def test_refused_at_the_handshake(
    world: World, hk_node: Node, make_channel: Callable[[World, Node], grpc.Channel]
) -> None:
    with make_channel(world, hk_node) as channel, pytest.raises(grpc.RpcError) as info:
        _health(channel)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_client_refuses_a_server_of_another_jurisdiction(world: World, hk_node: Node) -> None:
    """Dialled as the CN node, the HK node's certificate cannot match: roots constrain DNS names."""
    cn_node_identity = world.cred(Jurisdiction.CN, Role.NODE).identity
    identity = world.client_identity(world.cred(Jurisdiction.MO, Role.NODE))
    with (
        secure_channel(hk_node.address, identity, cn_node_identity) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        _health(channel)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_auditor_of_another_jurisdiction_reads_the_checkpoint(world: World, hk_node: Node) -> None:
    with channel_to(world, hk_node, world.cred(Jurisdiction.CN, Role.AUDITOR)) as channel:
        stub = audit_pb2_grpc.LedgerAuditStub(channel)
        checkpoint = stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=5)
    assert checkpoint.size == 0
    assert checkpoint.note.decode().startswith("hk.customs-exchange/ledger\n0\n")


def test_refusal_names_the_rule(world: World, hk_node: Node) -> None:
    with channel_to(world, hk_node, world.cred(Jurisdiction.HK, Role.PARTNER)) as channel:
        stub = audit_pb2_grpc.LedgerAuditStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=5)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "rule auditors-read-only" in info.value.details()


def test_graceful_stop_reports_not_serving_first(world: World, tmp_path: Path) -> None:
    config = world.write_config(Jurisdiction.HK, tmp_path / "hk-data")
    with (
        running_node(config) as node,
        channel_to(world, node, world.cred(Jurisdiction.HK, Role.PARTNER)) as channel,
    ):
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stopper = threading.Thread(target=node.stop, kwargs={"grace": 2.0})
        stopper.start()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        stopper.join()


def test_peer_channel_trusts_only_the_peer_jurisdictions_roots(world: World, hk_node: Node) -> None:
    """A node dialling its CN peer trusts only CN's roots: an HK server cannot answer, even
    under its own correct name."""
    cn_node = world.cred(Jurisdiction.CN, Role.NODE)
    only_cn = ClientIdentity.from_files(
        cn_node.certificate, cn_node.key, world.bundle, server_jurisdiction=Jurisdiction.CN
    )
    with (
        secure_channel(hk_node.address, only_cn, hk_node.config.identity) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        _health(channel)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    all_roots = ClientIdentity.from_files(cn_node.certificate, cn_node.key, world.bundle)
    with secure_channel(hk_node.address, all_roots, hk_node.config.identity) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
