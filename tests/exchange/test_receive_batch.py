"""A delivered batch is recorded in one ledger append (ADR 0057), and stays exactly-once: the
same batch delivered twice at the same time (a retry racing its first attempt) records each
message once, and both calls answer every envelope with the same receipt."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from gateway.ledger import Event
from tests.exchange.conftest import HK, MO, Trio
from tests.exchange.test_refusals import _deliver, _envelope


def test_a_batch_delivered_twice_at_once_is_recorded_once_with_the_same_receipts(
    trio: Trio,
) -> None:
    envelopes = [_envelope(trio, HK, [MO], str(uuid.uuid4())) for _ in range(60)]
    answers: list[Any] = [None, None]
    start = threading.Barrier(2)

    def deliver(i: int) -> None:
        start.wait()
        answers[i] = _deliver(trio, HK, MO, envelopes)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    first, second = answers
    assert all(r.HasField("receipt") for r in first.results), first.results[0].error
    assert all(r.HasField("receipt") for r in second.results), second.results[0].error
    assert [r.receipt.SerializeToString() for r in first.results] == [
        r.receipt.SerializeToString() for r in second.results
    ]
    received = [r for r in trio.entries(MO, Event.RECEIVED) if r.entry.counterpart == "HK"]
    assert len(received) == len(envelopes)
    indexes = sorted(r.index for r in received)
    assert indexes == list(range(indexes[0], indexes[0] + len(envelopes)))  # one append
