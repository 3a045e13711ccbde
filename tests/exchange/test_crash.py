"""A node killed with SIGKILL right after acknowledging submits loses none of them, and delivers
them once it is back (real process, real SIGKILL)."""

from __future__ import annotations

import signal
import threading
import uuid
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from customs.gateway.v1 import partner_pb2, partner_pb2_grpc
from gateway.audit import WitnessPolicy, check_ledger
from gateway.exchange.witness import log_verifier
from gateway.ledger import Event
from gateway.pki import Role
from gateway.server import load_config
from gateway.transport import secure_channel
from tests.exchange.conftest import (
    CN,
    HK,
    Trio,
    notice_request,
    write_trio_configs,
)
from tests.support import World, ledger_file, serve_process

pytestmark = pytest.mark.slow

UNWITNESSED = WitnessPolicy.unwitnessed()  # these tests check the log, not witnessing


def test_sigkill_after_acknowledged_submits_loses_nothing(world: World, tmp_path: Path) -> None:
    trio = Trio(world, tmp_path, write_trio_configs(world, tmp_path))
    cn_config = trio.configs[CN]
    proc, cn_address = serve_process(cn_config, tmp_path / "cn.log", CN)
    acked: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()
    cn = load_config(cn_config)

    def submitter() -> None:
        identity = world.client_identity(world.cred(CN, Role.PARTNER))
        with secure_channel(cn_address, identity, cn.identity) as channel:
            stub = partner_pb2_grpc.PartnerGatewayStub(channel)
            while True:
                try:
                    response = stub.SubmitSeizureNotice(notice_request(CN, [HK]), timeout=5)
                except grpc.RpcError:
                    return  # the node died under us: what was not acknowledged may be lost
                with lock:
                    acked.append(response.message_id)
                    if len(acked) >= 40:
                        enough.set()

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(30), "submits were not acknowledged"
        proc.send_signal(signal.SIGKILL)  # in the middle of the stream of submits
        proc.wait(10)
    finally:
        for t in threads:
            t.join(10)
        if proc.poll() is None:
            proc.kill()
    with lock:
        acknowledged = list(acked)
    assert len(acknowledged) >= 40

    # HK comes up, CN restarts: every acknowledged message is delivered, exactly once.
    trio.start(HK)
    proc, _ = serve_process(
        cn_config, tmp_path / "cn.log", CN
    )  # a new port: HK reads it from the file
    try:
        # Messages committed but not yet acknowledged when the node died may arrive too; read
        # until every acknowledged one has, and check that nothing comes twice.
        wanted, got_ids = set(acknowledged), []
        call = trio.partner(HK).StreamInbound(partner_pb2.StreamInboundRequest(), timeout=60)
        for message in call:
            got_ids.append(message.message_id)
            if wanted <= set(got_ids):
                break
        call.cancel()
        assert wanted <= set(got_ids)
        assert len(got_ids) == len(set(got_ids))
        received = {r.entry.message_id for r in trio.entries(HK, Event.RECEIVED)}
        assert {uuid.UUID(m) for m in acknowledged} <= received
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        trio.close()

    # The CN ledger has a "sent" entry for each of them, and verifies from end to end.
    trio.start(CN)
    try:
        sent = {r.entry.message_id for r in trio.entries(CN, Event.SENT)}
        assert {uuid.UUID(m) for m in acknowledged} <= sent
    finally:
        trio.close()
    signing = world.signing(CN).issued.certificate.public_key()
    assert isinstance(signing, ed25519.Ed25519PublicKey)
    result = check_ledger(
        ledger_file(tmp_path / "cn-data"), log_verifier(CN, signing), policy=UNWITNESSED
    )
    assert result.ok
    assert result.entries >= 2 * len(acknowledged)  # a sent and a receipt entry each
