"""The exchange between nodes: submit, receive, acknowledge, deliver, witness, retain.

- :class:`Exchange` (``core``): the facade over the submit, receive, acknowledge, status and
  erasure paths (modules ``submit``, ``receive``, ``inbound``, ``status``, ``retention``; ADR
  0016), each writing its rows in the same transaction as its ledger entry (ADR 0004).
- :class:`Deliverer` (``delivery``): one per peer, sends the outbox in order until receipted
  (ADR 0005).
- :class:`WitnessClient` and :func:`witness_cosign` (``witness``): cosigning each other's
  checkpoints, C2SP tlog-witness semantics over gRPC (ADR 0006).
- :class:`Watchlists` (``watchlists``): the node's merged watchlist view, fed by the exchange.

The tables live in ``_store`` (private): only this package and the audit readers know them,
and only ``_store`` writes SQL for them. What differs between message kinds is read from the
table in :mod:`gateway.domain.kinds`.
"""

from gateway.exchange.core import AMEND, END, NEW, PUBLISH, Exchange, Mode
from gateway.exchange.delivery import Backoff, Deliverer
from gateway.exchange.watchlists import Watchlists
from gateway.exchange.witness import (
    WitnessClient,
    WitnessConflictError,
    cosigner_name,
    ledger_origin,
    witness_cosign,
)

__all__ = [
    "AMEND",
    "END",
    "NEW",
    "PUBLISH",
    "Backoff",
    "Deliverer",
    "Exchange",
    "Mode",
    "Watchlists",
    "WitnessClient",
    "WitnessConflictError",
    "cosigner_name",
    "ledger_origin",
    "witness_cosign",
]
