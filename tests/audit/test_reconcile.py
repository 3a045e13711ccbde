"""Reconciliation of three ledgers written directly: each disagreement is named, both indexes.

CN sends A to HK (received, receipted), B to MO (received, no receipt yet: pending), C to HK
(not delivered: pending). Each case then breaks one thing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit import ReconciliationError, check_reconciliation, reconcile, write_export
from gateway.cli import main
from gateway.ledger import Event
from gateway.pki import Jurisdiction
from tests.audit.nodes import NodeLedger, envelope
from tests.support import World

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO
A, B, C, D = (uuid.UUID(int=0xA0 + i) for i in range(4))
Ledgers = dict[Jurisdiction, NodeLedger]


def _baseline(world: World, nodes: Ledgers) -> None:
    a, b, c = envelope(world, CN, HK, A), envelope(world, CN, MO, B), envelope(world, CN, HK, C)
    for env in (a, b, c):
        nodes[CN].sent(env)
    nodes[CN].receipt(a, HK, received_index=nodes[HK].received(a, CN))
    nodes[MO].received(b, CN)


def nothing(world: World, nodes: Ledgers) -> None:
    pass


def missing_received(world: World, nodes: Ledgers) -> None:
    (digest,) = (
        nodes[CN]
        .ledger.reader()
        .execute("SELECT digest FROM exchange_messages WHERE message_id = ?", (str(C),))
        .fetchone()
    )
    nodes[CN].receipt(envelope(world, CN, HK, C), HK, digest=digest)  # HK has no received


def digest_mismatch(world: World, nodes: Ledgers) -> None:
    d = envelope(world, CN, MO, D)
    nodes[CN].sent(d)
    nodes[MO].entry(Event.RECEIVED, D, "CN", hashlib.sha256(b"other bytes").digest())


def receipt_for_other_digest(world: World, nodes: Ledgers) -> None:
    d = envelope(world, CN, MO, D)
    nodes[CN].sent(d)
    nodes[MO].received(d, CN)
    nodes[CN].receipt(d, MO, digest=hashlib.sha256(b"other").digest())


def extra_received(world: World, nodes: Ledgers) -> None:
    nodes[HK].received(envelope(world, MO, HK, D), MO)  # MO never recorded sending it


CASES: list[tuple[str, Callable[[World, Ledgers], None], str | None, int]] = [
    ("all-match", nothing, None, 2),
    (
        "missing-received",
        missing_received,
        rf"CN sent {C} to HK \(entry 2\), HK's receipt is CN entry 4, but HK's ledger has no "
        "received entry",
        1,
    ),
    (
        "digest-mismatch",
        digest_mismatch,
        rf"CN sent {D} to MO \(entry 4\) with digest [0-9a-f]{{64}}, but MO entry 1 received it "
        "with digest [0-9a-f]{64}",
        2,
    ),
    (
        "receipt-digest-mismatch",
        receipt_for_other_digest,
        rf"CN sent {D} to MO \(entry 4\) with digest [0-9a-f]{{64}}, but its receipt \(CN entry "
        r"5\) is for",
        2,
    ),
    (
        "extra-received",
        extra_received,
        rf"HK entry 1 received {D} from MO, but MO's ledger has no sent entry for it to HK",
        2,
    ),
]


@pytest.mark.parametrize(
    ("change", "match", "pending"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_reconciliation_table(
    world: World,
    tmp_path: Path,
    change: Callable[[World, Ledgers], None],
    match: str | None,
    pending: int,
) -> None:
    paths = {j: tmp_path / f"{j.value.lower()}.db" for j in (CN, HK, MO)}
    nodes = {j: NodeLedger(world, j, p) for j, p in paths.items()}
    try:
        _baseline(world, nodes)
        change(world, nodes)
    finally:
        for n in nodes.values():
            n.ledger.close()
    exports = []
    for _j, p in paths.items():
        write_export(p, p.with_suffix(".export"))
        exports.append(p.with_suffix(".export"))
    result = reconcile(exports)
    assert result.ledgers == ["CN", "HK", "MO"]
    assert len(result.pending) == pending, result.pending
    if match is None:
        assert result.ok
        assert result.errors == []
        assert (result.sent, result.matched, result.receipts) == (3, 2, 1)
        assert any(f"{B} to MO" in p and "receipt not recorded yet" in p for p in result.pending)
        assert any(f"{C} to HK" in p and "not delivered yet" in p for p in result.pending)
        assert check_reconciliation(paths.values()).matched == 2
        assert main(["audit", "reconcile", *map(str, exports)]) == 0
    else:
        assert [str(e) for e in result.errors]
        assert not result.ok
        with pytest.raises(ReconciliationError, match=match):
            check_reconciliation(exports)
        assert main(["audit", "reconcile", "--json", *map(str, exports)]) == 1
