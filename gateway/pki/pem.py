"""Reading and writing PEM files; private keys are written 0600 and never overwritten silently."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError

__all__ = [
    "certificate_pem",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "private_key_pem",
    "write_private_key",
    "write_public_file",
]

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def certificate_pem(cert: x509.Certificate) -> bytes:
    """The PEM encoding of ``cert``."""
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM of ``key``, encrypted with ``passphrase`` when given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _create(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    # A replacement is written beside the target and renamed over it, so a node that reloads
    # the file at any moment reads either the old or the new content, never a mix.
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FailedPreconditionError(f"{path} exists; refusing to overwrite it")
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if overwrite else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise FailedPreconditionError(f"{path} exists; refusing to overwrite it") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if target != path:
            os.replace(target, path)
    except BaseException:
        if target != path:
            target.unlink(missing_ok=True)
        raise


def write_private_key(
    path: Path, key: PrivateKey, *, passphrase: bytes | None = None, overwrite: bool = False
) -> None:
    """Write ``key`` as PEM with mode 0600; refuse to replace an existing file unless told to."""
    _create(path, private_key_pem(key, passphrase), 0o600, overwrite)


def write_public_file(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write a certificate, CRL or bundle (mode 0644)."""
    _create(path, data, 0o644, overwrite)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{what} file {path} does not exist") from None
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {what} file {path}: {exc.strerror}") from exc


def load_certificates(path: Path) -> list[x509.Certificate]:
    """All certificates of a PEM file (at least one)."""
    data = _read(path, "certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InvalidArgumentError(f"{path} holds no valid PEM certificate") from exc
    return certs


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file."""
    return load_certificates(path)[0]


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """A P-256 or Ed25519 private key from PEM, decrypted with ``passphrase`` if it is encrypted."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError as exc:
        if passphrase is None:
            raise InvalidArgumentError(f"{path} is encrypted: a passphrase is needed") from exc
        raise InvalidArgumentError(f"{path} is not encrypted, but a passphrase was given") from exc
    except ValueError as exc:
        raise InvalidArgumentError(
            f"cannot load private key {path}: wrong passphrase or not a PEM private key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise InvalidArgumentError(f"{path}: only ECDSA P-256 and Ed25519 keys are supported")
    return key
