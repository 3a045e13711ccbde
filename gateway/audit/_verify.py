"""The offline verifier: recompute the tree from every entry, check every checkpoint.

Steps, each with its own failure:

1. Every checkpoint note carries a valid signature by the log's key (C2SP signed-note), has the
   ledger's origin, and no two checkpoints of one size disagree. Cosignatures by the given
   witness keys are verified (tlog-cosignature/v1); other signatures are ignored.
2. Entries are read in order: entry ``i`` exists, decodes in the canonical format, encodes index
   ``i``, and its time does not go backwards.
3. The tree is recomputed leaf by leaf (memory O(log n)); at each checkpoint size the recomputed
   root must equal the signed one.
4. No checkpoint is beyond the last entry (truncation).
5. Successive checkpoints are consistent: an RFC 9162 consistency proof is built from the
   recomputed subtrees and verified against the two signed roots.

With a trust bundle (``bundle=``), the keys come from the signing certificates the source
carries instead of hand-given vkeys (``_trust.certified_keys``), every signature line of every
checkpoint must be by a certified key, each cosignature's time must lie within its
certificate's validity, and:

6. Every ``sent`` and ``received`` entry has its message's envelope in the source, or the
   envelope was erased and an ``erased`` entry for that message id exists; the envelope's
   digest (SHA-256 of its PAE, docs/envelopes.md) equals the entry's digest, and the envelope
   opens (``gateway.envelope.open_envelope``: signer certificate chained to the bundle root of
   its jurisdiction at the message's time, Ed25519 signature over the PAE, origin = signer).
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

from google.protobuf.message import DecodeError

from customs.gateway.v1 import envelope_pb2
from gateway.audit._source import LedgerSource, StoredEnvelope, open_source
from gateway.audit._trust import CertifiedKeys, certified_keys
from gateway.audit.errors import AuditError, BadCheckpointError, BadEntryError
from gateway.envelope import envelope_digest, open_envelope
from gateway.errors import GatewayError
from gateway.entries import EntryFormatError, Event, decode_record, grammar_problem
from gateway.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleError,
    Node,
    TreeRangeError,
    consistency_ranges,
    hash_ranges,
    leaf_hash,
    node_id,
    perfect_nodes,
    verify_consistency,
)
from gateway.notes import (
    Note,
    NoteError,
    VerifiedSignature,
    Verifier,
    open_note,
    parse_checkpoint,
)
from gateway.pki.bundle import TrustBundle
from gateway.pki.note_keys import jurisdiction_of_origin

Progress = Callable[[int, int], None]
_HEAD = struct.Struct(">BQQB16sB")
_KIND = re.compile(rb"[A-Z][A-Z0-9_]{0,63}")
_COUNTERPART = re.compile(rb"[A-Z]{2}|spiffe://[a-z0-9.\-]+(/[A-Za-z0-9._\-]+)+")
PROGRESS_EVERY = 1 << 16
_MESSAGE_EVENTS = (Event.SENT, Event.RECEIVED, Event.ERASED)


@dataclass(frozen=True)
class Failure:
    """One thing that did not verify: the entry index or checkpoint size, and why."""

    message: str
    index: int | None = None
    checkpoint_size: int | None = None
    category: str = ""  # "entries", "checkpoints", "certificates", "envelopes"

    def __str__(self) -> str:
        return self.message


@dataclass
class VerificationResult:
    """What was checked and what failed. ``ok`` only if something was checked and none failed."""

    origin: str = ""
    entries: int = 0
    checkpoints: int = 0
    cosignatures: int = 0
    consistency_proofs: int = 0
    certificates: int = 0  # signing certificates chained to the bundle
    envelopes: int = 0  # sent/received entries whose envelope verified
    erased: int = 0  # sent/received entries whose envelope was erased (with an erased entry)
    withheld: int = 0  # sent/received entries whose envelope the node withheld from the fetcher
    root: bytes = EMPTY_ROOT
    verified: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed and at least one signed checkpoint was verified."""
        return not self.failures and self.checkpoints > 0

    @property
    def first_failure(self) -> Failure | None:
        """The first failure, if any."""
        return self.failures[0] if self.failures else None

    def first_bad_index(self, category: str | None = None) -> int | None:
        """The lowest entry index named by a failure (of ``category``, if given)."""
        found = [
            f.index
            for f in self.failures
            if f.index is not None and (category is None or f.category == category)
        ]
        return min(found) if found else None

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per category: (items verified, failures)."""
        failed = dict.fromkeys(("entries", "checkpoints", "certificates", "envelopes"), 0)
        for f in self.failures:
            implied = "checkpoints" if f.index is None else "entries"
            failed[f.category or implied] += 1
        return {
            "entries": (self.entries, failed["entries"]),
            "checkpoints": (self.checkpoints + self.cosignatures, failed["checkpoints"]),
            "certificates": (self.certificates, failed["certificates"]),
            "envelopes": (self.envelopes + self.erased + self.withheld, failed["envelopes"]),
        }


@dataclass
class _Signed:
    size: int
    root: bytes
    note: str


def _fast_entry_problem(leaf: bytes, index: int, last_time: int) -> tuple[str | None, int]:
    """Check one entry's structure quickly; the full decoder words the message on failure."""
    if len(leaf) >= _HEAD.size:
        version, encoded, time_ms, event, _, kind_len = _HEAD.unpack_from(leaf)
        at = _HEAD.size + kind_len
        if (
            version == 1
            and 1 <= event <= 7
            and at < len(leaf)
            and _KIND.fullmatch(leaf, _HEAD.size, at)
        ):
            cp_len = leaf[at]
            end_cp = at + 1 + cp_len
            if (
                end_cp < len(leaf)
                and _COUNTERPART.fullmatch(leaf, at + 1, end_cp)
                and leaf[end_cp] <= 8
                and len(leaf) == end_cp + 1 + 32 * leaf[end_cp]
            ):
                if encoded != index:
                    return f"entry {index}: its bytes encode index {encoded}", time_ms
                if time_ms < last_time:
                    return f"entry {index}: time {time_ms} is before the previous {last_time}", 0
                return None, time_ms
    try:
        decode_record(leaf)
    except EntryFormatError as e:
        return f"entry {index}: {e}", 0
    return f"entry {index}: malformed", 0  # pragma: no cover - the decoder is stricter


def _check_checkpoints(
    notes: Iterable[str],
    origin: str,
    log_keys: list[Verifier],
    witnesses: list[Verifier],
    result: VerificationResult,
    certified: CertifiedKeys | None = None,
) -> list[_Signed]:
    """Step 1 (and, with certified keys, every signature line must be by one of them)."""
    by_size: dict[int, _Signed] = {}
    for position, note in enumerate(notes):
        try:
            parsed, verified = open_note(note, [*log_keys, *witnesses])
            cp = parse_checkpoint(parsed.text)
        except NoteError as e:
            size = _size_of(note)
            label = f"checkpoint of size {size}" if size is not None else f"checkpoint {position}"
            result.failures.append(Failure(f"{label}: {e}", checkpoint_size=size))
            continue
        if not any(v.verifier in log_keys for v in verified):
            names = ", ".join(sorted({k.name for k in log_keys})) or "(none certified)"
            result.failures.append(
                Failure(
                    f"checkpoint of size {cp.size}: not signed by the log key {names}",
                    checkpoint_size=cp.size,
                )
            )
            continue
        if certified is not None and _uncertified(cp.size, parsed, verified, certified, result):
            continue
        if cp.origin != origin:
            result.failures.append(
                Failure(
                    f"checkpoint of size {cp.size}: origin {cp.origin!r} is not {origin!r}",
                    checkpoint_size=cp.size,
                )
            )
            continue
        result.cosignatures += sum(1 for v in verified if v.timestamp is not None)
        seen = by_size.get(cp.size)
        if seen is not None and seen.root != cp.root_hash:
            result.failures.append(
                Failure(
                    f"two checkpoints of size {cp.size} disagree: root {seen.root.hex()} "
                    f"!= {cp.root_hash.hex()} (the log forked)",
                    checkpoint_size=cp.size,
                )
            )
            continue
        by_size[cp.size] = _Signed(cp.size, cp.root_hash, note)
    return sorted(by_size.values(), key=lambda s: s.size)


class _Captured:
    """The perfect nodes kept during the stream: the source of the consistency proofs."""

    def __init__(self, nodes: dict[Node, bytes]) -> None:
        self._nodes = nodes

    def subtree_hashes(self, nodes: Sequence[Node]) -> list[bytes]:
        try:
            return [self._nodes[n] for n in nodes]
        except KeyError as e:  # pragma: no cover - every wanted node is captured
            raise TreeRangeError(f"node {e.args[0]} was not captured") from e


def _uncertified(
    size: int,
    parsed: Note,
    verified: list[VerifiedSignature],
    certified: CertifiedKeys,
    result: VerificationResult,
) -> bool:
    """Bundle mode: record every signature line no certificate vouches for; True if any."""
    good = {v.signature.line for v in verified}
    bad = False
    for sig in parsed.signatures:
        if sig.line not in good:
            result.failures.append(
                Failure(
                    f"checkpoint of size {size}: signature by {sig.name} (key id "
                    f"{sig.key_id.hex()}) is by no certificate chained to the trust bundle",
                    checkpoint_size=size,
                    category="checkpoints",
                )
            )
            bad = True
    for v in verified:
        key = certified.find(v.verifier)
        if v.timestamp is None or key is None:
            continue
        at = dt.datetime.fromtimestamp(v.timestamp, dt.UTC)
        if not key.not_before <= at <= key.not_after:
            result.failures.append(
                Failure(
                    f"checkpoint of size {size}: cosignature by {v.verifier.name} at "
                    f"{at.isoformat()} is outside its certificate {key.fingerprint[:16]}'s "
                    f"validity {key.not_before.isoformat()}..{key.not_after.isoformat()}",
                    checkpoint_size=size,
                    category="checkpoints",
                )
            )
            bad = True
    return bad


def _size_of(note: str) -> int | None:
    lines = note.split("\n")
    return int(lines[1]) if len(lines) > 2 and lines[1].isdigit() else None


def _locate(source: LedgerSource, start: int, end: int) -> int | None:
    """The first entry in ``[start, end)`` whose bytes no longer hash to what was stored."""
    for index, leaf in source.entries():
        if index < start:
            continue
        if index >= end:
            break
        stored = source.stored_leaf_hash(index)
        if stored is not None and stored != leaf_hash(leaf):
            return index
    return None


def _keys_from_bundle(
    source: LedgerSource, bundle: TrustBundle, result: VerificationResult
) -> CertifiedKeys | None:
    origin = jurisdiction_of_origin(source.origin)
    if origin is None:
        result.failures.append(
            Failure(
                f"origin {source.origin!r} is no jurisdiction's ledger", category="certificates"
            )
        )
        return None
    keys = certified_keys(source.certificates(), bundle, origin)
    result.certificates = len(keys.log) + len(keys.witnesses)
    for problem in keys.problems:
        result.failures.append(Failure(problem, category="certificates"))
    if not keys.log:
        result.failures.append(
            Failure(
                f"no signing certificate of {origin} chained to the trust bundle is in the "
                f"source: nothing can vouch for {source.origin}'s checkpoints",
                category="certificates",
            )
        )
    return keys


@dataclass
class _Message:
    index: int
    event: Event
    message_id: uuid.UUID
    origin: str  # jurisdiction code: ids are unique per origin
    digest: bytes | None


def _check_envelopes(
    messages: list[_Message],
    erased: set[tuple[str, uuid.UUID]],
    stored: dict[tuple[str, uuid.UUID], StoredEnvelope] | None,
    bundle: TrustBundle,
    result: VerificationResult,
) -> None:
    """Step 6."""
    if stored is None:
        if messages:
            result.failures.append(
                Failure(
                    f"entry {messages[0].index}: the source carries no envelopes (an export of "
                    "version 1?), so no sent or received entry can be checked",
                    index=messages[0].index,
                    category="envelopes",
                )
            )
        return
    opened: dict[tuple[str, uuid.UUID], bytes | str] = {}  # digest, or why it does not open
    for m in messages:
        what = f"entry {m.index} ({m.event.name.lower()} {m.message_id})"
        envelope = stored.get((m.origin, m.message_id))
        if envelope is not None and envelope.withheld:
            result.withheld += 1  # not releasable to this auditor: the entry's digest stands
            continue
        if envelope is None or envelope.envelope is None:
            if (m.origin, m.message_id) in erased:
                result.erased += 1
                continue
            why = "no envelope" if envelope is None else "its envelope was erased"
            result.failures.append(
                Failure(
                    f"{what}: {why} and no erased entry for that message",
                    index=m.index,
                    category="envelopes",
                )
            )
            continue
        if envelope.key not in opened:
            opened[envelope.key] = _open(envelope, bundle)
        outcome = opened[envelope.key]
        if isinstance(outcome, str):
            result.failures.append(
                Failure(f"{what}: {outcome}", index=m.index, category="envelopes")
            )
        elif outcome != m.digest:
            digest = m.digest.hex() if m.digest else "(none)"
            result.failures.append(
                Failure(
                    f"{what}: envelope digest {outcome.hex()} != entry digest {digest}",
                    index=m.index,
                    category="envelopes",
                )
            )
        else:
            result.envelopes += 1


def _open(stored: StoredEnvelope, bundle: TrustBundle) -> bytes | str:
    """The digest of a verified envelope, or why it does not verify."""
    assert stored.envelope is not None
    try:
        envelope = envelope_pb2.Envelope.FromString(stored.envelope)
    except DecodeError:
        return "the stored envelope is not a valid Envelope"
    at = dt.datetime.fromtimestamp(stored.created_ms / 1000, dt.UTC)
    try:
        open_envelope(envelope, bundle, now=at)
    except GatewayError as exc:
        return f"envelope does not verify: {exc}"
    return envelope_digest(envelope)


def verify_source(
    source: LedgerSource,
    log_key: Verifier | None = None,
    witnesses: Iterable[Verifier] = (),
    progress: Progress | None = None,
    *,
    bundle: TrustBundle | None = None,
) -> VerificationResult:
    """Verify an opened ledger source; see the module docstring for the steps.

    Give ``log_key`` (and optionally witness keys), or ``bundle`` to take every key from the
    signing certificates in the source and to check envelopes (step 6), or both.
    """
    result = VerificationResult(origin=source.origin)
    witness_keys = list(witnesses)
    log_keys = [log_key] if log_key is not None else []
    certified = None
    if bundle is not None:
        certified = _keys_from_bundle(source, bundle, result)
        if certified is not None:
            log_keys += [k.verifier for k in certified.log]
            witness_keys += [k.verifier for k in certified.witnesses]
    elif log_key is None:
        raise AuditError("give the log's verifier key or a trust bundle")
    messages: list[_Message] = []
    erased: set[tuple[str, uuid.UUID]] = set()
    own = jurisdiction_of_origin(source.origin)
    own_code = own.value if own is not None else ""
    # (1) checkpoint signatures, origin, equivocation.
    signed = _check_checkpoints(
        source.checkpoints(), source.origin, log_keys, witness_keys, result, certified
    )
    # Perfect nodes needed for the consistency proofs between successive checkpoints.
    pairs = [(a, b) for a, b in itertools.pairwise(signed) if 0 < a.size < b.size]
    plans = {(a.size, b.size): consistency_ranges(a.size, b.size) for a, b in pairs}
    # Named by node_id while streaming (no tuple per completed node): about a tenth faster.
    wanted: dict[int, Node] = {
        node_id(*node): node
        for ranges in plans.values()
        for r in ranges
        for node in perfect_nodes(*r)
    }
    captured_nodes: dict[Node, bytes] = {}
    # (2, 3) stream the entries, recompute the tree, compare at each checkpoint.
    frontier = Frontier()
    pending = [s for s in signed if s.size > 0]
    next_cp = 0
    last_time = 0
    total = source.count
    broken = False
    good_size = 0
    for position, (stored_index, leaf) in enumerate(source.entries()):
        if stored_index != position:
            result.failures.append(
                Failure(
                    f"entry {position} is missing (the next stored entry is {stored_index})",
                    index=position,
                )
            )
            broken = True
            break
        problem, last_time = _fast_entry_problem(leaf, position, last_time)
        if problem is not None:
            result.failures.append(Failure(problem, index=position))
            broken = True
            break
        if bundle is not None and leaf[17] in _MESSAGE_EVENTS:
            record = decode_record(leaf)
            e = record.entry
            if e.event is Event.ERASED:  # counterpart: the message's origin
                erased.add((e.counterpart, e.message_id))
            else:
                digest = e.digests[0] if e.digests else None
                origin = own_code if e.event is Event.SENT else e.counterpart
                messages.append(_Message(position, e.event, e.message_id, origin, digest))
        completed = frontier.append_keyed(sha256(b"\x00" + leaf).digest())  # RFC 9162 leaf
        if wanted:
            for key, h in completed:
                if key in wanted:
                    captured_nodes[wanted[key]] = h
        size = position + 1
        while next_cp < len(pending) and pending[next_cp].size == size:
            cp = pending[next_cp]
            root = frontier.root()
            if root != cp.root:
                where = _locate(source, good_size, size)
                named = f"entry {where} was altered; " if where is not None else ""
                result.failures.append(
                    Failure(
                        f"checkpoint of size {size}: {named}signed root {cp.root.hex()} "
                        f"!= recomputed {root.hex()} (entries {good_size}..{size - 1})",
                        index=where,
                        checkpoint_size=size,
                    )
                )
                broken = True
                break
            result.checkpoints += 1
            good_size = size
            next_cp += 1
        if broken:
            break
        if progress is not None and size % PROGRESS_EVERY == 0:
            progress(size, total)
    result.entries = frontier.size
    result.root = frontier.root()
    if progress is not None:
        progress(frontier.size, total)
    if signed and signed[0].size == 0:
        if signed[0].root == EMPTY_ROOT:
            result.checkpoints += 1
        else:
            result.failures.append(
                Failure("checkpoint of size 0: root is not the empty tree hash", checkpoint_size=0)
            )
    if broken:
        return result
    # (6) envelopes of sent and received entries
    if bundle is not None:
        _check_envelopes(messages, erased, source.envelopes(), bundle, result)
    # (4) truncation: checkpoints beyond the last entry.
    for cp in pending[next_cp:]:
        result.failures.append(
            Failure(
                f"checkpoint of size {cp.size}: the ledger has only {frontier.size} entries "
                f"(entries {frontier.size}..{cp.size - 1} are missing: truncated)",
                index=frontier.size,
                checkpoint_size=cp.size,
            )
        )
    if result.failures:
        return result
    # (5) consistency between successive checkpoints.
    captured = _Captured(captured_nodes)
    for a, b in pairs:
        try:
            proof = hash_ranges(plans[(a.size, b.size)], captured)
            verify_consistency(a.size, b.size, a.root, b.root, proof)
        except MerkleError as e:
            result.failures.append(Failure(str(e), checkpoint_size=b.size))
            return result
        result.consistency_proofs += 1
    if result.failures:
        return result
    names = ", ".join(sorted({k.name for k in log_keys}))
    result.verified.extend(
        [
            f"{result.entries} entries decoded in order, tree recomputed",
            f"{result.checkpoints} checkpoints signed by {names} with matching roots",
            f"{result.consistency_proofs} consistency proofs between successive checkpoints",
            f"{result.cosignatures} witness cosignatures",
        ]
    )
    if bundle is not None:
        result.verified += [
            f"{result.certificates} signing certificates chained to the trust bundle",
            f"{result.envelopes} envelopes of sent/received entries verified, "
            f"{result.erased} erased with an erased entry, {result.withheld} withheld "
            "(not releasable to the auditor who fetched them)",
        ]
    return result


def verify_ledger(
    path: Path,
    log_key: Verifier | None = None,
    witnesses: Iterable[Verifier] = (),
    progress: Progress | None = None,
    *,
    bundle: TrustBundle | None = None,
) -> VerificationResult:
    """Verify a ledger database or export file at ``path`` (see :func:`verify_source`).

    Returns:
        The result; ``result.ok`` is False with ``failures`` naming the first bad entry index
        or checkpoint size.

    Raises:
        ExportFormatError: the file is neither a ledger database nor an export.
    """
    source = open_source(path)
    try:
        return verify_source(source, log_key, witnesses, progress, bundle=bundle)
    finally:
        source.close()


def check_ledger(
    path: Path,
    log_key: Verifier | None = None,
    witnesses: Iterable[Verifier] = (),
    progress: Progress | None = None,
    *,
    bundle: TrustBundle | None = None,
) -> VerificationResult:
    """Like :func:`verify_ledger`, but raise on the first failure.

    Raises:
        BadEntryError: naming the entry index.
        BadCheckpointError: naming the checkpoint size.
        AuditError: a certificate does not chain, or nothing to verify (no signed checkpoint).
    """
    result = verify_ledger(path, log_key, witnesses, progress, bundle=bundle)
    failure = result.first_failure
    if failure is not None:
        if failure.category == "certificates":
            raise AuditError(failure.message)
        if failure.index is not None and failure.checkpoint_size is None:
            raise BadEntryError(failure.message, failure.index)
        raise BadCheckpointError(failure.message, failure.checkpoint_size)
    if not result.ok:
        raise AuditError(f"ledger of {result.entries} entries has no signed checkpoint to verify")
    return result
