"""Screening: quality on the evaluation set (issue 16) and speed at 100,000 entries (issue 6).

Quality: every query of ``bench/data/screening-eval.json`` (``bench.screening_eval``) is screened
as a declaration against a view holding every entry of the set. A query is *found* when its
entry is among the hits (match or possible match); a near-miss is a *false hit* when it hits
anything. Printed per class, beside OpenSanctions' matchers as yente runs them (nomenklatura
logic-v1 and logic-v2, threshold 0.70), scored in the same run on the name and vessel queries,
each query against the entry it names or resembles (so the baselines are spared the other
entries; ours is not).

Speed baseline, measured in the same run: a linear scan over the same entries with their match
keys precomputed (what screening costs without the index).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import defaultdict
from typing import Any

from bench import screening_eval
from bench._report import Result, Scale
from customs.gateway.v1 import common_pb2 as c
from customs.gateway.v1 import domain_pb2 as d
from gateway.domain import fixtures, names
from gateway.domain.identifiers import container_check_digit, imo_check_digit
from gateway.domain.watchlist import WatchlistView

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HAN = (
    "鸿辉华南永盛金泰宏达恒丰锦程伟业德信荣昌顺发兴隆宝利通嘉长江东方祥和富源天成"
    "安志强国明新联裕万建凭正鼎百美汇海大福龙中立文家玲健诗子俊杰秀英少欣丽珊咏康"
)
_INDUSTRY = ["锑业", "钨业", "稀土", "金属", "矿业", "化工"]
_SURNAMES = "陈黄张李梁林刘何吴郑周叶郭马谢曾蔡许邓冯"
_ENTITIES = [c.ENTITY_TYPE_ORGANISATION, c.ENTITY_TYPE_PERSON, c.ENTITY_TYPE_VESSEL,
             c.ENTITY_TYPE_CONTAINER, c.ENTITY_TYPE_COMMODITY]  # fmt: skip


def _entries(n: int, rng: random.Random) -> list[d.WatchlistEntry]:
    base = fixtures.seed_watchlist_entry(NOW)
    chapters = ["26", "28", "71", "79", "81", "84", "85", "38", "25"]
    out = []
    for i in range(n):
        entity = _ENTITIES[i % len(_ENTITIES)]
        e = d.WatchlistEntry(
            watchlist="strategic-minerals" if i % 3 else "sanctioned-vessels",
            entry_id=f"00000000-0000-4000-8000-{i:012d}",
            version=1,
            entity_type=entity,
            risk_level=1 + i % 4,
            reason="generated",
            validity=base.validity,
            retain_until=base.retain_until,
            flagged_transit_countries=rng.sample(["VN", "TH", "MY", "LA", "KH", "AE"], 2),
        )
        word = "".join(rng.choice(_LETTERS) for _ in range(10))
        core = rng.choice(_HAN) + rng.choice(_HAN)
        if entity == c.ENTITY_TYPE_ORGANISATION and i % 2:  # Chinese companies, as registered
            e.names.add(full_name=f"{core}{rng.choice(_INDUSTRY)}贸易有限公司",
                        latin_name=f"{word} Metals Trading Co Ltd")  # fmt: skip
        elif entity == c.ENTITY_TYPE_PERSON and i % 2:  # Chinese persons
            e.names.add(full_name=rng.choice(_SURNAMES) + core)
        elif entity in (c.ENTITY_TYPE_ORGANISATION, c.ENTITY_TYPE_PERSON, c.ENTITY_TYPE_VESSEL):
            e.names.add(full_name=f"{word} Trading Co Ltd", latin_name=f"{word} Metals")
        if entity == c.ENTITY_TYPE_CONTAINER:
            first = "".join(rng.choice(_LETTERS) for _ in range(3)) + "U" + f"{i % 1000000:06d}"
            e.identifiers.add(scheme=c.IDENTIFIER_SCHEME_CONTAINER,
                              value=first + str(container_check_digit(first)))  # fmt: skip
        if entity == c.ENTITY_TYPE_VESSEL:
            six = f"{100000 + i % 900000}"
            e.identifiers.add(
                scheme=c.IDENTIFIER_SCHEME_IMO, value=f"IMO{six}{imo_check_digit(six)}"
            )
        if entity == c.ENTITY_TYPE_COMMODITY or i % 7 == 0:
            e.hs_codes.append(rng.choice(chapters) + f"{rng.randrange(10000):04d}")
        out.append(e)
    return out


def _declaration(entries: list[d.WatchlistEntry]) -> d.Declaration:
    declaration = fixtures.seed_declaration()
    container = next(e for e in entries if e.entity_type == c.ENTITY_TYPE_CONTAINER)
    declaration.container_numbers.append(container.identifiers[0].value)
    org = next(e for e in entries if e.entity_type == c.ENTITY_TYPE_ORGANISATION)
    declaration.parties.add(entity_type=c.ENTITY_TYPE_ORGANISATION, names=[org.names[0]])
    declaration.parties.add(
        entity_type=c.ENTITY_TYPE_PERSON, names=[c.Name(full_name="CHAN Tai Man")]
    )
    declaration.parties.add(entity_type=c.ENTITY_TYPE_PERSON, names=[c.Name(full_name="陈伟强")])
    declaration.items.add(hs_code="2617100000")
    return declaration


def _linear(entries: list[d.WatchlistEntry], declaration: d.Declaration) -> int:
    """Baseline: check every entry against precomputed declaration keys."""
    ids = set(declaration.container_numbers)
    keys = {names.organisation_key(n.full_name) for p in declaration.parties for n in p.names}
    codes = [i.hs_code for i in declaration.items]
    hits = 0
    for e in entries:
        if (
            any(i.value in ids for i in e.identifiers)
            or any(names.organisation_key(n.full_name) in keys for n in e.names)
            or (
                e.entity_type == c.ENTITY_TYPE_COMMODITY
                and any(code.startswith(h) for h in e.hs_codes for code in codes)
            )
        ):
            hits += 1
    return hits


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


_ENTITY = {
    "org": c.ENTITY_TYPE_ORGANISATION,
    "person": c.ENTITY_TYPE_PERSON,
    "vessel": c.ENTITY_TYPE_VESSEL,
    "container": c.ENTITY_TYPE_CONTAINER,
    "commodity": c.ENTITY_TYPE_COMMODITY,
}
_ORIGIN = {"CN": c.JURISDICTION_CN, "HK": c.JURISDICTION_HK, "MO": c.JURISDICTION_MO}


def eval_entry(spec: dict[str, Any]) -> d.WatchlistEntry:
    """A watchlist entry of the evaluation set."""
    base = fixtures.seed_watchlist_entry(NOW)
    entry = d.WatchlistEntry(
        watchlist="eval", entry_id=spec["id"], version=1, entity_type=_ENTITY[spec["type"]],
        risk_level=d.RISK_LEVEL_HIGH, reason="evaluation", validity=base.validity,
        retain_until=base.retain_until, countries=spec.get("countries", []),
        date_of_birth=spec.get("date_of_birth", ""), hs_codes=spec.get("hs", []),
    )  # fmt: skip
    for full, latin in spec.get("names", []):
        entry.names.add(full_name=full, latin_name=latin)
    if "imo" in spec:
        entry.identifiers.add(scheme=c.IDENTIFIER_SCHEME_IMO, value=spec["imo"])
    if "container" in spec:
        entry.identifiers.add(scheme=c.IDENTIFIER_SCHEME_CONTAINER, value=spec["container"])
    return entry


def eval_declaration(query: dict[str, Any], kind: str) -> d.Declaration:
    """The declaration a query stands for: a party named so, a vessel, a container, goods."""
    declaration = d.Declaration()
    if "name" in query:
        party = declaration.parties.add(
            role=d.PARTY_ROLE_CONSIGNOR,
            entity_type=c.ENTITY_TYPE_PERSON if kind == "person" else c.ENTITY_TYPE_ORGANISATION,
            country=query.get("country", ""),
            date_of_birth=query.get("dob", ""),
        )
        party.names.add(full_name=query["name"])
    if "vessel" in query:
        declaration.conveyance.name = query["vessel"]
    if "imo" in query:
        declaration.conveyance.identifiers.add(scheme=c.IDENTIFIER_SCHEME_IMO, value=query["imo"])
    if "container" in query:
        declaration.container_numbers.append(query["container"])
    if "hs" in query:
        declaration.items.add(hs_code=query["hs"])
    return declaration


def evaluate_ours(data: dict[str, Any], view: WatchlistView | None = None) -> dict[str, list[bool]]:
    """Per class, one outcome per query: found (or, for a near-miss, falsely hit). With
    ``view``, the set's entries are added to it (other entries around them) and a near-miss
    counts only when it hits an entry of the set."""
    mixed = view is not None
    view = view or WatchlistView(b"bench-secret-bench-secret-000000")
    ids = {spec["id"] for spec in data["entries"]}
    kinds = {}
    for spec in data["entries"]:
        kinds[spec["id"]] = spec["type"]
        view.apply(_ORIGIN[spec["origin"]], eval_entry(spec), spec["id"], received_at=NOW)
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for query in data["queries"]:
        target = query.get("expect") or query["near"]
        hits = view.screen(eval_declaration(query, kinds[target]), now=NOW).hits
        if "expect" in query:
            outcomes[query["class"]].append(any(h.entry_id == target for h in hits))
        else:
            outcomes[query["class"]].append(
                any(h.entry_id in ids for h in hits) if mixed else bool(hits)
            )
    return outcomes


def evaluate_nomenklatura(data: dict[str, Any]) -> dict[str, dict[str, list[bool]]] | str:
    """logic-v1 and logic-v2 at 0.70 on the name and vessel queries, or why they cannot run."""
    try:
        from followthemoney import model
        from nomenklatura.matching import get_algorithm
    except ImportError as e:  # the bench extra is not installed
        return f"nomenklatura not importable: {e}"
    schema = {"org": "Company", "person": "Person", "vessel": "Vessel"}
    specs = {spec["id"]: spec for spec in data["entries"]}

    counter = iter(range(10**9))

    def entity(spec: dict[str, Any], names_: list[str], **props: Any) -> Any:
        proxy = model.make_entity(schema[spec["type"]])
        proxy.id = f"x{next(counter)}"  # unique: nomenklatura caches by entity id
        proxy.add("name", names_[0])
        for alias in names_[1:]:
            proxy.add("alias", alias)
        for prop, value in props.items():
            if value:
                proxy.add(prop, value)
        return proxy

    results: dict[str, dict[str, list[bool]]] = {}
    for name in ("logic-v1", "logic-v2"):
        algorithm: Any = get_algorithm(name)
        config = algorithm.default_config()
        outcomes: dict[str, list[bool]] = defaultdict(list)
        for query in data["queries"]:
            spec = specs[query.get("expect") or query["near"]]
            text = query.get("name") or query.get("vessel")
            if spec["type"] not in schema or not text:
                continue
            known = [n for pair in spec["names"] for n in pair if n]
            props: dict[str, Any] = {"country": spec.get("countries", [])}
            asked: dict[str, Any] = {"country": query.get("country")}
            if spec["type"] == "person":
                props["birthDate"] = spec.get("date_of_birth")
                asked["birthDate"] = query.get("dob")
            result = algorithm.compare(entity(spec, [text], **asked), entity(spec, known, **props),
                                       config)  # fmt: skip
            outcomes[query["class"]].append(result.score >= 0.70)
        results[name] = outcomes
    return results


def _quality_rows(scale: Scale) -> list[Result]:
    data = screening_eval.load()
    ours = evaluate_ours(data)
    baselines = evaluate_nomenklatura(data)
    rows: list[Result] = []

    def rate(outcomes: list[bool]) -> float:
        return 100.0 * sum(outcomes) / len(outcomes) if outcomes else 0.0

    def best_baseline(cls: str, near: bool) -> tuple[str, float | None]:
        if isinstance(baselines, str):
            return baselines, None
        rates = {
            name: rate(outcomes[cls]) for name, outcomes in baselines.items() if outcomes.get(cls)
        }
        if not rates:
            return "", None
        pick = min(rates, key=rates.__getitem__) if near else max(rates, key=rates.__getitem__)
        detail = ", ".join(f"{n} {r:.0f}%" for n, r in sorted(rates.items()))
        return f"best nomenklatura ({detail})", rates[pick]

    found = [ok for cls, outcomes in ours.items() if not cls.startswith("near") for ok in outcomes]
    false = [ok for cls, outcomes in ours.items() if cls.startswith("near") for ok in outcomes]
    for cls in sorted(ours):
        near = cls.startswith("near")
        baseline_name, baseline = best_baseline(cls, near)
        n = len(ours[cls])
        label = f"{'false hits' if near else 'recall'} %: {cls} ({n})"
        rows.append(Result("screening", label, rate(ours[cls]), "%", baseline_name, baseline,
                           target=None))  # fmt: skip
    rows.append(Result("screening", f"recall % (match or possible), all {len(found)} queries",
                       rate(found), "%", "95% target", 95.0, target=1.0))  # fmt: skip
    rows.append(Result("screening", f"false hits %, all {len(false)} near-misses", rate(false),
                       "%", "2% target", 2.0, target=1.0, higher_is_better=False))  # fmt: skip
    if not isinstance(baselines, str):
        for name, outcomes in baselines.items():
            b_found = [ok for cls, o in outcomes.items() if not cls.startswith("near") for ok in o]
            b_false = [ok for cls, o in outcomes.items() if cls.startswith("near") for ok in o]
            o_found = [
                ok for cls, o in ours.items() if cls in outcomes and not cls.startswith("near")
                for ok in o
            ]  # fmt: skip
            rows.append(Result("screening", f"recall % on name/vessel classes vs {name}",
                               rate(o_found), "%", f"{name} at 0.70", rate(b_found),
                               target=1.0))  # fmt: skip
            o_false = [ok for cls, o in ours.items() if cls in outcomes and cls.startswith("near")
                       for ok in o]  # fmt: skip
            rows.append(Result("screening", f"false hits % on name/vessel near-misses vs {name}",
                               rate(o_false), "%", f"{name} at 0.70", rate(b_false),
                               target=1.0, higher_is_better=False))  # fmt: skip
    return rows


def run(scale: Scale) -> list[Result]:
    """The quality rows, then the speed rows."""
    return _quality_rows(scale) + _speed_rows(scale)


def _speed_rows(scale: Scale) -> list[Result]:
    n = 10_000 if scale.quick else 100_000
    rng = random.Random(6)
    entries = _entries(n, rng)
    view = WatchlistView(b"bench-secret-bench-secret-000000")
    started = time.perf_counter()
    for i, e in enumerate(entries):
        view.apply(c.JURISDICTION_HK, e, f"m{i}", received_at=NOW)
    apply_us = (time.perf_counter() - started) / n * 1e6
    declaration = _declaration(entries)
    rounds = 50 if scale.quick else 300
    indexed: list[float] = []
    for _ in range(rounds):
        t = time.perf_counter()
        response = view.screen(declaration, now=NOW)
        indexed.append((time.perf_counter() - t) * 1000)
    assert len(response.hits) >= 2, response
    linear: list[float] = []
    for _ in range(max(3, rounds // 30)):
        t = time.perf_counter()
        _linear(entries, declaration)
        linear.append((time.perf_counter() - t) * 1000)
    p50, p99 = _percentiles(indexed)
    l50, l99 = _percentiles(linear)
    label = f"{n // 1000}k entries"
    # The evaluation set again, its entries among the others: does blocking lose hits at scale?
    at_scale = evaluate_ours(screening_eval.load(), view)
    found = [ok for cls, o in at_scale.items() if not cls.startswith("near") for ok in o]
    false = [ok for cls, o in at_scale.items() if cls.startswith("near") for ok in o]
    return [
        Result("screening", f"recall %, evaluation set among {label}",
               100.0 * sum(found) / len(found), "%", "95% target", 95.0, target=1.0),
        Result("screening", f"false hits %, evaluation near-misses among {label}",
               100.0 * sum(false) / len(false), "%", "2% target", 2.0, target=1.0,
               higher_is_better=False),
        Result("screening", f"screen p50, {label}", p50, "ms", "linear scan p50", l50,
               target=0.1, higher_is_better=False),
        Result("screening", f"screen p99, {label}", p99, "ms", "linear scan p99", l99,
               target=0.1, higher_is_better=False),
        Result("screening", f"screen p99, {label}, vs budget", p99, "ms", "20 ms budget (issue 6)",
               20.0, target=1.0, higher_is_better=False),
        Result("screening", "apply one entry to the view", apply_us, "us"),
    ]  # fmt: skip
