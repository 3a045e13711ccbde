"""Hypothesis strategies for VALID customs messages, for any test suite to reuse.

Every strategy takes ``now`` (an aware datetime) and generates messages that pass
``gateway.domain.validate`` at that time: identifiers with correct check digits, HS codes of
real chapters, ISO codes from the reference tables, consistent dates.
"""

from __future__ import annotations

import datetime as dt
import uuid

from hypothesis import strategies as st

from customs.gateway.v1 import common_pb2 as c
from customs.gateway.v1 import domain_pb2 as d
from gateway.domain import fixtures, reference
from gateway.domain.identifiers import (
    container_check_digit,
    imo_check_digit,
    uscc_check_character,
)

__all__ = [
    "container_numbers",
    "hs_codes",
    "imo_numbers",
    "seizure_notices",
    "uscc_codes",
    "uuids",
    "watchlist_entries",
]

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CJK = "华南金属贸易有限公司锑业进出口矿产陈志强李伟凭祥深圳香港澳門華屬"

countries = st.sampled_from(sorted(reference.COUNTRIES))
uuids = st.uuids(version=4).map(str)


@st.composite
def container_numbers(draw: st.DrawFn) -> str:
    """ISO 6346 numbers with a correct check digit."""
    owner = draw(st.text(_UPPER, min_size=3, max_size=3))
    first = (
        owner + draw(st.sampled_from("UJZ")) + draw(st.text("0123456789", min_size=6, max_size=6))
    )
    return first + str(container_check_digit(first))


@st.composite
def imo_numbers(draw: st.DrawFn) -> str:
    """IMO numbers with a correct check digit."""
    digits = str(draw(st.integers(100000, 999999)))
    return f"IMO{digits}{imo_check_digit(digits)}"


@st.composite
def uscc_codes(draw: st.DrawFn) -> str:
    """GB 32100-2015 codes with a correct check character."""
    head = draw(st.text(_USCC_CHARS, min_size=2, max_size=2))
    area = draw(st.text("0123456789", min_size=6, max_size=6))
    org = draw(st.text(_USCC_CHARS, min_size=9, max_size=9))
    first = head + area + org
    return first + uscc_check_character(first)


@st.composite
def hs_codes(draw: st.DrawFn, lengths: tuple[int, ...] = (6, 8, 10)) -> str:
    """HS codes of a real chapter, of one of ``lengths`` digits."""
    chapter = draw(st.sampled_from(sorted(reference.HS_CHAPTERS)))
    length = draw(st.sampled_from(lengths))
    return chapter + draw(st.text("0123456789", min_size=length - 2, max_size=length - 2))


def _word(alphabet: str) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=1, max_size=12)


names = st.builds(
    c.Name,
    full_name=st.one_of(
        _word(_CJK), st.lists(_word(_UPPER + _UPPER.lower()), min_size=1, max_size=4).map(" ".join)
    ),
    latin_name=st.lists(_word(_UPPER), max_size=4).map(" ".join),
    alias=st.booleans(),
)


def identifiers_strategy() -> st.SearchStrategy[c.Identifier]:
    return st.one_of(
        container_numbers().map(
            lambda v: c.Identifier(scheme=c.IDENTIFIER_SCHEME_CONTAINER, value=v)
        ),
        imo_numbers().map(lambda v: c.Identifier(scheme=c.IDENTIFIER_SCHEME_IMO, value=v)),
        uscc_codes().map(lambda v: c.Identifier(scheme=c.IDENTIFIER_SCHEME_USCC, value=v)),
        st.builds(
            c.Identifier,
            scheme=st.just(c.IDENTIFIER_SCHEME_PASSPORT),
            value=st.text(_UPPER + "0123456789", min_size=5, max_size=12),
            issuing_country=countries,
        ),
    )


def _unique_ids(draw: st.DrawFn, min_size: int = 0) -> list[c.Identifier]:
    return draw(
        st.lists(
            identifiers_strategy(),
            min_size=min_size,
            max_size=4,
            unique_by=lambda i: (i.scheme, i.value, i.issuing_country),
        )
    )


_ENUM = st.sampled_from


@st.composite
def watchlist_entries(draw: st.DrawFn, now: dt.datetime) -> d.WatchlistEntry:
    """Valid WatchlistEntry messages (version 1) publishable at ``now``."""
    entity = draw(
        _ENUM(
            [
                c.ENTITY_TYPE_PERSON,
                c.ENTITY_TYPE_ORGANISATION,
                c.ENTITY_TYPE_VESSEL,
                c.ENTITY_TYPE_VEHICLE,
                c.ENTITY_TYPE_CONTAINER,
                c.ENTITY_TYPE_COMMODITY,
            ]
        )
    )
    entry_names = draw(st.lists(names, max_size=3))
    if entity in (c.ENTITY_TYPE_PERSON, c.ENTITY_TYPE_ORGANISATION, c.ENTITY_TYPE_VESSEL):
        primary = draw(names)
        primary.alias = False
        entry_names.insert(0, primary)
    ids = _unique_ids(draw, min_size=1 if entity == c.ENTITY_TYPE_VEHICLE else 0)
    if entity == c.ENTITY_TYPE_CONTAINER:
        ids.append(
            c.Identifier(scheme=c.IDENTIFIER_SCHEME_CONTAINER, value=draw(container_numbers()))
        )
        ids = list({(i.scheme, i.value, i.issuing_country): i for i in ids}.values())
    codes = draw(
        st.lists(
            hs_codes((4, 6, 8, 10)),
            min_size=1 if entity == c.ENTITY_TYPE_COMMODITY else 0,
            max_size=3,
        )
    )
    started_ago = dt.timedelta(seconds=draw(st.integers(0, 300 * 86400)))
    valid_from = now - started_ago
    length = dt.timedelta(seconds=draw(st.integers(started_ago.total_seconds() + 60, 731 * 86400)))
    valid_until = valid_from + length
    retain = valid_until + dt.timedelta(days=draw(st.integers(0, 3650)))
    return d.WatchlistEntry(
        watchlist=draw(
            st.sampled_from(["strategic-minerals", "sanctioned-vessels", "hk-cargo-01"])
        ),
        entry_id=draw(uuids),
        version=1,
        entity_type=entity,
        names=entry_names,
        identifiers=ids,
        countries=draw(st.lists(countries, max_size=3, unique=True)),
        categories=draw(st.lists(_ENUM(sorted(reference.CONTROLLED_HS_PREFIXES)), max_size=2)),
        hs_codes=codes,
        typologies=draw(st.lists(_ENUM(sorted(c.Typology.values())[1:]), max_size=3)),
        flagged_transit_countries=draw(st.lists(countries, max_size=3, unique=True)),
        risk_level=draw(
            _ENUM([d.RISK_LEVEL_LOW, d.RISK_LEVEL_MEDIUM, d.RISK_LEVEL_HIGH, d.RISK_LEVEL_CRITICAL])
        ),
        reason=draw(
            st.text(min_size=1, max_size=80).filter(lambda s: s.strip() and s.isprintable())
        ),
        validity=c.Validity(
            valid_from=fixtures.timestamp(valid_from), valid_until=fixtures.timestamp(valid_until)
        ),
        retain_until=fixtures.timestamp(retain),
    )


@st.composite
def _amounts(draw: st.DrawFn, places: int, positive: bool) -> str:
    whole = draw(st.integers(1 if positive else 0, 10**9))
    decimals = draw(st.integers(0, places))
    if decimals == 0:
        return str(whole)
    return f"{whole}.{draw(st.text('0123456789', min_size=decimals, max_size=decimals))}"


@st.composite
def goods_lines(draw: st.DrawFn, line_number: int) -> d.GoodsLine:
    line = d.GoodsLine(
        line_number=line_number,
        declared_hs_code=draw(hs_codes()),
        declared_description=draw(_word(_UPPER.lower() + " ").filter(str.strip)),
        actual_hs_code=draw(hs_codes()),
        actual_description=draw(_word(_CJK + _UPPER)),
        category=draw(_ENUM(sorted(c.ControlledCategory.values()))),
        quantity=c.Quantity(
            amount=draw(_amounts(3, True)), unit=draw(_ENUM(sorted(reference.UNITS)))
        ),
        concealment=draw(_ENUM(sorted(d.ConcealmentMethod.values()))),
    )
    if draw(st.booleans()):
        line.value.CopyFrom(
            c.Money(
                amount=draw(_amounts(2, False)), currency=draw(_ENUM(sorted(reference.CURRENCIES)))
            )
        )
    return line


@st.composite
def seizure_notices(draw: st.DrawFn, now: dt.datetime) -> d.SeizureNotice:
    """Valid SeizureNotice messages (version 1) submittable at ``now``."""
    seized = now - dt.timedelta(seconds=draw(st.integers(-300, 1000 * 86400)))
    locodes = st.sampled_from(sorted(reference.MAIN_LOCODES))
    n_goods = draw(st.integers(1, 4))
    parties = [
        d.Party(
            role=draw(_ENUM(sorted(d.PartyRole.values())[1:])),
            entity_type=draw(_ENUM([c.ENTITY_TYPE_PERSON, c.ENTITY_TYPE_ORGANISATION])),
            names=draw(st.lists(names, min_size=1, max_size=2)),
            identifiers=_unique_ids(draw),
            country=draw(st.one_of(st.just(""), countries)),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    return d.SeizureNotice(
        notice_id=draw(uuids),
        version=1,
        case_reference=draw(
            st.text(_UPPER + "0123456789-", min_size=1, max_size=64).filter(lambda s: s.strip("-"))
        ),
        seized_at=fixtures.timestamp(seized),
        place=draw(locodes),
        direction=draw(_ENUM(sorted(d.Direction.values())[1:])),
        conveyance=d.Conveyance(
            mode=draw(_ENUM(sorted(d.TransportMode.values())[1:])),
            name=draw(st.text(_UPPER + " ", max_size=20)).strip(),
            identifiers=[c.Identifier(scheme=c.IDENTIFIER_SCHEME_IMO, value=draw(imo_numbers()))],
        ),
        container_numbers=draw(st.lists(container_numbers(), max_size=4, unique=True)),
        goods=[draw(goods_lines(i + 1)) for i in range(n_goods)],
        route=c.Route(
            origin_country=draw(countries),
            transit_countries=draw(st.lists(countries, max_size=3, unique=True)),
            declared_destination_country=draw(countries),
            suspected_destination_country=draw(st.one_of(st.just(""), countries)),
            places=draw(st.lists(locodes, max_size=3)),
        ),
        parties=parties,
        typologies=draw(st.lists(_ENUM(sorted(c.Typology.values())[1:]), min_size=1, max_size=3)),
        narrative=draw(
            st.text(max_size=200).filter(lambda s: s.isprintable() and (s == "" or s.strip()))
        ),
        attachments=[
            d.AttachmentDigest(media_type="image/jpeg", sha256=uuid.UUID(int=i).hex * 2)
            for i in range(draw(st.integers(0, 2)))
        ],
        status=draw(_ENUM(sorted(d.NoticeStatus.values())[1:])),
        retain_until=fixtures.timestamp(
            max(seized, now) + dt.timedelta(days=draw(st.integers(1, 3650)))
        ),
    )
