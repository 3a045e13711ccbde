"""Rotation without downtime, and expiry warnings, on a running node over real TLS.

The server certificate is renewed on disk with the ``pki`` library (new key, new serial) while a
client holds an open server stream (``Health.Watch``): the stream keeps delivering, calls on the
old connection keep working, and a new connection is served the new certificate, as seen by a
plain TLS client (Python's ``ssl``) that reads the peer certificate of the handshake.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.pki import Jurisdiction, Role, renew_certificate
from gateway.pki.pem import certificate_pem, write_private_key, write_public_file
from gateway.server import Node
from gateway.server.node import CERTIFICATE_WARNINGS_KEY
from tests.support import World, channel_to, running_node

HK = Jurisdiction.HK
SERVICE = "customs.gateway.v1.PartnerGateway"


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _served_certificate(world: World, node: Node, tmp: Path) -> x509.Certificate:
    """The certificate a fresh TLS handshake to ``node`` presents (client authenticated)."""
    partner = world.cred(HK, Role.PARTNER)
    roots = tmp / "roots.pem"
    roots.write_bytes(world.client_identity(partner).root_certificates)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(roots))
    context.load_cert_chain(str(partner.certificate), str(partner.key))
    context.set_alpn_protocols(["h2"])
    host, port = node.address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=node.config.identity.dns_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _node_config(world: World, tmp: Path, cert: Path, key: Path, extra: str = "") -> Path:
    config = world.write_config(HK, tmp / "hk-data", server="tls_reload_seconds = 0.1\n" + extra)
    node = world.cred(HK, Role.NODE)
    text = config.read_text()
    text = text.replace(f'certificate = "{node.certificate}"', f'certificate = "{cert}"')
    text = text.replace(f'key = "{node.key}"', f'key = "{key}"')
    config.write_text(text)
    return config


def test_rotating_the_server_certificate_keeps_open_streams_and_serves_the_new_one(
    world: World, tmp_path: Path
) -> None:
    ca = world.cas[HK]
    original = world.cred(HK, Role.NODE)
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    write_public_file(cert, original.certificate.read_bytes())
    write_private_key(key, original.issued.private_key)  # type: ignore[arg-type]
    config = _node_config(world, tmp_path, cert, key)
    with (
        running_node(config) as node,
        channel_to(world, node, world.cred(HK, Role.PARTNER)) as old_channel,
    ):
        before = _served_certificate(world, node, tmp_path)
        assert before.serial_number == original.issued.certificate.serial_number
        health = health_pb2_grpc.HealthStub(old_channel)
        stream = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING

        # the operator renews the certificate with a new key: key first, then certificate,
        # each written beside the target and renamed over it (gateway.pki.pem)
        renewed = renew_certificate(ca, original.issued.certificate)
        generation = node.tls.generation
        write_private_key(key, renewed.private_key, overwrite=True)  # type: ignore[arg-type]
        write_public_file(cert, certificate_pem(renewed.certificate))
        _wait_for(lambda: node.tls.generation > generation)

        # the open stream still delivers, and the old connection still takes calls
        node.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
        response = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        # a new connection is served the renewed certificate
        after = _served_certificate(world, node, tmp_path)
        assert after.serial_number == renewed.certificate.serial_number
        assert after.public_key() != before.public_key()
        with channel_to(world, node, world.cred(HK, Role.AUDITOR)) as new_channel:
            check = health_pb2_grpc.HealthStub(new_channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert check.status == health_pb2.HealthCheckResponse.SERVING
        stream.cancel()


def test_a_certificate_renewed_without_its_new_key_is_not_served(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Mid-rotation (certificate replaced, key not yet), the node keeps the old pair."""
    original = world.cred(HK, Role.NODE)
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    write_public_file(cert, original.certificate.read_bytes())
    write_private_key(key, original.issued.private_key)  # type: ignore[arg-type]
    config = _node_config(world, tmp_path, cert, key)
    caplog.set_level(logging.WARNING, logger="gateway.transport")
    with running_node(config) as node:
        renewed = renew_certificate(world.cas[HK], original.issued.certificate)
        write_public_file(cert, certificate_pem(renewed.certificate))
        _wait_for(lambda: any("not the key of" in r.getMessage() for r in caplog.records))
        served = _served_certificate(world, node, tmp_path)
    assert served.serial_number == original.issued.certificate.serial_number
    assert node.tls.generation == 0


def test_expiry_warnings_in_log_and_health(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    short = world.issue(HK, Role.NODE, "gateway", lifetime=dt.timedelta(days=5), tag="-short")
    config = _node_config(
        world, tmp_path, short.certificate, short.key, extra="expiry_warning_days = 14\n"
    )
    caplog.set_level(logging.WARNING, logger="gateway.server")
    with (
        running_node(config) as node,
        channel_to(world, node, world.cred(HK, Role.AUDITOR)) as channel,
    ):
        _, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        trailing = dict(call.trailing_metadata())
    warning = trailing[CERTIFICATE_WARNINGS_KEY]
    serial = f"{short.issued.certificate.serial_number:x}"
    assert warning.startswith("TLS certificate (CN=gateway,OU=node,O=customs-exchange,C=HK")
    assert f"serial {serial}) expires at" in warning
    assert "in 5.0 days" in warning
    logged = [r.getMessage() for r in caplog.records if "certificate warning" in r.getMessage()]
    assert logged == [f"certificate warning: {warning}"]


def test_no_expiry_warning_when_all_is_well(world: World, hk_node: Node) -> None:
    with channel_to(world, hk_node, world.cred(HK, Role.AUDITOR)) as channel:
        _, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert dict(call.trailing_metadata())[CERTIFICATE_WARNINGS_KEY] == "none"
    assert hk_node.certificate_warnings() == []
