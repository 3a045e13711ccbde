"""The one check of a leaf certificate against the trust bundle and CRLs (pure).

Used for TLS callers (``usage="client"``) and for the Ed25519 certificates that sign envelopes,
receipts and checkpoints (``usage="signing"``). Steps, each with its own message:

1. exactly one SPIFFE URI SAN naming a known jurisdiction, role and holder;
2. issued by a root in the bundle that speaks for *that* jurisdiction (signature checked);
3. within its validity period at ``at``;
4. carrying the extended key usage for ``usage``;
5. not revoked by a loaded CRL of its issuer;
6. its key allowed by the key policy (:mod:`gateway.pki.keys`: ECDSA P-256/P-384, Ed25519,
   RSA >= 2048).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from gateway.errors import UnauthenticatedError
from gateway.pki.authority import DOCUMENT_SIGNING_EKU
from gateway.pki.bundle import TrustBundle
from gateway.pki.expiry import certificate_serial
from gateway.pki.identity import IdentityError, SpiffeId
from gateway.pki.keys import WeakKeyError, check_certificate_key

__all__ = ["CertificateCheckError", "Usage", "verify_leaf"]

Usage = Literal["client", "server", "signing"]

_EKU: dict[str, tuple[ObjectIdentifier, str]] = {
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH, "TLS client authentication"),
    "server": (ExtendedKeyUsageOID.SERVER_AUTH, "TLS server authentication"),
    "signing": (DOCUMENT_SIGNING_EKU, "document signing"),
}


class CertificateCheckError(UnauthenticatedError):
    """A leaf certificate that does not identify anyone this node trusts."""


def verify_leaf(
    cert: x509.Certificate,
    bundle: TrustBundle,
    crls: Sequence[x509.CertificateRevocationList],
    *,
    at: dt.datetime,
    usage: Usage,
) -> SpiffeId:
    """Return the identity ``cert`` proves at time ``at`` for ``usage``, or raise.

    Raises:
        CertificateCheckError: naming the certificate and the step that failed.
    """
    serial = certificate_serial(cert)  # the one identifier operators see everywhere (ADR 0062)
    who = f"certificate {serial}"
    # (1) exactly one SPIFFE URI SAN
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateCheckError(f"{who} has no subject alternative name") from None
    except ValueError as exc:  # cryptography parses extensions lazily, here
        raise CertificateCheckError(f"{who} has a malformed extension: {exc}") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateCheckError(f"{who} must carry exactly one URI SAN, has {len(uris)}")
    try:
        identity = SpiffeId.parse(uris[0])
    except IdentityError as exc:
        raise CertificateCheckError(f"{who}: {exc}") from exc
    who = f"{identity.uri} (certificate {serial})"
    # (2) issued by a root of the identity's own jurisdiction
    issuer = None
    for root in bundle.roots_of(identity.jurisdiction):
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        issuer = root
        break
    if issuer is None:
        raise CertificateCheckError(
            f"{who} does not chain to a {identity.jurisdiction} root of the trust bundle"
        )
    # (3) validity
    if at < cert.not_valid_before_utc:
        raise CertificateCheckError(
            f"{who} is not valid before {cert.not_valid_before_utc.isoformat()}"
        )
    if at > cert.not_valid_after_utc:
        raise CertificateCheckError(f"{who} expired at {cert.not_valid_after_utc.isoformat()}")
    # (4) extended key usage
    oid, meaning = _EKU[usage]
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateCheckError(f"{who} has no extended key usage") from None
    if oid not in eku:
        raise CertificateCheckError(f"{who} is not allowed for {meaning}")
    # (5) revocation
    for crl in crls:
        if crl.issuer != issuer.subject:
            continue
        revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if revoked is not None:
            try:
                number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            except x509.ExtensionNotFound:
                number = None
            raise CertificateCheckError(
                f"{who} was revoked at {revoked.revocation_date_utc.isoformat()} "
                f"(CRL number {number})"
            )
    # (6) key policy: a weak key from the right CA is still refused
    try:
        check_certificate_key(cert, who)
    except WeakKeyError as exc:
        raise CertificateCheckError(str(exc)) from None
    return identity
