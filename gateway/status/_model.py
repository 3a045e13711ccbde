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
    "LeaseStatus",
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
class LeaseStatus:
    """A singleton's lease as the node's database has it (replicas on PostgreSQL)."""

    name: str
    holder: str  # empty: no replica ever took it
    epoch: int
    acquired_at: dt.datetime | None
    expires_in_seconds: float  # by the database's clock; negative: ran out that long ago
    here: bool  # held by the replica that answered

    @property
    def held(self) -> bool:
        """Whether some replica holds it now."""
        return bool(self.holder) and self.expires_in_seconds > 0


# What stops while a singleton's lease is held by no replica (ADR 0072).
_SINGLETON_DUTY = {
    "checkpointer": "no checkpoints are made",
    "witness-client": "no peer's checkpoints are witnessed",
    "retention": "nothing past its retention is erased",
}


def _duty(name: str) -> str:
    if name.startswith("deliver-"):
        return f"nothing is delivered to {name.removeprefix('deliver-')}"
    return _SINGLETON_DUTY.get(name, "its work stops")


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
    storage: str = "sqlite"
    replica: str = ""  # this replica's name as a lease holder; empty on SQLite
    leases: tuple[LeaseStatus, ...] = ()  # empty on SQLite: the one process holds them all
    lease_seconds: float = 5.0


class ProblemKind(enum.StrEnum):
    """What kind of attention a problem needs."""

    PEER_UNREACHABLE = "peer-unreachable"
    DELIVERY_FAILING = "delivery-failing"
    BACKLOG_STUCK = "backlog-stuck"
    CERTIFICATE_EXPIRING = "certificate-expiring"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CRL_STALE = "crl-stale"
    COSIGNATURE_MISSING = "cosignature-missing"
    LEASE_UNHELD = "lease-unheld"


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
      minute) that a peer's witness has not cosigned;
    - replicas on PostgreSQL: a singleton's lease that no replica has held for three lease
      lengths (a live replica takes a free lease within one), so its work has stopped.
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
    problems += _lease_problems(status)
    return StatusReport(status, tuple(problems), days, stuck_after)


def _lease_problems(status: NodeStatus) -> list[Problem]:
    """Leases held by no replica for longer than a takeover takes (see :func:`assess`)."""
    grace = 3 * status.lease_seconds
    started = status.started_at
    up = status.now - started if started is not None else None
    problems = []
    for lease in status.leases:
        if lease.held:
            continue
        if not lease.holder:
            if up is not None and up.total_seconds() <= grace:
                continue
            why = "no replica has taken it" + (f" in the {_ago(up)} since start" if up else "")
        elif -lease.expires_in_seconds > grace:
            why = (
                f"it ran out {_ago(dt.timedelta(seconds=-lease.expires_in_seconds))} ago "
                f"(last held by {lease.holder}, epoch {lease.epoch}) and no replica renewed it"
            )
        else:
            continue
        problems.append(
            Problem(
                ProblemKind.LEASE_UNHELD,
                lease.name,
                f"lease {lease.name} is held by no replica: {why}; {_duty(lease.name)} "
                "(can the replicas reach the database?)",
            )
        )
    return problems
