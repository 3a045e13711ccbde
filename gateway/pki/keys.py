"""The key policy: which public keys the node accepts in any certificate it meets (pure).

ECDSA on P-256 or P-384, Ed25519, and RSA of at least 2048 bits; nothing else. One function
decides it for every door: TLS callers and peers (:func:`gateway.pki.chain.verify_leaf`),
signing certificates of envelopes, receipts and checkpoints (the same function), the roots that
sign CRLs (:func:`gateway.pki.revocation.verify_crl`) and the node's own certificates at
start-up (ADR 0025).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from gateway.errors import UnauthenticatedError

__all__ = [
    "ALLOWED_KEYS",
    "MIN_RSA_BITS",
    "WeakKeyError",
    "check_certificate_key",
    "check_key",
    "describe_key",
]

MIN_RSA_BITS = 2048
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
ALLOWED_KEYS = "ECDSA P-256 or P-384, Ed25519, or RSA of at least 2048 bits"
"""What :func:`check_key` admits, as the refusal messages say it."""


class WeakKeyError(UnauthenticatedError):
    """A certificate whose key type or size the key policy does not allow."""


def describe_key(key: PublicKeyTypes) -> str:
    """``"RSA-1024"``, ``"ECDSA P-256"``, ``"Ed25519"``...: what a key is, for messages."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {_CURVES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__.removeprefix("_").replace("PublicKey", "")


def check_key(key: PublicKeyTypes, what: str) -> None:
    """Refuse ``key`` unless it is one the policy allows.

    Raises:
        WeakKeyError: ``"<what>: key RSA-1024 is not allowed (only ...)"``.
    """
    allowed = (
        (isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS)
        or (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES)
        or isinstance(key, ed25519.Ed25519PublicKey)
    )
    if not allowed:
        raise WeakKeyError(f"{what}: key {describe_key(key)} is not allowed (only {ALLOWED_KEYS})")


def check_certificate_key(cert: x509.Certificate, what: str) -> None:
    """:func:`check_key` on ``cert``'s public key (an unparseable key is refused too).

    Raises:
        WeakKeyError: the key is not allowed or cannot be read.
    """
    try:
        key = cert.public_key()
    except (ValueError, TypeError) as exc:  # an unsupported algorithm or a malformed key
        raise WeakKeyError(f"{what}: key cannot be read ({exc})") from None
    check_key(key, what)
