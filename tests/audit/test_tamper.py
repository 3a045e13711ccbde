"""The tamper table: every attack on a node's ledger, run through ``customs-gateway audit verify``.

HK's ledger is a real SQLite file written by ``Ledger`` with real envelopes signed by real
certificates (tests/audit/nodes.py); its checkpoints are cosigned as witnesses do:

    size 10: CN        size 20: MO        size 35: CN, MO        size 50: CN, MO (the latest)

Each case tampers with a copy (as the node's own operator could: triggers dropped, the node's own
key at hand) and asserts the exit status and the exact (category, entry index, checkpoint size)
of every failure, in order. The audit runs with nothing but the trust bundle and its default
witness policy (every other jurisdiction).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit import (
    AuditError,
    ExportFormatError,
    WitnessPolicy,
    check_ledger,
    verify_ledger,
    write_export,
)
from gateway.audit._source import EXPORT_MAGIC, T_CHECKPOINT, T_END
from gateway.cli import main
from gateway.ledger import Event, Ledger
from gateway.notes import COSIGNATURE_V1, Checkpoint, NoteSigner, cosign, sign_note
from gateway.pki import Jurisdiction
from gateway.pki.bundle import TrustBundle
from tests.audit.nodes import NodeLedger, envelope, signer_of
from tests.ledger.conftest import ORIGIN, make_entry
from tests.support import World

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO
PARTNER = "spiffe://hk.customs-exchange/partner/case-management"
COSIGNED = {10: (CN,), 20: (MO,), 35: (CN, MO), 50: (CN, MO)}
TRIGGERS = ("entries", "tiles", "checkpoints", "cosignatures", "meta")

# Hand-given keys for the library-level checks below and tests/audit/test_cli.py.
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SIGNER = NoteSigner(ORIGIN, KEY)
WITNESS = NoteSigner("mo.customs-exchange/witness", Ed25519PrivateKey.generate(), COSIGNATURE_V1)


def write_hk_ledger(world: World, path: Path, first_digest: bytes | None = None) -> Path:
    """HK's ledger: 50 entries (sent, received, receipts, acknowledgements), four checkpoints.

    With ``first_digest``, entry 0 is another acknowledgement: a rewritten history.
    """
    with NodeLedger(world, HK, path) as hk:
        for i in range(50):
            mid = uuid.UUID(int=0x1000 + i)
            if i == 0 and first_digest is not None:
                hk.entry(Event.ACKNOWLEDGED, mid, PARTNER, first_digest)
            elif i % 5 == 0:
                hk.sent(envelope(world, HK, CN, mid))
            elif i % 5 == 1:
                hk.receipt(envelope(world, HK, CN, uuid.UUID(int=0x1000 + i - 1)), CN)
            elif i == 7:
                hk.received(envelope(world, MO, HK, mid), MO)
            else:
                hk.entry(Event.ACKNOWLEDGED, mid, PARTNER, hashlib.sha256(mid.bytes).digest())
            if i + 1 in COSIGNED:
                hk.checkpoint(*COSIGNED[i + 1])
    return path


@pytest.fixture(scope="module")
def template(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hk_ledger(world, tmp_path_factory.mktemp("hk") / "hk.db")


@pytest.fixture
def hk_db(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "hk.db"
    shutil.copy(template, path)
    return path


def _sql(path: Path, statement: str, *args: object) -> None:
    conn = sqlite3.connect(path)
    for table in TRIGGERS:
        for action in ("update", "delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS ledger_{table}_no_{action}")
    conn.execute(statement, args)
    conn.commit()
    conn.close()


def _one(path: Path, query: str, *args: object) -> bytes:
    conn = sqlite3.connect(path)
    (value,) = conn.execute(query, args).fetchone()
    conn.close()
    return bytes(value) if isinstance(value, bytes) else value  # type: ignore[no-any-return]


def _leaf(path: Path, index: int) -> bytes:
    return _one(path, "SELECT leaf FROM ledger_entries WHERE idx = ?", index)


def _set_leaf(path: Path, index: int, leaf: bytes) -> None:
    _sql(path, "UPDATE ledger_entries SET leaf = ? WHERE idx = ?", leaf, index)


def _set_stored_hash(path: Path, level: int, pos: int, value: bytes) -> None:
    """Overwrite one subtree hash in ledger_tiles (layout: docs/ledger-format.md)."""
    width = 4 - level % 4
    key = (((pos >> width) + 1) << (4 * (level // 4 + 1) + 4)) | (level // 4)
    slot = (32 - (1 << (5 - level % 4))) + (pos & ((1 << width) - 1))
    blob = bytearray(_one(path, "SELECT hashes FROM ledger_tiles WHERE id = ?", key))
    blob[32 * slot : 32 * slot + 32] = value
    _sql(path, "UPDATE ledger_tiles SET hashes = ? WHERE id = ?", bytes(blob), key)


def _flip(leaf: bytes) -> bytes:
    out = bytearray(leaf)
    out[-3] ^= 0x01  # a byte of the last digest
    return bytes(out)


def _cosignature_lines(path: Path, size: int) -> list[str]:
    conn = sqlite3.connect(path)
    lines = [
        r[0] for r in conn.execute("SELECT line FROM ledger_cosignatures WHERE size = ?", (size,))
    ]
    conn.close()
    return lines


def _add_cosignature(world: World, path: Path, size: int, by: Jurisdiction, at: int) -> None:
    note = _one(path, "SELECT note FROM ledger_checkpoints WHERE size = ?", size)
    body = str(note).split("\n\n")[0] + "\n"
    signer = NoteSigner(f"{by.trust_domain}/witness", signer_of(world, by).private_key, 0x04)
    line = cosign(body, signer, at)
    _sql(
        path,
        "INSERT INTO ledger_cosignatures(size, line, key_name, timestamp, added_ms) "
        "VALUES (?,?,?,?,?)",
        size,
        line,
        f"{by.trust_domain}/witness",
        at,
        time.time_ns() // 1_000_000,
    )


def _export(path: Path) -> Path:
    out = path.with_suffix(".export")
    write_export(path, out)
    return out


def _append_to_export(export: Path, note: str) -> None:
    """Insert one more checkpoint record before the end record (and fix the end counts)."""
    data = export.read_bytes()
    end_size = 8 * (7 if data.startswith(EXPORT_MAGIC) else 4)  # version 3: seven counts
    end_at = len(data) - (1 + 4 + end_size)
    assert data[end_at] == T_END
    counts = [int.from_bytes(data[at : at + 8], "big") for at in range(end_at + 5, len(data), 8)]
    counts[1] += 1
    raw = note.encode()
    record = bytes([T_CHECKPOINT]) + len(raw).to_bytes(4, "big") + raw
    end = (
        bytes([T_END])
        + end_size.to_bytes(4, "big")
        + b"".join(c.to_bytes(8, "big") for c in counts)
    )
    export.write_bytes(data[:end_at] + record + end)


# -- the attacks --------------------------------------------------------------------------------


def untouched(world: World, path: Path) -> Path:
    return path


def untouched_export(world: World, path: Path) -> Path:
    return _export(path)


def strip_cosignatures(world: World, path: Path) -> Path:
    _sql(path, "DELETE FROM ledger_cosignatures")
    return path


def strip_cosignatures_export(world: World, path: Path) -> Path:
    return _export(strip_cosignatures(world, path))


def _rewrite(world: World, path: Path, keep_old_cosignatures: bool) -> Path:
    """The operator rewrites history from entry 0 and re-signs every checkpoint with HK's key."""
    old = {size: _cosignature_lines(path, size) for size in COSIGNED}
    path.unlink()
    write_hk_ledger(world, path, first_digest=hashlib.sha256(b"another history").digest())
    _sql(path, "DELETE FROM ledger_cosignatures")
    if keep_old_cosignatures:
        for size, lines in old.items():
            for n, line in enumerate(lines):
                _sql(
                    path,
                    "INSERT INTO ledger_cosignatures(size, line, key_name, timestamp, added_ms) "
                    "VALUES (?,?,?,?,?)",
                    size,
                    line,
                    "old",
                    0,
                    n,
                )
    return path


def rewritten_and_resigned(world: World, path: Path) -> Path:
    return _rewrite(world, path, keep_old_cosignatures=False)


def rewritten_keeping_old_cosignatures(world: World, path: Path) -> Path:
    return _rewrite(world, path, keep_old_cosignatures=True)


def rollback_to(size: int) -> Callable[[World, Path], Path]:
    """Cut the ledger back to its checkpoint of ``size``: entries, tiles, checkpoints, lines."""

    def rollback(world: World, path: Path) -> Path:
        _sql(path, "DELETE FROM ledger_entries WHERE idx >= ?", size)
        _sql(path, "DELETE FROM ledger_tiles WHERE id >= ?", (size + 1) << 4)
        _sql(path, "DELETE FROM ledger_checkpoints WHERE size > ?", size)
        _sql(path, "DELETE FROM ledger_cosignatures WHERE size > ?", size)
        _sql(path, "DELETE FROM exchange_messages WHERE ledger_index >= ?", size)
        return path

    return rollback


def fork_at_20(world: World, path: Path) -> Path:
    export = _export(path)
    key = signer_of(world, HK).private_key
    forged = Checkpoint(ORIGIN, 20, hashlib.sha256(b"another history").digest())
    _append_to_export(export, sign_note(forged.body(), [NoteSigner(ORIGIN, key)]))
    return export


def fork_at_a_new_size(world: World, path: Path) -> Path:
    """A checkpoint of size 45 of another history, signed by HK's key, beside the honest 50."""
    export = _export(path)
    key = signer_of(world, HK).private_key
    forged = Checkpoint(ORIGIN, 45, hashlib.sha256(b"a split view").digest())
    _append_to_export(export, sign_note(forged.body(), [NoteSigner(ORIGIN, key)]))
    return export


def corrupt_leaf_hash(world: World, path: Path) -> Path:
    _set_stored_hash(path, 0, 13, hashlib.sha256(b"not a leaf").digest())
    return path


def corrupt_inner_hash(world: World, path: Path) -> Path:
    _set_stored_hash(path, 2, 9, hashlib.sha256(b"not a node").digest())
    return path


def duplicate_cosignature(world: World, path: Path) -> Path:
    _add_cosignature(world, path, 50, MO, int(time.time()) + 1)
    return path


def duplicate_in_place_of_missing(world: World, path: Path) -> Path:
    _sql(path, "DELETE FROM ledger_cosignatures WHERE size = 50 AND line LIKE '%cn.customs%'")
    _add_cosignature(world, path, 50, MO, int(time.time()) + 2)
    return path


def cosignature_beyond_any_date(world: World, path: Path) -> Path:
    _add_cosignature(world, path, 50, CN, 2**62)  # signed by CN's real key
    return path


def alter_entry(world: World, path: Path) -> Path:
    _set_leaf(path, 17, _flip(_leaf(path, 17)))
    return path


def alter_two_entries(world: World, path: Path) -> Path:
    _set_leaf(path, 17, _flip(_leaf(path, 17)))
    _set_leaf(path, 42, _flip(_leaf(path, 42)))
    return path


def alter_entry_export(world: World, path: Path) -> Path:
    return _export(alter_entry(world, path))


def alter_entry_and_cover_its_hash(world: World, path: Path) -> Path:
    altered = _flip(_leaf(path, 17))
    _set_leaf(path, 17, altered)
    _set_stored_hash(path, 0, 17, hashlib.sha256(b"\x00" + altered).digest())
    return path


def alter_entry_and_corrupt_another_hash(world: World, path: Path) -> Path:
    _set_leaf(path, 17, _flip(_leaf(path, 17)))
    _set_stored_hash(path, 0, 13, hashlib.sha256(b"not a leaf").digest())
    return path


def malformed_entry(world: World, path: Path) -> Path:
    leaf = bytearray(_leaf(path, 17))
    leaf[17] = 0x63
    _set_leaf(path, 17, bytes(leaf))
    return path


def _fields(leaf: bytes) -> tuple[bytes, bytes, bytes, list[bytes]]:
    """(head up to the kind, kind, counterpart, digests) of a LedgerEntry (ledger-format.md)."""
    at = 35 + leaf[34]
    counterpart = leaf[at + 1 : at + 1 + leaf[at]]
    at += 1 + leaf[at]
    digests = [leaf[at + 1 + 32 * i : at + 33 + 32 * i] for i in range(leaf[at])]
    return leaf[:35], leaf[35 : 35 + leaf[34]], counterpart, digests


def _entry_bytes(head: bytes, kind: bytes, counterpart: bytes, digests: list[bytes]) -> bytes:
    return b"".join(
        [head, kind, bytes([len(counterpart)]), counterpart, bytes([len(digests)]), *digests]
    )


def receipt_with_one_digest(world: World, path: Path) -> Path:
    head, kind, counterpart, digests = _fields(_leaf(path, 1))
    _set_leaf(path, 1, _entry_bytes(head, kind, counterpart, digests[:1]))
    return path


def acknowledged_by_a_jurisdiction(world: World, path: Path) -> Path:
    head, kind, _, digests = _fields(_leaf(path, 3))
    _set_leaf(path, 3, _entry_bytes(head, kind, b"CN", digests))
    return path


def delete_entry(world: World, path: Path) -> Path:
    _sql(path, "DELETE FROM ledger_entries WHERE idx = 23")
    return path


def swap_entries(world: World, path: Path) -> Path:
    a, b = _leaf(path, 2), _leaf(path, 8)
    _set_leaf(path, 2, b)
    _set_leaf(path, 8, a)
    return path


def truncate_log(world: World, path: Path) -> Path:
    _sql(path, "DELETE FROM ledger_entries WHERE idx >= 40")
    _sql(path, "DELETE FROM ledger_tiles WHERE id >= ?", 41 << 4)
    return path


def resign_with_another_key(world: World, path: Path) -> Path:
    root = _one(path, "SELECT root FROM ledger_checkpoints WHERE size = 35")
    note = sign_note(Checkpoint(ORIGIN, 35, root).body(), [NoteSigner(ORIGIN, KEY)])
    _sql(path, "UPDATE ledger_checkpoints SET note = ? WHERE size = 35", note)
    return path


def several_at_once(world: World, path: Path) -> Path:
    _sql(path, "DELETE FROM ledger_cosignatures WHERE size = 50")
    _set_leaf(path, 17, _flip(_leaf(path, 17)))
    _set_stored_hash(path, 0, 40, hashlib.sha256(b"not a leaf").digest())
    _sql(path, "DELETE FROM exchange_messages WHERE ledger_index = 45")
    return path


# (category, entry index, checkpoint size), and for a bad stored hash also (level, position)
Where = tuple[str | int | None, ...]
CASES: list[tuple[str, Callable[[World, Path], Path], int, list[Where]]] = [
    ("untouched", untouched, 0, []),
    ("untouched-export", untouched_export, 0, []),
    ("stripped-cosignatures", strip_cosignatures, 1, [("witness-policy", None, 50)]),
    ("stripped-cosignatures-export", strip_cosignatures_export, 1, [("witness-policy", None, 50)]),
    ("rewritten-and-resigned", rewritten_and_resigned, 1, [("witness-policy", None, 50)]),
    (
        "rewritten-keeping-old-cosignatures",
        rewritten_keeping_old_cosignatures,
        1,
        [
            ("cosignatures", None, 10),
            ("cosignatures", None, 20),
            ("cosignatures", None, 35),
            ("cosignatures", None, 35),
            ("cosignatures", None, 50),
            ("cosignatures", None, 50),
            ("witness-policy", None, 50),
        ],
    ),
    ("rollback-to-10", rollback_to(10), 1, [("witness-policy", None, 10)]),
    ("rollback-to-20", rollback_to(20), 1, [("witness-policy", None, 20)]),
    # Cosigned by both, size 35 passes offline: `audit reconcile` with the witnesses' own
    # records catches this rollback (a log shorter than a checkpoint its witnesses cosigned).
    ("rollback-to-35-fully-cosigned", rollback_to(35), 0, []),
    ("fork", fork_at_20, 1, [("fork", None, 20)]),
    ("fork-at-a-new-size", fork_at_a_new_size, 1, [("fork", None, 45)]),
    ("corrupted-stored-leaf-hash", corrupt_leaf_hash, 1, [("stored-hash", None, None, 0, 13)]),
    ("corrupted-stored-inner-hash", corrupt_inner_hash, 1, [("stored-hash", None, None, 2, 9)]),
    ("duplicated-cosignature", duplicate_cosignature, 0, []),
    (
        "duplicate-in-place-of-a-missing-witness",
        duplicate_in_place_of_missing,
        1,
        [("witness-policy", None, 50)],
    ),
    (
        "cosignature-beyond-any-date",
        cosignature_beyond_any_date,
        1,
        [("cosignatures", None, 50)],
    ),
    ("altered-entry", alter_entry, 1, [("altered-entry", 17, 20)]),
    (
        "two-altered-entries",
        alter_two_entries,
        1,
        [("altered-entry", 17, 20), ("altered-entry", 42, 50)],
    ),
    ("altered-entry-export", alter_entry_export, 1, [("altered-entry", 10, 20)]),
    (
        "altered-entry-with-its-stored-hash-covered",
        alter_entry_and_cover_its_hash,
        1,
        [("altered-entry", 10, 20)],
    ),
    (
        "altered-entry-and-another-stored-hash-corrupted",
        alter_entry_and_corrupt_another_hash,
        1,
        [("altered-entry", 17, 20), ("stored-hash", None, None, 0, 13)],
    ),
    ("malformed-entry", malformed_entry, 1, [("entries", 17, None)]),
    ("receipt-with-one-digest", receipt_with_one_digest, 1, [("entries", 1, None)]),
    ("acknowledged-by-a-jurisdiction", acknowledged_by_a_jurisdiction, 1, [("entries", 3, None)]),
    ("deleted-entry", delete_entry, 1, [("entries", 23, None)]),
    ("swapped-entries", swap_entries, 1, [("entries", 2, None), ("entries", 8, None)]),
    ("truncated", truncate_log, 1, [("truncated", 40, 50)]),
    ("resigned-with-another-key", resign_with_another_key, 1, [("checkpoints", None, 35)]),
    (
        "several-at-once",
        several_at_once,
        1,
        [
            ("witness-policy", None, 50),
            ("altered-entry", 17, 20),
            ("stored-hash", None, None, 0, 40),
            ("envelopes", 45, None),
        ],
    ),
]


@pytest.mark.parametrize(
    ("tamper", "status", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_every_tampering_is_named_with_its_category_and_place(
    world: World,
    hk_db: Path,
    tamper: Callable[[World, Path], Path],
    status: int,
    expected: list[Where],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tamper(world, hk_db)
    argv = ["audit", "verify", str(path), "--trust-bundle", str(world.bundle), "--json"]
    assert main(argv) == status
    result = json.loads(capsys.readouterr().out)
    failures = result["failures"]
    found = [
        (f["category"], f["index"], f["checkpoint_size"])
        + ((f["level"], f["position"]) if f["category"] == "stored-hash" else ())
        for f in failures
    ]
    assert found == expected, failures
    assert all(f["category"] and f["message"] for f in failures)
    assert result["ok"] is (status == 0)


def test_an_untouched_ledger_reports_its_cosigners_and_counts_what_it_says(
    world: World, hk_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["audit", "verify", str(hk_db), "--trust-bundle", str(world.bundle), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "latest checkpoint (size 50) cosigned by: CN, MO" in out
    assert "cosigners by checkpoint size: 10: CN; 20: MO; 35: CN, MO; 50: CN, MO" in out
    assert "witness policy: every one of CN, MO" in out
    assert "4 checkpoints, 3 consistency proofs, 6 cosignatures" in out
    assert "(2 checkpoints meet the witness policy)" in out
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cosigners"] == {
        "10": ["CN"],
        "20": ["MO"],
        "35": ["CN", "MO"],
        "50": ["CN", "MO"],
    }
    assert (result["checkpoints"], result["cosignatures"], result["witnessed"]) == (4, 6, 2)
    assert result["stored_hashes"] == 3 * 30  # tiles of entries 0..15, 16..31, 32..47
    assert result["counts"]["checkpoints"]["verified"] == 4


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            strip_cosignatures,
            "FAILED: checkpoint of size 50 (the latest) is cosigned by no required witness; "
            "the policy needs every one of CN, MO (missing CN, MO): the log's operator alone "
            "vouches for this history",
        ),
        (
            duplicate_in_place_of_missing,
            "FAILED: checkpoint of size 50 (the latest) is cosigned by MO; the policy needs "
            "every one of CN, MO (missing CN)",
        ),
        (
            corrupt_inner_hash,
            "FAILED: stored subtree hash at level 2, position 9 (tile 0/2, entries 36..39) is ",
        ),
        (
            alter_entry_and_corrupt_another_hash,
            "FAILED: stored subtree hash at level 0, position 13 (tile 0/0, entries 13..13)",
        ),
        (
            alter_entry,
            "FAILED: entry 17 was altered: its bytes hash to ",
        ),
        (
            fork_at_a_new_size,
            " of the first 45 entries, to which the checkpoint of size 50 commits: the log's key "
            "signed two views of its history (a fork)\n",
        ),
        (receipt_with_one_digest, "FAILED: entry 1: receipt entry has 1 digests, not 2\n"),
        (
            acknowledged_by_a_jurisdiction,
            "FAILED: entry 3: acknowledged entry: counterpart 'CN' is not a SPIFFE id (the "
            "acknowledging partner's SPIFFE id)\n",
        ),
        (
            alter_entry_and_cover_its_hash,
            "one or more of entries 10..19 were altered (the signed roots alone cannot say",
        ),
    ],
    ids=[
        "stripped",
        "duplicate-for-missing",
        "inner-hash",
        "leaf-hash-beside-altered-entry",
        "altered",
        "fork-at-a-new-size",
        "receipt-digests",
        "acknowledged-counterpart",
        "altered-and-covered",
    ],
)
def test_the_failures_say_what_they_mean(
    world: World,
    hk_db: Path,
    tamper: Callable[[World, Path], Path],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tamper(world, hk_db)
    argv = ["audit", "verify", str(path), "--trust-bundle", str(world.bundle), "--no-progress"]
    assert main(argv) == 1
    assert message in capsys.readouterr().out


def test_a_duplicated_cosignature_counts_once_and_is_reported(
    world: World, hk_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    duplicate_cosignature(world, hk_db)
    argv = ["audit", "verify", str(hk_db), "--trust-bundle", str(world.bundle), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "note: checkpoint of size 50: 2 cosignatures by MO, counted once" in out
    assert "6 cosignatures" in out
    assert main([*argv, "--witnesses", "MO", "--quorum", "1"]) == 0
    capsys.readouterr()
    # a quorum of two cannot be met by one witness cosigning twice
    duplicate_in_place_of_missing(world, hk_db)
    assert main([*argv, "--quorum", "2"]) == 1


def test_a_stored_hash_is_named_by_tile_level_and_position(world: World, hk_db: Path) -> None:
    corrupt_inner_hash(world, hk_db)
    (failure,) = verify_ledger(hk_db, bundle=_bundle(world)).failures
    assert (failure.category, failure.level, failure.position) == ("stored-hash", 2, 9)
    with pytest.raises(AuditError, match="a bad stored hash"):
        check_ledger(hk_db, bundle=_bundle(world))


def test_a_quorum_lets_a_ledger_pass_with_fewer_witnesses(
    world: World, hk_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(hk_db, "DELETE FROM ledger_cosignatures WHERE size = 50 AND line LIKE '%cn.customs%'")
    argv = ["audit", "verify", str(hk_db), "--trust-bundle", str(world.bundle), "--no-progress"]
    assert main(argv) == 1
    assert main([*argv, "--quorum", "1"]) == 0
    assert "witness policy: 1 of CN, MO" in capsys.readouterr().out
    assert main([*argv, "--witnesses", "CN"]) == 1


def _bundle(world: World) -> TrustBundle:
    return TrustBundle.from_json(world.bundle.read_bytes())


# -- library level, hand-given keys ----------------------------------------------------------


def test_hand_given_keys_need_a_witness_or_an_explicit_opt_out(tmp_path: Path) -> None:
    path = tmp_path / "bare.db"
    with Ledger.open(path, origin=ORIGIN, signer=SIGNER) as ledger:
        ledger.append_many([make_entry(i) for i in range(20)])
        cp = ledger.checkpoint()
        ledger.add_cosignature(cp.size, cosign(cp.checkpoint.body(), WITNESS, 1_700_000_000))
    with pytest.raises(AuditError, match="would pass on nothing"):
        verify_ledger(path, SIGNER.verifier)
    assert check_ledger(path, SIGNER.verifier, [WITNESS.verifier]).cosignatures == 1
    result = check_ledger(path, SIGNER.verifier, policy=WitnessPolicy.unwitnessed())
    assert result.ok
    assert result.policy.startswith("none (opted out")


def test_a_ledger_without_any_checkpoint_does_not_pass(tmp_path: Path) -> None:
    path = tmp_path / "bare.db"
    with Ledger.open(path, origin=ORIGIN, signer=SIGNER) as ledger:
        ledger.append(make_entry(0))
    result = verify_ledger(path, SIGNER.verifier, [WITNESS.verifier])
    assert not result.ok
    assert result.entries == 1
    with pytest.raises(AuditError, match="no signed checkpoint"):
        check_ledger(path, SIGNER.verifier, [WITNESS.verifier])


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
    path = tmp_path / "file"
    path.write_bytes(content)
    with pytest.raises(ExportFormatError, match=match):
        verify_ledger(path, SIGNER.verifier, [WITNESS.verifier])


def test_entries_beyond_the_latest_checkpoint_are_said_to_be_unsigned(
    world: World, hk_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with NodeLedger(world, HK, hk_db) as hk:
        for i in range(3):
            hk.entry(Event.ACKNOWLEDGED, uuid.UUID(int=0x2000 + i), PARTNER, bytes(32))
    argv = ["audit", "verify", str(hk_db), "--trust-bundle", str(world.bundle), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "note: entries 50..52 are beyond the latest checkpoint (size 50): nothing signed "
        "vouches for them yet"
    ) in out


def test_a_policy_naming_a_witness_the_bundle_cannot_vouch_for_is_refused(
    world: World, hk_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(world.bundle.read_text())
    doc["roots"] = [r for r in doc["roots"] if r["jurisdiction"] != "MO"]
    bundle = tmp_path / "two-roots.json"
    bundle.write_text(json.dumps(doc))
    argv = ["audit", "verify", str(hk_db), "--trust-bundle", str(bundle), "--no-progress"]
    assert main([*argv, "--witnesses", "CN,MO"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the witness policy names MO, which the trust bundle has no root for" in err


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(index=st.integers(0, 47), at=st.integers(0, 200), bit=st.integers(0, 7))
def test_any_flipped_bit_of_a_tiled_entry_is_named_by_its_index(
    world: World, template: Path, tmp_path: Path, index: int, at: int, bit: int
) -> None:
    """Whatever bit of whatever entry (in a complete tile) changes, a failure names that entry,
    and nothing is blamed on a stored hash or a fork."""
    path = tmp_path / f"hk-{index}-{at}-{bit}.db"
    shutil.copy(template, path)
    leaf = bytearray(_leaf(path, index))
    leaf[at % len(leaf)] ^= 1 << bit
    _set_leaf(path, index, bytes(leaf))
    result = verify_ledger(path, bundle=_bundle(world))
    named = {(f.category, f.index) for f in result.failures}
    assert ("entries", index) in named or ("altered-entry", index) in named, result.failures
    assert not {f.category for f in result.failures} & {"stored-hash", "fork"}, result.failures
