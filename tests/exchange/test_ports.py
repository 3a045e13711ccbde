"""Ports are bound, never probed: a node on port 0 reports the port it got (its first line of
output, its ``started`` log line, its ``listen-address`` file), and peers reach it through that
file, also after it came back on another port (ADR 0060)."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from gateway.demo.cluster import NodeProcess
from gateway.errors import UnavailableError
from gateway.ledger import Event
from gateway.server import LISTEN_ADDRESS_FILE, load_config
from gateway.server.config import PeerConfig
from tests.exchange.conftest import CN, HK, Trio, address_file, notice_request, write_trio_configs
from tests.support import World, python_process, wait_for


def test_serve_on_port_0_reports_the_port_it_bound(world: World, tmp_path: Path) -> None:
    config = world.write_config(HK, tmp_path / "hk-data")
    assert 'listen = "127.0.0.1:0"' in config.read_text()
    proc = python_process("-m", "gateway", "serve", "--config", str(config))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        address = line.split()[-1]
        port = int(address.rpartition(":")[2])
        assert port != 0
        assert (tmp_path / "hk-data" / LISTEN_ADDRESS_FILE).read_text() == address + "\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # something listens there: the node
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        started = [
            json.loads(x) for x in proc.stderr.read().splitlines() if '"event": "started"' in x
        ]
        assert [(s["address"], s["port"]) for s in started] == [(address, port)]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_peer_that_comes_back_on_another_port_is_reached_through_its_file(
    world: World, tmp_path: Path
) -> None:
    trio = Trio(world, tmp_path, write_trio_configs(world, tmp_path))
    holder = socket.socket()  # keeps HK's first port taken, so HK cannot get it again
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past its TIME_WAIT pairs
    try:
        trio.start(CN)
        first_port = trio.start(HK).port
        first = trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
        wait_for(lambda: _received(trio, first.message_id), what="first delivery")

        trio.stop(HK)
        holder.bind(("127.0.0.1", first_port))  # bound, not listening: connections refused
        second = trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
        second_port = trio.start(HK).port
        assert second_port != first_port
        assert address_file(tmp_path, HK).read_text() == f"127.0.0.1:{second_port}\n"
        assert trio.ports[HK] == second_port
        wait_for(lambda: _received(trio, second.message_id), what="delivery at the new port")
    finally:
        holder.close()
        trio.close()


def test_a_missing_address_file_is_a_target_that_fails_at_once(tmp_path: Path) -> None:
    """Before the peer has bound its port, the target names the file it waits for."""
    where = tmp_path / "cn-data" / LISTEN_ADDRESS_FILE
    peer = PeerConfig(CN, "", address_file=where)
    assert peer.target() == f"unix:{where}"
    where.parent.mkdir()
    where.write_text("127.0.0.1:7001\n")
    assert peer.target() == "127.0.0.1:7001"
    where.write_text("half a line")
    assert peer.target() == f"unix:{where}"


def test_address_file_is_relative_to_the_config(world: World, tmp_path: Path) -> None:
    config = world.write_config(HK, tmp_path / "hk-data", peers={CN: Path("cn-data/addr")})
    (peer,) = load_config(config).peers
    assert peer.address == ""
    assert peer.address_file == (tmp_path / "cn-data" / "addr").resolve()


def _received(trio: Trio, message_id: str) -> bool:
    return any(str(r.entry.message_id) == message_id for r in trio.entries(HK, Event.RECEIVED))


def test_node_process_takes_the_port_the_node_reports(world: World, tmp_path: Path) -> None:
    config = world.write_config(HK, tmp_path / "hk-data")
    node = NodeProcess(HK, config, tmp_path / "hk.log")
    node.start()
    try:
        assert node.port != 0
        assert node.address == (tmp_path / "hk-data" / LISTEN_ADDRESS_FILE).read_text().strip()
    finally:
        assert node.stop() == 0


def test_node_process_that_cannot_start_says_so(world: World, tmp_path: Path) -> None:
    config = world.write_config(HK, tmp_path / "hk-data")
    config.write_text(config.read_text().replace("listen =", "listne ="))
    node = NodeProcess(HK, config, tmp_path / "hk.log")
    with pytest.raises(UnavailableError, match=r"HK node did not start; see .*hk\.log$"):
        node.start()
    assert node.process is None
    assert "unknown key (did you mean 'listen'?)" in (tmp_path / "hk.log").read_text()
