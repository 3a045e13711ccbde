"""Names as an analyst compares them: across scripts, romanisations, legal forms and typos.

A name is turned into one or more :class:`NameForm` (ADR 0036), each a list of *core* tokens
(what tells this name from another) and *generic* tokens (legal forms removed; "trading",
"import", "export", "international"... kept apart, so that two companies sharing them do not
look alike):

1. NFKC (full-width forms fold), case folding, diacritics to ASCII (``rigour.text.ascii_text``:
   "Nguyễn" and "Nguyen" meet).
2. Chinese characters: traditional to simplified with OpenCC (``t2s``, the full dictionary: 鴻
   憑 輝 強 偉 錦 and every other character); legal forms (有限公司, 股份有限公司...) removed;
   common industry words translated (贸易 -> trading, 金属 -> metals, 进出口 -> import export;
   :data:`_ZH_WORDS`); the other characters kept as a Han form and romanised three ways:
   Hanyu Pinyin (``pypinyin``), Jyutping (``ToJyutping``) and the Hong Kong Government
   Cantonese Romanisation used in HK registers and passports ("Chan Tai Man", "Cheung Wai
   Keung"), derived from Jyutping by :func:`hk_romanisation` (a small documented table of
   initials and finals; Jyutping alone spells 陳 "can", the HK register "Chan"), and the Macao
   Government's Portuguese-influenced spelling ("Ho Iat Seng", "Vong", "Ieong") by
   :func:`mo_romanisation`.
3. Latin text: '&' is 'and'; abbreviations expanded (Imp. -> import, Exp. -> export, TECH ->
   technology, HLDGS -> holdings, Intl -> international, Mfg -> manufacturing; Macau ->
   macao); vessel prefixes (M/V, MV, M.V., MT, SS) dropped; legal forms removed with
   OpenSanctions' ``rigour.names.remove_org_types`` and a list of their abbreviations (Co,
   Ltd, Pte, Private Limited, Sdn Bhd, GmbH...).

:func:`similarity` compares two forms with ``rapidfuzz`` (normalised Indel similarity) over the
core tokens joined (so "Hong Da" and "Hongda" meet), in sorted order too (family name first or
last, "(Hunan)" moved), and requires the most distinctive core token of the entry (the rarest
in the index: weights come from the caller) to be found in the query, so that "Huanan
Antimony" and "Huabei Antimony" stay apart.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import opencc
from rapidfuzz import fuzz
from rapidfuzz.distance import OSA, Levenshtein
from rigour.names import remove_org_types
from rigour.text import ascii_text

__all__ = [
    "EXTRA_WORDS",
    "NameForm",
    "blocking_keys",
    "forms",
    "hk_romanisation",
    "mo_romanisation",
    "name_key",
    "organisation_key",
    "similarity",
]

EXTRA_WORDS: Final = 0.9
"""The similarity of a name that has every core word of the entry's, and more (an English
given name added to a Chinese one, a branch's place): a possible match, never a match."""


@lru_cache(maxsize=2)
def _opencc(config: str) -> opencc.OpenCC:
    """An OpenCC converter ("t2s", "s2t"), its dictionary loaded on first use."""
    return opencc.OpenCC(config)


# Chinese words with an English counterpart in registered names: (English tokens, generic?).
# Generic words are compared apart (they do not tell companies apart); industry words are
# core, translated so that "华南金属" and "Wah Nam Metals" meet.
_ZH_WORDS: Final[dict[str, tuple[tuple[str, ...], bool]]] = {
    "进出口": (("import", "export"), True),
    "贸易": (("trading",), True),
    "商贸": (("trading",), True),
    "国际": (("international",), True),
    "科技": (("technology",), True),
    "实业": (("industrial",), True),
    "工业": (("industrial",), True),
    "发展": (("development",), True),
    "企业": (("enterprise",), True),
    "控股": (("holdings",), True),
    "集团": (("group",), True),
    "物流": (("logistics",), True),
    "航运": (("shipping",), True),
    "投资": (("investment",), True),
    "金属": (("metals",), False),
    "矿业": (("mining",), False),
    "矿产": (("minerals",), False),
    "资源": (("resources",), False),
    "稀土": (("rare", "earth"), False),
    "化工": (("chemical",), False),
    "新材料": (("new", "materials"), False),
    "材料": (("materials",), False),
    "锑业": (("antimony",), False),
    "钨业": (("tungsten",), False),
    "锗业": (("germanium",), False),
    "镓业": (("gallium",), False),
    "香港": (("hong", "kong"), False),
    "澳门": (("macao",), False),
    # Places, written in Pinyin in registered English names whatever the company's language.
    "湖南": (("hunan",), False), "湖北": (("hubei",), False), "广西": (("guangxi",), False),
    "广东": (("guangdong",), False), "云南": (("yunnan",), False), "江西": (("jiangxi",), False),
    "贵州": (("guizhou",), False), "四川": (("sichuan",), False), "福建": (("fujian",), False),
    "浙江": (("zhejiang",), False), "江苏": (("jiangsu",), False), "上海": (("shanghai",), False),
    "北京": (("beijing",), False), "深圳": (("shenzhen",), False), "广州": (("guangzhou",), False),
    "天津": (("tianjin",), False), "新疆": (("xinjiang",), False), "甘肃": (("gansu",), False),
    "内蒙古": (("inner", "mongolia"), False), "青海": (("qinghai",), False),
}  # fmt: skip
_ZH_LEGAL: Final = (
    "股份有限公司", "有限责任公司", "有限公司", "集团公司", "分公司", "公司", "商行", "厂",
)  # fmt: skip
_ZH_WORD_RE: Final = re.compile("|".join(sorted(_ZH_WORDS, key=len, reverse=True)))

_ABBREVIATIONS: Final[dict[str, tuple[str, ...]]] = {
    "imp": ("import",), "exp": ("export",), "i/e": ("import", "export"),
    "tech": ("technology",), "techn": ("technology",), "technologies": ("technology",),
    "hldgs": ("holdings",), "hldg": ("holdings",), "holding": ("holdings",),
    "intl": ("international",), "int'l": ("international",), "mfg": ("manufacturing",),
    "ind": ("industrial",), "inds": ("industrial",), "industries": ("industrial",),
    "industry": ("industrial",), "dev": ("development",), "devt": ("development",),
    "grp": ("group",), "macau": ("macao",), "trade": ("trading",), "traders": ("trading",),
    "mining": ("mining",), "metal": ("metals",), "mineral": ("minerals",),
    "resource": ("resources",), "chem": ("chemical",), "chemicals": ("chemical",),
    "enterprises": ("enterprise",), "ent": ("enterprise",), "logistic": ("logistics",),
    "hk": ("hong", "kong"), "intl.": ("international",), "&": ("and",),
}  # fmt: skip
_LEGAL: Final = frozenset(
    {
        "co", "company", "ltd", "limited", "inc", "incorporated", "corp", "corporation", "llc",
        "plc", "pte", "private", "pty", "gmbh", "sdn", "bhd", "sa", "ag", "bv", "jsc", "llp",
        "lp", "coltd", "srl", "spa", "oy", "ab", "kk", "and", "the", "of",
    }
)  # fmt: skip
_GENERIC: Final = frozenset(
    {
        "trading", "import", "export", "international", "technology", "industrial",
        "development", "enterprise", "holdings", "group", "logistics", "shipping",
        "investment", "manufacturing", "global", "services", "supply", "general",
    }
)  # fmt: skip
_VESSEL_PREFIXES: Final = frozenset({"mv", "m/v", "mt", "m/t", "ss", "fv", "m.v", "m.t"})

# Jyutping -> Hong Kong Government Cantonese Romanisation, initials and finals (the spelling of
# the HK and Macao registers: 陳 can -> Chan, 張 zoeng -> Cheung, 徐 ceoi -> Tsui, 李 lei -> Lee).
_HK_INITIALS: Final = {
    "b": "p", "p": "p", "m": "m", "f": "f", "d": "t", "t": "t", "n": "n", "l": "l",
    "g": "k", "k": "k", "ng": "ng", "h": "h", "gw": "kw", "kw": "kw", "w": "w",
    "z": "ch", "c": "ch", "s": "s", "j": "y", "": "",
}  # fmt: skip
_HK_FINALS: Final = {
    "aa": "a", "aai": "ai", "aau": "au", "aam": "am", "aan": "an", "aang": "ang", "aap": "ap",
    "aat": "at", "aak": "ak", "a": "a", "ai": "ai", "au": "au", "am": "am", "an": "an",
    "ang": "ang", "ap": "ap", "at": "at", "ak": "ak", "e": "e", "ei": "ei", "eu": "eu",
    "em": "em", "eng": "eng", "ep": "ep", "ek": "ek", "i": "i", "iu": "iu", "im": "im",
    "in": "in", "ing": "ing", "ip": "ip", "it": "it", "ik": "ik", "o": "o", "oi": "oi",
    "ou": "o", "on": "on", "ong": "ong", "ot": "ot", "ok": "ok", "u": "u", "ui": "ui",
    "un": "un", "ung": "ung", "ut": "ut", "uk": "uk", "oe": "eu", "oeng": "eung",
    "oek": "euk", "eoi": "ui", "eon": "un", "eot": "ut", "yu": "u", "yun": "uen", "yut": "uet",
    "m": "m", "ng": "ng",
}  # fmt: skip
_HK_SYLLABLES: Final = {
    "lei": "lee", "si": "sze", "zi": "chi", "ci": "chi", "jyu": "yu", "jyun": "yuen",
    "syun": "suen", "zyun": "chuen", "cyun": "chuen", "jat": "yat", "jan": "yan",
    "jau": "yau", "jip": "yip", "jim": "yim", "jin": "yin", "waa": "wah", "faat": "fat",
    "gwok": "kwok", "ng": "ng", "m": "m", "jing": "ying", "zoeng": "cheung",
    "ceoi": "chui", "heoi": "hui", "leoi": "lui", "seoi": "sui", "zeoi": "chui",
    "ze": "tse", "se": "sze", "mou": "mo", "ou": "ou", "hou": "ho", "dou": "to",
}  # fmt: skip


# Jyutping -> the Macao Government's Cantonese romanisation (Portuguese-influenced: 黃 wong ->
# Vong, 楊 joeng -> Ieong, 明 ming -> Meng, 特 dak -> Tac, 周 zau -> Chao, 一 jat -> Iat).
_MO_INITIALS: Final = {**_HK_INITIALS, "j": "i", "w": "v", "gw": "ku", "kw": "ku"}
_MO_FINALS: Final = {
    **_HK_FINALS,
    "aau": "ao", "au": "ao", "aak": "ac", "ak": "ac", "ek": "ec", "ik": "ec", "ok": "ok",
    "uk": "ok", "ung": "ong", "ing": "eng", "eng": "eang", "iu": "io", "ou": "ou",
    "oeng": "eong", "oek": "eoc", "eon": "on", "eot": "ot", "yu": "u", "yun": "un",
}  # fmt: skip
_MO_SYLLABLES: Final = {
    "jyu": "u", "jyun": "un", "jip": "ip", "jim": "im", "jin": "in", "jiu": "io",
    "ng": "ng", "m": "m", "wu": "u", "si": "si", "zi": "chi", "ci": "chi",
}  # fmt: skip


def mo_romanisation(jyutping: str) -> str:
    """One Jyutping syllable (tone optional) in the Macao Government's romanisation.

    >>> mo_romanisation("wong4"), mo_romanisation("joeng4"), mo_romanisation("ming4")
    ('vong', 'ieong', 'meng')
    """
    syllable = jyutping.rstrip("0123456789").lower()
    if syllable in _MO_SYLLABLES:
        return _MO_SYLLABLES[syllable]
    for length in (2, 1, 0):
        initial, final = syllable[:length], syllable[length:]
        if initial in _MO_INITIALS and final in _MO_FINALS:
            return _MO_INITIALS[initial] + _MO_FINALS[final]
    return syllable


def hk_romanisation(jyutping: str) -> str:
    """One Jyutping syllable (tone optional) in Hong Kong Government romanisation.

    >>> hk_romanisation("can4"), hk_romanisation("zoeng1"), hk_romanisation("wai5")
    ('chan', 'cheung', 'wai')
    """
    syllable = jyutping.rstrip("0123456789").lower()
    if syllable in _HK_SYLLABLES:
        return _HK_SYLLABLES[syllable]
    for length in (2, 1, 0):
        initial, final = syllable[:length], syllable[length:]
        if initial in _HK_INITIALS and final in _HK_FINALS:
            return _HK_INITIALS[initial] + _HK_FINALS[final]
    return syllable


@dataclass(frozen=True)
class NameForm:
    """One way of writing a name: ``system`` is "latin", "han", "pinyin", "jyutping", "hk"
    (Hong Kong Government romanisation) or "mo" (Macao Government romanisation); ``core`` and
    ``generic`` are its tokens."""

    system: str
    core: tuple[str, ...]
    generic: tuple[str, ...]

    @property
    def latin(self) -> bool:
        """Compared with Latin forms (every system but "han")."""
        return self.system != "han"

    @property
    def romanised(self) -> bool:
        """A romanisation of Chinese characters (pinyin, jyutping, hk)."""
        return self.system in ("pinyin", "jyutping", "hk", "mo")

    def describe(self) -> str:
        """The form as text, for reasons: "hk: chan tai man"."""
        return f"{self.system}: {' '.join(self.core + self.generic)}"


# Spellings that romanisations of one sound differ by, folded alike on both sides before any
# comparison: HK "Tsang"/"Chang", "Lee"/"Li", "Poon"/"Pun", "Sze"/"Si", Macao "Tac"/"Tak".
_ROMAN_FOLDS: Final = (
    ("tsz", "chi"), ("sze", "si"), ("ts", "ch"), ("sh", "s"), ("oo", "u"),
)  # fmt: skip


def _fold_roman(token: str) -> str:
    if token.isdigit():
        return token  # the folds are of letters (a bulk list numbers its names)
    for spelling, folded in _ROMAN_FOLDS:
        token = token.replace(spelling, folded)
    if token.endswith("ee") and len(token) > 2:  # Lee, Yee, Chee
        token = token[:-2] + "i"
    if token.endswith("c") and len(token) > 2:  # Macao's Tac, Chac for Tak, Chak
        token = token[:-1] + "k"
    return token


# Han characters (CJK Unified Ideographs, Extension A, Compatibility Ideographs), and the
# others, matched in whole strings at once.
_HAN: Final = re.compile("[\u3400-\u9fff\uf900-\ufaff]")
_NOT_HAN: Final = re.compile("[^\u3400-\u9fff\uf900-\ufaff]+")
_PARENS: Final = re.compile(r"\((.*?)\)")
_NOT_TOKEN: Final = re.compile(r"[^a-z0-9/']+")


def _latin_tokens(text: str, kind: str) -> tuple[list[str], list[str]]:
    text = ascii_text(text).casefold().replace("&", " and ")
    if "(" in text:
        text = _PARENS.sub(r" \1 ", text)
    raw = [t for t in _NOT_TOKEN.split(text) if t]
    tokens: list[str] = []
    for i, token in enumerate(raw):
        if kind == "vessel" and i == 0 and token.replace(".", "") in _VESSEL_PREFIXES:
            continue
        token = token.strip("'")
        if "/" in token and token not in _ABBREVIATIONS:
            tokens.extend(t for t in token.split("/") if t)
            continue
        tokens.extend(_ABBREVIATIONS.get(token, (token,)))
    if kind == "org":
        stripped = remove_org_types(" ".join(tokens)).split()
        tokens = stripped or tokens
        tokens = [t for t in tokens if t not in _LEGAL] or tokens
    core = [_fold_roman(t) for t in tokens if t not in _GENERIC]
    generic = [t for t in tokens if t in _GENERIC]
    if not core:
        core, generic = generic, []
    return core, generic


@lru_cache(maxsize=1)
def _readers() -> tuple[Callable[[str], list[str]], Callable[[str], list[tuple[str, str]]]]:
    """pypinyin's and ToJyutping's readers, imported on first use: their dictionaries take
    most of a second to load, which every ``customs-gateway`` command would pay otherwise."""
    import pypinyin
    import ToJyutping

    return pypinyin.lazy_pinyin, ToJyutping.get_jyutping_list


@lru_cache(maxsize=65536)
def _romanised(
    run: str,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    lazy_pinyin, jyutping_list = _readers()
    pinyin = tuple(s for s in lazy_pinyin(run) if s.isascii())
    # Cantonese readings are of traditional characters (达 alone reads as 大 daai6, 達 daat6).
    traditional = _opencc("s2t").convert(run)
    jyutping = tuple(j.rstrip("0123456789") for _, j in jyutping_list(traditional) if j)
    hk = tuple(_fold_roman(hk_romanisation(j)) for j in jyutping)
    mo = tuple(_fold_roman(mo_romanisation(j)) for j in jyutping)
    pinyin = tuple(_fold_roman(p) for p in pinyin)
    return pinyin, jyutping, hk, mo


def _han_forms(text: str, kind: str) -> list[NameForm]:
    simplified = _opencc("t2s").convert(unicodedata.normalize("NFKC", text))
    han = _NOT_HAN.sub("", simplified)
    if kind == "org":
        for suffix in _ZH_LEGAL:
            if han.endswith(suffix) and len(han) > len(suffix):
                han = han[: -len(suffix)]
                break
    core_parts: list[tuple[str, tuple[str, ...]]] = []  # (han run or "", english tokens)
    generic: list[str] = []
    han_core = ""
    position = 0
    for found in _ZH_WORD_RE.finditer(han) if kind == "org" else ():
        if found.start() > position:
            core_parts.append((han[position : found.start()], ()))
        english, is_generic = _ZH_WORDS[found.group()]
        if is_generic:
            generic.extend(english)
        else:
            core_parts.append(("", english))
        position = found.end()
    if position < len(han):
        core_parts.append((han[position:], ()))
    han_core = han
    if kind == "org":
        han_core = _ZH_WORD_RE.sub(
            lambda word: "" if _ZH_WORDS[word.group()][1] else word.group(), han
        )
    han_core = han_core or han
    out = [NameForm("han", (han_core,), tuple(generic))]
    for system, label in enumerate(("pinyin", "jyutping", "hk", "mo")):
        core: list[str] = []
        for run, english in core_parts:
            core.extend(_romanised(run)[system] if run else english)
        if core and (label != "mo" or out[-1].core != tuple(core)):  # mo: only if it differs
            out.append(NameForm(label, tuple(core), tuple(generic)))
    return out


def forms(text: str, kind: str) -> list[NameForm]:
    """Every form of ``text`` for an entity of ``kind`` ("person", "org" or "vessel").

    Latin text gives one form; text with Chinese characters gives a Han form (simplified) and
    its Pinyin, Jyutping and HK romanisations, plus a Latin form of any Latin words in it.
    Returns an empty list when nothing is left to compare.
    """
    text = unicodedata.normalize("NFKC", text)
    out: list[NameForm] = []
    if _HAN.search(text):
        out.extend(_han_forms(text, kind))
        text = _HAN.sub(" ", text)
    core, generic = _latin_tokens(text, kind)
    if core:
        out.append(NameForm("latin", tuple(core), tuple(generic)))
    return out


def _orders(tokens: tuple[str, ...], kind: str) -> list[str]:
    joined = ["".join(tokens), "".join(sorted(tokens))]
    if kind == "person" and len(tokens) > 1:
        joined.append("".join(tokens[-1:] + tokens[:-1]))  # family name moved to the front
        joined.append("".join(tokens[1:] + tokens[:1]))
    return joined


def _token_found(token: str, query: tuple[str, ...], merged: bool) -> float:
    """How well one entry token is found in the query: 1.0 when it is a query token, or (when
    the query may merge syllables) a syllable at the start or end of one ("hong" in
    "honghui"), or two neighbouring query tokens written apart ("hongda" for "hong da"); else
    its best OSA similarity to either (one typo, a swap included, in five letters: 0.8)."""
    if token in query:
        return 1.0
    pairs = [a + b for a, b in itertools.pairwise(query)]
    if merged and not token.isdigit():
        for q in query:  # a syllable of a merged name: the rest is a syllable too
            if len(q) >= len(token) + 2 and (q.startswith(token) or q.endswith(token)):
                return 1.0
        if token in pairs:
            return 1.0
    return max((OSA.normalized_similarity(token, q) for q in (*query, *pairs)), default=0.0)


def similarity(query: NameForm, entry: NameForm, kind: str) -> float:
    """Similarity in [0, 1] of a query form and an entry form of the same family (Han with
    Han, Latin with Latin or romanised; two romanisations are not compared: when both names
    are in characters, the characters decide).

    Han forms: normalised Levenshtein similarity of the core characters. Latin forms: the core
    tokens compared joined (Indel similarity), in their order and sorted (and, for persons,
    with the first or last token moved: family name first or last); then every core token of
    the entry must be found in the query (:func:`_token_found`): at least 0.75 alike (one typo
    in four letters), for a person's name part 0.8, or 0.92 up to six letters (Chan and
    Chang, Cheng and Cheung are other people, not typos), exactly for
    numbers (JIN HAI 3 is not JIN HAI 4); otherwise the result is scaled down by the worst
    token, so "Huanan Antimony" and "Huabei Antimony" stay apart. A query holding every core
    word of the entry (two or more) and more scores at least :data:`EXTRA_WORDS`. Generic
    tokens count for a tenth when both sides have them.
    """
    if query.latin != entry.latin or not query.core or not entry.core:
        return 0.0
    if query.romanised and entry.romanised:
        return 0.0  # both have characters: the Han forms decide, not two romanisations
    if not entry.latin:
        return round(Levenshtein.normalized_similarity(query.core[0], entry.core[0]), 4)
    best = max(
        fuzz.ratio(q, e) / 100.0
        for q in _orders(query.core, kind)
        for e in _orders(entry.core, kind)
    )
    tokens = query.core + query.generic
    worst = 1.0
    for token in entry.core:
        found = _token_found(token, tokens, merged=not query.romanised)
        if token.isdigit():
            needed = 1.0
        else:
            needed = (0.92 if len(token) <= 6 else 0.8) if kind == "person" else 0.75
        if found < needed:
            worst = min(worst, found * 0.8 / needed)
    if worst < 1.0:
        best *= worst
    elif len(entry.core) >= 2 and all(_token_found(t, tokens, False) == 1.0 for t in entry.core):
        best = max(best, EXTRA_WORDS)  # every word of the entry, and more: "Ho Hung Sun Stanley"
    if query.generic and entry.generic:
        overlap = fuzz.token_set_ratio(" ".join(query.generic), " ".join(entry.generic)) / 100.0
        best = 0.9 * best + 0.1 * overlap
    return round(best, 4)


def blocking_keys(form: NameForm) -> set[str]:
    """Index keys of a form: a query and an entry that may be alike share at least one (the
    first or last three letters of a core token, the first four of the joined core, two core
    tokens together, a pair of Han characters)."""
    if not form.latin:
        han = form.core[0]
        return {han} if len(han) < 3 else {han[i : i + 2] for i in range(len(han) - 1)}
    keys = {"j:" + "".join(form.core)[:4]}
    for token in form.core:
        if len(token) < 3:
            keys.add("t:" + token)
        else:
            keys.add("p:" + token[:3])
            keys.add("s:" + token[-3:])
    tokens = sorted(set(form.core))
    for i, first in enumerate(tokens):  # pairs: selective where single syllables are common
        for second in tokens[i + 1 :]:
            keys.add(f"2:{first}|{second}")
    return keys


def name_key(name: str) -> str:
    """The exact key of a person's or vessel's name (its first form's core, joined): two
    spellings that fold to one text share it. Empty when nothing is left."""
    found = forms(name, "person")
    return "".join(found[0].core) if found else ""


def organisation_key(name: str) -> str:
    """The exact key of an organisation's name, legal forms and generic words aside."""
    found = forms(name, "org")
    return "".join(found[0].core) if found else ""
