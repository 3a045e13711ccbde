"""The auditor's report of one or more ledgers: build it, then write it as HTML or JSON.

``build_report(paths, bundle)`` verifies every ledger (all steps of docs/audit.md) and
reconciles them; ``render_html`` turns the result into one self-contained page (no script, no
network, inline SVG), ``report_json`` into the same content as JSON-ready data.
"""

from gateway.audit._report import (
    STEPS,
    AuditReport,
    CertificateRow,
    CheckpointRow,
    Erasure,
    FailureRow,
    LedgerReport,
    MatrixCell,
    Signature,
    StepRow,
    build_report,
    report_json,
)
from gateway.audit._report_html import render_html

__all__ = [
    "STEPS",
    "AuditReport",
    "CertificateRow",
    "CheckpointRow",
    "Erasure",
    "FailureRow",
    "LedgerReport",
    "MatrixCell",
    "Signature",
    "StepRow",
    "build_report",
    "render_html",
    "report_json",
]
