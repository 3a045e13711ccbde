"""The node's revocation state in its own store (ADR 0024): per issuing root, the highest CRL
number it has put in force and the file it came from, in the ledger's store (SQLite file or
PostgreSQL database).

The table is versioned by a row of ``ledger_meta`` (``revocation_schema``), written once when
the table is made; a store of another version is refused at open rather than misread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from gateway.errors import UnavailableError
from gateway.ledger import Ledger
from gateway.ledger.errors import LedgerCorruptError
from gateway.pki.identity import IdentityError, Jurisdiction
from gateway.pki.revocation import IssuerState
from gateway.store import Connection, ddl

__all__ = ["SCHEMA_VERSION", "LedgerRevocationStore", "create_schema"]

SCHEMA_VERSION = "1"


def create_schema(conn: Connection) -> None:
    """Create the revocation table if missing and check its version (inside the caller's
    transaction; run by ``Ledger.open(schema=...)``).

    Raises:
        LedgerCorruptError: the store holds another version of the table.
    """
    conn.execute(
        ddl(
            conn,
            "CREATE TABLE IF NOT EXISTS revocation_issuers ("
            " key_id TEXT PRIMARY KEY,"  # hex key identifier of the issuing root
            " jurisdiction TEXT NOT NULL,"
            " crl_number TEXT NOT NULL,"  # decimal: RFC 5280 allows numbers of up to 20 octets
            " path TEXT NOT NULL,"  # the configured file the CRL came from
            " updated_ms INTEGER NOT NULL"
            ") WITHOUT ROWID",
        )
    )
    conn.execute(
        "INSERT INTO ledger_meta(key, value) VALUES ('revocation_schema', ?) "
        "ON CONFLICT (key) DO NOTHING",
        (SCHEMA_VERSION,),
    )
    (version,) = conn.execute(
        "SELECT value FROM ledger_meta WHERE key = 'revocation_schema'"
    ).fetchone()
    if version != SCHEMA_VERSION:
        raise LedgerCorruptError(
            f"revocation state of schema version {version}; this node knows {SCHEMA_VERSION}"
        )


class LedgerRevocationStore:
    """A :class:`gateway.pki.revocation.RevocationStore` in the node's ledger file."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def issuers(self) -> dict[str, IssuerState]:
        """Every issuer's state, by key id.

        Raises:
            LedgerCorruptError: a row that does not parse (the store was altered).
        """
        with contextlib.closing(self._ledger.own_reader()) as conn:
            rows = conn.execute(
                "SELECT key_id, jurisdiction, crl_number, path FROM revocation_issuers"
            ).fetchall()
        out: dict[str, IssuerState] = {}
        for key_id, jurisdiction, number, path in rows:
            try:
                out[key_id] = IssuerState(
                    key_id, Jurisdiction.parse(jurisdiction), int(number), path
                )
            except (IdentityError, ValueError) as exc:
                raise LedgerCorruptError(f"revocation_issuers row {key_id}: {exc}") from None
        return out

    def record(self, states: Sequence[IssuerState]) -> None:
        """Store ``states`` durably (the ledger's writer commits them); a stored number is
        never lowered, whatever the caller passes.

        Raises:
            UnavailableError: the commit failed; nothing new is in force.
        """
        now = time.time_ns() // 1_000_000

        def write(conn: Connection) -> None:
            for s in states:
                row = conn.execute(
                    "SELECT crl_number FROM revocation_issuers WHERE key_id = ?", (s.key_id,)
                ).fetchone()
                number = s.number if row is None else max(s.number, int(row[0]))
                conn.execute(
                    "INSERT INTO revocation_issuers"
                    "(key_id, jurisdiction, crl_number, path, updated_ms) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (key_id) DO UPDATE SET jurisdiction = excluded.jurisdiction, "
                    "crl_number = excluded.crl_number, path = excluded.path, "
                    "updated_ms = excluded.updated_ms",
                    (s.key_id, s.jurisdiction.value, str(number), s.path, now),
                )

        try:
            self._ledger.write(write)
        except Exception as exc:
            raise UnavailableError(
                f"revocation state not stored in {self._ledger.where}: {exc}"
            ) from exc
