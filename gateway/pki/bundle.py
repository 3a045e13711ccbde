"""The trust bundle: the roots a node trusts, each mapped to the jurisdiction it speaks for.

On disk it is one JSON document that the three administrations exchange::

    {"format": "customs-gateway/trust-bundle/v1",
     "roots": [{"jurisdiction": "CN", "certificate": "-----BEGIN CERTIFICATE-----..."}, ...]}

A jurisdiction may have two roots during a root rollover. The mapping, not the certificate's
names, decides which jurisdiction a chain belongs to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from gateway.errors import InvalidArgumentError
from gateway.pki.identity import Jurisdiction

__all__ = [
    "BUNDLE_FORMAT",
    "RootFinding",
    "TrustBundle",
    "TrustBundleError",
    "check_bundle",
    "fingerprint",
]

BUNDLE_FORMAT = "customs-gateway/trust-bundle/v1"


class TrustBundleError(InvalidArgumentError):
    """A trust bundle that cannot be used: malformed, or a root that is not a CA."""


def fingerprint(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the certificate's DER: how certificates are named everywhere."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class TrustBundle:
    """Roots by jurisdiction (immutable)."""

    roots: tuple[tuple[Jurisdiction, x509.Certificate], ...]

    def __post_init__(self) -> None:
        if not self.roots:
            raise TrustBundleError("a trust bundle needs at least one root")
        for jurisdiction, cert in self.roots:
            try:
                bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                bc = None
            if bc is None or not bc.ca:
                raise TrustBundleError(
                    f"root {fingerprint(cert)[:16]} for {jurisdiction} is not a CA certificate"
                )

    def __iter__(self) -> Iterator[tuple[Jurisdiction, x509.Certificate]]:
        return iter(self.roots)

    def roots_of(self, jurisdiction: Jurisdiction) -> list[x509.Certificate]:
        """The roots that speak for ``jurisdiction``."""
        return [c for j, c in self.roots if j is jurisdiction]

    def jurisdiction_of_root(self, root: x509.Certificate) -> Jurisdiction | None:
        """The jurisdiction a root speaks for, or None if it is not in the bundle."""
        for j, c in self.roots:
            if c == root:
                return j
        return None

    def pem(self, jurisdiction: Jurisdiction | None = None) -> bytes:
        """The roots (of ``jurisdiction`` only, if given) as concatenated PEM, for TLS stacks.

        Raises:
            TrustBundleError: the bundle has no root for ``jurisdiction``.
        """
        certs = [c for j, c in self.roots if jurisdiction is None or j is jurisdiction]
        if not certs:
            raise TrustBundleError(f"the trust bundle has no root for {jurisdiction}")
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def to_json(self) -> str:
        """The on-disk form (stable key order, one root per list item)."""
        doc = {
            "format": BUNDLE_FORMAT,
            "roots": [
                {
                    "jurisdiction": j.value,
                    "fingerprint": fingerprint(c),
                    "certificate": c.public_bytes(serialization.Encoding.PEM).decode(),
                }
                for j, c in self.roots
            ],
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> TrustBundle:
        """Parse the on-disk form; every problem names the root and what is wrong."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise TrustBundleError(f"trust bundle is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
            raise TrustBundleError(f"trust bundle format must be {BUNDLE_FORMAT!r}")
        roots = doc.get("roots")
        if not isinstance(roots, list):
            raise TrustBundleError("trust bundle has no 'roots' list")
        parsed: list[tuple[Jurisdiction, x509.Certificate]] = []
        for i, item in enumerate(roots):
            if not isinstance(item, dict):
                raise TrustBundleError(f"roots[{i}] is not an object")
            jurisdiction = Jurisdiction.parse(str(item.get("jurisdiction", "")))
            try:
                cert = x509.load_pem_x509_certificate(str(item.get("certificate", "")).encode())
            except ValueError as exc:
                raise TrustBundleError(f"roots[{i}].certificate is not a PEM certificate") from exc
            expected = item.get("fingerprint")
            if expected is not None and expected != fingerprint(cert):
                raise TrustBundleError(
                    f"roots[{i}].fingerprint {expected} != certificate's {fingerprint(cert)}"
                )
            parsed.append((jurisdiction, cert))
        return cls(tuple(parsed))


@dataclass(frozen=True)
class RootFinding:
    """What :func:`check_bundle` found about one root (``problems`` empty when it is sound)."""

    jurisdiction: Jurisdiction
    certificate: x509.Certificate
    problems: tuple[str, ...]


def check_bundle(bundle: TrustBundle, now: dt.datetime) -> list[RootFinding]:
    """Check every root of ``bundle`` the way a node relies on it.

    Per root: (1) self-signed; (2) a CA whose country is the jurisdiction it is mapped to;
    (3) name constraints that permit only that jurisdiction's trust domain (URI and DNS);
    (4) within its validity period. A jurisdiction without any root is reported as a finding
    with the problem ``no root`` (and no certificate: the first root found stands in).

    Returns:
        One finding per root, plus one per missing jurisdiction.
    """
    findings: list[RootFinding] = []
    for jurisdiction, cert in bundle:
        problems: list[str] = []
        # (1) self-signed
        try:
            cert.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature):
            problems.append("not self-signed")
        # (2) country
        country = [a.value for a in cert.subject if a.oid == NameOID.COUNTRY_NAME]
        if country != [jurisdiction.value]:
            problems.append(f"subject country {country} is not [{jurisdiction.value!r}]")
        # (3) name constraints confine the root to its trust domain
        try:
            nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
        except x509.ExtensionNotFound:
            problems.append("no name constraints")
        else:
            permitted = {g.value for g in nc.value.permitted_subtrees or []}
            if permitted != {jurisdiction.trust_domain}:
                problems.append(
                    f"name constraints permit {sorted(permitted)}, "
                    f"expected only {jurisdiction.trust_domain!r}"
                )
            if not nc.critical:
                problems.append("name constraints are not critical")
        # (4) validity
        if now < cert.not_valid_before_utc:
            problems.append(f"not valid before {cert.not_valid_before_utc.isoformat()}")
        if now > cert.not_valid_after_utc:
            problems.append(f"expired at {cert.not_valid_after_utc.isoformat()}")
        findings.append(RootFinding(jurisdiction, cert, tuple(problems)))
    present = {j for j, _ in bundle}
    first = bundle.roots[0][1]
    findings += [RootFinding(j, first, ("no root",)) for j in Jurisdiction if j not in present]
    return findings
