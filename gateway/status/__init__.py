"""One node at a glance, for its operators: ``customs-gateway status``.

Library first: :func:`status_with_config` / :func:`status_with_certificate` fetch a node's
:class:`NodeStatus` (the node's own view: identity, ledger and last checkpoint with its
cosigners, each peer's reachability, backlog and delivery history, the certificates in use and
the CRLs in force); :func:`assess` turns it into a :class:`StatusReport` whose problems are one
line each. The CLI (``gateway.cli.status``) only formats.
"""

from gateway.status._client import (
    NodeUnreachableError,
    fetch_status,
    from_proto,
    status_with_certificate,
    status_with_config,
)
from gateway.status._model import (
    DEFAULT_STUCK_AFTER,
    CertificateInUse,
    CheckpointStatus,
    CrlInForce,
    LeaseStatus,
    NodeStatus,
    PeerStatus,
    Problem,
    ProblemKind,
    StatusReport,
    assess,
)

__all__ = [
    "DEFAULT_STUCK_AFTER",
    "CertificateInUse",
    "CheckpointStatus",
    "CrlInForce",
    "LeaseStatus",
    "NodeStatus",
    "NodeUnreachableError",
    "PeerStatus",
    "Problem",
    "ProblemKind",
    "StatusReport",
    "assess",
    "fetch_status",
    "from_proto",
    "status_with_certificate",
    "status_with_config",
]
