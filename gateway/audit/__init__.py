"""Offline audit of a node's ledger: verify a ledger database or an export file.

Imports nothing from the server: it reads the documented formats and uses the pure cores
(``gateway.merkle``, ``gateway.notes``, the entry codec of ``gateway.ledger``). Reconciling the
three nodes' ledgers against each other is to come, on top of :class:`LedgerSource`.
"""

from gateway.audit._source import (
    DatabaseSource,
    ExportSource,
    LedgerSource,
    open_source,
    write_export,
)
from gateway.audit._verify import (
    Failure,
    VerificationResult,
    check_ledger,
    verify_ledger,
    verify_source,
)
from gateway.audit.errors import AuditError, BadCheckpointError, BadEntryError, ExportFormatError

__all__ = [
    "AuditError",
    "BadCheckpointError",
    "BadEntryError",
    "DatabaseSource",
    "ExportFormatError",
    "ExportSource",
    "Failure",
    "LedgerSource",
    "VerificationResult",
    "check_ledger",
    "open_source",
    "verify_ledger",
    "verify_source",
    "write_export",
]
