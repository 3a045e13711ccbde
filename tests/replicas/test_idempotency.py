"""Idempotency across replicas (issue 14 point 2, ADR 0073): one message id sent to two replicas
of CN at the same moment is one ledger entry and one delivery, and both callers get the same
answer; a submit retried on the other replica gets the first answer again."""

from __future__ import annotations

import collections
import threading
import uuid
from typing import Any

import pytest

from customs.gateway.v1 import partner_pb2, partner_pb2_grpc
from gateway.ledger import Event, decode_record
from gateway.pki import Jurisdiction, Role
from gateway.server import Node
from tests.exchange.conftest import notice_request, read_stream
from tests.support import World, channel_to, wait_for

pytestmark = pytest.mark.postgres

CN, HK = Jurisdiction.CN, Jurisdiction.HK


def _stub(world: World, node: Node) -> Any:
    return partner_pb2_grpc.PartnerGatewayStub(
        channel_to(world, node, world.cred(node.config.jurisdiction, Role.PARTNER))
    )


def _entries(node: Node, event: Event) -> list[Any]:
    ledger = node.ledger
    records = [decode_record(leaf) for _, leaf in ledger.leaves(0, ledger.size())]
    return [r.entry for r in records if r.entry.event is event]


def test_one_id_sent_to_both_replicas_at_once_is_one_entry_and_one_delivery(
    world: World, nodes: dict[str, Node]
) -> None:
    stubs = [_stub(world, nodes["cn-1"]), _stub(world, nodes["cn-2"])]
    requests = [notice_request(CN, [HK]) for _ in range(20)]
    answers: dict[str, list[Any]] = collections.defaultdict(list)
    for request in requests:
        start = threading.Barrier(2)

        def send(stub: Any, request: Any = request, start: threading.Barrier = start) -> None:
            start.wait()
            answers[request.addressing.message_id].append(
                stub.SubmitSeizureNotice(request, timeout=10)
            )

        threads = [threading.Thread(target=send, args=(s,)) for s in stubs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for message_id, (a, b) in answers.items():
        assert (a.ledger_index, a.digest, a.accepted_at) == (
            b.ledger_index,
            b.digest,
            b.accepted_at,
        ), message_id
        assert sorted([a.duplicate, b.duplicate]) == [False, True], message_id

    ids = {uuid.UUID(r.addressing.message_id) for r in requests}
    sent = collections.Counter(e.message_id for e in _entries(nodes["cn-1"], Event.SENT))
    assert {m: sent[m] for m in ids} == dict.fromkeys(ids, 1)
    wait_for(
        lambda: ids <= {e.message_id for e in _entries(nodes["cn-2"], Event.RECEIPT)},
        what="a receipt for every message",
    )
    receipts = collections.Counter(e.message_id for e in _entries(nodes["cn-2"], Event.RECEIPT))
    assert {m: receipts[m] for m in ids} == dict.fromkeys(ids, 1)
    received = collections.Counter(e.message_id for e in _entries(nodes["hk"], Event.RECEIVED))
    assert {m: received[m] for m in ids} == dict.fromkeys(ids, 1)


def test_a_submit_retried_on_the_other_replica_gets_the_first_answer(
    world: World, nodes: dict[str, Node]
) -> None:
    request = notice_request(CN, [HK])
    first = _stub(world, nodes["cn-1"]).SubmitSeizureNotice(request, timeout=10)
    again = _stub(world, nodes["cn-2"]).SubmitSeizureNotice(request, timeout=10)
    assert not first.duplicate
    assert again.duplicate
    assert (again.ledger_index, again.digest, again.accepted_at) == (
        first.ledger_index,
        first.digest,
        first.accepted_at,
    )


def test_every_replica_streams_and_acknowledges_what_any_replica_received(
    world: World, nodes: dict[str, Node]
) -> None:
    """HK delivers to whichever CN replica its round robin picks; a stream open on each replica
    gets the message (the other replica's commit woke it through LISTEN/NOTIFY), and an
    acknowledgement through either replica is one ledger entry."""
    cn = [nodes["cn-1"], nodes["cn-2"]]
    for node in cn:
        assert node.listener is not None
        assert node.listener.listening.wait(5)
    heard = [node.listener.received for node in cn if node.listener is not None]
    request = notice_request(HK, [CN])
    _stub(world, nodes["hk"]).SubmitSeizureNotice(request, timeout=10)
    message_id = request.addressing.message_id
    for node in cn:
        (message,) = read_stream(_stub(world, node), expect=1, timeout=30)
        assert message.message_id == message_id

    def notified() -> bool:  # both listeners heard the commit (the recorder's own included)
        now = [node.listener.received for node in cn if node.listener is not None]
        return all(later > before for later, before in zip(now, heard, strict=True))

    wait_for(notified, what="the commit's notification at both replicas")
    first = _stub(world, cn[1]).AcknowledgeInbound(
        partner_pb2.AcknowledgeInboundRequest(message_id=message_id), timeout=10
    )
    again = _stub(world, cn[0]).AcknowledgeInbound(
        partner_pb2.AcknowledgeInboundRequest(message_id=message_id), timeout=10
    )
    assert not first.duplicate
    assert again.duplicate
    assert again.ledger_index == first.ledger_index
    acks = [e for e in _entries(cn[0], Event.ACKNOWLEDGED) if str(e.message_id) == message_id]
    assert len(acks) == 1
