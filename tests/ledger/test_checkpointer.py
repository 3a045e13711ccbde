"""The checkpointer signs growth, except growth by ``witnessed`` entries alone (ADR 0015)."""

from __future__ import annotations

from gateway.ledger import Checkpointer, Event, Ledger
from tests.ledger.conftest import make_entry


def test_witnessed_entries_alone_call_for_no_checkpoint(ledger: Ledger) -> None:
    checkpointer = Checkpointer(ledger, interval=60)
    assert not checkpointer.due()  # empty
    ledger.append(make_entry(0))
    assert checkpointer.due()
    assert checkpointer.run_once()
    assert ledger.checkpoint_size() == 1
    for i in (1, 2):
        ledger.append(make_entry(i, Event.WITNESSED))
    assert not checkpointer.due()
    assert not checkpointer.run_once()
    assert ledger.checkpoint_size() == 1  # the two witnessed entries wait, unsigned
    ledger.append(make_entry(3, Event.ACKNOWLEDGED))
    ledger.append(make_entry(4, Event.WITNESSED))
    assert checkpointer.due()  # an entry that is not witnessed, even before the last
    assert checkpointer.run_once()
    assert ledger.checkpoint_size() == 5  # and the witnessed ones are signed with it
