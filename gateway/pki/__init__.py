"""Per-jurisdiction PKI (pure decisions, plus the CA directory on disk).

- :mod:`~gateway.pki.identity`: jurisdictions, roles, SPIFFE ids;
- :mod:`~gateway.pki.authority`: roots, leaves, signing certificates, renewal;
- :mod:`~gateway.pki.revocation`: revocation reasons, CRLs, CRL verification, which CRL may
  replace which (per issuing CA);
- :mod:`~gateway.pki.keys`: the key policy (ECDSA P-256/P-384, Ed25519, RSA >= 2048);
- :mod:`~gateway.pki.bundle`: the trust bundle of the three roots;
- :mod:`~gateway.pki.access`: per-call authentication of a peer certificate;
- :mod:`~gateway.pki.policy`: the authorization table, deny by default;
- :mod:`~gateway.pki.expiry`: certificate status and expiry warnings;
- :mod:`~gateway.pki.cadir`: a CA directory and its inventory of issued certificates.
"""

from gateway.pki.access import Authenticator, Principal
from gateway.pki.authority import (
    DEFAULT_CA_LIFETIME,
    DEFAULT_LEAF_LIFETIME,
    DOCUMENT_SIGNING_EKU,
    CertificateAuthority,
    IssuedCertificate,
    create_root_ca,
    identity_of,
    issue_leaf,
    issue_signing_certificate,
    renew_certificate,
)
from gateway.pki.bundle import TrustBundle, TrustBundleError, fingerprint
from gateway.pki.cadir import CaDirectory, IndexEntry
from gateway.pki.expiry import CertificateStatus, ExpiryWarning, expiry_warnings
from gateway.pki.identity import TRUST_DOMAIN_SUFFIX, IdentityError, Jurisdiction, Role, SpiffeId
from gateway.pki.keys import WeakKeyError, check_key
from gateway.pki.policy import RULES, Relation, Rule, authorize
from gateway.pki.revocation import (
    CrlError,
    CrlRefused,
    RevocationReason,
    admit_crl,
    build_crl,
    load_crl,
    verify_crl,
)

__all__ = [
    "DEFAULT_CA_LIFETIME",
    "DEFAULT_LEAF_LIFETIME",
    "DOCUMENT_SIGNING_EKU",
    "RULES",
    "TRUST_DOMAIN_SUFFIX",
    "Authenticator",
    "CaDirectory",
    "CertificateAuthority",
    "CertificateStatus",
    "CrlError",
    "CrlRefused",
    "ExpiryWarning",
    "IdentityError",
    "IndexEntry",
    "IssuedCertificate",
    "Jurisdiction",
    "Principal",
    "Relation",
    "RevocationReason",
    "Role",
    "Rule",
    "SpiffeId",
    "TrustBundle",
    "TrustBundleError",
    "WeakKeyError",
    "admit_crl",
    "authorize",
    "build_crl",
    "check_key",
    "create_root_ca",
    "expiry_warnings",
    "fingerprint",
    "identity_of",
    "issue_leaf",
    "issue_signing_certificate",
    "load_crl",
    "renew_certificate",
    "verify_crl",
]
