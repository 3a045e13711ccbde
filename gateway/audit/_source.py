"""Where an audit reads a ledger from: the node's SQLite file, its PostgreSQL database (through
a connection the caller opens), or an export file.

Reads the documented formats (docs/ledger-format.md) directly; imports nothing from the server
or its store: a database connection is anything with ``execute`` taking ``?`` placeholders.
"""

from __future__ import annotations

import sqlite3
import struct
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from google.protobuf.message import DecodeError

from customs.gateway.v1 import envelope_pb2
from gateway.audit.errors import ExportFormatError

EXPORT_MAGIC_V1 = b"customs-gateway ledger export 1\n"
EXPORT_MAGIC_V2 = b"customs-gateway ledger export 2\n"
EXPORT_MAGIC = b"customs-gateway ledger export 3\n"
_MAGICS = {EXPORT_MAGIC_V1: 1, EXPORT_MAGIC_V2: 2, EXPORT_MAGIC: 3}
SQLITE_MAGIC = b"SQLite format 3\x00"
T_ORIGIN, T_ENTRY, T_CHECKPOINT, T_CERTIFICATE, T_ENVELOPE, T_WITHHELD, T_END = (
    1,
    2,
    3,
    4,
    5,
    6,
    255,
)
T_COSIGNED, T_RECEIPT, T_EVIDENCE = 7, 8, 9  # version 3 (ADR 0015)
_RECORD = struct.Struct(">BI")
_END_V1 = struct.Struct(">QQ")
_END_V2 = struct.Struct(">QQQQ")
_END = struct.Struct(">QQQQQQQ")
_COSIGNED_HEAD = struct.Struct(">QQQ")  # ledger index, size, old size
_RECEIPT_HEAD = struct.Struct(">16s2s")  # message id, recipient (e.g. b"HK")
_EVIDENCE_HEAD = struct.Struct(">2s8sQQ")  # origin, problem, detected ms, old size
_U32 = struct.Struct(">I")
_ENVELOPE_HEAD = struct.Struct(">16s2sQ")  # message id, origin (e.g. b"CN"), created ms
_WITHHELD = struct.Struct(">16s2s")
_CHUNK = 10_000


@dataclass(frozen=True)
class StoredEnvelope:
    """A message's signed envelope as the node keeps it; ``envelope`` is None once erased, or
    when it was ``withheld`` from the auditor who fetched it (not releasable to them)."""

    message_id: uuid.UUID
    created_ms: int
    envelope: bytes | None
    withheld: bool = False
    origin: str = ""  # the jurisdiction code of the message's origin: ids are unique per origin

    @property
    def key(self) -> tuple[str, uuid.UUID]:
        """(origin, message id): what identifies a message across the three ledgers."""
        return self.origin, self.message_id

    def encode(self) -> bytes:
        """The body of an export envelope record (docs/ledger-format.md, export version 2)."""
        if self.withheld:
            return _WITHHELD.pack(self.message_id.bytes, self.origin.encode())
        head = _ENVELOPE_HEAD.pack(self.message_id.bytes, self.origin.encode(), self.created_ms)
        return head + (self.envelope or b"")

    @classmethod
    def decode(cls, body: bytes) -> StoredEnvelope:
        """Parse an envelope record body; an empty envelope means erased."""
        if len(body) < _ENVELOPE_HEAD.size:
            raise ExportFormatError(f"envelope record of {len(body)} bytes is too short")
        mid, origin, created = _ENVELOPE_HEAD.unpack_from(body)
        rest = body[_ENVELOPE_HEAD.size :]
        return cls(uuid.UUID(bytes=mid), created, rest or None, origin=origin.decode("ascii"))

    @classmethod
    def decode_withheld(cls, body: bytes) -> StoredEnvelope:
        """Parse a withheld-envelope record body (message id and origin)."""
        if len(body) != _WITHHELD.size:
            raise ExportFormatError(f"withheld record of {len(body)} bytes, not {_WITHHELD.size}")
        mid, origin = _WITHHELD.unpack(body)
        return cls(uuid.UUID(bytes=mid), 0, None, withheld=True, origin=origin.decode("ascii"))


def _blob(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _blobs(body: bytes, at: int, count: int, what: str) -> list[bytes]:
    """``count`` uint32-length-prefixed byte strings from ``at``; nothing may follow them."""
    out = []
    for _ in range(count):
        if at + _U32.size > len(body):
            raise ExportFormatError(f"{what} record ends inside a length")
        (n,) = _U32.unpack_from(body, at)
        at += _U32.size
        if at + n > len(body):
            raise ExportFormatError(f"{what} record ends inside a field of {n} bytes")
        out.append(body[at : at + n])
        at += n
    if at != len(body):
        raise ExportFormatError(f"{what} record has {len(body) - at} bytes after its fields")
    return out


def _hashes(blob: bytes, what: str) -> tuple[bytes, ...]:
    if len(blob) % 32:
        raise ExportFormatError(f"{what}: proof of {len(blob)} bytes is not whole hashes")
    return tuple(blob[i : i + 32] for i in range(0, len(blob), 32))


@dataclass(frozen=True)
class CosignedCheckpoint:
    """What a node cosigned for a peer, kept beside its ``witnessed`` entry ``index``: the
    peer's checkpoint note as the peer presented it (signed by the peer's log key), the
    consistency proof from ``old_size`` the node checked, and its own cosignature line."""

    index: int
    size: int
    old_size: int
    proof: tuple[bytes, ...]
    note: bytes
    cosignature: str

    def encode(self) -> bytes:
        """The body of an export ``cosigned`` record (docs/ledger-format.md, version 3)."""
        return (
            _COSIGNED_HEAD.pack(self.index, self.size, self.old_size)
            + _blob(b"".join(self.proof))
            + _blob(self.note)
            + _blob(self.cosignature.encode())
        )

    @classmethod
    def decode(cls, body: bytes) -> CosignedCheckpoint:
        """Parse a ``cosigned`` record body."""
        if len(body) < _COSIGNED_HEAD.size:
            raise ExportFormatError(f"cosigned record of {len(body)} bytes is too short")
        index, size, old = _COSIGNED_HEAD.unpack_from(body)
        proof, note, line = _blobs(body, _COSIGNED_HEAD.size, 3, "cosigned")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ExportFormatError("cosigned record: cosignature line is not UTF-8") from e
        return cls(index, size, old, _hashes(proof, "cosigned record"), note, text)


@dataclass(frozen=True)
class StoredReceipt:
    """The signed receipt a recipient returned for a message this node sent: the serialized
    ``SignedReceipt`` exactly as received (docs/envelopes.md)."""

    message_id: uuid.UUID
    recipient: str
    receipt: bytes

    @property
    def key(self) -> tuple[uuid.UUID, str]:
        """(message id, recipient): a ``receipt`` entry's message id and counterpart."""
        return self.message_id, self.recipient

    def encode(self) -> bytes:
        """The body of an export ``receipt`` record (docs/ledger-format.md, version 3)."""
        return _RECEIPT_HEAD.pack(self.message_id.bytes, self.recipient.encode()) + self.receipt

    @classmethod
    def decode(cls, body: bytes) -> StoredReceipt:
        """Parse a ``receipt`` record body."""
        if len(body) <= _RECEIPT_HEAD.size:
            raise ExportFormatError(f"receipt record of {len(body)} bytes is too short")
        mid, recipient = _RECEIPT_HEAD.unpack_from(body)
        return cls(
            uuid.UUID(bytes=mid),
            recipient.decode("ascii", errors="replace"),
            body[_RECEIPT_HEAD.size :],
        )


@dataclass(frozen=True)
class WitnessEvidence:
    """Both notes of a checkpoint a peer presented that was inconsistent with the one this node
    had cosigned (``problem``: ``fork`` or ``rollback``), with the proof it came with."""

    origin: str  # the peer's jurisdiction code
    problem: str
    detected_ms: int
    old_size: int
    proof: tuple[bytes, ...]
    cosigned_note: bytes
    presented_note: bytes

    def encode(self) -> bytes:
        """The body of an export ``evidence`` record (docs/ledger-format.md, version 3)."""
        head = _EVIDENCE_HEAD.pack(
            self.origin.encode(), self.problem.encode().ljust(8), self.detected_ms, self.old_size
        )
        return (
            head
            + _blob(b"".join(self.proof))
            + _blob(self.cosigned_note)
            + _blob(self.presented_note)
        )

    @classmethod
    def decode(cls, body: bytes) -> WitnessEvidence:
        """Parse an ``evidence`` record body."""
        if len(body) < _EVIDENCE_HEAD.size:
            raise ExportFormatError(f"evidence record of {len(body)} bytes is too short")
        origin, problem, detected, old = _EVIDENCE_HEAD.unpack_from(body)
        proof, cosigned, presented = _blobs(body, _EVIDENCE_HEAD.size, 3, "evidence")
        return cls(
            origin.decode("ascii", errors="replace"),
            problem.decode("ascii", errors="replace").strip(),
            detected,
            old,
            _hashes(proof, "evidence record"),
            cosigned,
            presented,
        )


@dataclass(frozen=True)
class WitnessRecords:
    """What an export of version 3 (or a database) carries beyond version 2."""

    cosigned: list[CosignedCheckpoint]
    receipts: list[StoredReceipt]
    evidence: list[WitnessEvidence]


def _signer_certificates(blobs: Iterable[bytes | None]) -> list[bytes]:
    """The distinct ``signer_certificate`` DERs of serialized envelopes and signed receipts."""
    found: dict[bytes, None] = {}
    for blob in blobs:
        if not blob:
            continue
        for cls in (envelope_pb2.Envelope, envelope_pb2.SignedReceipt):
            try:
                der = cls.FromString(blob).signer_certificate
            except DecodeError:
                continue
            if der:
                found[der] = None
                break
    return list(found)


class LedgerSource(Protocol):
    """A ledger to audit: origin, entry count, entries in order, signed checkpoint notes."""

    origin: str
    count: int

    def entries(self) -> Iterator[tuple[int, bytes]]:
        """``(stored index, canonical bytes)`` in stored order."""
        ...

    def checkpoints(self) -> list[str]:
        """Every signed checkpoint note with its cosignature lines."""
        ...

    def stored_leaf_hash(self, index: int) -> bytes | None:
        """The leaf hash the node stored at append time, if the source has one."""
        ...

    def stored_tiles(self) -> Iterator[tuple[int, bytes]] | None:
        """A database's stored tiles ``(row id, hashes)`` in id order; None for an export."""
        ...

    def certificates(self) -> list[bytes]:
        """Signing certificates (DER) of the log and of witnesses, as carried by the source."""
        ...

    def envelopes(self) -> dict[tuple[str, uuid.UUID], StoredEnvelope] | None:
        """The messages' envelopes by (origin, id), or None when the source carries none."""
        ...

    def witness_records(self) -> WitnessRecords | None:
        """What the node cosigned, its receipts and its evidence; None when not carried."""
        ...


class SqlConnection(Protocol):
    """A database connection taking ``?`` placeholders (sqlite3's, or the node store's
    PostgreSQL connection); ``dialect`` is ``"postgresql"`` for the latter."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any:
        """Run one statement; the result has ``fetchone``/``fetchall``."""

    def close(self) -> None:
        """Close the connection."""


_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master",
    "postgresql": "SELECT table_name FROM information_schema.tables "
    "WHERE table_schema = current_schema()",
}
# One snapshot for the whole export: a live node (or another replica) may append meanwhile.
_SNAPSHOT = {"sqlite": "BEGIN", "postgresql": "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"}


class DatabaseSource:
    """A node's ledger store, read in one snapshot: the SQLite file at ``path`` (opened
    read-only), or ``conn``, an open connection to its PostgreSQL database (``where`` names it
    in messages; closed with this source)."""

    def __init__(
        self, path: Path | None = None, *, conn: SqlConnection | None = None, where: str = ""
    ) -> None:
        if conn is None:
            assert path is not None
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
            where = str(path)
        self._conn = conn
        dialect = str(getattr(conn, "dialect", "sqlite"))
        try:
            self._conn.execute(_SNAPSHOT[dialect])
            meta = dict(self._conn.execute("SELECT key, value FROM ledger_meta").fetchall())
            self.count = self._conn.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
        except Exception as e:  # sqlite3's or the driver's: the store is not a ledger
            raise ExportFormatError(f"{where} is not a ledger database: {e}") from e
        self.origin = str(meta.get("origin", ""))
        tables = {r[0] for r in self._conn.execute(_TABLES[dialect]).fetchall()}
        self._exchange = {"exchange_messages", "exchange_outbox"} <= tables
        self._certificates_kept = "exchange_certificates" in tables
        self._tiles = "ledger_tiles" in tables
        self._witnessing = {"exchange_cosigned", "exchange_witness_evidence"} <= tables

    def witness_records(self) -> WitnessRecords | None:
        """The node's ``exchange_cosigned``, outbox receipts and witness evidence rows."""
        if not self._witnessing:
            return None
        q = self._conn.execute
        cosigned = [
            CosignedCheckpoint(
                int(i), int(size), int(old), _hashes(bytes(p), "cosigned"), bytes(n), str(c)
            )
            for i, size, old, p, n, c in q(
                "SELECT ledger_index, size, old_size, proof, note, cosignature "
                "FROM exchange_cosigned ORDER BY ledger_index"
            ).fetchall()
        ]
        receipts = [
            StoredReceipt(uuid.UUID(mid), str(recipient), bytes(receipt))
            for mid, recipient, receipt in q(
                "SELECT message_id, recipient, receipt FROM exchange_outbox "
                "WHERE receipt IS NOT NULL ORDER BY receipt_index"
            ).fetchall()
        ]
        evidence = [
            WitnessEvidence(
                str(origin).split(".")[0].upper(),
                str(problem),
                int(ms),
                int(old),
                _hashes(bytes(p), "evidence"),
                bytes(c),
                bytes(pr),
            )
            for origin, problem, ms, old, p, c, pr in q(
                "SELECT origin, problem, detected_ms, old_size, proof, cosigned_note, "
                "presented_note FROM exchange_witness_evidence ORDER BY id"
            ).fetchall()
        ]
        return WitnessRecords(cosigned, receipts, evidence)

    def certificates(self) -> list[bytes]:
        """The signing certificates the node keeps (its own, its witnesses'), and those
        harvested from the envelopes and receipts it stores (both directions)."""
        if not self._exchange:
            return []
        rows = self._conn.execute(
            "SELECT envelope FROM exchange_messages UNION ALL "
            "SELECT receipt FROM exchange_messages UNION ALL SELECT receipt FROM exchange_outbox"
        ).fetchall()
        harvested = _signer_certificates(bytes(r[0]) if r[0] is not None else None for r in rows)
        if not self._certificates_kept:
            return harvested
        kept = [
            bytes(r[0])
            for r in self._conn.execute("SELECT der FROM exchange_certificates").fetchall()
        ]
        return list(dict.fromkeys([*kept, *harvested]))

    def envelopes(self) -> dict[tuple[str, uuid.UUID], StoredEnvelope] | None:
        if not self._exchange:
            return None
        rows = self._conn.execute(
            "SELECT origin, message_id, created_ms, envelope FROM exchange_messages"
        ).fetchall()
        found = (
            StoredEnvelope(
                uuid.UUID(mid), int(created), bytes(env) if env is not None else None, origin=o
            )
            for o, mid, created, env in rows
        )
        return {stored.key: stored for stored in found}

    def _pages(self, sql: str) -> Iterator[tuple[int, bytes]]:
        """Rows of ``sql`` (``WHERE key > ?``, keyed by the first column), a page at a time:
        memory stays flat on both stores (a PostgreSQL client cursor holds its result)."""
        after = -1
        while rows := self._conn.execute(f"{sql} LIMIT {_CHUNK}", (after,)).fetchall():
            for key, blob in rows:
                yield int(key), bytes(blob)
            after = rows[-1][0]

    def entries(self) -> Iterator[tuple[int, bytes]]:
        return self._pages("SELECT idx, leaf FROM ledger_entries WHERE idx > ? ORDER BY idx")

    def checkpoints(self) -> list[str]:
        result = []
        for size, note in self._conn.execute(
            "SELECT size, note FROM ledger_checkpoints ORDER BY size"
        ).fetchall():
            lines = self._conn.execute(
                "SELECT line FROM ledger_cosignatures WHERE size = ? ORDER BY added_ms, line",
                (size,),
            ).fetchall()
            result.append(note + "".join(line for (line,) in lines))
        return result

    def stored_tiles(self) -> Iterator[tuple[int, bytes]] | None:
        if not self._tiles:
            return None
        return self._tile_rows()

    def _tile_rows(self) -> Iterator[tuple[int, bytes]]:
        return self._pages("SELECT id, hashes FROM ledger_tiles WHERE id > ? ORDER BY id")

    def stored_leaf_hash(self, index: int) -> bytes | None:
        # Leaf hashes are row 0 of the level-0 tiles (docs/ledger-format.md): a tile of 16
        # entries is keyed (16 * (k + 1)) * 16, its hash of entry 16k + i at bytes 32i..32i+32.
        if not self._tiles:
            return None
        key = ((index >> 4) + 1) << 8
        row = self._conn.execute("SELECT hashes FROM ledger_tiles WHERE id = ?", (key,)).fetchone()
        if row is None or len(row[0]) < 512:
            return None
        at = (index & 15) * 32
        return bytes(row[0][at : at + 32])

    def close(self) -> None:
        self._conn.close()


def _read_record(f: BinaryIO) -> tuple[int, bytes]:
    head = f.read(_RECORD.size)
    if len(head) != _RECORD.size:
        raise ExportFormatError("export ends without its end record (truncated file)")
    kind, length = _RECORD.unpack(head)
    body = f.read(length)
    if len(body) != length:
        raise ExportFormatError("export ends inside a record (truncated file)")
    return kind, body


class ExportSource:
    """An export file: origin, entries, checkpoints, end record (docs/ledger-format.md)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.origin = ""
        self._checkpoints: list[str] = []
        self._certificates: list[bytes] = []
        self._envelopes: dict[tuple[str, uuid.UUID], StoredEnvelope] = {}
        self._witness = WitnessRecords([], [], [])
        self.count = 0
        # First pass: header, checkpoints and counts, so entries can be streamed afterwards.
        with path.open("rb") as f:
            magic = f.read(len(EXPORT_MAGIC))
            if magic not in _MAGICS:
                raise ExportFormatError(f"{path} is not a ledger export (bad magic)")
            self.version = _MAGICS[magic]
            kind, body = _read_record(f)
            if kind != T_ORIGIN:
                raise ExportFormatError("export does not start with its origin record")
            self.origin = body.decode("utf-8", errors="replace")
            while True:
                kind, body = _read_record(f)
                if kind == T_ENTRY:
                    self.count += 1
                elif kind == T_CHECKPOINT:
                    self._checkpoints.append(body.decode("utf-8", errors="replace"))
                elif kind == T_CERTIFICATE and self.version >= 2:
                    self._certificates.append(body)
                elif kind == T_ENVELOPE and self.version >= 2:
                    stored = StoredEnvelope.decode(body)
                    self._envelopes[stored.key] = stored
                elif kind == T_WITHHELD and self.version >= 2:
                    stored = StoredEnvelope.decode_withheld(body)
                    self._envelopes[stored.key] = stored
                elif kind == T_COSIGNED and self.version >= 3:
                    self._witness.cosigned.append(CosignedCheckpoint.decode(body))
                elif kind == T_RECEIPT and self.version >= 3:
                    self._witness.receipts.append(StoredReceipt.decode(body))
                elif kind == T_EVIDENCE and self.version >= 3:
                    self._witness.evidence.append(WitnessEvidence.decode(body))
                elif kind == T_END:
                    end = {1: _END_V1, 2: _END_V2, 3: _END}[self.version]
                    if len(body) != end.size:
                        raise ExportFormatError(f"export end record of {len(body)} bytes")
                    counts = end.unpack(body)
                    held: tuple[int, ...] = (self.count, len(self._checkpoints))
                    if self.version >= 2:
                        held += (len(self._certificates), len(self._envelopes))
                    if self.version >= 3:
                        w = self._witness
                        held += (len(w.cosigned), len(w.receipts), len(w.evidence))
                    if counts != held:
                        raise ExportFormatError(
                            f"export end record counts {counts} (entries, checkpoints, "
                            f"certificates, envelopes, cosigned, receipts, evidence), the file "
                            f"holds {held}"
                        )
                    if f.read(1):
                        raise ExportFormatError("export has bytes after its end record")
                    break
                else:
                    raise ExportFormatError(f"export record of unknown type {kind}")

    def entries(self) -> Iterator[tuple[int, bytes]]:
        with self._path.open("rb") as f:
            f.read(len(EXPORT_MAGIC))
            _read_record(f)
            position = 0
            while True:
                kind, body = _read_record(f)
                if kind == T_ENTRY:
                    yield position, body
                    position += 1
                elif kind == T_END:
                    return

    def checkpoints(self) -> list[str]:
        return list(self._checkpoints)

    def stored_leaf_hash(self, index: int) -> bytes | None:
        return None

    def stored_tiles(self) -> None:
        return None

    def certificates(self) -> list[bytes]:
        return list(self._certificates)

    def envelopes(self) -> dict[tuple[str, uuid.UUID], StoredEnvelope] | None:
        return dict(self._envelopes) if self.version >= 2 else None

    def witness_records(self) -> WitnessRecords | None:
        return self._witness if self.version >= 3 else None

    def close(self) -> None:
        """Nothing held open between reads."""


def open_source(path: Path) -> DatabaseSource | ExportSource:
    """Open ``path`` as an export or a ledger database, by its first bytes.

    Raises:
        ExportFormatError: it is neither.
    """
    with path.open("rb") as f:
        head = f.read(len(EXPORT_MAGIC))
    if head.startswith(SQLITE_MAGIC):
        return DatabaseSource(path)
    if head in _MAGICS:
        return ExportSource(path)
    raise ExportFormatError(f"{path} is neither a ledger database nor a ledger export")


def write_export_records(
    out: Path,
    origin: str,
    entries: Iterable[bytes],
    notes: Iterable[str],
    certificates: Iterable[bytes],
    envelopes: Iterable[StoredEnvelope],
    witness: WitnessRecords | None = None,
) -> tuple[int, int, int, int]:
    """Write an export file atomically; return the first four counts of its end record.

    Version 3 with ``witness`` (what the node cosigned, its receipts, its evidence), else
    version 2 (``audit fetch``, which has no RPC for them). Certificates are de-duplicated;
    entries are streamed, so memory stays flat in their number.
    """
    tmp = out.with_name(out.name + ".tmp")
    counts = [0, 0, 0, 0]

    def record(f: BinaryIO, kind: int, body: bytes) -> None:
        f.write(_RECORD.pack(kind, len(body)) + body)

    with tmp.open("wb") as f:
        f.write(EXPORT_MAGIC if witness is not None else EXPORT_MAGIC_V2)
        record(f, T_ORIGIN, origin.encode())
        for leaf in entries:
            record(f, T_ENTRY, leaf)
            counts[0] += 1
        for note in notes:
            record(f, T_CHECKPOINT, note.encode())
            counts[1] += 1
        for der in dict.fromkeys(certificates):
            record(f, T_CERTIFICATE, der)
            counts[2] += 1
        for stored in envelopes:
            record(f, T_WITHHELD if stored.withheld else T_ENVELOPE, stored.encode())
            counts[3] += 1
        if witness is None:
            record(f, T_END, _END_V2.pack(*counts))
        else:
            for kind, items in (
                (T_COSIGNED, witness.cosigned),
                (T_RECEIPT, witness.receipts),
                (T_EVIDENCE, witness.evidence),
            ):
                for item in items:
                    record(f, kind, item.encode())
            record(
                f,
                T_END,
                _END.pack(
                    *counts,
                    len(witness.cosigned),
                    len(witness.receipts),
                    len(witness.evidence),
                ),
            )
    tmp.replace(out)
    return counts[0], counts[1], counts[2], counts[3]


def write_export(
    db_path: Path | DatabaseSource, out: Path, extra_certificates: Iterable[bytes] = ()
) -> tuple[int, int, int, int]:
    """Write the export file (version 3) of the ledger database ``db_path`` (a SQLite file, or
    an opened :class:`DatabaseSource`, e.g. on a PostgreSQL connection; closed here).

    Carries the entries, the checkpoints with their cosignatures, the signing certificates
    harvested from the exchange's envelopes and receipts plus ``extra_certificates`` (DER),
    every envelope (empty when erased), and what the node cosigned for its peers, the receipts
    it holds and the evidence of inconsistent checkpoints it refused.

    Returns:
        (entries, checkpoints, certificates, envelopes) written.
    """
    source = db_path if isinstance(db_path, DatabaseSource) else DatabaseSource(db_path)
    try:
        envelopes = source.envelopes() or {}
        return write_export_records(
            out,
            source.origin,
            (leaf for _, leaf in source.entries()),
            source.checkpoints(),
            [*source.certificates(), *extra_certificates],
            envelopes.values(),
            source.witness_records(),
        )
    finally:
        source.close()
