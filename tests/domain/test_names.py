"""Issue 16: names found as an analyst would find them, one row per variant class of the
issue's table, and the near-misses that must not hit; tiers and corroborating reasons."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customs.gateway.v1 import common_pb2 as c
from customs.gateway.v1 import domain_pb2 as d
from customs.gateway.v1 import partner_pb2 as p
from gateway.domain import fixtures, names
from gateway.domain.watchlist import WatchlistView

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
K = p.MatchKind
ORG, PERSON, VESSEL = c.ENTITY_TYPE_ORGANISATION, c.ENTITY_TYPE_PERSON, c.ENTITY_TYPE_VESSEL

# (entry id, entity type, [(full name, latin name)], countries, date of birth)
ENTRIES = [
    ("hongfai", ORG, [("湖南鸿辉锑业贸易有限公司", "Hunan Hongfai Antimony Trading Co Ltd")], ["CN"], ""),  # noqa: E501
    ("goldenridge", ORG, [("Golden Ridge Metals Pte. Ltd.", "")], ["SG"], ""),
    ("wahnam", ORG, [("華南金屬進出口有限公司", "")], ["HK"], ""),
    ("xiangjiang", ORG, [("Hunan Xiangjiang Minerals Co Ltd", "")], ["CN"], ""),
    ("goldenstar", ORG, [("Macao Golden Star Trading Company Limited", "")], ["MO"], ""),
    ("chan", PERSON, [("陳大文", "CHAN Tai Man")], ["HK"], "1970-03-04"),
    ("zhang", PERSON, [("张伟强", "")], ["CN"], "1982-06-01"),
    ("nguyen", PERSON, [("Nguyễn Văn Hùng", "")], ["VN"], ""),
    ("jinhai", VESSEL, [("JIN HAI 8", "")], [], ""),
    ("ho", PERSON, [("何一誠", "")], ["MO"], ""),
    ("vong", PERSON, [("VONG Sio Chak", "")], ["MO"], ""),
    ("everbright", ORG, [("Everbright Tungsten Technology Holdings Limited", "")], ["HK"], ""),
]  # fmt: skip

HITS = [
    # traditional vs simplified script (OpenCC: 鴻 輝 銻 are not in a small table)
    pytest.param("hongfai", ORG, "湖南鴻輝銻業貿易有限公司", id="traditional-to-simplified"),
    pytest.param("wahnam", ORG, "华南金属进出口有限公司", id="simplified-to-traditional"),
    # case, punctuation, spacing, legal form
    pytest.param("hongfai", ORG, "HUNAN HONGFAI ANTIMONY TRADING COMPANY LIMITED", id="legal-form"),
    pytest.param("hongfai", ORG, "Hunan Hong Fai Antimony Trading", id="spacing"),
    # abbreviations and synonyms
    pytest.param("wahnam", ORG, "Wah Nam Metals Imp. & Exp. Co., Ltd.", id="imp-exp"),
    pytest.param("goldenridge", ORG, "Golden Ridge Metals Private Limited", id="private-limited"),
    pytest.param("goldenstar", ORG, "Macau Golden Star Trading Co Ltd", id="macau"),
    pytest.param("jinhai", VESSEL, "M/V Jin Hai 8", id="vessel-prefix"),
    pytest.param("everbright", ORG, "EVERBRIGHT TUNGSTEN TECH HLDGS LTD", id="tech-hldgs"),
    pytest.param("everbright", ORG, "Everbright Tungsten Tech. Hldg. Co. Ltd", id="tech-dots"),
    # pinyin or Cantonese romanisation vs characters
    pytest.param("wahnam", ORG, "Wah Nam Metals Import and Export Co Ltd", id="cantonese-company"),
    pytest.param("wahnam", ORG, "Huanan Metals Import Export", id="pinyin-company"),
    pytest.param("chan", PERSON, "Chen Dawen", id="pinyin-person"),
    pytest.param("zhang", PERSON, "CHEUNG Wai Keung", id="cantonese-person"),
    pytest.param("zhang", PERSON, "Zhang Weiqiang", id="pinyin-merged-given-name"),
    pytest.param("ho", PERSON, "HO Iat Seng", id="macao-spelling"),
    pytest.param("vong", PERSON, "黃少澤", id="characters-for-macao-spelling"),
    # reordered words
    pytest.param("chan", PERSON, "Tai Man CHAN", id="family-name-last"),
    pytest.param("xiangjiang", ORG, "Xiangjiang Minerals (Hunan) Co., Ltd.", id="place-moved"),
    # one-letter typo, diacritics
    pytest.param("nguyen", PERSON, "Nguyen Van Hung", id="diacritics"),
    pytest.param("xiangjiang", ORG, "Hunan Xiangjaing Minerals Co Ltd", id="typo-swap"),
    pytest.param("hongfai", ORG, "Hunan Hongfai Antimoy Trading", id="typo-drop"),
]  # fmt: skip

NEAR_MISSES = [
    pytest.param(ORG, "Hunan Honghui Tungsten Trading Co Ltd", id="same-name-other-metal"),
    pytest.param(ORG, "Golden Ridge Logistics Pte Ltd", id="shared-words-other-business"),
    pytest.param(ORG, "Golden Sun Trading Company Limited", id="shared-common-words"),
    pytest.param(ORG, "華北金屬進出口有限公司", id="one-character-off"),
    pytest.param(PERSON, "CHAN Ka Fai", id="same-surname"),
    pytest.param(PERSON, "CHANG Tai Man", id="chan-is-not-chang"),
    pytest.param(PERSON, "Nguyen Van Thanh", id="same-family-and-middle-name"),
    pytest.param(PERSON, "陳家輝", id="same-surname-characters"),
    pytest.param(PERSON, "何日新", id="macao-same-surname"),
    pytest.param(VESSEL, "JIN HAI 9", id="vessel-number-off"),
]


@pytest.fixture(scope="module")
def view() -> WatchlistView:
    v = WatchlistView(b"node-secret-for-page-tokens-0001")
    base = fixtures.seed_watchlist_entry(NOW)
    for entry_id, entity, spellings, countries, dob in ENTRIES:
        entry = d.WatchlistEntry(
            watchlist="names", entry_id=entry_id, version=1, entity_type=entity,
            risk_level=d.RISK_LEVEL_HIGH, reason=f"reason of {entry_id}",
            validity=base.validity, retain_until=base.retain_until, countries=countries,
            date_of_birth=dob, handling_instructions=f"handling of {entry_id}",
        )  # fmt: skip
        for full, latin in spellings:
            entry.names.add(full_name=full, latin_name=latin)
        v.apply(c.JURISDICTION_HK, entry, f"m-{entry_id}", received_at=NOW)
    return v


def declaration(entity: int, name: str, **party: str) -> d.Declaration:
    if entity == VESSEL:
        return d.Declaration(conveyance=d.Conveyance(name=name))
    return d.Declaration(
        parties=[d.Party(entity_type=entity, names=[c.Name(full_name=name)], **party)]
    )


@pytest.mark.parametrize(("entry_id", "entity", "name"), HITS)
def test_variant_is_found_with_its_reason(
    view: WatchlistView, entry_id: str, entity: int, name: str
) -> None:
    hits = view.screen(declaration(entity, name), now=NOW).hits
    assert [h.entry_id for h in hits] == [entry_id]
    (hit,) = hits
    assert hit.tier in (p.MATCH_TIER_MATCH, p.MATCH_TIER_POSSIBLE_MATCH)
    (reason,) = [r for r in hit.reasons if r.kind == K.MATCH_KIND_NAME]
    assert reason.similarity >= 0.8
    assert name in reason.detail
    # The hit carries what an officer needs to act on it.
    assert hit.entry.reason == f"reason of {entry_id}"
    assert hit.entry.handling_instructions == f"handling of {entry_id}"
    assert hit.entry.names
    assert hit.origin == c.JURISDICTION_HK
    assert hit.message_id == f"m-{entry_id}"


@pytest.mark.parametrize(("entity", "name"), NEAR_MISSES)
def test_near_miss_is_not_a_hit(view: WatchlistView, entity: int, name: str) -> None:
    assert list(view.screen(declaration(entity, name), now=NOW).hits) == []


def test_exact_name_is_a_match_and_a_typo_a_possible_match(view: WatchlistView) -> None:
    exact = view.screen(declaration(PERSON, "CHAN Tai Man"), now=NOW).hits[0]
    assert exact.tier == p.MATCH_TIER_MATCH
    typo = view.screen(declaration(ORG, "Hunan Xiangjaing Minerals Co Ltd"), now=NOW).hits[0]
    assert typo.tier == p.MATCH_TIER_POSSIBLE_MATCH
    assert typo.score < exact.score


@pytest.mark.parametrize(
    ("party", "kind", "adjustment", "tier"),
    [
        pytest.param({"country": "HK"}, K.MATCH_KIND_COUNTRY, 0.03, p.MATCH_TIER_MATCH,
                     id="country-agrees"),
        pytest.param({"date_of_birth": "1970-03-04"}, K.MATCH_KIND_DATE_OF_BIRTH, 0.05,
                     p.MATCH_TIER_MATCH, id="date-of-birth-agrees"),
        pytest.param({"date_of_birth": "1970"}, K.MATCH_KIND_DATE_OF_BIRTH, 0.05,
                     p.MATCH_TIER_MATCH, id="year-of-birth-agrees"),
        pytest.param({"country": "SG"}, K.MATCH_KIND_COUNTRY, -0.10,
                     p.MATCH_TIER_POSSIBLE_MATCH, id="country-differs"),
        pytest.param({"date_of_birth": "1970-09-09"}, K.MATCH_KIND_DATE_OF_BIRTH, -0.10,
                     p.MATCH_TIER_POSSIBLE_MATCH, id="same-year-other-day"),
    ],
)  # fmt: skip
def test_country_and_date_of_birth_raise_or_lower_the_score_and_say_so(
    view: WatchlistView, party: dict[str, str], kind: int, adjustment: float, tier: int
) -> None:
    plain = view.screen(declaration(PERSON, "CHAN Tai Man"), now=NOW).hits[0]
    (hit,) = view.screen(declaration(PERSON, "CHAN Tai Man", **party), now=NOW).hits
    (reason,) = [r for r in hit.reasons if r.kind == kind]
    assert reason.adjustment == pytest.approx(adjustment)
    assert hit.tier == tier
    if adjustment < 0:
        assert hit.score < plain.score
        assert "differs" in reason.detail or "is not" in reason.detail
    else:
        assert "agrees" in reason.detail


def test_another_year_of_birth_rules_the_name_out(view: WatchlistView) -> None:
    assert view.screen(declaration(PERSON, "CHAN Tai Man"), now=NOW).hits
    hits = view.screen(declaration(PERSON, "CHAN Tai Man", date_of_birth="1951"), now=NOW).hits
    assert list(hits) == []


def test_a_differing_identifier_lowers_the_score_and_says_so(view: WatchlistView) -> None:
    entry = d.WatchlistEntry(
        watchlist="names", entry_id="with-passport", version=1, entity_type=PERSON,
        risk_level=d.RISK_LEVEL_HIGH, reason="r",
        validity=fixtures.seed_watchlist_entry(NOW).validity,
        retain_until=fixtures.seed_watchlist_entry(NOW).retain_until,
        names=[c.Name(full_name="LEUNG Siu Wah")],
        identifiers=[c.Identifier(scheme=c.IDENTIFIER_SCHEME_PASSPORT, value="K01234567",
                                  issuing_country="HK")],
    )  # fmt: skip
    local = WatchlistView(b"node-secret-for-page-tokens-0001")
    local.apply(c.JURISDICTION_HK, entry, "m", received_at=NOW)
    other = d.Declaration(
        parties=[
            d.Party(
                entity_type=PERSON,
                names=[c.Name(full_name="LEUNG Siu Wah")],
                identifiers=[c.Identifier(scheme=c.IDENTIFIER_SCHEME_PASSPORT,
                                          value="K07654321", issuing_country="HK")],
            )
        ]
    )  # fmt: skip
    (hit,) = local.screen(other, now=NOW).hits
    (reason,) = [r for r in hit.reasons if r.kind == K.MATCH_KIND_IDENTIFIER_DIFFERS]
    assert reason.adjustment == pytest.approx(-0.15)
    assert "K07654321 is not the entry's" in reason.detail
    assert hit.tier == p.MATCH_TIER_POSSIBLE_MATCH


@pytest.mark.parametrize(
    ("jyutping", "hk"),
    [("can4", "chan"), ("zoeng1", "cheung"), ("wai5", "wai"), ("koeng4", "keung"),
     ("lei5", "lee"), ("ceoi4", "chui"), ("jyun4", "yuen"), ("gwok3", "kwok"),
     ("ng4", "ng"), ("hung4", "hung"), ("fai1", "fai"), ("daat6", "tat")],
)  # fmt: skip
def test_hk_romanisation_of_jyutping(jyutping: str, hk: str) -> None:
    assert names.hk_romanisation(jyutping) == hk


@pytest.mark.parametrize(
    ("jyutping", "mo"),
    [("wong4", "vong"), ("joeng4", "ieong"), ("ming4", "meng"), ("dak6", "tac"),
     ("jat1", "iat"), ("zau1", "chao"), ("gwok3", "kuok"), ("siu2", "sio"), ("zeng6", "cheang")],
)  # fmt: skip
def test_macao_romanisation_of_jyutping(jyutping: str, mo: str) -> None:
    assert names.mo_romanisation(jyutping) == mo


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(min_size=1, max_size=60), entity=st.sampled_from([ORG, PERSON, 0]))
def test_any_name_screens_without_error(view: WatchlistView, text: str, entity: int) -> None:
    """Whatever a caller writes in a name, screening answers (hits or none), never fails."""
    hits = view.screen(declaration(entity, text), now=NOW).hits
    assert all(p.MATCH_TIER_MATCH <= h.tier <= p.MATCH_TIER_POSSIBLE_MATCH for h in hits)
    for form in names.forms(text, "org") + names.forms(text, "person"):
        assert form.core


def test_a_name_with_every_word_of_the_entry_and_more_is_a_possible_match(
    view: WatchlistView,
) -> None:
    (hit,) = view.screen(declaration(PERSON, "CHAN Tai Man Stanley"), now=NOW).hits
    assert hit.entry_id == "chan"
    assert hit.tier == p.MATCH_TIER_POSSIBLE_MATCH
    (reason,) = [r for r in hit.reasons if r.kind == K.MATCH_KIND_NAME]
    assert reason.similarity == pytest.approx(names.EXTRA_WORDS)
