"""Who is calling, and may they? Authentication and deny-by-default authorization (pure).

grpcio verifies the TLS chain against the trust bundle but knows nothing of jurisdictions or
CRLs, so every call is checked again here, on the peer's leaf certificate, with
:func:`gateway.pki.chain.verify_leaf` (SPIFFE id, root of the same jurisdiction, validity,
client EKU, CRL). The outcome is cached by certificate fingerprint until the bundle or CRLs
change.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509

from gateway.errors import PermissionDeniedError, UnauthenticatedError
from gateway.pki.bundle import TrustBundle, fingerprint
from gateway.pki.chain import verify_leaf
from gateway.pki.identity import Jurisdiction, Role, SpiffeId

__all__ = ["Authenticator", "Principal", "authorize"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: identity, certificate fingerprint and expiry."""

    identity: SpiffeId
    fingerprint: str
    not_after: dt.datetime

    @property
    def jurisdiction(self) -> Jurisdiction:
        """The caller's jurisdiction."""
        return self.identity.jurisdiction

    @property
    def role(self) -> Role:
        """The caller's role."""
        return self.identity.role


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Authenticator:
    """Checks peer leaf certificates against a trust bundle and CRLs; thread-safe."""

    def __init__(
        self,
        bundle: TrustBundle,
        crls: Sequence[x509.CertificateRevocationList] = (),
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._bundle = bundle
        self._crls: tuple[x509.CertificateRevocationList, ...] = tuple(crls)
        self._cache: dict[str, Principal] = {}

    def update(
        self,
        bundle: TrustBundle | None = None,
        crls: Sequence[x509.CertificateRevocationList] | None = None,
    ) -> None:
        """Replace the bundle and/or CRLs; cached decisions are dropped."""
        with self._lock:
            if bundle is not None:
                self._bundle = bundle
            if crls is not None:
                self._crls = tuple(crls)
            self._cache.clear()

    def authenticate(self, leaf_pem: bytes) -> Principal:
        """Return the caller's :class:`Principal`, or raise :class:`UnauthenticatedError`."""
        try:
            cert = x509.load_pem_x509_certificate(leaf_pem)
        except ValueError as exc:
            raise UnauthenticatedError("peer certificate is not a valid X.509 certificate") from exc
        fp = fingerprint(cert)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(fp)
            bundle, crls = self._bundle, self._crls
        if cached is not None and now <= cached.not_after:
            return cached
        principal = self._check(cert, fp, now, bundle, crls)
        with self._lock:
            if bundle is self._bundle and crls is self._crls:
                self._cache[fp] = principal
        return principal

    @staticmethod
    def _check(
        cert: x509.Certificate,
        fp: str,
        now: dt.datetime,
        bundle: TrustBundle,
        crls: tuple[x509.CertificateRevocationList, ...],
    ) -> Principal:
        identity = verify_leaf(cert, bundle, crls, at=now, usage="client")
        return Principal(identity, fp, cert.not_valid_after_utc)


# Deny by default: a method not matched here is refused.
_HEALTH_AND_REFLECTION = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def authorize(method: str, principal: Principal, node: Jurisdiction) -> None:
    """Allow or refuse ``principal`` calling ``method`` on the node of ``node``'s jurisdiction.

    Rules (first match decides; no match is a refusal):

    - ``health-and-reflection``: any authenticated caller;
    - ``partner-own-jurisdiction``: PartnerGateway, partners of the node's jurisdiction only;
    - ``peer-nodes-only``: PeerExchange, nodes of other jurisdictions only;
    - ``auditors-read-only``: LedgerAudit, auditors of any jurisdiction.

    Raises:
        PermissionDeniedError: naming the rule that refused.
    """
    who = principal.identity.uri
    if method.startswith(_HEALTH_AND_REFLECTION):
        return
    service = method.split("/")[1] if method.count("/") >= 2 else ""
    if service == "customs.gateway.v1.PartnerGateway":
        if principal.role is not Role.PARTNER:
            raise PermissionDeniedError(f"rule partner-own-jurisdiction: {who} is not a partner")
        if principal.jurisdiction is not node:
            raise PermissionDeniedError(
                f"rule partner-own-jurisdiction: {who} is a {principal.jurisdiction} partner; "
                f"this is the {node} node"
            )
        return
    if service == "customs.gateway.v1.PeerExchange":
        if principal.role is not Role.NODE:
            raise PermissionDeniedError(f"rule peer-nodes-only: {who} is not a node")
        if principal.jurisdiction is node:
            raise PermissionDeniedError(
                f"rule peer-nodes-only: {who} is of this node's jurisdiction"
            )
        return
    if service == "customs.gateway.v1.LedgerAudit":
        if principal.role is not Role.AUDITOR:
            raise PermissionDeniedError(f"rule auditors-read-only: {who} is not an auditor")
        return
    raise PermissionDeniedError(f"rule deny-by-default: no rule allows {who} to call {method}")
