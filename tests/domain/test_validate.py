"""Bad requests, one row per validation rule: status INVALID_ARGUMENT and the exact field paths."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from customs.gateway.v1 import common_pb2 as c
from customs.gateway.v1 import domain_pb2 as d
from customs.gateway.v1 import partner_pb2 as p
from gateway.domain import fixtures
from gateway.domain.kinds import check_request, validate_request
from gateway.domain.validate import (
    ValidationError,
    check_declaration,
    to_bad_request,
)

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
CN, HK, MO = c.JURISDICTION_CN, c.JURISDICTION_HK, c.JURISDICTION_MO


def notice_request() -> p.SubmitSeizureNoticeRequest:
    return fixtures.seed_notice_request(NOW)


def publish_request() -> p.PublishWatchlistEntryRequest:
    return fixtures.seed_publish_request(NOW)


def revoke_request() -> p.RevokeWatchlistEntryRequest:
    return p.RevokeWatchlistEntryRequest(
        addressing=publish_request().addressing, revocation=fixtures.seed_revocation(2)
    )


def withdraw_request() -> p.WithdrawSeizureNoticeRequest:
    return p.WithdrawSeizureNoticeRequest(
        addressing=notice_request().addressing,
        withdrawal=d.SeizureWithdrawal(
            notice_id=fixtures.SEED_NOTICE_ID, version=2, reason="entered in error"
        ),
    )


ORIGIN = {
    "notice": CN,
    "publish": HK,
    "revoke": HK,
    "withdraw": CN,
}
BUILD: dict[str, Callable[[], Any]] = {
    "notice": notice_request,
    "publish": publish_request,
    "revoke": revoke_request,
    "withdraw": withdraw_request,
}


def ts(when: dt.datetime) -> Any:
    return fixtures.timestamp(when)


def _set(path: str, value: object) -> Callable[[Any], None]:
    """A mutator setting an attribute given as a dotted path with [i] indexes."""

    def mutate(request: Any) -> None:
        *parents, leaf = path.split(".")
        target = request
        for part in parents:
            name, _, index = part.partition("[")
            target = getattr(target, name)
            if index:
                target = target[int(index[:-1])]
        name, _, index = leaf.partition("[")
        if index:
            getattr(target, name)[int(index[:-1])] = value
        elif hasattr(value, "CopyFrom"):
            getattr(target, name).CopyFrom(value)
        else:
            setattr(target, name, value)

    return mutate


def _extend(path: str, *values: object) -> Callable[[Any], None]:
    def mutate(request: Any) -> None:
        target = request
        for part in path.split("."):
            target = getattr(target, part)
        target.extend(values)

    return mutate


def _clear(path: str) -> Callable[[Any], None]:
    def mutate(request: Any) -> None:
        *parents, leaf = path.split(".")
        target = request
        for part in parents:
            target = getattr(target, part)
        target.ClearField(leaf)

    return mutate


# (request kind, mutation, last_version, expected paths): one row per rule.
RULES = [
    pytest.param(
        "notice",
        _set("notice.container_numbers[1]", "TGHU7654321"),
        None,
        ["notice.container_numbers[1]"],
        id="iso6346-check-digit",
    ),
    pytest.param(
        "notice",
        _set("notice.conveyance.identifiers[0].value", "IMO9074728"),
        None,
        ["notice.conveyance.identifiers[0].value"],
        id="imo-check-digit",
    ),
    pytest.param(
        "notice",
        _set("notice.parties[0].identifiers[0].value", "91451481MA5KXQ7T16"),
        None,
        ["notice.parties[0].identifiers[0].value"],
        id="uscc-check-character",
    ),
    pytest.param(
        "notice",
        _set("notice.goods[0].actual_hs_code", "8110"),
        None,
        ["notice.goods[0].actual_hs_code"],
        id="hs-code-too-short",
    ),
    pytest.param(
        "notice",
        _set("notice.goods[1].declared_hs_code", "771010"),
        None,
        ["notice.goods[1].declared_hs_code"],
        id="hs-code-reserved-chapter",
    ),
    pytest.param(
        "publish",
        _set("entry.hs_codes[1]", "99"),
        None,
        ["entry.hs_codes[1]"],
        id="entry-hs-code",
    ),
    pytest.param(
        "notice",
        _set("notice.route.transit_countries[0]", "XV"),
        None,
        ["notice.route.transit_countries[0]"],
        id="iso3166-country",
    ),
    pytest.param(
        "notice",
        _set("notice.place", "XXSHK"),
        None,
        ["notice.place"],
        id="unlocode-place",
    ),
    pytest.param(
        "notice",
        _set("notice.route.places[1]", "VN HP"),
        None,
        ["notice.route.places[1]"],
        id="unlocode-route",
    ),
    pytest.param(
        "notice",
        _set("notice.goods[0].quantity.unit", "KG"),
        None,
        ["notice.goods[0].quantity.unit"],
        id="unit-unknown",
    ),
    pytest.param(
        "notice",
        _set("notice.goods[1].quantity.amount", "0"),
        None,
        ["notice.goods[1].quantity.amount"],
        id="quantity-not-positive",
    ),
    pytest.param(
        "notice",
        _set("notice.goods[0].quantity.amount", "1.2345"),
        None,
        ["notice.goods[0].quantity.amount"],
        id="quantity-too-many-decimals",
    ),
    pytest.param(
        "notice",
        _set("notice.goods[0].value.currency", "RMB"),
        None,
        ["notice.goods[0].value.currency"],
        id="currency-iso4217",
    ),
    pytest.param(
        "notice",
        _set("notice.seized_at", ts(NOW + dt.timedelta(minutes=6))),
        None,
        ["notice.seized_at"],
        id="time-in-future-beyond-skew",
    ),
    pytest.param(
        "notice",
        _set("notice.retain_until", ts(NOW - dt.timedelta(days=3))),
        None,
        ["notice.retain_until"],
        id="retention-before-seizure",
    ),
    pytest.param(
        "publish",
        _set("entry.validity.valid_until", ts(NOW - dt.timedelta(days=2))),
        None,
        # before valid_from, and already passed: both reasons, one path
        ["entry.validity.valid_until", "entry.validity.valid_until"],
        id="validity-reversed",
    ),
    pytest.param(
        "publish",
        _set("entry.validity.valid_until", ts(NOW + dt.timedelta(days=800))),
        None,
        ["entry.validity.valid_until"],
        id="validity-longer-than-2-years",
    ),
    pytest.param(
        "publish",
        _set("entry.retain_until", ts(NOW + dt.timedelta(days=10))),
        None,
        ["entry.retain_until"],
        id="retention-before-validity-end",
    ),
    pytest.param(
        "publish",
        _clear("entry.validity"),
        None,
        ["entry.validity"],
        id="validity-missing",
    ),
    pytest.param(
        "publish", _set("entry.version", 2), 2, ["entry.version"], id="amendment-same-version"
    ),
    pytest.param(
        "publish", _set("entry.version", 3), None, ["entry.version"], id="new-entry-not-v1"
    ),
    pytest.param("notice", _set("notice.version", 2), 3, ["notice.version"], id="amendment-older"),
    pytest.param(
        "revoke", _set("revocation.version", 1), None, ["revocation.version"], id="revocation-v1"
    ),
    pytest.param(
        "withdraw",
        _set("withdrawal.reason", "  "),
        None,
        ["withdrawal.reason"],
        id="withdrawal-reason",
    ),
    pytest.param(
        "notice",
        _extend("addressing.recipients", 7),
        None,
        ["addressing.recipients[2]"],
        id="recipient-unknown-jurisdiction",
    ),
    pytest.param(
        "notice",
        _extend("addressing.recipients", CN),
        None,
        ["addressing.recipients[2]"],
        id="recipient-is-origin",
    ),
    pytest.param(
        "notice",
        _extend("addressing.recipients", HK),
        None,
        ["addressing.recipients[2]"],
        id="recipient-twice",
    ),
    pytest.param(
        "publish",
        _set("addressing.handling.releasable_to[1]", CN),
        None,
        ["addressing.handling.releasable_to[1]", "addressing.recipients[1]"],
        id="recipient-not-releasable",
    ),
    pytest.param(
        "publish",
        _clear("addressing.recipients"),
        None,
        ["addressing.recipients"],
        id="recipients-empty",
    ),
    pytest.param(
        "notice",
        _set("addressing.message_id", "7E2C9B40-1D3F-4A6E-8B05-C9F1A2D3E4B6"),
        None,
        ["addressing.message_id"],
        id="message-id-not-canonical-uuid",
    ),
    pytest.param(
        "notice",
        _set("notice.case_reference", ""),
        None,
        ["notice.case_reference"],
        id="required-text",
    ),
    pytest.param(
        "notice",
        _clear("notice.typologies"),
        None,
        ["notice.typologies"],
        id="typology-required",
    ),
    pytest.param(
        "notice",
        _set("notice.attachments[0].sha256", "AB" * 32),
        None,
        ["notice.attachments[0].sha256"],
        id="attachment-digest-hex",
    ),
    pytest.param(
        "notice",
        _set("notice.parties[1].watchlist_refs[0].entry_id", "not-a-uuid"),
        None,
        ["notice.parties[1].watchlist_refs[0].entry_id"],
        id="watchlist-ref",
    ),
    pytest.param(
        "publish",
        _set("entry.names[0].alias", True),
        None,
        ["entry.names"],
        id="organisation-needs-primary-name",
    ),
    pytest.param(
        "publish",
        _set("entry.watchlist", "Strategic_Minerals"),
        None,
        ["entry.watchlist"],
        id="watchlist-name",
    ),
    pytest.param(
        "publish",
        _set("entry.risk_level", 9),
        None,
        ["entry.risk_level"],
        id="enum-unknown",
    ),
    pytest.param(
        "notice",
        _clear("notice"),
        None,
        ["notice"],
        id="payload-missing",
    ),
    # Timestamps are converted without Timestamp.ToDatetime; its range is still checked.
    pytest.param(
        "publish",
        _set("entry.retain_until", Timestamp(seconds=253_402_300_800)),
        None,
        ["entry.retain_until"],
        id="time-after-year-9999",
    ),
    pytest.param(
        "notice",
        _set("notice.seized_at", Timestamp(seconds=-62_135_596_801)),
        None,
        ["notice.seized_at"],
        id="time-before-year-1",
    ),
    pytest.param(
        "publish",
        _set("entry.validity.valid_from", Timestamp(seconds=1, nanos=1_000_000_000)),
        None,
        ["entry.validity.valid_from"],
        id="time-nanos-out-of-range",
    ),
    # A list of countries checked as a whole first: each bad item still named at its index.
    pytest.param(
        "publish",
        _extend("entry.countries", "", "HK", "XX"),
        None,
        ["entry.countries[1]", "entry.countries[2]", "entry.countries[3]"],
        id="countries-blank-repeated-unknown",
    ),
]


@pytest.mark.parametrize(("kind", "mutate", "last_version", "paths"), RULES)
def test_bad_request_is_refused_naming_each_field(
    kind: str, mutate: Callable[[Any], None], last_version: int | None, paths: list[str]
) -> None:
    request = BUILD[kind]()
    mutate(request)
    with pytest.raises(ValidationError, match=r"invalid field\(s\)") as caught:
        check_request(request, origin=ORIGIN[kind], now=NOW, last_version=last_version)
    assert caught.value.status == "INVALID_ARGUMENT"
    assert [v.field for v in caught.value.violations] == paths
    assert all(v.description for v in caught.value.violations)


@pytest.mark.parametrize("kind", sorted(BUILD))
def test_seed_requests_are_valid(kind: str) -> None:
    last = 1 if kind in ("revoke", "withdraw") else None
    assert validate_request(BUILD[kind](), origin=ORIGIN[kind], now=NOW, last_version=last) == []


def test_three_bad_fields_are_all_reported() -> None:
    request = notice_request()
    request.notice.container_numbers[0] = "CSQU3054384"
    request.notice.goods[1].quantity.unit = "BAGS"
    request.addressing.recipients.append(CN)
    with pytest.raises(ValidationError, match="3 invalid field") as caught:
        check_request(request, origin=CN, now=NOW)
    assert [v.field for v in caught.value.violations] == [
        "addressing.recipients[2]",
        "notice.container_numbers[0]",
        "notice.goods[1].quantity.unit",
    ]
    detail = to_bad_request(caught.value.violations)
    assert [fv.field for fv in detail.field_violations] == [
        v.field for v in caught.value.violations
    ]
    assert "expected 3" in detail.field_violations[1].description


def test_clock_skew_within_five_minutes_is_accepted() -> None:
    request = notice_request()
    request.notice.seized_at.CopyFrom(ts(NOW + dt.timedelta(minutes=4, seconds=59)))
    assert validate_request(request, origin=CN, now=NOW) == []


def test_declaration_with_nothing_to_screen_is_refused() -> None:
    with pytest.raises(ValidationError, match="nothing to screen") as caught:
        check_declaration(d.Declaration(reference="X1"))
    assert [v.field for v in caught.value.violations] == ["declaration"]


def test_declaration_paths() -> None:
    declaration = fixtures.seed_declaration()
    declaration.container_numbers.append("CSQU3054384")
    declaration.items.add(hs_code="7701")
    with pytest.raises(ValidationError) as caught:
        check_declaration(declaration)
    assert [v.field for v in caught.value.violations] == [
        "declaration.items[1].hs_code",
        "declaration.container_numbers[1]",
    ]


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_request(notice_request(), origin=CN, now=dt.datetime(2026, 1, 1))
