"""Ledger fixtures: a real SQLite file in tmp_path, a real Ed25519 signer."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.ledger import Entry, Event, Ledger
from gateway.notes import NoteSigner

ORIGIN = "hk.customs-exchange/ledger"


def make_entry(i: int, event: Event = Event.SENT) -> Entry:
    """A deterministic entry number ``i``."""
    return Entry(
        event=event,
        message_id=uuid.UUID(int=i + 1),
        kind="SEIZURE_NOTICE",
        counterpart="CN" if i % 2 else "MO",
        digests=(hashlib.sha256(i.to_bytes(8, "big")).digest(),),
    )


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(ledger_path: Path, signer: NoteSigner) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_path, origin=ORIGIN, signer=signer)
    yield opened
    opened.close()
