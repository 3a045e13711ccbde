"""Name normalisation for screening: two spellings of one name get one key.

Steps, in order: NFKC (full-width letters and digits become ASCII, compatibility forms
fold), traditional Chinese characters common in company and personal names become simplified
(a small table, see :data:`_TRAD_TO_SIMP`; full conversion needs a dictionary such as OpenCC's
and is out of scope, ADR 0033), case folding, '&' becomes 'and', every punctuation or symbol
character becomes a space; for organisations, legal-form suffixes are then stripped from the
end, repeatedly (English: Ltd, Limited, Co, Company, Inc, Corp, LLC, ...; Chinese: 有限公司,
有限责任公司, 股份有限公司, 公司, 集团); finally spaces are removed, so that "Hua Nan" and
"Huanan" or "华南 金属" and "华南金属" meet.

Keys are for equality only: a similar but different name gets a different key and is never a
hit (screening reports exact matches after normalisation, not fuzzy ones).
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["name_key", "organisation_key"]

# Traditional -> simplified for characters frequent in company names, legal forms and the
# names of the strategic minerals. Not a general converter.
_TRAD_TO_SIMP: Final = str.maketrans(
    "華屬貿業東國際實發電廣興產礦銻鎢鍺鎵稀進運輸門灣區龍號貨體團責億萬與業開關聯"
    "創達寶豐盛鐵鋼鋁銅鋅錫鎳鉛銀資訊網絡車買賣經營陳張劉黃楊趙吳鄭謝羅蘇葉閆鄧馮蔣韓",
    "华属贸业东国际实发电广兴产矿锑钨锗镓稀进运输门湾区龙号货体团责亿万与业开关联"
    "创达宝丰盛铁钢铝铜锌锡镍铅银资讯网络车买卖经营陈张刘黄杨赵吴郑谢罗苏叶闫邓冯蒋韩",
)

_EN_SUFFIXES: Final = frozenset(
    {
        "ltd", "limited", "co", "company", "inc", "incorporated", "corp", "corporation",
        "llc", "plc", "pte", "pty", "gmbh", "bv", "sa", "ag", "group", "holdings",
    }
)  # fmt: skip
# Longest first, so that 股份有限公司 is stripped whole rather than as 公司.
_ZH_SUFFIXES: Final = (
    "股份有限公司",
    "有限责任公司",
    "有限公司",
    "集团公司",
    "公司",
    "集团",
)


def _fold(name: str) -> str:
    text = unicodedata.normalize("NFKC", name).translate(_TRAD_TO_SIMP).casefold()
    text = text.replace("&", " and ")
    return "".join(" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text)


def name_key(name: str) -> str:
    """The matching key of a person's or vessel's name: folded, without spaces or punctuation.

    Returns an empty string for a name with nothing left; empty keys never match.
    """
    return "".join(_fold(name).split())


def organisation_key(name: str) -> str:
    """The matching key of an organisation's name: :func:`name_key` without legal forms.

    "South China Metals Trading Co., Ltd.", "SOUTH CHINA METALS TRADING COMPANY LIMITED" and
    "South China Metals Trading" share a key; "华南金属贸易有限公司" and "華南金屬貿易有限公司"
    share another. If stripping would leave nothing (a company called "Company Limited"), the
    unstripped key is used.
    """
    tokens = _fold(name).split()
    while tokens:
        last = tokens[-1]
        if last in _EN_SUFFIXES:
            tokens.pop()
            continue
        for suffix in _ZH_SUFFIXES:
            if last.endswith(suffix) and len(last) > len(suffix):
                tokens[-1] = last[: -len(suffix)]
                break
            if last == suffix:
                tokens.pop()
                break
        else:
            break
    key = "".join(tokens)
    return key or name_key(name)
