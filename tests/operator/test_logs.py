"""Logs operators can live with: gRPC C-core lines become JSON lines, a client closing a stream
is no internal error, repeated delivery failures are logged per change of state."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from gateway.pki import Jurisdiction, Role
from gateway.server import Node, load_config, logs
from gateway.server.interceptors import ErrorInterceptor
from gateway.transport import ServerTls, secure_channel
from tests.exchange.conftest import Trio, notice_request
from tests.support import World, channel_to, wait_for

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


def test_grpc_core_lines_reach_the_log_as_json(world: World, tmp_path: Path) -> None:
    config = world.write_config(HK, tmp_path / "data", peers={})
    env = {**os.environ, "GRPC_VERBOSITY": "INFO"}  # C-core writes lines of its own to fd 2
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    seen_core = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if '"event": "grpc-core"' in line and "ssl_transport_security" in line:
                seen_core.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("listening on "), first
        port = int(first.rsplit(":", 1)[1])
        # plain bytes at a TLS port: C-core logs the failed handshake from its own thread
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(100)
        assert seen_core.wait(20), "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.join(10)
    assert proc.returncode == 0
    docs = [json.loads(line) for line in lines]  # every line of stderr is a JSON object
    core = [d for d in docs if d.get("event") == "grpc-core"]
    assert core
    assert all(d["logger"] == "gateway.native" for d in core)
    assert all(d["node"] == "spiffe://hk.customs-exchange/node/gateway" for d in core)
    assert any(d["source"].startswith("ssl_transport_security.cc:") for d in core)


def test_a_client_closing_a_reflection_stream_is_no_internal_error(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = world.write_config(
        HK, tmp_path / "data", peers={}, server='[metrics]\nlisten = "127.0.0.1:0"'
    )
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    node = Node(load_config(config))
    node.start()
    method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="gateway"),
            channel_to(world, node, world.cred(HK, Role.PARTNER)) as channel,
        ):
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            more = threading.Event()

            def requests():  # type: ignore[no-untyped-def]
                yield reflection_pb2.ServerReflectionRequest(list_services="")
                more.wait(10)  # keep the stream open until the client cancels

            call = stub.ServerReflectionInfo(requests(), timeout=10)
            assert next(call).list_services_response.service
            call.cancel()
            more.set()
            with pytest.raises(grpc.RpcError):
                next(call)

            def counted() -> bool:
                text = node.metrics.render().decode()
                return f'method="{method}"' in text and 'code="CANCELLED"' in text

            wait_for(counted, what="the reflection call to end on the server")
        assert "internal error" not in caplog.text
        assert 'code="INTERNAL"' not in node.metrics.render().decode()
    finally:
        node.stop(grace=0.5)


def test_repeated_failures_to_one_peer_are_logged_once_then_summarised(
    trio: Trio, caplog: pytest.LogCaptureFixture
) -> None:
    trio.stop(MO)
    deliverer = trio.nodes[CN].deliverers[MO]
    deliverer._summary_interval = 3600.0
    witness = trio.nodes[CN].witness_client
    with caplog.at_level(logging.INFO, logger="gateway.exchange"):
        trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [MO]), timeout=10)
        wait_for(lambda: deliverer.failures >= 4, what="four failed attempts to MO")
        # the witness client, asking MO to cosign every 0.3 s, has failed three times more
        wait_for(
            lambda: witness._unreachable.get(MO, ("", 0.0, 0))[2] >= 3,
            what="repeated cosigning attempts at MO",
        )
        unreachable = [
            r for r in caplog.records if getattr(r, "event", "") == "witness_unreachable"
        ]
        assert len(unreachable) == 1, [r.getMessage() for r in unreachable]
        assert "witness MO unreachable: UNAVAILABLE" in unreachable[0].getMessage()
        failed = [r for r in caplog.records if getattr(r, "event", "") == "delivery_failed"]
        assert len(failed) == 1, [r.getMessage() for r in failed]
        assert "to MO failed (attempt 1): UNAVAILABLE" in failed[0].getMessage()
        assert "repeats summarised every 3600 s" in failed[0].getMessage()

        deliverer._summary_interval = 0.001
        wait_for(
            lambda: any(
                getattr(r, "event", "") == "delivery_failing_summary" for r in caplog.records
            ),
            what="a summary line",
        )
        summary = next(
            r for r in caplog.records if getattr(r, "event", "") == "delivery_failing_summary"
        )
        assert "delivery to MO still failing: " in summary.getMessage()
        assert "1 message(s) waiting" in summary.getMessage()

        deliverer._summary_interval = 3600.0
        trio.start(MO)
        wait_for(
            lambda: any(getattr(r, "event", "") == "delivery_recovered" for r in caplog.records),
            what="the recovery line",
        )
        wait_for(
            lambda: any(getattr(r, "event", "") == "witness_back" for r in caplog.records),
            what="the witness to be reachable again",
        )
    recovered = [r for r in caplog.records if getattr(r, "event", "") == "delivery_recovered"]
    assert len(recovered) == 1
    assert "delivery to MO recovered after " in recovered[0].getMessage()


def test_a_stream_the_client_cancels_while_the_server_reads_is_cancelled_not_internal(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The servicer is reading the client's stream when the client cancels, and gets grpcio's
    bare RpcError (what reflection hits; before the fix: INTERNAL, logged with a traceback)."""
    node_cred = world.cred(HK, Role.NODE)
    tls = ServerTls(node_cred.certificate, node_cred.key, world.bundle)
    ended: list[tuple[str, str]] = []
    reading = threading.Event()

    def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        gone = threading.Event()
        context.add_callback(gone.set)  # runs once the call has ended (the client cancelled)
        yield next(iter(requests))
        reading.set()
        assert gone.wait(10)
        # what grpcio's request iterator raises to a servicer reading a cancelled stream
        raise grpc.RpcError()

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[ErrorInterceptor(lambda method, code, _: ended.append((method, code)))],
    )
    handler = grpc.stream_stream_rpc_method_handler(chat)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", {"Chat": handler}),)
    )
    port = server.add_secure_port("127.0.0.1:0", tls.credentials())
    server.start()
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="gateway"),
            secure_channel(
                f"127.0.0.1:{port}",
                world.client_identity(world.cred(HK, Role.PARTNER)),
                node_cred.identity,
            ) as channel,
        ):
            more = threading.Event()

            def requests() -> Iterator[bytes]:
                yield b"hello"
                more.wait(10)

            call = channel.stream_stream("/test.Echo/Chat")(requests(), timeout=10)
            try:
                assert next(call) == b"hello"
                assert reading.wait(5)
                call.cancel()  # the client's stream stays open (no half-close) meanwhile
                wait_for(lambda: ended, what="the call to end on the server")
            finally:
                more.set()
    finally:
        server.stop(0)
    assert ended == [("/test.Echo/Chat", "CANCELLED")]
    assert "internal error" not in caplog.text
    assert "client closed its stream of /test.Echo/Chat" in caplog.text


@pytest.mark.parametrize(
    ("line", "level", "message", "source"),
    [
        pytest.param(
            "E1202 19:02:41.639140    3533 ssl_transport_security.cc:3238] No match found for "
            "server name: gateway.cn.customs-exchange",
            logging.ERROR,
            "No match found for server name: gateway.cn.customs-exchange",
            "ssl_transport_security.cc:3238",
            id="error",
        ),
        pytest.param(
            "I0000 00:00:1733166161.639615    3534 chttp2_transport.cc:1180] ipv4:1.2.3.4: Got "
            "goaway",
            logging.INFO,
            "ipv4:1.2.3.4: Got goaway",
            "chttp2_transport.cc:1180",
            id="info-absl-epoch-time",
        ),
        pytest.param(
            "W1202 19:02:41.1 12 server.cc:99] slow",
            logging.WARNING,
            "slow",
            "server.cc:99",
            id="warning",
        ),
        pytest.param("free text from a C library", logging.WARNING,
                     "free text from a C library", None, id="not-grpc"),
    ],
)  # fmt: skip
def test_native_lines_are_parsed_into_level_message_and_source(
    line: str, level: int, message: str, source: str | None
) -> None:
    got_level, got_message, extra = logs._native_record(line)
    assert (got_level, got_message, extra.get("source")) == (level, message, source)
