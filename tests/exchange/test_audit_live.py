"""An auditor of another jurisdiction fetches live ledgers, verifies them with the trust bundle
alone, reconciles them, and catches a node whose tree does not extend the one seen before."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from customs.gateway.v1 import audit_pb2, audit_pb2_grpc
from gateway.audit import write_export_records
from gateway.cli import main
from gateway.exchange.witness import ledger_origin
from gateway.ledger import Event
from gateway.notes import Checkpoint, NoteSigner, sign_note
from gateway.pki import Jurisdiction, Role
from tests.exchange.conftest import CN, HK, MO, Trio, notice_request
from tests.support import wait_for


def _fetch(trio: Trio, j: Jurisdiction, out: Path, *extra: str) -> int:
    auditor = trio.world.cred(MO, Role.AUDITOR)  # an MO auditor, reading any jurisdiction
    return main(
        [
            "audit",
            "fetch",
            "--node",
            trio.nodes[j].address,
            "--jurisdiction",
            j.value,
            "--cert",
            str(auditor.certificate),
            "--key",
            str(auditor.key),
            "--trust-bundle",
            str(trio.world.bundle),
            "--out",
            str(out),
            *extra,
        ]
    )


def _witnessed_by_both(trio: Trio, j: Jurisdiction) -> bool:
    latest = trio.nodes[j].ledger.latest_checkpoint()
    others = [o for o in (CN, HK, MO) if o is not j]
    return (
        latest is not None
        and not trio.nodes[j].checkpointer.due()  # (`witnessed` entries may follow, unsigned)
        and all(f"— {o.trust_domain}/witness " in latest.note for o in others)
    )


def _all_witnessed(trio: Trio) -> bool:
    """Every node's latest checkpoint cosigned by both others and none due: nothing is left
    to checkpoint or cosign until new traffic."""
    return all(_witnessed_by_both(trio, j) for j in (CN, HK, MO))


def test_fetch_verify_reconcile_and_since(
    trio: Trio, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for origin, recipients in ((CN, [HK, MO]), (HK, [CN])):
        trio.partner(origin).SubmitSeizureNotice(notice_request(origin, recipients), timeout=10)
    wait_for(lambda: len(trio.entries(CN, Event.RECEIPT)) == 2, what="CN's receipts")
    wait_for(lambda: len(trio.entries(HK, Event.RECEIPT)) == 1, what="HK's receipt")
    # The default witness policy: every other jurisdiction cosigned, all three at once (a
    # witness records what it cosigned in its own ledger, so one node's checkpoint being
    # cosigned can make another's due again; fetching then found a newer, uncosigned one).
    wait_for(lambda: _all_witnessed(trio), what="every node's checkpoint cosigned")

    exports = {j: tmp_path / f"{j.value.lower()}-1.export" for j in (CN, HK, MO)}
    for j, path in exports.items():
        assert _fetch(trio, j, path) == 0
    out = capsys.readouterr().out
    assert out.count("fetched ") == 3
    bundle = str(trio.world.bundle)
    for path in exports.values():
        assert main(["audit", "verify", str(path), "--trust-bundle", bundle, "--no-progress"]) == 0
    # the MO auditor is not entitled to HK's notice to CN: withheld, not failed
    assert "1 withheld" in capsys.readouterr().out
    assert main(["audit", "reconcile", *map(str, exports.values())]) == 0
    assert "0 mismatches" in capsys.readouterr().out

    # later: more traffic; the node proves its new tree extends the one fetched before
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
    wait_for(lambda: len(trio.entries(CN, Event.RECEIPT)) == 3, what="CN's third receipt")
    wait_for(lambda: _all_witnessed(trio), what="CN's new checkpoint cosigned")
    later = tmp_path / "cn-2.export"
    assert _fetch(trio, CN, later, "--since", str(exports[CN])) == 0
    out = capsys.readouterr().out
    assert "consistent with the tree of size" in out
    assert "cosigned by: HK, MO\nwitness policy: every one of HK, MO\n" in out


def test_fetch_names_a_checkpoint_its_witnesses_did_not_cosign(
    trio: Trio, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MO is down: CN's new checkpoint gets HK's cosignature only, and the fetch says what
    that means (the export is kept as evidence)."""
    trio.stop(MO)
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
    wait_for(lambda: len(trio.entries(CN, Event.RECEIPT)) == 1, what="HK's receipt")

    def cosigned_by_hk_only() -> bool:
        latest = trio.nodes[CN].ledger.latest_checkpoint()
        return (
            latest is not None
            and not trio.nodes[CN].checkpointer.due()
            and "— hk.customs-exchange/witness " in latest.note
        )

    wait_for(cosigned_by_hk_only, what="CN's checkpoint cosigned by HK")
    out_path = tmp_path / "cn.export"
    assert _fetch(trio, CN, out_path) == 1
    out = capsys.readouterr().out
    assert "cosigned by: HK\n" in out
    assert "FAILED: checkpoint of size" in out
    assert (
        "is cosigned by HK; the policy needs every one of HK, MO (missing MO): the log's "
        "operator alone vouches for this history" in out
    )
    assert out_path.exists()
    assert _fetch(trio, CN, tmp_path / "cn-quorum.export", "--quorum", "1") == 0


def test_fetch_refuses_a_rewritten_history(
    trio: Trio, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
    key = trio.world.signing(CN).issued.private_key
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    size = trio.nodes[CN].ledger.size()
    other = Checkpoint(ledger_origin(CN), size, hashlib.sha256(b"another history").digest())
    note = sign_note(other.body(), [NoteSigner(ledger_origin(CN), key)])
    earlier = tmp_path / "cn-seen.export"
    write_export_records(earlier, ledger_origin(CN), [], [note], [], [])
    assert _fetch(trio, CN, tmp_path / "cn-now.export", "--since", str(earlier)) == 1
    err = capsys.readouterr().err
    assert f"does not extend the one of size {size}" in err
    assert not (tmp_path / "cn-now.export").exists()


def test_fetch_unreachable_node_is_an_operator_error(
    trio: Trio, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    auditor = trio.world.cred(MO, Role.AUDITOR)
    code = main(
        [
            "audit",
            "fetch",
            "--node",
            "127.0.0.1:1",
            "--jurisdiction",
            "CN",
            "--cert",
            str(auditor.certificate),
            "--key",
            str(auditor.key),
            "--trust-bundle",
            str(trio.world.bundle),
            "--out",
            str(tmp_path / "x.export"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "127.0.0.1:1: UNAVAILABLE" in err


@pytest.mark.parametrize(
    ("auditor", "sees_payload"),
    [(CN, True), (HK, True), (MO, False)],
    ids=["own-node-auditor", "recipient-auditor", "third-jurisdiction-auditor"],
)
def test_envelopes_go_only_to_auditors_entitled_to_them(
    trio: Trio, auditor: Jurisdiction, sees_payload: bool
) -> None:
    """A CN notice releasable to HK only: MO's auditor sees that it was sent, not what."""
    response = trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
    stub = audit_pb2_grpc.LedgerAuditStub(trio.channel(CN, auditor, Role.AUDITOR))
    request = audit_pb2.GetEnvelopeRequest(message_id=response.message_id)
    # The notice's `sent` entry, then its `receipt` entry once HK's receipt is back: asked
    # before, the answer had one index or two depending on the race.
    wait_for(
        lambda: len(stub.GetEnvelope(request, timeout=5).ledger_indexes) == 2,
        what="HK's receipt for the notice",
    )
    got = stub.GetEnvelope(request, timeout=5)
    assert got.HasField("envelope") is sees_payload
    assert got.withheld is not sees_payload
    assert not got.erased
    assert got.ledger_indexes[0] == response.ledger_index


def test_received_message_is_readable_by_its_origin_auditor(trio: Trio) -> None:
    response = trio.partner(HK).SubmitSeizureNotice(notice_request(HK, [CN]), timeout=10)
    wait_for(lambda: trio.entries(CN, Event.RECEIVED), what="CN to receive HK's notice")
    stub = audit_pb2_grpc.LedgerAuditStub(trio.channel(CN, HK, Role.AUDITOR))
    got = stub.GetEnvelope(audit_pb2.GetEnvelopeRequest(message_id=response.message_id), timeout=5)
    assert got.HasField("envelope")
