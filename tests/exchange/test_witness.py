"""Witnessing: every node cosigns the others' checkpoints after checking consistency, and
refuses a fork; auditors see the cosignatures and can check proofs against the cosigned root."""

from __future__ import annotations

import hashlib
import time

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf import any_pb2
from grpc_status import rpc_status

from customs.gateway.v1 import audit_pb2, peer_pb2, peer_pb2_grpc
from gateway.exchange.witness import cosigner_verifier, ledger_origin, log_verifier
from gateway.ledger import Event
from gateway.merkle import leaf_hash, verify_inclusion
from gateway.notes import Checkpoint, NoteSigner, open_note, parse_checkpoint, sign_note
from gateway.pki import Jurisdiction, Role
from tests.exchange.conftest import CN, HK, MO, Trio, notice_request
from tests.support import wait_for


def _public(trio: Trio, j: Jurisdiction) -> ed25519.Ed25519PublicKey:
    key = trio.world.signing(j).issued.certificate.public_key()
    assert isinstance(key, ed25519.Ed25519PublicKey)
    return key


def _cosigned_by_both(trio: Trio, size: int) -> str | None:
    """The first checkpoint of CN of at least ``size`` that both HK and MO cosigned."""
    verifiers = [log_verifier(CN, _public(trio, CN))] + [
        cosigner_verifier(j, _public(trio, j)) for j in (HK, MO)
    ]
    for checkpoint in trio.nodes[CN].ledger.checkpoints(size):
        _, verified = open_note(checkpoint.note, verifiers)
        if len(verified) == 3:
            return checkpoint.note
    return None


def _settled(trio: Trio) -> bool:
    """No checkpoint to make, and nothing left for any witness to cosign."""
    return all(
        not n.checkpointer.due()
        and not any(n.witness_client.due(p) for p in (CN, HK, MO) if p is not j)
        for j, n in trio.nodes.items()
    )


def test_ledgers_quiesce_once_cosigned(trio: Trio) -> None:
    """Cosigning is recorded in the witness's own ledger (a ``witnessed`` entry), but a log
    whose growth is only such entries asks nobody to cosign it, so three idle nodes stop."""
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10)
    wait_for(lambda: len(trio.entries(CN, Event.RECEIPT)) == 2, what="both receipts")
    wait_for(lambda: _cosigned_by_both(trio, 1), what="cosignatures")
    wait_for(lambda: _settled(trio), what="the three nodes to settle")
    sizes = {j: trio.nodes[j].ledger.size() for j in (CN, HK, MO)}
    # each witness recorded cosigning each log that had something to cosign
    for j in (HK, MO):
        witnessed = {r.entry.counterpart for r in trio.entries(j, Event.WITNESSED)}
        assert "CN" in witnessed
    assert {r.entry.counterpart for r in trio.entries(CN, Event.WITNESSED)} == {"HK", "MO"}
    time.sleep(1.5)  # five checkpoint intervals
    assert _settled(trio)
    assert {j: trio.nodes[j].ledger.size() for j in (CN, HK, MO)} == sizes


def test_checkpoints_are_cosigned_by_both_other_jurisdictions(trio: Trio) -> None:
    for _ in range(3):
        trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10)
    size = trio.nodes[CN].ledger.size()
    note = wait_for(lambda: _cosigned_by_both(trio, size), what="two cosignatures")
    assert "— hk.customs-exchange/witness " in note
    assert "— mo.customs-exchange/witness " in note
    # each witness remembers what it cosigned (to check the next one against it)
    for j in (HK, MO):
        assert _witnessed(trio, j)[0] >= size

    # an auditor checks that the first "sent" entry is in the cosigned tree
    body = parse_checkpoint(open_note(note, [log_verifier(CN, _public(trio, CN))])[0].text)
    entries = trio.auditor(CN).GetEntries(audit_pb2.GetEntriesRequest(start=0, end=1), timeout=5)
    proof = trio.auditor(CN).GetInclusionProof(
        audit_pb2.GetInclusionProofRequest(leaf_index=0, tree_size=body.size), timeout=5
    )
    verify_inclusion(
        leaf_hash(entries.entries[0].leaf), 0, body.size, list(proof.hashes), body.root_hash
    )


def _cosign(trio: Trio, witness: Jurisdiction, request: peer_pb2.CosignCheckpointRequest) -> object:
    stub = peer_pb2_grpc.PeerExchangeStub(trio.channel(witness, CN, Role.NODE))
    return stub.CosignCheckpoint(request, timeout=5)


def _forged_checkpoint(trio: Trio, size: int, root: bytes) -> bytes:
    key = trio.world.signing(CN).issued.private_key
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    body = Checkpoint(ledger_origin(CN), size, root).body()
    return sign_note(body, [NoteSigner(ledger_origin(CN), key)]).encode()


def _witnessed(trio: Trio, witness: Jurisdiction) -> tuple[int, bytes]:
    def state() -> tuple[int, bytes] | None:
        conn = trio.nodes[witness].ledger.reader()
        row = conn.execute(
            "SELECT size, root FROM exchange_witness WHERE origin = ?", (ledger_origin(CN),)
        ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    return wait_for(state, what=f"{witness} to cosign a CN checkpoint")


def test_witness_refuses_a_fork(trio: Trio, caplog: pytest.LogCaptureFixture) -> None:
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
    size, root = _witnessed(trio, HK)
    other_root = hashlib.sha256(b"a rewritten history").digest()
    certificate = trio.nodes[CN].signer.certificate_der

    # same size, different root: a fork, whatever the proof
    request = peer_pb2.CosignCheckpointRequest(
        old_size=size,
        checkpoint=_forged_checkpoint(trio, size, other_root),
        signer_certificate=certificate,
    )
    with pytest.raises(grpc.RpcError) as info:
        _cosign(trio, HK, request)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "inconsistent checkpoint, refusing to cosign" in (info.value.details() or "")
    assert any("FORK" in r.getMessage() for r in caplog.records)

    # a larger tree whose proof does not lead from the cosigned root
    request = peer_pb2.CosignCheckpointRequest(
        old_size=size,
        consistency_proof=[hashlib.sha256(b"junk").digest()] * 2,
        checkpoint=_forged_checkpoint(trio, size + 5, other_root),
        signer_certificate=certificate,
    )
    with pytest.raises(grpc.RpcError) as info:
        _cosign(trio, HK, request)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _witnessed(trio, HK) == (size, root)  # the witness's state did not move


def test_witness_reports_the_size_it_knows(trio: Trio) -> None:
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
    size, root = _witnessed(trio, HK)
    request = peer_pb2.CosignCheckpointRequest(
        old_size=size + 7,
        checkpoint=_forged_checkpoint(trio, size, root),
        signer_certificate=trio.nodes[CN].signer.certificate_der,
    )
    with pytest.raises(grpc.RpcError) as info:
        _cosign(trio, HK, request)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
    assert status is not None
    conflicts = []
    for detail in status.details:
        conflict = peer_pb2.WitnessConflict()
        if isinstance(detail, any_pb2.Any) and detail.Unpack(conflict):
            conflicts.append(conflict.known_size)
    assert conflicts == [size]


def test_checkpoint_signed_by_another_jurisdiction_is_refused(trio: Trio) -> None:
    key = trio.world.signing(MO).issued.private_key
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    body = Checkpoint(ledger_origin(CN), 1, b"\x00" * 32).body()
    note = sign_note(body, [NoteSigner(ledger_origin(CN), key)]).encode()
    request = peer_pb2.CosignCheckpointRequest(
        checkpoint=note, signer_certificate=trio.nodes[MO].signer.certificate_der
    )
    with pytest.raises(grpc.RpcError) as info:
        _cosign(trio, HK, request)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "not a CN node" in (info.value.details() or "")
