"""Three real nodes; HK's operator forks HK's log after it was witnessed and presents the fork
to the witnesses, who refuse it live and keep both notes; an auditor then rolls back a copy of
CN's ledger. ``audit reconcile`` over the three names each log, both checkpoints and the
witness whose ledger holds the evidence."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import uuid
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from grpc_health.v1 import health_pb2, health_pb2_grpc

from customs.gateway.v1 import peer_pb2, peer_pb2_grpc
from gateway.audit import reconcile
from gateway.audit._source import ExportSource, write_export_records
from gateway.demo.tamper import roll_back
from gateway.exchange.witness import WITNESS_HEALTH_SERVICE, ledger_origin
from gateway.ledger import Entry, Event, Record
from gateway.merkle import MemoryTree, consistency_proof
from gateway.notes import Checkpoint, NoteSigner, sign_note
from gateway.pki import Jurisdiction, Role
from gateway.pki.pem import write_private_key
from gateway.server.node import WITNESS_EVIDENCE_KEY
from tests.exchange.conftest import CN, HK, MO, Trio, notice_request
from tests.exchange.test_witness import _settled
from tests.support import export_ledger, store_rows, wait_for

HK_ORIGIN = ledger_origin(HK)
_ROOT = r"[0-9a-f]{64}"


def _key(trio: Trio, j: Jurisdiction) -> ed25519.Ed25519PrivateKey:
    key = trio.world.signing(j).issued.private_key
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


def _state(trio: Trio, witness: Jurisdiction, origin: str) -> tuple[int, bytes] | None:
    row = (
        trio.nodes[witness]
        .ledger.reader()
        .execute("SELECT size, root FROM exchange_witness WHERE origin = ?", (origin,))
        .fetchone()
    )
    return (int(row[0]), bytes(row[1])) if row else None


def _witnessed(trio: Trio, witness: Jurisdiction, origin: str) -> tuple[int, bytes]:
    state = _state(trio, witness, origin)
    assert state is not None, f"{witness} never cosigned {origin}"
    return state


def _all_witnessed(trio: Trio) -> bool:
    return _settled(trio) and all(
        _state(trio, w, ledger_origin(j)) for j in (CN, HK, MO) for w in (CN, HK, MO) if w != j
    )


def _forked_history(trio: Trio, keep: int, extra: int) -> list[bytes]:
    """HK's first ``keep`` entries, then ``extra`` entries of a history HK never had."""
    leaves = [leaf for _, leaf in trio.nodes[HK].ledger.leaves(0, keep)]
    for i in range(extra):
        entry = Entry(
            Event.SENT,
            uuid.uuid4(),
            "SEIZURE_NOTICE",
            "MO",
            (hashlib.sha256(f"rewritten {i}".encode()).digest(),),
        )
        leaves.append(Record(keep + i, 1_700_000_000_000, entry).encode())
    return leaves


def _health(trio: Trio, at: Jurisdiction) -> tuple[int, str]:
    stub = health_pb2_grpc.HealthStub(trio.channel(at, at, Role.PARTNER))
    response, call = stub.Check.with_call(
        health_pb2.HealthCheckRequest(service=WITNESS_HEALTH_SERVICE), timeout=5
    )
    metadata = dict(call.trailing_metadata() or ())
    return response.status, str(metadata.get(WITNESS_EVIDENCE_KEY, ""))


def test_rollback_and_fork_are_named_from_the_other_ledgers(
    trio: Trio, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.exchange.witness")
    for origin, to in ((CN, [HK, MO]), (HK, [CN, MO]), (CN, [HK]), (MO, [CN, HK])):
        trio.partner(origin).SubmitSeizureNotice(notice_request(origin, to), timeout=10)
    receipts = {CN: 3, HK: 2, MO: 2}
    wait_for(
        lambda: all(len(trio.entries(j, Event.RECEIPT)) == n for j, n in receipts.items()),
        what="every receipt",
    )
    wait_for(lambda: _all_witnessed(trio), what="every checkpoint to be cosigned")
    for witness in (CN, MO):
        assert _health(trio, witness) == (health_pb2.HealthCheckResponse.SERVING, "none")

    # -- HK's operator re-signs a different history with HK's own key and presents it live --
    cosigned = min(_witnessed(trio, w, HK_ORIGIN)[0] for w in (CN, MO))
    forked = _forked_history(trio, cosigned - 1, 3)
    tree = MemoryTree(forked)
    forged = Checkpoint(HK_ORIGIN, tree.size, tree.root())
    note = sign_note(forged.body(), [NoteSigner(HK_ORIGIN, _key(trio, HK))]).encode()
    for witness in (CN, MO):
        size, root = _witnessed(trio, witness, HK_ORIGIN)
        request = peer_pb2.CosignCheckpointRequest(
            old_size=size,
            consistency_proof=consistency_proof(size, tree.size, tree),
            checkpoint=note,
            signer_certificate=trio.nodes[HK].signer.certificate_der,
        )
        stub = peer_pb2_grpc.PeerExchangeStub(trio.channel(witness, HK, Role.NODE))
        with pytest.raises(grpc.RpcError) as info:
            stub.CosignCheckpoint(request, timeout=5)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "inconsistent checkpoint, refusing to cosign" in (info.value.details() or "")
        # both notes kept, durably, in the witness's database
        rows = store_rows(
            trio.nodes[witness].config.data_dir,
            "SELECT problem, cosigned_note, presented_note FROM exchange_witness_evidence "
            "WHERE origin = ?",
            HK_ORIGIN,
        )
        assert [(r[0], bytes(r[2])) for r in rows] == [("fork", note)]
        assert bytes(rows[0][1]).startswith(f"{HK_ORIGIN}\n{size}\n".encode())
        assert _witnessed(trio, witness, HK_ORIGIN) == (size, root)  # nothing moved
        metrics = trio.nodes[witness].metrics.render().decode()
        assert (
            f'gateway_witness_inconsistent_checkpoints{{origin="{HK_ORIGIN}",problem="fork"}} 1.0'
            in metrics
        )
        status, evidence = _health(trio, witness)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert evidence.startswith(
            f"fork of {HK_ORIGIN}: {HK_ORIGIN} presented a checkpoint of size {forged.size} "
            f"root {forged.root_hash.hex()} inconsistent with the one cosigned, of size {size} "
            f"root {root.hex()} (consistency from size {size} to size {forged.size}"
        ), evidence
    forks = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FORK: ")]
    assert len(forks) == 2, forks
    assert f"inconsistent with the one cosigned, of size {size} root {root.hex()}" in forks[-1]
    assert all("both notes kept as evidence" in f for f in forks)

    # -- the auditor's exports; a copy of CN's rolled back below what HK and MO cosigned --
    exports = {}
    for j in (CN, HK, MO):
        exports[j] = tmp_path / f"{j.value.lower()}.export"
        export_ledger(trio.nodes[j].config.data_dir, exports[j])
    honest = reconcile(list(exports.values()))
    assert [e.problem for e in honest.errors] == ["forked", "forked"]  # the evidence, only
    assert honest.cosigned_checked >= 4
    assert honest.evidence == 2
    cn_cosigned = min(_witnessed(trio, w, ledger_origin(CN))[0] for w in (HK, MO))
    key_file = tmp_path / "cn-signing.key"
    write_private_key(key_file, _key(trio, CN))
    rolled = tmp_path / "cn-rolled-back.export"
    roll_back(exports[CN], rolled, cn_cosigned - 1, key_file)
    # and HK's ledger replaced by the forked history the operator signed
    hk_forked = tmp_path / "hk-forked.export"
    source = ExportSource(exports[HK])
    write_export_records(
        hk_forked,
        HK_ORIGIN,
        forked,
        [note.decode()],
        source.certificates(),
        (source.envelopes() or {}).values(),
        source.witness_records(),
    )

    result = reconcile([rolled, exports[HK], exports[MO]])
    text = "\n".join(f"[{e.problem}] {e.message}" for e in result.errors)
    assert not result.ok
    for witness in (HK, MO):  # CN rolled back: named from each witness's ledger
        assert re.search(
            rf"\[rolled-back\] CN's ledger was rolled back: it holds {cn_cosigned - 1} entries; "
            rf"its latest checkpoint is \(origin cn.customs-exchange/ledger, size "
            rf"{cn_cosigned - 1}, root {_ROOT}\), but {witness} cosigned \(origin "
            rf"cn.customs-exchange/ledger, size \d+, root {_ROOT}\) \(evidence: {witness} entry "
            r"\d+\)",
            text,
        ), text

    result = reconcile([exports[CN], hk_forked, exports[MO]])
    text = "\n".join(f"[{e.problem}] {e.message}" for e in result.errors)
    assert not result.ok
    # HK forked: the cosigned checkpoint against the forged history, from CN's and MO's records
    for witness in (CN, MO):
        size, root = _witnessed(trio, witness, HK_ORIGIN)
        assert re.search(
            rf"\[forked\] HK's log forked: {witness} cosigned \(origin {HK_ORIGIN}, size {size}, "
            rf"root {root.hex()}\) \(evidence: {witness} entry \d+\), but HK's ledger has "
            rf"\(origin {HK_ORIGIN}, size {forged.size}, root {forged.root_hash.hex()}\)",
            text,
        ), text
    # and the fork refused live, from the evidence both witnesses hold
    for witness in (CN, MO):
        size, root = _witnessed(trio, witness, HK_ORIGIN)
        assert re.search(
            rf"\[forked\] HK presented {witness} a checkpoint \(origin {HK_ORIGIN}, size "
            rf"{forged.size}, root {forged.root_hash.hex()}\) inconsistent with \(origin "
            rf"{HK_ORIGIN}, size {size}, root {root.hex()}\) that {witness} had cosigned",
            text,
        ), text


def test_a_checkpoint_behind_the_cosigned_one_is_kept_once_as_rollback_evidence(
    trio: Trio, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):
        trio.partner(HK).SubmitSeizureNotice(notice_request(HK, [MO]), timeout=10)
    wait_for(lambda: len(trio.entries(HK, Event.RECEIPT)) == 2, what="both receipts")
    wait_for(lambda: _all_witnessed_by(trio, MO, HK) and _settled(trio), what="MO to cosign HK")
    size, root = _witnessed(trio, MO, HK_ORIGIN)
    older = Checkpoint(HK_ORIGIN, size - 1, trio.nodes[HK].ledger.root(size - 1))
    note = sign_note(older.body(), [NoteSigner(HK_ORIGIN, _key(trio, HK))]).encode()
    request = peer_pb2.CosignCheckpointRequest(
        old_size=size, checkpoint=note, signer_certificate=trio.nodes[HK].signer.certificate_der
    )
    stub = peer_pb2_grpc.PeerExchangeStub(trio.channel(MO, HK, Role.NODE))
    for _ in range(2):  # presented again: the same evidence, kept once
        with pytest.raises(grpc.RpcError) as info:
            stub.CosignCheckpoint(request, timeout=5)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"checkpoint size {size - 1} is smaller than {size}, already cosigned" in (
            info.value.details() or ""
        )
    assert len([r for r in caplog.records if r.getMessage().startswith("ROLLBACK: ")]) == 2
    with sqlite3.connect(trio.nodes[MO].ledger.path) as conn:
        rows = conn.execute(
            "SELECT problem, presented_note FROM exchange_witness_evidence"
        ).fetchall()
    assert [(p, bytes(n)) for p, n in rows] == [("rollback", note)]
    assert _witnessed(trio, MO, HK_ORIGIN) == (size, root)
    metrics = trio.nodes[MO].metrics.render().decode()
    assert (
        f'gateway_witness_inconsistent_checkpoints{{origin="{HK_ORIGIN}",problem="rollback"}} 1.0'
        in metrics
    )
    assert _health(trio, MO)[0] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert _health(trio, CN) == (health_pb2.HealthCheckResponse.SERVING, "none")


def _all_witnessed_by(trio: Trio, witness: Jurisdiction, log: Jurisdiction) -> bool:
    state = _state(trio, witness, ledger_origin(log))
    return state is not None and state[0] >= 2
