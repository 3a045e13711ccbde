"""Certificate status and expiry warnings (pure): what ``pki list`` shows and what a node reports.

Leaves live 30 days by default, so an operator must see in time what is about to lapse: the
node's own TLS and signing certificates, and the roots of the trust bundle. A certificate is
*expiring soon* when its ``notAfter`` falls within the warning window from now.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

__all__ = [
    "DEFAULT_WARNING_WINDOW",
    "CertificateStatus",
    "ExpiryWarning",
    "certificate_serial",
    "certificate_status",
    "expiry_warnings",
    "serial_hex",
    "status_at",
]

DEFAULT_WARNING_WINDOW = dt.timedelta(days=14)


def serial_hex(serial: int) -> str:
    """The one identifier of a certificate everywhere an operator reads or types one (ADR
    0062): its full serial number in lower-case hex, no colons, no leading zeros."""
    return f"{serial:x}"


def certificate_serial(cert: x509.Certificate) -> str:
    """``cert``'s identifier: :func:`serial_hex` of its serial number."""
    return serial_hex(cert.serial_number)


class CertificateStatus(enum.StrEnum):
    """Where a certificate stands at a given time."""

    VALID = "valid"
    EXPIRING_SOON = "expiring-soon"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    REVOKED = "revoked"


def status_at(
    not_before: dt.datetime,
    not_after: dt.datetime,
    now: dt.datetime,
    *,
    window: dt.timedelta = DEFAULT_WARNING_WINDOW,
    revoked: bool = False,
) -> CertificateStatus:
    """The status at ``now`` of a certificate valid from ``not_before`` to ``not_after``;
    revocation wins over every date-based status."""
    if revoked:
        return CertificateStatus.REVOKED
    if now > not_after:
        return CertificateStatus.EXPIRED
    if now < not_before:
        return CertificateStatus.NOT_YET_VALID
    if not_after - now <= window:
        return CertificateStatus.EXPIRING_SOON
    return CertificateStatus.VALID


def certificate_status(
    cert: x509.Certificate,
    now: dt.datetime,
    *,
    window: dt.timedelta = DEFAULT_WARNING_WINDOW,
    revoked: bool = False,
) -> CertificateStatus:
    """The status of ``cert`` at ``now`` (see :func:`status_at`)."""
    return status_at(
        cert.not_valid_before_utc, cert.not_valid_after_utc, now, window=window, revoked=revoked
    )


@dataclass(frozen=True)
class ExpiryWarning:
    """A certificate that has expired or will within the window."""

    label: str
    subject: str
    serial: int
    not_after: dt.datetime
    remaining: dt.timedelta

    @property
    def expired(self) -> bool:
        """True when the certificate has already expired."""
        return self.remaining < dt.timedelta(0)

    def __str__(self) -> str:
        when = self.not_after.isoformat()
        if self.expired:
            return f"{self.label} ({self.subject}, serial {self.serial:x}) expired at {when}"
        days = self.remaining.total_seconds() / 86400
        return (
            f"{self.label} ({self.subject}, serial {self.serial:x}) expires at {when}, "
            f"in {days:.1f} days"
        )


def expiry_warnings(
    certificates: Iterable[tuple[str, x509.Certificate]],
    now: dt.datetime,
    window: dt.timedelta = DEFAULT_WARNING_WINDOW,
) -> list[ExpiryWarning]:
    """Warnings for every ``(label, certificate)`` that expires within ``window`` of ``now``.

    Expired certificates are included (with negative ``remaining``); the result is ordered by
    ``notAfter``, soonest first.

    Raises:
        ValueError: a negative window.
    """
    if window < dt.timedelta(0):
        raise ValueError(f"warning window must not be negative, got {window}")
    out = [
        ExpiryWarning(
            label,
            cert.subject.rfc4514_string(),
            cert.serial_number,
            cert.not_valid_after_utc,
            cert.not_valid_after_utc - now,
        )
        for label, cert in certificates
        if cert.not_valid_after_utc - now <= window
    ]
    return sorted(out, key=lambda w: w.not_after)
