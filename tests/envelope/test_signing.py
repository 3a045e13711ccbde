"""Envelopes and receipts: what verifies, and a table of what must not."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.timestamp_pb2 import Timestamp

from customs.gateway.v1 import common_pb2, domain_pb2, envelope_pb2
from gateway.envelope import (
    BadSignatureError,
    ClockSkewError,
    MalformedEnvelopeError,
    Signer,
    UntrustedSignerError,
    envelope_digest,
    open_envelope,
    open_receipt,
    seal,
    seal_with_digest,
    sign_receipt,
)
from gateway.pki import Jurisdiction, Role, SpiffeId, create_root_ca, issue_signing_certificate
from gateway.pki.bundle import TrustBundle, fingerprint
from tests.support import World

NOW = dt.datetime.now(dt.UTC)


def _signer(world: World, j: Jurisdiction) -> Signer:
    cred = world.signing(j)
    key = cred.issued.private_key
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return Signer(cred.identity, key, cred.issued.certificate)


def _bundle(world: World) -> TrustBundle:
    return TrustBundle.from_json(world.bundle.read_text())


def _header(
    origin: Jurisdiction = Jurisdiction.CN, created: dt.datetime = NOW
) -> envelope_pb2.EnvelopeHeader:
    ts = Timestamp()
    ts.FromDatetime(created)
    return envelope_pb2.EnvelopeHeader(
        message_id=str(uuid.uuid4()),
        kind=common_pb2.MESSAGE_KIND_SEIZURE_WITHDRAWAL,
        origin=common_pb2.Jurisdiction.Value(f"JURISDICTION_{origin.value}"),
        origin_node=SpiffeId(origin, Role.NODE, "gateway").uri,
        recipients=[common_pb2.JURISDICTION_HK],
        created_at=ts,
        handling=common_pb2.Handling(releasable_to=[common_pb2.JURISDICTION_HK]),
    )


PAYLOAD = domain_pb2.SeizureWithdrawal(
    notice_id=str(uuid.uuid4()), version=2, reason="entered in error"
).SerializeToString()


def test_sealed_envelope_opens_with_signer_and_digest(world: World) -> None:
    envelope = seal(_header(), PAYLOAD, _signer(world, Jurisdiction.CN))
    opened = open_envelope(envelope, _bundle(world), now=NOW)
    assert opened.signer.uri == "spiffe://cn.customs-exchange/node/gateway"
    assert opened.origin is Jurisdiction.CN
    assert opened.digest == envelope_digest(envelope)
    assert isinstance(opened.payload, domain_pb2.SeizureWithdrawal)
    assert opened.payload.reason == "entered in error"


def test_seal_with_digest_is_seal_and_its_digest(world: World) -> None:
    """The digest hashed from the bytes just signed is the one read back from the envelope,
    and the envelope is byte for byte what ``seal`` makes (Ed25519 is deterministic)."""
    header, signer = _header(), _signer(world, Jurisdiction.CN)
    envelope, digest = seal_with_digest(header, PAYLOAD, signer)
    assert envelope.SerializeToString() == seal(header, PAYLOAD, signer).SerializeToString()
    assert digest == envelope_digest(envelope)
    assert open_envelope(envelope, _bundle(world), now=NOW).digest == digest


def _flip(data: bytes, at: int = -1) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def _other_root_signer(world: World) -> Signer:
    rogue = create_root_ca(Jurisdiction.CN)
    issued = issue_signing_certificate(rogue, SpiffeId(Jurisdiction.CN, Role.NODE, "gateway"))
    assert isinstance(issued.private_key, ed25519.Ed25519PrivateKey)
    return Signer(
        SpiffeId(Jurisdiction.CN, Role.NODE, "gateway"), issued.private_key, issued.certificate
    )


Tamper = Callable[[World, envelope_pb2.Envelope], envelope_pb2.Envelope]


def _tls_certificate_as_signer(world: World, env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    tls = world.cred(Jurisdiction.CN, Role.NODE).issued.certificate
    copy = envelope_pb2.Envelope()
    copy.CopyFrom(env)
    copy.signer_certificate = tls.public_bytes(serialization.Encoding.DER)
    copy.key_id = fingerprint(tls)
    return copy


def _replace(**fields: object) -> Tamper:
    def tamper(_world: World, env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
        copy = envelope_pb2.Envelope()
        copy.CopyFrom(env)
        for k, v in fields.items():
            setattr(copy, k, v(getattr(env, k)) if callable(v) else v)
        return copy

    return tamper


def _signed_by(
    make_signer: Callable[[World], Signer], origin: Jurisdiction = Jurisdiction.CN
) -> Tamper:
    def tamper(world: World, env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
        return seal(_header(origin), PAYLOAD, make_signer(world))

    return tamper


CASES: list[tuple[str, Tamper, type[Exception], str]] = [
    (
        "payload-byte-flipped",
        _replace(payload=_flip),
        BadSignatureError,
        "signature does not verify",
    ),
    (
        "signature-byte-flipped",
        _replace(signature=_flip),
        BadSignatureError,
        "signature does not verify",
    ),
    (
        "header-not-protobuf",
        _replace(header=b"\xff\xff"),
        MalformedEnvelopeError,
        "header is not a valid",
    ),
    (
        "key-id-of-another-cert",
        _replace(key_id="00" * 32),
        UntrustedSignerError,
        "does not name its certificate",
    ),
    (
        "signer-root-not-in-bundle",
        _signed_by(_other_root_signer),
        UntrustedSignerError,
        "does not chain to a CN root",
    ),
    (
        "hk-signer-claims-cn-origin",
        _signed_by(lambda w: _signer(w, Jurisdiction.HK)),
        UntrustedSignerError,
        "claims origin JURISDICTION_CN .* signed by spiffe://hk",
    ),
    (
        "signer-certificate-missing",
        _replace(signer_certificate=b""),
        UntrustedSignerError,
        "not valid DER",
    ),
    (
        "tls-certificate-as-signer",
        _tls_certificate_as_signer,
        UntrustedSignerError,
        "not allowed for document signing",
    ),
]


@pytest.mark.parametrize(
    ("tamper", "error", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_tampered_envelopes_are_refused(
    world: World, tamper: Tamper, error: type[Exception], match: str
) -> None:
    envelope = seal(_header(), PAYLOAD, _signer(world, Jurisdiction.CN))
    with pytest.raises(error, match=match):
        open_envelope(tamper(world, envelope), _bundle(world), now=NOW)


def test_created_in_the_future_is_refused(world: World) -> None:
    envelope = seal(
        _header(created=NOW + dt.timedelta(hours=1)), PAYLOAD, _signer(world, Jurisdiction.CN)
    )
    with pytest.raises(ClockSkewError, match=r"is ahead of this node.s clock"):
        open_envelope(envelope, _bundle(world), now=NOW)


def test_signer_certificate_must_have_been_valid_when_signed(world: World) -> None:
    signer = _signer(world, Jurisdiction.CN)
    envelope = seal(_header(created=NOW - dt.timedelta(days=400)), PAYLOAD, signer)
    with pytest.raises(UntrustedSignerError, match="is not valid before"):
        open_envelope(envelope, _bundle(world), now=NOW)


def _revoking(world: World, signer: Signer) -> x509.CertificateRevocationList:
    """A CRL of the signer's root that revokes the signer's certificate."""
    ca = world.cas[signer.identity.jurisdiction]
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(NOW - dt.timedelta(minutes=1))
        .next_update(NOW + dt.timedelta(days=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(signer.certificate.serial_number)
            .revocation_date(NOW - dt.timedelta(minutes=1))
            .build()
        )
        .sign(ca.private_key, hashes.SHA256())
    )


def test_revoked_signer_is_refused(world: World) -> None:
    signer = _signer(world, Jurisdiction.CN)
    envelope = seal(_header(), PAYLOAD, signer)
    with pytest.raises(UntrustedSignerError, match="was revoked"):
        open_envelope(envelope, _bundle(world), [_revoking(world, signer)], now=NOW)


# After a signer certificate has passed once (and is remembered, ADR 0050), what changed since
# must still refuse it: (bundle, crls, now) for the second open, given the first one's bundle.
Checked = tuple[TrustBundle, list[x509.CertificateRevocationList], dt.datetime]
Later = Callable[[World, TrustBundle, Signer], Checked]
LATER_CASES: list[tuple[str, Later, str]] = [
    ("revoked-by-new-crl", lambda w, b, s: (b, [_revoking(w, s)], NOW), "was revoked"),
    (
        "root-left-bundle",
        lambda w, b, s: (
            TrustBundle(tuple((j, r) for j, r in b if j is not Jurisdiction.CN)),
            [],
            NOW,
        ),
        "does not chain to a CN root",
    ),
    (
        "expired-since",
        lambda w, b, s: (b, [], s.certificate.not_valid_after_utc + dt.timedelta(seconds=1)),
        "expired at",
    ),
]


@pytest.mark.parametrize(
    ("later", "match"), [(c[1], c[2]) for c in LATER_CASES], ids=[c[0] for c in LATER_CASES]
)
def test_a_signer_that_passed_once_is_checked_again_after_a_change(
    world: World, later: Later, match: str
) -> None:
    signer = _signer(world, Jurisdiction.CN)
    bundle = _bundle(world)
    first = seal(_header(), PAYLOAD, signer)
    assert open_envelope(first, bundle, [], now=NOW).origin is Jurisdiction.CN
    assert open_envelope(seal(_header(), PAYLOAD, signer), bundle, [], now=NOW).digest
    new_bundle, crls, now = later(world, bundle, signer)
    envelope = seal(_header(created=now), PAYLOAD, signer)  # the signer is checked at creation
    with pytest.raises(UntrustedSignerError, match=match):
        open_envelope(envelope, new_bundle, crls, now=now)


def test_receipt_round_trip_and_forgery(world: World) -> None:
    hk = _signer(world, Jurisdiction.HK)
    body = envelope_pb2.ReceiptBody(
        message_id="m-1",
        message_digest=b"\x01" * 32,
        recipient=common_pb2.JURISDICTION_HK,
        recipient_node=hk.identity.uri,
        ledger_index=7,
    )
    receipt = sign_receipt(body, hk)
    opened = open_receipt(receipt, _bundle(world), now=NOW)
    assert opened.body.ledger_index == 7
    assert opened.signer == hk.identity

    forged = envelope_pb2.SignedReceipt()
    forged.CopyFrom(receipt)
    forged.body = _flip(receipt.body, 3)
    with pytest.raises(BadSignatureError, match="receipt signature does not verify"):
        open_receipt(forged, _bundle(world), now=NOW)

    mo = _signer(world, Jurisdiction.MO)
    with pytest.raises(UntrustedSignerError, match=r"names recipient .*hk.* signed by spiffe://mo"):
        open_receipt(sign_receipt(body, mo), _bundle(world), now=NOW)
