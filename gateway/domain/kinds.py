"""The four message kinds, in one table read by every place that dispatches on a kind (ADR 0016).

A kind differs from another by its payload type, the field that carries the payload in its
PartnerGateway submit request and in an ``InboundMessage``, the subject it is a version of,
whether it ends that subject, and its validator. Each of those is a column of :data:`KINDS`,
so a fifth kind is one more row (``tests/domain/test_kinds.py`` refuses a row left out),
never one more branch in six ``isinstance`` chains.

Pure: imports only generated messages and :mod:`gateway.domain.validate`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from google.protobuf.message import Message

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain.validate import (
    raise_if_invalid,
    validate_addressing,
    validate_addressing_but_id,
    validate_message_id,
    validate_revocation,
    validate_seizure_notice,
    validate_watchlist_entry,
    validate_withdrawal,
)
from gateway.errors import FieldViolation, InvalidArgumentError

__all__ = [
    "BY_PAYLOAD",
    "BY_REQUEST",
    "KINDS",
    "Kind",
    "RequestChecks",
    "SubmitRequest",
    "check_request",
    "kind_name",
    "kind_of",
    "kind_of_request",
    "subject_of",
    "validate_request",
]

SubmitRequest = (
    partner_pb2.PublishWatchlistEntryRequest
    | partner_pb2.RevokeWatchlistEntryRequest
    | partner_pb2.SubmitSeizureNoticeRequest
    | partner_pb2.WithdrawSeizureNoticeRequest
)
"""A PartnerGateway submit request of any kind (amendments reuse the notice's request)."""

# (payload, now, last known version) -> every violation, paths from the request.
Validator = Callable[[Any, dt.datetime, "int | None"], list[FieldViolation]]


@dataclass(frozen=True)
class Kind:
    """One row of the table: everything that differs between message kinds."""

    kind: common_pb2.MessageKind
    """The enum value, as envelopes and the exchange tables carry it."""
    name: str
    """``SEIZURE_NOTICE``: the kind as ledgers record it (the enum name without its prefix)."""
    payload: type[Message]
    """The domain message an envelope of this kind carries."""
    request: type[SubmitRequest]
    """The PartnerGateway submit request that carries it."""
    request_field: str
    """The payload's field in :attr:`request` (``notice``), also its validation path."""
    inbound_field: str
    """The payload's field in ``InboundMessage``'s ``payload`` oneof (``seizure_notice``)."""
    subject_prefix: str
    """What the payload is a version of: ``watchlist`` (an entry) or ``notice``."""
    subject_key: Callable[[Any], str]
    """The subject's id within its prefix (``<watchlist>/<entry id>``, ``<notice id>``)."""
    final: bool
    """Whether this kind ends its subject (revocation, withdrawal): no version may follow."""
    validate: Validator
    """Every violation of the payload, given the creation time and the last known version."""

    def subject(self, payload: Message) -> tuple[str, int]:
        """What ``payload`` is a version of, and its version: ``("notice:<id>", 3)``."""
        version: int = payload.version  # type: ignore[attr-defined]  # every payload has one
        return f"{self.subject_prefix}:{self.subject_key(payload)}", version

    def payload_of(self, request: SubmitRequest) -> Message:
        """The payload carried by ``request`` (a request of this kind)."""
        payload: Message = getattr(request, self.request_field)
        return payload

    def request_for(self, addressing: partner_pb2.Addressing, payload: Message) -> SubmitRequest:
        """The submit request that would carry ``payload`` with ``addressing``."""
        request: SubmitRequest = self.request(addressing=addressing)
        getattr(request, self.request_field).CopyFrom(payload)
        return request


def _watchlist_key(payload: Any) -> str:
    return f"{payload.watchlist}/{payload.entry_id}"


def _notice_key(payload: Any) -> str:
    return str(payload.notice_id)


_ROWS = (
    Kind(
        kind=common_pb2.MESSAGE_KIND_WATCHLIST_ENTRY,
        name="WATCHLIST_ENTRY",
        payload=domain_pb2.WatchlistEntry,
        request=partner_pb2.PublishWatchlistEntryRequest,
        request_field="entry",
        inbound_field="watchlist_entry",
        subject_prefix="watchlist",
        subject_key=_watchlist_key,
        final=False,
        validate=lambda p, now, last: validate_watchlist_entry(p, now=now, last_version=last),
    ),
    Kind(
        kind=common_pb2.MESSAGE_KIND_WATCHLIST_REVOCATION,
        name="WATCHLIST_REVOCATION",
        payload=domain_pb2.WatchlistRevocation,
        request=partner_pb2.RevokeWatchlistEntryRequest,
        request_field="revocation",
        inbound_field="watchlist_revocation",
        subject_prefix="watchlist",
        subject_key=_watchlist_key,
        final=True,
        validate=lambda p, now, last: validate_revocation(p, last_version=last),
    ),
    Kind(
        kind=common_pb2.MESSAGE_KIND_SEIZURE_NOTICE,
        name="SEIZURE_NOTICE",
        payload=domain_pb2.SeizureNotice,
        request=partner_pb2.SubmitSeizureNoticeRequest,
        request_field="notice",
        inbound_field="seizure_notice",
        subject_prefix="notice",
        subject_key=_notice_key,
        final=False,
        validate=lambda p, now, last: validate_seizure_notice(p, now=now, last_version=last),
    ),
    Kind(
        kind=common_pb2.MESSAGE_KIND_SEIZURE_WITHDRAWAL,
        name="SEIZURE_WITHDRAWAL",
        payload=domain_pb2.SeizureWithdrawal,
        request=partner_pb2.WithdrawSeizureNoticeRequest,
        request_field="withdrawal",
        inbound_field="seizure_withdrawal",
        subject_prefix="notice",
        subject_key=_notice_key,
        final=True,
        validate=lambda p, now, last: validate_withdrawal(p, last_version=last),
    ),
)

KINDS: Mapping[int, Kind] = MappingProxyType({int(row.kind): row for row in _ROWS})
"""Every message kind by its enum value (``MESSAGE_KIND_UNSPECIFIED`` is none)."""
BY_REQUEST: Mapping[type[Message], Kind] = MappingProxyType({row.request: row for row in _ROWS})
"""Every kind by its submit request type."""
BY_PAYLOAD: Mapping[type[Message], Kind] = MappingProxyType({row.payload: row for row in _ROWS})
"""Every kind by its payload type."""


def kind_of(kind: int) -> Kind:
    """The row of ``kind``.

    Raises:
        InvalidArgumentError: ``kind`` is not one of the four (unspecified or unknown).
    """
    row = KINDS.get(kind)
    if row is None:
        raise InvalidArgumentError(f"no subject for message kind {kind}")
    return row


def kind_of_request(request: SubmitRequest) -> Kind:
    """The row of a submit request, by its type."""
    return BY_REQUEST[type(request)]


def kind_name(kind: int) -> str:
    """``SEIZURE_NOTICE`` for ``MESSAGE_KIND_SEIZURE_NOTICE``: the kind as ledgers record it."""
    row = KINDS.get(kind)
    return (
        row.name
        if row is not None
        else common_pb2.MessageKind.Name(kind).removeprefix("MESSAGE_KIND_")
    )


def subject_of(kind: int, payload: Message) -> tuple[str, int]:
    """What a payload is a version of, and its version: ``("watchlist:<list>/<id>", 3)``.

    Raises:
        InvalidArgumentError: ``kind`` is not one of the four.
    """
    return kind_of(kind).subject(payload)


def validate_request(
    request: SubmitRequest,
    *,
    origin: int,
    now: dt.datetime,
    last_version: int | None = None,
) -> list[FieldViolation]:
    """Every violation of a PartnerGateway submit request: addressing and payload together.

    Paths start at the request (``addressing.recipients[0]``, ``notice.goods[1].quantity``).
    ``last_version`` is the last version known for the payload's entry or notice id.
    """
    found: list[FieldViolation] = []
    if request.HasField("addressing"):
        found += validate_addressing(request.addressing, origin=origin)
    else:
        found.append(FieldViolation("addressing", "required"))
    return found + _payload_violations(request, now, last_version)


def _payload_violations(
    request: SubmitRequest, now: dt.datetime, last_version: int | None
) -> list[FieldViolation]:
    """The violations of ``request``'s payload (its kind's rules), or that it has none."""
    row = kind_of_request(request)
    if request.HasField(row.request_field):
        return row.validate(row.payload_of(request), now, last_version)
    return [FieldViolation(row.request_field, "required")]


def check_request(
    request: SubmitRequest,
    *,
    origin: int,
    now: dt.datetime,
    last_version: int | None = None,
) -> None:
    """:func:`validate_request`, raising.

    Raises:
        ValidationError: listing every violation, when there is at least one.
    """
    raise_if_invalid(validate_request(request, origin=origin, now=now, last_version=last_version))


AddressingKey = tuple[tuple[common_pb2.Jurisdiction, ...], bytes | None]
"""An addressing's recipients and serialized handling (None when unset): all that its
violations but the message id's depend on, for a given origin."""


class RequestChecks:
    """:func:`check_request` for the many requests of one bulk call, from one ``origin`` at
    one ``now``: the same violations in the same order, but the addressing's recipients and
    handling (the same for most entries of a call) are validated once per distinct pair
    (ADR 0085). Not thread-safe: one per call."""

    def __init__(self, *, origin: common_pb2.Jurisdiction, now: dt.datetime) -> None:
        self._origin = origin
        self._now = now
        self._addressing: dict[AddressingKey, list[FieldViolation]] = {}

    def check(self, request: SubmitRequest, *, last_version: int | None = None) -> AddressingKey:
        """:func:`check_request` of ``request``; returns what it read of the addressing to
        key its check: the recipients and the serialized handling (None when unset), which
        the envelope's header carries as they are (:class:`gateway.envelope.Sealer`).

        Raises:
            ValidationError: listing every violation, when there is at least one.
        """
        found: list[FieldViolation] = []
        if request.HasField("addressing"):
            addressing = request.addressing
            recipients = tuple(addressing.recipients)
            handling = (
                addressing.handling.SerializeToString() if addressing.HasField("handling") else None
            )
            key = (recipients, handling)
            rest = self._addressing.get(key)
            if rest is None:
                rest = self._addressing[key] = validate_addressing_but_id(
                    addressing, origin=self._origin
                )
            found += validate_message_id(addressing.message_id)
            found += rest
        else:
            key = ((), None)
            found.append(FieldViolation("addressing", "required"))
        raise_if_invalid(found + _payload_violations(request, self._now, last_version))
        return key
