"""A bulk call's envelopes, rows and refusals are those of one check and one seal per entry
(ADR 0085): the call validates each distinct addressing once and seals with a
:class:`gateway.envelope.Sealer`, and neither may change a byte or a violation.

One node in this process (not started: no gRPC, no peers), a bulk call whose entries mix
addressings (two recipient lists, handling with and without a caveat, onward dissemination
allowed or not; refused: no handling, a bad message id, a recipient not releasable, no
addressing), compared with the header built as a message and ``seal_with_digest``, and with
``validate_request``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.rpc import error_details_pb2

from customs.gateway.v1 import common_pb2, envelope_pb2, partner_pb2
from gateway.domain.kinds import kind_of_request, validate_request
from gateway.envelope import envelope_digest, proto_jurisdiction, seal_with_digest
from gateway.exchange import _store as store
from gateway.exchange._shared import timestamp
from gateway.exchange.submit import PUBLISH
from gateway.ledger import Event
from gateway.server import Node, load_config
from tests.exchange.conftest import CN, HK, MO, PROTO, entry_request
from tests.support import World

NOW = dt.datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=dt.UTC)  # whole milliseconds


@pytest.fixture
def node(world: World, tmp_path: Path) -> Iterator[Node]:
    node = Node(load_config(world.write_config(HK, tmp_path / "hk-data", peers={CN: 1, MO: 2})))
    node.exchange._clock = lambda: NOW
    try:
        yield node
    finally:
        node.ledger.close()


def _requests() -> list[partner_pb2.PublishWatchlistEntryRequest]:
    both, cn = [CN, MO], [CN]
    requests = [entry_request(both, NOW) for _ in range(4)] + [entry_request(cn, NOW)]
    requests[1].addressing.handling.caveat = "For customs enforcement use only"
    requests[2].addressing.handling.onward_dissemination_allowed = True
    requests.append(entry_request(both, NOW))  # the memo's pair again, after others
    missing = entry_request(both, NOW)
    missing.addressing.ClearField("handling")  # refused: handling required
    bad_id = entry_request(both, NOW)
    bad_id.addressing.message_id = "not-a-uuid"  # refused, its addressing otherwise good
    not_releasable = entry_request(both, NOW)
    del not_releasable.addressing.handling.releasable_to[:]
    not_releasable.addressing.handling.releasable_to.append(PROTO[CN])
    unaddressed = entry_request(both, NOW)
    unaddressed.ClearField("addressing")  # refused: addressing required
    return [*requests, missing, bad_id, not_releasable, unaddressed, entry_request(both, NOW)]


def _violations(result: partner_pb2.BulkEntryResult) -> list[tuple[str, str]]:
    found = []
    for detail in result.refused.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        found += [(v.field, v.description) for v in bad.field_violations]
    return found


def test_bulk_envelopes_and_refusals_are_those_of_one_check_and_seal_per_entry(
    node: Node,
) -> None:
    ex = node.exchange
    requests = _requests()
    response = ex.submit_many(requests, PUBLISH, "entries")
    assert (response.accepted, response.refused) == (len(requests) - 4, 4)
    me = proto_jurisdiction(HK)
    reader = ex.ledger.reader()
    for i, (request, result) in enumerate(zip(requests, response.results, strict=True)):
        violations = validate_request(request, origin=me, now=NOW)
        if violations:
            assert result.outcome == partner_pb2.BULK_OUTCOME_REFUSED
            assert _violations(result) == [
                (f"entries[{i}].{v.field}", v.description) for v in violations
            ]
            continue
        assert result.outcome == partner_pb2.BULK_OUTCOME_ACCEPTED
        addressing = request.addressing
        header = envelope_pb2.EnvelopeHeader(  # as a single submit builds it
            message_id=addressing.message_id,
            kind=kind_of_request(request).kind,
            origin=me,
            origin_node=ex.signer.identity.uri,
            recipients=addressing.recipients,
            created_at=timestamp(NOW),
            handling=addressing.handling,
        )
        envelope, digest = seal_with_digest(header, request.entry.SerializeToString(), ex.signer)
        row = store.MessageRow.get(reader, HK.value, addressing.message_id)
        assert row is not None
        assert row.envelope == envelope.SerializeToString()
        assert row.digest == digest == result.accepted.digest
        assert envelope_digest(envelope_pb2.Envelope.FromString(row.envelope)) == digest
        records = ex.ledger.entries(row.ledger_index, row.ledger_index + len(addressing.recipients))
        assert [(r.entry.event, r.entry.counterpart, r.entry.digests) for r in records] == [
            (Event.SENT, common_pb2.Jurisdiction.Name(j).removeprefix("JURISDICTION_"), (digest,))
            for j in addressing.recipients
        ]
        assert records[0].entry.message_id == uuid.UUID(addressing.message_id)
