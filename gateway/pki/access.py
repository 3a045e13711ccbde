"""Who is calling, and may they? Authentication and deny-by-default authorization (pure).

grpcio verifies the TLS chain against the trust bundle but knows nothing of jurisdictions or
CRLs, so every call is checked again here, on the peer's leaf certificate:

1. exactly one SPIFFE URI SAN naming a known jurisdiction, role and holder;
2. issued by a root in the bundle that speaks for *that* jurisdiction (signature checked);
3. within its validity period;
4. allowed for TLS client authentication (extended key usage);
5. not revoked by a loaded CRL of its issuer.

The outcome is cached by the certificate's PEM bytes (as the TLS layer hands them over) until the
bundle or the CRLs change, so a connection's later calls cost one dictionary lookup and an
expiry check, not an X.509 parse.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509

from gateway.errors import UnauthenticatedError
from gateway.pki.bundle import TrustBundle, fingerprint
from gateway.pki.chain import verify_leaf
from gateway.pki.identity import Jurisdiction, Role, SpiffeId
from gateway.pki.policy import authorize
from gateway.pki.revocation import VerifiedCrl, verify_crl

__all__ = ["Authenticator", "Principal", "authorize"]

# Decisions cached at most; the cache is emptied when full (it refills on the next calls).
_CACHE_LIMIT = 4096


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
        """Start with ``bundle`` and ``crls``.

        Raises:
            CrlError: a CRL is not signed by a root of ``bundle`` (see :func:`verify_crl`).
        """
        self._lock = threading.Lock()
        self._clock = clock
        self._bundle = bundle
        self._crls = self._verify(bundle, crls)
        self._cache: dict[bytes, Principal] = {}

    def _verify(
        self, bundle: TrustBundle, crls: Sequence[x509.CertificateRevocationList]
    ) -> tuple[VerifiedCrl, ...]:
        now = self._clock()
        return tuple(verify_crl(c, bundle, now=now) for c in crls)

    @property
    def bundle(self) -> TrustBundle:
        """The trust bundle in use."""
        with self._lock:
            return self._bundle

    @property
    def crls(self) -> tuple[VerifiedCrl, ...]:
        """The CRLs in use, each verified against the bundle."""
        with self._lock:
            return self._crls

    def update(
        self,
        bundle: TrustBundle | None = None,
        crls: Sequence[x509.CertificateRevocationList] | None = None,
    ) -> None:
        """Replace the bundle and/or CRLs atomically; cached decisions are dropped.

        CRLs are verified against the (new) bundle first; if one fails, nothing changes.
        When only the bundle changes, the loaded CRLs are verified again against it.

        Raises:
            CrlError: a CRL is not signed by a root of the bundle.
        """
        with self._lock:
            new_bundle = bundle if bundle is not None else self._bundle
            raw = crls if crls is not None else [v.crl for v in self._crls]
            verified = self._verify(new_bundle, raw)
            self._bundle = new_bundle
            self._crls = verified
            self._cache.clear()

    def authenticate(self, leaf_pem: bytes) -> Principal:
        """Return the caller's :class:`Principal`, or raise :class:`UnauthenticatedError`.

        A certificate already admitted under the current bundle and CRLs is answered from the
        cache while it is still valid; the first call, and any after a change, does every check.
        """
        now = self._clock()
        cached = self._cache.get(leaf_pem)
        if cached is not None and now <= cached.not_after:
            return cached
        try:
            cert = x509.load_pem_x509_certificate(leaf_pem)
        except ValueError as exc:
            raise UnauthenticatedError("peer certificate is not a valid X.509 certificate") from exc
        with self._lock:
            bundle, crls = self._bundle, self._crls
        principal = self._check(cert, fingerprint(cert), now, bundle, crls)
        with self._lock:
            if bundle is self._bundle and crls is self._crls:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[leaf_pem] = principal
        return principal

    @staticmethod
    def _check(
        cert: x509.Certificate,
        fp: str,
        now: dt.datetime,
        bundle: TrustBundle,
        crls: tuple[VerifiedCrl, ...],
    ) -> Principal:
        # Only CRLs verified against the bundle reach here (see update), so the shared leaf
        # check may match them to the issuing root by name.
        identity = verify_leaf(cert, bundle, [v.crl for v in crls], at=now, usage="client")
        return Principal(identity, fp, cert.not_valid_after_utc)
