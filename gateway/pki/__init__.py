"""Per-jurisdiction PKI: root CAs, leaf and signing certificates, identities (pure)."""

from gateway.pki.authority import (
    DEFAULT_CA_LIFETIME,
    DEFAULT_LEAF_LIFETIME,
    DOCUMENT_SIGNING_EKU,
    CertificateAuthority,
    IssuedCertificate,
    create_root_ca,
    issue_leaf,
    issue_signing_certificate,
)
from gateway.pki.identity import TRUST_DOMAIN_SUFFIX, IdentityError, Jurisdiction, Role, SpiffeId

__all__ = [
    "DEFAULT_CA_LIFETIME",
    "DEFAULT_LEAF_LIFETIME",
    "DOCUMENT_SIGNING_EKU",
    "TRUST_DOMAIN_SUFFIX",
    "CertificateAuthority",
    "IdentityError",
    "IssuedCertificate",
    "Jurisdiction",
    "Role",
    "SpiffeId",
    "create_root_ca",
    "issue_leaf",
    "issue_signing_certificate",
]
