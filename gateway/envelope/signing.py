"""Sealing and opening envelopes and receipts (pure; see docs/envelopes.md).

What is signed is exactly what is carried. The origin serializes the header and the payload once;
the signature covers a domain-separated, length-prefixed encoding of those bytes::

    PAE = context || 0x0A || u64be(len(header)) || header || u64be(len(payload)) || payload

with ``context`` = ``customs-gateway/envelope/v1``; a receipt is signed the same way with
``customs-gateway/receipt/v1`` and a single part, its body. The message digest is
``SHA-256(PAE)``: it binds header and payload, and is what ledgers record. A verifier checks the
signature over the bytes it received, then parses them; it never re-serializes.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from customs.gateway.v1 import common_pb2, envelope_pb2
from gateway.domain.kinds import KINDS
from gateway.envelope.errors import (
    BadSignatureError,
    ClockSkewError,
    MalformedEnvelopeError,
    UntrustedSignerError,
)
from gateway.envelope.wire import length_delimited, varint
from gateway.pki.bundle import TrustBundle, fingerprint
from gateway.pki.chain import CertificateCheckError, verify_leaf
from gateway.pki.identity import Jurisdiction, Role, SpiffeId

__all__ = [
    "ENVELOPE_CONTEXT",
    "PAYLOAD_TYPES",
    "RECEIPT_CONTEXT",
    "OpenedEnvelope",
    "OpenedReceipt",
    "Sealer",
    "Signer",
    "envelope_digest",
    "jurisdiction_of",
    "open_envelope",
    "open_receipt",
    "pae",
    "proto_jurisdiction",
    "seal",
    "seal_with_digest",
    "sign_receipt",
]

ENVELOPE_CONTEXT = b"customs-gateway/envelope/v1"
RECEIPT_CONTEXT = b"customs-gateway/receipt/v1"
CLOCK_SKEW = dt.timedelta(minutes=5)

MessageKind = common_pb2.MessageKind
# The payload type of each kind, from the one table of kinds (ADR 0016).
PAYLOAD_TYPES: dict[int, type[Message]] = {kind: row.payload for kind, row in KINDS.items()}

_PROTO_OF: dict[Jurisdiction, common_pb2.Jurisdiction] = {
    Jurisdiction.CN: common_pb2.JURISDICTION_CN,
    Jurisdiction.HK: common_pb2.JURISDICTION_HK,
    Jurisdiction.MO: common_pb2.JURISDICTION_MO,
}
_JURISDICTION_OF: dict[int, Jurisdiction] = {int(v): k for k, v in _PROTO_OF.items()}


_PACK_LENGTH = struct.Struct(">Q").pack


def pae(context: bytes, *parts: bytes) -> bytes:
    """Pre-authentication encoding: ``context || 0x0A`` then each part as u64be length + bytes."""
    out = [context, b"\n"]
    for part in parts:
        out += [_PACK_LENGTH(len(part)), part]
    return b"".join(out)


def envelope_digest(envelope: envelope_pb2.Envelope) -> bytes:
    """SHA-256 of the envelope's signed bytes (32 bytes): the message digest ledgers record."""
    return hashlib.sha256(pae(ENVELOPE_CONTEXT, envelope.header, envelope.payload)).digest()


@dataclass(frozen=True)
class Signer:
    """A node's Ed25519 signing key with its certificate."""

    identity: SpiffeId
    private_key: ed25519.Ed25519PrivateKey
    certificate: x509.Certificate

    # Cached: every seal and receipt carries both, and re-encoding the certificate per message
    # cost about a quarter of a millisecond (the fields are frozen, so the values cannot go stale).
    @functools.cached_property
    def key_id(self) -> str:
        """Lower-case hex SHA-256 of the signing certificate's DER."""
        return fingerprint(self.certificate)

    @functools.cached_property
    def certificate_der(self) -> bytes:
        """The signing certificate, DER."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature of ``data``."""
        return self.private_key.sign(data)


def seal(
    header: envelope_pb2.EnvelopeHeader, payload: bytes, signer: Signer
) -> envelope_pb2.Envelope:
    """Serialize ``header`` once and sign it with ``payload``; return the envelope to carry."""
    return seal_with_digest(header, payload, signer)[0]


def seal_with_digest(
    header: envelope_pb2.EnvelopeHeader, payload: bytes, signer: Signer
) -> tuple[envelope_pb2.Envelope, bytes]:
    """:func:`seal`, with the envelope's digest (what :func:`envelope_digest` returns for it),
    hashed from the very bytes just signed rather than read back out of the envelope."""
    header_bytes = header.SerializeToString()
    signed = pae(ENVELOPE_CONTEXT, header_bytes, payload)
    envelope = envelope_pb2.Envelope(
        header=header_bytes,
        payload=payload,
        key_id=signer.key_id,
        signature=signer.sign(signed),
        signer_certificate=signer.certificate_der,
    )
    return envelope, hashlib.sha256(signed).digest()


Recipients = tuple[common_pb2.Jurisdiction, ...]
"""An envelope header's recipients, as read from a request's addressing."""


class Sealer:
    """:func:`seal_with_digest` for the many envelopes of one bulk call, as bytes.

    Every envelope of a call shares the kind, the origin, the origin node, the creation time
    and the signer; only the message id, the recipients, the handling and the payload differ.
    The shared fields are encoded once (by protobuf itself), the rest around them by hand, so
    no header or envelope message is built, serialized and thrown away per entry (ADR 0085).
    The bytes are exactly those of ``seal_with_digest(header, payload, signer)`` and its
    envelope's ``SerializeToString()``: fields in number order, a proto3 empty value left
    out (``tests/envelope/test_sealer.py`` compares the two on generated headers).
    """

    def __init__(
        self,
        *,
        kind: common_pb2.MessageKind,
        origin: common_pb2.Jurisdiction,
        origin_node: str,
        created_at: Timestamp,
        signer: Signer,
    ) -> None:
        header = envelope_pb2.EnvelopeHeader
        # Header fields 2-4, then 6: each part holds only its own fields, in order.
        self._middle = header(kind=kind, origin=origin, origin_node=origin_node).SerializeToString()
        self._created_at = header(created_at=created_at).SerializeToString()
        self._key_id = envelope_pb2.Envelope(key_id=signer.key_id).SerializeToString()
        self._certificate = envelope_pb2.Envelope(
            signer_certificate=signer.certificate_der
        ).SerializeToString()
        self._sign = signer.sign
        self._recipients: dict[Recipients, bytes] = {}  # header field 5, per list

    def seal(
        self,
        message_id: str,
        recipients: Recipients,
        handling: bytes | None,
        payload: bytes,
    ) -> tuple[bytes, bytes]:
        """The serialized envelope of this header and ``payload``, and its digest.

        Args:
            message_id: the header's message id.
            recipients: the header's recipients (proto enum values).
            handling: the serialized ``Handling`` (``b""`` when empty but set), None if unset.
            payload: the serialized payload.
        """
        encoded = self._recipients.get(recipients)
        if encoded is None:
            encoded = self._recipients[recipients] = envelope_pb2.EnvelopeHeader(
                recipients=recipients
            ).SerializeToString()
        header = b"".join(
            (
                length_delimited(b"\x0a", message_id.encode()),
                self._middle,
                encoded,
                self._created_at,
                b"" if handling is None else b"\x3a" + varint(len(handling)) + handling,
            )
        )
        signed = pae(ENVELOPE_CONTEXT, header, payload)
        envelope = b"".join(
            (
                length_delimited(b"\x0a", header),
                length_delimited(b"\x12", payload),
                self._key_id,
                length_delimited(b"\x22", self._sign(signed)),
                self._certificate,
            )
        )
        return envelope, hashlib.sha256(signed).digest()


def sign_receipt(body: envelope_pb2.ReceiptBody, signer: Signer) -> envelope_pb2.SignedReceipt:
    """Serialize and sign a receipt body."""
    body_bytes = body.SerializeToString()
    return envelope_pb2.SignedReceipt(
        body=body_bytes,
        key_id=signer.key_id,
        signature=signer.sign(pae(RECEIPT_CONTEXT, body_bytes)),
        signer_certificate=signer.certificate_der,
    )


def _parse(cls: type[Message], data: bytes, what: str) -> Message:
    message = cls()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedEnvelopeError(f"{what} is not a valid {cls.DESCRIPTOR.name}") from exc
    return message


@dataclass(frozen=True)
class _Vetted:
    """A signer certificate that passed every check against this bundle and these CRLs."""

    key_id: str
    bundle: TrustBundle
    crls: tuple[x509.CertificateRevocationList, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    identity: SpiffeId
    public: ed25519.Ed25519PublicKey

    def holds(
        self,
        key_id: str,
        bundle: TrustBundle,
        crls: tuple[x509.CertificateRevocationList, ...],
        at: dt.datetime,
    ) -> bool:
        """Whether the same checks would pass now: same key id, the very same bundle and CRL
        objects (a reload makes new ones), and ``at`` within the validity period."""
        return (
            key_id == self.key_id
            and bundle is self.bundle
            and len(crls) == len(self.crls)
            and all(a is b for a, b in zip(crls, self.crls, strict=True))
            and self.not_before <= at <= self.not_after
        )


# Signer certificates that passed, by DER (ADR 0050): a peer signs every envelope and receipt
# with the same certificate, and checking its chain signature again costs about a millisecond
# per message. Only successes are kept; anything else takes the full path and its errors.
_VETTED: dict[bytes, _Vetted] = {}
_VETTED_LIMIT = 256


def _signer(
    der: bytes,
    key_id: str,
    bundle: TrustBundle,
    crls: Sequence[x509.CertificateRevocationList],
    at: dt.datetime,
    what: str,
) -> tuple[SpiffeId, ed25519.Ed25519PublicKey]:
    crls = tuple(crls)
    vetted = _VETTED.get(der)
    if vetted is not None and vetted.holds(key_id, bundle, crls, at):
        return vetted.identity, vetted.public
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise UntrustedSignerError(f"{what} signer certificate is not valid DER") from exc
    try:
        cert.extensions  # noqa: B018  parsed lazily: a malformed one would raise mid-check
    except ValueError as exc:
        # Final (INVALID_ARGUMENT): these bytes will never verify, so the sender stops.
        raise MalformedEnvelopeError(
            f"{what} signer certificate has a malformed extension: {exc}"
        ) from None
    if fingerprint(cert) != key_id:
        raise UntrustedSignerError(
            f"{what} key id {key_id[:16]} does not name its certificate {fingerprint(cert)[:16]}"
        )
    try:
        identity = verify_leaf(cert, bundle, crls, at=at, usage="signing")
    except CertificateCheckError as exc:
        raise UntrustedSignerError(f"{what} signer: {exc}") from exc
    if identity.role is not Role.NODE:
        raise UntrustedSignerError(f"{what} signer {identity.uri} is not a node")
    public = cert.public_key()
    if not isinstance(public, ed25519.Ed25519PublicKey):
        raise UntrustedSignerError(f"{what} signer {identity.uri} has no Ed25519 key")
    if len(_VETTED) >= _VETTED_LIMIT:
        _VETTED.clear()
    _VETTED[der] = _Vetted(
        key_id,
        bundle,
        crls,
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        identity,
        public,
    )
    return identity, public


@dataclass(frozen=True)
class OpenedEnvelope:
    """A verified envelope: who signed it, its parsed header and payload, and its digest."""

    envelope: envelope_pb2.Envelope
    header: envelope_pb2.EnvelopeHeader
    payload: Message
    signer: SpiffeId
    digest: bytes

    @property
    def origin(self) -> Jurisdiction:
        """The origin jurisdiction (checked against the signer's)."""
        return self.signer.jurisdiction


def jurisdiction_of(value: int) -> Jurisdiction | None:
    """The :class:`Jurisdiction` of a proto enum value, or None for an unknown value."""
    return _JURISDICTION_OF.get(int(value))


def proto_jurisdiction(jurisdiction: Jurisdiction) -> common_pb2.Jurisdiction:
    """The proto enum value of ``jurisdiction``."""
    return _PROTO_OF[jurisdiction]


def open_envelope(
    envelope: envelope_pb2.Envelope,
    bundle: TrustBundle,
    crls: Sequence[x509.CertificateRevocationList] = (),
    *,
    now: dt.datetime,
) -> OpenedEnvelope:
    """Verify and parse an envelope, in this order:

    1. the header parses and names a known kind, origin and creation time not in the future;
    2. the signer certificate is the one ``key_id`` names, chains to a root of its own
       jurisdiction, was valid at ``created_at``, is for document signing, is not revoked,
       and belongs to a node;
    3. the Ed25519 signature verifies over the PAE of the carried header and payload bytes;
    4. the header's origin and origin node are the signer's;
    5. the payload parses as the type the kind fixes.

    Raises:
        MalformedEnvelopeError, UntrustedSignerError, BadSignatureError: naming the step.
    """
    # Each read of a bytes field copies it out of the message: read the carried bytes once.
    header_bytes, payload_bytes = envelope.header, envelope.payload
    # (1) header
    header = _parse(envelope_pb2.EnvelopeHeader, header_bytes, "header")
    assert isinstance(header, envelope_pb2.EnvelopeHeader)
    payload_type = PAYLOAD_TYPES.get(header.kind)
    if payload_type is None:
        raise MalformedEnvelopeError(f"header.kind {header.kind} is not a known message kind")
    if not header.HasField("created_at"):
        raise MalformedEnvelopeError("header.created_at is missing")
    created = header.created_at.ToDatetime(dt.UTC)
    if created > now + CLOCK_SKEW:
        raise ClockSkewError(
            f"header.created_at {created.isoformat()} is ahead of this node's clock "
            f"({now.isoformat()}) by more than {CLOCK_SKEW}"
        )
    # (2) signer
    what = f"message {header.message_id}"
    signer, public = _signer(
        envelope.signer_certificate, envelope.key_id, bundle, crls, created, what
    )
    # (3) signature over exactly the carried bytes (their PAE is also what the digest hashes)
    signed = pae(ENVELOPE_CONTEXT, header_bytes, payload_bytes)
    try:
        public.verify(envelope.signature, signed)
    except InvalidSignature:
        raise BadSignatureError(f"{what}: signature does not verify for {signer.uri}") from None
    # (4) origin is the signer
    origin = jurisdiction_of(header.origin)
    if origin is not signer.jurisdiction or header.origin_node != signer.uri:
        raise UntrustedSignerError(
            f"{what}: header claims origin {common_pb2.Jurisdiction.Name(header.origin)} "
            f"{header.origin_node!r} but is signed by {signer.uri}"
        )
    # (5) payload
    payload = _parse(payload_type, payload_bytes, "payload")
    return OpenedEnvelope(envelope, header, payload, signer, hashlib.sha256(signed).digest())


@dataclass(frozen=True)
class OpenedReceipt:
    """A verified receipt and the node that signed it."""

    body: envelope_pb2.ReceiptBody
    signer: SpiffeId
    digest: bytes


def open_receipt(
    receipt: envelope_pb2.SignedReceipt,
    bundle: TrustBundle,
    crls: Sequence[x509.CertificateRevocationList] = (),
    *,
    now: dt.datetime,
) -> OpenedReceipt:
    """Verify a receipt's signer (as for envelopes) and signature, then parse its body.

    The caller checks that the body names the message id, digest and recipient it expects.
    """
    what = "receipt"
    signer, public = _signer(receipt.signer_certificate, receipt.key_id, bundle, crls, now, what)
    body_bytes = receipt.body  # read once: each read copies it out of the message
    signed = pae(RECEIPT_CONTEXT, body_bytes)
    try:
        public.verify(receipt.signature, signed)
    except InvalidSignature:
        raise BadSignatureError(f"receipt signature does not verify for {signer.uri}") from None
    body = _parse(envelope_pb2.ReceiptBody, body_bytes, "receipt body")
    assert isinstance(body, envelope_pb2.ReceiptBody)
    if (
        jurisdiction_of(body.recipient) is not signer.jurisdiction
        or body.recipient_node != signer.uri
    ):
        raise UntrustedSignerError(
            f"receipt for {body.message_id} names recipient {body.recipient_node!r} "
            f"but is signed by {signer.uri}"
        )
    return OpenedReceipt(body, signer, hashlib.sha256(signed).digest())
