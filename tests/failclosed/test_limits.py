"""Resource limits on a real CN node over real mutual TLS (ADR 0023).

The node under attack: 64 Health/Watch streams from one foreign certificate and 64
StreamInbound streams from one local partner. What is admitted stays within the limits, what is
not gets RESOURCE_EXHAUSTED naming the limit, and meanwhile another partner's submit, a peer's
delivery and a health check still succeed (each with a one-second deadline). Then: the stream
lifetime (the stream ends UNAVAILABLE and the client resumes from its cursor), the message size,
a certificate revoked while its streams are open, and limits a node could not enforce.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from grpc_health.v1 import health_pb2, health_pb2_grpc

from customs.gateway.v1 import partner_pb2, partner_pb2_grpc, peer_pb2, peer_pb2_grpc
from gateway.domain.fixtures import seed_notice_request
from gateway.errors import ResourceExhaustedError
from gateway.pki import RevocationReason, Role, build_crl
from gateway.pki.pem import write_public_file
from gateway.pki.revocation import RevokedEntry
from gateway.server import ConfigError, Node, load_config
from gateway.server.limits import Budget, Limiter, Limits
from tests.failclosed.runtime_support import CN, HK, METHODS, call_raw, ledger_state, sealed_notice
from tests.support import World, channel_to, running_node, wait_for

WATCH = "/grpc.health.v1.Health/Watch"
INBOUND = "/customs.gateway.v1.PartnerGateway/StreamInbound"


@dataclass
class Cn:
    world: World
    node: Node
    crl: Path


def _publish_crl(world: World, path: Path, serials: list[int], number: int) -> None:
    now = dt.datetime.now(dt.UTC)
    crl = build_crl(
        world.cas[CN],
        [RevokedEntry(s, now, RevocationReason.KEY_COMPROMISE) for s in serials],
        number=number,
    )
    write_public_file(path, crl.public_bytes(Encoding.PEM))


@pytest.fixture
def cn(world: World, tmp_path: Path) -> Iterator[Cn]:
    crl = tmp_path / "cn.crl"
    _publish_crl(world, crl, [], number=1)
    config = world.write_config(
        CN,
        tmp_path / "cn-data",
        crls=[crl],
        server="tls_reload_seconds = 0.1\n\n[limits]\nstream_lifetime_seconds = 60.0",
    )
    with running_node(config) as node:
        yield Cn(world, node, crl)


class _Streams:
    """Many server streams opened at once from one certificate, each read on its own thread."""

    def __init__(self, channel: grpc.Channel, method: str, request: bytes, count: int) -> None:
        self.first = threading.Semaphore(0)  # released when a stream answers or ends
        self.outcomes: list[str] = []
        self.refusals: list[str] = []
        self._calls = [channel.unary_stream(method)(request, timeout=30) for _ in range(count)]
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._read, args=(c,)) for c in self._calls]
        for t in self._threads:
            t.start()

    def _read(self, call: Any) -> None:
        try:
            for _ in call:
                with self._lock:
                    self.outcomes.append("message")
                self.first.release()
                break
            for _ in call:  # keep the stream open until cancelled
                pass
        except grpc.RpcError as exc:
            with self._lock:
                if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self.refusals.append(exc.details() or "")
                elif exc.code() is not grpc.StatusCode.CANCELLED:
                    self.outcomes.append(f"{exc.code().name}: {exc.details()}")
            self.first.release()

    def close(self) -> None:
        for call in self._calls:
            call.cancel()
        for t in self._threads:
            t.join(timeout=10)


def test_64_watch_and_64_inbound_streams_leave_partners_peers_and_health_served(
    world: World, cn: Cn
) -> None:
    node, limits = cn.node, cn.node.limits
    other_partner = world.issue(CN, Role.PARTNER, "port-system")
    foreign = channel_to(world, node, world.cred(HK, Role.PARTNER))
    partner = channel_to(world, node, world.cred(CN, Role.PARTNER))
    initial = ledger_state(node)
    watch_request = health_pb2.HealthCheckRequest().SerializeToString()
    inbound_request = partner_pb2.StreamInboundRequest().SerializeToString()
    watches = _Streams(foreign, WATCH, watch_request, 64)
    inbound = _Streams(partner, INBOUND, inbound_request, 64)
    try:
        # Every Watch stream answers (first status) or is refused; admitted inbound streams
        # wait for messages, so for them the proof is the limiter's count.
        for _ in range(64):
            assert watches.first.acquire(timeout=20), "a Watch stream neither answered nor ended"
        per_caller = min(limits.streams_per_caller, limits.share(Budget.OTHER_STREAMS))
        assert per_caller == 1  # half of the node's two Watch streams
        assert watches.outcomes == ["message"] * per_caller
        assert len(watches.refusals) == 64 - per_caller
        assert "the most one caller may hold (other_streams / 2)" in watches.refusals[0]
        wait_for(
            lambda: len(inbound.refusals) == 64 - limits.streams_per_caller,
            what="inbound streams beyond the caller's limit refused",
        )
        assert node.limiter.in_use()["inbound_streams"] == limits.streams_per_caller
        assert node.limiter.in_use()["other_streams"] == per_caller
        before = ledger_state(node)
        assert before == initial  # 124 refused streams wrote nothing

        # Meanwhile: another partner's submit, a peer's delivery, a foreign health check.
        with channel_to(world, node, other_partner) as channel:
            request = seed_notice_request(dt.datetime.now(dt.UTC))
            request.addressing.message_id = str(uuid.uuid4())
            request.notice.notice_id = str(uuid.uuid4())
            submitted = partner_pb2_grpc.PartnerGatewayStub(channel).SubmitSeizureNotice(
                request, timeout=1.0
            )
        assert submitted.ledger_index >= before.size
        with channel_to(world, node, world.cred(HK, Role.NODE)) as channel:
            delivered = peer_pb2_grpc.PeerExchangeStub(channel).DeliverBatch(
                peer_pb2.DeliverBatchRequest(envelopes=[sealed_notice(world, HK, CN)]),
                timeout=1.0,
            )
        assert delivered.results[0].HasField("receipt"), delivered.results[0].error
        serving = health_pb2_grpc.HealthStub(foreign).Check(
            health_pb2.HealthCheckRequest(), timeout=1.0
        )
        assert serving.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        watches.close()
        inbound.close()
        foreign.close()
        partner.close()
    wait_for(
        lambda: not any(node.limiter.in_use().values()),
        what="every slot given back after the streams were cancelled",
    )


def test_the_streams_of_many_certificates_stop_at_the_nodes_budget(world: World, cn: Cn) -> None:
    """Foreign certificates each within their own limit still cannot take more than
    ``other_streams``: the next is refused naming the budget."""
    node, limits = cn.node, cn.node.limits
    request = health_pb2.HealthCheckRequest().SerializeToString()
    opened: list[_Streams] = []
    channels = []
    try:
        for i in range(limits.other_streams + 1):
            cred = world.issue(HK, Role.PARTNER, f"watcher-{i}")
            channels.append(channel_to(world, node, cred))
            streams = _Streams(channels[-1], WATCH, request, 1)
            opened.append(streams)
            assert streams.first.acquire(timeout=10)
        outcomes = [s.outcomes + s.refusals for s in opened]
        assert outcomes[: limits.other_streams] == [["message"]] * limits.other_streams
        assert "other_streams" in outcomes[-1][0], outcomes[-1]
    finally:
        for s in opened:
            s.close()
        for c in channels:
            c.close()


def test_a_stream_ends_at_its_lifetime_and_resumes_from_its_cursor(
    world: World, tmp_path: Path
) -> None:
    config = world.write_config(
        CN, tmp_path / "cn-data", server="\n[limits]\nstream_lifetime_seconds = 1.0"
    )
    with (
        running_node(config) as node,
        channel_to(world, node, world.cred(HK, Role.NODE)) as peer,
        channel_to(world, node, world.cred(CN, Role.PARTNER)) as partner,
    ):
        deliver = peer_pb2_grpc.PeerExchangeStub(peer).DeliverBatch
        first, second = sealed_notice(world, HK, CN), sealed_notice(world, HK, CN)
        deliver(peer_pb2.DeliverBatchRequest(envelopes=[first]), timeout=10)
        stub = partner_pb2_grpc.PartnerGatewayStub(partner)
        call = stub.StreamInbound(partner_pb2.StreamInboundRequest(), timeout=30)
        got = next(call)
        with pytest.raises(grpc.RpcError) as ended:
            next(call)
        assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "lifetime of 1 s" in (ended.value.details() or "")
        assert "cursor" in (ended.value.details() or "")
        deliver(peer_pb2.DeliverBatchRequest(envelopes=[second]), timeout=10)
        resumed = stub.StreamInbound(
            partner_pb2.StreamInboundRequest(cursor=got.cursor), timeout=30
        )
        again = next(resumed)
        resumed.cancel()
    assert got.envelope.header == first.header
    assert again.envelope.header == second.header


def _ended(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "stream-ended"]


def test_a_revoked_partners_open_streams_end_unauthenticated(
    world: World, cn: Cn, caplog: pytest.LogCaptureFixture
) -> None:
    """Idle StreamInbound and Health/Watch streams of a certificate revoked while they are open
    end with UNAUTHENTICATED, without another message."""
    cred = world.issue(CN, Role.PARTNER, "to-revoke-streams")
    node = cn.node
    with channel_to(world, node, cred) as channel:
        inbound = partner_pb2_grpc.PartnerGatewayStub(channel).StreamInbound(
            partner_pb2.StreamInboundRequest(), timeout=30
        )
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=30
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        wait_for(
            lambda: node.limiter.in_use()["inbound_streams"] == 1, what="the inbound stream open"
        )
        serial = cred.issued.certificate.serial_number
        _publish_crl(world, cn.crl, [serial], number=2)
        wait_for(
            lambda: any(serial in v.revoked_serials() for v in node.authenticator.crls),
            what="the CRL loaded",
        )
        with caplog.at_level(logging.WARNING, logger="gateway.server"):
            for call in (inbound, watch):
                with pytest.raises(grpc.RpcError) as ended:
                    next(call)
                assert ended.value.code() is grpc.StatusCode.UNAUTHENTICATED
                assert "stream ended" in (ended.value.details() or "")
                assert "revoked" in (ended.value.details() or "")
            wait_for(lambda: len(_ended(caplog)) == 2, what="both stream ends logged")
        assert all(cred.identity.uri in r.getMessage() for r in _ended(caplog))


def test_requests_larger_than_the_limit_are_resource_exhausted(
    world: World, tmp_path: Path
) -> None:
    config = world.write_config(
        CN, tmp_path / "cn-data", server="\n[limits]\nmax_request_bytes = 65536"
    )
    method = next(m for m in METHODS if m.name == "SubmitSeizureNotice")
    with (
        running_node(config) as node,
        channel_to(world, node, world.cred(CN, Role.PARTNER)) as channel,
    ):
        before = ledger_state(node)
        code, details, _ = call_raw(channel, method, b"\x0a" + b"\x80\x80\x04" + b"x" * 65536)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
        assert "65536" in details or "larger than max" in details
        assert ledger_state(node) == before


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("calls = 20", r"key 'limits.calls': .* = \d+ threads, more than server.max_workers 16"),
        ("inbound_streams = 0", r"key 'limits.inbound_streams': must be at least 1, got 0"),
        ("stream_lifetime_seconds = -1", r"key 'limits.stream_lifetime_seconds': must be positive"),
        ("streams = 3", r"key 'limits.streams': unknown key"),
        ('backlog = "many"', r"key 'limits.backlog': must be an integer, not a string"),
        ("bulk_entries = 0", r"key 'limits.bulk_entries': must be at least 1, got 0"),
        (
            "bulk_bytes = 5000000",
            r"key 'limits.bulk_bytes': bulk_bytes 5000000 is more than max_request_bytes 4194304",
        ),
    ],
    ids=[
        "over-the-pool",
        "zero-budget",
        "negative-lifetime",
        "unknown-key",
        "wrong-type",
        "no-bulk",
        "bulk-above-request",
    ],
)
def test_limits_a_node_could_not_enforce_are_refused(
    world: World, tmp_path: Path, lines: str, message: str
) -> None:
    config = world.write_config(CN, tmp_path / "cn-data", server=f"\n[limits]\n{lines}")
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_default_limits_fit_the_pool(world: World, tmp_path: Path) -> None:
    limits = load_config(world.write_config(CN, tmp_path / "cn-data")).resolved_limits
    assert limits.threads_needed <= limits.workers == 16
    assert (limits.reserved_calls, limits.inbound_streams, limits.other_streams) == (2, 4, 2)
    assert (limits.calls, limits.calls_per_caller, limits.streams_per_caller) == (8, 4, 2)


# -- the bookkeeping alone (pure): which budget each call takes, and when it is refused --------

CHECK = "/grpc.health.v1.Health/Check"
DELIVER = "/customs.gateway.v1.PeerExchange/DeliverBatch"
SUBMIT = "/customs.gateway.v1.PartnerGateway/SubmitSeizureNotice"


def _limiter(**given: int) -> Limiter:
    limits = Limits.for_workers(16, **given)
    assert not limits.problems()
    return Limiter(limits)


def test_a_caller_holds_at_most_its_share_of_calls() -> None:
    limiter = _limiter(calls=8, calls_per_caller=3)
    held = [limiter.admit(SUBMIT, "spiffe://cn/partner/a", False) for _ in range(3)]
    with pytest.raises(ResourceExhaustedError, match=r"calls_per_caller 3"):
        limiter.admit(SUBMIT, "spiffe://cn/partner/a", False)
    limiter.admit(SUBMIT, "spiffe://cn/partner/b", False)  # another caller is not affected
    held[0]()
    held[0]()  # giving a slot back twice gives it back once
    limiter.admit(SUBMIT, "spiffe://cn/partner/a", False)
    assert limiter.in_use()["calls"] == 4


def test_the_reserve_is_for_health_and_peers_only() -> None:
    limiter = _limiter(calls=2, calls_per_caller=2, reserved_calls=2)
    limiter.admit(SUBMIT, "a", False)
    limiter.admit(SUBMIT, "b", False)
    with pytest.raises(ResourceExhaustedError, match=r"its limit \(calls 2\)"):
        limiter.admit(SUBMIT, "c", False)  # partners never take a reserved slot
    limiter.admit(CHECK, "probe", False)
    limiter.admit(DELIVER, "hk-node", False)
    assert limiter.in_use() == {
        "reserved_calls": 2,
        "calls": 2,
        "inbound_streams": 0,
        "other_streams": 0,
    }


def test_reserved_methods_run_on_the_reserve_pool(
    world: World, cn: Cn, caplog: pytest.LogCaptureFixture
) -> None:
    """grpcio hands PeerExchange and Health/Check calls to the reserve's own threads (the
    refusal's log record shows where the access check ran); partner calls run on the main pool."""
    method = next(m for m in METHODS if m.name == "DeliverBatch")
    submit = next(m for m in METHODS if m.name == "SubmitSeizureNotice")
    with (
        caplog.at_level(logging.WARNING, logger="gateway.server"),
        channel_to(world, cn.node, world.cred(CN, Role.PARTNER)) as channel,
    ):
        code, _, _ = call_raw(channel, method, b"")
        assert code is grpc.StatusCode.PERMISSION_DENIED
        code, _, _ = call_raw(channel, submit, b"\xff")
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    threads = {
        next(w for w in r.getMessage().split() if w.startswith("/")): r.threadName
        for r in caplog.records
    }
    assert threads[method.path].startswith("cn-reserve"), threads
    assert threads[submit.path].startswith("cn-rpc"), threads


def test_one_caller_holds_at_most_half_of_a_stream_budget() -> None:
    limiter = _limiter(inbound_streams=4, other_streams=4, streams_per_caller=4)
    limiter.admit(WATCH, "x", True)
    limiter.admit(WATCH, "x", True)
    with pytest.raises(ResourceExhaustedError, match=r"x already has 2 of the node's 4 other"):
        limiter.admit(WATCH, "x", True)
    limiter.admit(INBOUND, "x", True)  # the other budget has its own half
    limiter.admit(WATCH, "y", True)


def test_watch_streams_never_take_the_partners_inbound_streams() -> None:
    limiter = _limiter(inbound_streams=4, other_streams=2, streams_per_caller=2)
    limiter.admit(WATCH, "x", True)
    limiter.admit(WATCH, "y", True)
    with pytest.raises(ResourceExhaustedError, match=r"other_streams 2"):
        limiter.admit(WATCH, "z", True)
    limiter.admit(INBOUND, "partner", True)  # still room for partners
    assert limiter.in_use()["inbound_streams"] == 1
