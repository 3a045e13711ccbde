"""What ``customs-gateway status`` shows, and what needs attention (pure).

:class:`NodeStatus` holds the facts a node reports about itself (``NodeStatus.GetStatus``);
:func:`assess` judges them at a given time against thresholds and returns a :class:`StatusReport`
whose :attr:`~StatusReport.problems` are each one line an operator can act on.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_STUCK_AFTER",
    "CertificateInUse",
    "CheckpointStatus",
    "CrlInForce",
    "NodeStatus",
    "PeerStatus",
    "Problem",
    "ProblemKind",
    "StatusReport",
    "assess",
]

DEFAULT_STUCK_AFTER = dt.timedelta(minutes=5)
"""A backlog whose oldest message waits longer than this is stuck."""

_MIN_COSIGN_GRACE = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class CheckpointStatus:
    """The node's latest checkpoint and the jurisdictions whose witnesses cosigned it."""

    size: int
    created_at: dt.datetime
    cosigners: tuple[str, ...]


@dataclass(frozen=True)
class PeerStatus:
    """A peer as this node sees it: reachability now, outbox backlog, delivery history."""

    jurisdiction: str
    address: str
    reachable: bool
    probe_error: str
    queued: int
    failing: int
    oldest_pending: dt.datetime | None
    consecutive_failures: int
    last_success: dt.datetime | None
    last_failure: dt.datetime | None
    last_error: str
    cosigned_size: int

    @property
    def backlog(self) -> int:
        """Messages not yet delivered to this peer."""
        return self.queued + self.failing


@dataclass(frozen=True)
class CertificateInUse:
    """A certificate the node uses now (TLS, signing) or trusts (a bundle root)."""

    name: str
    subject: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str

    def days_left(self, now: dt.datetime) -> float:
        """Days until it expires (negative once expired)."""
        return (self.not_after - now).total_seconds() / 86400


@dataclass(frozen=True)
class CrlInForce:
    """A CRL the node enforces."""

    issuer: str
    number: int
    this_update: dt.datetime
    next_update: dt.datetime | None
    revoked: int


@dataclass(frozen=True)
class NodeStatus:
    """Everything a node reports about itself, as of :attr:`now` (its clock)."""

    address: str
    identity: str
    jurisdiction: str
    version: str
    now: dt.datetime
    started_at: dt.datetime | None
    ledger_size: int
    checkpoint: CheckpointStatus | None
    peers: tuple[PeerStatus, ...]
    certificates: tuple[CertificateInUse, ...]
    crls: tuple[CrlInForce, ...]
    expiry_warning_days: int
    checkpoint_interval_seconds: float


class ProblemKind(enum.StrEnum):
    """What kind of attention a problem needs."""

    PEER_UNREACHABLE = "peer-unreachable"
    DELIVERY_FAILING = "delivery-failing"
    BACKLOG_STUCK = "backlog-stuck"
    CERTIFICATE_EXPIRING = "certificate-expiring"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CRL_STALE = "crl-stale"
    COSIGNATURE_MISSING = "cosignature-missing"


@dataclass(frozen=True)
class Problem:
    """One thing that needs attention, as one line."""

    kind: ProblemKind
    subject: str  # a peer's jurisdiction, a certificate's name, a CRL's issuer
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class StatusReport:
    """A node's status and what needs attention in it (empty when all is well)."""

    status: NodeStatus
    problems: tuple[Problem, ...] = field(default=())
    warning_days: int = 14
    stuck_after: dt.timedelta = DEFAULT_STUCK_AFTER

    @property
    def ok(self) -> bool:
        """True when nothing needs attention."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document: the status (times in ISO 8601 UTC) and the problems."""
        doc: dict[str, Any] = _jsonable(asdict(self.status))
        doc["ok"] = self.ok
        doc["warning_days"] = self.warning_days
        doc["stuck_after_seconds"] = self.stuck_after.total_seconds()
        doc["problems"] = [
            {"kind": p.kind.value, "subject": p.subject, "message": p.message}
            for p in self.problems
        ]
        return doc


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _ago(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def assess(
    status: NodeStatus,
    *,
    warning_days: int | None = None,
    stuck_after: dt.timedelta = DEFAULT_STUCK_AFTER,
) -> StatusReport:
    """Judge ``status`` at its own ``now``: what needs attention, one :class:`Problem` each.

    - a peer the node cannot reach now (with the last delivery error, if any);
    - a reachable peer to which delivery keeps failing (e.g. it refuses our certificate);
    - a backlog whose oldest message has waited longer than ``stuck_after``;
    - a certificate in use or trusted that expires within ``warning_days`` (default: the
      node's own ``server.expiry_warning_days``) or has expired;
    - a CRL past its next update;
    - a checkpoint older than the cosigning grace (three checkpoint intervals, at least a
      minute) that a peer's witness has not cosigned.
    """
    now = status.now
    days = status.expiry_warning_days if warning_days is None else warning_days
    problems: list[Problem] = []
    for peer in status.peers:
        name = f"peer {peer.jurisdiction} ({peer.address})"
        if not peer.reachable:
            since = (
                f"; last delivered {peer.last_success.isoformat()}"
                if peer.last_success is not None
                else ""
            )
            detail = f"; {peer.backlog} message(s) waiting" if peer.backlog else ""
            problems.append(
                Problem(
                    ProblemKind.PEER_UNREACHABLE,
                    peer.jurisdiction,
                    f"{name} unreachable: {peer.probe_error or 'no answer'}{detail}{since}",
                )
            )
        elif peer.consecutive_failures > 0 and peer.backlog:
            problems.append(
                Problem(
                    ProblemKind.DELIVERY_FAILING,
                    peer.jurisdiction,
                    f"delivery to {name} failing ({peer.consecutive_failures} attempt(s) since "
                    f"the last success): {peer.last_error or 'unknown error'}",
                )
            )
        if peer.oldest_pending is not None and now - peer.oldest_pending > stuck_after:
            problems.append(
                Problem(
                    ProblemKind.BACKLOG_STUCK,
                    peer.jurisdiction,
                    f"outbox to {name} stuck: {peer.backlog} message(s) waiting, the oldest for "
                    f"{_ago(now - peer.oldest_pending)} (since {peer.oldest_pending.isoformat()})",
                )
            )
    window = dt.timedelta(days=days)
    for cert in status.certificates:
        left = cert.not_after - now
        what = f"{cert.name} certificate {cert.serial} ({cert.subject})"
        if left < dt.timedelta(0):
            problems.append(
                Problem(
                    ProblemKind.CERTIFICATE_EXPIRED,
                    cert.name,
                    f"{what} expired at {cert.not_after.isoformat()}",
                )
            )
        elif left <= window:
            problems.append(
                Problem(
                    ProblemKind.CERTIFICATE_EXPIRING,
                    cert.name,
                    f"{what} expires in {cert.days_left(now):.1f} days "
                    f"({cert.not_after.isoformat()}; warning under {days} days)",
                )
            )
    for crl in status.crls:
        if crl.next_update is not None and now > crl.next_update:
            problems.append(
                Problem(
                    ProblemKind.CRL_STALE,
                    crl.issuer,
                    f"{crl.issuer} CRL number {crl.number} is past its next update "
                    f"{crl.next_update.isoformat()}: publish a new one",
                )
            )
    checkpoint = status.checkpoint
    grace = max(_MIN_COSIGN_GRACE, dt.timedelta(seconds=3 * status.checkpoint_interval_seconds))
    if checkpoint is not None and now - checkpoint.created_at > grace:
        for peer in status.peers:
            if peer.jurisdiction not in checkpoint.cosigners:
                problems.append(
                    Problem(
                        ProblemKind.COSIGNATURE_MISSING,
                        peer.jurisdiction,
                        f"checkpoint {checkpoint.size} (made {_ago(now - checkpoint.created_at)} "
                        f"ago) lacks the cosignature of {peer.jurisdiction}'s witness "
                        f"(it last cosigned size {peer.cosigned_size})",
                    )
                )
    return StatusReport(status, tuple(problems), days, stuck_after)
