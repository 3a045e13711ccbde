"""Errors of the ledger store and its entries."""

from __future__ import annotations

from gateway.entries.errors import EntryFormatError
from gateway.errors import GatewayError, UnavailableError

__all__ = [
    "EntryFormatError",
    "LedgerClosedError",
    "LedgerCorruptError",
    "LedgerError",
    "LedgerOriginError",
    "LedgerRangeError",
]


class LedgerError(GatewayError):
    """Base of every ledger failure."""


class LedgerRangeError(LedgerError):
    """An index or tree size beyond the ledger, or sizes in the wrong order."""

    status = "OUT_OF_RANGE"


class LedgerClosedError(LedgerError, UnavailableError):
    """The ledger is closed or its storage failed; nothing was recorded."""

    status = "UNAVAILABLE"


class LedgerCorruptError(LedgerError):
    """The database does not hold a consistent ledger (missing rows, wrong origin)."""

    status = "DATA_LOSS"


class LedgerOriginError(LedgerCorruptError):
    """The store holds the ledger of another origin: an operator pointed this node at another
    node's file or database (its rows are fine, they are just not this node's)."""
