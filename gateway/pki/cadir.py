"""A jurisdiction CA on disk: its key, its certificate, and the inventory of what it issued.

Layout of a CA directory (see ``certs/README.md``)::

    <ca-dir>/                  mode 0700
      ca.key                   root private key, PKCS#8 PEM, mode 0600, encrypted if a
                               passphrase was given -- SECRET, never leaves the CA host
      ca.pem                   root certificate -- PUBLIC, goes into the trust bundle
      index.json               inventory: every certificate issued, revocations, CRL number
      issued/<serial>.pem      a copy of every certificate issued (serial in lower-case hex)

Private keys of the certificates a CA issues are written next to the certificate the operator
asked for (``--out-dir``), never into the CA directory: the CA must be able to prove what it
signed, not to impersonate its holders.

The index is rewritten whole through a temporary file and ``os.replace``, so a crash leaves
either the old or the new index, never half of one. One operator at a time runs commands
against a CA directory (it is an offline root); concurrent writers are not supported.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from gateway.pki.authority import (
    DEFAULT_CA_LIFETIME,
    DEFAULT_LEAF_LIFETIME,
    CertificateAuthority,
    IssuedCertificate,
    create_root_ca,
    identity_of,
    is_signing_certificate,
    issue_leaf,
    issue_signing_certificate,
    renew_certificate,
)
from gateway.pki.bundle import fingerprint
from gateway.pki.expiry import DEFAULT_WARNING_WINDOW, CertificateStatus, status_at
from gateway.pki.identity import Jurisdiction, SpiffeId
from gateway.pki.pem import (
    certificate_pem,
    load_certificate,
    load_private_key,
    write_private_key,
    write_public_file,
)
from gateway.pki.revocation import (
    DEFAULT_CRL_LIFETIME,
    RevocationReason,
    RevokedEntry,
    build_crl,
)

__all__ = ["INDEX_FORMAT", "CaDirectory", "IndexEntry", "parse_serial"]

INDEX_FORMAT = "customs-gateway/ca-index/v1"
CA_KEY = "ca.key"
CA_CERT = "ca.pem"
INDEX = "index.json"
ISSUED = "issued"


def parse_serial(text: str) -> int:
    """Parse a serial number as printed by ``pki list`` (hex, optional ``0x``, ``:`` allowed).

    Raises:
        InvalidArgumentError: not a positive hexadecimal number.
    """
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise InvalidArgumentError(f"serial {text!r} is not a hexadecimal number") from None
    if value <= 0:
        raise InvalidArgumentError(f"serial {text!r} must be positive")
    return value


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


@dataclass(frozen=True)
class IndexEntry:
    """One issued certificate as the CA remembers it."""

    serial: int
    identity: str
    kind: str  # "tls" or "signing"
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    renewed_from: int | None = None
    revoked_at: dt.datetime | None = None
    reason: RevocationReason | None = None

    @property
    def serial_hex(self) -> str:
        """The serial as lower-case hex, as used in file names and on the command line."""
        return f"{self.serial:x}"

    @property
    def revoked(self) -> bool:
        """True once the CA has revoked this certificate."""
        return self.revoked_at is not None

    def status(
        self, now: dt.datetime, window: dt.timedelta = DEFAULT_WARNING_WINDOW
    ) -> CertificateStatus:
        """Valid, expiring soon, expired, not yet valid, or revoked at ``now``."""
        return status_at(self.not_before, self.not_after, now, window=window, revoked=self.revoked)

    def to_json(self) -> dict[str, Any]:
        """The index form (also what ``pki list --json`` prints, plus status)."""
        return {
            "serial": self.serial_hex,
            "identity": self.identity,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "not_before": _time(self.not_before),
            "not_after": _time(self.not_after),
            "renewed_from": None if self.renewed_from is None else f"{self.renewed_from:x}",
            "revoked_at": None if self.revoked_at is None else _time(self.revoked_at),
            "reason": None if self.reason is None else self.reason.value,
        }

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> IndexEntry:
        """Parse an index item (raises KeyError/ValueError on a damaged index)."""
        return cls(
            serial=int(item["serial"], 16),
            identity=str(item["identity"]),
            kind=str(item["kind"]),
            fingerprint=str(item["fingerprint"]),
            not_before=dt.datetime.fromisoformat(item["not_before"]),
            not_after=dt.datetime.fromisoformat(item["not_after"]),
            renewed_from=None
            if item.get("renewed_from") is None
            else int(item["renewed_from"], 16),
            revoked_at=None
            if item.get("revoked_at") is None
            else dt.datetime.fromisoformat(item["revoked_at"]),
            reason=None if item.get("reason") is None else RevocationReason(item["reason"]),
        )

    @classmethod
    def of(cls, cert: x509.Certificate, renewed_from: int | None = None) -> IndexEntry:
        """The entry for a freshly issued ``cert``."""
        return cls(
            serial=cert.serial_number,
            identity=identity_of(cert).uri,
            kind="signing" if is_signing_certificate(cert) else "tls",
            fingerprint=fingerprint(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            renewed_from=renewed_from,
        )


class CaDirectory:
    """A CA directory: open with :meth:`open`, create with :meth:`init`."""

    def __init__(self, path: Path, jurisdiction: Jurisdiction, certificate: x509.Certificate):
        self.path = path
        self.jurisdiction = jurisdiction
        self.certificate = certificate

    # -- creation and opening ---------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: Path,
        jurisdiction: Jurisdiction,
        *,
        passphrase: bytes | None = None,
        force: bool = False,
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = DEFAULT_CA_LIFETIME,
    ) -> CaDirectory:
        """Create a new root CA for ``jurisdiction`` in ``path``.

        Raises:
            FailedPreconditionError: ``path`` already holds a CA (key, certificate or index)
                and ``force`` is false. With ``force`` the old CA, its index and its issued
                copies are replaced.
        """
        existing = [n for n in (CA_KEY, CA_CERT, INDEX) if (path / n).exists()]
        if existing and not force:
            raise FailedPreconditionError(
                f"{path} already holds a CA ({', '.join(existing)}); refusing to overwrite it "
                "(use --force to replace it and forget everything it issued)"
            )
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        if force:
            shutil.rmtree(path / ISSUED, ignore_errors=True)
        ca = create_root_ca(jurisdiction, now=now, lifetime=lifetime)
        write_private_key(path / CA_KEY, ca.private_key, passphrase=passphrase, overwrite=force)
        write_public_file(path / CA_CERT, certificate_pem(ca.certificate))
        (path / ISSUED).mkdir(exist_ok=True)
        directory = cls(path, jurisdiction, ca.certificate)
        directory._save({"jurisdiction": jurisdiction.value, "crl_number": 0, "certificates": []})
        return directory

    @classmethod
    def open(cls, path: Path) -> CaDirectory:
        """Open an existing CA directory.

        Raises:
            NotFoundError: ``path`` holds no CA (no index or no certificate).
            FailedPreconditionError: the index is damaged or disagrees with the certificate.
        """
        if not (path / INDEX).is_file() or not (path / CA_CERT).is_file():
            raise NotFoundError(
                f"{path} is not a CA directory (no {INDEX} or {CA_CERT}); create one with "
                "'customs-gateway pki init-ca'"
            )
        doc = cls._read_index(path)
        cert = load_certificate(path / CA_CERT)
        try:
            jurisdiction = Jurisdiction.parse(str(doc["jurisdiction"]))
        except (KeyError, InvalidArgumentError) as exc:
            raise FailedPreconditionError(f"{path / INDEX}: bad jurisdiction: {exc}") from None
        country = [a.value for a in cert.subject if a.oid == x509.NameOID.COUNTRY_NAME]
        if country != [jurisdiction.value]:
            raise FailedPreconditionError(
                f"{path / CA_CERT} is a root for {country}, the index says {jurisdiction}"
            )
        return cls(path, jurisdiction, cert)

    def authority(self, passphrase: bytes | None = None) -> CertificateAuthority:
        """Unlock the CA key.

        Raises:
            InvalidArgumentError: the key is encrypted and the passphrase is missing or wrong.
            FailedPreconditionError: the key does not match the CA certificate.
        """
        key = load_private_key(self.path / CA_KEY, passphrase)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
            self.certificate.public_key()
        ):
            raise FailedPreconditionError(
                f"{self.path / CA_KEY} does not belong to the certificate {self.path / CA_CERT}"
            )
        return CertificateAuthority(self.jurisdiction, self.certificate, key)

    # -- the inventory ----------------------------------------------------------------------

    @staticmethod
    def _read_index(path: Path) -> dict[str, Any]:
        try:
            doc = json.loads((path / INDEX).read_text())
        except (OSError, ValueError) as exc:
            raise FailedPreconditionError(f"{path / INDEX} is not readable JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
            raise FailedPreconditionError(f"{path / INDEX}: format must be {INDEX_FORMAT!r}")
        return doc

    def _load(self) -> tuple[dict[str, Any], list[IndexEntry]]:
        doc = self._read_index(self.path)
        try:
            entries = [IndexEntry.from_json(item) for item in doc["certificates"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise FailedPreconditionError(f"{self.path / INDEX} is damaged: {exc!r}") from exc
        return doc, entries

    def _save(self, doc: dict[str, Any], entries: list[IndexEntry] | None = None) -> None:
        doc = dict(doc)
        doc["format"] = INDEX_FORMAT
        if entries is not None:
            doc["certificates"] = [e.to_json() for e in entries]
        ordered = {"format": doc.pop("format"), **doc}
        tmp = self.path / (INDEX + ".tmp")
        tmp.write_text(json.dumps(ordered, indent=2) + "\n")
        os.replace(tmp, self.path / INDEX)

    def entries(self) -> list[IndexEntry]:
        """Everything this CA issued, oldest first."""
        return self._load()[1]

    def find(self, serial: int) -> IndexEntry:
        """The entry with ``serial``.

        Raises:
            NotFoundError: this CA never issued that serial.
        """
        for entry in self.entries():
            if entry.serial == serial:
                return entry
        raise NotFoundError(f"serial {serial:x} was not issued by the CA in {self.path}")

    def issued_certificate(self, entry: IndexEntry) -> x509.Certificate:
        """The stored copy of an issued certificate."""
        return load_certificate(self.path / ISSUED / f"{entry.serial_hex}.pem")

    @property
    def crl_number(self) -> int:
        """The number of the last CRL produced (0 before the first)."""
        return int(self._load()[0].get("crl_number", 0))

    def _record(self, cert: x509.Certificate, renewed_from: int | None = None) -> IndexEntry:
        doc, entries = self._load()
        entry = IndexEntry.of(cert, renewed_from)
        write_public_file(
            self.path / ISSUED / f"{entry.serial_hex}.pem", certificate_pem(cert), overwrite=False
        )
        self._save(doc, [*entries, entry])
        return entry

    # -- operations -------------------------------------------------------------------------

    def issue(
        self,
        ca: CertificateAuthority,
        identity: SpiffeId,
        *,
        signing: bool = False,
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
    ) -> IssuedCertificate:
        """Issue a TLS certificate (or, with ``signing``, a node's Ed25519 signing certificate)
        and record it in the index."""
        if signing:
            issued = issue_signing_certificate(ca, identity, now=now, lifetime=lifetime)
        else:
            issued = issue_leaf(
                ca,
                identity,
                now=now,
                lifetime=lifetime,
                dns_names=dns_names,
                ip_addresses=ip_addresses,
            )
        self._record(issued.certificate)
        return issued

    def renew(
        self,
        ca: CertificateAuthority,
        serial: int,
        *,
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
        public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | None = None,
    ) -> IssuedCertificate:
        """Re-issue certificate ``serial`` with a new serial and validity (see
        :func:`renew_certificate`) and record it as renewed from the old one.

        The old certificate stays valid until it expires or is revoked (revoke it with reason
        ``superseded`` once the holder has switched).

        Raises:
            NotFoundError: unknown serial.
            FailedPreconditionError: the certificate was revoked.
        """
        entry = self.find(serial)
        if entry.revoked:
            raise FailedPreconditionError(
                f"serial {entry.serial_hex} ({entry.identity}) was revoked; issue a new "
                "certificate instead of renewing it"
            )
        old = self.issued_certificate(entry)
        issued = renew_certificate(ca, old, now=now, lifetime=lifetime, public_key=public_key)
        self._record(issued.certificate, renewed_from=serial)
        return issued

    def revoke(
        self, serial: int, reason: RevocationReason, *, now: dt.datetime | None = None
    ) -> IndexEntry:
        """Mark ``serial`` revoked; it appears in every CRL produced from now on.

        Raises:
            NotFoundError: unknown serial.
            FailedPreconditionError: already revoked.
        """
        doc, entries = self._load()
        for i, entry in enumerate(entries):
            if entry.serial != serial:
                continue
            if entry.revoked:
                raise FailedPreconditionError(
                    f"serial {entry.serial_hex} was already revoked at "
                    f"{_time(entry.revoked_at or entry.not_before)} ({entry.reason})"
                )
            entries[i] = replace(
                entry,
                revoked_at=(now or dt.datetime.now(dt.UTC)).replace(microsecond=0),
                reason=reason,
            )
            self._save(doc, entries)
            return entries[i]
        raise NotFoundError(f"serial {serial:x} was not issued by the CA in {self.path}")

    def crl(
        self,
        ca: CertificateAuthority,
        *,
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = DEFAULT_CRL_LIFETIME,
    ) -> x509.CertificateRevocationList:
        """Sign the next CRL (CRL number incremented and saved) listing every revocation.

        Revoked certificates stay listed after they expire: a verifier of an old signature
        must still learn that the key was compromised.
        """
        doc, entries = self._load()
        number = int(doc.get("crl_number", 0)) + 1
        revoked = [
            RevokedEntry(e.serial, e.revoked_at, e.reason or RevocationReason.UNSPECIFIED)
            for e in entries
            if e.revoked_at is not None
        ]
        crl = build_crl(ca, revoked, number=number, now=now, lifetime=lifetime)
        doc["crl_number"] = number
        self._save(doc)
        return crl
