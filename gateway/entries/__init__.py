"""Ledger entries and their canonical bytes (format version 1, docs/ledger-format.md). Pure.

Shared by the node's ledger (``gateway.ledger``) and the offline auditor (``gateway.audit``),
which must not load the node's writer. :data:`EVENT_RULES` is the per-event grammar
(counterpart, digest count) the auditor enforces.
"""

from gateway.entries._codec import (
    EVENT_RULES,
    FORMAT_VERSION,
    Entry,
    Event,
    EventRule,
    Record,
    decode_record,
    encode_many,
    grammar_problem,
)
from gateway.entries.errors import EntryFormatError

__all__ = [
    "EVENT_RULES",
    "FORMAT_VERSION",
    "Entry",
    "EntryFormatError",
    "Event",
    "EventRule",
    "Record",
    "decode_record",
    "encode_many",
    "grammar_problem",
]
