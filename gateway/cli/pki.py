"""``customs-gateway pki ...``: run a jurisdiction's CA and build the trust bundle.

Thin shell over :mod:`gateway.pki`: parse arguments, read passphrases from a file or an
environment variable (never from the command line, where ``ps`` would show them), call the
library, print for a person or, with ``--json``, for a program.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.cli._base import EXIT_FAILED, EXIT_OK, CliError
from gateway.errors import GatewayError
from gateway.pki.authority import (
    DOCUMENT_SIGNING_EKU,
    IssuedCertificate,
    identity_of,
    is_signing_certificate,
)
from gateway.pki.bundle import TrustBundle, check_bundle, fingerprint
from gateway.pki.cadir import CaDirectory, IndexEntry, parse_serial
from gateway.pki.expiry import CertificateStatus, certificate_serial, certificate_status
from gateway.pki.identity import IdentityError, Jurisdiction, Role, SpiffeId
from gateway.pki.pem import (
    certificate_pem,
    load_certificate,
    load_private_key,
    write_private_key,
    write_public_file,
)
from gateway.pki.revocation import RevocationReason, RevokedEntry, load_crl, revoked_entries

__all__ = ["register"]

T = TypeVar("T")

_RAW = argparse.RawDescriptionHelpFormatter
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    DOCUMENT_SIGNING_EKU: "documentSigning",
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=`` that reports the library's parse errors as usage errors."""

    def wrapped(text: str) -> T:
        try:
            return parse(text)
        except GatewayError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    wrapped.__name__ = parse.__name__
    return wrapped


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"days must be positive, got {value}")
    return value


def _window(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"days must not be negative, got {value}")
    return value


# -- passphrases --------------------------------------------------------------------------------


def _add_passphrase(p: argparse.ArgumentParser, what: str = "the CA key") -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help=f"file whose first line is the passphrase protecting {what}",
    )
    g.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help=f"environment variable holding the passphrase protecting {what}",
    )


def _passphrase(args: argparse.Namespace) -> bytes | None:
    if args.passphrase_file is not None:
        try:
            text = args.passphrase_file.read_text().splitlines()
        except OSError as exc:
            raise CliError(
                f"cannot read passphrase file {args.passphrase_file}: {exc.strerror}"
            ) from None
        value = text[0] if text else ""
        source = f"passphrase file {args.passphrase_file}"
    elif args.passphrase_env is not None:
        if args.passphrase_env not in os.environ:
            raise CliError(f"environment variable {args.passphrase_env} is not set")
        value = os.environ[args.passphrase_env]
        source = f"environment variable {args.passphrase_env}"
    else:
        return None
    if not value:
        raise CliError(f"{source} holds an empty passphrase")
    return value.encode()


# -- output -------------------------------------------------------------------------------------


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False))


def _cert_doc(cert: x509.Certificate, now: dt.datetime, window: dt.timedelta) -> dict[str, Any]:
    try:
        identity: SpiffeId | None = identity_of(cert)
    except IdentityError:
        identity = None
    bc = _basic_constraints(cert)
    kind = "root" if bc else ("signing" if is_signing_certificate(cert) else "tls")
    try:
        eku = [
            _EKU_NAMES.get(o, o.dotted_string)
            for o in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        ]
    except x509.ExtensionNotFound:
        eku = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(g.value) for g in san]
    except x509.ExtensionNotFound:
        names = []
    public = cert.public_key()
    key = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else type(public).__name__
    if isinstance(public, ec.EllipticCurvePublicKey):
        key = f"ECDSA {public.curve.name}"
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": certificate_serial(cert),
        "kind": kind,
        "identity": identity.uri if identity else None,
        "jurisdiction": identity.jurisdiction.value if identity else None,
        "role": identity.role.value if identity else None,
        "names": names,
        "extended_key_usage": eku,
        "key": key,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "status": certificate_status(cert, now, window=window).value,
        "fingerprint": fingerprint(cert),
    }


def _basic_constraints(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _issued_doc(issued: IssuedCertificate, cert_path: Path, key_path: Path | None) -> Any:
    cert = issued.certificate
    return {
        "serial": f"{cert.serial_number:x}",
        "identity": identity_of(cert).uri,
        "kind": "signing" if is_signing_certificate(cert) else "tls",
        "not_after": cert.not_valid_after_utc.isoformat(),
        "fingerprint": fingerprint(cert),
        "certificate": str(cert_path),
        "key": None if key_path is None else str(key_path),
    }


def _print_issued(doc: dict[str, Any], verb: str) -> None:
    print(f"{verb} {doc['kind']} certificate {doc['serial']} for {doc['identity']}")
    print(f"  valid until {doc['not_after']}")
    print(f"  certificate {doc['certificate']}")
    if doc["key"]:
        print(f"  private key {doc['key']} (mode 0600, keep it secret)")


# -- handlers -----------------------------------------------------------------------------------


def _init_ca(args: argparse.Namespace) -> int:
    passphrase = _passphrase(args)
    directory = CaDirectory.init(
        args.dir,
        args.jurisdiction,
        passphrase=passphrase,
        force=args.force,
        lifetime=dt.timedelta(days=args.days),
    )
    cert = directory.certificate
    doc = {
        "jurisdiction": directory.jurisdiction.value,
        "directory": str(args.dir),
        "certificate": str(args.dir / "ca.pem"),
        "key": str(args.dir / "ca.key"),
        "encrypted": passphrase is not None,
        "serial": f"{cert.serial_number:x}",
        "not_after": cert.not_valid_after_utc.isoformat(),
        "fingerprint": fingerprint(cert),
    }
    if args.json:
        _print_json(doc)
    else:
        print(f"created the {doc['jurisdiction']} root CA in {doc['directory']}")
        print(f"  certificate {doc['certificate']} (share it: it goes into the trust bundle)")
        print(f"  private key {doc['key']} (mode 0600, keep it offline)")
        print(f"  valid until {doc['not_after']}")
        print(f"  fingerprint {doc['fingerprint']}")
    if passphrase is None:
        print(
            "customs-gateway: warning: the CA key is not encrypted "
            "(use --passphrase-file or --passphrase-env)",
            file=sys.stderr,
        )
    return EXIT_OK


def _out_paths(out_dir: Path, name: str, signing: bool) -> tuple[Path, Path]:
    stem = f"{name}-signing" if signing else name
    return out_dir / f"{stem}.pem", out_dir / f"{stem}.key"


def _write_issued(
    issued: IssuedCertificate, cert_path: Path, key_path: Path, force: bool
) -> Path | None:
    # The key first, so that a node picking up files per connection never sees a new
    # certificate beside an old key for longer than the time between the two renames.
    if issued.private_key is not None:
        write_private_key(key_path, issued.private_key, overwrite=force)
    write_public_file(cert_path, certificate_pem(issued.certificate))
    return key_path if issued.private_key is not None else None


def _check_key_free(key_path: Path, force: bool) -> None:
    # Refuse before anything is signed or recorded, so a refusal leaves no trace in the index.
    # Certificates are public and may be replaced (that is how a renewal is rolled out).
    if not force and key_path.exists():
        raise CliError(f"{key_path} exists; refusing to overwrite a private key (use --force)")


def _issue(args: argparse.Namespace) -> int:
    directory = CaDirectory.open(args.ca_dir)
    identity = SpiffeId(directory.jurisdiction, args.role, args.name)
    if args.signing and identity.role is not Role.NODE:
        raise CliError(f"only nodes have signing certificates, not {identity.uri}")
    stem = args.file_stem or args.name
    cert_path, key_path = _out_paths(args.out_dir, stem, args.signing)
    _check_key_free(key_path, args.force)
    ca = directory.authority(_passphrase(args))
    issued = directory.issue(
        ca,
        identity,
        signing=args.signing,
        lifetime=dt.timedelta(days=args.days),
        dns_names=tuple(args.dns),
        ip_addresses=tuple(args.ip),
    )
    doc = _issued_doc(issued, cert_path, _write_issued(issued, cert_path, key_path, args.force))
    if args.json:
        _print_json(doc)
    else:
        _print_issued(doc, "issued")
    return EXIT_OK


def _renew(args: argparse.Namespace) -> int:
    directory = CaDirectory.open(args.ca_dir)
    entry = directory.find(parse_serial(args.serial))
    signing = entry.kind == "signing"
    name = args.file_stem or SpiffeId.parse(entry.identity).name
    cert_path, key_path = _out_paths(args.out_dir, name, signing)
    public = None
    if args.key is not None:
        key = load_private_key(args.key, None)
        public = key.public_key()
        old = directory.issued_certificate(entry)
        if public != old.public_key():
            raise CliError(f"{args.key} is not the key of certificate {entry.serial_hex}")
    else:
        _check_key_free(key_path, args.force)
    ca = directory.authority(_passphrase(args))
    issued = directory.renew(
        ca, entry.serial, lifetime=dt.timedelta(days=args.days), public_key=public
    )
    doc = _issued_doc(issued, cert_path, _write_issued(issued, cert_path, key_path, args.force))
    doc["renewed_from"] = entry.serial_hex
    if args.json:
        _print_json(doc)
    else:
        _print_issued(doc, f"renewed {entry.serial_hex} as")
        print(
            f"  the old certificate stays valid until {entry.not_after.isoformat()}; revoke it "
            f"with --reason superseded once the holder uses the new one"
        )
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    directory = CaDirectory.open(args.ca_dir)
    entry = directory.revoke(parse_serial(args.serial), args.reason)
    doc = {**entry.to_json(), "status": CertificateStatus.REVOKED.value}
    if args.json:
        _print_json(doc)
    else:
        print(f"revoked {entry.serial_hex} ({entry.identity}) for {args.reason}")
        print("  publish a new CRL now: customs-gateway pki crl --ca-dir ... --out ...")
    return EXIT_OK


def _crl(args: argparse.Namespace) -> int:
    directory = CaDirectory.open(args.ca_dir)
    ca = directory.authority(_passphrase(args))
    crl = directory.crl(ca, lifetime=dt.timedelta(days=args.days))
    write_public_file(args.out, crl.public_bytes(Encoding.PEM))
    doc: dict[str, Any] = {
        "jurisdiction": directory.jurisdiction.value,
        "number": directory.crl_number,
        "revoked": [f"{e.serial:x}" for e in revoked_entries(crl)],
        "this_update": crl.last_update_utc.isoformat(),
        "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None,
        "file": str(args.out),
    }
    if args.json:
        _print_json(doc)
    else:
        print(
            f"wrote CRL number {doc['number']} of the {doc['jurisdiction']} CA to {doc['file']}: "
            f"{len(doc['revoked'])} revoked, next update by {doc['next_update']}"
        )
        print("  copy it to every node's configured CRL path; nodes reload it on change")
    return EXIT_OK


def _entry_row(entry: IndexEntry, now: dt.datetime, window: dt.timedelta) -> dict[str, Any]:
    identity = SpiffeId.parse(entry.identity)
    return {
        **entry.to_json(),
        "role": identity.role.value,
        "status": entry.status(now, window).value,
    }


def _status_text(row: dict[str, Any]) -> str:
    """``revoked 2026-12-02T10:00:00+00:00 (key-compromise)`` or the plain status."""
    if row.get("status") == CertificateStatus.REVOKED.value and row.get("revoked_at"):
        return f"revoked {row['revoked_at'][:19]} ({row.get('reason') or 'unspecified'})"
    return str(row["status"])


def _list(args: argparse.Namespace) -> int:
    directory = CaDirectory.open(args.ca_dir)
    now = _now()
    window = dt.timedelta(days=args.expiring_within)
    root = _cert_doc(directory.certificate, now, window)
    rows = [_entry_row(e, now, window) for e in directory.entries()]
    if args.status:
        rows = [r for r in rows if r["status"] in args.status]
    if args.json:
        _print_json({"ca": root, "certificates": rows})
        return EXIT_OK
    print(
        f"{directory.jurisdiction} root CA {root['serial']}: valid until {root['not_after']} "
        f"[{root['status']}]"
    )
    header = ("SERIAL", "ROLE", "KIND", "IDENTITY", "NOT AFTER", "STATUS")
    table = [header] + [
        (r["serial"], r["role"], r["kind"], r["identity"], r["not_after"][:19], _status_text(r))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    flagged = [r for r in rows if r["status"] in ("expiring-soon", "expired")]
    if root["status"] in ("expiring-soon", "expired"):
        flagged.insert(0, root)
    if flagged:
        print(
            f"{len(flagged)} certificate(s) expired or expiring within {args.expiring_within} days"
        )
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    data = _read(args.file)
    now = _now()
    if b"-----BEGIN X509 CRL-----" in data:
        crl = load_crl(data)
        doc: dict[str, Any] = {
            "type": "crl",
            "issuer": crl.issuer.rfc4514_string(),
            "this_update": crl.last_update_utc.isoformat(),
            "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None,
            "revoked": [
                {
                    "serial": f"{e.serial:x}",
                    "at": e.revoked_at.isoformat(),
                    "reason": e.reason.value,
                }
                for e in revoked_entries(crl)
            ],
        }
        if args.json:
            _print_json(doc)
        else:
            print(f"CRL of {doc['issuer']}")
            print(f"  this update  {doc['this_update']}")
            print(f"  next update  {doc['next_update']}")
            for r in doc["revoked"]:
                print(f"  revoked      {r['serial']} at {r['at']} ({r['reason']})")
        return EXIT_OK
    cert = load_certificate(args.file)
    window = dt.timedelta(days=args.expiring_within)
    doc = {"type": "certificate", **_cert_doc(cert, now, window)}
    revoked, checked = _revocation(cert, args.ca_dir, args.crl or [])
    doc["revocation_checked"] = checked
    doc["revoked_at"] = None if revoked is None else revoked.revoked_at.isoformat()
    doc["reason"] = None if revoked is None else revoked.reason.value
    if revoked is not None:
        doc["status"] = CertificateStatus.REVOKED.value
    if args.json:
        _print_json(doc)
        return EXIT_OK
    for key in ("subject", "issuer", "serial", "kind", "identity", "role", "key"):
        print(f"{key.replace('_', ' '):<20} {doc[key]}")
    print(f"{'names':<20} {', '.join(doc['names']) or '-'}")
    print(f"{'extended key usage':<20} {', '.join(doc['extended_key_usage']) or '-'}")
    for key in ("not_before", "not_after"):
        print(f"{key.replace('_', ' '):<20} {doc[key]}")
    status = _status_text(doc)
    if not checked:
        status += " (revocation not checked: give --ca-dir or --crl)"
    else:
        status += f" (revocation checked against {', '.join(checked)})"
    print(f"{'status':<20} {status}")
    print(f"{'fingerprint':<20} {doc['fingerprint']}")
    return EXIT_OK


def _revocation(
    cert: x509.Certificate, ca_dir: Path | None, crl_files: list[Path]
) -> tuple[RevokedEntry | None, list[str]]:
    """Whether the certificate's CA revoked it: from the CA directory's index (what every CRL
    it signs lists) and from CRL files of the same issuer. Returns the revocation, if any, and
    what was consulted."""
    checked: list[str] = []
    found: RevokedEntry | None = None
    if ca_dir is not None:
        directory = CaDirectory.open(ca_dir)
        if directory.certificate.subject != cert.issuer:
            raise CliError(
                f"certificate {certificate_serial(cert)} was not issued by the CA in {ca_dir}"
            )
        checked.append(f"CA directory {ca_dir}")
        for entry in directory.entries():
            if entry.serial == cert.serial_number and entry.revoked_at is not None:
                reason = entry.reason or RevocationReason.UNSPECIFIED
                found = RevokedEntry(entry.serial, entry.revoked_at, reason)
    for path in crl_files:
        crl = load_crl(_read(path))
        if crl.issuer != cert.issuer:
            raise CliError(
                f"CRL {path} is of {crl.issuer.rfc4514_string()}, not of the certificate's "
                f"issuer {cert.issuer.rfc4514_string()}"
            )
        if ca_dir is not None:
            try:
                crl_ok = crl.is_signature_valid(directory.certificate.public_key())  # type: ignore[arg-type]
            except TypeError:
                crl_ok = False
            if not crl_ok:
                raise CliError(f"CRL {path} is not signed by the CA in {ca_dir}")
        checked.append(f"CRL {path}")
        for e in revoked_entries(crl):
            if e.serial == cert.serial_number and found is None:
                found = e
    return found, checked


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{path} does not exist") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def _root_arg(text: str) -> tuple[Jurisdiction, Path]:
    code, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not JURISDICTION=PATH")
    try:
        return Jurisdiction.parse(code), Path(path)
    except IdentityError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bundle_build(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.force:
        raise CliError(f"{args.out} exists; refusing to overwrite it (use --force)")
    roots = []
    for jurisdiction, path in args.root:
        cert_path = path / "ca.pem" if path.is_dir() else path
        roots.append((jurisdiction, load_certificate(cert_path)))
    bundle = TrustBundle(tuple(roots))
    problems = [f for f in check_bundle(bundle, _now()) if f.problems]
    if problems:
        first = problems[0]
        if first.problems == ("no root",):
            raise CliError(
                f"no root given for {first.jurisdiction}: a bundle holds the roots of "
                + ", ".join(j.value for j in Jurisdiction)
            )
        raise CliError(f"root for {first.jurisdiction}: {'; '.join(first.problems)}")
    write_public_file(args.out, bundle.to_json().encode())
    if args.json:
        _print_json({"file": str(args.out), "roots": [_bundle_row(j, c) for j, c in bundle]})
    else:
        print(f"wrote trust bundle {args.out} with {len(bundle.roots)} roots:")
        for j, c in bundle:
            print(f"  {j}  {fingerprint(c)}  until {c.not_valid_after_utc.isoformat()}")
    return EXIT_OK


def _bundle_row(j: Jurisdiction, c: x509.Certificate) -> dict[str, Any]:
    return {
        "jurisdiction": j.value,
        "subject": c.subject.rfc4514_string(),
        "fingerprint": fingerprint(c),
        "not_after": c.not_valid_after_utc.isoformat(),
    }


def _bundle_check(args: argparse.Namespace) -> int:
    bundle = TrustBundle.from_json(_read(args.file))
    now = _now()
    window = dt.timedelta(days=args.expiring_within)
    findings = check_bundle(bundle, now)
    rows = []
    for f in findings:
        row = _bundle_row(f.jurisdiction, f.certificate)
        if f.problems == ("no root",):
            row = {"jurisdiction": f.jurisdiction.value}
        else:
            row["status"] = certificate_status(f.certificate, now, window=window).value
        row["problems"] = list(f.problems)
        rows.append(row)
    ok = all(not r["problems"] for r in rows)
    if args.json:
        _print_json({"file": str(args.file), "ok": ok, "roots": rows})
    else:
        for r in rows:
            state = "ok" if not r["problems"] else "; ".join(r["problems"])
            detail = (
                f"sha256 {r['fingerprint']} until {r['not_after'][:10]} [{r['status']}]"
                if ("fingerprint" in r)
                else "-"
            )
            print(f"  {r['jurisdiction']}  {detail}  {state}")
        print(f"trust bundle {args.file}: {'ok' if ok else 'FAILED'}")
    return EXIT_OK if ok else EXIT_FAILED


# -- parser -------------------------------------------------------------------------------------


def _cmd(sub: Any, name: str, help_: str, example: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_,
        description=help_[0].upper() + help_[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=_RAW,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def register(subparsers: Any) -> None:
    """Add the ``pki`` command group."""
    pki = subparsers.add_parser(
        "pki",
        help="run a jurisdiction's CA: issue, renew, revoke, CRLs, trust bundle",
        description="Run a jurisdiction's certificate authority and build the trust bundle.",
        epilog=(
            "example:\n"
            "  customs-gateway pki init-ca --jurisdiction HK --dir certs/hk/ca "
            "--passphrase-file ~/.hk-ca-pass\n"
            "see docs/operations-pki.md for the whole procedure"
        ),
        formatter_class=_RAW,
    )
    sub = pki.add_subparsers(title="pki commands", metavar="COMMAND", required=True)

    p = _cmd(
        sub,
        "init-ca",
        "create a jurisdiction root CA (ECDSA P-256, name-constrained to its trust domain)",
        "customs-gateway pki init-ca --jurisdiction HK --dir certs/hk/ca "
        "--passphrase-env HK_CA_PASS",
    )
    p.add_argument(
        "--jurisdiction", required=True, type=_arg(Jurisdiction.parse), help="CN, HK or MO"
    )
    p.add_argument("--dir", required=True, type=Path, help="the CA directory to create")
    p.add_argument("--days", type=_days, default=3650, help="root lifetime (default 3650)")
    p.add_argument(
        "--force", action="store_true", help="replace an existing CA (forgets what it issued)"
    )
    _add_passphrase(p)
    p.set_defaults(handler=_init_ca)

    p = _cmd(
        sub,
        "issue",
        "issue a TLS certificate (or a node's Ed25519 signing certificate) and its key",
        "customs-gateway pki issue --ca-dir certs/hk/ca --role partner --name cargo-risk "
        "--out-dir certs/hk/partners",
    )
    p.add_argument("--ca-dir", required=True, type=Path, help="the CA directory")
    p.add_argument(
        "--role", required=True, type=_arg(Role.parse), help="node, partner, auditor or monitor"
    )
    p.add_argument("--name", required=True, help="holder name, e.g. gateway or cargo-risk")
    p.add_argument(
        "--signing",
        action="store_true",
        help="issue the node's Ed25519 signing certificate instead of a TLS certificate",
    )
    p.add_argument("--out-dir", required=True, type=Path, help="where NAME.pem and NAME.key go")
    p.add_argument(
        "--file-stem", metavar="STEM", help="name the files STEM.pem/STEM.key instead of NAME"
    )
    p.add_argument("--days", type=_days, default=30, help="lifetime in days (default 30)")
    p.add_argument("--dns", action="append", default=[], help="extra DNS name (repeatable)")
    p.add_argument("--ip", action="append", default=[], help="IP address SAN (repeatable)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    _add_passphrase(p)
    p.set_defaults(handler=_issue)

    p = _cmd(
        sub,
        "renew",
        "re-issue a certificate: same identity, names and usages; new serial and validity",
        "customs-gateway pki renew --ca-dir certs/hk/ca --serial 3f9a... --out-dir certs/hk/node "
        "--force",
    )
    p.add_argument("--ca-dir", required=True, type=Path, help="the CA directory")
    p.add_argument("--serial", required=True, help="serial (hex) as shown by 'pki list'")
    p.add_argument("--out-dir", required=True, type=Path, help="where NAME.pem (and .key) go")
    p.add_argument(
        "--file-stem", metavar="STEM", help="name the files STEM.pem/STEM.key instead of NAME"
    )
    p.add_argument("--key", type=Path, help="keep this existing private key instead of a new one")
    p.add_argument("--days", type=_days, default=30, help="lifetime in days (default 30)")
    p.add_argument("--force", action="store_true", help="overwrite an existing private key")
    _add_passphrase(p)
    p.set_defaults(handler=_renew)

    p = _cmd(
        sub,
        "revoke",
        "record a revocation; it takes effect when the next CRL is published",
        "customs-gateway pki revoke --ca-dir certs/hk/ca --serial 3f9a... --reason key-compromise",
    )
    p.add_argument("--ca-dir", required=True, type=Path, help="the CA directory")
    p.add_argument("--serial", required=True, help="serial (hex) as shown by 'pki list'")
    p.add_argument(
        "--reason",
        required=True,
        type=_arg(RevocationReason.parse),
        help="one of: " + ", ".join(r.value for r in RevocationReason),
    )
    p.set_defaults(handler=_revoke)

    p = _cmd(
        sub,
        "crl",
        "sign and write the CA's next CRL (every revocation so far)",
        "customs-gateway pki crl --ca-dir certs/hk/ca --out certs/shared/hk.crl",
    )
    p.add_argument("--ca-dir", required=True, type=Path, help="the CA directory")
    p.add_argument("--out", required=True, type=Path, help="CRL file to write (PEM)")
    p.add_argument("--days", type=_days, default=7, help="days until the next update (default 7)")
    _add_passphrase(p)
    p.set_defaults(handler=_crl)

    p = _cmd(
        sub,
        "list",
        "list what the CA issued: serial, role, identity, not-after and status",
        "customs-gateway pki list --ca-dir certs/hk/ca --expiring-within 14",
    )
    p.add_argument("--ca-dir", required=True, type=Path, help="the CA directory")
    p.add_argument(
        "--expiring-within",
        type=_window,
        default=14,
        metavar="DAYS",
        help="flag certificates expiring within DAYS (default 14)",
    )
    p.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in CertificateStatus],
        help="show only certificates with this status (repeatable)",
    )
    p.set_defaults(handler=_list)

    p = _cmd(
        sub,
        "show",
        "show one certificate or CRL file",
        "customs-gateway pki show certs/hk/node/gateway.pem",
    )
    p.add_argument("file", type=Path, help="a PEM certificate or CRL")
    p.add_argument("--expiring-within", type=_window, default=14, metavar="DAYS", help="default 14")
    p.add_argument(
        "--ca-dir",
        type=Path,
        help="the issuing CA directory: say whether the CA revoked the certificate",
    )
    p.add_argument(
        "--crl",
        type=Path,
        action="append",
        metavar="FILE",
        help="a CRL of the issuing CA to check the certificate against (repeatable)",
    )
    p.set_defaults(handler=_show)

    bundle = sub.add_parser(
        "bundle",
        help="build or check the trust bundle of the three roots",
        description="Build or check the trust bundle of the three roots.",
        epilog="example:\n  customs-gateway pki bundle check certs/shared/bundle.json",
        formatter_class=_RAW,
    )
    bsub = bundle.add_subparsers(title="bundle commands", metavar="COMMAND", required=True)
    p = _cmd(
        bsub,
        "build",
        "build the trust bundle from the roots of the jurisdictions",
        "customs-gateway pki bundle build --root CN=certs/cn/ca.pem --root HK=certs/hk/ca "
        "--root MO=certs/mo/ca.pem --out certs/shared/bundle.json",
    )
    p.add_argument(
        "--root",
        required=True,
        action="append",
        type=_root_arg,
        metavar="JURISDICTION=PATH",
        help="a root certificate (or CA directory) and its jurisdiction (repeatable)",
    )
    p.add_argument("--out", required=True, type=Path, help="bundle file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing bundle")
    p.set_defaults(handler=_bundle_build)

    p = _cmd(
        bsub,
        "check",
        "check a trust bundle: one sound, name-constrained root per jurisdiction (exit 1 if not)",
        "customs-gateway pki bundle check certs/shared/bundle.json",
    )
    p.add_argument("file", type=Path, help="the bundle JSON")
    p.add_argument("--expiring-within", type=_window, default=14, metavar="DAYS", help="default 14")
    p.set_defaults(handler=_bundle_check)
