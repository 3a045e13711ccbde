"""Where an audit reads a ledger from: the node's SQLite file or an export file.

Reads the documented formats (docs/ledger-format.md) directly; imports nothing from the server.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from gateway.audit.errors import ExportFormatError

EXPORT_MAGIC = b"customs-gateway ledger export 1\n"
SQLITE_MAGIC = b"SQLite format 3\x00"
T_ORIGIN, T_ENTRY, T_CHECKPOINT, T_END = 1, 2, 3, 255
_RECORD = struct.Struct(">BI")
_END = struct.Struct(">QQ")
_CHUNK = 10_000


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


class DatabaseSource:
    """A node's ledger file, opened read-only."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
        )
        try:
            self._conn.execute("BEGIN")  # one snapshot: a live node may append meanwhile
            meta = dict(self._conn.execute("SELECT key, value FROM ledger_meta").fetchall())
            self.count = self._conn.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise ExportFormatError(f"{path} is not a ledger database: {e}") from e
        self.origin = str(meta.get("origin", ""))

    def entries(self) -> Iterator[tuple[int, bytes]]:
        cursor = self._conn.execute("SELECT idx, leaf FROM ledger_entries ORDER BY idx")
        while rows := cursor.fetchmany(_CHUNK):
            yield from rows

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

    def stored_leaf_hash(self, index: int) -> bytes | None:
        n = index + 1
        node = 2 * (n - 1) - (n - 1).bit_count()
        row = self._conn.execute("SELECT hash FROM ledger_nodes WHERE id = ?", (node,)).fetchone()
        return None if row is None else bytes(row[0])

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
        self.count = 0
        # First pass: header, checkpoints and counts, so entries can be streamed afterwards.
        with path.open("rb") as f:
            if f.read(len(EXPORT_MAGIC)) != EXPORT_MAGIC:
                raise ExportFormatError(f"{path} is not a ledger export (bad magic)")
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
                elif kind == T_END:
                    entries, checkpoints = _END.unpack(body)
                    if (entries, checkpoints) != (self.count, len(self._checkpoints)):
                        raise ExportFormatError(
                            f"export end record counts {entries} entries and {checkpoints} "
                            f"checkpoints, file holds {self.count} and {len(self._checkpoints)}"
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
    if head == EXPORT_MAGIC:
        return ExportSource(path)
    raise ExportFormatError(f"{path} is neither a ledger database nor a ledger export")


def write_export(db_path: Path, out: Path) -> tuple[int, int]:
    """Write the export file of the ledger database ``db_path``; return (entries, checkpoints).

    Streams the entries: memory stays flat in the ledger size.
    """
    source = DatabaseSource(db_path)
    try:
        tmp = out.with_name(out.name + ".tmp")
        entries = 0
        with tmp.open("wb") as f:
            f.write(EXPORT_MAGIC)
            origin = source.origin.encode()
            f.write(_RECORD.pack(T_ORIGIN, len(origin)) + origin)
            for _, leaf in source.entries():
                f.write(_RECORD.pack(T_ENTRY, len(leaf)) + leaf)
                entries += 1
            notes = source.checkpoints()
            for note in notes:
                raw = note.encode()
                f.write(_RECORD.pack(T_CHECKPOINT, len(raw)) + raw)
            end = _END.pack(entries, len(notes))
            f.write(_RECORD.pack(T_END, len(end)) + end)
        tmp.replace(out)
        return entries, len(notes)
    finally:
        source.close()
