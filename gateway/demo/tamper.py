"""What an operator might do to its own ledger, on copies of exports: the demo's last step.

- :func:`roll_back`: cut a ledger below a checkpoint its witnesses cosigned and re-sign the
  shorter history with the node's own key (so the copy verifies on its own);
- :func:`strip_cosignatures`: drop every witness's cosignature lines from the checkpoints.

Both write a new export; the original is left as it is.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.audit._source import ExportSource, WitnessRecords, write_export_records
from gateway.ledger import Event, decode_record
from gateway.merkle import MemoryTree
from gateway.notes import Checkpoint, NoteSigner, parse_note, sign_note
from gateway.pki.pem import load_private_key


def _read(export: Path) -> tuple[ExportSource, list[bytes]]:
    source = ExportSource(export)
    return source, [leaf for _, leaf in source.entries()]


def roll_back(export: Path, out: Path, size: int, signing_key: Path) -> Checkpoint:
    """Write ``out``: ``export`` cut to its first ``size`` entries, with a checkpoint of that
    size signed by the node's own key (``signing_key``, PEM) in place of the later ones."""
    source, leaves = _read(export)
    tree = MemoryTree(leaves[:size])
    key = load_private_key(signing_key)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{signing_key} is not an Ed25519 key")
    checkpoint = Checkpoint(source.origin, size, tree.root())
    kept = [n for n in source.checkpoints() if _size(n) < size]
    note = sign_note(checkpoint.body(), [NoteSigner(source.origin, key)])
    records = source.witness_records() or WitnessRecords([], [], [])
    receipted = {
        (e.message_id, e.counterpart)
        for e in (decode_record(leaf).entry for leaf in leaves[:size])
        if e.event is Event.RECEIPT
    }
    write_export_records(
        out,
        source.origin,
        leaves[:size],
        [*kept, note],
        source.certificates(),
        (source.envelopes() or {}).values(),
        WitnessRecords(
            [c for c in records.cosigned if c.index < size],
            [r for r in records.receipts if r.key in receipted],
            records.evidence,
        ),
    )
    return checkpoint


def strip_cosignatures(export: Path, out: Path) -> int:
    """Write ``out``: ``export`` with every cosignature line removed; return how many."""
    source, leaves = _read(export)
    notes, stripped = [], 0
    for text in source.checkpoints():
        lines = text.splitlines(keepends=True)
        kept = [x for x in lines if not (x.startswith("— ") and "/witness " in x)]
        stripped += len(lines) - len(kept)
        notes.append("".join(kept))
    write_export_records(
        out,
        source.origin,
        leaves,
        notes,
        source.certificates(),
        (source.envelopes() or {}).values(),
        source.witness_records(),
    )
    return stripped


def _size(note: str) -> int:
    return int(parse_note(note).text.splitlines()[1])
