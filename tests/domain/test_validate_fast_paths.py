"""Validation's shortcuts for the usual valid input (ADR 0080) report what the item-by-item
checks report: each case breaks exactly the condition a shortcut tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from customs.gateway.v1 import common_pb2 as c
from gateway.domain import fixtures
from gateway.domain.validate import validate_addressing, validate_watchlist_entry

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
CN, HK, MO = c.JURISDICTION_CN, c.JURISDICTION_HK, c.JURISDICTION_MO


def _paths(violations: list[Any]) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in violations]


@pytest.mark.parametrize(
    ("recipients", "releasable", "expected"),
    [
        ([CN, MO], [CN, MO], []),
        ([CN, CN], [CN, MO], [("addressing.recipients[1]", "JURISDICTION_CN listed twice")]),
        (
            [CN, HK],
            [CN, MO],
            [
                (
                    "addressing.recipients[1]",
                    "JURISDICTION_HK is the origin; a node does not send to itself",
                )
            ],
        ),
        (
            [CN, 9],
            [CN, MO],
            [("addressing.recipients[1]", "9 is not a known jurisdiction (CN, HK, MO)")],
        ),
        (
            [CN, MO],
            [CN],
            [("addressing.recipients[1]", "JURISDICTION_MO is not in handling.releasable_to")],
        ),
        (
            [CN],
            [CN, CN],
            [("addressing.handling.releasable_to[1]", "JURISDICTION_CN listed twice")],
        ),
    ],
)
def test_addressing_lists(
    recipients: list[Any], releasable: list[Any], expected: list[Any]
) -> None:
    addressing = fixtures.seed_publish_request(NOW).addressing
    del addressing.recipients[:]
    addressing.recipients.extend(recipients)
    del addressing.handling.releasable_to[:]
    addressing.handling.releasable_to.extend(releasable)
    assert _paths(validate_addressing(addressing, origin=HK)) == expected


def test_addressing_message_id() -> None:
    addressing = fixtures.seed_publish_request(NOW).addressing
    addressing.message_id = "NOT-A-UUID"
    assert _paths(validate_addressing(addressing, origin=HK)) == [
        ("addressing.message_id", "'NOT-A-UUID' is not a UUID in canonical lower-case form")
    ]
    addressing.message_id = ""
    assert _paths(validate_addressing(addressing, origin=HK)) == [
        ("addressing.message_id", "required")
    ]


def test_entry_lists_and_names() -> None:
    entry = fixtures.seed_publish_request(NOW).entry
    assert validate_watchlist_entry(entry, now=NOW) == []
    entry.watchlist = "-bad"
    entry.entry_id = ""
    unknown: Any = 999
    entry.typologies.append(c.TYPOLOGY_UNSPECIFIED)
    entry.categories.append(unknown)
    entry.hs_codes.append("7700")
    entry.names.add(full_name=" ", latin_name="x\ny")
    n = len(entry.names) - 1
    got = _paths(validate_watchlist_entry(entry, now=NOW))
    fields = [field for field, _ in got]
    assert fields == [
        "entry.watchlist",
        "entry.entry_id",
        f"entry.names[{n}].full_name",
        f"entry.names[{n}].latin_name",
        f"entry.categories[{len(entry.categories) - 1}]",
        f"entry.hs_codes[{len(entry.hs_codes) - 1}]",
        f"entry.typologies[{len(entry.typologies) - 1}]",
    ]
    assert got[2][1] == "required"
    assert got[3][1] == "contains control or unassigned character U+000A"


@pytest.mark.parametrize(
    ("aliases", "expected"),
    [
        ([True, True], ["entry.names", "entry.names[1].full_name"]),
        ([True, False], ["entry.names[1].full_name"]),
        ([False, True], ["entry.names[1].full_name"]),
    ],
    ids=["all-aliases", "primary-last", "primary-first"],
)
def test_entry_primary_name_reported_before_the_names(
    aliases: list[bool], expected: list[str]
) -> None:
    """The missing primary name is found in the names' own loop (ADR 0085) but reported
    first, as when it was looked for before the loop."""
    entry = fixtures.seed_publish_request(NOW).entry  # an organisation: needs a primary name
    del entry.names[:]
    for alias in aliases:
        entry.names.add(full_name="Company Limited", alias=alias)
    entry.names[1].full_name = ""
    got = _paths(validate_watchlist_entry(entry, now=NOW))
    assert [field for field, _ in got] == expected
    if len(expected) == 2:
        assert got[0][1] == "required; at least one name that is not an alias"
