"""The hand-written wire helpers give protobuf's own bytes."""

from __future__ import annotations

import pytest
from google.protobuf.internal.encoder import _VarintBytes

from customs.gateway.v1 import envelope_pb2
from gateway.envelope.wire import length_delimited, varint


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384, 2**21, 2**35, 2**63 - 1])
def test_varint_is_protobufs(n: int) -> None:
    assert varint(n) == _VarintBytes(n)


@pytest.mark.parametrize("payload", [b"", b"x", b"y" * 127, b"z" * 128, b"w" * 70_000])
def test_a_length_delimited_field_is_protobufs_and_empty_is_left_out(payload: bytes) -> None:
    assert (
        length_delimited(b"\x12", payload)
        == envelope_pb2.Envelope(payload=payload).SerializeToString()
    )
