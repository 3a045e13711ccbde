"""Idle connections without a certificate cannot lock monitors out of the metrics port
(ADR 0008, 0025): handshakes have a budget of their own, apart from the 16 request slots, and
when it is full the newest connection evicts the oldest."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.pki import Jurisdiction, Role
from gateway.pki.bundle import TrustBundle
from gateway.server import Node
from tests.support import World, running_node, wait_for

CN = Jurisdiction.CN


@pytest.fixture
def node(world: World, tmp_path: Path) -> Iterator[Node]:
    config = world.write_config(CN, tmp_path / "cn-data")
    with config.open("a") as f:
        f.write('\n[metrics]\nlisten = "127.0.0.1:0"\n')
    with running_node(config) as running:
        yield running


def _scrape(world: World, node: Node) -> int:
    monitor = world.creds.get((CN, Role.MONITOR, "prometheus")) or world.issue(
        CN, Role.MONITOR, "prometheus"
    )
    context = ssl.create_default_context(
        cadata=TrustBundle.from_json(world.bundle.read_bytes()).pem().decode()
    )
    context.check_hostname = False
    context.load_cert_chain(monitor.certificate, monitor.key)
    assert node.metrics_server is not None
    conn = http.client.HTTPSConnection(
        "127.0.0.1", node.metrics_server.port, context=context, timeout=2
    )
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("idle", [16, 100])
def test_idle_connections_without_a_certificate_do_not_lock_monitors_out(
    world: World, node: Node, idle: int
) -> None:
    server = node.metrics_server
    assert server is not None
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(idle)]
    try:
        # the server has taken every one into its handshake budget (evicting the oldest when
        # more than 64 came), and they are still open
        wait_for(lambda: server.handshakes[0] >= idle, timeout=10, what="idle connections taken")
        _, pending, evicted = server.handshakes
        assert pending > 0
        if idle > 64:
            assert evicted > 0
        assert _scrape(world, node) == 200  # within the 2 s timeout, with the sockets open
    finally:
        for sock in sockets:
            sock.close()
