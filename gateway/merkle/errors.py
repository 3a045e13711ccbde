"""Errors of the Merkle core: a proof or a tree head that does not check out."""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = ["ConsistencyProofError", "InclusionProofError", "MerkleError", "TreeRangeError"]


class MerkleError(GatewayError):
    """Base of every Merkle failure: whoever sent the proof or the sizes is at fault."""

    status = "INVALID_ARGUMENT"


class InclusionProofError(MerkleError):
    """An inclusion proof (RFC 9162 section 2.1.3.2) failed to verify."""


class ConsistencyProofError(MerkleError):
    """A consistency proof (RFC 9162 section 2.1.4.2) failed to verify."""


class TreeRangeError(MerkleError):
    """A proof or tree head was asked for sizes or indexes that do not fit the tree."""
