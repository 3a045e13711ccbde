"""Screening a declaration against watchlist entries: an index of exact keys, and the scores.

Reasons and weights (ADR 0034):

=================  ======  ==========================================================
kind               weight  found when
=================  ======  ==========================================================
IDENTIFIER         1.0     a container, IMO, MMSI, USCC, LEI, BR, passport... of the
                           declaration equals one of the entry (same scheme; same
                           issuing country when both give one)
NAME               0.8 x s a party's (or the vessel's) name is at least 0.80 alike (s,
                           after corroboration) to a name or alias of the entry, for the
                           same kind of entity, across scripts and romanisations
                           (``names``, ADR 0036)
HS_CODE            0.5     an item's HS code lies under a heading the entry flags, or
                           under a controlled heading of one of the entry's categories
TRANSIT_COUNTRY    0.3     the route passes a country the entry flags
=================  ======  ==========================================================

Identifier and name matches are hits on their own; an HS match is a hit on its own only for
COMMODITY entries (for a company or a vessel it corroborates a name or identifier match, or
every antimony declaration would hit every antimony trader); a transit match only
corroborates. The score combines the kinds found as a noisy-OR, ``1 - prod(1 - weight)``:
an identifier gives 1.0, an exact name and HS 0.9, HS and transit 0.65.

A name's similarity s is then corrected by what else the declaration says about the party,
each a reason of its own with its ``adjustment``: the party's country in the entry's countries
+0.03, another country -0.10; the same date of birth +0.05, another year -0.25, the same year
but another day -0.10; an identifier of the same scheme (and issuing country) with another
value -0.15. Tier: MATCH for an identifier, a commodity's HS code, or a corrected name
similarity of at least :data:`MATCH_AT` (the names are the same once scripts, romanisation,
legal forms and abbreviations are accounted for, and nothing contradicts); POSSIBLE_MATCH (for
an officer's review) from :data:`POSSIBLE_AT`: a typo, a partial spelling, a country or date
that does not agree.

Identifiers and HS codes are dictionary lookups; names are looked up through blocking keys
(:func:`gateway.domain.names.blocking_keys`), a key shared by more than :data:`BLOCK_LIMIT`
names is too common to narrow anything and is skipped (unless every key is; then the least
common one is used); the :data:`BLOCKED` entries sharing the most keys with a name (each key
weighted by its rarity: log of entries over the key's entries) are ranked by a first cut in C
(``rapidfuzz.process.extract`` over the joined names), and the :data:`CANDIDATES` best of
them are compared in full, no others.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, cast

from rapidfuzz import fuzz, process

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain import names, reference
from gateway.domain.identifiers import normalise_identifier

__all__ = [
    "BLOCKED",
    "BLOCK_LIMIT",
    "CANDIDATES",
    "HS",
    "IDS",
    "MATCH_AT",
    "NAMES",
    "POSSIBLE_AT",
    "WEIGHTS",
    "EntryKey",
    "Facts",
    "IndexStorage",
    "MemoryIndexStorage",
    "Posting",
    "ScreeningIndex",
    "combined_score",
    "facts_and_postings",
    "postings",
]

MATCH_AT: Final = 0.97
POSSIBLE_AT: Final = 0.80
BLOCK_LIMIT: Final = 1000
BLOCKED: Final = 300
CANDIDATES: Final = 40

EntryKey = tuple[int, str, str]
"""(origin jurisdiction, watchlist, entry_id): an entry across its versions."""

_K = partner_pb2.MatchKind
WEIGHTS: Final[dict[int, float]] = {
    partner_pb2.MATCH_KIND_IDENTIFIER: 1.0,
    partner_pb2.MATCH_KIND_NAME: 0.8,
    partner_pb2.MATCH_KIND_HS_CODE: 0.5,
    partner_pb2.MATCH_KIND_TRANSIT_COUNTRY: 0.3,
}

_NAME_KIND: Final = {
    common_pb2.ENTITY_TYPE_PERSON: "person",
    common_pb2.ENTITY_TYPE_ORGANISATION: "org",
    common_pb2.ENTITY_TYPE_VESSEL: "vessel",
}


def combined_score(kinds: Iterable[int], name_similarity: float = 1.0) -> float:
    """Noisy-OR of the weights of the distinct match kinds found: 1 - prod(1 - w); the name's
    weight is scaled by its (corrected) similarity. Corroborating kinds without a weight
    (country, date of birth) count through the name's similarity only."""
    miss = 1.0
    for kind in set(kinds):
        weight = WEIGHTS.get(kind, 0.0)
        if kind == partner_pb2.MATCH_KIND_NAME:
            weight *= name_similarity
        miss *= 1.0 - weight
    return round(1.0 - miss, 6)


@dataclass
class Facts:
    """What an entry contributes to corroborating reasons and to the first cut of names; a
    function of the entry alone (:func:`facts_and_postings`), so a storage may drop it and
    compute it again."""

    entity_type: int
    hs: list[tuple[str, str]] = field(default_factory=list)  # (prefix, entry field)
    transit: dict[str, str] = field(default_factory=dict)  # country -> entry field
    forms: list[tuple[str, names.NameForm]] = field(default_factory=list)  # (entry field, form)
    countries: list[str] = field(default_factory=list)
    date_of_birth: str = ""
    identifiers: list[tuple[int, str, str]] = field(default_factory=list)  # scheme, value, country
    # Its names' cores joined and spaced, Latin and Han forms apart, for the first cut in C.
    joined_latin: list[tuple[str, str]] = field(default_factory=list)
    joined_han: list[tuple[str, str]] = field(default_factory=list)


IDS: Final = 0
"""Posting table of identifiers: key ``"<scheme>\x1f<value>"``, value ``"<field>\x1f<country>"``."""
NAMES: Final = 1
"""Posting table of name blocking keys: key ``"<kind>\x1f<block>"``, value empty."""
HS: Final = 2
"""Posting table of a COMMODITY entry's HS prefixes: key the prefix, value the entry field."""

Posting = tuple[int, str, str]
"""(table, key, value): one key an entry is found by, and what the match reports."""


class IndexStorage(Protocol):
    """Where a :class:`ScreeningIndex` keeps its postings and facts. In memory
    (:class:`MemoryIndexStorage`) or in a database (the node's, ``gateway.exchange``), so that
    the node's memory does not grow with the number of entries."""

    facts_at_put: bool
    """Whether :meth:`put` is given the entry's facts (else None: the storage computes them
    when :meth:`facts` asks, from the entry)."""

    def count(self) -> int:
        """How many entries are indexed."""

    def facts(self, key: EntryKey) -> Facts:
        """The facts of an indexed entry (KeyError if it is not indexed)."""

    def bucket(self, table: int, key: str) -> Iterable[tuple[EntryKey, str]]:
        """The entries posted under ``key`` with their values (not to be kept: a view of the
        storage may change with it)."""

    def bucket_size(self, table: int, key: str, cap: int) -> int:
        """How many entries are posted under ``key``; with ``cap`` >= 0, any number above
        ``cap`` may be reported as ``cap + 1`` (exact with a negative ``cap``)."""

    def put(
        self, key: EntryKey, facts: Facts | None, postings: list[Posting], *, replacing: bool
    ) -> None:
        """Indexes an entry: ``postings`` are distinct (table, key); ``replacing`` says
        whether the entry is indexed already (what it had is then replaced); ``facts`` is
        None unless :attr:`facts_at_put`."""

    def drop(self, key: EntryKey) -> None:
        """Removes an indexed entry's facts and postings."""


class MemoryIndexStorage:
    """:class:`IndexStorage` in dictionaries (tests, benches, pure use)."""

    facts_at_put = True

    def __init__(self) -> None:
        self._tables: tuple[dict[str, dict[EntryKey, str]], ...] = ({}, {}, {})
        self._facts: dict[EntryKey, Facts] = {}
        self._posted: dict[EntryKey, list[Posting]] = {}

    def count(self) -> int:
        """How many entries are indexed."""
        return len(self._facts)

    def facts(self, key: EntryKey) -> Facts:
        """The facts of an indexed entry."""
        return self._facts[key]

    def bucket(self, table: int, key: str) -> Iterable[tuple[EntryKey, str]]:
        """The entries posted under ``key``, in the order they were put (a view)."""
        return self._tables[table].get(key, {}).items()

    def bucket_size(self, table: int, key: str, cap: int) -> int:
        """How many entries are posted under ``key`` (exactly)."""
        return len(self._tables[table].get(key, ()))

    def put(
        self, key: EntryKey, facts: Facts | None, postings: list[Posting], *, replacing: bool
    ) -> None:
        """Indexes an entry, replacing what it had (whatever ``replacing`` says)."""
        if facts is None:
            raise ValueError("the in-memory storage keeps the facts it is given")
        self.drop(key)
        for table, index_key, value in postings:
            self._tables[table].setdefault(index_key, {})[key] = value
        self._facts[key] = facts
        self._posted[key] = postings

    def drop(self, key: EntryKey) -> None:
        """Removes an entry's facts and postings."""
        self._facts.pop(key, None)
        for table, index_key, _ in self._posted.pop(key, ()):
            bucket = self._tables[table].get(index_key)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del self._tables[table][index_key]


def facts_and_postings(entry: domain_pb2.WatchlistEntry) -> tuple[Facts, list[Posting]]:
    """What ``entry`` contributes to the index: its facts, and its distinct postings (the
    first value of a repeated key is kept)."""
    facts = Facts(entity_type=entry.entity_type)
    return facts, _contributions(entry, facts)


def postings(entry: domain_pb2.WatchlistEntry) -> list[Posting]:
    """``entry``'s postings alone, as :func:`facts_and_postings` gives them (for a storage that
    computes facts when they are asked for)."""
    return _contributions(entry, None)


def _contributions(entry: domain_pb2.WatchlistEntry, facts: Facts | None) -> list[Posting]:
    """``entry``'s distinct postings; its facts filled into ``facts`` unless None."""
    postings: dict[tuple[int, str], str] = {}
    for i, ident in enumerate(entry.identifiers):
        value = normalise_identifier(ident.scheme, ident.value)
        if value:
            postings.setdefault(
                (IDS, f"{ident.scheme}\x1f{value}"),
                f"identifiers[{i}].value\x1f{ident.issuing_country}",
            )
    kind = _NAME_KIND.get(entry.entity_type)
    if kind is not None:
        for i, name in enumerate(entry.names):
            for attr in ("full_name", "latin_name"):
                text = getattr(name, attr)
                for form in names.forms(text, kind) if text else ():
                    if facts is not None:
                        facts.forms.append((f"names[{i}].{attr}", form))
                        joined = facts.joined_latin if form.latin else facts.joined_han
                        joined.append(("".join(form.core), " ".join(form.core)))
                    for block in names.blocking_keys(form):
                        postings.setdefault((NAMES, f"{kind}\x1f{block}"), "")
    commodity = entry.entity_type == common_pb2.ENTITY_TYPE_COMMODITY
    if facts is not None or commodity:
        hs: list[tuple[str, str]] = []
        for i, code in enumerate(entry.hs_codes):
            hs.append((code, f"hs_codes[{i}]"))
        for i, category in enumerate(entry.categories):
            for prefix in reference.CONTROLLED_HS_PREFIXES.get(category, ()):
                hs.append((prefix, f"categories[{i}]"))
        if commodity:
            for prefix, entry_field in hs:
                postings.setdefault((HS, prefix), entry_field)
        if facts is not None:
            facts.hs = hs
    if facts is not None:
        facts.countries = list(entry.countries)
        facts.date_of_birth = entry.date_of_birth
        facts.identifiers = [
            (ident.scheme, normalise_identifier(ident.scheme, ident.value), ident.issuing_country)
            for ident in entry.identifiers
        ]
        for i, country in enumerate(entry.flagged_transit_countries):
            facts.transit.setdefault(country, f"flagged_transit_countries[{i}]")
    return [(table, key, value) for (table, key), value in postings.items()]


@dataclass
class _Found:
    reasons: list[partner_pb2.MatchReason] = field(default_factory=list)
    seen: set[tuple[int, str, str]] = field(default_factory=set)
    name_similarity: float = 0.0
    tier: int = partner_pb2.MATCH_TIER_UNSPECIFIED

    def add(
        self,
        kind: int,
        declaration_field: str,
        entry_field: str,
        detail: str,
        *,
        similarity: float = 0.0,
        adjustment: float = 0.0,
    ) -> None:
        marker = (kind, declaration_field, entry_field)
        if marker not in self.seen:
            self.seen.add(marker)
            self.reasons.append(
                partner_pb2.MatchReason(
                    kind=cast(partner_pb2.MatchKind, kind),
                    declaration_field=declaration_field,
                    entry_field=entry_field,
                    detail=detail,
                    similarity=similarity,
                    adjustment=adjustment,
                )
            )

    @property
    def kinds(self) -> set[int]:
        return {r.kind for r in self.reasons}


@dataclass(frozen=True)
class Candidate:
    """An entry a declaration hits: every reason, the combined score and the tier."""

    reasons: list[partner_pb2.MatchReason]
    score: float
    tier: int


_MAX_BONUS: Final = 0.08  # country and date of birth agreeing


def _text_at(declaration: domain_pb2.Declaration, path: str) -> str:
    if path == "conveyance.name":
        return declaration.conveyance.name
    party, name, attr = path.split(".")
    p = int(party[len("parties[") : -1])
    i = int(name[len("names[") : -1])
    return str(getattr(declaration.parties[p].names[i], attr))


def _corrections(
    facts: Facts, party: domain_pb2.Party | None, p: int
) -> list[tuple[int, str, str, float, str]]:
    """What the party's country, date of birth and identifiers say about a name match."""
    out: list[tuple[int, str, str, float, str]] = []
    if party is None:
        return out
    if party.country and facts.countries:
        if party.country in facts.countries:
            i = facts.countries.index(party.country)
            out.append(
                (partner_pb2.MATCH_KIND_COUNTRY, f"parties[{p}].country", f"countries[{i}]", 0.03,
                 f"country {party.country} agrees")
            )  # fmt: skip
        else:
            out.append(
                (partner_pb2.MATCH_KIND_COUNTRY, f"parties[{p}].country", "countries", -0.10,
                 f"country {party.country} is not the entry's {', '.join(facts.countries)}")
            )  # fmt: skip
    if party.date_of_birth and facts.date_of_birth:
        given, known = party.date_of_birth, facts.date_of_birth
        shared = min(len(given), len(known))
        if given[:shared] == known[:shared]:
            out.append(
                (_K.MATCH_KIND_DATE_OF_BIRTH, f"parties[{p}].date_of_birth", "date_of_birth",
                 0.05, f"date of birth {given} agrees with {known}")
            )  # fmt: skip
        else:
            penalty = -0.25 if given[:4] != known[:4] else -0.10
            out.append(
                (_K.MATCH_KIND_DATE_OF_BIRTH, f"parties[{p}].date_of_birth", "date_of_birth",
                 penalty, f"date of birth {given} differs from {known}")
            )  # fmt: skip
    for i, ident in enumerate(party.identifiers):
        value = normalise_identifier(ident.scheme, ident.value)
        for j, (scheme, known_value, country) in enumerate(facts.identifiers):
            same_country = not (ident.issuing_country and country) or (
                ident.issuing_country == country
            )
            if scheme == ident.scheme and same_country and value != known_value:
                out.append(
                    (_K.MATCH_KIND_IDENTIFIER_DIFFERS, f"parties[{p}].identifiers[{i}].value",
                     f"identifiers[{j}].value", -0.15,
                     f"{common_pb2.IdentifierScheme.Name(scheme)} {value} is not the entry's")
                )  # fmt: skip
                break
    return out


class ScreeningIndex:
    """Index of the entries that may match: identifiers and HS prefixes (exact keys), names
    (blocking keys, then similarity), kept in ``storage`` (in memory unless given).

    :meth:`put` replaces what an entry contributed, :meth:`drop` removes it; both cost as much
    as the entry has keys. :meth:`find` returns candidate entries with their reasons; the
    caller decides which are in force.
    """

    def __init__(self, storage: IndexStorage | None = None) -> None:
        self._storage: IndexStorage = MemoryIndexStorage() if storage is None else storage

    def __len__(self) -> int:
        return self._storage.count()

    def put(
        self, key: EntryKey, entry: domain_pb2.WatchlistEntry, *, replacing: bool = True
    ) -> None:
        """Indexes ``entry`` (the latest version) under ``key``, replacing what was there;
        ``replacing=False`` promises nothing is indexed under ``key`` yet (a storage may then
        skip removing it)."""
        if self._storage.facts_at_put:
            facts, posted = facts_and_postings(entry)
            self._storage.put(key, facts, posted, replacing=replacing)
        else:
            self._storage.put(key, None, postings(entry), replacing=replacing)

    def drop(self, key: EntryKey) -> None:
        """Removes every key ``key`` contributed (a storage may require that it is indexed;
        the in-memory one does nothing for an unknown key)."""
        self._storage.drop(key)

    def _name_candidates(self, kind: str, query: names.NameForm) -> list[EntryKey]:
        """The entries worth comparing with ``query`` in full (blocking, then a first cut)."""
        storage = self._storage
        shared: dict[EntryKey, float] = {}
        sizes = [
            (index_key, size)
            for block in names.blocking_keys(query)
            if (
                size := storage.bucket_size(NAMES, (index_key := f"{kind}\x1f{block}"), BLOCK_LIMIT)
            )
        ]
        usable = [(k, size) for k, size in sizes if size <= BLOCK_LIMIT]
        if not usable and sizes:  # every key common: the least common one
            exact = [(k, storage.bucket_size(NAMES, k, -1)) for k, _ in sizes]
            usable = [min(exact, key=lambda item: item[1])]
        total = storage.count()
        for index_key, size in usable:  # a rare key says more than a common one
            weight = math.log(2.0 + total / size)
            for key, _ in storage.bucket(NAMES, index_key):
                shared[key] = shared.get(key, 0.0) + weight
        blocked = heapq.nlargest(BLOCKED, shared.items(), key=lambda item: item[1])
        # A first cut in C (rapidfuzz over the joined and the sorted names), the full
        # comparison after, on the best only.
        keys: list[EntryKey] = []
        joined: list[str] = []
        spaced: list[str] = []
        for key, _ in blocked:
            facts = storage.facts(key)
            for together, apart in facts.joined_latin if query.latin else facts.joined_han:
                keys.append(key)
                joined.append(together)
                spaced.append(apart)
        cut = process.extract(
            "".join(query.core), joined, scorer=fuzz.ratio, limit=CANDIDATES
        ) + process.extract(
            " ".join(query.core), spaced, scorer=fuzz.token_sort_ratio, limit=CANDIDATES
        )
        return list(dict.fromkeys(keys[index] for _, _, index in cut))

    def find(self, declaration: domain_pb2.Declaration) -> dict[EntryKey, Candidate]:
        """Candidate entries for ``declaration`` with every reason found, hits only.

        An entry is a candidate when it has a primary reason (identifier, name, or HS for a
        COMMODITY entry); corroborating HS and transit reasons are then added.
        """
        found: dict[EntryKey, _Found] = {}

        def hit(key: EntryKey) -> _Found:
            return found.setdefault(key, _Found())

        # Identifiers: containers, conveyance and party identifiers.
        probes: list[tuple[int, str, str, str]] = []  # scheme, value, country, declaration path
        container = common_pb2.IDENTIFIER_SCHEME_CONTAINER
        for i, number in enumerate(declaration.container_numbers):
            probes.append((container, number, "", f"container_numbers[{i}]"))
        for i, ident in enumerate(declaration.conveyance.identifiers):
            probes.append(
                (
                    ident.scheme,
                    ident.value,
                    ident.issuing_country,
                    f"conveyance.identifiers[{i}].value",
                )
            )
        for p, party in enumerate(declaration.parties):
            for i, ident in enumerate(party.identifiers):
                probes.append(
                    (
                        ident.scheme,
                        ident.value,
                        ident.issuing_country,
                        f"parties[{p}].identifiers[{i}].value",
                    )
                )
        for scheme, raw, country, path in probes:
            value = normalise_identifier(scheme, raw)
            for key, stored in self._storage.bucket(IDS, f"{scheme}\x1f{value}"):
                entry_field, _, entry_country = stored.partition("\x1f")
                if country and entry_country and country != entry_country:
                    continue
                hit(key).add(
                    partner_pb2.MATCH_KIND_IDENTIFIER, path, entry_field, f"identifier {value}"
                )

        # Names: parties by their entity type, the vessel by the conveyance name.
        name_probes: list[tuple[str, str, str, int]] = []  # kind, text, path, party index
        for p, party in enumerate(declaration.parties):
            kinds = (
                [_NAME_KIND[party.entity_type]]
                if party.entity_type
                in (common_pb2.ENTITY_TYPE_PERSON, common_pb2.ENTITY_TYPE_ORGANISATION)
                else ["person", "org"]
            )
            for i, name in enumerate(party.names):
                for attr in ("full_name", "latin_name"):
                    text = getattr(name, attr)
                    if text:
                        for kind in kinds:
                            name_probes.append((kind, text, f"parties[{p}].names[{i}].{attr}", p))
        if declaration.conveyance.name:
            name_probes.append(("vessel", declaration.conveyance.name, "conveyance.name", -1))
        best: dict[EntryKey, tuple[float, str, str, str, int]] = {}
        for kind, text, path, party_index in name_probes:
            for query in names.forms(text, kind):
                for key in self._name_candidates(kind, query):
                    facts = self._storage.facts(key)
                    for entry_field, form in facts.forms:
                        alike = names.similarity(query, form, kind)
                        if alike >= POSSIBLE_AT - _MAX_BONUS and alike > best.get(key, (0.0,))[0]:
                            best[key] = (alike, path, entry_field, form.describe(), party_index)
        for key, (alike, path, entry_field, form_text, party_index) in best.items():
            facts = self._storage.facts(key)
            named = declaration.parties[party_index] if party_index >= 0 else None
            corrections = _corrections(facts, named, party_index)
            corrected = max(0.0, min(1.0, alike + sum(c[3] for c in corrections)))
            if corrected < POSSIBLE_AT:
                continue
            result = hit(key)
            result.name_similarity = corrected
            result.add(
                partner_pb2.MATCH_KIND_NAME,
                path,
                entry_field,
                f"name {_text_at(declaration, path)!r} is {alike:.2f} alike to {form_text!r}",
                similarity=alike,
            )
            for kind_, declaration_field, entry_field_, adjustment, detail in corrections:
                result.add(kind_, declaration_field, entry_field_, detail, adjustment=adjustment)

        # HS codes: a hit on its own for COMMODITY entries.
        for i, item in enumerate(declaration.items):
            code = item.hs_code
            for length in range(4, len(code) + 1):
                for key, hs_field in self._storage.bucket(HS, code[:length]):
                    hit(key).add(
                        partner_pb2.MATCH_KIND_HS_CODE,
                        f"items[{i}].hs_code",
                        str(hs_field),
                        f"HS {code} under {code[:length]}",
                    )

        # Corroborating reasons for every candidate.
        transit = declaration.route.transit_countries
        for key, result in found.items():
            facts = self._storage.facts(key)
            for i, item in enumerate(declaration.items):
                for prefix, entry_field in facts.hs:
                    if item.hs_code.startswith(prefix):
                        result.add(
                            partner_pb2.MATCH_KIND_HS_CODE,
                            f"items[{i}].hs_code",
                            entry_field,
                            f"HS {item.hs_code} under {prefix}",
                        )
            for i, country in enumerate(transit):
                transit_field = facts.transit.get(country)
                if transit_field is not None:
                    result.add(
                        partner_pb2.MATCH_KIND_TRANSIT_COUNTRY,
                        f"route.transit_countries[{i}]",
                        transit_field,
                        f"transit through {country}",
                    )
        out: dict[EntryKey, Candidate] = {}
        for key, result in found.items():
            found_kinds = result.kinds
            if (
                partner_pb2.MATCH_KIND_IDENTIFIER in found_kinds
                or (
                    partner_pb2.MATCH_KIND_HS_CODE in found_kinds
                    and self._storage.facts(key).entity_type == common_pb2.ENTITY_TYPE_COMMODITY
                )
                or result.name_similarity >= MATCH_AT
            ):
                tier = partner_pb2.MATCH_TIER_MATCH
            else:
                tier = partner_pb2.MATCH_TIER_POSSIBLE_MATCH
            score = combined_score(found_kinds, result.name_similarity)
            out[key] = Candidate(result.reasons, score, tier)
        return out
