"""Revocations cannot be undone from the CRL directory: deleting the CRL file or putting back an
older CRL (even one genuinely signed by the root) leaves the revocation in force."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.pki import Jurisdiction, Role
from gateway.pki.pem import write_public_file
from gateway.pki.revocation import RevocationReason, RevokedEntry, build_crl
from gateway.server import Node
from tests.support import World, channel_to, running_node

CN = Jurisdiction.CN


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _health_code(world: World, node: Node, cred: object) -> grpc.StatusCode:
    with channel_to(world, node, cred) as channel:  # type: ignore[arg-type]
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


ROLLBACKS = ["crl-file-deleted", "older-crl-put-back"]


@pytest.mark.parametrize("rollback", ROLLBACKS)
def test_revocation_survives_crl_rollback(
    world: World, tmp_path: Path, rollback: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    crl_path = tmp_path / "cn.crl"
    ca = world.cas[CN]
    write_public_file(crl_path, build_crl(ca, [], number=1).public_bytes(Encoding.PEM))
    config = world.write_config(
        CN, tmp_path / "cn-data", crls=[crl_path], server="tls_reload_seconds = 0.1"
    )
    cred = world.issue(CN, Role.PARTNER, f"rollback-{rollback}", tag=f"-{rollback}")
    with running_node(config) as node:
        assert _health_code(world, node, cred) is grpc.StatusCode.OK
        serial = cred.issued.certificate.serial_number
        revoked = build_crl(
            ca,
            [RevokedEntry(serial, dt.datetime.now(dt.UTC), RevocationReason.KEY_COMPROMISE)],
            number=2,
        )
        write_public_file(crl_path, revoked.public_bytes(Encoding.PEM))
        _wait(lambda: _health_code(world, node, cred) is grpc.StatusCode.UNAUTHENTICATED)

        if rollback == "crl-file-deleted":
            crl_path.unlink()
            expected = "disappeared; keeping the one loaded before"
        else:
            old = build_crl(ca, [], number=1, now=dt.datetime.now(dt.UTC))
            write_public_file(crl_path, old.public_bytes(Encoding.PEM))
            expected = "CRL number 1 is older than 2"
        _wait(lambda: any(expected in r.getMessage() for r in caplog.records))
        time.sleep(0.3)  # a few more reload rounds
        assert _health_code(world, node, cred) is grpc.StatusCode.UNAUTHENTICATED
