"""Issue 16: screening accepts what validation can normalise, says what it normalised, and
refuses only what is unusable; date bounds (dates of birth, retention, seizure time)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customs.gateway.v1 import common_pb2 as c
from customs.gateway.v1 import domain_pb2 as d
from gateway.domain import dates, fixtures
from gateway.domain.lenient import normalise_declaration
from gateway.domain.validate import validate_seizure_notice, validate_watchlist_entry

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
IMO = c.IDENTIFIER_SCHEME_IMO


@pytest.mark.parametrize(
    ("declaration", "field", "given", "used"),
    [
        pytest.param(d.Declaration(container_numbers=["csqu 305438 3"]),
                     "declaration.container_numbers[0]", "csqu 305438 3", "CSQU3054383",
                     id="container-spaces-lower-case"),
        pytest.param(d.Declaration(container_numbers=["CSQU-305438-3"]),
                     "declaration.container_numbers[0]", "CSQU-305438-3", "CSQU3054383",
                     id="container-hyphens"),
        pytest.param(d.Declaration(conveyance=d.Conveyance(
                         identifiers=[c.Identifier(scheme=IMO, value="9074729")])),
                     "declaration.conveyance.identifiers[0].value", "9074729", "IMO9074729",
                     id="imo-without-prefix"),
        pytest.param(d.Declaration(conveyance=d.Conveyance(
                         identifiers=[c.Identifier(scheme=IMO, value="imo 9074729")])),
                     "declaration.conveyance.identifiers[0].value", "imo 9074729", "IMO9074729",
                     id="imo-lower-case-spaced"),
        pytest.param(d.Declaration(items=[d.Declaration.Item(hs_code="8110.20")]),
                     "declaration.items[0].hs_code", "8110.20", "811020", id="hs-code-dots"),
        pytest.param(d.Declaration(parties=[d.Party(entity_type=c.ENTITY_TYPE_ORGANISATION,
                                                    names=[c.Name(full_name="X")], country="hk")]),
                     "declaration.parties[0].country", "hk", "HK", id="country-lower-case"),
        pytest.param(d.Declaration(container_numbers=["CSQU3054383"],
                                   route=c.Route(transit_countries=["vn"])),
                     "declaration.route.transit_countries[0]", "vn", "VN", id="transit-lower-case"),
    ],
)  # fmt: skip
def test_normalisable_input_is_screened_and_said(
    declaration: d.Declaration, field: str, given: str, used: str
) -> None:
    normalised, changes, problems = normalise_declaration(declaration)
    assert problems == []
    assert [(n.field, n.given, n.used) for n in changes] == [(field, given, used)]
    assert normalised != declaration


@pytest.mark.parametrize(
    ("declaration", "field", "message"),
    [
        pytest.param(d.Declaration(container_numbers=["csqu 305438 4"]),
                     "declaration.container_numbers[0]", "check digit", id="container-check-digit"),
        pytest.param(d.Declaration(conveyance=d.Conveyance(
                         identifiers=[c.Identifier(scheme=IMO, value="9074720")])),
                     "declaration.conveyance.identifiers[0].value", "check digit",
                     id="imo-check-digit"),
        pytest.param(d.Declaration(items=[d.Declaration.Item(hs_code="77.10.20")]),
                     "declaration.items[0].hs_code", "77", id="hs-reserved-chapter"),
        pytest.param(d.Declaration(parties=[d.Party(entity_type=c.ENTITY_TYPE_PERSON,
                                                    names=[c.Name(full_name="X")],
                                                    date_of_birth="1970-02-30")]),
                     "declaration.parties[0].date_of_birth", "not a date", id="date-of-birth"),
        pytest.param(d.Declaration(), "declaration", "nothing to screen", id="empty"),
    ],
)  # fmt: skip
def test_unusable_input_is_refused_at_its_field(
    declaration: d.Declaration, field: str, message: str
) -> None:
    _, _, problems = normalise_declaration(declaration)
    assert [p.field for p in problems] == [field]
    assert message in problems[0].description


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("1970-03-04", None, id="day"),
        pytest.param("1970-03", None, id="month"),
        pytest.param("1970", None, id="year"),
        pytest.param("", None, id="absent"),
        pytest.param("1899", "not between 1900 and today", id="too-early"),
        pytest.param("2099-01-01", "not between 1900 and today", id="future"),
        pytest.param("04/03/1970", "not YYYY-MM-DD", id="other-format"),
        pytest.param("1970-13", "not a date", id="no-month-13"),
    ],
)
def test_date_of_birth_bounds(text: str, problem: str | None) -> None:
    found = dates.date_of_birth_problem(text, today=NOW.date())
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_entry_date_of_birth_is_checked() -> None:
    entry = fixtures.seed_watchlist_entry(NOW)
    entry.date_of_birth = "1970-02-30"
    found = validate_watchlist_entry(entry, now=NOW)
    assert [(v.field, v.description) for v in found] == [
        ("entry.date_of_birth", "'1970-02-30' is not a date")
    ]


def test_notice_retention_already_past_is_refused() -> None:
    notice = fixtures.seed_seizure_notice(NOW)
    notice.seized_at.CopyFrom(fixtures.timestamp(NOW - dt.timedelta(days=30)))
    notice.retain_until.CopyFrom(fixtures.timestamp(NOW - dt.timedelta(days=1)))
    found = validate_seizure_notice(notice, now=NOW)
    assert [v.field for v in found] == ["notice.retain_until"]
    assert "already past" in found[0].description


def test_seizure_a_century_ago_is_refused() -> None:
    notice = fixtures.seed_seizure_notice(NOW)
    notice.seized_at.CopyFrom(fixtures.timestamp(NOW - dt.timedelta(days=126 * 365)))
    found = validate_seizure_notice(notice, now=NOW)
    assert [v.field for v in found] == ["notice.seized_at"]
    assert "more than 10 years ago" in found[0].description


@settings(max_examples=300, deadline=None)
@given(
    container=st.text(max_size=20),
    hs=st.text(max_size=14),
    imo=st.text(max_size=14),
    country=st.text(max_size=3),
    dob=st.text(max_size=12),
)
def test_any_input_is_normalised_or_refused_never_an_error(
    container: str, hs: str, imo: str, country: str, dob: str
) -> None:
    declaration = d.Declaration(
        container_numbers=[container],
        items=[d.Declaration.Item(hs_code=hs)],
        conveyance=d.Conveyance(identifiers=[c.Identifier(scheme=IMO, value=imo)]),
        parties=[
            d.Party(entity_type=c.ENTITY_TYPE_PERSON, names=[c.Name(full_name="X")],
                    country=country, date_of_birth=dob)
        ],
    )  # fmt: skip
    normalised, changes, problems = normalise_declaration(declaration)
    assert all(p.field.startswith("declaration") for p in problems)
    assert len(normalised.container_numbers) == 1
    assert all(n.given != n.used for n in changes)
