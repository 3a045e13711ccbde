"""The node's signing certificate and key, reloaded from disk without a restart (ADR 0063).

The TLS material follows its files (``gateway.transport.ServerTls``); the signing material does
the same here: the node's file watcher calls :meth:`SigningMaterial.refresh`, which reloads the
certificate and key when either file changed and hands the new :class:`Signer` to the node. A
pair that does not load as a whole (a certificate renewed while its key is not yet copied, a key
that does not match, a certificate for another identity) is refused with one warning and the
node goes on signing with the pair it has; the next change of either file retries.

What reads the signer reads :attr:`SigningMaterial.signer` at that moment: a new envelope,
receipt, checkpoint or cosignature is signed with the pair in force, and health, metrics and
``status`` report that pair, not the files on disk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from gateway.envelope import Signer
from gateway.errors import GatewayError
from gateway.pki.expiry import certificate_serial

__all__ = ["SigningMaterial"]

log = logging.getLogger("gateway.server.signing")


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


class SigningMaterial:
    """The signing pair in force, and the files it follows.

    Args:
        certificate: the signing certificate file.
        key: the signing key file.
        load: reads and checks both files, returning the signer; raises a
            :class:`GatewayError` (or ``ValueError``) for a pair that must not be used.
        on_change: called with the new signer after a reload, before anything signs with it
            (the node stores the new certificate with its ledger there, for auditors).
    """

    def __init__(
        self,
        certificate: Path,
        key: Path,
        load: Callable[[], Signer],
        on_change: Callable[[Signer], None] | None = None,
    ) -> None:
        self._paths = (certificate, key)
        self._load = load
        self._on_change = on_change
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self.signer: Signer = load()
        self.generation = 0  # bumped at each reload

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        return tuple(_stamp(p) for p in self._paths)

    def refresh(self) -> bool:
        """Reload the pair if either file changed; True when a new signer is in force.

        Never raises for a bad pair: it is logged (one line, naming the problem) and the pair
        in force stays.
        """
        with self._lock:
            stamp = self._stamps()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                signer = self._load()
            except (GatewayError, ValueError, OSError) as exc:
                log.warning(
                    "signing certificate not reloaded: %s; still signing with certificate %s",
                    exc,
                    certificate_serial(self.signer.certificate),
                    extra={"event": "signing-not-reloaded"},
                )
                return False
            if signer.certificate_der == self.signer.certificate_der and (
                signer.private_key.public_key().public_bytes_raw()
                == self.signer.private_key.public_key().public_bytes_raw()
            ):
                return False  # touched, not changed
            old = self.signer
            if self._on_change is not None:
                self._on_change(signer)
            self.signer = signer
            self.generation += 1
        log.info(
            "signing certificate reloaded: now %s (not after %s), was %s",
            certificate_serial(signer.certificate),
            signer.certificate.not_valid_after_utc.isoformat(),
            certificate_serial(old.certificate),
            extra={
                "event": "signing-reloaded",
                "serial": certificate_serial(signer.certificate),
                "generation": self.generation,
            },
        )
        return True
