"""Mutual TLS for servers and clients; nothing here ever builds a plaintext channel or port.

Server credentials are dynamic: grpcio asks :meth:`ServerTls.fetch` at each new handshake, and a
renewed certificate, a new trust bundle or new CRLs on disk are picked up without a restart.
Connections that are already open keep the credentials they were made with.

Clients dial a node by address and check its certificate against the DNS name derived from the
peer's identity (``gateway.cn.customs-exchange``): roots constrain DNS names to their own trust
domain, so only a certificate of the expected jurisdiction can pass.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.errors import InvalidArgumentError, NotFoundError
from gateway.pki.bundle import TrustBundle
from gateway.pki.identity import Jurisdiction, SpiffeId
from gateway.pki.revocation import CrlError, load_crl, verify_crl

__all__ = ["ClientIdentity", "ServerTls", "TlsMaterial", "secure_channel"]

log = logging.getLogger(__name__)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{what} file {path} does not exist") from None


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return -1


def _check_pair(cert_path: Path, chain: bytes, key_path: Path, key_pem: bytes) -> None:
    """Refuse a certificate whose key is not the one beside it (mid-rotation)."""
    try:
        cert = x509.load_pem_x509_certificate(chain)
        key = serialization.load_pem_private_key(key_pem, None)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"cannot load {cert_path} and {key_path} (unencrypted PEM needed): {exc}"
        ) from None
    if cert.public_key() != key.public_key():
        raise InvalidArgumentError(f"{key_path} is not the key of the certificate {cert_path}")


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return -1


@dataclass(frozen=True)
class TlsMaterial:
    """What a handshake needs, as loaded at one moment: chain, key, bundle and CRLs."""

    certificate_chain: bytes
    private_key: bytes
    bundle: TrustBundle
    crls: tuple[x509.CertificateRevocationList, ...]


class ServerTls:
    """Server-side TLS material that follows its files on disk.

    ``on_change`` is called with the new material whenever a file changed, before the next
    handshake uses it (the node updates its authenticator's bundle and CRLs there).
    """

    def __init__(
        self,
        certificate: Path,
        key: Path,
        trust_bundle: Path,
        crls: Sequence[Path] = (),
        *,
        on_change: Callable[[TlsMaterial], None] | None = None,
    ) -> None:
        self._paths = (certificate, key, trust_bundle, *crls)
        self._crl_paths = tuple(crls)
        self._on_change = on_change
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._crl_by_path: dict[Path, x509.CertificateRevocationList] = {}
        self.material = self._load()
        self.generation = 0  # bumped at each reload
        self._served = 0  # the generation grpcio was last given

    def _stamps(self) -> tuple[int, ...]:
        return tuple(_mtime(p) for p in self._paths)

    def _load(self) -> TlsMaterial:
        certificate, key, bundle_path = self._paths[:3]
        bundle = TrustBundle.from_json(_read(bundle_path, "trust bundle"))
        crls: dict[Path, x509.CertificateRevocationList] = {}
        for path in self._crl_paths:
            previous = self._crl_by_path.get(path)
            if not path.exists():
                # Not published yet is fine; gone after it was loaded is not: deleting a CRL
                # file must not un-revoke anything, so the last one loaded stays in force.
                if previous is not None:
                    log.warning("CRL file %s disappeared; keeping the one loaded before", path)
                    crls[path] = previous
                continue
            # Only CRLs signed by a root of the (new) bundle are used: a writable CRL directory
            # must not let anyone revoke or un-revoke certificates.
            crl = load_crl(_read(path, "CRL"))
            try:
                verify_crl(crl, bundle)
            except CrlError as exc:
                raise CrlError(f"CRL file {path}: {exc}") from None
            if previous is not None and _crl_number(crl) < _crl_number(previous):
                raise CrlError(
                    f"CRL file {path}: CRL number {_crl_number(crl)} is older than "
                    f"{_crl_number(previous)}, already in force; an old CRL would un-revoke"
                )
            crls[path] = crl
        chain, key_pem = _read(certificate, "certificate"), _read(key, "private key")
        _check_pair(certificate, chain, key, key_pem)
        self._crl_by_path = crls
        return TlsMaterial(chain, key_pem, bundle, tuple(crls.values()))

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        m = self.material
        return grpc.ssl_server_certificate_configuration(
            [(m.private_key, m.certificate_chain)], root_certificates=m.bundle.pem()
        )

    def refresh(self) -> bool:
        """Reload the files if any changed; True when new material was loaded.

        Material that does not load as a whole (a CRL no bundle root signed, a certificate
        renewed while its key is not yet replaced, a half-copied file) is refused and the node
        keeps serving with what it has; the next change of any file retries.
        """
        with self._lock:
            stamp = self._stamps()
            if stamp == self._stamp:
                return False
            try:
                material = self._load()
            except (InvalidArgumentError, NotFoundError) as exc:
                # Keep serving with what we have: a half-copied file must not take the node down.
                log.warning("TLS material not reloaded: %s", exc)
                return False
            self._stamp, self.material = stamp, material
            self.generation += 1
        log.info(
            "TLS material reloaded (certificate, trust bundle or CRLs changed)",
            extra={"event": "tls-reloaded", "generation": self.generation},
        )
        if self._on_change is not None:
            self._on_change(material)
        return True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpcio's per-handshake callback: new configuration if the material changed since
        grpcio last got one (whoever reloaded it: this handshake or the node's file watcher),
        else None ("keep the current one")."""
        self.refresh()
        with self._lock:
            if self._served == self.generation:
                return None
            self._served = self.generation
            return self._configuration()

    def credentials(self) -> grpc.ServerCredentials:
        """Dynamic server credentials requiring and verifying a client certificate."""
        # grpcio accepts None from the callback ("no change"); its stubs say otherwise.
        fetch: Callable[[], grpc.ServerCertificateConfiguration] = self.fetch  # type: ignore[assignment]
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), fetch, require_client_authentication=True
        )


@dataclass(frozen=True)
class ClientIdentity:
    """A client's certificate chain, key and trust roots (PEM bytes)."""

    certificate_chain: bytes
    private_key: bytes
    root_certificates: bytes

    @classmethod
    def from_files(
        cls,
        certificate: Path,
        key: Path,
        trust_bundle: Path,
        *,
        server_jurisdiction: Jurisdiction | None = None,
    ) -> ClientIdentity:
        """Load a client identity; the bundle is the JSON trust bundle.

        With ``server_jurisdiction``, only that jurisdiction's roots are trusted for the server:
        a node dialling a peer accepts no other root, whatever the other roots' constraints.
        """
        bundle = TrustBundle.from_json(_read(trust_bundle, "trust bundle"))
        return cls(
            _read(certificate, "certificate"),
            _read(key, "private key"),
            bundle.pem(server_jurisdiction),
        )


def secure_channel(
    address: str,
    identity: ClientIdentity,
    server: SpiffeId,
    *,
    options: Sequence[tuple[str, str | int]] = (),
) -> grpc.Channel:
    """A mutual-TLS channel to ``address`` that accepts only ``server``'s DNS name."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=identity.root_certificates,
        private_key=identity.private_key,
        certificate_chain=identity.certificate_chain,
    )
    opts = [("grpc.ssl_target_name_override", server.dns_name), *options]
    return grpc.secure_channel(address, credentials, options=opts)
