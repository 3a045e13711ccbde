"""Ledger entries and their canonical bytes (format version 1, docs/ledger-format.md).

Pure. An entry holds index, time, event, message id, kind, counterpart and SHA-256 digests,
nothing else: the format has no field where personal data could go, and ``kind`` and
``counterpart`` are restricted to codes.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from gateway.entries.errors import EntryFormatError

FORMAT_VERSION = 1
MAX_DIGESTS = 8
DIGEST_SIZE = 32
_HEAD = struct.Struct(">BQQB16sB")  # version, index, time_ms, event, message id, kind length
_KIND = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# (kind, counterpart) pairs of entries that passed every check (few: kinds times peers and
# partners); bounded, so a flood of odd counterparts only falls back to the full checks.
_GOOD_NAMES: set[tuple[str, str]] = set()
_MAX_GOOD_NAMES = 4096
_COUNTERPART = re.compile(r"[A-Z]{2}|spiffe://[a-z0-9.\-]+(/[A-Za-z0-9._\-]+)+")
_MAX_U64 = 2**64 - 1


class Event(IntEnum):
    """What happened to a message, as one byte in the entry."""

    SENT = 1  # this node signed and queued a message for other nodes
    RECEIVED = 2  # this node accepted a message from another node
    RECEIPT = 3  # this node received a signed receipt for a message it sent
    ACKNOWLEDGED = 4  # a partner of this node acknowledged an inbound message
    ERASED = 5  # a payload was erased at the end of its retention
    WITNESSED = 6  # this node cosigned a peer's checkpoint (ADR 0015)
    REFUSED = 7  # this node refused a message (forgery, replay, not releasable)


@dataclass(frozen=True, init=False)
class Entry:
    """What to record: validated at construction, so a bad entry fails in its caller.

    Attributes:
        event: what happened.
        message_id: the message's UUID (for ``WITNESSED``, any id naming the checkpoint).
        kind: an upper-case code such as ``SEIZURE_NOTICE`` (1-64 of A-Z, 0-9, _).
        counterpart: a jurisdiction code (``HK``) or a SPIFFE id of a node.
        digests: SHA-256 values (32 bytes each, at most 8): payload, receipt, checkpoint...
    """

    event: Event
    message_id: uuid.UUID
    kind: str
    counterpart: str
    digests: tuple[bytes, ...] = ()

    def __init__(
        self,
        event: Event,
        message_id: uuid.UUID,
        kind: str,
        counterpart: str,
        digests: tuple[bytes, ...] = (),
    ) -> None:
        # The fields go straight into the instance's dict, as the dataclass's own __init__
        # puts them through object.__setattr__ one call each (a frozen class refuses plain
        # assignment): half the cost, and a bulk call makes one entry per recipient (ADR 0085).
        fields = self.__dict__
        fields["event"] = event
        fields["message_id"] = message_id
        fields["kind"] = kind
        fields["counterpart"] = counterpart
        fields["digests"] = digests
        # The usual entry: exact types, a (kind, counterpart) pair already found good, one to
        # MAX_DIGESTS digests of 32 bytes. Anything else takes the full checks.
        if (
            type(event) is Event
            and type(message_id) is uuid.UUID
            and (kind, counterpart) in _GOOD_NAMES
            and type(digests) is tuple
            and len(digests) <= MAX_DIGESTS
        ):
            for d in digests:
                if type(d) is not bytes or len(d) != DIGEST_SIZE:
                    break
            else:
                return
        self._check()

    def _check(self) -> None:
        problems = []
        if not isinstance(self.event, Event):
            problems.append(f"event {self.event!r} is not an Event")
        if not isinstance(self.message_id, uuid.UUID):
            problems.append(f"message_id {self.message_id!r} is not a UUID")
        if not isinstance(self.kind, str) or not _KIND.fullmatch(self.kind):
            problems.append(f"kind {self.kind!r} is not an upper-case code")
        if not isinstance(self.counterpart, str) or not _COUNTERPART.fullmatch(self.counterpart):
            problems.append(
                f"counterpart {self.counterpart!r} is not a jurisdiction code or node SPIFFE id"
            )
        if len(self.counterpart.encode()) > 255:
            problems.append("counterpart is longer than 255 bytes")
        if len(self.digests) > MAX_DIGESTS:
            problems.append(f"{len(self.digests)} digests, at most {MAX_DIGESTS}")
        for i, d in enumerate(self.digests):
            if not isinstance(d, bytes) or len(d) != DIGEST_SIZE:
                problems.append(f"digest {i} is not {DIGEST_SIZE} bytes")
        if problems:
            raise EntryFormatError("bad ledger entry: " + "; ".join(problems))
        names = (self.kind, self.counterpart)
        if type(names[0]) is str and type(names[1]) is str and len(_GOOD_NAMES) < _MAX_GOOD_NAMES:
            _GOOD_NAMES.add(names)


@dataclass(frozen=True, init=False)
class Record:
    """An entry as recorded: its index in the log and the time the ledger assigned."""

    index: int
    time_ms: int
    entry: Entry

    def __init__(self, index: int, time_ms: int, entry: Entry) -> None:
        fields = self.__dict__  # as in Entry: the ledger writer makes one per entry
        fields["index"] = index
        fields["time_ms"] = time_ms
        fields["entry"] = entry

    def encode(self) -> bytes:
        """The canonical leaf bytes (version 1); the leaf hash is SHA-256(0x00 || these)."""
        e = self.entry
        if not 0 <= self.index <= _MAX_U64 or not 0 <= self.time_ms <= _MAX_U64:
            raise EntryFormatError(f"index {self.index} or time {self.time_ms} out of range")
        kind = e.kind.encode()
        counterpart = e.counterpart.encode()
        return b"".join(
            (
                _HEAD.pack(
                    FORMAT_VERSION, self.index, self.time_ms, e.event, e.message_id.bytes, len(kind)
                ),
                kind,
                bytes([len(counterpart)]),
                counterpart,
                bytes([len(e.digests)]),
                *e.digests,
            )
        )


def encode_many(first: int, time_ms: int, entries: Sequence[Entry]) -> list[bytes]:
    """The canonical bytes of ``entries`` recorded at indexes ``first, first + 1, ...``.

    Byte for byte what :meth:`Record.encode` gives each of them, in one loop that encodes
    each distinct (kind, counterpart) once: the ledger writer's batched path.
    """
    last = first + len(entries) - 1
    if not 0 <= first <= last <= _MAX_U64 or not 0 <= time_ms <= _MAX_U64:
        raise EntryFormatError(f"indexes {first}..{last} or time {time_ms} out of range")
    pack = _HEAD.pack
    middles: dict[tuple[str, str], tuple[int, bytes]] = {}
    out: list[bytes] = []
    add = out.append
    for index, e in enumerate(entries, first):
        middle = middles.get((e.kind, e.counterpart))
        if middle is None:
            kind, counterpart = e.kind.encode(), e.counterpart.encode()
            middle = (len(kind), kind + bytes((len(counterpart),)) + counterpart)
            middles[(e.kind, e.counterpart)] = middle
        digests = e.digests
        head = pack(
            FORMAT_VERSION,
            index,
            time_ms,
            e.event,
            e.message_id.int.to_bytes(16, "big"),
            middle[0],
        )
        add(b"".join((head, middle[1], bytes((len(digests),)), *digests)))
    return out


def decode_record(leaf: bytes) -> Record:
    """Parse canonical leaf bytes strictly; re-encoding gives the same bytes.

    Raises:
        EntryFormatError: wrong version, unknown event, bad lengths, trailing bytes, or fields
            outside the allowed codes.
    """
    if len(leaf) < _HEAD.size:
        raise EntryFormatError(f"entry is {len(leaf)} bytes, shorter than its header")
    version, index, time_ms, event, mid, kind_len = _HEAD.unpack_from(leaf)
    if version != FORMAT_VERSION:
        raise EntryFormatError(f"entry format version {version}, expected {FORMAT_VERSION}")
    at = _HEAD.size
    kind = leaf[at : at + kind_len]
    at += kind_len
    if at >= len(leaf):
        raise EntryFormatError("entry ends inside its kind")
    cp_len = leaf[at]
    counterpart = leaf[at + 1 : at + 1 + cp_len]
    at += 1 + cp_len
    if at >= len(leaf):
        raise EntryFormatError("entry ends inside its counterpart")
    count = leaf[at]
    at += 1
    if len(leaf) != at + DIGEST_SIZE * count:
        raise EntryFormatError(
            f"entry has {len(leaf) - at} digest bytes for {count} digests of {DIGEST_SIZE}"
        )
    try:
        ev = Event(event)
    except ValueError as e:
        raise EntryFormatError(f"unknown event {event}") from e
    try:
        entry = Entry(
            ev,
            uuid.UUID(bytes=mid),
            kind.decode("ascii"),
            counterpart.decode("ascii"),
            tuple(leaf[at + DIGEST_SIZE * i : at + DIGEST_SIZE * (i + 1)] for i in range(count)),
        )
    except UnicodeDecodeError as e:
        raise EntryFormatError("kind or counterpart is not ASCII") from e
    return Record(index, time_ms, entry)


@dataclass(frozen=True)
class EventRule:
    """What an event's counterpart is and how many digests it carries (docs/ledger-format.md).

    Attributes:
        counterpart: ``"jurisdiction"`` (a two-letter code) or ``"spiffe"`` (a SPIFFE id).
        means: who the counterpart is, in words.
        digests: the exact number of digests.
        written: False for an event nodes never write (an auditor refuses it).
    """

    counterpart: str
    means: str
    digests: int
    written: bool = True


#: One row per event: the grammar the auditor enforces. Add a row with a new event.
EVENT_RULES: dict[Event, EventRule] = {
    Event.SENT: EventRule("jurisdiction", "the recipient", 1),
    Event.RECEIVED: EventRule("jurisdiction", "the message's origin", 1),
    Event.RECEIPT: EventRule("jurisdiction", "the recipient who signed the receipt", 2),
    Event.ACKNOWLEDGED: EventRule("spiffe", "the acknowledging partner's SPIFFE id", 1),
    Event.ERASED: EventRule("jurisdiction", "the message's origin", 1),
    Event.WITNESSED: EventRule("jurisdiction", "the log whose checkpoint this node cosigned", 2),
    Event.REFUSED: EventRule("jurisdiction", "the recipient that refused", 1),
}
_JURISDICTION = re.compile(r"[A-Z]{2}")


def grammar_problem(entry: Entry) -> str | None:
    """Why ``entry`` breaks its event's row of :data:`EVENT_RULES`, or None if it fits."""
    rule = EVENT_RULES.get(entry.event)
    name = entry.event.name.lower()
    if rule is None or not rule.written:
        return f"event {name} is not written by nodes"
    is_code = _JURISDICTION.fullmatch(entry.counterpart) is not None
    if is_code != (rule.counterpart == "jurisdiction"):
        want = "a jurisdiction code" if rule.counterpart == "jurisdiction" else "a SPIFFE id"
        return f"{name} entry: counterpart {entry.counterpart!r} is not {want} ({rule.means})"
    if len(entry.digests) != rule.digests:
        return f"{name} entry has {len(entry.digests)} digests, not {rule.digests}"
    return None
