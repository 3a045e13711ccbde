"""Reconciliation: the three nodes' ledgers against each other (DESIGN section 4).

For every ``sent`` entry of ledger X to Y (message id, digest):

1. Y's ledger has a ``received`` entry for that message id from X, with the same digest;
2. X's ledger has a ``receipt`` entry from Y for it, whose first digest is the same.

A message with neither (not delivered yet) or with a ``received`` but no ``receipt`` yet (the
receipt is on its way back) is *pending*, not an error; one for which X recorded a ``refused``
entry (Y refused it for good: a replay, a message not releasable to Y) is listed as *refused*;
a ``receipt`` without a ``received``, or any digest that differs, is an error naming both
ledgers' indexes. Conversely every ``received`` entry in Y from X must match a ``sent`` in X
(else it is an extra ``received``: a message X never sent). Entries whose counterpart is not
among the audited ledgers are counted as unchecked. Each ledger should be verified on its own
first (``verify_ledger``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit._source import LedgerSource, open_source
from gateway.audit.errors import AuditError, ExportFormatError
from gateway.entries import Event, decode_record
from gateway.pki.note_keys import jurisdiction_of_origin


@dataclass(frozen=True)
class _Seen:
    index: int
    digest: bytes


@dataclass
class _Ledger:
    code: str
    sent: dict[tuple[uuid.UUID, str], _Seen] = field(default_factory=dict)
    # by (message id, origin): ids are unique per origin only
    received: dict[tuple[uuid.UUID, str], tuple[str, _Seen]] = field(default_factory=dict)
    receipts: dict[tuple[uuid.UUID, str], _Seen] = field(default_factory=dict)
    refusals: dict[tuple[uuid.UUID, str], _Seen] = field(default_factory=dict)


@dataclass(frozen=True)
class Mismatch:
    """One reconciliation error: what, which message, and where in which ledgers."""

    problem: str  # missing-received, digest-mismatch, receipt-digest-mismatch, extra-received
    message_id: uuid.UUID
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class ReconciliationResult:
    """Counts, pending deliveries and errors. ``ok`` if no error and something was compared."""

    ledgers: list[str] = field(default_factory=list)
    sent: int = 0
    matched: int = 0
    receipts: int = 0
    unchecked: int = 0
    pending: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # final refusals the origin recorded
    errors: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every compared message matched (pending ones allowed)."""
        return not self.errors and len(self.ledgers) >= 2


class ReconciliationError(AuditError):
    """The ledgers disagree about a message; the message names both indexes."""


def _read(source: LedgerSource) -> _Ledger:
    j = jurisdiction_of_origin(source.origin)
    if j is None:
        raise ExportFormatError(f"origin {source.origin!r} is no jurisdiction's ledger")
    ledger = _Ledger(j.value)
    for index, leaf in source.entries():
        if leaf[17] not in (Event.SENT, Event.RECEIVED, Event.RECEIPT, Event.REFUSED):
            continue
        e = decode_record(leaf).entry
        if not e.digests:
            continue
        seen = _Seen(index, e.digests[0])
        if e.event is Event.SENT:
            ledger.sent[(e.message_id, e.counterpart)] = seen
        elif e.event is Event.RECEIVED:
            ledger.received[(e.message_id, e.counterpart)] = (e.counterpart, seen)
        elif e.event is Event.REFUSED:
            ledger.refusals[(e.message_id, e.counterpart)] = seen
        else:
            ledger.receipts[(e.message_id, e.counterpart)] = seen
    return ledger


def reconcile_sources(sources: Iterable[LedgerSource]) -> ReconciliationResult:
    """Reconcile opened ledger sources; see the module docstring for the rules."""
    ledgers = {led.code: led for led in map(_read, sources)}
    result = ReconciliationResult(ledgers=sorted(ledgers))
    for x in ledgers.values():
        for (mid, to), sent in sorted(x.sent.items(), key=lambda kv: kv[1].index):
            result.sent += 1
            y = ledgers.get(to)
            if y is None:
                result.unchecked += 1
                continue
            where = f"{x.code} sent {mid} to {to} (entry {sent.index})"
            refusal = x.refusals.get((mid, to))
            if refusal is not None:  # the recipient refused it for good; the origin says so
                result.refused.append(f"{where}: refused by {to} ({x.code} entry {refusal.index})")
                continue
            got = y.received.get((mid, x.code))
            receipt = x.receipts.get((mid, to))
            if receipt is not None:
                result.receipts += 1
                if receipt.digest != sent.digest:
                    result.errors.append(
                        Mismatch(
                            "receipt-digest-mismatch",
                            mid,
                            f"{where} with digest {sent.digest.hex()}, but its receipt "
                            f"({x.code} entry {receipt.index}) is for {receipt.digest.hex()}",
                        )
                    )
            if got is None or got[0] != x.code:
                if receipt is None:
                    result.pending.append(f"{where}: not delivered yet")
                else:
                    result.errors.append(
                        Mismatch(
                            "missing-received",
                            mid,
                            f"{where}, {to}'s receipt is {x.code} entry {receipt.index}, but "
                            f"{to}'s ledger has no received entry for it from {x.code}",
                        )
                    )
                continue
            received = got[1]
            if received.digest != sent.digest:
                result.errors.append(
                    Mismatch(
                        "digest-mismatch",
                        mid,
                        f"{where} with digest {sent.digest.hex()}, but {to} entry "
                        f"{received.index} received it with digest {received.digest.hex()}",
                    )
                )
                continue
            result.matched += 1
            if receipt is None:
                result.pending.append(
                    f"{where}: received ({to} entry {received.index}), receipt not recorded yet"
                )
    for y in ledgers.values():
        for (mid, _), (origin, received) in sorted(
            y.received.items(), key=lambda kv: kv[1][1].index
        ):
            sender = ledgers.get(origin)
            if sender is None:
                result.unchecked += 1
            elif (mid, y.code) not in sender.sent:
                result.errors.append(
                    Mismatch(
                        "extra-received",
                        mid,
                        f"{y.code} entry {received.index} received {mid} from {origin}, but "
                        f"{origin}'s ledger has no sent entry for it to {y.code}",
                    )
                )
            elif (mid, y.code) in sender.refusals:
                sent = sender.sent[(mid, y.code)]
                if sent.digest != received.digest:
                    result.errors.append(
                        Mismatch(
                            "digest-mismatch",
                            mid,
                            f"{y.code} entry {received.index} received {mid} from {origin} with "
                            f"digest {received.digest.hex()}, but {origin} sent it (entry "
                            f"{sent.index}) with digest {sent.digest.hex()} and recorded "
                            f"{y.code}'s refusal",
                        )
                    )
    return result


def reconcile(paths: Iterable[Path]) -> ReconciliationResult:
    """Reconcile the ledger databases or exports at ``paths`` (one per jurisdiction).

    Raises:
        ExportFormatError: a file is not a ledger, or two are of the same jurisdiction.
    """
    sources = [open_source(p) for p in paths]
    try:
        origins = [s.origin for s in sources]
        if len(set(origins)) != len(origins):
            raise ExportFormatError(f"two ledgers of the same origin among {origins}")
        return reconcile_sources(sources)
    finally:
        for s in sources:
            s.close()


def check_reconciliation(paths: Iterable[Path]) -> ReconciliationResult:
    """Like :func:`reconcile`, but raise on the first error.

    Raises:
        ReconciliationError: naming the message and both ledgers' entry indexes.
        AuditError: fewer than two ledgers to compare.
    """
    result = reconcile(paths)
    if result.errors:
        raise ReconciliationError(result.errors[0].message)
    if not result.ok:
        raise AuditError(f"reconciliation needs at least two ledgers, got {result.ledgers}")
    return result
