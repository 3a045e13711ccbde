"""Errors of the offline audit: a ledger or export that does not verify, or cannot be read."""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = ["AuditError", "BadCheckpointError", "BadEntryError", "ExportFormatError"]


class AuditError(GatewayError):
    """Base of every audit failure: the audited ledger is at fault."""

    status = "FAILED_PRECONDITION"


class BadEntryError(AuditError):
    """An entry is missing, malformed, out of place or altered; ``index`` names it."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class BadCheckpointError(AuditError):
    """A checkpoint is unsigned, forged, inconsistent or beyond the log; ``size`` names it."""

    def __init__(self, message: str, size: int | None) -> None:
        super().__init__(message)
        self.size = size


class ExportFormatError(AuditError):
    """The file is neither a ledger database nor a well-formed export."""
