"""A delivery call is sent as the stored envelopes' bytes, framed as a ``DeliverBatchRequest``
(ADR 0081): byte for byte what parsing each envelope and serializing the request gives, so
the recipient sees exactly the request it saw before."""

from __future__ import annotations

import os

import pytest

from customs.gateway.v1 import envelope_pb2, peer_pb2
from gateway.exchange.delivery import _batch_request


def _envelope(size: int) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(
        header=os.urandom(size),
        payload=os.urandom(3 * size),
        signature=os.urandom(64),
        key_id="k" * 16,
        signer_certificate=os.urandom(size // 2),
    )


@pytest.mark.parametrize("sizes", [[0], [1], [42, 43, 44], [20, 200, 2_000, 20_000, 100_000]])
def test_a_batch_request_is_the_serialized_request_of_the_parsed_envelopes(
    sizes: list[int],
) -> None:
    envelopes = [_envelope(size) for size in sizes]
    stored = [e.SerializeToString() for e in envelopes]
    framed = _batch_request(stored)
    assert framed == peer_pb2.DeliverBatchRequest(envelopes=envelopes).SerializeToString()
    assert list(peer_pb2.DeliverBatchRequest.FromString(framed).envelopes) == envelopes


def test_an_empty_envelope_is_framed_too() -> None:
    # An envelope with no fields serializes to no bytes; it is still one element of the list.
    framed = _batch_request([b"", _envelope(10).SerializeToString()])
    assert len(peer_pb2.DeliverBatchRequest.FromString(framed).envelopes) == 2
