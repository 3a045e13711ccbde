"""Note verifier keys from signing certificates chained to the trust bundle (offline).

A node signs checkpoints as ``<cc>.customs-exchange/ledger`` (Ed25519, type 0x01) and
cosignatures as ``<cc>.customs-exchange/witness`` (tlog-cosignature/v1, type 0x04), both with
the Ed25519 key of its signing certificate (docs/envelopes.md, DESIGN section 1). Given the
certificates an export carries and the bundle, this derives those keys without any hand-given
vkey. The names and keys come from :mod:`gateway.pki.note_keys`, shared with the node.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.notes import Verifier
from gateway.pki.bundle import TrustBundle, fingerprint
from gateway.pki.chain import CertificateCheckError, verify_leaf
from gateway.pki.identity import Jurisdiction, Role
from gateway.pki.note_keys import cosigner_verifier, log_verifier


@dataclass(frozen=True)
class CertifiedKey:
    """A note verifier derived from a signing certificate that chains to the bundle."""

    verifier: Verifier
    jurisdiction: Jurisdiction
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str


@dataclass
class CertifiedKeys:
    """Log keys (of the audited origin) and witness keys (of the other jurisdictions)."""

    log: list[CertifiedKey]
    witnesses: list[CertifiedKey]
    problems: list[str]

    def find(self, verifier: Verifier) -> CertifiedKey | None:
        """The certified key behind ``verifier``."""
        return next((k for k in self.log + self.witnesses if k.verifier == verifier), None)


def certified_keys(
    certificates: list[bytes], bundle: TrustBundle, origin: Jurisdiction
) -> CertifiedKeys:
    """Check each DER certificate and derive the note keys it certifies.

    A certificate counts when it parses, chains to the bundle root of its own jurisdiction with
    a node identity and the document-signing usage (checked at its own ``notBefore``: the
    export proves it was issued; whether it was valid when it signed is checked against each
    cosignature's time), and holds an Ed25519 key. Others are listed in ``problems``.
    """
    keys = CertifiedKeys([], [], [])
    for der in certificates:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            keys.problems.append(f"a certificate of {len(der)} bytes is not valid DER")
            continue
        fp = fingerprint(cert)
        try:
            identity = verify_leaf(cert, bundle, (), at=cert.not_valid_before_utc, usage="signing")
        except CertificateCheckError as exc:
            keys.problems.append(f"certificate {fp[:16]}: {exc}")
            continue
        public = cert.public_key()
        if identity.role is not Role.NODE or not isinstance(public, ed25519.Ed25519PublicKey):
            keys.problems.append(f"certificate {fp[:16]} of {identity.uri}: not a node Ed25519 key")
            continue
        j = identity.jurisdiction
        window = (cert.not_valid_before_utc, cert.not_valid_after_utc)
        if j is origin:
            keys.log.append(CertifiedKey(log_verifier(j, public), j, *window, fp))
        else:
            keys.witnesses.append(CertifiedKey(cosigner_verifier(j, public), j, *window, fp))
    return keys
