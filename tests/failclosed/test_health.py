"""Health tells the truth: NOT_SERVING while the ledger cannot commit, SERVING again after.

The failure is real: the node's data directory is on a small tmpfs of its own, which the test
fills to the last byte. This needs ``mount`` (root with CAP_SYS_ADMIN, as in CI); elsewhere the
test is skipped, saying why. A read-only file system is not tested this way: Linux refuses to
remount read-only while the ledger is open for writing (EBUSY), so it arrives only through the
kernel's own error remount; the probe's file write fails the same way (EROFS) then.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from customs.gateway.v1 import partner_pb2_grpc
from gateway.domain.fixtures import seed_notice_request
from gateway.pki import Role
from gateway.server import Node
from gateway.server.node import STORAGE_KEY
from tests.failclosed.runtime_support import CN, HK, ledger_state
from tests.support import World, channel_to, running_node, wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted at a fresh directory, unmounted afterwards."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mountpoint))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {exc}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _status(node: Node, world: World) -> int:
    return _check(node, world)[0]


def _check(node: Node, world: World) -> tuple[int, str]:
    """Health/Check's status and its ``storage`` trailing metadata."""
    with channel_to(world, node, world.cred(HK, Role.PARTNER)) as channel:
        response, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(response.status), dict(call.trailing_metadata())[STORAGE_KEY]


def _fill(directory: Path) -> Path:
    """Write a file until the file system has no byte left."""
    filler = directory / "filler"
    chunk = b"\0" * 65536

    def write_until_full() -> None:
        with filler.open("wb") as f:
            while True:
                f.write(chunk)
                f.flush()

    with pytest.raises(OSError, match="No space left on device") as full:
        write_until_full()
    assert full.value.errno == errno.ENOSPC
    return filler


def _submit(node: Node, world: World) -> grpc.StatusCode:
    request = seed_notice_request(dt.datetime.now(dt.UTC))
    request.addressing.message_id = str(uuid.uuid4())
    request.notice.notice_id = str(uuid.uuid4())
    with channel_to(world, node, world.cred(CN, Role.PARTNER)) as channel:
        try:
            partner_pb2_grpc.PartnerGatewayStub(channel).SubmitSeizureNotice(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
def node_on_small_disk(world: World, small_disk: Path) -> Iterator[Node]:
    config = world.write_config(
        CN,
        small_disk / "cn-data",
        server="\n[limits]\nstorage_probe_seconds = 0.1",
    )
    moved = small_disk.parent / config.name  # the config itself off the small disk
    moved.write_text(config.read_text())
    config.unlink()
    with running_node(moved) as node:
        yield node


def test_a_full_disk_is_not_serving_until_space_is_freed(
    world: World, node_on_small_disk: Node, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = node_on_small_disk
    assert _status(node, world) == SERVING
    with caplog.at_level(logging.ERROR, logger="gateway.server"):
        filler = _fill(small_disk)
        wait_for(lambda: _status(node, world) == NOT_SERVING, what="NOT_SERVING on a full disk")
    failed = [r for r in caplog.records if getattr(r, "event", None) == "storage-failed"]
    assert failed, "no storage-failed log line"
    assert "No space left on device" in failed[0].getMessage()
    status, storage = _check(node, world)
    assert status == NOT_SERVING
    assert "No space left on device" in storage
    filler.unlink()
    wait_for(lambda: _status(node, world) == SERVING, what="SERVING once space is freed")
    assert _check(node, world) == (SERVING, "ok")
    before = ledger_state(node)
    assert _submit(node, world) is grpc.StatusCode.OK
    assert ledger_state(node).size > before.size
