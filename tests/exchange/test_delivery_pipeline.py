"""Receipts are saved while the next batch is on its way (ADR 0005): a failed save loses
nothing and records nothing twice."""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter

import pytest

from gateway.ledger import Event
from tests.exchange.conftest import CN, HK, MO, Trio, notice_request, read_stream
from tests.support import wait_for


def _hold_receipts(trio: Trio) -> sqlite3.Connection:
    """Make CN's commits that mark a delivery to HK fail while ``receipt_hold`` has a row: a
    real SQLite trigger on the node's own ledger file, as a full disk or an I/O error would."""
    conn = sqlite3.connect(trio.nodes[CN].ledger.path, isolation_level=None, timeout=30)
    conn.executescript(
        """
        CREATE TABLE receipt_hold (x INTEGER);
        INSERT INTO receipt_hold VALUES (1);
        CREATE TRIGGER receipt_hold_refuses BEFORE UPDATE OF receipt ON exchange_outbox
        WHEN NEW.recipient = 'HK' AND EXISTS (SELECT 1 FROM receipt_hold)
        BEGIN SELECT RAISE(ABORT, 'receipt_hold: disk trouble'); END;
        """
    )
    return conn


@pytest.mark.sqlite_files  # the failure is a SQLite trigger in CN's ledger file
def test_failed_receipt_save_redelivers_and_records_each_receipt_once(trio: Trio) -> None:
    hold = _hold_receipts(trio)
    ids = [
        trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10).message_id
        for _ in range(6)
    ]
    # HK has every message, CN could not save HK's receipts; MO's deliveries are unaffected.
    wait_for(lambda: len(trio.entries(HK, Event.RECEIVED)) == len(ids), what="HK received all")
    wait_for(
        lambda: (
            len([r for r in trio.entries(CN, Event.RECEIPT) if r.entry.counterpart == "MO"])
            == len(ids)
        ),
        what="MO's receipts at CN",
    )
    assert not [r for r in trio.entries(CN, Event.RECEIPT) if r.entry.counterpart == "HK"]

    hold.execute("DELETE FROM receipt_hold")
    hold.close()
    wait_for(
        lambda: (
            len([r for r in trio.entries(CN, Event.RECEIPT) if r.entry.counterpart == "HK"])
            == len(ids)
        ),
        timeout=30,
        what="HK's receipts at CN after the hold is lifted",
    )
    receipts = Counter(
        (r.entry.message_id, r.entry.counterpart) for r in trio.entries(CN, Event.RECEIPT)
    )
    assert set(receipts.values()) == {1}  # one receipt entry per message and recipient
    assert [r.entry.message_id for r in trio.entries(HK, Event.RECEIVED)] == [
        uuid.UUID(m) for m in ids
    ]  # redelivery did not record anything twice at the recipient
    got = read_stream(trio.partner(HK), expect=len(ids))
    assert [m.message_id for m in got] == ids


def test_many_batches_keep_order_and_record_each_receipt_once(trio: Trio) -> None:
    for deliverer in trio.nodes[CN].deliverers.values():
        deliverer._batch_size = 3  # many small batches, each saved while the next is sent
    ids = [
        trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10).message_id
        for _ in range(20)
    ]
    wait_for(lambda: len(trio.entries(CN, Event.RECEIPT)) == 2 * len(ids), what="all receipts")
    receipts = Counter(
        (r.entry.message_id, r.entry.counterpart) for r in trio.entries(CN, Event.RECEIPT)
    )
    assert set(receipts.values()) == {1}
    for peer in (HK, MO):
        received = [r.entry.message_id for r in trio.entries(peer, Event.RECEIVED)]
        assert received == [uuid.UUID(m) for m in ids]
