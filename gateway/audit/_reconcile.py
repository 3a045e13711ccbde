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

Receipts, from the bytes (exports of version 3 and databases carry them): for every
``receipt`` entry of X from Y, the signed receipt X holds hashes to the entry's second digest,
is signed by Y's node signing certificate (chained to the trust bundle when one is given),
and its body names the message, its digest, Y, and Y's ``received`` entry.

Witnessing (ADR 0015), against what the others cosigned: every ``witnessed`` entry of a
ledger W has its record (the peer L's signed note, the proof, W's cosignature) with the
digests the entry commits to, a note signed by L's log key, and a proof from the size W
cosigned before. Then, for every checkpoint of L that W cosigned:

- L's ledger is shorter than it: L was **rolled back** below a checkpoint its witness cosigned;
- L's entries give another root at that size (checked with the RFC 9162 consistency proof
  from that size to L's own next checkpoint, computed from L's entries): L **forked**;
- without L's ledger, two witnesses that cosigned different roots for one size saw a
  **split view**;

and every inconsistent checkpoint a witness refused live (its evidence: both notes, signed by
L) is reported as a fork or rollback of L. Each names both checkpoints (origin, size, root)
and the witness whose ledger holds the evidence.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.message import DecodeError

from customs.gateway.v1 import envelope_pb2
from gateway.audit._source import LedgerSource, WitnessRecords, open_source
from gateway.audit.errors import AuditError, ExportFormatError
from gateway.entries import Event, decode_record
from gateway.envelope.signing import RECEIPT_CONTEXT, jurisdiction_of, pae
from gateway.merkle import (
    EMPTY_ROOT,
    ConsistencyProofError,
    Frontier,
    MemoryTree,
    consistency_proof,
    leaf_hash,
    verify_consistency,
)
from gateway.notes import (
    Checkpoint,
    Note,
    NoteError,
    Verifier,
    parse_checkpoint,
    parse_note,
    verify_cosignature,
    verify_note,
)
from gateway.pki.authority import identity_of
from gateway.pki.bundle import TrustBundle, fingerprint
from gateway.pki.chain import CertificateCheckError, verify_leaf
from gateway.pki.identity import IdentityError, Jurisdiction, Role, SpiffeId
from gateway.pki.note_keys import (
    cosigner_verifier,
    jurisdiction_of_origin,
    ledger_origin,
    log_verifier,
)

_NO_MESSAGE = uuid.UUID(int=0)


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
    # every digest of each receipt entry, and each witnessed entry: index -> (peer, id, digests)
    receipt_digests: dict[tuple[uuid.UUID, str], tuple[int, tuple[bytes, ...]]] = field(
        default_factory=dict
    )
    witnessed: dict[int, tuple[str, uuid.UUID, tuple[bytes, ...]]] = field(default_factory=dict)
    count: int = 0
    # tree heads at the sizes the other ledgers' witnesses cosigned (one pass, O(log n) memory)
    roots: dict[int, bytes] = field(default_factory=dict)
    source: LedgerSource | None = None
    _tree: MemoryTree | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)  # as the ledger holds them
    records: WitnessRecords | None = None
    certificates: list[bytes] = field(default_factory=list)

    def tree(self) -> MemoryTree:
        """The whole tree, read again from the source: only to show a fork with a proof."""
        if self._tree is None:
            assert self.source is not None
            self._tree = MemoryTree(leaf for _, leaf in self.source.entries())
        return self._tree


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
    receipts_verified: int = 0  # signed receipts checked from their bytes
    cosigned_checked: int = 0  # checkpoints a witness cosigned, checked against the log
    evidence: int = 0  # inconsistent checkpoints refused live, as the witnesses hold them
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why
    pending: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # final refusals the origin recorded
    errors: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every compared message, receipt and cosigned checkpoint matched (pending
        deliveries allowed)."""
        return not self.errors and len(self.ledgers) >= 2


class ReconciliationError(AuditError):
    """The ledgers disagree about a message, a receipt or a checkpoint; the message names
    where (both ledgers' indexes, or both checkpoints and the witness holding the evidence)."""


_EVENTS = (Event.SENT, Event.RECEIVED, Event.RECEIPT, Event.REFUSED, Event.WITNESSED)


def _cosigned_sizes(sources: list[LedgerSource]) -> dict[str, set[int]]:
    """origin -> the tree sizes of that log which some source's witness records cosigned."""
    sizes: dict[str, set[int]] = {}
    for source in sources:
        records = source.witness_records()
        for record in records.cosigned if records else ():
            try:
                checkpoint = parse_checkpoint(parse_note(record.note).text)
            except NoteError:
                continue  # named when the record is checked
            sizes.setdefault(checkpoint.origin, set()).add(checkpoint.size)
    return sizes


def _read(source: LedgerSource, wanted: set[int]) -> _Ledger:
    j = jurisdiction_of_origin(source.origin)
    if j is None:
        raise ExportFormatError(f"origin {source.origin!r} is no jurisdiction's ledger")
    ledger = _Ledger(j.value)
    ledger.source = source
    ledger.records = source.witness_records()
    ledger.certificates = source.certificates()
    for note in source.checkpoints():
        try:
            ledger.checkpoints.append(parse_checkpoint(parse_note(note).text))
        except NoteError:
            continue  # audit verify names a bad checkpoint; reconciliation compares the good
    ledger.checkpoints.sort(key=lambda c: c.size)
    frontier = Frontier()
    if 0 in wanted:
        ledger.roots[0] = EMPTY_ROOT
    for index, leaf in source.entries():
        frontier.append(leaf_hash(leaf))
        ledger.count += 1
        if ledger.count in wanted:
            ledger.roots[ledger.count] = frontier.root()
        if leaf[17] not in _EVENTS:
            continue
        e = decode_record(leaf).entry
        if e.event is Event.WITNESSED:
            ledger.witnessed[index] = (e.counterpart, e.message_id, e.digests)
            continue
        if e.event is Event.RECEIPT:
            ledger.receipt_digests[(e.message_id, e.counterpart)] = (index, e.digests)
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


def reconcile_sources(
    sources: Iterable[LedgerSource], bundle: TrustBundle | None = None
) -> ReconciliationResult:
    """Reconcile opened ledger sources; see the module docstring for the rules.

    Signing keys come from the certificates the sources carry: with ``bundle``, only those
    that chain to it with a node identity; without, any that names a node (a note says so).
    """
    opened = list(sources)
    wanted = _cosigned_sizes(opened)
    ledgers = {led.code: led for led in (_read(s, wanted.get(s.origin, set())) for s in opened)}
    result = ReconciliationResult(ledgers=sorted(ledgers))
    keys = _Keys(ledgers.values(), bundle, result)
    _compare_messages(ledgers, result)
    _check_receipts(ledgers, keys, result)
    _check_witnessing(ledgers, keys, result)
    return result


def _compare_messages(ledgers: dict[str, _Ledger], result: ReconciliationResult) -> None:
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


def reconcile(paths: Iterable[Path], bundle: TrustBundle | None = None) -> ReconciliationResult:
    """Reconcile the ledger databases or exports at ``paths`` (one per jurisdiction).

    Raises:
        ExportFormatError: a file is not a ledger, or two are of the same jurisdiction.
    """
    sources = [open_source(p) for p in paths]
    try:
        origins = [s.origin for s in sources]
        if len(set(origins)) != len(origins):
            raise ExportFormatError(f"two ledgers of the same origin among {origins}")
        return reconcile_sources(sources, bundle)
    finally:
        for s in sources:
            s.close()


def check_reconciliation(
    paths: Iterable[Path], bundle: TrustBundle | None = None
) -> ReconciliationResult:
    """Like :func:`reconcile`, but raise on the first error.

    Raises:
        ReconciliationError: naming the message and both ledgers' entry indexes.
        AuditError: fewer than two ledgers to compare.
    """
    result = reconcile(paths, bundle)
    if result.errors:
        raise ReconciliationError(result.errors[0].message)
    if not result.ok:
        raise AuditError(f"reconciliation needs at least two ledgers, got {result.ledgers}")
    return result


# -- signing keys ---------------------------------------------------------------------------


class _Keys:
    """Node signing keys by jurisdiction, from every certificate the sources carry."""

    def __init__(
        self,
        ledgers: Iterable[_Ledger],
        bundle: TrustBundle | None,
        result: ReconciliationResult,
    ) -> None:
        self.by_jurisdiction: dict[Jurisdiction, dict[str, ed25519.Ed25519PublicKey]] = {}
        self._bundle = bundle
        self._result = result
        if bundle is None:
            result.notes.append(
                "no trust bundle given: signatures are checked against the node certificates "
                "the ledgers carry, not chained to the jurisdictions' roots"
            )
        for led in ledgers:
            for der in led.certificates:
                self.add(der)

    def add(self, der: bytes) -> SpiffeId | None:
        """Admit a node signing certificate (DER); return its identity, or None if refused."""
        try:
            cert = x509.load_der_x509_certificate(der)
            if self._bundle is not None:
                identity = verify_leaf(
                    cert, self._bundle, (), at=cert.not_valid_before_utc, usage="signing"
                )
            else:
                identity = identity_of(cert)
        except (ValueError, CertificateCheckError, IdentityError):
            return None
        public = cert.public_key()
        if identity.role is not Role.NODE or not isinstance(public, ed25519.Ed25519PublicKey):
            return None
        self.by_jurisdiction.setdefault(identity.jurisdiction, {})[fingerprint(cert)] = public
        return identity

    def log(self, j: Jurisdiction) -> list[Verifier]:
        """Verifiers of ``j``'s checkpoint signatures."""
        return [log_verifier(j, k) for k in self.by_jurisdiction.get(j, {}).values()]

    def cosigner(self, j: Jurisdiction) -> list[Verifier]:
        """Verifiers of ``j``'s cosignatures."""
        return [cosigner_verifier(j, k) for k in self.by_jurisdiction.get(j, {}).values()]


def _named(c: Checkpoint) -> str:
    return f"(origin {c.origin}, size {c.size}, root {c.root_hash.hex()})"


def _error(result: ReconciliationResult, problem: str, message: str, mid: uuid.UUID) -> None:
    result.errors.append(Mismatch(problem, mid, message))


# -- receipts -------------------------------------------------------------------------------


def _check_receipts(ledgers: dict[str, _Ledger], keys: _Keys, result: ReconciliationResult) -> None:
    """Every receipt entry against the signed receipt its ledger holds (module docstring)."""
    for x in ledgers.values():
        if x.records is None:
            if x.receipt_digests:
                result.notes.append(
                    f"{x.code}: {len(x.receipt_digests)} receipts not checked from their bytes "
                    "(the file carries no signed receipts: an export of version 2 or older)"
                )
            continue
        held = {r.key: r for r in x.records.receipts}
        for (mid, to), (index, digests) in sorted(
            x.receipt_digests.items(), key=lambda kv: kv[1][0]
        ):
            where = f"{x.code} entry {index} (receipt from {to} for {mid})"
            stored = held.pop((mid, to), None)
            if stored is None:
                _error(result, "receipt-missing", f"{where}: the signed receipt is missing", mid)
                continue
            problem = _receipt_problem(stored.receipt, mid, to, digests, keys, ledgers, x.code)
            if problem is not None:
                _error(result, problem[0], f"{where}: {problem[1]}", mid)
            else:
                result.receipts_verified += 1
        for (mid, to), _stored in held.items():
            _error(
                result,
                "receipt-unrecorded",
                f"{x.code} holds a signed receipt from {to} for {mid} but no receipt entry",
                mid,
            )


def _receipt_problem(
    data: bytes,
    mid: uuid.UUID,
    to: str,
    digests: tuple[bytes, ...],
    keys: _Keys,
    ledgers: dict[str, _Ledger],
    sender: str,
) -> tuple[str, str] | None:
    """What is wrong with a signed receipt (docs/envelopes.md), or None."""
    try:
        signed = envelope_pb2.SignedReceipt.FromString(data)
        body = envelope_pb2.ReceiptBody.FromString(signed.body)
    except DecodeError:
        return "receipt-unreadable", "the signed receipt does not parse"
    digest = hashlib.sha256(pae(RECEIPT_CONTEXT, signed.body)).digest()
    if len(digests) < 2 or digests[1] != digest:
        recorded = digests[1].hex() if len(digests) > 1 else "none"
        return (
            "receipt-digest-mismatch",
            f"the entry records receipt digest {recorded}, the signed receipt's is {digest.hex()}",
        )
    identity = keys.add(bytes(signed.signer_certificate))
    if identity is None or identity.jurisdiction.value != to:
        who = identity.uri if identity else "no certified node"
        return "receipt-signature", f"the receipt is signed by {who}, not {to}'s node"
    try:
        cert = x509.load_der_x509_certificate(bytes(signed.signer_certificate))
        if signed.key_id != fingerprint(cert):
            return "receipt-signature", f"key id {signed.key_id[:16]} is not its certificate's"
        public = cert.public_key()
        assert isinstance(public, ed25519.Ed25519PublicKey)  # keys.add admitted only Ed25519
        public.verify(signed.signature, pae(RECEIPT_CONTEXT, signed.body))
    except InvalidSignature:
        return "receipt-signature", f"the signature by {identity.uri} does not verify"
    recipient = jurisdiction_of(body.recipient)
    if (
        body.message_id != str(mid)
        or body.message_digest != digests[0]
        or recipient is None
        or recipient.value != to
        or body.recipient_node != identity.uri
    ):
        return (
            "receipt-body-mismatch",
            f"the signed receipt is for message {body.message_id} digest "
            f"{body.message_digest.hex()} to {body.recipient_node}, not this entry's",
        )
    y = ledgers.get(to)
    if y is not None:
        got = y.received.get((mid, sender))
        if got is not None and got[1].index != body.ledger_index:
            return (
                "receipt-body-mismatch",
                f"the receipt names {to} entry {body.ledger_index}, but {to} received it at "
                f"entry {got[1].index}",
            )
    return None


# -- witnessing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    witness: str
    index: int  # the witness's witnessed entry
    checkpoint: Checkpoint
    message_id: uuid.UUID


def _check_witnessing(
    ledgers: dict[str, _Ledger], keys: _Keys, result: ReconciliationResult
) -> None:
    """Rollbacks, forks and split views from what the witnesses cosigned (module docstring)."""
    views: dict[str, list[_View]] = {}
    for w in ledgers.values():
        if w.records is None:
            if w.witnessed:
                result.notes.append(
                    f"{w.code}: {len(w.witnessed)} witnessed entries not checked (the file "
                    "carries no cosigned checkpoints: an export of version 2 or older)"
                )
            continue
        for view in _witness_records(w, keys, result):
            views.setdefault(view.checkpoint.origin, []).append(view)
        _check_evidence(w, keys, result)
    for origin, seen in sorted(views.items()):
        j = jurisdiction_of_origin(origin)
        log_ledger = ledgers.get(j.value) if j is not None else None
        if log_ledger is None:
            _split_views(origin, seen, result)
            continue
        for view in seen:
            result.cosigned_checked += 1
            _against_log(log_ledger, view, result)


def _witness_records(w: _Ledger, keys: _Keys, result: ReconciliationResult) -> list[_View]:
    """Check each of W's witnessed entries against its record; return the checkpoints."""
    assert w.records is not None
    records = {r.index: r for r in w.records.cosigned}
    previous: dict[str, Checkpoint] = {}
    views = []
    for index, (peer, mid, digests) in sorted(w.witnessed.items()):
        where = f"{w.code} entry {index} (witnessed {peer})"
        record = records.pop(index, None)
        if record is None:
            _error(result, "witness-record-missing", f"{where}: its cosigned note is missing", mid)
            continue
        note_digest = hashlib.sha256(record.note).digest()
        line_digest = hashlib.sha256(record.cosignature.encode()).digest()
        if len(digests) != 2 or digests != (note_digest, line_digest):
            _error(
                result,
                "witness-record-mismatch",
                f"{where}: the entry's digests are not those of the note ({note_digest.hex()}) "
                f"and cosignature ({line_digest.hex()}) the file carries",
                mid,
            )
            continue
        j = Jurisdiction(peer) if peer in Jurisdiction.__members__ else None
        try:
            note = parse_note(record.note)
            checkpoint = parse_checkpoint(note.text)
        except NoteError as exc:
            _error(result, "witness-record-mismatch", f"{where}: the note: {exc}", mid)
            continue
        if j is None or checkpoint.origin != ledger_origin(j):
            _error(
                result,
                "witness-record-mismatch",
                f"{where}: the note is of origin {checkpoint.origin!r}",
                mid,
            )
            continue
        if not _signed_by(note, keys.log(j)):
            _error(
                result,
                "bad-note-signature",
                f"{where}: the cosigned note {_named(checkpoint)} is not signed by a "
                f"certified key of {peer}'s node",
                mid,
            )
            continue
        cosigners = keys.cosigner(Jurisdiction(w.code))
        if not cosigners:
            _error(
                result,
                "bad-cosignature",
                f"{where}: no certified signing certificate of {w.code}'s node is carried to "
                f"check its cosignature of {_named(checkpoint)}",
                mid,
            )
        elif not any(_cosigned(checkpoint, record.cosignature, v) for v in cosigners):
            _error(
                result,
                "bad-cosignature",
                f"{where}: the cosignature line is not {w.code}'s over {_named(checkpoint)}",
                mid,
            )
        before = previous.get(peer)
        if before is not None:  # (cosignings before this release were not recorded)
            problem = _chain_problem(before, record.old_size, record.proof, checkpoint)
            if problem is not None:
                _error(result, "witness-chain", f"{where}: {problem}", mid)
        previous[peer] = checkpoint
        views.append(_View(w.code, index, checkpoint, mid))
    for index in sorted(records):
        _error(
            result,
            "witness-record-unrecorded",
            f"{w.code} carries a cosigned note for entry {index}, which is no witnessed entry",
            _NO_MESSAGE,
        )
    return views


def _signed_by(note: Note, verifiers: list[Verifier]) -> bool:
    """Whether one of ``verifiers`` signed ``note`` (an unsigned note is no error here)."""
    if not verifiers:
        return False
    try:
        return bool(verify_note(note, verifiers))
    except NoteError:
        return False


def _cosigned(checkpoint: Checkpoint, line: str, verifier: Verifier) -> bool:
    try:
        verify_cosignature(checkpoint.body(), line, verifier)
    except NoteError:
        return False
    return True


def _chain_problem(
    before: Checkpoint | None, old_size: int, proof: tuple[bytes, ...], now: Checkpoint
) -> str | None:
    """Whether the witness checked ``now`` against what it cosigned before, as it says."""
    if before is None:
        return None
    if old_size != before.size:
        return f"checked from size {old_size}, but last cosigned size {before.size}"
    try:
        verify_consistency(before.size, now.size, before.root_hash, now.root_hash, list(proof))
    except ConsistencyProofError as exc:
        return f"the proof it kept from {_named(before)} to {_named(now)} fails: {exc}"
    return None


def _against_log(log: _Ledger, view: _View, result: ReconciliationResult) -> None:
    """A checkpoint a witness cosigned, against the log's own entries and checkpoints."""
    cosigned = view.checkpoint
    held = f"{view.witness} entry {view.index}"
    latest = log.checkpoints[-1] if log.checkpoints else None
    if cosigned.size > log.count:
        own = f"; its latest checkpoint is {_named(latest)}" if latest else ""
        _error(
            result,
            "rolled-back",
            f"{log.code}'s ledger was rolled back: it holds {log.count} entries{own}, but "
            f"{view.witness} cosigned {_named(cosigned)} (evidence: {held})",
            view.message_id,
        )
        return
    root = log.roots[cosigned.size]
    if root == cosigned.root_hash:
        return
    tree = log.tree()
    # Two views: the proof from the cosigned size to the log's own next checkpoint, computed
    # from the log's entries, does not lead from the root the witness cosigned.
    other = next((c for c in log.checkpoints if c.size >= cosigned.size), None)
    if other is None:
        other = Checkpoint(cosigned.origin, log.count, tree.root())
        label = f"the tree of its {log.count} entries {_named(other)} (unsigned)"
    else:
        label = _named(other)
    proof = consistency_proof(cosigned.size, other.size, tree) if cosigned.size else []
    try:
        verify_consistency(cosigned.size, other.size, cosigned.root_hash, other.root_hash, proof)
        detail = f"its entries give root {root.hex()} at size {cosigned.size}"
    except ConsistencyProofError as exc:
        detail = f"the consistency proof from its entries does not lead there ({exc})"
    _error(
        result,
        "forked",
        f"{log.code}'s log forked: {view.witness} cosigned {_named(cosigned)} (evidence: "
        f"{held}), but {log.code}'s ledger has {label}: {detail}",
        view.message_id,
    )


def _split_views(origin: str, seen: list[_View], result: ReconciliationResult) -> None:
    """Without the log's own ledger: two witnesses that cosigned two roots for one size."""
    by_size: dict[int, _View] = {}
    for view in seen:
        first = by_size.setdefault(view.checkpoint.size, view)
        if first.checkpoint.root_hash != view.checkpoint.root_hash:
            _error(
                result,
                "split-view",
                f"{origin} showed its witnesses two views: {first.witness} cosigned "
                f"{_named(first.checkpoint)} ({first.witness} entry {first.index}), "
                f"{view.witness} cosigned {_named(view.checkpoint)} "
                f"({view.witness} entry {view.index})",
                view.message_id,
            )


def _check_evidence(w: _Ledger, keys: _Keys, result: ReconciliationResult) -> None:
    """Each inconsistent checkpoint W refused live: both notes, signed by the log."""
    assert w.records is not None
    for ev in w.records.evidence:
        result.evidence += 1
        j = Jurisdiction(ev.origin) if ev.origin in Jurisdiction.__members__ else None
        named = []
        for data in (ev.cosigned_note, ev.presented_note):
            try:
                note = parse_note(data)
                checkpoint = parse_checkpoint(note.text)
            except NoteError:
                break
            if j is None or not _signed_by(note, keys.log(j)):
                break
            named.append(checkpoint)
        if len(named) != 2:
            _error(
                result,
                "bad-evidence",
                f"{w.code} holds evidence of a {ev.problem} of {ev.origin} whose notes are not "
                f"both signed by {ev.origin}'s node",
                _NO_MESSAGE,
            )
            continue
        cosigned, presented = named
        _error(
            result,
            "forked" if ev.problem == "fork" else "rolled-back",
            f"{ev.origin} presented {w.code} a checkpoint {_named(presented)} inconsistent with "
            f"{_named(cosigned)} that {w.code} had cosigned ({ev.problem}, refused live; "
            f"evidence: {w.code}'s witness evidence, both notes signed by {ev.origin})",
            _NO_MESSAGE,
        )
