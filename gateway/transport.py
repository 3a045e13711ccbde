"""Mutual TLS for servers and clients; nothing here ever builds a plaintext channel or port.

Server credentials are dynamic: grpcio asks :meth:`ServerTls.fetch` at each new handshake, and a
renewed certificate, a new trust bundle or new CRLs on disk are picked up without a restart.
Connections that are already open keep the credentials they were made with.

Clients dial a node by address and check its certificate against the DNS name derived from the
peer's identity (``gateway.cn.customs-exchange``): roots constrain DNS names to their own trust
domain, so only a certificate of the expected jurisdiction can pass.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway import AEAD_CIPHERS
from gateway.errors import GatewayError, InvalidArgumentError, NotFoundError
from gateway.pki.bundle import TrustBundle
from gateway.pki.identity import Jurisdiction, SpiffeId
from gateway.pki.revocation import (
    CrlError,
    CrlRefused,
    IssuerState,
    MemoryRevocationStore,
    RevocationStore,
    VerifiedCrl,
    admit_crl,
    key_id,
    load_crl,
    verify_crl,
)

__all__ = [
    "AEAD_CIPHERS",
    "FAILOVER_SERVICE_CONFIG",
    "ClientIdentity",
    "ServerTls",
    "TlsMaterial",
    "failover_target",
    "secure_channel",
]

log = logging.getLogger(__name__)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidArgumentError(f"{what} file {path} is a directory") from None
    except OSError as exc:
        raise InvalidArgumentError(
            f"{what} file {path} cannot be read: {exc.strerror or exc}"
        ) from None


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


@dataclass(frozen=True)
class TlsMaterial:
    """What a handshake needs, as loaded at one moment: chain, key, bundle and CRLs."""

    certificate_chain: bytes
    private_key: bytes
    bundle: TrustBundle
    crls: tuple[x509.CertificateRevocationList, ...]
    verified_crls: tuple[VerifiedCrl, ...] = ()

    @functools.cached_property
    def certificate(self) -> x509.Certificate:
        """The leaf of ``certificate_chain``, parsed once per loaded material (health checks,
        scrapes and status calls read it on every call)."""
        return x509.load_pem_x509_certificate(self.certificate_chain)


def _same(a: TlsMaterial, b: TlsMaterial) -> bool:
    return (
        a.certificate_chain == b.certificate_chain
        and a.private_key == b.private_key
        and a.bundle.roots == b.bundle.roots
        and len(a.crls) == len(b.crls)
        and all(x is y for x, y in zip(a.crls, b.crls, strict=True))
    )


class ServerTls:
    """Server-side TLS material that follows its files on disk.

    ``on_change`` is called with the new material whenever a file changed, before the next
    handshake uses it (the node updates its authenticator's bundle and CRLs there).

    Every configured CRL must load at construction (a node without one of its CRLs would not
    revoke what it says it revokes): missing, unreadable, unsigned, older than the highest
    number ``store`` has seen from its issuer, or from another issuer than the one the file is
    for, it raises :class:`CrlRefused`. Later, such a file is refused loudly (an error line and
    :attr:`refusals`) and the CRL in force for it stays (ADR 0024).
    """

    def __init__(
        self,
        certificate: Path,
        key: Path,
        trust_bundle: Path,
        crls: Sequence[Path] = (),
        *,
        on_change: Callable[[TlsMaterial], None] | None = None,
        store: RevocationStore | None = None,
        check: Callable[[x509.Certificate, TrustBundle, list[x509.CertificateRevocationList]], None]
        | None = None,
    ) -> None:
        """Load the material; ``check`` vets the certificate (the node's own identity, its key
        usages) against the bundle and CRLs, at start and at every reload.

        Raises:
            NotFoundError, InvalidArgumentError: a file is missing or does not load (a
                :class:`CrlRefused` for a CRL), naming the file.
        """
        self._paths = (certificate, key, trust_bundle, *crls)
        self._crl_paths = tuple(crls)
        self._on_change = on_change
        self._check = check
        self._store: RevocationStore = store if store is not None else MemoryRevocationStore()
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._in_force: dict[Path, VerifiedCrl] = {}
        self.refusals: dict[str, int] = {}  # reason -> CRL files refused since start
        self.material = self._load(starting=True)
        self.generation = 0  # bumped at each reload
        self._served = 0  # the generation grpcio was last given

    def refusal_counts(self) -> dict[str, int]:
        """CRL files refused since start, by reason (a copy, safe from any thread)."""
        with self._lock:
            return dict(self.refusals)

    def _stamps(self) -> tuple[int, ...]:
        return tuple(_mtime(p) for p in self._paths)

    def _read_crl(self, path: Path, bundle: TrustBundle) -> VerifiedCrl:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CrlRefused(f"CRL file {path} does not exist", "missing") from None
        except OSError as exc:
            raise CrlRefused(
                f"CRL file {path} cannot be read: {exc.strerror or exc}", "unreadable"
            ) from None
        try:
            crl = load_crl(data)
        except CrlError as exc:
            raise CrlRefused(f"CRL file {path}: {exc}", "unreadable") from None
        # Only CRLs signed by a root of the (new) bundle are used: a writable CRL directory
        # must not let anyone revoke or un-revoke certificates.
        try:
            return verify_crl(crl, bundle)
        except CrlError as exc:
            raise CrlRefused(f"CRL file {path}: {exc}", "unsigned") from None

    def _refused(self, exc: CrlRefused, path: Path) -> None:
        self.refusals[exc.reason] = self.refusals.get(exc.reason, 0) + 1
        log.error(
            "CRL refused, the one loaded before stays in force: %s",
            exc,
            extra={"event": "crl-refused", "reason": exc.reason, "path": str(path)},
        )

    def _load_crls(
        self, bundle: TrustBundle, *, starting: bool
    ) -> tuple[dict[Path, VerifiedCrl], list[IssuerState]]:
        roots = [c for _, c in bundle]
        known = self._store.issuers()
        loaded: dict[Path, VerifiedCrl] = {}
        changed: list[IssuerState] = []
        for path in self._crl_paths:
            previous = self._in_force.get(path)
            if previous is not None:  # still vouched for by the (new) bundle, or nothing loads
                previous = verify_crl(previous.crl, bundle)
            try:
                verified = self._read_crl(path, bundle)
                state = admit_crl(str(path), verified, in_force=previous, known=known, roots=roots)
                other = next(
                    (p for p, v in loaded.items() if key_id(v.issuer) == state.key_id), None
                )
                if other is not None:
                    raise CrlRefused(
                        f"CRL file {path}: holds a CRL of the {verified.jurisdiction} root "
                        f"(key id {state.key_id[:16]}), as {other} does; each file is for one CA",
                        "wrong-issuer",
                    )
            except CrlRefused as exc:
                if starting or previous is None:
                    raise
                self._refused(exc, path)
                loaded[path] = previous
                continue
            loaded[path] = verified
            old = known.get(state.key_id)
            if old is None or old.number != state.number or old.path != state.path:
                changed.append(state)
        return loaded, changed

    def _load(self, *, starting: bool = False) -> TlsMaterial:
        certificate, key, bundle_path = self._paths[:3]
        bundle = TrustBundle.from_json(_read(bundle_path, "trust bundle"))
        crls, changed = self._load_crls(bundle, starting=starting)
        chain, key_pem = _read(certificate, "certificate"), _read(key, "private key")
        _check_pair(certificate, chain, key, key_pem)
        if self._check is not None:
            self._check(
                x509.load_pem_x509_certificate(chain), bundle, [v.crl for v in crls.values()]
            )
        if changed:  # durable before it is in force: a restart never goes below it
            self._store.record(changed)
        self._in_force = crls
        verified = tuple(crls.values())
        return TlsMaterial(chain, key_pem, bundle, tuple(v.crl for v in verified), verified)

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
            except GatewayError as exc:
                # Keep serving with what we have: a half-copied file must not take the node down.
                log.warning("TLS material not reloaded: %s", exc)
                return False
            unchanged = _same(material, self.material)
            self._stamp, self.material = stamp, material
            if unchanged:  # e.g. a refused CRL, the one in force kept: nothing new to serve
                return False
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


# Several replicas of one node (docs/operations.md, Deployment; ADR 0073): calls are spread
# over every replica that is up (round_robin skips a replica whose connection failed), and a
# call that fails UNAVAILABLE (its replica died or refused the connection) is retried on
# another one. Every RPC of the gateway may be retried: submits and acknowledgements are
# idempotent by message id, deliveries by message id at the recipient, the rest only read.
# A streaming call is retried only until its first message has arrived; after that, the
# caller resumes from its cursor.
FAILOVER_SERVICE_CONFIG: dict[str, object] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [
                {"service": "customs.gateway.v1.PartnerGateway"},
                {"service": "customs.gateway.v1.PeerExchange"},
                {"service": "customs.gateway.v1.LedgerAudit"},
                {"service": "customs.gateway.v1.NodeStatus"},
            ],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def _resolved(address: str) -> list[tuple[int, str]]:
    """(family, ``HOST:PORT`` with a literal address) for each address ``address`` names now."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (OSError, ValueError):
            return []  # a name that does not resolve now: the other replicas still serve
        literals = [ipaddress.ip_address(str(info[4][0])) for info in infos]
    else:
        literals = [literal]
    out: list[tuple[int, str]] = []
    for ip in literals:
        text = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        if (ip.version, text) not in out:
            out.append((ip.version, text))
    return out


def failover_target(addresses: Sequence[str]) -> str:
    """One gRPC target naming every replica in ``addresses`` (``HOST:PORT`` each), for a
    channel with :data:`FAILOVER_SERVICE_CONFIG`: ``ipv4:a:p,b:q`` (gRPC's own resolver for a
    static list). Names are resolved now (the caller builds a new channel at each reconnect);
    IPv6 addresses are used only when no name gave an IPv4 one (a target holds one family).
    A single address, or none that resolves, is returned as given (gRPC resolves it and the
    call fails ``UNAVAILABLE`` naming it)."""
    if len(addresses) == 1:
        return addresses[0]
    found = [r for a in addresses for r in _resolved(a)]
    v4 = [text for family, text in found if family == 4]
    v6 = [text for family, text in found if family == 6]
    if v4:
        return "ipv4:" + ",".join(v4)
    if v6:
        return "ipv6:" + ",".join(v6)
    return addresses[0] if addresses else "unix:/nonexistent"


def secure_channel(
    address: str | Sequence[str],
    identity: ClientIdentity,
    server: SpiffeId,
    *,
    options: Sequence[tuple[str, str | int]] = (),
) -> grpc.Channel:
    """A mutual-TLS channel to ``address`` that accepts only ``server``'s DNS name.

    With several addresses (the replicas of one node), calls go round robin to the replicas
    that are up and a call failing ``UNAVAILABLE`` is retried on another
    (:data:`FAILOVER_SERVICE_CONFIG`); every replica must present ``server``'s certificate.
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=identity.root_certificates,
        private_key=identity.private_key,
        certificate_chain=identity.certificate_chain,
    )
    opts: list[tuple[str, str | int]] = [("grpc.ssl_target_name_override", server.dns_name)]
    if isinstance(address, str):
        target = address
    else:
        target = failover_target(address)
        if len(address) > 1:
            opts += [
                ("grpc.service_config", json.dumps(FAILOVER_SERVICE_CONFIG)),
                ("grpc.enable_retries", 1),
            ]
    return grpc.secure_channel(target, credentials, options=[*opts, *options])
