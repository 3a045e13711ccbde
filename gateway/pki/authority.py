"""Jurisdiction root CAs and the certificates they issue (pure: bytes and objects, no I/O).

Each jurisdiction runs its own root CA (ECDSA P-256). The root carries X.509 name constraints
that confine every URI it can vouch for to its own SPIFFE trust domain, so a certificate that
chains to the HK root can only ever be an HK identity, even to a TLS stack that knows nothing of
this project. Leaves are short-lived and carry exactly one SPIFFE URI SAN.

Per node there are two keys (as in X-Road): an ECDSA P-256 TLS key, and an Ed25519 signing key
whose certificate (extended key usage ``id-kp-documentSigning``, RFC 9336) binds it to the node
identity for envelopes, receipts, checkpoints and cosignatures.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from gateway.pki.identity import IdentityError, Jurisdiction, Role, SpiffeId

__all__ = [
    "DEFAULT_CA_LIFETIME",
    "DEFAULT_LEAF_LIFETIME",
    "DOCUMENT_SIGNING_EKU",
    "CertificateAuthority",
    "IssuedCertificate",
    "create_root_ca",
    "identity_of",
    "is_signing_certificate",
    "issue_leaf",
    "issue_signing_certificate",
    "renew_certificate",
]

DEFAULT_CA_LIFETIME = dt.timedelta(days=3650)
DEFAULT_LEAF_LIFETIME = dt.timedelta(days=30)
# id-kp-documentSigning (RFC 9336): the Ed25519 signing certificate is for documents, not TLS.
DOCUMENT_SIGNING_EKU = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
# Tolerance for clocks that are slightly behind the issuer's.
_BACKDATE = dt.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class CertificateAuthority:
    """A jurisdiction's root: certificate, private key and the jurisdiction it speaks for."""

    jurisdiction: Jurisdiction
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate with its private key (None when the caller supplied the public key)."""

    certificate: x509.Certificate
    private_key: PrivateKey | None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _serial() -> int:
    # RFC 5280 4.1.2.2: positive, at most 20 octets; 159 random bits leave room for the sign bit.
    return secrets.randbits(159) | 1


def create_root_ca(
    jurisdiction: Jurisdiction,
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = DEFAULT_CA_LIFETIME,
    private_key: ec.EllipticCurvePrivateKey | None = None,
) -> CertificateAuthority:
    """Create a self-signed ECDSA P-256 root for ``jurisdiction``.

    The root is a CA with path length 0 (it issues leaves only) and permits URI and DNS names
    only in its own trust domain (``spiffe://<cc>.customs-exchange/...`` and
    ``*.<cc>.customs-exchange``), so TLS stacks enforce the jurisdiction too.
    """
    now = now or _utcnow()
    key = private_key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, jurisdiction.value),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "customs-exchange"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"{jurisdiction.value} customs-exchange root CA"
            ),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[
                    x509.UniformResourceIdentifier(jurisdiction.trust_domain),
                    x509.DNSName(jurisdiction.trust_domain),
                ],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(jurisdiction, cert, key)


def _leaf_builder(
    ca: CertificateAuthority,
    identity: SpiffeId,
    public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey,
    now: dt.datetime,
    lifetime: dt.timedelta,
    extra_names: Sequence[x509.GeneralName],
) -> x509.CertificateBuilder:
    if identity.jurisdiction is not ca.jurisdiction:
        raise ValueError(
            f"the {ca.jurisdiction} root cannot issue {identity.uri}: "
            f"it speaks only for {ca.jurisdiction.trust_domain}"
        )
    not_after = min(now + lifetime, ca.certificate.not_valid_after_utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, identity.jurisdiction.value),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "customs-exchange"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role.value),
            x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(identity.uri), *extra_names]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
    )


def _key_usage(*, digital_signature: bool, content_commitment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def issue_leaf(
    ca: CertificateAuthority,
    identity: SpiffeId,
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    public_key: ec.EllipticCurvePublicKey | None = None,
    server_only: bool = False,
) -> IssuedCertificate:
    """Issue a TLS certificate (ECDSA P-256) for ``identity``.

    Nodes get server and client authentication (they serve and call their peers) and the DNS
    name :attr:`SpiffeId.dns_name` that clients dial them by; partners and auditors get client
    authentication only. ``server_only`` issues a server-only certificate, for
    tests of the EKU check. A new key is generated unless ``public_key`` is given, in which case
    the result has no private key.
    """
    now = now or _utcnow()
    key = None if public_key is not None else ec.generate_private_key(ec.SECP256R1())
    public = public_key if public_key is not None else key.public_key()  # type: ignore[union-attr]
    all_dns = [identity.dns_name, *dns_names] if identity.role is Role.NODE else list(dns_names)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in all_dns]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if server_only:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    elif identity.role is Role.NODE:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        _leaf_builder(ca, identity, public, now, lifetime, names)
        .add_extension(_key_usage(digital_signature=True, content_commitment=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
    return IssuedCertificate(cert, key)


def issue_signing_certificate(
    ca: CertificateAuthority,
    identity: SpiffeId,
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
    public_key: ed25519.Ed25519PublicKey | None = None,
) -> IssuedCertificate:
    """Issue the Ed25519 signing certificate of a node (documents only, never TLS).

    Raises:
        ValueError: ``identity`` is not a node, or belongs to another jurisdiction.
    """
    if identity.role is not Role.NODE:
        raise ValueError(f"only nodes have signing certificates, not {identity.uri}")
    now = now or _utcnow()
    key = None if public_key is not None else ed25519.Ed25519PrivateKey.generate()
    public = public_key if public_key is not None else key.public_key()  # type: ignore[union-attr]
    cert = (
        _leaf_builder(ca, identity, public, now, lifetime, ())
        .add_extension(_key_usage(digital_signature=True, content_commitment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([DOCUMENT_SIGNING_EKU]), critical=True)
        .sign(ca.private_key, hashes.SHA256())
    )
    return IssuedCertificate(cert, key)


def identity_of(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE identity of a certificate issued by this PKI (its one URI SAN).

    Raises:
        IdentityError: no SAN, not exactly one URI SAN, or a URI that is not a customs-exchange
            SPIFFE id.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError("certificate has no subject alternative name") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise IdentityError(f"certificate must carry exactly one URI SAN, has {len(uris)}")
    return SpiffeId.parse(uris[0])


def is_signing_certificate(cert: x509.Certificate) -> bool:
    """True for a node's document-signing certificate (EKU ``id-kp-documentSigning``)."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return DOCUMENT_SIGNING_EKU in eku


_RECOMPUTED = (x509.SubjectKeyIdentifier.oid, x509.AuthorityKeyIdentifier.oid)


def renew_certificate(
    ca: CertificateAuthority,
    old: x509.Certificate,
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
    public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | None = None,
) -> IssuedCertificate:
    """Issue ``old`` again: same subject, names and usages; new serial and validity period.

    A fresh key of the same type is generated unless ``public_key`` is given (renewal that
    keeps the key; the result then has no private key).

    Raises:
        ValueError: ``old`` was not issued by ``ca``, is not a leaf, or ``public_key`` has a
            different type than the old key.
        IdentityError: ``old`` carries no valid SPIFFE identity.
    """
    try:
        old.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        raise ValueError(
            f"certificate {old.serial_number:x} was not issued by the {ca.jurisdiction} root"
        ) from None
    identity = identity_of(old)
    if identity.jurisdiction is not ca.jurisdiction:
        raise ValueError(f"the {ca.jurisdiction} root cannot renew {identity.uri}")
    bc = old.extensions.get_extension_for_class(x509.BasicConstraints).value
    if bc.ca:
        raise ValueError(f"certificate {old.serial_number:x} is a CA, not a leaf")
    old_public = old.public_key()
    key: PrivateKey | None = None
    if public_key is None:
        if isinstance(old_public, ed25519.Ed25519PublicKey):
            key = ed25519.Ed25519PrivateKey.generate()
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        public_key = key.public_key()
    elif type(public_key) is not type(old_public) and not (
        isinstance(public_key, ec.EllipticCurvePublicKey)
        and isinstance(old_public, ec.EllipticCurvePublicKey)
    ):
        raise ValueError(
            f"the new key is {type(public_key).__name__}; the certificate has "
            f"{type(old_public).__name__}"
        )
    now = now or _utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + lifetime, ca.certificate.not_valid_after_utc))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
    )
    for ext in old.extensions:
        if ext.oid not in _RECOMPUTED:
            builder = builder.add_extension(ext.value, critical=ext.critical)
    return IssuedCertificate(builder.sign(ca.private_key, hashes.SHA256()), key)
