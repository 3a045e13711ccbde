"""The entry codec, re-exported: it lives in :mod:`gateway.entries` so the auditor can load it
without the node's writer (``gateway.ledger._store``)."""

from gateway.entries._codec import (
    FORMAT_VERSION,
    Entry,
    Event,
    Record,
    decode_record,
    encode_many,
)

__all__ = ["FORMAT_VERSION", "Entry", "Event", "Record", "decode_record", "encode_many"]
