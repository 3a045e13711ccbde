"""Format and check-digit rules of the identifiers customs data carries.

Each ``*_problem`` function returns ``None`` for a valid value, or one sentence saying what is
wrong with it (with the expected check digit where there is one), so that validation can report
it next to the field path. Values are expected in their normal form: upper case, no spaces or
separators (:func:`normalise_identifier` produces it from what an officer typed).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable
from typing import Final

from customs.gateway.v1 import common_pb2
from gateway.domain import reference

__all__ = [
    "SCHEMES_NEEDING_COUNTRY",
    "container_check_digit",
    "container_problem",
    "hs_code_problem",
    "identifier_problems",
    "imo_check_digit",
    "imo_problem",
    "lei_problem",
    "mmsi_problem",
    "normalise_identifier",
    "uscc_check_character",
    "uscc_problem",
]

_S = common_pb2.IdentifierScheme

SCHEMES_NEEDING_COUNTRY: Final[frozenset[int]] = frozenset(
    {
        _S.IDENTIFIER_SCHEME_PASSPORT,
        _S.IDENTIFIER_SCHEME_NATIONAL_ID,
        _S.IDENTIFIER_SCHEME_COMPANY_REGISTRATION,
        _S.IDENTIFIER_SCHEME_VEHICLE_REGISTRATION,
    }
)

# --- ISO 6346 freight container numbers ---------------------------------------------------

# Letter values skip 11 and its multiples (ISO 6346:1995 annex A): A=10, B=12, ..., Z=38.
_LETTER_VALUES: Final[dict[str, int]] = {}
_v = 10
for _c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    if _v % 11 == 0:
        _v += 1
    _LETTER_VALUES[_c] = _v
    _v += 1

_CONTAINER = re.compile(r"[A-Z]{3}[UJZ][0-9]{7}")


def container_check_digit(first_ten: str) -> int:
    """ISO 6346 check digit of owner code, category and serial (10 characters).

    Each character's value (digits as such, letters per annex A) is weighted by 2**position;
    the sum modulo 11, then modulo 10 (a remainder of 10 gives 0), is the check digit.
    """
    total = 0
    for position, char in enumerate(first_ten):
        value = int(char) if char.isdigit() else _LETTER_VALUES[char]
        total += value << position
    return total % 11 % 10


def container_problem(value: str) -> str | None:
    """Why ``value`` is not an ISO 6346 container number, or None.

    Format: 3-letter owner code, category identifier U (freight), J (detachable equipment) or
    Z (trailer/chassis), 6-digit serial number, check digit.
    """
    if not _CONTAINER.fullmatch(value):
        return (
            f"{value!r} is not an ISO 6346 container number "
            "(owner code, U/J/Z, 6 digits, check digit, e.g. 'CSQU3054383')"
        )
    expected = container_check_digit(value[:10])
    if int(value[10]) != expected:
        return f"ISO 6346 check digit of {value!r} is {value[10]}, expected {expected}"
    return None


# --- IMO ship identification numbers -------------------------------------------------------

_IMO = re.compile(r"IMO([0-9]{7})")


def imo_check_digit(first_six: str) -> int:
    """IMO number check digit: digits weighted 7, 6, 5, 4, 3, 2; the sum's last digit."""
    return sum(int(d) * w for d, w in zip(first_six, range(7, 1, -1), strict=True)) % 10


def imo_problem(value: str) -> str | None:
    """Why ``value`` is not an IMO ship number ("IMO" + 7 digits, IMO Res. A.1117(30)), or None."""
    match = _IMO.fullmatch(value)
    if match is None:
        return f"{value!r} is not an IMO number ('IMO' and 7 digits, e.g. 'IMO9074729')"
    digits = match.group(1)
    expected = imo_check_digit(digits[:6])
    if int(digits[6]) != expected:
        return f"IMO check digit of {value!r} is {digits[6]}, expected {expected}"
    return None


# --- MMSI -----------------------------------------------------------------------------------

_MMSI = re.compile(r"[2-7][0-9]{8}")


def mmsi_problem(value: str) -> str | None:
    """Why ``value`` is not a ship-station MMSI (ITU-R M.585: 9 digits, MID 2xx-7xx), or None."""
    if not _MMSI.fullmatch(value):
        return f"{value!r} is not a ship MMSI (9 digits starting with a MID 2xx to 7xx)"
    return None


# --- USCC (GB 32100-2015) ---------------------------------------------------------------------

_USCC_CHARS: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # no I, O, Z, S, V
_USCC_WEIGHTS: Final = tuple(pow(3, i, 31) for i in range(17))  # 1, 3, 9, 27, 19, 26, ...
_USCC = re.compile(r"[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}")


def uscc_check_character(first_seventeen: str) -> str:
    """GB 32100-2015 check character: 31 - (sum of value * 3**i mod 31) mod 31, as a code char."""
    total = sum(
        _USCC_CHARS.index(c) * w for c, w in zip(first_seventeen, _USCC_WEIGHTS, strict=True)
    )
    return _USCC_CHARS[(31 - total % 31) % 31]


def uscc_problem(value: str) -> str | None:
    """Why ``value`` is not a Unified Social Credit Code, or None.

    GB 32100-2015: 18 characters from 0-9 and A-Y without I, O, S, V, Z; registration authority,
    entity type, 6-digit administrative division code, 9-character organisation code, check
    character.
    """
    if not _USCC.fullmatch(value):
        return (
            f"{value!r} is not a USCC (18 characters of 0-9 and A-Y without I, O, S, V, Z, "
            "characters 3-8 digits)"
        )
    expected = uscc_check_character(value[:17])
    if value[17] != expected:
        return f"USCC check character of {value!r} is {value[17]}, expected {expected}"
    return None


# --- LEI (ISO 17442, ISO 7064 MOD 97-10) -----------------------------------------------------

_LEI = re.compile(r"[0-9A-Z]{18}[0-9]{2}")


def lei_problem(value: str) -> str | None:
    """Why ``value`` is not an ISO 17442 LEI (20 characters, ISO 7064 MOD 97-10), or None."""
    if not _LEI.fullmatch(value):
        return f"{value!r} is not an LEI (18 letters or digits and 2 check digits)"
    if int("".join(str(int(c, 36)) for c in value)) % 97 != 1:
        return f"ISO 7064 MOD 97-10 check of LEI {value!r} fails"
    return None


# --- National identity cards of the three jurisdictions --------------------------------------

_CN_ID = re.compile(r"[0-9]{17}[0-9X]")
_CN_ID_WEIGHTS: Final = tuple(pow(2, 17 - i, 11) for i in range(17))
_HKID = re.compile(r"([A-Z]{1,2})([0-9]{6})([0-9A])")


def _cn_resident_id_problem(value: str) -> str | None:
    """GB 11643-1999: 17 digits (with a birth date at 7-14) and an ISO 7064 MOD 11-2 check."""
    if not _CN_ID.fullmatch(value):
        return f"{value!r} is not a PRC resident identity number (17 digits and a check 0-9/X)"
    try:
        dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return f"birth date {value[6:14]} in {value!r} is not a date"
    total = sum(int(d) * w for d, w in zip(value[:17], _CN_ID_WEIGHTS, strict=True))
    expected = "10X98765432"[total % 11]
    if value[17] != expected:
        return f"check character of {value!r} is {value[17]}, expected {expected}"
    return None


def _hkid_problem(value: str) -> str | None:
    """Hong Kong identity card: 1-2 letters, 6 digits, check digit (0-9 or A), no brackets."""
    match = _HKID.fullmatch(value)
    if match is None:
        return f"{value!r} is not an HKID number (1-2 letters, 6 digits, check 0-9/A, no brackets)"
    letters, digits, check = match.groups()
    values = [36] * (2 - len(letters)) + [ord(c) - 55 for c in letters] + [int(d) for d in digits]
    total = sum(v * w for v, w in zip(values, range(9, 1, -1), strict=True))
    expected = "0123456789A"[(11 - total % 11) % 11]
    if check != expected:
        return f"HKID check digit of {value!r} is {check}, expected {expected}"
    return None


# --- Other schemes: format only ---------------------------------------------------------------

_GENERIC = re.compile(r"[A-Z0-9][A-Z0-9/.-]{0,29}")
_HK_BR = re.compile(r"[0-9]{8}")
_FLIGHT = re.compile(r"[A-Z0-9]{2}[0-9]{1,4}[A-Z]?")
_AEO = re.compile(r"[A-Z]{2}[A-Z0-9]{1,30}")


def _format(pattern: re.Pattern[str], what: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if pattern.fullmatch(value) else f"{value!r} is not {what}"

    return check


def _aeo_problem(value: str) -> str | None:
    if not _AEO.fullmatch(value):
        return f"{value!r} is not an AEO number (ISO country code and up to 30 letters/digits)"
    if value[:2] not in reference.COUNTRIES:
        return f"AEO number {value!r} does not start with an ISO 3166-1 country code"
    return None


_CHECKS: Final[dict[int, Callable[[str], str | None]]] = {
    _S.IDENTIFIER_SCHEME_PASSPORT: _format(_GENERIC, "a passport number (1-30 letters/digits)"),
    _S.IDENTIFIER_SCHEME_NATIONAL_ID: _format(_GENERIC, "an identity number"),
    _S.IDENTIFIER_SCHEME_COMPANY_REGISTRATION: _format(_GENERIC, "a registration number"),
    _S.IDENTIFIER_SCHEME_USCC: uscc_problem,
    _S.IDENTIFIER_SCHEME_HK_BR: _format(_HK_BR, "a Hong Kong BR number (8 digits)"),
    _S.IDENTIFIER_SCHEME_LEI: lei_problem,
    _S.IDENTIFIER_SCHEME_IMO: imo_problem,
    _S.IDENTIFIER_SCHEME_MMSI: mmsi_problem,
    _S.IDENTIFIER_SCHEME_CONTAINER: container_problem,
    _S.IDENTIFIER_SCHEME_VEHICLE_REGISTRATION: _format(_GENERIC, "a registration plate"),
    _S.IDENTIFIER_SCHEME_FLIGHT: _format(_FLIGHT, "an IATA flight designator (e.g. 'CX450')"),
    _S.IDENTIFIER_SCHEME_AEO: _aeo_problem,
}

_SEPARATORS = re.compile(r"[\s\-()]+")
_BARE_IMO = re.compile(r"[0-9]{7}")
# Looked up once: attribute access on a protobuf enum wrapper costs a method call each time.
_IMO_SCHEME: Final = _S.IDENTIFIER_SCHEME_IMO
_NATIONAL_ID: Final = _S.IDENTIFIER_SCHEME_NATIONAL_ID
_SQUEEZED: Final[frozenset[int]] = frozenset(
    {
        _S.IDENTIFIER_SCHEME_USCC,
        _S.IDENTIFIER_SCHEME_HK_BR,
        _S.IDENTIFIER_SCHEME_LEI,
        _S.IDENTIFIER_SCHEME_IMO,
        _S.IDENTIFIER_SCHEME_MMSI,
        _S.IDENTIFIER_SCHEME_CONTAINER,
        _S.IDENTIFIER_SCHEME_NATIONAL_ID,
        _S.IDENTIFIER_SCHEME_PASSPORT,
        _S.IDENTIFIER_SCHEME_VEHICLE_REGISTRATION,
        _S.IDENTIFIER_SCHEME_FLIGHT,
    }
)


def normalise_identifier(scheme: int, value: str) -> str:
    """The normal form of an identifier as typed: upper case, NFKC digits, no separators.

    Spaces, hyphens and brackets are dropped for schemes that never contain them (container
    "CSQU 305438-3" becomes "CSQU3054383", HKID "A123456(3)" becomes "A1234563"); a bare
    7-digit IMO number gets its "IMO" prefix.
    """
    # NFKC leaves ASCII text as it is: skip it for the common case.
    text = value if value.isascii() else unicodedata.normalize("NFKC", value)
    text = text.strip().upper()
    if scheme in _SQUEEZED and not text.isalnum():  # letters and digits only: none to drop
        text = _SEPARATORS.sub("", text)
    if scheme == _IMO_SCHEME and _BARE_IMO.fullmatch(text):
        text = "IMO" + text
    return text


def identifier_problems(scheme: int, value: str, issuing_country: str) -> list[tuple[str, str]]:
    """Every problem of one identifier as (sub-field, reason) pairs; empty when valid.

    Sub-fields are ``scheme``, ``value`` and ``issuing_country`` of the Identifier message.
    National ids issued by CN or HK are checked against their check characters.
    """
    problems: list[tuple[str, str]] = []
    check = _CHECKS.get(scheme)
    if check is None:
        problems.append(("scheme", f"required; got {scheme}, expected a known IdentifierScheme"))
    if issuing_country:
        if issuing_country not in reference.COUNTRIES:
            problems.append(
                ("issuing_country", f"{issuing_country!r} is not an ISO 3166-1 alpha-2 code")
            )
    elif scheme in SCHEMES_NEEDING_COUNTRY:
        problems.append(("issuing_country", "required for this identifier scheme"))
    if not value:
        problems.append(("value", "required"))
        return problems
    normal = normalise_identifier(scheme, value) if check is not None else value
    if normal != value:
        problems.append(("value", f"not in normal form; write {normal!r}"))
        return problems
    reason: str | None = None
    if scheme == _NATIONAL_ID and issuing_country == "CN":
        reason = _cn_resident_id_problem(value)
    elif scheme == _NATIONAL_ID and issuing_country == "HK":
        reason = _hkid_problem(value)
    elif check is not None:
        reason = check(value)
    if reason is not None:
        problems.append(("value", reason))
    return problems


# --- HS codes ------------------------------------------------------------------------------------


def hs_code_problem(code: str, *, min_digits: int = 6, max_digits: int = 10) -> str | None:
    """Why ``code`` is not an HS code of ``min_digits``..``max_digits`` digits, or None.

    The first two digits must be an HS-2022 chapter (01-97 without 77).
    """
    if not code:
        return "required"
    # ASCII digits only, as ``[0-9]+`` (``isdigit`` alone also takes other scripts' digits).
    if not (code.isascii() and code.isdigit()) or not min_digits <= len(code) <= max_digits:
        return f"{code!r} is not an HS code ({min_digits} to {max_digits} digits, no dots)"
    if code[:2] not in reference.HS_CHAPTERS:
        return f"{code!r}: chapter {code[:2]} is not an HS-2022 chapter (01-97, not 77)"
    return None
