"""Offline audit of a node's ledger: verify a ledger database or an export file.

Imports nothing of the node (its writer, exchange, server): it reads the documented formats and
uses the pure cores (``gateway.merkle``, ``gateway.notes``, ``gateway.envelope``, ``gateway.pki``
and the entry codec ``gateway.entries``); tests/audit/test_imports.py holds it to that.
Verification follows the numbered steps of docs/audit.md under a stated
:class:`WitnessPolicy`. ``reconcile`` checks the three nodes' ledgers against each other.
"""

from gateway.audit._policy import WitnessPolicy
from gateway.audit._reconcile import (
    Mismatch,
    ReconciliationError,
    ReconciliationResult,
    check_reconciliation,
    reconcile,
    reconcile_sources,
)
from gateway.audit._source import (
    DatabaseSource,
    ExportSource,
    LedgerSource,
    StoredEnvelope,
    open_source,
    write_export,
    write_export_records,
)
from gateway.audit._verify import (
    CATEGORIES,
    Failure,
    VerificationResult,
    check_ledger,
    default_policy,
    verify_checkpoints,
    verify_ledger,
    verify_source,
)
from gateway.audit.errors import AuditError, BadCheckpointError, BadEntryError, ExportFormatError

__all__ = [
    "CATEGORIES",
    "AuditError",
    "BadCheckpointError",
    "BadEntryError",
    "DatabaseSource",
    "ExportFormatError",
    "ExportSource",
    "Failure",
    "LedgerSource",
    "Mismatch",
    "ReconciliationError",
    "ReconciliationResult",
    "StoredEnvelope",
    "VerificationResult",
    "WitnessPolicy",
    "check_ledger",
    "check_reconciliation",
    "default_policy",
    "open_source",
    "reconcile",
    "reconcile_sources",
    "verify_checkpoints",
    "verify_ledger",
    "verify_source",
    "write_export",
    "write_export_records",
]
