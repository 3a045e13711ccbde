"""The canonical entry bytes: layout to the byte, strict decoding, no room for free text."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from gateway.ledger import Entry, EntryFormatError, Event, Record, decode_record
from tests.ledger.conftest import make_entry


def test_layout_is_byte_exact() -> None:
    digest = hashlib.sha256(b"payload").digest()
    record = Record(
        index=5,
        time_ms=1_700_000_000_123,
        entry=Entry(Event.RECEIVED, uuid.UUID(int=0xABC), "WATCHLIST_ENTRY", "MO", (digest,)),
    )
    expected = (
        b"\x01"
        + (5).to_bytes(8, "big")
        + (1_700_000_000_123).to_bytes(8, "big")
        + b"\x02"
        + uuid.UUID(int=0xABC).bytes
        + b"\x0fWATCHLIST_ENTRY"
        + b"\x02MO"
        + b"\x01"
        + digest
    )
    assert record.encode() == expected
    assert decode_record(expected) == record


@pytest.mark.parametrize("i", range(6))
def test_round_trip(i: int) -> None:
    record = Record(i, 1000 + i, make_entry(i, list(Event)[i]))
    assert decode_record(record.encode()) == record


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kind": "Seizure notice"}, "kind"),
        ({"kind": ""}, "kind"),
        ({"counterpart": "Hong Kong"}, "counterpart"),
        ({"counterpart": "Zhang San"}, "counterpart"),
        ({"counterpart": "spiffe://hk.customs-exchange/person name"}, "counterpart"),
        ({"digests": (b"short",)}, "digest 0"),
        ({"digests": (bytes(32),) * 9}, "at most 8"),
        ({"message_id": "not-a-uuid"}, "message_id"),
        ({"event": 3}, "event"),
    ],
    ids=[
        "kind-free-text",
        "kind-empty",
        "counterpart-name",
        "counterpart-person",
        "spiffe-with-space",
        "short-digest",
        "too-many-digests",
        "message-id",
        "event-int",
    ],
)
def test_bad_entries_are_refused_naming_the_field(fields: dict[str, object], match: str) -> None:
    base: dict[str, object] = {
        "event": Event.SENT,
        "message_id": uuid.UUID(int=1),
        "kind": "SEIZURE_NOTICE",
        "counterpart": "HK",
        "digests": (),
    }
    with pytest.raises(EntryFormatError, match=match):
        Entry(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b"\x02" + b[1:], "version 2"),
        (lambda b: b[:17] + b"\x63" + b[18:], "unknown event 99"),
        (lambda b: b + b"\x00", "digest bytes"),
        (lambda b: b[:-1], "digest bytes"),
        (lambda b: b[:40], "ends inside"),
        (lambda b: b[:10], "shorter than its header"),
    ],
    ids=["version", "event", "trailing-byte", "truncated-digest", "truncated-kind", "header"],
)
def test_bad_bytes_are_refused(mutate: object, match: str) -> None:
    leaf = Record(1, 2, make_entry(1)).encode()
    with pytest.raises(EntryFormatError, match=match):
        decode_record(mutate(leaf))  # type: ignore[operator]


def test_encode_many_gives_the_bytes_each_record_encodes() -> None:
    from gateway.ledger._entry import encode_many
    from tests.ledger.conftest import make_entry

    entries = [make_entry(i, event) for i, event in enumerate(list(Event) * 3)]
    assert encode_many(41, 1_700_000_000_123, entries) == [
        Record(41 + i, 1_700_000_000_123, e).encode() for i, e in enumerate(entries)
    ]
    with pytest.raises(
        EntryFormatError, match=r"indexes 18446744073709551615\.\.18446744073709551616"
    ):
        encode_many(2**64 - 1, 0, entries[:2])


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"event": 1}, "not an Event"),
        ({"message_id": "0f043c67-cd1c-4760-9ca8-e78878669abd"}, "not a UUID"),
        ({"digests": (b"x" * 31,)}, "digest 0 is not 32 bytes"),
        ({"digests": [b"x" * 32] * 9}, "9 digests, at most 8"),
        ({"digests": (b"x" * 32,) * 9}, "9 digests, at most 8"),
        ({"digests": ("x" * 32,)}, "digest 0 is not 32 bytes"),
    ],
)
def test_a_known_good_kind_and_counterpart_does_not_excuse_the_rest(
    fields: dict[str, object], match: str
) -> None:
    """Entries with a (kind, counterpart) already seen good skip only the name checks (ADR 0080)."""
    good: dict[str, object] = {
        "event": Event.SENT,
        "message_id": uuid.uuid4(),
        "kind": "WATCHLIST_ENTRY",
        "counterpart": "CN",
        "digests": (b"x" * 32,),
    }
    Entry(**good)  # type: ignore[arg-type]
    with pytest.raises(EntryFormatError, match=match):
        Entry(**{**good, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("digests", "match"),
    [
        ((b"short",), "digest 0"),
        ((bytes(32), bytearray(32)), "digest 1"),
        ((bytes(32),) * 9, "at most 8"),
        ([bytes(32)], None),  # a list, not a tuple: the full checks, which accept it
    ],
    ids=["short-digest", "bytearray-digest", "too-many-digests", "digest-list"],
)
def test_a_kind_and_counterpart_found_good_still_check_the_digests(
    digests: object, match: str | None
) -> None:
    """The fast path (a pair already found good) checks every digest as the full checks do."""
    Entry(Event.SENT, uuid.UUID(int=1), "WATCHLIST_ENTRY", "MO", (bytes(32),))  # found good
    if match is None:
        assert Entry(Event.SENT, uuid.UUID(int=2), "WATCHLIST_ENTRY", "MO", digests).digests  # type: ignore[arg-type]
        return
    with pytest.raises(EntryFormatError, match=match):
        Entry(Event.SENT, uuid.UUID(int=2), "WATCHLIST_ENTRY", "MO", digests)  # type: ignore[arg-type]
