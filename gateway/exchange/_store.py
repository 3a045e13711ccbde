"""The exchange's own tables, in the ledger's store (SQLite file or PostgreSQL database) so they
commit with its entries. Portable SQL (ADR 0070): the DDL is written in SQLite's form and
translated by :func:`gateway.store.ddl`; the one aggregate that differs branches on the dialect.

Every write here runs inside a ledger transaction (``Ledger.append(..., within=...)`` or
``Ledger.write``): a message row, its outbox rows and its ``sent`` entry are durable together or
not at all. Reads use the ledger's per-thread read connections.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from gateway.errors import FailedPreconditionError
from gateway.store import Connection, Schema, append_only, ddl, ensure_schema

__all__ = [
    "DELIVERED",
    "FAILING",
    "QUEUED",
    "REFUSED",
    "Ack",
    "Expired",
    "InboundRow",
    "MessageRow",
    "OutboxRow",
    "StoredPayload",
    "StoredVersion",
    "create_schema",
]

# Outbox states; the numbers are the proto DeliveryState values.
QUEUED, DELIVERED, FAILING, REFUSED = 1, 2, 3, 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchange_messages (
    message_id      TEXT NOT NULL,
    direction       TEXT NOT NULL CHECK (direction IN ('out', 'in')),
    origin          TEXT NOT NULL,
    kind            INTEGER NOT NULL,
    subject         TEXT NOT NULL,
    version         INTEGER NOT NULL,
    digest          BLOB NOT NULL,
    request_digest  BLOB,
    envelope        BLOB,
    ledger_index    INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    retain_until_ms INTEGER,
    erased_ms       INTEGER,
    erased_index    INTEGER,
    receipt         BLOB,
    PRIMARY KEY (origin, message_id)
);
CREATE TABLE IF NOT EXISTS exchange_versions (
    origin  TEXT NOT NULL,
    subject TEXT NOT NULL,
    version INTEGER NOT NULL,
    final   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, subject)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exchange_outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL,  -- of a message this node sent (origin: this node)
    recipient       TEXT NOT NULL,
    state           INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    receipt         BLOB,
    receipt_index   INTEGER,
    UNIQUE (message_id, recipient)
);
CREATE INDEX IF NOT EXISTS exchange_outbox_pending
    ON exchange_outbox(recipient, state, seq);
CREATE TABLE IF NOT EXISTS exchange_inbound (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    origin     TEXT NOT NULL,
    message_id TEXT NOT NULL,
    kind       INTEGER NOT NULL,
    UNIQUE (origin, message_id),
    FOREIGN KEY (origin, message_id) REFERENCES exchange_messages(origin, message_id)
);
CREATE TABLE IF NOT EXISTS exchange_acks (
    origin       TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    partner      TEXT NOT NULL,
    ledger_index INTEGER NOT NULL,
    PRIMARY KEY (origin, message_id, partner),
    FOREIGN KEY (origin, message_id) REFERENCES exchange_messages(origin, message_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exchange_witness (
    origin TEXT PRIMARY KEY,
    size   INTEGER NOT NULL,
    root   BLOB NOT NULL,
    note   TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exchange_certificates (
    fingerprint TEXT PRIMARY KEY,
    der         BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exchange_witnessed_by (
    witness TEXT PRIMARY KEY,
    size    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exchange_cosigned (
    ledger_index INTEGER PRIMARY KEY,  -- this node's `witnessed` entry (ADR 0015)
    origin       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    old_size     INTEGER NOT NULL,
    proof        BLOB NOT NULL,        -- the consistency proof checked, 32-byte hashes
    note         BLOB NOT NULL,        -- the peer's checkpoint note as it presented it
    cosignature  TEXT NOT NULL         -- this node's tlog-cosignature/v1 line
);
CREATE TABLE IF NOT EXISTS exchange_witness_evidence (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    origin         TEXT NOT NULL,
    problem        TEXT NOT NULL,      -- fork or rollback
    detected_ms    INTEGER NOT NULL,
    cosigned_note  BLOB NOT NULL,      -- the checkpoint this node had cosigned
    presented_note BLOB NOT NULL,      -- the one the peer presented, inconsistent with it
    old_size       INTEGER NOT NULL,
    proof          BLOB NOT NULL,
    reason         TEXT NOT NULL
);
"""


# What a node cosigned and the evidence it keeps are for auditors: never rewritten or removed.
_APPEND_ONLY = ("exchange_cosigned", "exchange_witness_evidence")


def _create(conn: Connection) -> None:
    """Version 1: the exchange tables and the append-only triggers (idempotent)."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(ddl(conn, statement))
    for table in _APPEND_ONLY:
        append_only(conn, table, f"{table} is append-only")


def _index_subjects(conn: Connection) -> None:
    """Version 2: messages found by subject. An update or revocation of an entry asks who was
    sent its earlier versions (:func:`recipients_of`); without this index each such question
    read every message, so a bulk revoke slowed with the size of the list (2,000 revocations
    of a 100,000-entry list recorded nothing in six minutes)."""
    conn.execute(
        "CREATE INDEX IF NOT EXISTS exchange_messages_subject ON exchange_messages(origin, subject)"
    )


def _recipients_by_subject(conn: Connection) -> None:
    """Version 3: who was sent a subject is kept in its version row (``recipients``, the
    jurisdiction codes joined by commas; NULL for a subject of another origin), which a submit
    reads and writes anyway, so messages need no index by subject (version 2's), one b-tree
    fewer rewritten per bulk call with uuid-keyed subjects (ADR 0085). Filled here from the
    outbox rows of each subject's messages, as :func:`recipients_of` read them until now."""
    conn.execute("ALTER TABLE exchange_versions ADD COLUMN recipients TEXT")
    codes = (
        "group_concat(DISTINCT o.recipient)"
        if conn.dialect == "sqlite"
        else "string_agg(DISTINCT o.recipient, ',')"
    )
    conn.execute(
        f"UPDATE exchange_versions SET recipients = (SELECT {codes} "  # noqa: S608
        "FROM exchange_outbox o JOIN exchange_messages m ON m.message_id = o.message_id "
        "AND m.origin = exchange_versions.origin AND m.direction = 'out' "
        "WHERE m.subject = exchange_versions.subject)"
    )
    conn.execute("DROP INDEX IF EXISTS exchange_messages_subject")


EXCHANGE_SCHEMA = Schema("exchange", {1: _create, 2: _index_subjects, 3: _recipients_by_subject})


def create_schema(conn: Connection) -> None:
    """Create or upgrade the exchange tables (versioned); run by ``Ledger.open(schema=...)``."""
    ensure_schema(conn, EXCHANGE_SCHEMA)


@dataclass(frozen=True)
class MessageRow:
    """A message this node sent or received."""

    message_id: str
    direction: str
    origin: str
    kind: int
    subject: str
    version: int
    digest: bytes
    request_digest: bytes | None
    envelope: bytes | None
    ledger_index: int
    created_ms: int
    receipt: bytes | None

    _COLUMNS = (
        "message_id, direction, origin, kind, subject, version, digest, request_digest, "
        "envelope, ledger_index, created_ms, receipt"
    )
    LEDGER_INDEX: ClassVar[int] = [c.strip() for c in _COLUMNS.split(",")].index("ledger_index")
    """The ledger index's position in a row's values (:meth:`insert_values`)."""

    @classmethod
    def get(cls, conn: Connection, origin: str, message_id: str) -> MessageRow | None:
        """The row of ``message_id`` from ``origin``, or None.

        Message ids are unique per origin only: another jurisdiction's node cannot block or
        stand in for a message by sending one of its own under the same id. An id that could
        not be stored (:func:`is_stored_id`) is absent without a query: a NUL byte is not even
        a PostgreSQL text value, and a caller's id must never make a read fail.
        """
        if not is_stored_id(message_id):
            return None
        row = conn.execute(
            f"SELECT {cls._COLUMNS} FROM exchange_messages "  # noqa: S608
            "WHERE origin = ? AND message_id = ?",
            (origin, message_id),
        ).fetchone()
        return cls(*row) if row else None

    @classmethod
    def with_id(cls, conn: Connection, message_id: str) -> list[MessageRow]:
        """Every row with ``message_id``, whatever its origin (usually one)."""
        rows = conn.execute(
            f"SELECT {cls._COLUMNS} FROM exchange_messages "  # noqa: S608
            "WHERE message_id = ? ORDER BY ledger_index",
            (message_id,),
        ).fetchall()
        return [cls(*row) for row in rows]

    @classmethod
    def get_many(
        cls, conn: Connection, origin: str, message_ids: list[str]
    ) -> dict[str, MessageRow]:
        """The rows of ``message_ids`` from ``origin`` that exist, by id (one query; at most
        500 ids)."""
        message_ids = [m for m in message_ids if _storable(m)]
        if not message_ids:
            return {}
        marks = ",".join("?" * len(message_ids))
        rows = conn.execute(
            f"SELECT {cls._COLUMNS} FROM exchange_messages "  # noqa: S608
            f"WHERE origin = ? AND message_id IN ({marks})",
            [origin, *message_ids],
        ).fetchall()
        return {row[0]: cls(*row) for row in rows}

    _INSERT = (
        "INSERT INTO exchange_messages (message_id, direction, origin, kind, subject, "
        "version, digest, request_digest, envelope, ledger_index, created_ms, receipt, "
        "retain_until_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )

    def insert(self, conn: Connection, retain_until_ms: int | None) -> None:
        """Insert this row (raises one of ``integrity_errors()`` if the id exists)."""
        conn.execute(self._INSERT, self._values(retain_until_ms))

    @classmethod
    def insert_many(cls, conn: Connection, rows: Sequence[tuple[MessageRow, int | None]]) -> None:
        """Insert each (row, retain until) in one ``executemany`` (a bulk call's commit)."""
        conn.executemany(cls._INSERT, [row._values(retain) for row, retain in rows])

    @classmethod
    def insert_value_row(cls, conn: Connection, row: Sequence[object]) -> None:
        """:meth:`insert_values` of one row (raises one of ``integrity_errors()`` if the id
        exists)."""
        conn.execute(cls._INSERT, row)

    @classmethod
    def insert_values(cls, conn: Connection, rows: Sequence[Sequence[object]]) -> None:
        """Insert rows given as their values, in one ``executemany``: each is what
        :meth:`_values` gives (the fields in order, then the retention end); no row objects."""
        conn.executemany(cls._INSERT, rows)

    def _values(self, retain_until_ms: int | None) -> tuple[object, ...]:
        return (
            self.message_id,
            self.direction,
            self.origin,
            self.kind,
            self.subject,
            self.version,
            self.digest,
            self.request_digest,
            self.envelope,
            self.ledger_index,
            self.created_ms,
            self.receipt,
            retain_until_ms,
        )


def erase(conn: Connection, origin: str, message_id: str, erased_ms: int, index: int) -> None:
    """Drop a message's payload (the envelope), remembering when and at which ledger index.

    Raises:
        FailedPreconditionError: it was already erased (the caller's entry is rolled back).
    """
    done = conn.execute(
        "UPDATE exchange_messages SET envelope = NULL, erased_ms = ?, erased_index = ? "
        "WHERE origin = ? AND message_id = ? AND envelope IS NOT NULL",
        (erased_ms, index, origin, message_id),
    ).rowcount
    if done != 1:
        raise FailedPreconditionError(f"message {message_id} is already erased")


def still_stored(conn: Connection, message_ids: set[str]) -> set[str]:
    """Which of ``message_ids`` still have their payload (not erased), asked 500 at a time."""
    held: set[str] = set()
    ids = sorted(message_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        held.update(
            row[0]
            for row in conn.execute(
                "SELECT message_id FROM exchange_messages "  # noqa: S608
                f"WHERE envelope IS NOT NULL AND message_id IN ({marks})",
                chunk,
            )
        )
    return held


@dataclass(frozen=True)
class StoredPayload:
    """A message whose payload is still stored, as replay reads it."""

    message_id: str
    origin: str
    kind: int
    envelope: bytes
    created_ms: int


def stored_payloads(conn: Connection, kinds: Sequence[int]) -> Iterator[StoredPayload]:
    """Every message of ``kinds`` whose payload is still stored, in ledger order; streamed
    (the cursor is read as the caller iterates), so memory does not grow with history."""
    marks = ",".join("?" * len(kinds))
    rows = conn.execute(
        "SELECT message_id, origin, kind, envelope, created_ms FROM exchange_messages "  # noqa: S608
        f"WHERE envelope IS NOT NULL AND kind IN ({marks}) ORDER BY ledger_index",
        list(kinds),
    )
    for row in rows:
        yield StoredPayload(*row)


@dataclass(frozen=True)
class Expired:
    """A message whose retention has ended and whose payload is still stored."""

    message_id: str
    origin: str
    kind: int
    digest: bytes


def expired(conn: Connection, now_ms: int) -> list[Expired]:
    """Every stored payload whose retention ended at or before ``now_ms``, in ledger order."""
    rows = conn.execute(
        "SELECT message_id, origin, kind, digest FROM exchange_messages "
        "WHERE envelope IS NOT NULL AND retain_until_ms <= ? "
        "ORDER BY ledger_index",
        (now_ms,),
    ).fetchall()
    return [Expired(*row) for row in rows]


def last_version(conn: Connection, origin: str, subject: str) -> tuple[int, bool] | None:
    """(last version, final) recorded for ``subject`` of ``origin``, or None if never seen."""
    row = conn.execute(
        "SELECT version, final FROM exchange_versions WHERE origin = ? AND subject = ?",
        (origin, subject),
    ).fetchone()
    return (int(row[0]), bool(row[1])) if row else None


# Built once: the statement's text is also the key of the connection's statement cache.
_MESSAGE_AND_VERSION = (
    "SELECT v.version, v.final, "  # noqa: S608 - column names, no input
    + ", ".join(f"m.{c.strip()}" for c in MessageRow._COLUMNS.split(","))
    + " FROM (SELECT 1 AS one) AS one "
    "LEFT JOIN exchange_messages m ON m.origin = ? AND m.message_id = ? "
    "LEFT JOIN exchange_versions v ON v.origin = ? AND v.subject = ?"
)


def message_and_version(
    conn: Connection, origin: str, message_id: str, subject: str
) -> tuple[MessageRow | None, tuple[int, bool] | None]:
    """:meth:`MessageRow.get` of ``message_id`` and :func:`last_version` of ``subject``, both
    of ``origin``, in one statement: a single submit's reads in one round trip (on PostgreSQL
    one pooled connection and one snapshot, not two; ADR 0074)."""
    if not (_storable(message_id) and _storable(subject)):  # so never stored: absent
        return MessageRow.get(conn, origin, message_id), None
    row = conn.execute(_MESSAGE_AND_VERSION, (origin, message_id, origin, subject)).fetchone()
    message = MessageRow(*row[2:]) if row[2] is not None else None
    return message, (int(row[0]), bool(row[1])) if row[0] is not None else None


def advance_version(
    conn: Connection,
    origin: str,
    subject: str,
    known: tuple[int, bool] | None,
    version: int,
    final: bool,
    recipients: Sequence[str],
) -> None:
    """Record ``version`` (higher than ``known``'s) of ``subject``, sent to ``recipients``, if
    its stored state is still ``known`` (None: never recorded): the check and the write in one
    statement (ADR 0074). ``recipients`` include every earlier version's (the submit checked
    that, against this very state), so they replace the stored ones.

    Raises:
        one of ``integrity_errors()`` (the version's NOT NULL) when another submit moved the
        subject on meanwhile: nothing is written. On PostgreSQL inside a pipeline the error
        comes when the pipeline is synchronised.
    """
    conn.execute(
        _ADVANCE_VERSION, advance_rows(origin, [(subject, known, version, final, recipients)])[0]
    )


def advance_versions(conn: Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """:func:`advance_version` of each row of :func:`advance_rows`, in order, in one
    ``executemany`` (a bulk call's commit): each subject's stored state is checked by its
    write, a subject of the call against the state its earlier row left (ADR 0085).

    Raises:
        one of ``integrity_errors()``, as :func:`advance_version`.
    """
    conn.executemany(_ADVANCE_VERSION, rows)


def advance_rows(
    origin: str,
    versions: Sequence[tuple[str, tuple[int, bool] | None, int, bool, Sequence[str]]],
) -> list[tuple[object, ...]]:
    """The values :func:`advance_versions` writes for each (subject, known, version, final,
    recipients) of ``origin`` (this node): made by the caller, outside the ledger writer."""
    codes: dict[tuple[str, ...], str] = {}
    rows: list[tuple[object, ...]] = []
    for subject, known, version, final, recipients in versions:
        key = tuple(recipients)
        text = codes.get(key)
        if text is None:
            text = codes[key] = _codes(recipients)
        was, was_final = (known[0], int(known[1])) if known is not None else (None, None)
        rows.append((origin, subject, version, int(final), text, was, was_final))
    return rows


_ADVANCE_VERSION = (
    "INSERT INTO exchange_versions (origin, subject, version, final, recipients) "
    "VALUES (?,?,?,?,?) "
    "ON CONFLICT (origin, subject) DO UPDATE SET version = CASE WHEN "
    "exchange_versions.version = ? AND exchange_versions.final = ? "
    "THEN excluded.version END, final = excluded.final, recipients = excluded.recipients"
)


def _codes(recipients: Sequence[str]) -> str:
    """Jurisdiction codes as a version row keeps them: sorted, joined by commas."""
    return ",".join(sorted(set(recipients)))


def recipients_of(conn: Connection, origin: str, subject: str) -> set[str]:
    """Every jurisdiction that was sent a version of ``subject`` by ``origin`` (this node)."""
    row = conn.execute(
        "SELECT recipients FROM exchange_versions WHERE origin = ? AND subject = ?",
        (origin, subject),
    ).fetchone()
    return set(row[0].split(",")) if row is not None and row[0] else set()


def record_version(conn: Connection, origin: str, subject: str, version: int, final: bool) -> None:
    """Remember the highest version of ``subject`` of another origin (never lowers it)."""
    conn.execute(_RECORD_VERSION, (origin, subject, version, int(final)))


_RECORD_VERSION = (
    "INSERT INTO exchange_versions (origin, subject, version, final) VALUES (?,?,?,?) "
    "ON CONFLICT (origin, subject) DO UPDATE SET final = CASE WHEN excluded.version > "
    "exchange_versions.version THEN excluded.final ELSE exchange_versions.final END, "
    "version = CASE WHEN excluded.version > exchange_versions.version "
    "THEN excluded.version ELSE exchange_versions.version END"
)


@dataclass(frozen=True)
class OutboxRow:
    """One (message, recipient) delivery."""

    seq: int
    message_id: str
    recipient: str
    state: int
    attempts: int
    last_error: str
    next_attempt_ms: int
    receipt: bytes | None

    _COLUMNS = "seq, message_id, recipient, state, attempts, last_error, next_attempt_ms, receipt"


def enqueue(conn: Connection, message_id: str, recipients: list[str]) -> None:
    """Queue ``message_id`` for each recipient, in order (one statement: on PostgreSQL an
    ``executemany`` inside the writer's pipeline costs a round trip of its own)."""
    if not recipients:
        return
    conn.execute(
        "INSERT INTO exchange_outbox (message_id, recipient, state) VALUES "  # noqa: S608
        + ",".join(["(?,?,?)"] * len(recipients)),
        [value for r in recipients for value in (message_id, r, QUEUED)],
    )


def enqueue_many(conn: Connection, rows: Sequence[tuple[str, str, int]]) -> None:
    """Insert :func:`outbox_rows` in one ``executemany`` (a bulk call's commit)."""
    conn.executemany(
        "INSERT INTO exchange_outbox (message_id, recipient, state) VALUES (?,?,?)", rows
    )


def outbox_rows(messages: Sequence[tuple[str, list[str]]]) -> list[tuple[str, str, int]]:
    """The outbox rows that queue each (message id, recipients), in order: what
    :func:`enqueue` would insert for each, made by the caller, outside the ledger writer."""
    return [(message_id, r, QUEUED) for message_id, recipients in messages for r in recipients]


def pending(conn: Connection, recipient: str, limit: int, after: int = 0) -> list[OutboxRow]:
    """Undelivered rows for ``recipient`` after outbox number ``after``, in submit order (the
    head decides when to retry)."""
    rows = conn.execute(
        f"SELECT {OutboxRow._COLUMNS} FROM exchange_outbox "  # noqa: S608
        "WHERE recipient = ? AND state IN (?, ?) AND seq > ? ORDER BY seq LIMIT ?",
        (recipient, QUEUED, FAILING, after, limit),
    ).fetchall()
    return [OutboxRow(*r) for r in rows]


def pending_counts(conn: Connection) -> dict[tuple[str, int], int]:
    """Undelivered outbox rows by (recipient, state): what is queued or failing now."""
    rows = conn.execute(
        "SELECT recipient, state, count(*) FROM exchange_outbox WHERE state IN (?, ?) "
        "GROUP BY recipient, state",
        (QUEUED, FAILING),
    ).fetchall()
    return {(recipient, state): count for recipient, state, count in rows}


def oldest_pending(conn: Connection, origin: str) -> dict[str, int]:
    """Per recipient, when the oldest undelivered message of ``origin`` (this node) was sent
    (Unix milliseconds): how long the backlog has waited."""
    rows = conn.execute(
        "SELECT o.recipient, min(m.created_ms) FROM exchange_outbox o JOIN exchange_messages m "
        "ON m.origin = ? AND m.message_id = o.message_id WHERE o.state IN (?, ?) "
        "GROUP BY o.recipient",
        (origin, QUEUED, FAILING),
    ).fetchall()
    return {recipient: int(created) for recipient, created in rows}


def outbox_of(conn: Connection, message_id: str) -> list[OutboxRow]:
    """Every delivery row of ``message_id``."""
    rows = conn.execute(
        f"SELECT {OutboxRow._COLUMNS} FROM exchange_outbox "  # noqa: S608
        "WHERE message_id = ? ORDER BY seq",
        (message_id,),
    ).fetchall()
    return [OutboxRow(*r) for r in rows]


def mark_delivered(conn: Connection, seq: int, receipt: bytes, receipt_index: int) -> None:
    """Record the verified receipt of a delivery."""
    conn.execute(
        "UPDATE exchange_outbox SET state = ?, receipt = ?, receipt_index = ?, last_error = '', "
        "attempts = attempts + 1 WHERE seq = ?",
        (DELIVERED, receipt, receipt_index, seq),
    )


def mark_failed(
    conn: Connection, seqs: list[int], error: str, next_attempt_ms: int, *, final: bool
) -> None:
    """Record a failed attempt: retried later (``FAILING``) or never (``REFUSED``)."""
    conn.executemany(
        "UPDATE exchange_outbox SET state = ?, attempts = attempts + 1, last_error = ?, "
        "next_attempt_ms = ? WHERE seq = ?",
        [(REFUSED if final else FAILING, error[:500], next_attempt_ms, s) for s in seqs],
    )


@dataclass(frozen=True)
class InboundRow:
    """A received message as partners see it on their stream."""

    seq: int
    message_id: str
    kind: int
    origin: str
    ledger_index: int
    envelope: bytes | None


def add_inbound(conn: Connection, origin: str, message_id: str, kind: int) -> None:
    """Make a received message visible to partner streams."""
    conn.execute(
        "INSERT INTO exchange_inbound (origin, message_id, kind) VALUES (?, ?, ?)",
        (origin, message_id, kind),
    )


def inbound_after(
    conn: Connection, seq: int, kinds: tuple[int, ...], limit: int
) -> list[InboundRow]:
    """Inbound messages after cursor ``seq``, oldest first, optionally of ``kinds`` only."""
    sql = (
        "SELECT i.seq, i.message_id, i.kind, m.origin, m.ledger_index, m.envelope "
        "FROM exchange_inbound i JOIN exchange_messages m USING (origin, message_id) "
        "WHERE i.seq > ?"
    )
    args: list[object] = [seq]
    if kinds:
        sql += f" AND i.kind IN ({','.join('?' * len(kinds))})"
        args += kinds
    sql += " ORDER BY i.seq LIMIT ?"
    args.append(limit)
    return [InboundRow(*r) for r in conn.execute(sql, args).fetchall()]


@dataclass(frozen=True)
class Ack:
    """A partner's acknowledgement of an inbound message."""

    ledger_index: int


def ack_of(conn: Connection, origin: str, message_id: str, partner: str) -> Ack | None:
    """The acknowledgement of ``message_id`` from ``origin`` by ``partner``, or None."""
    row = conn.execute(
        "SELECT ledger_index FROM exchange_acks "
        "WHERE origin = ? AND message_id = ? AND partner = ?",
        (origin, message_id, partner),
    ).fetchone()
    return Ack(int(row[0])) if row else None


def add_ack(
    conn: Connection, origin: str, message_id: str, partner: str, ledger_index: int
) -> None:
    """Record an acknowledgement (raises one of ``integrity_errors()`` when it exists)."""
    conn.execute(
        "INSERT INTO exchange_acks (origin, message_id, partner, ledger_index) VALUES (?,?,?,?)",
        (origin, message_id, partner, ledger_index),
    )


@dataclass(frozen=True)
class Received:
    """What an acknowledgement records of a received message."""

    origin: str
    message_id: str
    kind: int
    digest: bytes


def _storable(text: str) -> bool:
    """Whether ``text`` could be a stored value at all: PostgreSQL refuses a NUL byte in text
    (and every stored id and subject is validated, so none has one). A read given such a
    value from a caller answers "absent" rather than failing (INTERNAL) on PostgreSQL."""
    return "\x00" not in text


def is_stored_id(message_id: str) -> bool:
    """Whether ``message_id`` could be stored at all: only UUIDs are (every submit and receive
    checks), so anything else is answered as absent without a query (a NUL byte is not even a
    PostgreSQL text value)."""
    try:
        uuid.UUID(message_id)
    except ValueError:
        return False
    return True


def received_with_ids(
    conn: Connection, origins: Sequence[str], message_ids: Sequence[str]
) -> list[Received]:
    """The received messages from one of ``origins`` with one of ``message_ids`` (one query on
    the primary key, not a scan; at most 500 ids)."""
    sql = (
        "SELECT origin, message_id, kind, digest FROM exchange_messages "  # noqa: S608
        f"WHERE origin IN ({','.join('?' * len(origins))}) "
        f"AND message_id IN ({','.join('?' * len(message_ids))}) AND direction = 'in'"
    )
    rows = conn.execute(sql, [*origins, *message_ids]).fetchall()
    return [Received(r[0], r[1], int(r[2]), bytes(r[3])) for r in rows]


def acks_by(
    conn: Connection, partner: str, origins: Sequence[str], message_ids: Sequence[str]
) -> dict[tuple[str, str], int]:
    """The ledger index of ``partner``'s acknowledgement of each of ``message_ids`` from one
    of ``origins`` that it acknowledged, by (origin, message id) (one query; at most 500 ids)."""
    sql = (
        "SELECT origin, message_id, ledger_index FROM exchange_acks "  # noqa: S608
        f"WHERE origin IN ({','.join('?' * len(origins))}) "
        f"AND message_id IN ({','.join('?' * len(message_ids))}) AND partner = ?"
    )
    rows = conn.execute(sql, [*origins, *message_ids, partner]).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


def witness_state(conn: Connection, origin: str) -> tuple[int, bytes] | None:
    """(size, root) of the last checkpoint this node cosigned for ``origin``."""
    row = conn.execute(
        "SELECT size, root FROM exchange_witness WHERE origin = ?", (origin,)
    ).fetchone()
    return (int(row[0]), bytes(row[1])) if row else None


def set_witness_state(conn: Connection, origin: str, size: int, root: bytes, note: str) -> None:
    """Remember the checkpoint just cosigned for ``origin``."""
    conn.execute(
        "INSERT INTO exchange_witness (origin, size, root, note) VALUES (?,?,?,?) "
        "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
        "note = excluded.note",
        (origin, size, root, note),
    )


def witnessed_size(conn: Connection, witness: str) -> int:
    """The size ``witness`` last cosigned for this node (0 if never)."""
    row = conn.execute(
        "SELECT size FROM exchange_witnessed_by WHERE witness = ?", (witness,)
    ).fetchone()
    return int(row[0]) if row else 0


def set_witnessed_size(conn: Connection, witness: str, size: int) -> None:
    """Remember the size ``witness`` last cosigned."""
    conn.execute(
        "INSERT INTO exchange_witnessed_by (witness, size) VALUES (?, ?) "
        "ON CONFLICT (witness) DO UPDATE SET size = excluded.size",
        (witness, size),
    )


def ledger_indexes(conn: Connection, origin: str, message_id: str) -> list[int]:
    """Every ledger index that records something about ``message_id`` from ``origin``."""
    row = conn.execute(
        "SELECT direction, ledger_index, erased_index FROM exchange_messages "
        "WHERE origin = ? AND message_id = ?",
        (origin, message_id),
    ).fetchone()
    if row is None:
        return []
    direction, first, erased = row
    found = {int(first)} | ({int(erased)} if erased is not None else set())
    if direction == "out":  # one "sent" entry per recipient, consecutive; then the receipts
        concat = (
            "group_concat(receipt_index)"
            if conn.dialect == "sqlite"
            else "string_agg(CAST(receipt_index AS TEXT), ',')"
        )
        outbox = conn.execute(
            f"SELECT count(*), {concat} FROM exchange_outbox WHERE message_id = ?",  # noqa: S608
            (message_id,),
        ).fetchone()
        found.update(range(first, first + outbox[0]))
        found.update(int(i) for i in (outbox[1] or "").split(",") if i)
    for (index,) in conn.execute(
        "SELECT ledger_index FROM exchange_acks WHERE origin = ? AND message_id = ?",
        (origin, message_id),
    ):
        found.add(int(index))
    return sorted(found)


def keep_certificate(conn: Connection, der: bytes) -> None:
    """Keep a signing certificate (this node's, a witness's) for auditors; idempotent.

    Auditors verify checkpoints and cosignatures from these, so they must outlive the
    envelopes and receipts that also carry them (which are erased at the end of retention).
    """
    conn.execute(
        "INSERT INTO exchange_certificates (fingerprint, der) VALUES (?, ?) "
        "ON CONFLICT (fingerprint) DO NOTHING",
        (hashlib.sha256(der).hexdigest(), der),
    )


def kept_certificates(conn: Connection) -> list[bytes]:
    """The signing certificates kept by :func:`keep_certificate` (DER)."""
    return [bytes(r[0]) for r in conn.execute("SELECT der FROM exchange_certificates")]


def record_cosigned(
    conn: Connection,
    index: int,
    origin: str,
    size: int,
    old_size: int,
    proof: list[bytes],
    note: bytes,
    cosignature: str,
) -> None:
    """Keep what this node cosigned for a peer, beside its ``witnessed`` entry ``index``."""
    conn.execute(
        "INSERT INTO exchange_cosigned "
        "(ledger_index, origin, size, old_size, proof, note, cosignature) VALUES (?,?,?,?,?,?,?)",
        (index, origin, size, old_size, b"".join(proof), note, cosignature),
    )


def last_cosigned_note(conn: Connection, origin: str) -> bytes:
    """The signed note of the last checkpoint this node cosigned for ``origin``, as presented
    (for one cosigned before notes were kept: its body as cosigned; empty if none)."""
    row = conn.execute(
        "SELECT note FROM exchange_cosigned WHERE origin = ? ORDER BY ledger_index DESC LIMIT 1",
        (origin,),
    ).fetchone()
    if row is not None:
        return bytes(row[0])
    row = conn.execute("SELECT note FROM exchange_witness WHERE origin = ?", (origin,)).fetchone()
    return str(row[0]).encode() if row else b""


def keep_evidence(
    conn: Connection,
    origin: str,
    problem: str,
    detected_ms: int,
    cosigned_note: bytes,
    presented_note: bytes,
    old_size: int,
    proof: list[bytes],
    reason: str,
) -> None:
    """Keep both notes of an inconsistent checkpoint a peer presented (append-only); the same
    note presented again against the same cosigned one is kept once."""
    conn.execute(
        "INSERT INTO exchange_witness_evidence (origin, problem, detected_ms, cosigned_note, "
        "presented_note, old_size, proof, reason) SELECT ?,?,?,?,?,?,?,? WHERE NOT EXISTS "
        "(SELECT 1 FROM exchange_witness_evidence WHERE origin = ? AND cosigned_note = ? "
        "AND presented_note = ?)",
        (
            origin,
            problem,
            detected_ms,
            cosigned_note,
            presented_note,
            old_size,
            b"".join(proof),
            reason,
            origin,
            cosigned_note,
            presented_note,
        ),
    )


def evidence_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """(origin, problem) -> inconsistent checkpoints this node refused and keeps as evidence."""
    return {
        (str(o), str(p)): int(n)
        for o, p, n in conn.execute(
            "SELECT origin, problem, count(*) FROM exchange_witness_evidence "
            "GROUP BY origin, problem"
        )
    }


def evidence_summaries(conn: Connection) -> list[str]:
    """One line per evidence row, newest first: what an operator's health probe shows."""
    return [
        f"{problem} of {origin}: {reason}"
        for origin, problem, reason in conn.execute(
            "SELECT origin, problem, reason FROM exchange_witness_evidence ORDER BY id DESC"
        )
    ]


class StoredVersion(NamedTuple):
    """A subject's row of ``exchange_versions``: its last version, whether that one was final,
    and every jurisdiction sent a version of it (this node's own subjects; empty otherwise)."""

    version: int
    final: bool
    recipients: frozenset[str]

    @property
    def known(self) -> tuple[int, bool]:
        """(version, final): the state a submit is judged against (:func:`advance_version`)."""
        return self.version, self.final


def last_versions(
    conn: Connection, origin: str, subjects: Sequence[str]
) -> dict[str, StoredVersion]:
    """The version rows of many subjects at once (a bulk submit): only those ever seen; the
    recipients come in the same read, so an amendment's check needs no query of its own."""
    found: dict[str, StoredVersion] = {}
    unique = sorted({s for s in subjects if _storable(s)})
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT subject, version, final, recipients FROM exchange_versions "  # noqa: S608
            f"WHERE origin = ? AND subject IN ({marks})",
            [origin, *chunk],
        )
        for subject, version, final, recipients in rows:
            found[subject] = StoredVersion(
                int(version), bool(final), frozenset(recipients.split(",") if recipients else ())
            )
    return found
