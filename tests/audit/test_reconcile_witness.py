"""Reconciliation of what the witnesses cosigned and of signed receipts, on crafted exports.

CN sends A to HK (received, receipted with HK's real signed receipt) and B to MO; CN's log is
checkpointed twice; HK cosigns both checkpoints (the second with the consistency proof from
the first), MO the first; each cosigning is a ``witnessed`` entry in the witness's ledger with
its record beside it, as a node writes them. Each case then changes one export, as an
operator (or a careless copy) might, and names what reconciliation must say.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from customs.gateway.v1 import envelope_pb2
from gateway.audit import ReconciliationError, check_reconciliation, reconcile, write_export
from gateway.audit._source import (
    ExportSource,
    StoredReceipt,
    WitnessEvidence,
    write_export_records,
)
from gateway.cli import main
from gateway.demo.tamper import roll_back
from gateway.envelope.signing import RECEIPT_CONTEXT, pae
from gateway.exchange import _store as store
from gateway.exchange.witness import witnessed_entry
from gateway.ledger import Entry, Event, Record, SignedCheckpoint
from gateway.merkle import MemoryTree
from gateway.notes import COSIGNATURE_V1, Checkpoint, NoteSigner, cosign, sign_note
from gateway.pki import Jurisdiction
from gateway.pki.bundle import TrustBundle
from gateway.pki.pem import write_private_key
from tests.audit.nodes import NodeLedger, envelope, signer_of
from tests.support import World

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO
A, B, D = (uuid.UUID(int=0xA0 + i) for i in range(3))
CN_ORIGIN = "cn.customs-exchange/ledger"
ROOT = r"[0-9a-f]{64}"


def _key(world: World, j: Jurisdiction) -> ed25519.Ed25519PrivateKey:
    return signer_of(world, j).private_key


def witness(
    world: World, w: NodeLedger, log: NodeLedger, cp: SignedCheckpoint, old: SignedCheckpoint | None
) -> None:
    """``w`` cosigns ``log``'s checkpoint ``cp`` as a node does (entry and record together)."""
    note = cp.note.encode()
    signer = NoteSigner(f"{w.j.trust_domain}/witness", _key(world, w.j), COSIGNATURE_V1)
    line = cosign(cp.checkpoint.body(), signer, int(time.time()))
    proof = log.ledger.consistency_proof(old.size, cp.size) if old else []

    def within(conn: object, index: int) -> None:
        store.record_cosigned(
            conn,  # type: ignore[arg-type]
            index,
            log.origin,
            cp.size,
            old.size if old else 0,
            proof,
            note,
            line,
        )

    w.ledger.append(witnessed_entry(log.j, note, line), within)


@pytest.fixture
def exports(world: World, tmp_path: Path) -> dict[Jurisdiction, Path]:
    paths = {j: tmp_path / f"{j.value.lower()}.db" for j in (CN, HK, MO)}
    nodes = {j: NodeLedger(world, j, p) for j, p in paths.items()}
    try:
        for j, n in nodes.items():  # as a node keeps its own signing certificate for auditors
            der = signer_of(world, j).certificate_der
            n.ledger.write(lambda conn, der=der: store.keep_certificate(conn, der))
        cn, hk, mo = nodes[CN], nodes[HK], nodes[MO]
        a, b = envelope(world, CN, HK, A), envelope(world, CN, MO, B)
        cn.sent(a)
        cn.receipt(a, HK, received_index=hk.received(a, CN))
        first = cn.checkpoint()
        witness(world, hk, cn, first, None)
        witness(world, mo, cn, first, None)
        cn.sent(b)
        mo.received(b, CN)
        second = cn.checkpoint()
        witness(world, hk, cn, second, first)
    finally:
        for n in nodes.values():
            n.ledger.close()
    out = {}
    for j, p in paths.items():
        out[j] = p.with_suffix(".export")
        write_export(p, out[j])
    return out


def _rewrite(export: Path, **changes: object) -> Path:
    """A copy of ``export`` with some of its witness records replaced."""
    source = ExportSource(export)
    records = source.witness_records()
    assert records is not None
    out = export.with_name("changed-" + export.name)
    write_export_records(
        out,
        source.origin,
        [leaf for _, leaf in source.entries()],
        source.checkpoints(),
        source.certificates(),
        (source.envelopes() or {}).values(),
        dataclasses.replace(records, **changes),  # type: ignore[arg-type]
    )
    return out


Exports = dict[Jurisdiction, Path]


def honest(world: World, e: Exports) -> list[Path]:
    return list(e.values())


def rolled_back(world: World, e: Exports) -> list[Path]:
    key = e[CN].with_name("cn.key")
    write_private_key(key, _key(world, CN))
    out = e[CN].with_name("cn-rolled.export")
    roll_back(e[CN], out, 1, key)  # below both checkpoints (sizes 2 and 3)
    return [out, e[HK], e[MO]]


def forked(world: World, e: Exports) -> list[Path]:
    """CN's ledger with another second entry (below its first checkpoint) in its receipt's
    place, re-signed by CN."""
    source = ExportSource(e[CN])
    leaves = [leaf for _, leaf in source.entries()]
    other = Entry(Event.ACKNOWLEDGED, D, "SEIZURE_NOTICE", "CN", (hashlib.sha256(b"x").digest(),))
    leaves[1] = Record(1, 1, other).encode()
    tree = MemoryTree(leaves)
    note = sign_note(Checkpoint(CN_ORIGIN, tree.size, tree.root()).body(), [_cn_signer(world)])
    out = e[CN].with_name("cn-forked.export")
    write_export_records(
        out,
        CN_ORIGIN,
        leaves,
        [note],
        source.certificates(),
        (source.envelopes() or {}).values(),
        source.witness_records(),
    )
    return [out, e[HK], e[MO]]


def _cn_signer(world: World) -> NoteSigner:
    return NoteSigner(CN_ORIGIN, _key(world, CN))


def record_missing(world: World, e: Exports) -> list[Path]:
    return [e[CN], _rewrite(e[HK], cosigned=[]), e[MO]]


def record_altered(world: World, e: Exports) -> list[Path]:
    records = ExportSource(e[HK]).witness_records()
    assert records is not None
    other = sign_note(Checkpoint(CN_ORIGIN, 2, b"\x01" * 32).body(), [_cn_signer(world)])
    changed = [dataclasses.replace(records.cosigned[0], note=other.encode())]
    return [e[CN], _rewrite(e[HK], cosigned=changed + records.cosigned[1:]), e[MO]]


def receipt_missing(world: World, e: Exports) -> list[Path]:
    return [_rewrite(e[CN], receipts=[]), e[HK], e[MO]]


def receipt_altered(world: World, e: Exports) -> list[Path]:
    """HK's receipt re-signed by HK over another body (another ledger index)."""
    receipt = _receipt(e)
    body = envelope_pb2.ReceiptBody.FromString(receipt.body)
    body.ledger_index += 7
    data = body.SerializeToString()
    receipt.body = data
    receipt.signature = _key(world, HK).sign(pae(RECEIPT_CONTEXT, data))
    return [_with_receipt(e, receipt), e[HK], e[MO]]


def receipt_by_another_node(world: World, e: Exports) -> list[Path]:
    """The same receipt body (same digest), signed by MO's node instead of HK's."""
    receipt = _receipt(e)
    mo = signer_of(world, MO)
    receipt.signer_certificate = mo.certificate_der
    receipt.key_id = mo.key_id
    receipt.signature = mo.sign(pae(RECEIPT_CONTEXT, receipt.body))
    return [_with_receipt(e, receipt), e[HK], e[MO]]


def _receipt(e: Exports) -> envelope_pb2.SignedReceipt:
    records = ExportSource(e[CN]).witness_records()
    assert records is not None
    return envelope_pb2.SignedReceipt.FromString(records.receipts[0].receipt)


def _with_receipt(e: Exports, receipt: envelope_pb2.SignedReceipt) -> Path:
    stored = StoredReceipt(A, "HK", receipt.SerializeToString())
    return _rewrite(e[CN], receipts=[stored])


def evidence_of_a_fork(world: World, e: Exports) -> list[Path]:
    signer = _cn_signer(world)
    cosigned = sign_note(Checkpoint(CN_ORIGIN, 3, b"\x02" * 32).body(), [signer]).encode()
    presented = sign_note(Checkpoint(CN_ORIGIN, 5, b"\x03" * 32).body(), [signer]).encode()
    ev = WitnessEvidence("CN", "fork", 1, 3, (), cosigned, presented)
    return [e[CN], _rewrite(e[MO], evidence=[ev]), e[HK]]


def evidence_not_signed_by_the_log(world: World, e: Exports) -> list[Path]:
    mo = NoteSigner(CN_ORIGIN, _key(world, MO))
    notes = [
        sign_note(Checkpoint(CN_ORIGIN, n, b"\x02" * 32).body(), [mo]).encode() for n in (3, 5)
    ]
    ev = WitnessEvidence("CN", "rollback", 1, 5, (), notes[1], notes[0])
    return [e[CN], _rewrite(e[MO], evidence=[ev]), e[HK]]


CASES: list[tuple[str, Callable[[World, Exports], list[Path]], list[str], str | None]] = [
    ("honest", honest, [], None),
    (
        "rolled-back",
        rolled_back,
        # and B, which MO received, is no longer sent in the copy
        ["rolled-back", "rolled-back", "rolled-back", "extra-received"],
        rf"CN's ledger was rolled back: it holds 1 entries; its latest checkpoint is \(origin "
        rf"{CN_ORIGIN}, size 1, root {ROOT}\), but HK cosigned \(origin {CN_ORIGIN}, size 2, "
        rf"root {ROOT}\) \(evidence: HK entry 1\)",
    ),
    (
        "forked",
        forked,
        # and CN holds HK's signed receipt without its entry now
        ["forked", "forked", "forked", "receipt-unrecorded"],
        rf"CN's log forked: HK cosigned \(origin {CN_ORIGIN}, size 2, root {ROOT}\) \(evidence: "
        rf"HK entry 1\), but CN's ledger has \(origin {CN_ORIGIN}, size 3, root {ROOT}\): the "
        r"consistency proof from its entries does not lead there",
    ),
    (
        "record-missing",
        record_missing,
        ["witness-record-missing", "witness-record-missing"],
        r"HK entry 1 \(witnessed CN\): its cosigned note is missing",
    ),
    (
        "record-altered",
        record_altered,
        ["witness-record-mismatch"],
        r"HK entry 1 \(witnessed CN\): the entry's digests are not those of the note",
    ),
    (
        "receipt-missing",
        receipt_missing,
        ["receipt-missing"],
        rf"CN entry 1 \(receipt from HK for {A}\): the signed receipt is missing",
    ),
    (
        "receipt-altered",
        receipt_altered,
        ["receipt-digest-mismatch"],
        rf"CN entry 1 \(receipt from HK for {A}\): the entry records receipt digest {ROOT}, the "
        rf"signed receipt's is {ROOT}",
    ),
    (
        "receipt-by-another-node",
        receipt_by_another_node,
        ["receipt-signature"],
        r"the receipt is signed by spiffe://mo.customs-exchange/node/gateway, not HK's node",
    ),
    (
        "evidence-of-a-fork",
        evidence_of_a_fork,
        ["forked"],
        rf"CN presented MO a checkpoint \(origin {CN_ORIGIN}, size 5, root 0303[0-9a-f]{{60}}\) "
        rf"inconsistent with \(origin {CN_ORIGIN}, size 3, root 0202[0-9a-f]{{60}}\) that MO had "
        r"cosigned \(fork, refused live",
    ),
    (
        "evidence-not-signed-by-the-log",
        evidence_not_signed_by_the_log,
        ["bad-evidence"],
        r"MO holds evidence of a rollback of CN whose notes are not both signed by CN's node",
    ),
]


@pytest.mark.parametrize(
    ("change", "problems", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_witnessing_and_receipts_table(
    world: World,
    exports: Exports,
    change: Callable[[World, Exports], list[Path]],
    problems: list[str],
    match: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = change(world, exports)
    bundle = TrustBundle.from_json(world.bundle.read_bytes())
    result = reconcile(paths, bundle)
    assert sorted(e.problem for e in result.errors) == sorted(problems), result.errors
    args = ["audit", "reconcile", *map(str, paths), "--trust-bundle", str(world.bundle)]
    if match is None:
        assert result.ok
        assert (result.cosigned_checked, result.receipts_verified) == (3, 1)
        assert result.notes == []
        assert main(args) == 0
        return
    assert any(re.search(match, e.message) for e in result.errors), result.errors
    with pytest.raises(ReconciliationError):
        check_reconciliation(paths, bundle)
    capsys.readouterr()
    assert main([*args, "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert sorted(e["problem"] for e in printed["errors"]) == sorted(problems)
    assert any(re.search(match, e["message"]) for e in printed["errors"])


def test_split_view_without_the_log(world: World, tmp_path: Path) -> None:
    """HK and MO were shown two roots for one size of CN's log; CN's ledger is not audited."""
    signer = NoteSigner(CN_ORIGIN, _key(world, CN))
    paths = []
    for j, root in ((HK, b"\x04" * 32), (MO, b"\x05" * 32)):
        note = sign_note(Checkpoint(CN_ORIGIN, 7, root).body(), [signer])
        cp = SignedCheckpoint(Checkpoint(CN_ORIGIN, 7, root), note, 0)
        path = tmp_path / f"{j.value.lower()}.db"
        with NodeLedger(world, j, path) as w:
            for der in (signer_of(world, CN).certificate_der, signer_of(world, j).certificate_der):
                # the log's, as a witness keeps it, and its own
                w.ledger.write(lambda conn, der=der: store.keep_certificate(conn, der))
            w.ledger.append(Entry(Event.ERASED, D, "SEIZURE_NOTICE", "CN", (root,)))
            fake_log = _FakeLog(CN)
            witness(world, w, fake_log, cp, None)  # type: ignore[arg-type]
        paths.append(path.with_suffix(".export"))
        write_export(path, paths[-1])
    result = reconcile(paths)
    assert [e.problem for e in result.errors] == ["split-view"], result.errors
    assert re.search(
        rf"{CN_ORIGIN} showed its witnesses two views: HK cosigned \(origin {CN_ORIGIN}, size 7, "
        rf"root 0404[0-9a-f]{{60}}\) \(HK entry 1\), MO cosigned \(origin {CN_ORIGIN}, size 7, "
        rf"root 0505[0-9a-f]{{60}}\) \(MO entry 1\)",
        result.errors[0].message,
    )


def test_a_version_2_export_says_what_it_cannot_check(exports: Exports, tmp_path: Path) -> None:
    source = ExportSource(exports[HK])
    old = tmp_path / "hk-v2.export"
    write_export_records(
        old,
        source.origin,
        [leaf for _, leaf in source.entries()],
        source.checkpoints(),
        source.certificates(),
        (source.envelopes() or {}).values(),
    )
    assert ExportSource(old).version == 2
    result = reconcile([exports[CN], old, exports[MO]])
    assert result.ok, result.errors
    assert any("HK: 2 witnessed entries not checked" in n for n in result.notes), result.notes
    assert result.cosigned_checked == 1  # MO's only


@dataclasses.dataclass
class _FakeLog:
    j: Jurisdiction

    @property
    def origin(self) -> str:
        return f"{self.j.trust_domain}/ledger"
