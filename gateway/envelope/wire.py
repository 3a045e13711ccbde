"""Protobuf's wire format by hand, for the few places that join already-serialized messages
without parsing them again (a bulk call's envelopes, ADR 0085; a delivery batch, ADR 0081)."""

from __future__ import annotations

__all__ = ["length_delimited", "varint"]


def varint(n: int) -> bytes:
    """``n`` (0 or more) as a protobuf base-128 varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(key: bytes, value: bytes) -> bytes:
    """A length-delimited field (``key`` = its key byte), omitted when empty as proto3 does."""
    return key + varint(len(value)) + value if value else b""
