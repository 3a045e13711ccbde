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
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit._source import LedgerSource, open_source
from gateway.audit.errors import AuditError, BadCheckpointError, BadEntryError
from gateway.ledger import EntryFormatError, decode_record
from gateway.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleError,
    Node,
    TreeRangeError,
    consistency_ranges,
    hash_ranges,
    leaf_hash,
    perfect_nodes,
    verify_consistency,
)
from gateway.notes import NoteError, Verifier, open_note, parse_checkpoint

Progress = Callable[[int, int], None]
_HEAD = struct.Struct(">BQQB16sB")
_KIND = re.compile(rb"[A-Z][A-Z0-9_]{0,63}")
_COUNTERPART = re.compile(rb"[A-Z]{2}|spiffe://[a-z0-9.\-]+(/[A-Za-z0-9._\-]+)+")
PROGRESS_EVERY = 1 << 16


@dataclass(frozen=True)
class Failure:
    """One thing that did not verify: the entry index or checkpoint size, and why."""

    message: str
    index: int | None = None
    checkpoint_size: int | None = None

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
    log_key: Verifier,
    witnesses: list[Verifier],
    result: VerificationResult,
) -> list[_Signed]:
    """Step 1."""
    by_size: dict[int, _Signed] = {}
    for position, note in enumerate(notes):
        try:
            parsed, verified = open_note(note, [log_key, *witnesses])
            cp = parse_checkpoint(parsed.text)
        except NoteError as e:
            size = _size_of(note)
            label = f"checkpoint of size {size}" if size is not None else f"checkpoint {position}"
            result.failures.append(Failure(f"{label}: {e}", checkpoint_size=size))
            continue
        if not any(v.verifier == log_key for v in verified):
            result.failures.append(
                Failure(
                    f"checkpoint of size {cp.size}: not signed by the log key {log_key.name}",
                    checkpoint_size=cp.size,
                )
            )
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


def verify_source(
    source: LedgerSource,
    log_key: Verifier,
    witnesses: Iterable[Verifier] = (),
    progress: Progress | None = None,
) -> VerificationResult:
    """Verify an opened ledger source; see the module docstring for the steps."""
    result = VerificationResult(origin=source.origin)
    witness_keys = list(witnesses)
    # (1) checkpoint signatures, origin, equivocation.
    signed = _check_checkpoints(source.checkpoints(), source.origin, log_key, witness_keys, result)
    # Perfect nodes needed for the consistency proofs between successive checkpoints.
    pairs = [(a, b) for a, b in itertools.pairwise(signed) if 0 < a.size < b.size]
    plans = {(a.size, b.size): consistency_ranges(a.size, b.size) for a, b in pairs}
    wanted: set[Node] = {
        node for ranges in plans.values() for r in ranges for node in perfect_nodes(*r)
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
        completed = frontier.append(leaf_hash(leaf))
        if wanted:
            for node, h in completed:
                if node in wanted:
                    captured_nodes[node] = h
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
    result.verified.extend(
        [
            f"{result.entries} entries decoded in order, tree recomputed",
            f"{result.checkpoints} checkpoints signed by {log_key.name} with matching roots",
            f"{result.consistency_proofs} consistency proofs between successive checkpoints",
            f"{result.cosignatures} witness cosignatures",
        ]
    )
    return result


def verify_ledger(
    path: Path,
    log_key: Verifier,
    witnesses: Iterable[Verifier] = (),
    progress: Progress | None = None,
) -> VerificationResult:
    """Verify a ledger database or export file at ``path`` against the log's verifier key.

    Returns:
        The result; ``result.ok`` is False with ``failures`` naming the first bad entry index
        or checkpoint size.

    Raises:
        ExportFormatError: the file is neither a ledger database nor an export.
    """
    source = open_source(path)
    try:
        return verify_source(source, log_key, witnesses, progress)
    finally:
        source.close()


def check_ledger(
    path: Path,
    log_key: Verifier,
    witnesses: Iterable[Verifier] = (),
    progress: Progress | None = None,
) -> VerificationResult:
    """Like :func:`verify_ledger`, but raise on the first failure.

    Raises:
        BadEntryError: naming the entry index.
        BadCheckpointError: naming the checkpoint size.
        AuditError: nothing to verify (no signed checkpoint).
    """
    result = verify_ledger(path, log_key, witnesses, progress)
    failure = result.first_failure
    if failure is not None:
        if failure.index is not None and failure.checkpoint_size is None:
            raise BadEntryError(failure.message, failure.index)
        raise BadCheckpointError(failure.message, failure.checkpoint_size)
    if not result.ok:
        raise AuditError(f"ledger of {result.entries} entries has no signed checkpoint to verify")
    return result
