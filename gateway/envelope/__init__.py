"""Signed envelopes and receipts: seal, open, digest (pure; no gRPC server, no SQLite)."""

from gateway.envelope.errors import (
    BadSignatureError,
    ClockSkewError,
    MalformedEnvelopeError,
    NotReleasableError,
    ReplayError,
    UntrustedSignerError,
)
from gateway.envelope.signing import (
    ENVELOPE_CONTEXT,
    PAYLOAD_TYPES,
    RECEIPT_CONTEXT,
    OpenedEnvelope,
    OpenedReceipt,
    Signer,
    envelope_digest,
    jurisdiction_of,
    open_envelope,
    open_receipt,
    pae,
    proto_jurisdiction,
    seal,
    sign_receipt,
)

__all__ = [
    "ENVELOPE_CONTEXT",
    "PAYLOAD_TYPES",
    "RECEIPT_CONTEXT",
    "BadSignatureError",
    "ClockSkewError",
    "MalformedEnvelopeError",
    "NotReleasableError",
    "OpenedEnvelope",
    "OpenedReceipt",
    "ReplayError",
    "Signer",
    "UntrustedSignerError",
    "envelope_digest",
    "jurisdiction_of",
    "open_envelope",
    "open_receipt",
    "pae",
    "proto_jurisdiction",
    "seal",
    "sign_receipt",
]
