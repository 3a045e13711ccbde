"""Property tests: valid messages validate and round-trip; one corrupted field is named."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customs.gateway.v1 import domain_pb2 as d
from gateway.domain import fixtures
from gateway.domain.validate import validate_seizure_notice, validate_watchlist_entry
from tests.domain.strategies import seizure_notices, watchlist_entries

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CORRUPT = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(entry=watchlist_entries(NOW))
def test_generated_entries_are_valid_and_round_trip(entry: d.WatchlistEntry) -> None:
    assert validate_watchlist_entry(entry, now=NOW) == []
    parsed = d.WatchlistEntry.FromString(entry.SerializeToString())
    assert parsed == entry
    assert validate_watchlist_entry(parsed, now=NOW) == []


@SETTINGS
@given(notice=seizure_notices(NOW))
def test_generated_notices_are_valid_and_round_trip(notice: d.SeizureNotice) -> None:
    assert validate_seizure_notice(notice, now=NOW) == []
    parsed = d.SeizureNotice.FromString(notice.SerializeToString())
    assert parsed == notice
    assert validate_seizure_notice(parsed, now=NOW) == []


def _flip_last_digit(value: str) -> str:
    return value[:-1] + str((int(value[-1]) + 1) % 10)


# Each corruption: (applies to the message?, corrupt it and return the path it must be named at).
Corruption = Callable[[Any, st.DataObject], str]


def _pick(data: st.DataObject, n: int) -> int:
    return data.draw(st.integers(0, n - 1))


def _notice_container(n: d.SeizureNotice, data: st.DataObject) -> str:
    if not n.container_numbers:
        n.container_numbers.append("CSQU3054384")
        return f"notice.container_numbers[{len(n.container_numbers) - 1}]"
    i = _pick(data, len(n.container_numbers))
    n.container_numbers[i] = _flip_last_digit(n.container_numbers[i])
    return f"notice.container_numbers[{i}]"


def _notice_imo(n: d.SeizureNotice, data: st.DataObject) -> str:
    ident = n.conveyance.identifiers[0]
    ident.value = _flip_last_digit(ident.value)
    return "notice.conveyance.identifiers[0].value"


def _notice_unit(n: d.SeizureNotice, data: st.DataObject) -> str:
    i = _pick(data, len(n.goods))
    n.goods[i].quantity.unit = data.draw(st.sampled_from(["KG", "TON", "kgm", "PCS"]))
    return f"notice.goods[{i}].quantity.unit"


def _notice_amount(n: d.SeizureNotice, data: st.DataObject) -> str:
    i = _pick(data, len(n.goods))
    n.goods[i].quantity.amount = data.draw(st.sampled_from(["0", "-1", "1e3", "1.23456", ""]))
    return f"notice.goods[{i}].quantity.amount"


def _notice_hs(n: d.SeizureNotice, data: st.DataObject) -> str:
    i = _pick(data, len(n.goods))
    n.goods[i].actual_hs_code = "77" + n.goods[i].actual_hs_code[2:]
    return f"notice.goods[{i}].actual_hs_code"


def _notice_country(n: d.SeizureNotice, data: st.DataObject) -> str:
    n.route.origin_country = data.draw(st.sampled_from(["ZZ", "cn", "CHN", ""]))
    return "notice.route.origin_country"


def _notice_place(n: d.SeizureNotice, data: st.DataObject) -> str:
    n.place = data.draw(st.sampled_from(["ZZSHA", "CNSH1", "CN SH", ""]))
    return "notice.place"


def _notice_future(n: d.SeizureNotice, data: st.DataObject) -> str:
    later = NOW + dt.timedelta(minutes=data.draw(st.integers(6, 60 * 24 * 365)))
    n.seized_at.CopyFrom(fixtures.timestamp(later))
    n.retain_until.CopyFrom(fixtures.timestamp(later + dt.timedelta(days=1)))
    return "notice.seized_at"


def _notice_party_name(n: d.SeizureNotice, data: st.DataObject) -> str:
    if not n.parties:
        n.case_reference = ""
        return "notice.case_reference"
    i = _pick(data, len(n.parties))
    n.parties[i].names[0].full_name = " "
    return f"notice.parties[{i}].names[0].full_name"


NOTICE_CORRUPTIONS = [
    _notice_container,
    _notice_imo,
    _notice_unit,
    _notice_amount,
    _notice_hs,
    _notice_country,
    _notice_place,
    _notice_future,
    _notice_party_name,
]


def _entry_watchlist(e: d.WatchlistEntry, data: st.DataObject) -> str:
    e.watchlist = data.draw(st.sampled_from(["Strategic", "ab", "-abc", "a_b_c"]))
    return "entry.watchlist"


def _entry_hs(e: d.WatchlistEntry, data: st.DataObject) -> str:
    if not e.hs_codes:
        e.hs_codes.append("7701")
        return f"entry.hs_codes[{len(e.hs_codes) - 1}]"
    i = _pick(data, len(e.hs_codes))
    e.hs_codes[i] = e.hs_codes[i] + "0" * (11 - len(e.hs_codes[i]))
    return f"entry.hs_codes[{i}]"


def _entry_country(e: d.WatchlistEntry, data: st.DataObject) -> str:
    e.flagged_transit_countries.append("XX")
    return f"entry.flagged_transit_countries[{len(e.flagged_transit_countries) - 1}]"


def _entry_validity(e: d.WatchlistEntry, data: st.DataObject) -> str:
    start = e.validity.valid_from.ToDatetime(tzinfo=dt.UTC)
    e.validity.valid_until.CopyFrom(fixtures.timestamp(start + dt.timedelta(days=732)))
    e.retain_until.CopyFrom(fixtures.timestamp(start + dt.timedelta(days=4000)))
    return "entry.validity.valid_until"


def _entry_risk(e: d.WatchlistEntry, data: st.DataObject) -> str:
    e.risk_level = data.draw(st.sampled_from([0, 5, 99]))
    return "entry.risk_level"


def _entry_identifier(e: d.WatchlistEntry, data: st.DataObject) -> str:
    checked = [
        i
        for i, ident in enumerate(e.identifiers)
        if ident.value[-1].isdigit() and ident.scheme != 1
    ]
    if not checked:
        e.reason = ""
        return "entry.reason"
    i = data.draw(st.sampled_from(checked))
    e.identifiers[i].value = _flip_last_digit(e.identifiers[i].value)
    return f"entry.identifiers[{i}].value"


ENTRY_CORRUPTIONS = [
    _entry_watchlist,
    _entry_hs,
    _entry_country,
    _entry_validity,
    _entry_risk,
    _entry_identifier,
]


@CORRUPT
@given(notice=seizure_notices(NOW), data=st.data())
@pytest.mark.parametrize("corrupt", NOTICE_CORRUPTIONS, ids=lambda f: f.__name__[1:])
def test_one_corrupted_notice_field_is_named(
    corrupt: Corruption, notice: d.SeizureNotice, data: st.DataObject
) -> None:
    path = corrupt(notice, data)
    assert {v.field for v in validate_seizure_notice(notice, now=NOW)} == {path}


@CORRUPT
@given(entry=watchlist_entries(NOW), data=st.data())
@pytest.mark.parametrize("corrupt", ENTRY_CORRUPTIONS, ids=lambda f: f.__name__[1:])
def test_one_corrupted_entry_field_is_named(
    corrupt: Corruption, entry: d.WatchlistEntry, data: st.DataObject
) -> None:
    path = corrupt(entry, data)
    assert {v.field for v in validate_watchlist_entry(entry, now=NOW)} == {path}
