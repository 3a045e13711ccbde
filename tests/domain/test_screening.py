"""Screening: each kind of hit with its reason; near-misses are not exact hits."""

from __future__ import annotations

import datetime as dt

import pytest

from customs.gateway.v1 import common_pb2 as c
from customs.gateway.v1 import domain_pb2 as d
from customs.gateway.v1 import partner_pb2 as p
from gateway.domain import fixtures, names
from gateway.domain.screening import (
    MemoryIndexStorage,
    combined_score,
    facts_and_postings,
    postings,
)
from gateway.domain.watchlist import WatchlistView

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
HK, MO = c.JURISDICTION_HK, c.JURISDICTION_MO
K = p.MatchKind


def entry(entity: int, entry_id: str, **fields: object) -> d.WatchlistEntry:
    base = fixtures.seed_watchlist_entry(NOW)
    e = d.WatchlistEntry(
        watchlist="strategic-minerals",
        entry_id=entry_id,
        version=1,
        entity_type=entity,
        risk_level=base.risk_level,
        reason="test",
        validity=base.validity,
        retain_until=base.retain_until,
    )
    for name, value in fields.items():
        getattr(e, name).extend(value)  # type: ignore[arg-type]
    return e


VESSEL = entry(
    c.ENTITY_TYPE_VESSEL,
    "00000000-0000-4000-8000-00000000000a",
    names=[c.Name(full_name="JIN HAI 8")],
    identifiers=[c.Identifier(scheme=c.IDENTIFIER_SCHEME_IMO, value="IMO9074729")],
)
CONTAINER = entry(
    c.ENTITY_TYPE_CONTAINER,
    "00000000-0000-4000-8000-00000000000b",
    identifiers=[c.Identifier(scheme=c.IDENTIFIER_SCHEME_CONTAINER, value="CSQU3054383")],
)
COMMODITY = entry(
    c.ENTITY_TYPE_COMMODITY,
    "00000000-0000-4000-8000-00000000000c",
    categories=[c.CONTROLLED_CATEGORY_GALLIUM],
    flagged_transit_countries=["TH"],
)
PERSON = entry(
    c.ENTITY_TYPE_PERSON,
    "00000000-0000-4000-8000-00000000000d",
    names=[c.Name(full_name="陳志強", latin_name="CHAN Chi Keung")],
    identifiers=[
        c.Identifier(scheme=c.IDENTIFIER_SCHEME_PASSPORT, value="K12345678", issuing_country="HK")
    ],
)


@pytest.fixture
def view() -> WatchlistView:
    v = WatchlistView(b"screening-test-secret-0000000000")
    v.apply(HK, fixtures.seed_watchlist_entry(NOW), "seed", received_at=NOW)
    for i, e in enumerate([VESSEL, CONTAINER, COMMODITY, PERSON]):
        v.apply(MO, e, f"m{i}", received_at=NOW)
    return v


def reasons(response: p.ScreenDeclarationResponse) -> dict[str, list[tuple[int, str, str]]]:
    return {
        h.entry_id[-1]: [(r.kind, r.declaration_field, r.entry_field) for r in h.reasons]
        for h in response.hits
    }


HITS = [
    pytest.param(
        d.Declaration(container_numbers=["CSQU3054383"]),
        {"b": [(K.MATCH_KIND_IDENTIFIER, "container_numbers[0]", "identifiers[0].value")]},
        id="container-identifier",
    ),
    pytest.param(
        d.Declaration(
            conveyance=d.Conveyance(
                identifiers=[c.Identifier(scheme=c.IDENTIFIER_SCHEME_IMO, value="9074729")]
            )
        ),
        {
            "a": [
                (K.MATCH_KIND_IDENTIFIER, "conveyance.identifiers[0].value", "identifiers[0].value")
            ]
        },
        id="imo-identifier-typed-bare",
    ),
    pytest.param(
        d.Declaration(conveyance=d.Conveyance(name="Jin Hai 8")),
        {"a": [(K.MATCH_KIND_NAME, "conveyance.name", "names[0].full_name")]},
        id="vessel-name",
    ),
    pytest.param(
        d.Declaration(
            parties=[
                d.Party(
                    entity_type=c.ENTITY_TYPE_ORGANISATION,
                    names=[c.Name(full_name="ＳＯＵＴＨ  CHINA METALS TRADING CO., LTD.")],
                )
            ]
        ),
        {"0": [(K.MATCH_KIND_NAME, "parties[0].names[0].full_name", "names[0].latin_name")]},
        id="company-name-width-case-suffix",
    ),
    pytest.param(
        d.Declaration(parties=[d.Party(names=[c.Name(full_name="南华矿产")])]),
        {"0": [(K.MATCH_KIND_NAME, "parties[0].names[0].full_name", "names[1].full_name")]},
        id="alias-simplified-vs-traditional",
    ),
    pytest.param(
        d.Declaration(
            parties=[
                d.Party(
                    identifiers=[
                        c.Identifier(
                            scheme=c.IDENTIFIER_SCHEME_PASSPORT,
                            value="K12345678",
                            issuing_country="HK",
                        )
                    ]
                )
            ]
        ),
        {
            "d": [
                (K.MATCH_KIND_IDENTIFIER, "parties[0].identifiers[0].value", "identifiers[0].value")
            ]
        },
        id="passport",
    ),
    pytest.param(
        d.Declaration(
            items=[d.Declaration.Item(hs_code="8112920010")],
            route=c.Route(transit_countries=["VN", "TH"]),
        ),
        {
            "c": [
                (K.MATCH_KIND_HS_CODE, "items[0].hs_code", "categories[0]"),
                (
                    K.MATCH_KIND_TRANSIT_COUNTRY,
                    "route.transit_countries[1]",
                    "flagged_transit_countries[0]",
                ),
            ]
        },
        id="hs-controlled-heading-and-transit",
    ),
]


@pytest.mark.parametrize(("declaration", "expected"), HITS)
def test_each_kind_of_hit_is_found_with_its_reason(
    view: WatchlistView, declaration: d.Declaration, expected: dict[str, list[tuple[int, str, str]]]
) -> None:
    assert reasons(view.screen(declaration, now=NOW)) == expected


NEAR_MISSES = [
    pytest.param(d.Declaration(container_numbers=["CSQU3054393"]), id="container-one-digit-off"),
    pytest.param(
        d.Declaration(container_numbers=["CSQU3054392"]), id="container-one-digit-off-valid-check"
    ),
    pytest.param(
        d.Declaration(
            conveyance=d.Conveyance(
                identifiers=[c.Identifier(scheme=c.IDENTIFIER_SCHEME_IMO, value="IMO9074730")]
            )
        ),
        id="imo-neighbour",
    ),
    pytest.param(
        d.Declaration(
            parties=[d.Party(names=[c.Name(full_name="South China Minerals Trading Co Ltd")])]
        ),
        id="company-sharing-words",
    ),
    pytest.param(
        d.Declaration(parties=[d.Party(names=[c.Name(full_name="華北金屬貿易有限公司")])]),
        id="company-one-character-off",
    ),
    pytest.param(
        d.Declaration(
            parties=[
                d.Party(
                    identifiers=[
                        c.Identifier(
                            scheme=c.IDENTIFIER_SCHEME_PASSPORT,
                            value="K12345678",
                            issuing_country="CN",
                        )
                    ]
                )
            ]
        ),
        id="passport-other-country",
    ),
    pytest.param(
        d.Declaration(items=[d.Declaration.Item(hs_code="811010")]), id="hs-alone-on-company-entry"
    ),
    pytest.param(
        d.Declaration(
            route=c.Route(transit_countries=["VN", "TH"]),
            items=[d.Declaration.Item(hs_code="790111")],
        ),
        id="transit-alone",
    ),
    pytest.param(
        d.Declaration(
            parties=[
                d.Party(
                    entity_type=c.ENTITY_TYPE_PERSON,
                    names=[c.Name(full_name="South China Metals Trading")],
                )
            ]
        ),
        id="org-name-on-a-person",
    ),
]


@pytest.mark.parametrize("declaration", NEAR_MISSES)
def test_near_misses_are_not_hits(view: WatchlistView, declaration: d.Declaration) -> None:
    assert list(view.screen(declaration, now=NOW).hits) == []


def test_seed_declaration_hits_the_hk_entry_with_every_reason(view: WatchlistView) -> None:
    response = view.screen(fixtures.seed_declaration(), now=NOW)
    # The HK company entry first, then the vessel by its name (JIN HAI 8).
    assert [h.entry_id for h in response.hits] == [fixtures.SEED_ENTRY_ID, VESSEL.entry_id]
    hit = response.hits[0]
    assert {r.kind for r in hit.reasons} == {
        K.MATCH_KIND_NAME,
        K.MATCH_KIND_COUNTRY,  # the party's country agrees with the entry's
        K.MATCH_KIND_HS_CODE,
        K.MATCH_KIND_TRANSIT_COUNTRY,
    }
    assert hit.score == pytest.approx(1 - 0.2 * 0.5 * 0.7)
    assert response.view_version == 5


def test_identifier_hit_scores_one_and_sorts_first(view: WatchlistView) -> None:
    declaration = d.Declaration(
        container_numbers=["CSQU3054383"],
        parties=[d.Party(names=[c.Name(full_name="South China Metals Trading Limited")])],
    )
    hits = view.screen(declaration, now=NOW).hits
    assert [(h.entry_id[-1], h.score) for h in hits] == [("b", 1.0), ("0", 0.8)]


def test_only_active_entries_match(view: WatchlistView) -> None:
    declaration = d.Declaration(container_numbers=["CSQU3054383"])
    assert len(view.screen(declaration, now=NOW + dt.timedelta(days=181)).hits) == 0  # expired
    assert len(view.screen(declaration, now=NOW - dt.timedelta(days=2)).hits) == 0  # not yet
    revocation = d.WatchlistRevocation(
        watchlist=CONTAINER.watchlist, entry_id=CONTAINER.entry_id, version=2, reason="done"
    )
    view.apply(MO, revocation, "rev", received_at=NOW)
    assert len(view.screen(declaration, now=NOW).hits) == 0


def test_watchlist_filter(view: WatchlistView) -> None:
    declaration = d.Declaration(container_numbers=["CSQU3054383"])
    assert len(view.screen(declaration, now=NOW, watchlists=["other-list"]).hits) == 0
    assert len(view.screen(declaration, now=NOW, watchlists=["strategic-minerals"]).hits) == 1


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param(
            "Huanan Antimony Trading Co., Ltd.",
            "HUANAN ANTIMONY TRADING COMPANY LIMITED",
            True,
            id="en-suffixes",
        ),
        pytest.param(
            "华南锑业贸易有限公司", "華南銻業貿易有限公司", True, id="traditional-simplified"
        ),
        pytest.param("华南锑业贸易股份有限公司", "华南锑业贸易", True, id="zh-joint-stock"),
        pytest.param("华南锑业贸易集团有限公司", "华南锑业贸易", True, id="zh-group"),
        pytest.param("Hua Nan Antimony", "Huanan Antimony", True, id="pinyin-spacing"),
        pytest.param("Huanan Antimony Trading", "Huanan Antimony Trade", True, id="trade"),
        pytest.param(
            "Huanan Antimony Trading", "Huanan Tungsten Trading", False, id="different-word"
        ),
        pytest.param("Company Limited", "", False, id="nothing-left-keeps-name"),
    ],
)
def test_organisation_keys(a: str, b: str, same: bool) -> None:
    assert (names.organisation_key(a) == names.organisation_key(b)) is same
    assert names.organisation_key(a)


def test_combined_score() -> None:
    assert combined_score([K.MATCH_KIND_IDENTIFIER, K.MATCH_KIND_NAME]) == 1.0
    assert combined_score([K.MATCH_KIND_HS_CODE, K.MATCH_KIND_TRANSIT_COUNTRY]) == pytest.approx(
        0.65
    )
    assert combined_score([K.MATCH_KIND_NAME, K.MATCH_KIND_NAME]) == pytest.approx(0.8)


@pytest.mark.parametrize("listed", [VESSEL, CONTAINER, COMMODITY, PERSON])
def test_postings_alone_are_the_postings_with_facts(listed: d.WatchlistEntry) -> None:
    """ADR 0079: a storage that computes facts on demand gets the same postings at put."""
    assert postings(listed) == facts_and_postings(listed)[1]


def test_the_memory_storage_keeps_the_facts_it_is_given() -> None:
    storage = MemoryIndexStorage()
    assert storage.facts_at_put
    with pytest.raises(ValueError, match="facts"):
        storage.put((1, "w", "e"), None, postings(VESSEL), replacing=False)
