"""Bounds on the dates the domain accepts, stated once (docs/domain.md, "Dates").

- a date of birth is "YYYY-MM-DD", "YYYY-MM" or "YYYY", a real date, from
  :data:`EARLIEST_BIRTH_YEAR` to today;
- a ``retain_until`` is in the future when the payload is published (a retention already
  over would erase the payload seconds after delivery);
- a ``seized_at`` is at most :data:`MAX_SEIZURE_AGE` old (a seizure is told while its case is
  open; 126 years ago is a typing error).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

__all__ = [
    "EARLIEST_BIRTH_YEAR",
    "EPOCH",
    "FIRST_TIMESTAMP_SECOND",
    "LAST_TIMESTAMP_SECOND",
    "MAX_SEIZURE_AGE",
    "date_of_birth_problem",
    "retain_until_problem",
    "seized_at_problem",
]

EARLIEST_BIRTH_YEAR: Final = 1900
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The range of google.protobuf.Timestamp (0001-01-01 to 9999-12-31), as Timestamp checks it.
FIRST_TIMESTAMP_SECOND: Final = -62_135_596_800
LAST_TIMESTAMP_SECOND: Final = 253_402_300_799
MAX_SEIZURE_AGE: Final = dt.timedelta(days=10 * 366)
_DOB: Final = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def date_of_birth_problem(text: str, *, today: dt.date | None = None) -> str | None:
    """Why ``text`` is not a date of birth ("YYYY-MM-DD", "YYYY-MM" or "YYYY", a real date,
    from :data:`EARLIEST_BIRTH_YEAR` to today), or None when it is one (or empty)."""
    if not text:
        return None
    found = _DOB.fullmatch(text)
    if found is None:
        return f"{text!r} is not YYYY-MM-DD, YYYY-MM or YYYY"
    year, month, day = (int(g) if g else 1 for g in found.groups())
    try:
        when = dt.date(year, month, day)
    except ValueError:
        return f"{text!r} is not a date"
    today = today or dt.datetime.now(dt.UTC).date()
    if year < EARLIEST_BIRTH_YEAR or when > today:
        return f"{text!r} is not between {EARLIEST_BIRTH_YEAR} and today"
    return None


def retain_until_problem(retain_until: dt.datetime, *, now: dt.datetime) -> str | None:
    """Why a ``retain_until`` is refused at publication (already past), or None."""
    if retain_until <= now:
        return f"{retain_until.isoformat()} is already past (now {now.isoformat()})"
    return None


def seized_at_problem(seized_at: dt.datetime, *, now: dt.datetime) -> str | None:
    """Why a ``seized_at`` is refused (more than :data:`MAX_SEIZURE_AGE` ago), or None."""
    if seized_at < now - MAX_SEIZURE_AGE:
        return f"{seized_at.isoformat()} is more than {MAX_SEIZURE_AGE.days // 366} years ago"
    return None
