"""What replicas of one node share beyond the ledger and the exchange's tables: the lease rows
of their singletons (ADR 0072) and the trigger that wakes every replica when one of them adds
ledger entries (ADR 0073). PostgreSQL only: a node on SQLite is one process."""

from __future__ import annotations

from gateway.store._database import Connection
from gateway.store._schema import Schema
from gateway.store.leases import create_lease_table
from gateway.store.notify import create_ledger_trigger

__all__ = ["REPLICA_SCHEMA"]


def _create(conn: Connection) -> None:
    create_lease_table(conn)
    create_ledger_trigger(conn)


REPLICA_SCHEMA = Schema("replicas", {1: _create})
