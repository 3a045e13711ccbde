"""Bulk acknowledgements (ADR 0056) with three real nodes: ``AcknowledgeInboundMessages`` answers
per id, in order, records each acknowledged message as its own ``acknowledged`` entry once per
partner (across calls and within one call), refuses unknown ids alone (NOT_FOUND) and an
ambiguous id with its field (INVALID_ARGUMENT), never INTERNAL; a retried call creates nothing;
only the node's own partners may call it; the ledger with the entries verifies."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from customs.gateway.v1 import partner_pb2, partner_pb2_grpc
from gateway.cli import main
from gateway.ledger import Event
from gateway.pki import Jurisdiction, Role
from tests.exchange.conftest import CN, HK, MO, PROTO, Trio, entry_request, read_stream
from tests.exchange.test_bulk import _bad_request, _fetch, _witnessed_by_both
from tests.exchange.test_refusals import _deliver, _envelope
from tests.interop.examples import code_example
from tests.support import wait_for

OUTCOME = partner_pb2.BulkOutcome
PARTNER = "spiffe://cn.customs-exchange/partner/risk"


def _ack(message_id: str, origin: Jurisdiction | None = None) -> Any:
    request = partner_pb2.AcknowledgeInboundRequest(message_id=message_id)
    if origin is not None:
        request.origin = PROTO[origin]
    return request


def _received_at_cn(trio: Trio, count: int) -> list[Any]:
    """``count`` watchlist entries published at HK to CN, as CN's partner reads them."""
    requests = [entry_request([CN]) for _ in range(count)]
    trio.partner(HK).PublishWatchlistEntries(
        partner_pb2.PublishWatchlistEntriesRequest(entries=requests), timeout=30
    )
    return read_stream(trio.partner(CN), expect=count)


def test_bulk_acknowledgement_answers_per_id_and_ledgers_each_message_once(
    trio: Trio, tmp_path: Path
) -> None:
    messages = _received_at_cn(trio, 6)
    ids = [m.message_id for m in messages]
    cn = trio.partner(CN)
    before = cn.AcknowledgeInbound(_ack(ids[0]), timeout=5)  # acknowledged alone, before
    unknown = str(uuid.uuid4())
    request = partner_pb2.AcknowledgeInboundMessagesRequest(
        acknowledgements=[
            _ack(ids[0]),  # 0: acknowledged before: DUPLICATE with that entry
            _ack(ids[1]),  # 1: new
            _ack(ids[2], HK),  # 2: new, origin named
            _ack(unknown),  # 3: no such message: NOT_FOUND, alone
            _ack(ids[1]),  # 4: named again in the same call: DUPLICATE of position 1
            _ack(ids[3], MO),  # 5: not received from MO: NOT_FOUND
            _ack("not-a-uuid\x00"),  # 6: never an id a node receives: NOT_FOUND
            _ack(ids[4]),  # 7: new
        ]
    )
    answer = cn.AcknowledgeInboundMessages(request, timeout=10)

    assert [r.position for r in answer.results] == list(range(8))
    assert [r.message_id for r in answer.results] == [
        a.message_id for a in request.acknowledgements
    ]
    assert [r.outcome for r in answer.results] == [
        OUTCOME.BULK_OUTCOME_DUPLICATE,
        OUTCOME.BULK_OUTCOME_ACCEPTED,
        OUTCOME.BULK_OUTCOME_ACCEPTED,
        OUTCOME.BULK_OUTCOME_REFUSED,
        OUTCOME.BULK_OUTCOME_DUPLICATE,
        OUTCOME.BULK_OUTCOME_REFUSED,
        OUTCOME.BULK_OUTCOME_REFUSED,
        OUTCOME.BULK_OUTCOME_ACCEPTED,
    ]
    assert (answer.acknowledged, answer.duplicates, answer.refused) == (3, 2, 3)
    assert answer.results[0].acknowledged.ledger_index == before.ledger_index
    assert answer.results[0].acknowledged.duplicate
    new = [answer.results[i].acknowledged for i in (1, 2, 7)]
    assert not any(a.duplicate for a in new)
    # one commit: the call's new entries are consecutive, in request order
    first = new[0].ledger_index
    assert [a.ledger_index for a in new] == [first, first + 1, first + 2]
    assert answer.results[4].acknowledged.ledger_index == new[0].ledger_index
    for i in (3, 5, 6):
        assert answer.results[i].refused.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert "no inbound message" in answer.results[i].refused.message

    # Each acknowledged message is its own "acknowledged" entry, once, naming the partner and
    # the digest the node received.
    received = {str(r.entry.message_id): r for r in trio.entries(CN, Event.RECEIVED)}
    acks = trio.entries(CN, Event.ACKNOWLEDGED)
    assert sorted(str(r.entry.message_id) for r in acks) == sorted([ids[0], ids[1], ids[2], ids[4]])
    for record in acks:
        assert record.entry.counterpart == PARTNER
        assert record.entry.digests == received[str(record.entry.message_id)].entry.digests
        assert record.entry.kind == "WATCHLIST_ENTRY"

    # The same call again creates nothing: what was recorded answers DUPLICATE, the same.
    size = trio.nodes[CN].ledger.size()
    again = cn.AcknowledgeInboundMessages(request, timeout=10)
    assert (again.acknowledged, again.duplicates, again.refused) == (0, 5, 3)
    for first, second in zip(answer.results, again.results, strict=True):
        if first.outcome != OUTCOME.BULK_OUTCOME_REFUSED:
            assert second.acknowledged.ledger_index == first.acknowledged.ledger_index
            assert second.acknowledged.duplicate
    assert trio.nodes[CN].ledger.size() in (size, size + 1)  # at most a checkpoint's witness
    # and the single call agrees with the bulk one
    single = cn.AcknowledgeInbound(_ack(ids[2]), timeout=5)
    assert (single.ledger_index, single.duplicate) == (new[1].ledger_index, True)

    # CN's ledger, with these entries, verifies (the audit CLI over what the node serves).
    wait_for(lambda: _witnessed_by_both(trio, CN), what="CN cosigned")
    export = tmp_path / "cn.export"
    assert _fetch(trio, CN, export) == 0
    bundle = str(trio.world.bundle)
    assert main(["audit", "verify", str(export), "--trust-bundle", bundle, "--no-progress"]) == 0


def test_an_id_two_origins_used_is_refused_alone_with_its_field(trio: Trio) -> None:
    """An id received from two origins must name its origin: INVALID_ARGUMENT on
    ``acknowledgements[i].origin`` for that one; the others of the call are recorded."""
    message_id = str(uuid.uuid4())
    for origin in (HK, CN):
        (result,) = _deliver(trio, origin, MO, [_envelope(trio, origin, [MO], message_id)]).results
        assert result.HasField("receipt"), result.error.message
    (other,) = _deliver(trio, HK, MO, [_envelope(trio, HK, [MO], str(uuid.uuid4()))]).results
    assert other.HasField("receipt")
    read = read_stream(trio.partner(MO), expect=3)
    other_id = next(m.message_id for m in read if m.message_id != message_id)
    answer = trio.partner(MO).AcknowledgeInboundMessages(
        partner_pb2.AcknowledgeInboundMessagesRequest(
            acknowledgements=[_ack(other_id), _ack(message_id), _ack(message_id, CN)]
        ),
        timeout=10,
    )
    assert [r.outcome for r in answer.results] == [
        OUTCOME.BULK_OUTCOME_ACCEPTED,
        OUTCOME.BULK_OUTCOME_REFUSED,
        OUTCOME.BULK_OUTCOME_ACCEPTED,
    ]
    refused = answer.results[1].refused
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert _bad_request(refused) == ["acknowledgements[1].origin"]
    assert "was received from" in refused.message
    acks = trio.entries(MO, Event.ACKNOWLEDGED)
    assert sorted((str(r.entry.message_id), r.entry.digests[0]) for r in acks) == sorted(
        (str(r.entry.message_id), r.entry.digests[0])
        for r in trio.entries(MO, Event.RECEIVED)
        if (str(r.entry.message_id), r.entry.counterpart) in {(other_id, "HK"), (message_id, "CN")}
    )


def test_bulk_acknowledgements_beyond_the_limits_are_refused_whole(trio: Trio) -> None:
    (message,) = _received_at_cn(trio, 1)
    cn = trio.partner(CN)
    limits = trio.nodes[CN].limits
    size = trio.nodes[CN].ledger.size()
    too_many = [_ack(message.message_id)] * (limits.bulk_entries + 1)
    with pytest.raises(grpc.RpcError) as caught:
        cn.AcknowledgeInboundMessages(
            partner_pb2.AcknowledgeInboundMessagesRequest(acknowledgements=too_many), timeout=10
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"(bulk_entries {limits.bulk_entries})" in (caught.value.details() or "")
    with pytest.raises(grpc.RpcError) as caught:
        cn.AcknowledgeInboundMessages(partner_pb2.AcknowledgeInboundMessagesRequest(), timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert trio.nodes[CN].ledger.size() - size <= 1  # nothing recorded (a checkpoint's witness)
    assert not trio.entries(CN, Event.ACKNOWLEDGED)


@pytest.mark.parametrize(
    ("who", "role"),
    [
        pytest.param(HK, Role.PARTNER, id="another-jurisdictions-partner"),
        pytest.param(CN, Role.AUDITOR, id="own-auditor"),
        pytest.param(HK, Role.NODE, id="peer-node"),
    ],
)
def test_only_the_nodes_own_partners_may_acknowledge(
    trio: Trio, who: Jurisdiction, role: Role
) -> None:
    (message,) = _received_at_cn(trio, 1)
    stub = partner_pb2_grpc.PartnerGatewayStub(trio.channel(CN, who, role))
    with pytest.raises(grpc.RpcError) as caught:
        stub.AcknowledgeInboundMessages(
            partner_pb2.AcknowledgeInboundMessagesRequest(
                acknowledgements=[_ack(message.message_id)]
            ),
            timeout=5,
        )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "rule partner-own-jurisdiction" in (caught.value.details() or "")
    assert not trio.entries(CN, Event.ACKNOWLEDGED)


def test_the_documented_python_acknowledger_runs_against_a_real_node(trio: Trio) -> None:
    """docs/partners.md's Python acknowledger, as written, in calls (of 2 here) and again."""
    namespace: dict[str, Any] = {}
    exec(compile(code_example("python", "acknowledge"), "partners.md", "exec"), namespace)
    namespace["ACK_BATCH"] = 2
    messages = _received_at_cn(trio, 5)
    assert namespace["acknowledge"](trio.partner(CN), messages) == []
    acks = trio.entries(CN, Event.ACKNOWLEDGED)
    assert sorted(str(r.entry.message_id) for r in acks) == sorted(m.message_id for m in messages)
    assert namespace["acknowledge"](trio.partner(CN), messages) == []  # duplicates, not refused
    assert len(trio.entries(CN, Event.ACKNOWLEDGED)) == 5
