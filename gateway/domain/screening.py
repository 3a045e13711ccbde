"""Screening a declaration against watchlist entries: an index of exact keys, and the scores.

Reasons and weights (ADR 0034):

=================  ======  ==========================================================
kind               weight  found when
=================  ======  ==========================================================
IDENTIFIER         1.0     a container, IMO, MMSI, USCC, LEI, BR, passport... of the
                           declaration equals one of the entry (same scheme; same
                           issuing country when both give one)
NAME               0.8     a party's (or the vessel's) name has the same normalised key
                           as a name or alias of the entry, for the same kind of entity
HS_CODE            0.5     an item's HS code lies under a heading the entry flags, or
                           under a controlled heading of one of the entry's categories
TRANSIT_COUNTRY    0.3     the route passes a country the entry flags
=================  ======  ==========================================================

Identifier and name matches are hits on their own; an HS match is a hit on its own only for
COMMODITY entries (for a company or a vessel it corroborates a name or identifier match, or
every antimony declaration would hit every antimony trader); a transit match only
corroborates. The score combines the kinds found as a noisy-OR, ``1 - prod(1 - weight)``:
an identifier gives 1.0, name and HS 0.9, HS and transit 0.65. Near-misses (one digit off, a
similar but different name) have different keys and never hit.

Everything is a dictionary lookup per declaration field, so the cost of screening does not
grow with the number of entries, only with the number of hits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, cast

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain import names, reference
from gateway.domain.identifiers import normalise_identifier

__all__ = ["WEIGHTS", "EntryKey", "ScreeningIndex", "combined_score"]

EntryKey = tuple[int, str, str]
"""(origin jurisdiction, watchlist, entry_id): an entry across its versions."""

_K = partner_pb2.MatchKind
WEIGHTS: Final[dict[int, float]] = {
    _K.MATCH_KIND_IDENTIFIER: 1.0,
    _K.MATCH_KIND_NAME: 0.8,
    _K.MATCH_KIND_HS_CODE: 0.5,
    _K.MATCH_KIND_TRANSIT_COUNTRY: 0.3,
}

_E = common_pb2.EntityType
_NAME_KIND: Final = {
    _E.ENTITY_TYPE_PERSON: "person",
    _E.ENTITY_TYPE_ORGANISATION: "org",
    _E.ENTITY_TYPE_VESSEL: "vessel",
}


def combined_score(kinds: Iterable[int]) -> float:
    """Noisy-OR of the weights of the distinct match kinds found: 1 - prod(1 - w)."""
    miss = 1.0
    for kind in set(kinds):
        miss *= 1.0 - WEIGHTS[kind]
    return round(1.0 - miss, 6)


def _name_keys(kind: str, text: str) -> str:
    return names.organisation_key(text) if kind == "org" else names.name_key(text)


@dataclass
class _Facts:
    """What an entry contributes to corroborating reasons, and where its keys are indexed."""

    entity_type: int
    hs: list[tuple[str, str]] = field(default_factory=list)  # (prefix, entry field)
    transit: dict[str, str] = field(default_factory=dict)  # country -> entry field
    indexed: list[tuple[dict[object, dict[EntryKey, object]], object]] = field(default_factory=list)


@dataclass
class _Found:
    reasons: list[partner_pb2.MatchReason] = field(default_factory=list)
    seen: set[tuple[int, str, str]] = field(default_factory=set)

    def add(self, kind: int, declaration_field: str, entry_field: str, detail: str) -> None:
        marker = (kind, declaration_field, entry_field)
        if marker not in self.seen:
            self.seen.add(marker)
            self.reasons.append(
                partner_pb2.MatchReason(
                    kind=cast(partner_pb2.MatchKind, kind),
                    declaration_field=declaration_field,
                    entry_field=entry_field,
                    detail=detail,
                )
            )

    @property
    def kinds(self) -> set[int]:
        return {r.kind for r in self.reasons}


class ScreeningIndex:
    """Exact-key index of the entries that may match: identifiers, names, HS prefixes.

    :meth:`put` replaces what an entry contributed, :meth:`drop` removes it; both cost as much
    as the entry has keys. :meth:`find` returns candidate entries with their reasons; the
    caller decides which are in force.
    """

    def __init__(self) -> None:
        self._ids: dict[object, dict[EntryKey, object]] = {}
        self._names: dict[object, dict[EntryKey, object]] = {}
        self._hs: dict[object, dict[EntryKey, object]] = {}
        self._facts: dict[EntryKey, _Facts] = {}

    def __len__(self) -> int:
        return len(self._facts)

    def _index(
        self,
        facts: _Facts,
        table: dict[object, dict[EntryKey, object]],
        key: object,
        entry_key: EntryKey,
        value: object,
    ) -> None:
        bucket = table.setdefault(key, {})
        if entry_key not in bucket:
            bucket[entry_key] = value
            facts.indexed.append((table, key))

    def put(self, key: EntryKey, entry: domain_pb2.WatchlistEntry) -> None:
        """Indexes ``entry`` (the latest version) under ``key``, replacing what was there."""
        self.drop(key)
        facts = _Facts(entity_type=entry.entity_type)
        for i, ident in enumerate(entry.identifiers):
            value = normalise_identifier(ident.scheme, ident.value)
            if value:
                self._index(
                    facts,
                    self._ids,
                    (ident.scheme, value),
                    key,
                    (f"identifiers[{i}].value", ident.issuing_country),
                )
        kind = _NAME_KIND.get(entry.entity_type)
        if kind is not None:
            for i, name in enumerate(entry.names):
                for attr in ("full_name", "latin_name"):
                    text = getattr(name, attr)
                    name_key = _name_keys(kind, text) if text else ""
                    if name_key:
                        self._index(facts, self._names, (kind, name_key), key, f"names[{i}].{attr}")
        for i, code in enumerate(entry.hs_codes):
            facts.hs.append((code, f"hs_codes[{i}]"))
        for i, category in enumerate(entry.categories):
            for prefix in reference.CONTROLLED_HS_PREFIXES.get(category, ()):
                facts.hs.append((prefix, f"categories[{i}]"))
        if entry.entity_type == _E.ENTITY_TYPE_COMMODITY:
            for prefix, entry_field in facts.hs:
                self._index(facts, self._hs, prefix, key, entry_field)
        for i, country in enumerate(entry.flagged_transit_countries):
            facts.transit.setdefault(country, f"flagged_transit_countries[{i}]")
        self._facts[key] = facts

    def drop(self, key: EntryKey) -> None:
        """Removes every key ``key`` contributed; nothing happens for an unknown key."""
        facts = self._facts.pop(key, None)
        if facts is None:
            return
        for table, index_key in facts.indexed:
            bucket = table.get(index_key)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del table[index_key]

    def find(
        self, declaration: domain_pb2.Declaration
    ) -> dict[EntryKey, list[partner_pb2.MatchReason]]:
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
            for key, stored in self._ids.get((scheme, value), {}).items():
                entry_field, entry_country = cast(tuple[str, str], stored)
                if country and entry_country and country != entry_country:
                    continue
                hit(key).add(_K.MATCH_KIND_IDENTIFIER, path, entry_field, f"identifier {value}")

        # Names: parties by their entity type, the vessel by the conveyance name.
        name_probes: list[tuple[str, str, str]] = []  # kind, text, declaration path
        for p, party in enumerate(declaration.parties):
            kinds = (
                [_NAME_KIND[party.entity_type]]
                if party.entity_type in (_E.ENTITY_TYPE_PERSON, _E.ENTITY_TYPE_ORGANISATION)
                else ["person", "org"]
            )
            for i, name in enumerate(party.names):
                for attr in ("full_name", "latin_name"):
                    text = getattr(name, attr)
                    if text:
                        for kind in kinds:
                            name_probes.append((kind, text, f"parties[{p}].names[{i}].{attr}"))
        if declaration.conveyance.name:
            name_probes.append(("vessel", declaration.conveyance.name, "conveyance.name"))
        for kind, text, path in name_probes:
            name_key = _name_keys(kind, text)
            if not name_key:
                continue
            for key, name_field in self._names.get((kind, name_key), {}).items():
                hit(key).add(_K.MATCH_KIND_NAME, path, str(name_field), f"name {text!r}")

        # HS codes: a hit on its own for COMMODITY entries.
        for i, item in enumerate(declaration.items):
            code = item.hs_code
            for length in range(4, len(code) + 1):
                for key, hs_field in self._hs.get(code[:length], {}).items():
                    hit(key).add(
                        _K.MATCH_KIND_HS_CODE,
                        f"items[{i}].hs_code",
                        str(hs_field),
                        f"HS {code} under {code[:length]}",
                    )

        # Corroborating reasons for every candidate.
        transit = declaration.route.transit_countries
        for key, result in found.items():
            facts = self._facts[key]
            for i, item in enumerate(declaration.items):
                for prefix, entry_field in facts.hs:
                    if item.hs_code.startswith(prefix):
                        result.add(
                            _K.MATCH_KIND_HS_CODE,
                            f"items[{i}].hs_code",
                            entry_field,
                            f"HS {item.hs_code} under {prefix}",
                        )
            for i, country in enumerate(transit):
                transit_field = facts.transit.get(country)
                if transit_field is not None:
                    result.add(
                        _K.MATCH_KIND_TRANSIT_COUNTRY,
                        f"route.transit_countries[{i}]",
                        transit_field,
                        f"transit through {country}",
                    )
        return {key: result.reasons for key, result in found.items()}
