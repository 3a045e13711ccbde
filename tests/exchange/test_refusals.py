"""A receiving node refuses forged, replayed and misaddressed envelopes, each with its status,
and records no ``received`` entry for any of them."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from customs.gateway.v1 import common_pb2, envelope_pb2, partner_pb2, peer_pb2, peer_pb2_grpc
from gateway.audit import open_source, reconcile_sources
from gateway.envelope import Signer, seal
from gateway.ledger import Event
from gateway.pki import Jurisdiction, Role
from tests.exchange.conftest import CN, HK, MO, PROTO, Trio, notice_request
from tests.support import ledger_file, wait_for


def _signer(trio: Trio, j: Jurisdiction) -> Signer:
    cred = trio.world.signing(j)
    return Signer(cred.identity, cred.issued.private_key, cred.issued.certificate)  # type: ignore[arg-type]


def _envelope(
    trio: Trio,
    origin: Jurisdiction,
    recipients: list[Jurisdiction],
    message_id: str | None = None,
    *,
    releasable_to: list[Jurisdiction] | None = None,
    created: dt.datetime | None = None,
) -> envelope_pb2.Envelope:
    request = notice_request(origin, recipients)
    if releasable_to is not None:
        del request.addressing.handling.releasable_to[:]
        request.addressing.handling.releasable_to.extend(PROTO[r] for r in releasable_to)
    header = envelope_pb2.EnvelopeHeader(
        message_id=message_id or str(uuid.uuid4()),
        kind=common_pb2.MESSAGE_KIND_SEIZURE_NOTICE,
        origin=PROTO[origin],
        origin_node=f"spiffe://{origin.trust_domain}/node/gateway",
        recipients=[PROTO[r] for r in recipients],
        handling=request.addressing.handling,
    )
    header.created_at.FromDatetime(created or dt.datetime.now(dt.UTC))
    return seal(header, request.notice.SerializeToString(), _signer(trio, origin))


def _deliver(
    trio: Trio, sender: Jurisdiction, to: Jurisdiction, envelopes: list[envelope_pb2.Envelope]
) -> Any:
    stub = peer_pb2_grpc.PeerExchangeStub(trio.channel(to, sender, Role.NODE))
    return stub.DeliverBatch(peer_pb2.DeliverBatchRequest(envelopes=envelopes), timeout=10)


def _forged(trio: Trio) -> envelope_pb2.Envelope:
    envelope = _envelope(trio, CN, [HK])
    payload = bytearray(envelope.payload)
    payload[-1] ^= 1
    envelope.payload = bytes(payload)
    return envelope


def _addressed_elsewhere(trio: Trio) -> envelope_pb2.Envelope:
    return _envelope(trio, CN, [MO])


def _addressed_but_not_releasable(trio: Trio) -> envelope_pb2.Envelope:
    return _envelope(trio, CN, [HK], releasable_to=[MO])


def _signed_before_the_certificate_existed(trio: Trio) -> envelope_pb2.Envelope:
    return _envelope(trio, CN, [HK], created=dt.datetime.now(dt.UTC) - dt.timedelta(days=400))


def _signed_by_another_jurisdiction(trio: Trio) -> envelope_pb2.Envelope:
    return _envelope(trio, MO, [HK])  # valid MO envelope, but delivered by the CN node


CASES: list[tuple[str, Callable[[Trio], envelope_pb2.Envelope], int, str]] = [
    ("forged-signature", _forged, code_pb2.UNAUTHENTICATED, "signature does not verify"),
    (
        "addressed-to-another-jurisdiction",
        _addressed_elsewhere,
        code_pb2.PERMISSION_DENIED,
        "is not addressed to HK",
    ),
    (
        "addressed-but-not-releasable",
        _addressed_but_not_releasable,
        code_pb2.PERMISSION_DENIED,
        "is not releasable to HK",
    ),
    (
        "signer-not-valid-when-signed",
        _signed_before_the_certificate_existed,
        code_pb2.UNAUTHENTICATED,
        "is not valid before",
    ),
    (
        "relayed-for-another-origin",
        _signed_by_another_jurisdiction,
        code_pb2.PERMISSION_DENIED,
        "nodes deliver only their own",
    ),
]


@pytest.mark.parametrize(
    ("make", "code", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refused_envelope_leaves_no_received_entry(
    trio: Trio, make: Callable[[Trio], envelope_pb2.Envelope], code: int, message: str
) -> None:
    good = _envelope(trio, CN, [HK])
    response = _deliver(trio, CN, HK, [make(trio), good])
    bad_result, good_result = response.results
    assert bad_result.error.code == code
    assert message in bad_result.error.message
    assert not bad_result.HasField("receipt")
    assert good_result.HasField("receipt")  # one refusal does not stop the batch
    received = trio.entries(HK, Event.RECEIVED)
    assert [r.entry.message_id for r in received] == [uuid.UUID(good_result.message_id)]


def test_replayed_id_with_another_digest_is_refused_and_original_kept(
    trio: Trio, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = str(uuid.uuid4())
    original = _envelope(trio, CN, [HK], message_id)
    (first,) = _deliver(trio, CN, HK, [original]).results
    assert first.HasField("receipt")
    (again,) = _deliver(trio, CN, HK, [original]).results  # the same envelope: same receipt
    assert again.receipt == first.receipt

    replay = _envelope(trio, CN, [HK], message_id)  # same id, other content
    (refused,) = _deliver(trio, CN, HK, [replay]).results
    assert refused.error.code == code_pb2.ALREADY_EXISTS
    assert "already recorded with digest" in refused.error.message
    assert any("REPLAY OR FORGERY" in r.getMessage() for r in caplog.records)
    received = trio.entries(HK, Event.RECEIVED)
    assert len(received) == 1
    assert received[0].entry.message_id == uuid.UUID(message_id)


def test_empty_batch_is_a_bad_request_naming_the_field(trio: Trio) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _deliver(trio, CN, HK, [])
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "envelopes: 1 to 2000 envelopes, got 0"
    status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("envelopes", "1 to 2000 envelopes, got 0")
    ]


def test_final_refusal_is_ledgered_at_the_origin_and_the_queue_goes_on(trio: Trio) -> None:
    """HK already holds another message under the id CN's partner picks: HK refuses CN's
    delivery as a replay; CN records a ``refused`` entry, reports REFUSED, and delivers the
    next message anyway."""
    clash = notice_request(CN, [HK])
    (planted,) = _deliver(
        trio, CN, HK, [_envelope(trio, CN, [HK], clash.addressing.message_id)]
    ).results
    assert planted.HasField("receipt")
    trio.partner(CN).SubmitSeizureNotice(clash, timeout=10)
    after = trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)

    def state(message_id: str) -> int:
        status = trio.partner(CN).GetDeliveryStatus(
            partner_pb2.GetDeliveryStatusRequest(message_id=message_id), timeout=5
        )
        return int(status.recipients[0].state)

    wait_for(
        lambda: state(after.message_id) == partner_pb2.DELIVERY_STATE_DELIVERED,
        what="the next message",
    )
    assert state(clash.addressing.message_id) == partner_pb2.DELIVERY_STATE_REFUSED
    status = trio.partner(CN).GetDeliveryStatus(
        partner_pb2.GetDeliveryStatusRequest(message_id=clash.addressing.message_id), timeout=5
    )
    assert "refused by HK (ALREADY_EXISTS)" in status.recipients[0].last_error
    (refused,) = trio.entries(CN, Event.REFUSED)
    assert refused.entry.message_id == uuid.UUID(clash.addressing.message_id)
    assert refused.entry.counterpart == "HK"


def test_reconciliation_lists_a_final_refusal_as_refused(trio: Trio, tmp_path: Path) -> None:
    clash = notice_request(CN, [HK])
    _deliver(trio, CN, HK, [_envelope(trio, CN, [HK], clash.addressing.message_id)])
    trio.partner(CN).SubmitSeizureNotice(clash, timeout=10)
    wait_for(lambda: trio.entries(CN, Event.REFUSED), what="CN's refused entry")
    result = reconcile_sources(
        [open_source(ledger_file(trio.root / f"{j.value.lower()}-data")) for j in (CN, HK)]
    )
    assert [r for r in result.refused if clash.addressing.message_id in r]
    assert "refused by HK" in result.refused[0]
    # what HK holds under that id is not what CN's ledger says it sent: reconciliation says so
    assert [m.problem for m in result.errors] == ["digest-mismatch"]
    assert "recorded HK's refusal" in result.errors[0].message


def test_another_origin_cannot_block_a_message_by_taking_its_id(trio: Trio) -> None:
    """HK knows the id of CN's notice (it is a recipient) and sends MO a message of its own
    under that id first: ids are unique per origin, so MO still accepts CN's message."""
    message_id = str(uuid.uuid4())
    (squatted,) = _deliver(trio, HK, MO, [_envelope(trio, HK, [MO], message_id)]).results
    assert squatted.HasField("receipt")
    (real,) = _deliver(trio, CN, MO, [_envelope(trio, CN, [MO], message_id)]).results
    assert real.HasField("receipt"), real.error.message
    received = [
        r for r in trio.entries(MO, Event.RECEIVED) if r.entry.message_id == uuid.UUID(message_id)
    ]
    assert sorted(r.entry.counterpart for r in received) == ["CN", "HK"]
    # a partner acknowledging that id must now say which origin it means
    with pytest.raises(grpc.RpcError) as info:
        trio.partner(MO).AcknowledgeInbound(
            partner_pb2.AcknowledgeInboundRequest(message_id=message_id), timeout=5
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "was received from" in (info.value.details() or "")
    ack = trio.partner(MO).AcknowledgeInbound(
        partner_pb2.AcknowledgeInboundRequest(message_id=message_id, origin=PROTO[CN]), timeout=5
    )
    assert not ack.duplicate
