"""What a node checks before it serves anything (ADR 0025): one node per data directory, private
files, and that the certificates it presents are its own.

A node that cannot enforce what its config says does not start. Every refusal here is a
:class:`StartupError` (or another :class:`gateway.errors.GatewayError`): one line naming the path
or the config key, which ``customs-gateway serve`` prints and exits with status 2.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.errors import FailedPreconditionError, GatewayError
from gateway.pki.authority import identity_of
from gateway.pki.bundle import TrustBundle, fingerprint
from gateway.pki.chain import Usage, verify_leaf
from gateway.pki.identity import SpiffeId
from gateway.pki.keys import check_certificate_key

__all__ = [
    "LEDGER_FILES",
    "LOCK_FILE",
    "DataDirectory",
    "StartupError",
    "check_own_certificate",
]

log = logging.getLogger("gateway.server")

LOCK_FILE = "lock"
LEDGER_FILES = (
    "ledger.db", "ledger.db-wal", "ledger.db-shm", LOCK_FILE,
    "watchlist-view.db", "watchlist-view.db-wal", "watchlist-view.db-shm",
)  # fmt: skip
"""The files of a data directory that must be private (0600): SQLite gives ``-wal`` and
``-shm`` the mode of the database file, which the node creates 0600."""

_DIR_MODE = 0o700
_FILE_MODE = 0o600


class StartupError(FailedPreconditionError):
    """Something on this machine keeps the node from starting: one line, naming the path."""


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


class DataDirectory:
    """The node's data directory, locked for this process until :meth:`release`.

    Opening it (1) creates it 0700 if missing; (2) refuses a path that is not a directory, is
    not owned by this user, or that group or others may write; tightens a directory others may
    only read or enter to 0700, saying so in the log; (3) takes an exclusive ``flock`` on
    ``lock`` inside it, holding this process's pid, so a second node on the same directory is
    refused with the holder's pid; (4) does the same owner/mode check for each ledger file that
    exists (tightened to 0600, or refused if others may write it), and creates ``ledger.db``
    0600 if it does not exist yet (unless the ledger is in PostgreSQL: ``create_ledger``
    False, and no empty file misleads an operator into exporting it).
    """

    def __init__(self, path: Path, *, create_ledger: bool = True) -> None:
        """Check and lock ``path``.

        Raises:
            StartupError: naming the path and the problem.
        """
        self.path = path
        self._fd: int | None = None
        self._prepare_directory()
        self._lock()
        try:
            for name in LEDGER_FILES:
                self._check_file(path / name)
            if create_ledger:
                self._create_database(path / LEDGER_FILES[0])
        except BaseException:
            self.release()
            raise

    @property
    def ledger(self) -> Path:
        """The ledger's SQLite file."""
        return self.path / LEDGER_FILES[0]

    def _prepare_directory(self) -> None:
        path = self.path
        try:
            st = path.stat()
        except FileNotFoundError:
            try:
                path.mkdir(mode=_DIR_MODE, parents=True)
            except OSError as exc:
                raise StartupError(
                    f"data directory {path} cannot be created: {_why(exc)}"
                ) from None
            return
        except OSError as exc:
            raise StartupError(f"data directory {path} cannot be read: {_why(exc)}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StartupError(f"data directory {path} is not a directory")
        self._check_owner_and_mode(path, st, _DIR_MODE, "data directory")

    def _check_owner_and_mode(
        self, path: Path, st: os.stat_result, private: int, what: str
    ) -> None:
        if st.st_uid != os.geteuid():
            raise StartupError(
                f"{what} {path} belongs to uid {st.st_uid}, not to this user (uid "
                f"{os.geteuid()}): the node keeps its ledger only in files of its own"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            raise StartupError(
                f"{what} {path} is writable by group or others (mode {_mode(st)}): anyone "
                f"could have replaced the ledger; check it, then chmod {private:o} {path}"
            )
        if mode & 0o077:
            try:
                os.chmod(path, private)
            except OSError as exc:
                raise StartupError(
                    f"{what} {path} is readable by others (mode {_mode(st)}) and cannot be "
                    f"made {private:04o}: {_why(exc)}"
                ) from None
            log.warning(
                "%s %s was readable by group or others (mode %s); now %04o",
                what,
                path,
                _mode(st),
                private,
                extra={"event": "permissions-tightened", "path": str(path)},
            )

    def _lock(self) -> None:
        lock = self.path / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _FILE_MODE)
        except OSError as exc:
            raise StartupError(
                f"data directory {self.path}: lock file {lock} cannot be opened: {_why(exc)}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = b""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 32, 0)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StartupError(
                    f"data directory {self.path}: lock file {lock} cannot be locked: {_why(exc)}"
                ) from None
            pid = holder.decode("ascii", "replace").strip()
            who = f"pid {pid}" if pid.isdigit() else "a process whose pid is unknown"
            raise StartupError(
                f"data directory {self.path} is in use by another node ({who}, lock {lock}); "
                "one node per data directory"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise StartupError(f"lock file {lock} cannot be written: {_why(exc)}") from None
        self._fd = fd

    def _check_file(self, path: Path) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StartupError(f"ledger file {path} cannot be read: {_why(exc)}") from None
        if not stat.S_ISREG(st.st_mode):
            raise StartupError(f"ledger file {path} is not a regular file")
        self._check_owner_and_mode(path, st, _FILE_MODE, "ledger file")
        if path.name != LOCK_FILE and not os.access(path, os.R_OK | os.W_OK):
            raise StartupError(
                f"ledger file {path} is not readable and writable by this user "
                f"(mode {_mode(st)}): a node that cannot write its ledger cannot record anything"
            )

    def _create_database(self, path: Path) -> None:
        # SQLite creates its -wal and -shm files with the database file's mode: make it 0600.
        try:
            fd = os.open(
                path,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                _FILE_MODE,
            )
        except FileExistsError:
            return
        except OSError as exc:
            raise StartupError(f"ledger file {path} cannot be created: {_why(exc)}") from None
        os.close(fd)

    def release(self) -> None:
        """Unlock the directory (the lock file stays; a crash releases the lock too)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def check_own_certificate(
    cert: x509.Certificate,
    bundle: TrustBundle,
    crls: list[x509.CertificateRevocationList],
    *,
    expected: SpiffeId,
    usage: Usage,
    what: str,
    now: dt.datetime | None = None,
) -> None:
    """Refuse a certificate of the node's own that is not what it must be.

    Every root of ``bundle`` must have an allowed key. For the TLS certificate
    (``usage="server"``): the identity ``expected`` (a ``node`` of the
    node's own jurisdiction and name), chained to a root of that jurisdiction in ``bundle``,
    valid now, not revoked, with an allowed key, both the server and client authentication
    EKUs (a node serves and dials its peers) and the digitalSignature key usage. For the
    signing certificate (``usage="signing"``) the same with the document-signing EKU.

    Raises:
        StartupError: ``"<what> ... is spiffe://.../partner/x, not spiffe://.../node/gateway"``
            or the failed step of :func:`gateway.pki.chain.verify_leaf`.
    """
    now = now or dt.datetime.now(dt.UTC)
    for jurisdiction, root in bundle:  # the roots are certificates the node meets too
        try:
            check_certificate_key(root, f"{jurisdiction} root {fingerprint(root)[:16]}")
        except GatewayError as exc:
            raise StartupError(f"trust bundle: {exc}") from None
    if not bundle.roots_of(expected.jurisdiction):
        raise StartupError(
            f"the trust bundle has no root of this node's own jurisdiction {expected.jurisdiction}"
        )
    # The identity first: "a partner's certificate" says more than "lacks server EKU".
    try:
        named = identity_of(cert)
    except GatewayError as exc:
        raise StartupError(f"{what} is not a customs-exchange identity: {exc}") from None
    if named != expected:
        raise StartupError(f"{what} is {named.uri}, not this node's identity {expected.uri}")
    try:
        verify_leaf(cert, bundle, crls, at=now, usage=usage)
    except GatewayError as exc:
        raise StartupError(f"{what} cannot be used: {exc}") from None
    if usage == "server":
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            raise StartupError(
                f"{what} lacks the TLS client authentication EKU a node needs to dial its peers"
            )
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise StartupError(f"{what} has no key usage extension (digitalSignature needed)") from None
    if not ku.digital_signature:
        raise StartupError(f"{what} does not allow digitalSignature in its key usage")
