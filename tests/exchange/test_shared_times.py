"""Times as the exchange stores them: a payload's retention end in milliseconds."""

from __future__ import annotations

import pytest

from customs.gateway.v1 import domain_pb2
from gateway.exchange._shared import retain_until_ms


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (0, 0),
        (1, 999_999_999),
        (-1, 1),
        (-1, 999_999_999),
        (-62_135_596_800, 0),
        (253_402_300_799, 999_999_999),
        (1_906_452_253, 614_665_000),
    ],
)
def test_retention_end_is_what_to_milliseconds_gives(seconds: int, nanos: int) -> None:
    entry = domain_pb2.WatchlistEntry()
    entry.retain_until.seconds, entry.retain_until.nanos = seconds, nanos
    assert retain_until_ms(entry) == entry.retain_until.ToMilliseconds()


@pytest.mark.parametrize(
    ("seconds", "nanos", "match"),
    [(0, -1, "Nanos -1"), (0, 1_000_000_000, "Nanos 1000000000"), (253_402_300_800, 0, "Seconds")],
)
def test_an_invalid_retention_end_raises_as_to_milliseconds(
    seconds: int, nanos: int, match: str
) -> None:
    entry = domain_pb2.WatchlistEntry()
    entry.retain_until.seconds, entry.retain_until.nanos = seconds, nanos
    with pytest.raises(ValueError, match=match):
        retain_until_ms(entry)


def test_no_retention_end() -> None:
    assert retain_until_ms(domain_pb2.WatchlistEntry()) is None  # unset
    assert retain_until_ms(domain_pb2.WatchlistRevocation()) is None  # no such field
