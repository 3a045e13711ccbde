"""Prometheus metrics over HTTPS with client certificates: who may read them, and that they
follow the node (ADR 0008)."""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from customs.gateway.v1 import audit_pb2, audit_pb2_grpc, partner_pb2, partner_pb2_grpc
from gateway.pki import Jurisdiction, Role
from gateway.pki.bundle import TrustBundle
from gateway.server import Node, load_config
from gateway.server.config import ConfigError
from gateway.server.metrics import NodeMetrics, NodeState
from tests.exchange.conftest import entry_request, notice_request
from tests.support import Credential, World, channel_to, running_node

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


@pytest.fixture
def node(world: World, tmp_path: Path) -> Iterator[Node]:
    """An HK node with metrics on; its peers are never up, so deliveries queue and fail."""
    config = world.write_config(
        HK, tmp_path / "hk-data", peers={CN: tmp_path / "cn-absent", MO: tmp_path / "mo-absent"}
    )
    with config.open("a") as f:
        f.write('\n[metrics]\nlisten = "127.0.0.1:0"\n')
    with running_node(config) as running:
        yield running


def _monitor(world: World, j: Jurisdiction) -> Credential:
    key = (j, Role.MONITOR, "prometheus")
    return world.creds.get(key) or world.issue(j, Role.MONITOR, "prometheus")


def _context(world: World, cred: Credential | None) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cadata=TrustBundle.from_json(world.bundle.read_bytes()).pem().decode()
    )
    context.check_hostname = False  # dialled by address; the chain is still verified
    if cred is not None:
        context.load_cert_chain(cred.certificate, cred.key)
    return context


def _get(
    node: Node, context: ssl.SSLContext, path: str = "/metrics", timeout: float = 30
) -> tuple[int, str]:
    assert node.metrics_server is not None
    conn = http.client.HTTPSConnection(
        "127.0.0.1", node.metrics_server.port, context=context, timeout=timeout
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` of a scrape (labels in any order); fails if absent."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels} in the scrape")


def test_a_monitor_of_the_jurisdiction_reads_metrics_that_follow_the_node(
    world: World, node: Node
) -> None:
    context = _context(world, _monitor(world, HK))
    status, before = _get(node, context)
    assert status == 200
    assert _value(before, "gateway_ledger_entries") == node.ledger.size()
    signing_expiry = world.signing(HK).issued.certificate.not_valid_after_utc.timestamp()
    assert _value(
        before, "gateway_certificate_not_after_timestamp_seconds", certificate="signing"
    ) == pytest.approx(signing_expiry)

    with channel_to(world, node, world.cred(HK, Role.PARTNER)) as channel:
        partner_pb2_grpc.PartnerGatewayStub(channel).SubmitSeizureNotice(
            notice_request(HK, [CN, MO]), timeout=10
        )
    with channel_to(world, node, world.cred(HK, Role.AUDITOR)) as channel:  # not a partner
        with pytest.raises(grpc.RpcError):
            partner_pb2_grpc.PartnerGatewayStub(channel).SubmitSeizureNotice(
                notice_request(HK, [CN]), timeout=10
            )
        audit_pb2_grpc.LedgerAuditStub(channel).GetCheckpoint(
            audit_pb2.GetCheckpointRequest(), timeout=10
        )

    _, after = _get(node, context)
    submit = "/customs.gateway.v1.PartnerGateway/SubmitSeizureNotice"
    assert _value(after, "gateway_rpc_requests_total", method=submit, code="OK") == 1
    assert _value(after, "gateway_rpc_requests_total", method=submit, code="PERMISSION_DENIED") == 1
    assert _value(after, "gateway_rpc_duration_seconds_count", method=submit) == 2
    assert _value(after, "gateway_ledger_entries") == node.ledger.size() >= 2
    queued = sum(
        _value(after, "gateway_outbox_pending", peer=peer, state=state)
        for peer in ("CN", "MO")
        for state in ("queued", "failing")
        if f'peer="{peer}",state="{state}"' in after
    )
    assert queued == 2  # one row per recipient, neither peer reachable


def test_bulk_calls_count_their_entries_by_outcome(world: World, node: Node) -> None:
    requests = [entry_request([CN]) for _ in range(5)]
    requests[2].entry.hs_codes[:] = ["81"]  # invalid: refused
    with channel_to(world, node, world.cred(HK, Role.PARTNER)) as channel:
        stub = partner_pb2_grpc.PartnerGatewayStub(channel)
        bulk = partner_pb2.PublishWatchlistEntriesRequest(entries=requests)
        stub.PublishWatchlistEntries(bulk, timeout=10)
        stub.PublishWatchlistEntries(bulk, timeout=10)  # a retry: duplicates
    _, text = _get(node, _context(world, _monitor(world, HK)))
    method = "PublishWatchlistEntries"
    assert _value(text, "gateway_bulk_entries_total", method=method, outcome="accepted") == 4
    assert _value(text, "gateway_bulk_entries_total", method=method, outcome="duplicate") == 4
    assert _value(text, "gateway_bulk_entries_total", method=method, outcome="refused") == 2


@pytest.mark.parametrize(
    ("who", "role"),
    [
        pytest.param(HK, Role.PARTNER, id="partner-of-own-jurisdiction"),
        pytest.param(HK, Role.AUDITOR, id="auditor-of-own-jurisdiction"),
        pytest.param(HK, Role.NODE, id="node-of-own-jurisdiction"),
        pytest.param(CN, Role.MONITOR, id="monitor-of-another-jurisdiction"),
    ],
)
def test_only_monitors_of_the_jurisdiction_are_admitted(
    world: World, node: Node, who: Jurisdiction, role: Role
) -> None:
    cred = _monitor(world, who) if role is Role.MONITOR else world.cred(who, role)
    status, body = _get(node, _context(world, cred))
    assert status == 403
    assert body.startswith("rule metrics-own-monitors: ")
    assert cred.identity.uri in body


def test_other_paths_are_not_served(world: World, node: Node) -> None:
    status, body = _get(node, _context(world, _monitor(world, HK)), "/")
    assert (status, body) == (404, "only /metrics is served here\n")


def test_without_a_client_certificate_the_handshake_fails(world: World, node: Node) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(node, _context(world, None))


def test_plaintext_http_gets_no_answer(node: Node) -> None:
    assert node.metrics_server is not None
    with socket.create_connection(("127.0.0.1", node.metrics_server.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = sock.recv(4096)  # a TLS alert at most, then the connection closes
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/")


def test_metrics_are_off_unless_configured(world: World, tmp_path: Path) -> None:
    config = load_config(world.write_config(HK, tmp_path / "hk-data"))
    assert config.metrics_listen is None
    assert Node(config).metrics_server is None


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ('listen = "nowhere"', r"key 'metrics\.listen': 'nowhere' is not HOST:PORT"),
        ('listen = "127.0.0.1:0"\nport = 9464', r"key 'metrics\.port': unknown key"),
    ],
    ids=["bad-address", "unknown-key"],
)
def test_metrics_config_mistakes_name_the_key(
    world: World, tmp_path: Path, table: str, match: str
) -> None:
    config = world.write_config(HK, tmp_path / "hk-data")
    with config.open("a") as f:
        f.write(f"\n[metrics]\n{table}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(config)


def test_a_client_that_never_shakes_hands_does_not_block_scrapes(world: World, node: Node) -> None:
    assert node.metrics_server is not None
    with socket.create_connection(("127.0.0.1", node.metrics_server.port)):  # sends nothing
        # A stalled handshake holds its own connection for 5 s; the scrape must not wait it out.
        status, _ = _get(node, _context(world, _monitor(world, HK)), timeout=3)
    assert status == 200


def test_a_refused_client_gets_one_answer_and_the_connection_closes(
    world: World, node: Node
) -> None:
    assert node.metrics_server is not None
    conn = http.client.HTTPSConnection(
        "127.0.0.1", node.metrics_server.port, context=_context(world, world.cred(CN, Role.PARTNER))
    )
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert (response.status, response.getheader("Connection")) == (403, "close")
        assert response.will_close  # it cannot hold the connection with more requests
        response.read()
    finally:
        conn.close()


def test_the_node_stops_while_metrics_clients_hold_connections(
    world: World, tmp_path: Path
) -> None:
    config = world.write_config(HK, tmp_path / "hk-data")
    with config.open("a") as f:
        f.write('\n[metrics]\nlisten = "127.0.0.1:0"\n')
    node = Node(load_config(config))
    node.start()
    assert node.metrics_server is not None
    with socket.create_connection(("127.0.0.1", node.metrics_server.port)):  # stalls
        stopper = threading.Thread(target=node.stop, kwargs={"grace": 0.1})
        stopper.start()
        stopper.join(30)
        assert not stopper.is_alive(), "node.stop() waited for a stalled metrics client"


def test_a_connection_is_closed_at_its_deadline_however_slowly_it_talks(
    world: World, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.server.metrics as metrics

    monkeypatch.setattr(metrics, "_DEADLINE", 1.0)  # 15 s in service
    assert node.metrics_server is not None
    context = _context(world, _monitor(world, HK))
    raw = socket.create_connection(("127.0.0.1", node.metrics_server.port), timeout=10)
    with context.wrap_socket(raw) as sock:
        sock.sendall(b"GET /metr")  # and then nothing: each read waits up to 5 s
        sock.settimeout(4)
        assert sock.recv(1024) == b""  # closed by the deadline, before the 5 s read timeout


def test_observations_are_counted_per_method_and_code_with_cached_children() -> None:
    """The labelled children are looked up once (ADR 0055); every observation still counts,
    under its own method and code, from several threads at once."""
    metrics = NodeMetrics(NodeState(lambda: 0, lambda: None, dict, dict, dict))
    method = "/customs.gateway.v1.PartnerGateway/SubmitSeizureNotice"

    def observe() -> None:
        for _ in range(500):
            metrics.observe(method, "OK", 0.002)
        metrics.observe(method, "INVALID_ARGUMENT", 0.001)

    threads = [threading.Thread(target=observe) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    metrics.observe("/grpc.health.v1.Health/Watch", "CANCELLED", None)
    text = metrics.render().decode()
    assert f'gateway_rpc_requests_total{{code="OK",method="{method}"}} 4000.0' in text
    assert f'gateway_rpc_requests_total{{code="INVALID_ARGUMENT",method="{method}"}} 8.0' in text
    assert f'gateway_rpc_duration_seconds_count{{method="{method}"}} 4008.0' in text
    assert 'code="CANCELLED",method="/grpc.health.v1.Health/Watch"} 1.0' in text
    assert 'gateway_rpc_duration_seconds_count{method="/grpc.health.v1.Health/Watch"}' not in text
