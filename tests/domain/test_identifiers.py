"""Identifier checks against published examples and their one-character corruptions."""

from __future__ import annotations

import re

import pytest

from customs.gateway.v1 import common_pb2 as c
from gateway.domain import identifiers, reference

VALID = [
    # (scheme, value, issuing country): published or computed examples with valid checks.
    pytest.param(c.IDENTIFIER_SCHEME_CONTAINER, "CSQU3054383", "", id="iso6346-bic-example"),
    pytest.param(c.IDENTIFIER_SCHEME_CONTAINER, "TGHU7654320", "", id="iso6346-check-0"),
    pytest.param(c.IDENTIFIER_SCHEME_IMO, "IMO9074729", "", id="imo-example"),
    pytest.param(c.IDENTIFIER_SCHEME_USCC, "91350100M000100Y43", "", id="uscc-gb32100-example"),
    pytest.param(c.IDENTIFIER_SCHEME_LEI, "5493001KJTIIGC8Y1R12", "", id="lei-bloomberg"),
    pytest.param(c.IDENTIFIER_SCHEME_LEI, "529900T8BM49AURSDO55", "", id="lei-example-2"),
    pytest.param(c.IDENTIFIER_SCHEME_MMSI, "413456789", "", id="mmsi-china-mid"),
    pytest.param(c.IDENTIFIER_SCHEME_HK_BR, "71234567", "", id="hk-br"),
    pytest.param(c.IDENTIFIER_SCHEME_NATIONAL_ID, "11010519491231002X", "CN", id="cn-id-x"),
    pytest.param(c.IDENTIFIER_SCHEME_NATIONAL_ID, "A1234563", "HK", id="hkid-one-letter"),
    pytest.param(c.IDENTIFIER_SCHEME_PASSPORT, "E12345678", "CN", id="passport"),
    pytest.param(c.IDENTIFIER_SCHEME_FLIGHT, "CX450", "", id="flight"),
    pytest.param(c.IDENTIFIER_SCHEME_AEO, "CN1234567890", "", id="aeo"),
]


@pytest.mark.parametrize(("scheme", "value", "country"), VALID)
def test_valid_identifiers_pass(scheme: int, value: str, country: str) -> None:
    assert identifiers.identifier_problems(scheme, value, country) == []


INVALID = [
    # (scheme, value, country, sub-field, reason pattern)
    pytest.param(
        c.IDENTIFIER_SCHEME_CONTAINER,
        "CSQU3054384",
        "",
        "value",
        "check digit .* is 4, expected 3",
        id="iso6346-wrong-check",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_CONTAINER,
        "CSQX3054383",
        "",
        "value",
        "not an ISO 6346",
        id="iso6346-bad-category",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_CONTAINER,
        "csqu3054383",
        "",
        "value",
        "normal form; write 'CSQU3054383'",
        id="iso6346-lower-case",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_IMO, "IMO9074728", "", "value", "is 8, expected 9", id="imo-wrong-check"
    ),
    pytest.param(c.IDENTIFIER_SCHEME_IMO, "IMO907472", "", "value", "7 digits", id="imo-short"),
    pytest.param(
        c.IDENTIFIER_SCHEME_USCC,
        "91350100M000100Y44",
        "",
        "value",
        "expected 3",
        id="uscc-wrong-check",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_USCC,
        "91350100M0001O0Y43",
        "",
        "value",
        "not a USCC",
        id="uscc-letter-o",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_LEI,
        "5493001KJTIIGC8Y1R13",
        "",
        "value",
        "MOD 97-10",
        id="lei-wrong-check",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_MMSI, "013456789", "", "value", "ship MMSI", id="mmsi-not-ship"
    ),
    pytest.param(c.IDENTIFIER_SCHEME_HK_BR, "7123456", "", "value", "8 digits", id="hk-br-short"),
    pytest.param(
        c.IDENTIFIER_SCHEME_NATIONAL_ID,
        "110105194912310021",
        "CN",
        "value",
        "expected X",
        id="cn-id-wrong-check",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_NATIONAL_ID,
        "110105194913310021",
        "CN",
        "value",
        "not a date",
        id="cn-id-bad-birth-date",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_NATIONAL_ID,
        "A1234564",
        "HK",
        "value",
        "expected 3",
        id="hkid-wrong-check",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_PASSPORT,
        "E12345678",
        "",
        "issuing_country",
        "required",
        id="passport-no-country",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_PASSPORT,
        "E12345678",
        "XX",
        "issuing_country",
        "ISO 3166-1",
        id="passport-unknown-country",
    ),
    pytest.param(
        c.IDENTIFIER_SCHEME_AEO, "XX12345", "", "value", "ISO 3166-1", id="aeo-bad-country"
    ),
    pytest.param(0, "ABC", "", "scheme", "required", id="scheme-missing"),
    pytest.param(c.IDENTIFIER_SCHEME_IMO, "", "", "value", "required", id="value-missing"),
]


@pytest.mark.parametrize(("scheme", "value", "country", "field", "reason"), INVALID)
def test_invalid_identifiers_are_named(
    scheme: int, value: str, country: str, field: str, reason: str
) -> None:
    problems = identifiers.identifier_problems(scheme, value, country)
    assert [f for f, _ in problems] == [field]
    assert re.search(reason, problems[0][1]), problems


@pytest.mark.parametrize(
    ("typed", "scheme", "normal"),
    [
        pytest.param("csqu 305438-3", c.IDENTIFIER_SCHEME_CONTAINER, "CSQU3054383", id="container"),
        pytest.param("9074729", c.IDENTIFIER_SCHEME_IMO, "IMO9074729", id="imo-bare-digits"),
        pytest.param("A123456(3)", c.IDENTIFIER_SCHEME_NATIONAL_ID, "A1234563", id="hkid-brackets"),
        pytest.param("ＣＸ４５０", c.IDENTIFIER_SCHEME_FLIGHT, "CX450", id="full-width"),
    ],
)
def test_normalise_identifier(typed: str, scheme: int, normal: str) -> None:
    assert identifiers.normalise_identifier(scheme, typed) == normal


@pytest.mark.parametrize(
    ("code", "min_digits", "reason"),
    [
        pytest.param("811010", 6, None, id="six-digits"),
        pytest.param("8110109000", 6, None, id="ten-digits"),
        pytest.param("8110", 4, None, id="heading-for-entries"),
        pytest.param("8110", 6, "6 to 10 digits", id="heading-in-notice"),
        pytest.param("81101090001", 6, "6 to 10 digits", id="eleven-digits"),
        pytest.param("8110.10", 6, "no dots", id="dotted"),
        pytest.param("771010", 6, "chapter 77", id="reserved-chapter"),
        pytest.param("981010", 6, "chapter 98", id="national-chapter"),
        pytest.param("001010", 6, "chapter 00", id="chapter-zero"),
        pytest.param("", 6, "required", id="empty"),
    ],
)
def test_hs_codes(code: str, min_digits: int, reason: str | None) -> None:
    problem = identifiers.hs_code_problem(code, min_digits=min_digits)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None
        assert reason in problem


def test_reference_tables_have_their_sizes() -> None:
    assert len(reference.COUNTRIES) == 249
    assert {"CN", "HK", "MO", "VN", "TH", "AE"} <= reference.COUNTRIES
    assert "77" not in reference.HS_CHAPTERS
    assert len(reference.HS_CHAPTERS) == 96
    assert reference.controlled_categories_for("8110100000") == (c.CONTROLLED_CATEGORY_ANTIMONY,)
    assert reference.controlled_categories_for("790111") == ()
    assert set(reference.controlled_categories_for("811292")) == {
        c.CONTROLLED_CATEGORY_GALLIUM,
        c.CONTROLLED_CATEGORY_GERMANIUM,
    }


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        pytest.param("HKHKG", True, id="main-port"),
        pytest.param("VNHPH", True, id="transit-port"),
        pytest.param("DEHAM", True, id="well-formed-elsewhere"),
        pytest.param("XXHKG", False, id="unknown-country"),
        pytest.param("CNSH1", False, id="digit-one"),
        pytest.param("CN SHA", False, id="with-space"),
        pytest.param("cnsha", False, id="lower-case"),
    ],
)
def test_locodes(code: str, ok: bool) -> None:
    assert reference.is_locode(code) is ok
