"""Erasure at the end of retention (PIPL, PDPO, Macao PDPA): the payload goes, an ``erased``
event records when, and the ledger still verifies."""

from __future__ import annotations

import datetime as dt
import time
import uuid

from cryptography.hazmat.primitives.asymmetric import ed25519

from customs.gateway.v1 import audit_pb2, partner_pb2
from gateway.audit import WitnessPolicy, check_ledger, verify_ledger
from gateway.domain.fixtures import timestamp
from gateway.exchange.witness import log_verifier
from gateway.ledger import Event
from gateway.pki.bundle import TrustBundle
from tests.exchange.conftest import CN, HK, Trio, notice_request, read_stream
from tests.support import ledger_file, store_execute, wait_for

UNWITNESSED = WitnessPolicy.unwitnessed()  # these tests check the log, not witnessing


def test_payload_erased_at_end_of_retention_and_ledger_still_verifies(trio: Trio) -> None:
    now = dt.datetime.now(dt.UTC)
    request = notice_request(CN, [HK], now)
    request.notice.retain_until.CopyFrom(timestamp(now + dt.timedelta(seconds=1)))
    response = trio.partner(CN).SubmitSeizureNotice(request, timeout=10)
    wait_for(lambda: trio.entries(CN, Event.RECEIPT), what="the HK receipt before retention ends")
    assert trio.nodes[CN].exchange.erase_expired() == 0  # not yet
    time.sleep(
        max(0.0, (now + dt.timedelta(seconds=1.1) - dt.datetime.now(dt.UTC)).total_seconds())
    )

    for j in (CN, HK):
        assert trio.nodes[j].exchange.erase_expired() == 1
        assert trio.nodes[j].exchange.erase_expired() == 0  # once
        (erased,) = trio.entries(j, Event.ERASED)
        assert erased.entry.message_id == uuid.UUID(response.message_id)
        assert erased.entry.digests == (response.digest,)
        envelope = trio.auditor(j).GetEnvelope(
            audit_pb2.GetEnvelopeRequest(message_id=response.message_id), timeout=5
        )
        assert envelope.erased
        assert not envelope.HasField("envelope")
        assert erased.index in envelope.ledger_indexes

    (message,) = read_stream(trio.partner(HK), expect=1)
    assert message.message_id == response.message_id
    assert message.WhichOneof("payload") is None  # the partner sees that it existed, not what
    status = trio.partner(CN).GetDeliveryStatus(
        partner_pb2.GetDeliveryStatusRequest(message_id=response.message_id), timeout=5
    )
    assert status.recipients[0].state == partner_pb2.DELIVERY_STATE_DELIVERED

    (erased,) = trio.entries(CN, Event.ERASED)
    wait_for(  # (entries past it may be `witnessed` ones, which wait for the next checkpoint)
        lambda: (
            (latest := trio.nodes[CN].ledger.latest_checkpoint()) is not None
            and latest.size > erased.index
            and "witness" in latest.note
        ),
        what="a cosigned checkpoint over the erasure",
    )  # type: ignore[union-attr]
    trio.stop(CN)  # signs a final checkpoint over the erased entry
    key = trio.world.signing(CN).issued.certificate.public_key()
    assert isinstance(key, ed25519.Ed25519PublicKey)
    ledger = ledger_file(trio.root / "cn-data")
    assert check_ledger(ledger, log_verifier(CN, key), policy=UNWITNESSED).ok
    # With nothing but the trust bundle: the keys come from the certificates the node kept,
    # though every envelope (and the certificates they carried) has been erased.
    bundle = TrustBundle.from_json(trio.world.bundle.read_text())
    result = verify_ledger(ledger, bundle=bundle)
    assert result.ok, result.failures
    assert result.cosignatures >= 1
    # MO never sent CN anything: only the kept certificate can vouch for its cosignature.
    store_execute(trio.root / "cn-data", "DELETE FROM exchange_certificates")
    assert not verify_ledger(ledger_file(trio.root / "cn-data"), bundle=bundle).ok


def _cosigned_by_mo(trio: Trio) -> bool:
    latest = trio.nodes[CN].ledger.latest_checkpoint()
    return latest is not None and "— mo.customs-exchange/witness " in latest.note
