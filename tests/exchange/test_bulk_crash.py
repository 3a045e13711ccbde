"""A bulk publish interrupted by SIGKILL of the origin and retried creates no duplicate (a real
``serve`` process, a real SIGKILL in the middle of a stream of bulk calls)."""

from __future__ import annotations

import collections
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
from tests.exchange.conftest import CN, HK, Trio, entry_request, write_trio_configs
from tests.support import World, serve_process

pytestmark = pytest.mark.slow

BATCHES, PER_BATCH = 10, 100
OUTCOME = partner_pb2.BulkOutcome


def test_bulk_publish_killed_mid_call_and_retried_creates_no_duplicate(
    world: World, tmp_path: Path
) -> None:
    trio = Trio(world, tmp_path, write_trio_configs(world, tmp_path))
    hk_config = trio.configs[HK]
    hk = load_config(hk_config)
    identity = world.client_identity(world.cred(HK, Role.PARTNER))
    batches = [[entry_request([CN]) for _ in range(PER_BATCH)] for _ in range(BATCHES)]
    answered: list[int] = []  # batches answered before the kill
    first_answer = threading.Event()

    def publisher(address: str) -> None:
        with secure_channel(address, identity, hk.identity) as channel:
            stub = partner_pb2_grpc.PartnerGatewayStub(channel)
            for number, batch in enumerate(batches):
                request = partner_pb2.PublishWatchlistEntriesRequest(entries=batch)
                try:
                    response = stub.PublishWatchlistEntries(request, timeout=30)
                except grpc.RpcError:
                    return  # the node died under us, in this call
                assert response.accepted == PER_BATCH
                answered.append(number)
                first_answer.set()

    proc, address = serve_process(hk_config, tmp_path / "hk.log", HK)
    thread = threading.Thread(target=publisher, args=(address,))
    thread.start()
    try:
        assert first_answer.wait(60), "no bulk call was answered"
        proc.send_signal(signal.SIGKILL)  # the next call is in flight
        proc.wait(10)
    finally:
        thread.join(30)
        if proc.poll() is None:
            proc.kill()
    assert 1 <= len(answered) < BATCHES, "the kill did not interrupt the stream of calls"

    # HK restarts; the partner retries every batch, the same requests: what was recorded
    # (every answered batch, and maybe the one in flight) answers as duplicates.
    trio.start(CN)
    proc, address = serve_process(hk_config, tmp_path / "hk.log", HK)
    outcomes: collections.Counter[int] = collections.Counter()
    try:
        with secure_channel(address, identity, hk.identity) as ch:
            stub = partner_pb2_grpc.PartnerGatewayStub(ch)
            for number, batch in enumerate(batches):
                response = stub.PublishWatchlistEntries(
                    partner_pb2.PublishWatchlistEntriesRequest(entries=batch), timeout=60
                )
                outcomes.update(r.outcome for r in response.results)
                if number in answered:
                    assert response.duplicates == PER_BATCH, number
        total = BATCHES * PER_BATCH
        assert outcomes[OUTCOME.BULK_OUTCOME_REFUSED] == 0
        assert outcomes[OUTCOME.BULK_OUTCOME_DUPLICATE] >= len(answered) * PER_BATCH
        assert sum(outcomes.values()) == total

        # CN's partner reads every entry exactly once.
        wanted = {r.addressing.message_id for batch in batches for r in batch}
        got: list[str] = []
        call = trio.partner(CN).StreamInbound(partner_pb2.StreamInboundRequest(), timeout=120)
        for message in call:
            got.append(message.message_id)
            if len(got) == total:
                break
        call.cancel()
        assert len(got) == len(set(got)) == total
        assert set(got) == wanted
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        trio.close()

    # HK's ledger has exactly one "sent" entry per message, and verifies end to end.
    trio.start(HK)
    try:
        ledger = trio.nodes[HK].ledger
        records = [
            r
            for start in range(0, ledger.size(), 1000)
            for r in ledger.entries(start, ledger.size())
        ]
        sent = collections.Counter(
            r.entry.message_id for r in records if r.entry.event is Event.SENT
        )
    finally:
        trio.close()
    assert set(sent) == {uuid.UUID(m) for m in wanted}
    assert set(sent.values()) == {1}
    signing = world.signing(HK).issued.certificate.public_key()
    assert isinstance(signing, ed25519.Ed25519PublicKey)
    result = check_ledger(
        tmp_path / "hk-data" / "ledger.db",
        log_verifier(HK, signing),
        policy=WitnessPolicy.unwitnessed(),
    )
    assert result.ok
