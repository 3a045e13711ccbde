"""The node's append-only ledger on a store (SQLite or PostgreSQL): entries, stored subtree
hashes, checkpoints.

``Entry``/``Record`` and their canonical bytes are pure (``docs/ledger-format.md``); ``Ledger``
stores them with group commit and serves tree heads and RFC 9162 proofs in O(log n) reads;
``Checkpointer`` signs C2SP checkpoints periodically.
"""

from gateway.ledger._checkpointer import Checkpointer
from gateway.ledger._entry import FORMAT_VERSION, Entry, Event, Record, decode_record
from gateway.ledger._schema import CHECKPOINTS, COSIGNATURES, ENTRIES, META, TILES
from gateway.ledger._store import Ledger, SignedCheckpoint, Within
from gateway.ledger.errors import (
    EntryFormatError,
    LedgerClosedError,
    LedgerCorruptError,
    LedgerError,
    LedgerOriginError,
    LedgerRangeError,
)

__all__ = [
    "CHECKPOINTS",
    "COSIGNATURES",
    "ENTRIES",
    "FORMAT_VERSION",
    "META",
    "TILES",
    "Checkpointer",
    "Entry",
    "EntryFormatError",
    "Event",
    "Ledger",
    "LedgerClosedError",
    "LedgerCorruptError",
    "LedgerError",
    "LedgerOriginError",
    "LedgerRangeError",
    "Record",
    "SignedCheckpoint",
    "Within",
    "decode_record",
]
