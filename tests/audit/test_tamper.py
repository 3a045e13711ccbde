"""The tamper table: each attack on a stored ledger or an export is caught and named."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import (
    BadCheckpointError,
    BadEntryError,
    check_ledger,
    verify_ledger,
    write_export,
)
from gateway.audit._source import EXPORT_MAGIC, T_CHECKPOINT, T_END
from gateway.ledger import Ledger
from gateway.notes import Checkpoint, NoteSigner, cosign, sign_note
from tests.ledger.conftest import ORIGIN, make_entry

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SIGNER = NoteSigner(ORIGIN, KEY)
WITNESS = NoteSigner("mo.customs-exchange/witness", Ed25519PrivateKey.generate(), 0x04)
CHECKPOINT_SIZES = (10, 20, 35, 50)


@pytest.fixture
def ledger_db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    with Ledger.open(path, origin=ORIGIN, signer=SIGNER) as ledger:
        done = 0
        for size in CHECKPOINT_SIZES:
            ledger.append_many([make_entry(i) for i in range(done, size)])
            done = size
            cp = ledger.checkpoint()
        ledger.add_cosignature(cp.size, cosign(cp.checkpoint.body(), WITNESS, 1_700_000_000))
    return path


def _sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for table in ("ledger_entries", "ledger_checkpoints"):
        conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
        conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _leaf(path: Path, index: int) -> bytes:
    conn = sqlite3.connect(path)
    (leaf,) = conn.execute("SELECT leaf FROM ledger_entries WHERE idx = ?", (index,)).fetchone()
    conn.close()
    return bytes(leaf)


def flip_digest_byte(path: Path) -> Path:
    leaf = bytearray(_leaf(path, 17))
    leaf[-3] ^= 0x01
    _sql(path, f"UPDATE ledger_entries SET leaf = x'{leaf.hex()}' WHERE idx = 17")
    return path


def flip_event_byte(path: Path) -> Path:
    leaf = bytearray(_leaf(path, 17))
    leaf[17] = 0x63
    _sql(path, f"UPDATE ledger_entries SET leaf = x'{leaf.hex()}' WHERE idx = 17")
    return path


def delete_entry(path: Path) -> Path:
    _sql(path, "DELETE FROM ledger_entries WHERE idx = 23")
    return path


def swap_entries(path: Path) -> Path:
    a, b = _leaf(path, 5), _leaf(path, 8)
    _sql(
        path,
        f"UPDATE ledger_entries SET leaf = x'{b.hex()}' WHERE idx = 5",
        f"UPDATE ledger_entries SET leaf = x'{a.hex()}' WHERE idx = 8",
    )
    return path


def truncate_log(path: Path) -> Path:
    _sql(path, "DELETE FROM ledger_entries WHERE idx >= 40")
    return path


def resign_checkpoint(path: Path) -> Path:
    conn = sqlite3.connect(path)
    (root,) = conn.execute("SELECT root FROM ledger_checkpoints WHERE size = 35").fetchone()
    conn.close()
    other = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    note = sign_note(Checkpoint(ORIGIN, 35, bytes(root)).body(), [other])
    _sql(path, f"UPDATE ledger_checkpoints SET note = '{note}' WHERE size = 35")
    return path


def _append_to_export(export: Path, note: str) -> None:
    """Insert one more checkpoint record before the end record (and fix the end counts)."""
    data = export.read_bytes()
    end_at = len(data) - (1 + 4 + 32)
    assert data[end_at] == T_END
    counts = [int.from_bytes(data[at : at + 8], "big") for at in range(end_at + 5, len(data), 8)]
    counts[1] += 1
    raw = note.encode()
    record = bytes([T_CHECKPOINT]) + len(raw).to_bytes(4, "big") + raw
    end = bytes([T_END]) + (32).to_bytes(4, "big") + b"".join(c.to_bytes(8, "big") for c in counts)
    export.write_bytes(data[:end_at] + record + end)


def fork_same_size(path: Path) -> Path:
    export = path.with_suffix(".export")
    write_export(path, export)
    forged_root = hashlib.sha256(b"another history").digest()
    _append_to_export(export, sign_note(Checkpoint(ORIGIN, 20, forged_root).body(), [SIGNER]))
    return export


def flip_byte_in_export(path: Path) -> Path:
    export = path.with_suffix(".export")
    write_export(path, export)
    data = bytearray(export.read_bytes())
    at = data.find(_leaf(path, 12)) + len(_leaf(path, 12)) - 2
    data[at] ^= 0x80
    export.write_bytes(bytes(data))
    return export


CASES: list[tuple[str, Callable[[Path], Path], str, int | None, int | None]] = [
    ("flip-digest-byte", flip_digest_byte, r"entry 17 was altered", 17, 20),
    ("flip-event-byte", flip_event_byte, r"entry 17: unknown event 99", 17, None),
    ("delete-entry", delete_entry, r"entry 23 is missing", 23, None),
    ("swap-entries", swap_entries, r"entry 5: its bytes encode index 8", 5, None),
    ("truncate-log", truncate_log, r"size 50: the ledger has only 40 entries", 40, 50),
    ("resigned-checkpoint", resign_checkpoint, r"size 35: no signature .* trusted key", None, 35),
    ("fork-same-size", fork_same_size, r"two checkpoints of size 20 disagree", None, 20),
    (
        "flip-byte-in-export",
        flip_byte_in_export,
        r"size 20: signed root [0-9a-f]{64} != ",
        None,
        20,
    ),
]


def test_the_untampered_ledger_and_its_export_verify(ledger_db: Path) -> None:
    export = ledger_db.with_suffix(".export")
    assert write_export(ledger_db, export) == (50, 4, 0, 0)
    for path in (ledger_db, export):
        result = check_ledger(path, SIGNER.verifier, [WITNESS.verifier])
        assert (result.entries, result.checkpoints, result.consistency_proofs) == (50, 4, 3)
        assert result.cosignatures == 1


@pytest.mark.parametrize(
    ("tamper", "match", "index", "size"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_tampering_is_caught_and_named(
    ledger_db: Path,
    tamper: Callable[[Path], Path],
    match: str,
    index: int | None,
    size: int | None,
) -> None:
    path = tamper(ledger_db)
    result = verify_ledger(path, SIGNER.verifier, [WITNESS.verifier])
    assert not result.ok
    first = result.failures[0]
    assert (first.index, first.checkpoint_size) == (index, size), first.message
    error = BadEntryError if size is None else BadCheckpointError
    with pytest.raises(error, match=match):
        check_ledger(path, SIGNER.verifier, [WITNESS.verifier])


def test_a_ledger_without_any_checkpoint_does_not_pass(tmp_path: Path) -> None:
    path = tmp_path / "bare.db"
    with Ledger.open(path, origin=ORIGIN, signer=SIGNER) as ledger:
        ledger.append(make_entry(0))
    result = verify_ledger(path, SIGNER.verifier)
    assert not result.ok
    assert result.entries == 1
    from gateway.audit import AuditError

    with pytest.raises(AuditError, match="no signed checkpoint"):
        check_ledger(path, SIGNER.verifier)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"hello", "neither a ledger database nor a ledger export"),
        (EXPORT_MAGIC + b"\x01\x00\x00\x00\x02HK", "truncated"),
        (EXPORT_MAGIC, "truncated"),
    ],
    ids=["not-a-ledger", "export-without-end", "export-only-magic"],
)
def test_unreadable_files_are_refused(tmp_path: Path, content: bytes, match: str) -> None:
    from gateway.audit import ExportFormatError

    path = tmp_path / "file"
    path.write_bytes(content)
    with pytest.raises(ExportFormatError, match=match):
        verify_ledger(path, SIGNER.verifier)


def test_base64_of_keys_is_what_the_table_uses() -> None:
    # Guard: the witness used above is a cosignature (0x04) key, the log a plain (0x01) key.
    assert base64.b64decode(WITNESS.verifier.vkey.split("+", 2)[2])[0] == 0x04
    assert base64.b64decode(SIGNER.verifier.vkey.split("+", 2)[2])[0] == 0x01
