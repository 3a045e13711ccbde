"""The table of message kinds covers the protocol whole: a fifth kind cannot be added half-way."""

from __future__ import annotations

import datetime as dt

import pytest

from customs.gateway.v1 import common_pb2, partner_pb2
from gateway.domain import fixtures
from gateway.domain.kinds import (
    BY_PAYLOAD,
    BY_REQUEST,
    KINDS,
    Kind,
    kind_name,
    kind_of,
    subject_of,
    validate_request,
)
from gateway.envelope import PAYLOAD_TYPES
from gateway.errors import InvalidArgumentError

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)

# Every PartnerGateway RPC that submits one message, and the request it takes.
SUBMIT_RPCS = (
    "PublishWatchlistEntry",
    "RevokeWatchlistEntry",
    "SubmitSeizureNotice",
    "AmendSeizureNotice",
    "WithdrawSeizureNotice",
)


def test_every_message_kind_of_the_proto_has_exactly_one_row() -> None:
    declared = {v.number for v in common_pb2.MessageKind.DESCRIPTOR.values if v.number != 0}
    assert set(KINDS) == declared
    assert 0 not in KINDS  # MESSAGE_KIND_UNSPECIFIED is no kind


def test_every_field_of_the_inbound_payload_oneof_is_one_kind() -> None:
    oneof = partner_pb2.InboundMessage.DESCRIPTOR.oneofs_by_name["payload"]
    fields = {f.name: f.message_type.full_name for f in oneof.fields}
    rows = {row.inbound_field: row.payload.DESCRIPTOR.full_name for row in KINDS.values()}
    assert rows == fields


def test_every_submit_rpc_takes_a_request_of_the_table_and_each_request_is_used() -> None:
    service = partner_pb2.DESCRIPTOR.services_by_name["PartnerGateway"]
    taken = {service.methods_by_name[name].input_type.full_name for name in SUBMIT_RPCS}
    assert taken == {t.DESCRIPTOR.full_name for t in BY_REQUEST}
    # Any other RPC answering a SubmitResponse would be a submit the table does not know.
    submits = {m.name for m in service.methods if m.output_type.name == "SubmitResponse"}
    assert submits == set(SUBMIT_RPCS)


@pytest.mark.parametrize("row", list(KINDS.values()), ids=lambda r: r.name)
def test_each_row_is_consistent_with_the_proto(row: Kind) -> None:
    request_fields = row.request.DESCRIPTOR.fields_by_name
    assert set(request_fields) == {"addressing", row.request_field}
    assert request_fields[row.request_field].message_type is row.payload.DESCRIPTOR
    assert row.name == common_pb2.MessageKind.Name(row.kind).removeprefix("MESSAGE_KIND_")
    assert kind_name(row.kind) == row.name
    assert PAYLOAD_TYPES[row.kind] is row.payload
    assert BY_PAYLOAD[row.payload] is row
    assert BY_REQUEST[row.request] is row
    assert "version" in row.payload.DESCRIPTOR.fields_by_name


def test_subjects_rows_and_final_kinds_are_the_documented_ones() -> None:
    entry = fixtures.seed_publish_request(NOW).entry
    subject = subject_of(common_pb2.MESSAGE_KIND_WATCHLIST_ENTRY, entry)
    assert subject == (f"watchlist:{entry.watchlist}/{entry.entry_id}", entry.version)
    notice = fixtures.seed_notice_request(NOW).notice
    assert subject_of(common_pb2.MESSAGE_KIND_SEIZURE_NOTICE, notice) == (
        f"notice:{notice.notice_id}",
        notice.version,
    )
    finals = {row.name for row in KINDS.values() if row.final}
    assert finals == {"WATCHLIST_REVOCATION", "SEIZURE_WITHDRAWAL"}


def test_an_unknown_kind_has_no_subject() -> None:
    with pytest.raises(InvalidArgumentError, match="no subject for message kind 0"):
        kind_of(common_pb2.MESSAGE_KIND_UNSPECIFIED)


@pytest.mark.parametrize("row", list(KINDS.values()), ids=lambda r: r.name)
def test_a_request_without_its_payload_names_the_row_field(row: Kind) -> None:
    problems = validate_request(row.request(), origin=common_pb2.JURISDICTION_CN, now=NOW)
    assert [(p.field, p.description) for p in problems] == [
        ("addressing", "required"),
        (row.request_field, "required"),
    ]
