"""Revocation: reasons, CRLs issued by a jurisdiction root, and checking a CRL before use (pure).

grpcio has no CRL support, so the gateway itself consults the CRLs it has loaded (see
:mod:`gateway.pki.access`). A CRL is only loaded after its signature has been checked against
the root of the bundle that it names as issuer: a CRL nobody can vouch for is refused, so an
attacker who can write to the CRL directory can neither revoke nor un-revoke anyone.

RFC 5280 section 5: v2 CRLs with the CRL number and authority key identifier extensions; the
reason code extension (5.3.1) is omitted for ``unspecified``, as the RFC recommends.

Revocation must not be undone (ADR 0024). :func:`admit_crl` decides whether a verified CRL may
replace what is in force for its file, against the highest CRL number ever seen per issuing root
(keyed by the root's key identifier, :class:`IssuerState`), which the node keeps in its store so
that a restart does not forget it: an older CRL, or a CRL of another root copied over a file, is
refused with a :class:`CrlRefused` naming why.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.errors import InvalidArgumentError
from gateway.pki.authority import CertificateAuthority
from gateway.pki.bundle import TrustBundle
from gateway.pki.identity import Jurisdiction
from gateway.pki.keys import WeakKeyError, check_certificate_key

__all__ = [
    "DEFAULT_CRL_LIFETIME",
    "CrlError",
    "CrlRefused",
    "IssuerState",
    "MemoryRevocationStore",
    "RefusalReason",
    "RevocationReason",
    "RevocationStore",
    "RevokedEntry",
    "VerifiedCrl",
    "admit_crl",
    "build_crl",
    "key_id",
    "load_crl",
    "revoked_entries",
    "verify_crl",
]

DEFAULT_CRL_LIFETIME = dt.timedelta(days=7)


class CrlError(InvalidArgumentError):
    """A CRL that cannot be used: malformed, unsigned by a bundle root, or from the future."""


RefusalReason = Literal["missing", "unreadable", "unsigned", "no-number", "wrong-issuer", "older"]
"""Why a configured CRL file was refused (the label of the node's refusal counter)."""


class CrlRefused(CrlError):
    """A configured CRL file the node refuses, with the reason as a metric label."""

    def __init__(self, message: str, reason: RefusalReason) -> None:
        super().__init__(message)
        self.reason: RefusalReason = reason


def key_id(root: x509.Certificate) -> str:
    """The hex key identifier of a CA: its subject key identifier, or (absent that) the
    RFC 5280 4.2.1.2 method-1 SHA-1 of its public key. CRLs name it as authority key id."""
    try:
        return root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(root.public_key()).digest.hex()


@dataclass(frozen=True)
class IssuerState:
    """What the node remembers of one issuing root: the highest CRL number it has put in force,
    and the configured file that CRL came from (kept in the node's store, ADR 0024)."""

    key_id: str
    jurisdiction: Jurisdiction
    number: int
    path: str


class RevocationReason(enum.StrEnum):
    """RFC 5280 5.3.1 reason codes an operator may give (``certificateHold`` is not offered:
    short-lived certificates are revoked for good or not at all)."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "key-compromise"
    CA_COMPROMISE = "ca-compromise"
    AFFILIATION_CHANGED = "affiliation-changed"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessation-of-operation"
    PRIVILEGE_WITHDRAWN = "privilege-withdrawn"

    @property
    def flag(self) -> x509.ReasonFlags:
        """The matching :class:`cryptography.x509.ReasonFlags`."""
        return _FLAGS[self]

    @classmethod
    def parse(cls, text: str) -> RevocationReason:
        """Parse a reason name such as ``key-compromise``; unknown names raise."""
        try:
            return cls(text.strip().lower().replace("_", "-"))
        except ValueError:
            known = ", ".join(r.value for r in cls)
            raise InvalidArgumentError(
                f"unknown revocation reason {text!r} (known: {known})"
            ) from None


_FLAGS = {
    RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
}


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate: serial number, when, and why."""

    serial: int
    revoked_at: dt.datetime
    reason: RevocationReason


class RevocationStore(Protocol):
    """Where a node keeps its :class:`IssuerState` rows across restarts (ADR 0024)."""

    def issuers(self) -> dict[str, IssuerState]:
        """Every issuer's state, by key id."""

    def record(self, states: Sequence[IssuerState]) -> None:
        """Store ``states`` durably before they are put in force; a number never goes down."""


class MemoryRevocationStore:
    """A :class:`RevocationStore` that forgets at exit (tools and tests without a node store)."""

    def __init__(self) -> None:
        self._rows: dict[str, IssuerState] = {}

    def issuers(self) -> dict[str, IssuerState]:
        """Every issuer's state, by key id."""
        return dict(self._rows)

    def record(self, states: Sequence[IssuerState]) -> None:
        """Keep ``states`` (the higher number wins)."""
        for state in states:
            old = self._rows.get(state.key_id)
            number = max(state.number, old.number) if old is not None else state.number
            self._rows[state.key_id] = IssuerState(
                state.key_id, state.jurisdiction, number, state.path
            )


def build_crl(
    ca: CertificateAuthority,
    revoked: Iterable[RevokedEntry],
    *,
    number: int,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = DEFAULT_CRL_LIFETIME,
) -> x509.CertificateRevocationList:
    """Sign a v2 CRL listing ``revoked``, valid from ``now`` until ``now + lifetime``.

    Args:
        ca: the root that issued the revoked certificates.
        revoked: the entries; each serial appears once.
        number: the CRL number (RFC 5280 5.2.3), strictly increasing per CA.
        now: this update time (default: the current time).
        lifetime: time to the next update; nodes warn when a loaded CRL passes it.

    Raises:
        CrlError: a negative number, a non-positive lifetime or a serial listed twice.
    """
    now = now or dt.datetime.now(dt.UTC)
    if number < 0:
        raise CrlError(f"CRL number must be >= 0, got {number}")
    if lifetime <= dt.timedelta(0):
        raise CrlError(f"CRL lifetime must be positive, got {lifetime}")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + lifetime)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
    )
    seen: set[int] = set()
    for entry in sorted(revoked, key=lambda e: e.serial):
        if entry.serial in seen:
            raise CrlError(f"serial {entry.serial:x} is listed twice")
        seen.add(entry.serial)
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
        )
        if entry.reason is not RevocationReason.UNSPECIFIED:
            item = item.add_extension(x509.CRLReason(entry.reason.flag), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    return builder.sign(ca.private_key, hashes.SHA256())


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """Parse a CRL in PEM or DER form.

    Raises:
        CrlError: the bytes are neither.
    """
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlError(f"not a PEM or DER CRL ({len(data)} bytes): {exc}") from exc


@dataclass(frozen=True)
class VerifiedCrl:
    """A CRL whose signature a bundle root has vouched for, with that root's jurisdiction."""

    jurisdiction: Jurisdiction
    issuer: x509.Certificate
    crl: x509.CertificateRevocationList

    @property
    def number(self) -> int | None:
        """The CRL number, if the CRL has one."""
        try:
            return self.crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            return None

    def is_stale(self, now: dt.datetime) -> bool:
        """True once ``now`` is past the CRL's next update (it should have been replaced)."""
        next_update = self.crl.next_update_utc
        return next_update is not None and now > next_update

    def revoked_serials(self) -> frozenset[int]:
        """Serial numbers listed by this CRL."""
        return frozenset(r.serial_number for r in self.crl)


def verify_crl(
    crl: x509.CertificateRevocationList, bundle: TrustBundle, *, now: dt.datetime | None = None
) -> VerifiedCrl:
    """Check that ``crl`` is signed by the bundle root it names and is not from the future.

    Steps (RFC 5280 6.3.3): (1) find the bundle roots whose subject is the CRL issuer; (2) one
    of them must verify the CRL's signature, and its key must be allowed by the key policy;
    (3) the CRL's authority key identifier, if present, is that root's key id; (4)
    ``thisUpdate`` is not in the future. A CRL past its ``nextUpdate`` is still returned: its
    revocations remain true, and the caller reports it as stale (see
    :meth:`VerifiedCrl.is_stale`).

    Raises:
        CrlError: naming the issuer and which step failed.
    """
    now = now or dt.datetime.now(dt.UTC)
    issuer_name = crl.issuer.rfc4514_string()
    # (1) candidate roots by name
    candidates = [(j, c) for j, c in bundle if c.subject == crl.issuer]
    if not candidates:
        raise CrlError(f"CRL issuer {issuer_name!r} is not a root of the trust bundle")
    # (2) signature
    signer = next(((j, c) for j, c in candidates if _signed_by(crl, c)), None)
    if signer is None:
        raise CrlError(f"CRL of {issuer_name!r} is not signed by that root of the trust bundle")
    jurisdiction, root = signer
    try:
        check_certificate_key(root, f"CRL issuer {issuer_name!r}")
    except WeakKeyError as exc:
        raise CrlError(str(exc)) from None
    # (3) the authority key identifier names that root
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        aki = None
    named = aki.key_identifier if aki is not None else None
    if named is not None and named.hex() != key_id(root):
        raise CrlError(
            f"CRL of {issuer_name!r} names authority key id {named.hex()}, "
            f"but the root that signed it has {key_id(root)}"
        )
    # (4) not from the future (5 minutes of clock skew allowed)
    if crl.last_update_utc > now + dt.timedelta(minutes=5):
        raise CrlError(
            f"CRL of {issuer_name!r} has thisUpdate {crl.last_update_utc.isoformat()}, "
            f"after now {now.isoformat()}"
        )
    return VerifiedCrl(jurisdiction, root, crl)


def _signed_by(crl: x509.CertificateRevocationList, root: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a key type that cannot sign CRLs
        return False


def admit_crl(
    path: str,
    verified: VerifiedCrl,
    *,
    in_force: VerifiedCrl | None,
    known: Mapping[str, IssuerState],
    roots: Iterable[x509.Certificate],
) -> IssuerState:
    """Decide whether ``verified``, just read from the configured file ``path``, may be put in
    force there (ADR 0024). Steps:

    1. the CRL carries a CRL number (RFC 5280 5.2.3: conforming CRL issuers include it);
    2. it is from the root the file is for: the issuer of the CRL in force for ``path``, or else
       the one the store last saw at ``path`` (while that root is still in ``roots``, the
       bundle); a file seen for the first time is bound to the issuer it holds;
    3. its number is not below the highest number ever seen from that root (``known``, by key
       id), nor below the CRL in force for ``path``.

    Returns:
        The issuer's state with this CRL put in force (the number never goes down).

    Raises:
        CrlRefused: reason ``no-number``, ``wrong-issuer`` or ``older``, naming the file,
            both issuers or both numbers.
    """
    issuer = key_id(verified.issuer)
    name = f"{verified.jurisdiction} root (key id {issuer[:16]})"
    # (1) a CRL number to order it by
    number = verified.number
    if number is None:
        raise CrlRefused(f"CRL file {path}: the CRL of {name} has no CRL number", "no-number")
    # (2) the issuer this file is for
    live = {key_id(r) for r in roots}
    expected: tuple[str, str] | None = None
    if in_force is not None:
        expected = (key_id(in_force.issuer), f"{in_force.jurisdiction}")
    else:
        for state in known.values():
            if state.path == path and state.key_id in live:
                expected = (state.key_id, f"{state.jurisdiction}")
    if expected is not None and expected[0] != issuer:
        raise CrlRefused(
            f"CRL file {path}: holds a CRL of {name}, but the file is for the {expected[1]} "
            f"root (key id {expected[0][:16]}); a CRL of another CA would un-revoke its "
            "certificates",
            "wrong-issuer",
        )
    # (3) never older than what was seen
    highest = known.get(issuer)
    floor = max(
        highest.number if highest is not None else -1,
        in_force.number if in_force is not None and in_force.number is not None else -1,
    )
    if number < floor:
        raise CrlRefused(
            f"CRL file {path}: CRL number {number} of {name} is older than {floor}, already "
            "seen; an old CRL would un-revoke",
            "older",
        )
    return IssuerState(issuer, verified.jurisdiction, number, path)


def revoked_entries(crl: x509.CertificateRevocationList) -> Sequence[RevokedEntry]:
    """The entries of ``crl`` as :class:`RevokedEntry` (reason ``unspecified`` when absent)."""
    by_flag = {flag: reason for reason, flag in _FLAGS.items()}
    out = []
    for r in crl:
        try:
            flag = r.extensions.get_extension_for_class(x509.CRLReason).value.reason
            reason = by_flag.get(flag, RevocationReason.UNSPECIFIED)
        except x509.ExtensionNotFound:
            reason = RevocationReason.UNSPECIFIED
        out.append(RevokedEntry(r.serial_number, r.revocation_date_utc, reason))
    return out
