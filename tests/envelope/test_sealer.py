"""The bulk call's :class:`Sealer`: byte for byte what ``seal_with_digest`` gives (ADR 0085).

The sealer encodes the header and the envelope by hand around parts protobuf encoded once;
these tests build the same header as a message and compare the serialized envelopes, the
digests and what a recipient opens, over generated headers: empty and long values (lengths
past one varint byte), unknown and negative enum values, unset and empty handling, unknown
fields inside the handling.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customs.gateway.v1 import common_pb2, envelope_pb2
from gateway.envelope import Sealer, Signer, envelope_digest, open_envelope, seal_with_digest
from gateway.pki import Jurisdiction
from gateway.pki.bundle import TrustBundle
from tests.support import World

NOW = dt.datetime.now(dt.UTC)

_ENUMS = st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(-(2**31), 2**31 - 1))
_TEXT = st.one_of(st.just(""), st.text(max_size=3), st.text(min_size=120, max_size=300))


def _signer(world: World) -> Signer:
    cred = world.signing(Jurisdiction.HK)
    key = cred.issued.private_key
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return Signer(cred.identity, key, cred.issued.certificate)


@st.composite
def _handlings(draw: st.DrawFn) -> common_pb2.Handling | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None  # unset
    handling = common_pb2.Handling(
        releasable_to=draw(st.lists(_ENUMS, max_size=4)),
        onward_dissemination_allowed=draw(st.booleans()),
        caveat=draw(_TEXT),
    )
    if draw(st.booleans()):  # a field this schema does not know, kept as the header keeps it
        handling.MergeFromString(b"\xf8\x07" + bytes([draw(st.integers(0, 127))]))
    return handling


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    message_id=_TEXT,
    kind=_ENUMS,
    origin=_ENUMS,
    origin_node=_TEXT,
    recipients=st.lists(_ENUMS, max_size=4),
    seconds=st.integers(0, 2**34),
    handling=_handlings(),
    payload=st.one_of(st.just(b""), st.binary(max_size=4), st.binary(min_size=200, max_size=20000)),
)
def test_sealer_gives_the_bytes_of_seal_with_digest(
    world: World,
    message_id: str,
    kind: int,
    origin: int,
    origin_node: str,
    recipients: list[int],
    seconds: int,
    handling: common_pb2.Handling | None,
    payload: bytes,
) -> None:
    signer = _signer(world)
    created_at = Timestamp(seconds=seconds, nanos=seconds % 1000 * 1_000_000)
    header = envelope_pb2.EnvelopeHeader(
        message_id=message_id,
        kind=kind,
        origin=origin,
        origin_node=origin_node,
        recipients=recipients,
        created_at=created_at,
    )
    if handling is not None:
        header.handling.CopyFrom(handling)
    expected, expected_digest = seal_with_digest(header, payload, signer)
    sealer = Sealer(
        kind=kind, origin=origin, origin_node=origin_node, created_at=created_at, signer=signer
    )
    handling_bytes = None if handling is None else handling.SerializeToString()
    for _ in range(2):  # the second time from the sealer's cache of recipient lists
        envelope, digest = sealer.seal(message_id, tuple(recipients), handling_bytes, payload)
        assert envelope == expected.SerializeToString()
        assert digest == expected_digest


def test_sealed_bytes_open_as_the_envelope_they_name(world: World) -> None:
    """A recipient opens the sealer's bytes: signer, header, payload and digest as sealed."""
    signer = _signer(world)
    created_at = Timestamp()
    created_at.FromDatetime(NOW)
    wire = [common_pb2.JURISDICTION_CN, common_pb2.JURISDICTION_MO]
    handling = common_pb2.Handling(releasable_to=wire, caveat="For customs enforcement use only")
    sealer = Sealer(
        kind=common_pb2.MESSAGE_KIND_WATCHLIST_ENTRY,
        origin=common_pb2.JURISDICTION_HK,
        origin_node=signer.identity.uri,
        created_at=created_at,
        signer=signer,
    )
    message_id = "00000000-0000-4000-8000-000000000001"
    data, digest = sealer.seal(message_id, tuple(wire), handling.SerializeToString(), b"\x08\x01")
    envelope = envelope_pb2.Envelope.FromString(data)
    opened = open_envelope(envelope, TrustBundle.from_json(world.bundle.read_text()), now=NOW)
    assert opened.signer.uri == signer.identity.uri
    assert opened.header.message_id == message_id
    assert list(opened.header.recipients) == wire
    assert opened.header.handling == handling
    assert opened.digest == digest == envelope_digest(envelope)


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16383, 16384, 2**21])
def test_lengths_across_varint_bytes(world: World, length: int) -> None:
    """Payload lengths at each varint byte boundary (1, 2, 3 and 4 bytes)."""
    signer = _signer(world)
    header = envelope_pb2.EnvelopeHeader(
        message_id="m", kind=1, origin=2, origin_node="n", created_at=Timestamp()
    )
    expected, expected_digest = seal_with_digest(header, b"p" * length, signer)
    sealer = Sealer(kind=1, origin=2, origin_node="n", created_at=Timestamp(), signer=signer)
    assert sealer.seal("m", (), None, b"p" * length) == (
        expected.SerializeToString(),
        expected_digest,
    )


def test_the_sealer_knows_every_field_of_the_messages_it_encodes() -> None:
    """A field added to the header or the envelope must be taught to the sealer (and set in
    the generated-header test above): this list fails first."""
    header = {(f.number, f.name) for f in envelope_pb2.EnvelopeHeader.DESCRIPTOR.fields}
    envelope = {(f.number, f.name) for f in envelope_pb2.Envelope.DESCRIPTOR.fields}
    assert header == {
        (1, "message_id"),
        (2, "kind"),
        (3, "origin"),
        (4, "origin_node"),
        (5, "recipients"),
        (6, "created_at"),
        (7, "handling"),
    }
    assert envelope == {
        (1, "header"),
        (2, "payload"),
        (3, "key_id"),
        (4, "signature"),
        (5, "signer_certificate"),
    }
