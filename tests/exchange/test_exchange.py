"""Issue 5, done when: messages reach exactly the partners of their recipients, ledgered at both
ends with matching digests; a stopped peer catches up in order; refusals leave no trace."""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2, partner_pb2_grpc
from gateway.ledger import Event
from gateway.pki import Jurisdiction, Role
from tests.exchange.conftest import (
    CN,
    HK,
    MO,
    PROTO,
    Trio,
    entry_request,
    notice_request,
    read_stream,
)
from tests.support import wait_for

ROUTES = [
    (CN, [HK, MO]),
    (HK, [CN]),
    (MO, [CN, HK]),
]


def _delivered(trio: Trio, origin: Jurisdiction, message_id: str, count: int) -> bool:
    status = trio.partner(origin).GetDeliveryStatus(
        partner_pb2.GetDeliveryStatusRequest(message_id=message_id), timeout=5
    )
    return sum(r.state == partner_pb2.DELIVERY_STATE_DELIVERED for r in status.recipients) == count


def test_each_node_reaches_exactly_its_recipients(trio: Trio) -> None:
    sent: dict[str, tuple[Jurisdiction, list[Jurisdiction], bytes]] = {}
    for origin, recipients in ROUTES:
        request = notice_request(origin, recipients)
        response = trio.partner(origin).SubmitSeizureNotice(request, timeout=10)
        assert response.message_id == request.addressing.message_id
        assert len(response.digest) == 32
        sent[response.message_id] = (origin, recipients, response.digest)
    for message_id, (origin, recipients, _) in sent.items():
        count = len(recipients)
        wait_for(
            lambda m=message_id, o=origin, n=count: _delivered(trio, o, m, n),
            what=f"receipts of {message_id}",
        )

    for j in (CN, HK, MO):
        expected = {m for m, (_, recipients, _) in sent.items() if j in recipients}
        got = read_stream(trio.partner(j), expect=len(expected))
        assert {m.message_id for m in got} == expected
        assert len(got) == len(expected)  # exactly once
        for message in got:
            assert message.seizure_notice.notice_id
            assert message.envelope.signature
        # nothing more is waiting: a stream resumed after the last cursor stays empty
        with pytest.raises(grpc.RpcError) as info:
            read_stream(trio.partner(j), got[-1].cursor, expect=1, timeout=1.0)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

    for message_id, (origin, recipients, digest) in sent.items():
        mid = uuid.UUID(message_id)
        sent_entries = [r for r in trio.entries(origin, Event.SENT) if r.entry.message_id == mid]
        assert sorted(r.entry.counterpart for r in sent_entries) == sorted(
            j.value for j in recipients
        )
        assert all(r.entry.digests[0] == digest for r in sent_entries)
        receipts = [r for r in trio.entries(origin, Event.RECEIPT) if r.entry.message_id == mid]
        assert sorted(r.entry.counterpart for r in receipts) == sorted(j.value for j in recipients)
        for j in (CN, HK, MO):
            received = [r for r in trio.entries(j, Event.RECEIVED) if r.entry.message_id == mid]
            if j in recipients:
                assert len(received) == 1
                assert received[0].entry.digests[0] == digest
                assert received[0].entry.counterpart == origin.value
            else:
                assert received == []


def test_acknowledgements_are_ledgered_once_per_partner(trio: Trio) -> None:
    request = notice_request(CN, [HK])
    trio.partner(CN).SubmitSeizureNotice(request, timeout=10)
    (message,) = read_stream(trio.partner(HK), expect=1)
    ack = partner_pb2.AcknowledgeInboundRequest(message_id=message.message_id)
    first = trio.partner(HK).AcknowledgeInbound(ack, timeout=5)
    again = trio.partner(HK).AcknowledgeInbound(ack, timeout=5)
    assert not first.duplicate
    assert again.duplicate
    assert again.ledger_index == first.ledger_index
    acks = trio.entries(HK, Event.ACKNOWLEDGED)
    assert [r.index for r in acks] == [first.ledger_index]
    assert acks[0].entry.counterpart == "spiffe://hk.customs-exchange/partner/risk"
    with pytest.raises(grpc.RpcError) as info:
        trio.partner(HK).AcknowledgeInbound(
            partner_pb2.AcknowledgeInboundRequest(message_id=str(uuid.uuid4())), timeout=5
        )
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_retried_submit_is_idempotent_and_reused_id_is_refused(trio: Trio) -> None:
    request = notice_request(CN, [HK])
    first = trio.partner(CN).SubmitSeizureNotice(request, timeout=10)
    again = trio.partner(CN).SubmitSeizureNotice(request, timeout=10)
    assert again.duplicate
    assert (again.ledger_index, again.digest) == (first.ledger_index, first.digest)
    # The same instant to the digit (it was microseconds first, milliseconds on a retry).
    assert (again.accepted_at.seconds, again.accepted_at.nanos) == (
        first.accepted_at.seconds,
        first.accepted_at.nanos,
    )
    assert first.accepted_at.seconds > 0
    assert len(trio.entries(CN, Event.SENT)) == 1

    other = notice_request(CN, [HK])
    other.addressing.message_id = request.addressing.message_id
    with pytest.raises(grpc.RpcError) as info:
        trio.partner(CN).SubmitSeizureNotice(other, timeout=10)
    assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "already used for a different message" in (info.value.details() or "")
    assert len(trio.entries(CN, Event.SENT)) == 1


def test_the_same_new_submit_sent_at_once_is_recorded_once(trio: Trio) -> None:
    """A new submit reads nothing before it writes (ADR 0076): copies of one request sent at
    the same moment all reach the write. Exactly one is recorded; every other gets the
    duplicate answer with its index. (A new message id for a notice that exists: the states
    table below, "new-notice-that-exists".)"""
    request = notice_request(CN, [HK])
    answers: list[partner_pb2.SubmitResponse] = []
    errors: list[grpc.RpcError] = []
    start = threading.Barrier(4)  # the test node's calls_per_caller

    def submitter() -> None:
        start.wait()
        try:
            answers.append(trio.partner(CN).SubmitSeizureNotice(request, timeout=10))
        except grpc.RpcError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(a.duplicate for a in answers) == [False] + [True] * 3
    assert {(a.ledger_index, a.digest) for a in answers} == {
        (answers[0].ledger_index, answers[0].digest)
    }
    assert len(trio.entries(CN, Event.SENT)) == 1


def test_invalid_submit_leaves_no_ledger_entry(trio: Trio) -> None:
    request = notice_request(CN, [HK])
    request.notice.container_numbers[0] = "CSQU3054384"  # wrong check digit
    request.notice.place = "XX"
    with pytest.raises(grpc.RpcError) as info:
        trio.partner(CN).SubmitSeizureNotice(request, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
    assert status is not None
    assert status.details[0].Unpack(bad)
    assert {v.field for v in bad.field_violations} == {
        "notice.container_numbers[0]",
        "notice.place",
    }
    assert trio.nodes[CN].ledger.size() == 0


def _revocation(entry_id: str, version: int = 2) -> partner_pb2.RevokeWatchlistEntryRequest:
    request = entry_request([HK])
    return partner_pb2.RevokeWatchlistEntryRequest(
        addressing=request.addressing,
        revocation=domain_pb2.WatchlistRevocation(
            watchlist="strategic-minerals", entry_id=entry_id, version=version, reason="closed"
        ),
    )


def test_submit_states_table(trio: Trio) -> None:
    """Each way a submit can clash with what the node already published, with its status."""
    cn = trio.partner(CN)
    first = notice_request(CN, [HK])
    cn.SubmitSeizureNotice(first, timeout=10)
    # Its receipt is ledgered when it comes: wait, so the size below moves only by a refusal.
    wait_for(lambda: _delivered(trio, CN, first.addressing.message_id, 1), what="the receipt")
    again = notice_request(CN, [HK])
    again.notice.notice_id = first.notice.notice_id
    unknown = notice_request(CN, [HK])
    unknown.notice.version = 2
    empty = partner_pb2.RevokeWatchlistEntryRequest(addressing=entry_request([HK]).addressing)
    cases = [
        (
            "new-notice-that-exists",
            cn.SubmitSeizureNotice,
            again,
            grpc.StatusCode.INVALID_ARGUMENT,
            "notice.version: must be higher than the last version 1, got 1",
        ),
        (
            "amend-unknown-notice",
            cn.AmendSeizureNotice,
            unknown,
            grpc.StatusCode.INVALID_ARGUMENT,
            "notice.version: a new id starts at version 1, got 2",
        ),
        (
            "revoke-unknown-entry",
            cn.RevokeWatchlistEntry,
            _revocation(str(uuid.uuid4())),
            grpc.StatusCode.NOT_FOUND,
            "was never published",
        ),
        (
            "revocation-missing",
            cn.RevokeWatchlistEntry,
            empty,
            grpc.StatusCode.INVALID_ARGUMENT,
            "revocation: required",
        ),
    ]
    size = trio.nodes[CN].ledger.size()
    for name, call, request, code, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        assert info.value.code() is code, name
        assert message in (info.value.details() or ""), (name, info.value.details())
    # None of them wrote anything. CN's cosignature of a peer's checkpoint (HK's, once it
    # ledgered the first notice) may land meanwhile on its own timer: that one is no refusal.
    written = [r.entry.event for r in trio.entries(CN)[size:]]
    assert [e for e in written if e is not Event.WITNESSED] == []

    withdraw = partner_pb2.WithdrawSeizureNoticeRequest(
        addressing=notice_request(CN, [HK]).addressing,
        withdrawal=domain_pb2.SeizureWithdrawal(
            notice_id=first.notice.notice_id, version=2, reason="entered in error"
        ),
    )
    cn.WithdrawSeizureNotice(withdraw, timeout=10)
    amend = notice_request(CN, [HK])
    amend.notice.notice_id, amend.notice.version = first.notice.notice_id, 3
    with pytest.raises(grpc.RpcError) as info:
        cn.AmendSeizureNotice(amend, timeout=10)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "was revoked or withdrawn at version 2" in (info.value.details() or "")


def test_stopped_peer_receives_everything_once_in_order(trio: Trio) -> None:
    trio.stop(MO)
    ids = []
    for _ in range(12):
        response = trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10)
        ids.append(response.message_id)
    wait_for(lambda: all(_delivered_to(trio, CN, m, HK) for m in ids), what="delivery to HK")
    status = trio.partner(CN).GetDeliveryStatus(
        partner_pb2.GetDeliveryStatusRequest(message_id=ids[0]), timeout=5
    )
    mo = next(r for r in status.recipients if r.recipient == common_pb2.JURISDICTION_MO)
    assert mo.state == partner_pb2.DELIVERY_STATE_FAILING
    assert mo.attempts >= 1
    assert "UNAVAILABLE" in mo.last_error

    deliverer = trio.nodes[CN].deliverers[MO]
    before = deliverer.batches
    trio.start(MO)
    got = read_stream(trio.partner(MO), expect=len(ids), timeout=30)
    assert [m.message_id for m in got] == ids  # once each, in submit order
    # After failures the head goes alone as a probe; once it is through, the rest goes in one
    # full batch, not one message per call (ADR 0076).
    assert deliverer.batches - before <= 3  # 2, or 3 if the peer refused the probe while starting
    received = [r.entry.message_id for r in trio.entries(MO, Event.RECEIVED)]
    assert received == [uuid.UUID(m) for m in ids]


def _delivered_to(trio: Trio, origin: Jurisdiction, message_id: str, to: Jurisdiction) -> bool:
    status = trio.partner(origin).GetDeliveryStatus(
        partner_pb2.GetDeliveryStatusRequest(message_id=message_id), timeout=5
    )
    return any(
        r.state == partner_pb2.DELIVERY_STATE_DELIVERED and r.recipient == PROTO[to]
        for r in status.recipients
    )


def test_inbound_stream_resumes_from_cursor_and_filters_kinds(trio: Trio) -> None:
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
    trio.partner(CN).PublishWatchlistEntry(entry_request([HK]), timeout=10)
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
    first, second, third = read_stream(trio.partner(HK), expect=3)
    resumed = read_stream(trio.partner(HK), first.cursor, expect=2)
    assert [m.message_id for m in resumed] == [second.message_id, third.message_id]
    call = trio.partner(HK).StreamInbound(
        partner_pb2.StreamInboundRequest(kinds=[common_pb2.MESSAGE_KIND_WATCHLIST_ENTRY]),
        timeout=10,
    )
    only = next(iter(call))
    call.cancel()
    assert only.message_id == second.message_id
    assert only.watchlist_entry.entry_id
    with pytest.raises(grpc.RpcError) as info:
        read_stream(trio.partner(HK), "not-a-cursor", expect=1)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_partner_of_another_jurisdiction_cannot_read_inbound(trio: Trio) -> None:
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
    stub = partner_pb2_grpc.PartnerGatewayStub(trio.channel(HK, MO, Role.PARTNER))
    with pytest.raises(grpc.RpcError) as info:
        read_stream(stub, expect=1)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_graceful_stop_ends_open_streams_cleanly(trio: Trio) -> None:
    """SIGTERM's path: an open inbound stream is finished by the node (status OK), not cut."""
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
    call = trio.partner(HK).StreamInbound(partner_pb2.StreamInboundRequest(), timeout=30)
    first = next(call)
    assert first.seizure_notice.notice_id
    stopper = threading.Thread(target=trio.stop, args=(HK,))
    stopper.start()
    assert list(call) == []  # the stream ends after what was sent, without an error
    assert call.code() is grpc.StatusCode.OK
    stopper.join(10)
    assert not stopper.is_alive()


def test_amendment_may_not_drop_a_recipient(trio: Trio) -> None:
    """An entry published to CN and MO cannot be amended for CN only: MO would keep version 1
    active for ever. Revoking it to MO is the way to stop sharing."""
    hk = trio.partner(HK)
    publish = entry_request([CN, MO])
    hk.PublishWatchlistEntry(publish, timeout=10)
    amend = entry_request([CN])
    amend.entry.CopyFrom(publish.entry)
    amend.entry.version = 2
    with pytest.raises(grpc.RpcError) as info:
        hk.PublishWatchlistEntry(amend, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("addressing.recipients: must include MO")
    amend_all = entry_request([CN, MO])
    amend_all.entry.CopyFrom(amend.entry)
    assert not hk.PublishWatchlistEntry(amend_all, timeout=10).duplicate
