"""Which note keys a node's signing certificate stands for (pure).

A node signs its ledger checkpoints as ``<cc>.customs-exchange/ledger`` (C2SP signed-note,
Ed25519, type 0x01) and cosigns other nodes' checkpoints as ``<cc>.customs-exchange/witness``
(tlog-cosignature/v1, type 0x04), both with the Ed25519 key of its signing certificate. The node,
its witnesses and the offline verifier all derive names and verifier keys here.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.notes import COSIGNATURE_V1, ED25519, Verifier, key_id
from gateway.pki.identity import Jurisdiction

__all__ = [
    "cosigner_name",
    "cosigner_verifier",
    "jurisdiction_of_origin",
    "ledger_origin",
    "log_verifier",
]


def ledger_origin(jurisdiction: Jurisdiction) -> str:
    """The checkpoint origin line and note key name of a node's ledger."""
    return f"{jurisdiction.trust_domain}/ledger"


def cosigner_name(jurisdiction: Jurisdiction) -> str:
    """The key name a node cosigns with as a witness."""
    return f"{jurisdiction.trust_domain}/witness"


def jurisdiction_of_origin(origin: str) -> Jurisdiction | None:
    """The jurisdiction whose ledger origin line is ``origin``, or None."""
    for j in Jurisdiction:
        if ledger_origin(j) == origin:
            return j
    return None


def _raw(public: ed25519.Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def log_verifier(jurisdiction: Jurisdiction, public: ed25519.Ed25519PublicKey) -> Verifier:
    """The note verifier of ``jurisdiction``'s ledger checkpoints."""
    name = ledger_origin(jurisdiction)
    return Verifier(name, key_id(name, ED25519, _raw(public)), ED25519, _raw(public))


def cosigner_verifier(jurisdiction: Jurisdiction, public: ed25519.Ed25519PublicKey) -> Verifier:
    """The cosignature verifier of ``jurisdiction``'s witness."""
    name = cosigner_name(jurisdiction)
    return Verifier(name, key_id(name, COSIGNATURE_V1, _raw(public)), COSIGNATURE_V1, _raw(public))
