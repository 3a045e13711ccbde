"""The offline verifier: the numbered steps of docs/audit.md, one function each, in order.

1. :func:`_step1_keys`: the log key and witness keys, from signing certificates chained to the
   trust bundle (or hand-given vkeys).
2. :func:`_step2_checkpoints`: every checkpoint is a C2SP tlog-checkpoint of this origin signed
   by a log key; every other signature line is a tlog-cosignature/v1 that verifies, by a known
   witness, inside its certificate's validity; two checkpoints of one size agree.
3. :func:`_step3_witness_policy`: the latest checkpoint carries the cosignatures the policy
   requires (each witness counted once).
4. :func:`_step4_entries`: entries are read in order and decoded (canonical bytes, own index,
   time never backwards, the event's grammar); the RFC 9162 tree is recomputed leaf by leaf and
   its root compared with each signed root; a database's stored subtree hashes are compared
   with the recomputed ones.
5. :func:`_step5_altered`: where a signed root does not match, the altered entries are named
   from the entries and the signed roots (a stored hash is only a candidate, believed once the
   signed root confirms it), and the tree is carried on with the confirmed hashes; if none is
   confirmed, a later matching root makes the unmatched checkpoint a fork, no later match
   leaves the range between the two checkpoints altered.
6. :func:`_step6_truncation`: no checkpoint is beyond the last entry.
7. :func:`_step7_consistency`: successive checkpoints are consistent (RFC 9162 2.1.4).
8. :func:`_step8_stored_hashes`: every stored subtree hash the entries disprove is reported as a
   bad stored hash (never as a fork or an altered entry).
9. :func:`_step9_envelopes`: every ``sent`` and ``received`` entry has its message's envelope,
   which opens and has the entry's digest (or was erased, with an ``erased`` entry).

Every failure is recorded with its category (:data:`CATEGORIES`); verification goes on after a
failure wherever the later checks do not depend on it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

from google.protobuf.message import DecodeError

from customs.gateway.v1 import envelope_pb2
from gateway.audit._policy import WitnessPolicy, witness_id
from gateway.audit._source import LedgerSource, StoredEnvelope, open_source
from gateway.audit._trust import CertifiedKeys, certified_keys
from gateway.audit.errors import AuditError, BadCheckpointError, BadEntryError
from gateway.entries import (
    EVENT_RULES,
    EntryFormatError,
    Event,
    decode_record,
    grammar_problem,
)
from gateway.envelope import envelope_digest, open_envelope
from gateway.errors import GatewayError
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
from gateway.notes import NoteError, Verifier, parse_checkpoint, parse_note
from gateway.pki.bundle import TrustBundle
from gateway.pki.note_keys import jurisdiction_of_origin

Progress = Callable[[int, int], None]
_HEAD = struct.Struct(">BQQB16sB")  # 35 bytes: up to the kind (docs/ledger-format.md)
_KIND = re.compile(rb"[A-Z][A-Z0-9_]{0,63}")
_COUNTERPART = re.compile(rb"[A-Z]{2}|spiffe://[a-z0-9.\-]+(/[A-Za-z0-9._\-]+)+")
PROGRESS_EVERY = 1 << 16
_MESSAGE_EVENTS = (Event.SENT, Event.RECEIVED, Event.ERASED)
_TILE_ROWS = (0, 16, 24, 28)  # first hash of each level inside a tile (docs/ledger-format.md)
_LOCATE_TRIES = 8

#: Every failure category: (what its "verified" count counts, what a failure of it means).
CATEGORIES: dict[str, tuple[str, str]] = {
    "certificates": (
        "signing certificates chained to the bundle",
        "a certificate does not chain, or no certificate vouches for the log",
    ),
    "checkpoints": (
        "checkpoints signed by the log key, with a matching root",
        "a checkpoint is malformed, of another origin, or not signed by the log key",
    ),
    "cosignatures": (
        "witness cosignatures (one per witness per checkpoint)",
        "a cosignature does not verify, is by an unknown key, or outside its certificate",
    ),
    "witness-policy": (
        "checkpoints meeting the witness policy",
        "the latest checkpoint lacks the cosignatures the policy requires",
    ),
    "fork": (
        "consistency proofs between successive checkpoints",
        "two signed checkpoints cannot both be views of one log",
    ),
    "entries": (
        "entries decoded in order",
        "an entry is missing, malformed, out of place, or breaks its event's grammar",
    ),
    "altered-entry": (
        "entries under a matching signed root",
        "entries no longer give the root their checkpoint signed",
    ),
    "truncated": (
        "checkpoints within the log",
        "a checkpoint is beyond the last entry",
    ),
    "stored-hash": (
        "stored subtree hashes checked against the entries",
        "a stored subtree hash (ledger_tiles) is not what the entries give",
    ),
    "envelopes": (
        "envelopes verified, erased or withheld",
        "an envelope is missing, does not verify, or has another digest",
    ),
}


@dataclass(frozen=True)
class Failure:
    """One thing that did not verify: its category, the entry index or checkpoint size, why.

    For a bad stored hash, ``level`` and ``position`` name the subtree hash (``index`` is None:
    no entry is at fault).
    """

    message: str
    index: int | None = None
    checkpoint_size: int | None = None
    category: str = "entries"
    level: int | None = None
    position: int | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:  # pragma: no cover - a programming error
            raise ValueError(f"unknown failure category {self.category!r}")

    def __str__(self) -> str:
        return self.message


@dataclass
class VerificationResult:
    """What was checked and what failed. ``ok`` only if something was checked and none failed."""

    origin: str = ""
    entries: int = 0
    checkpoints: int = 0  # checkpoints (not signatures) signed by the log key, root matching
    cosignatures: int = 0  # distinct (checkpoint, witness) cosignatures that verified
    witnessed: int = 0  # checkpoints whose cosigners meet the witness policy
    consistency_proofs: int = 0
    certificates: int = 0  # signing certificates chained to the bundle
    envelopes: int = 0  # sent/received entries whose envelope verified
    erased: int = 0  # sent/received entries whose envelope was erased (with an erased entry)
    withheld: int = 0  # sent/received entries whose envelope the node withheld from the fetcher
    stored_hashes: int = 0  # stored subtree hashes compared with the recomputed tree
    signed_entries: int = 0  # entries under the largest checkpoint whose root matched
    within_log: int = 0  # checkpoints not beyond the last entry
    root: bytes = EMPTY_ROOT
    policy: str = ""
    cosigners: dict[int, list[str]] = field(default_factory=dict)  # checkpoint size -> witnesses
    notices: list[str] = field(default_factory=list)  # reported, not failures (duplicates)
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
        """Per category of :data:`CATEGORIES`: (items verified, failures)."""
        verified = {
            "certificates": self.certificates,
            "checkpoints": self.checkpoints,
            "cosignatures": self.cosignatures,
            "witness-policy": self.witnessed,
            "fork": self.consistency_proofs,
            "entries": self.entries,
            "altered-entry": self.signed_entries,
            "truncated": self.within_log,
            "stored-hash": self.stored_hashes,
            "envelopes": self.envelopes + self.erased + self.withheld,
        }
        failed = dict.fromkeys(CATEGORIES, 0)
        for f in self.failures:
            failed[f.category] += 1
        return {c: (verified[c], failed[c]) for c in CATEGORIES}

    def fail(self, category: str, message: str, **where: int | None) -> None:
        """Record a failure of ``category``."""
        self.failures.append(Failure(message, category=category, **where))


# -- step 1: keys ---------------------------------------------------------------------------


@dataclass
class _Keys:
    log: list[Verifier]
    witnesses: list[Verifier]
    certified: CertifiedKeys | None
    own: str  # the audited ledger's jurisdiction code, "" if unknown

    def witness_of(self, verifier: Verifier) -> str:
        """Who a witness key stands for: its certificate's jurisdiction, or its name's."""
        if self.certified is not None:
            key = self.certified.find(verifier)
            if key is not None:
                return key.jurisdiction.value
        return witness_id(verifier.name)


def _step1_keys(
    source: LedgerSource,
    log_key: Verifier | None,
    witnesses: list[Verifier],
    bundle: TrustBundle | None,
    result: VerificationResult,
) -> _Keys:
    """Step 1: the keys (RFC 5280 chains to the bundle; C2SP signed-note key IDs)."""
    own = jurisdiction_of_origin(source.origin)
    keys = _Keys([log_key] if log_key is not None else [], list(witnesses), None, "")
    keys.own = own.value if own is not None else ""
    if bundle is None:
        return keys
    if own is None:
        result.fail("certificates", f"origin {source.origin!r} is no jurisdiction's ledger")
        return keys
    certified = certified_keys(source.certificates(), bundle, own)
    keys.certified = certified
    result.certificates = len(certified.log) + len(certified.witnesses)
    for problem in certified.problems:
        result.fail("certificates", problem)
    if not certified.log:
        result.fail(
            "certificates",
            f"no signing certificate of {own} chained to the trust bundle is in the source: "
            f"nothing can vouch for {source.origin}'s checkpoints",
        )
    keys.log += [k.verifier for k in certified.log]
    keys.witnesses += [k.verifier for k in certified.witnesses]
    return keys


# -- step 2: checkpoints --------------------------------------------------------------------


@dataclass
class _Signed:
    size: int
    root: bytes
    note: str
    cosigners: list[str]


def _size_of(note: str) -> int | None:
    lines = note.split("\n")
    return int(lines[1]) if len(lines) > 2 and lines[1].isdigit() else None


def _step2_checkpoints(
    notes: Iterable[str], origin: str, keys: _Keys, result: VerificationResult
) -> list[_Signed]:
    """Step 2: C2SP tlog-checkpoint, signed-note (each line on its own), tlog-cosignature/v1.

    Returns the checkpoints signed by a log key, of this origin, one per size, in size order.
    """
    log = {(v.name, v.key_id): v for v in keys.log}
    witnesses = {(v.name, v.key_id): v for v in keys.witnesses}
    by_size: dict[int, _Signed] = {}
    for position, note in enumerate(notes):
        size = _size_of(note)
        label = f"checkpoint of size {size}" if size is not None else f"checkpoint {position}"
        try:
            parsed = parse_note(note)
            cp = parse_checkpoint(parsed.text)
        except NoteError as e:
            result.fail("checkpoints", f"{label}: {e}", checkpoint_size=size)
            continue
        label = f"checkpoint of size {cp.size}"
        logged = named_log = False
        cosigned: list[str] = []
        for sig in parsed.signatures:
            ident = (sig.name, sig.key_id)
            verifier = log.get(ident) or witnesses.get(ident)
            if verifier is None:
                if keys.certified is not None:
                    own_name = sig.name == origin
                    if own_name:
                        named_log = True
                    result.fail(
                        "checkpoints" if own_name else "cosignatures",
                        f"{label}: signature by {sig.name} (key id {sig.key_id.hex()}) is by no "
                        "certificate chained to the trust bundle",
                        checkpoint_size=cp.size,
                    )
                continue  # signed-note: signatures by unknown keys are ignored
            try:
                timestamp = verifier.verify(parsed.text, sig.signature)
            except NoteError as e:
                if ident in log:
                    result.fail("checkpoints", f"{label}: {e}", checkpoint_size=cp.size)
                else:
                    result.fail(
                        "cosignatures",
                        f"{label}: {e}: {sig.name} did not cosign this checkpoint (it was "
                        "re-signed or altered after witnessing, or the line was copied)",
                        checkpoint_size=cp.size,
                    )
                continue
            if ident in log:
                logged = True
                continue
            if timestamp is not None and not _in_validity(
                cp.size, verifier, timestamp, keys, result
            ):
                continue
            cosigned.append(keys.witness_of(verifier))
        if not logged:
            if named_log:
                continue  # said above: a log signature by a key no certificate vouches for
            names = ", ".join(sorted({k.name for k in keys.log})) or "(none certified)"
            result.fail(
                "checkpoints",
                f"{label}: not signed by the log key {names}",
                checkpoint_size=cp.size,
            )
            continue
        if cp.origin != origin:
            result.fail(
                "checkpoints",
                f"{label}: origin {cp.origin!r} is not {origin!r}",
                checkpoint_size=cp.size,
            )
            continue
        distinct = sorted(set(cosigned))
        for w in distinct:
            if cosigned.count(w) > 1:
                result.notices.append(
                    f"{label}: {cosigned.count(w)} cosignatures by {w}, counted once"
                )
        seen = by_size.get(cp.size)
        if seen is not None and seen.root != cp.root_hash:
            result.fail(
                "fork",
                f"two checkpoints of size {cp.size} disagree: root {seen.root.hex()} != "
                f"{cp.root_hash.hex()} (the log forked: both were signed by its key)",
                checkpoint_size=cp.size,
            )
            continue
        if seen is not None:
            seen.cosigners = sorted(set(seen.cosigners) | set(distinct))
            continue
        by_size[cp.size] = _Signed(cp.size, cp.root_hash, note, distinct)
    signed = sorted(by_size.values(), key=lambda s: s.size)
    for s in signed:
        result.cosigners[s.size] = s.cosigners
        result.cosignatures += len(s.cosigners)
    return signed


def _in_validity(
    size: int, verifier: Verifier, timestamp: int, keys: _Keys, result: VerificationResult
) -> bool:
    """A cosignature counts only if made while its certificate was valid (bundle mode)."""
    key = keys.certified.find(verifier) if keys.certified is not None else None
    if key is None:
        return True
    try:
        at = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    except (OverflowError, OSError, ValueError):
        result.fail(
            "cosignatures",
            f"checkpoint of size {size}: cosignature by {verifier.name} has timestamp "
            f"{timestamp}, beyond any date",
            checkpoint_size=size,
        )
        return False
    if key.not_before <= at <= key.not_after:
        return True
    result.fail(
        "cosignatures",
        f"checkpoint of size {size}: cosignature by {verifier.name} at {at.isoformat()} is "
        f"outside its certificate {key.fingerprint[:16]}'s validity "
        f"{key.not_before.isoformat()}..{key.not_after.isoformat()}",
        checkpoint_size=size,
    )
    return False


# -- step 3: witness policy -----------------------------------------------------------------


def _step3_witness_policy(
    signed: list[_Signed], policy: WitnessPolicy, result: VerificationResult
) -> None:
    """Step 3: the latest checkpoint meets the witness policy (C2SP tlog-witness: a checkpoint
    counts against its log's operator only with others' cosignatures)."""
    result.policy = policy.describe()
    result.witnessed = sum(1 for s in signed if s.size > 0 and policy.met_by(s.cosigners))
    if policy.opted_out or not signed:
        return
    latest = signed[-1]
    if policy.met_by(latest.cosigners):
        return
    have = sorted(policy.witnesses & set(latest.cosigners))
    missing = sorted(policy.witnesses - set(latest.cosigners))
    by = ", ".join(have) if have else "no required witness"
    result.fail(
        "witness-policy",
        f"checkpoint of size {latest.size} (the latest) is cosigned by {by}; the policy needs "
        f"{policy.describe()} (missing {', '.join(missing)}): the log's operator alone vouches "
        "for this history, which could have been rewritten, rolled back or forked and re-signed "
        "with the node's own key",
        checkpoint_size=latest.size,
    )


# -- step 4: entries, tree, stored hashes ---------------------------------------------------


def _fast_entry_problem(leaf: bytes, index: int, last_time: int) -> tuple[str | None, int]:
    """Check one entry (format, own index, time, grammar); returns (problem, latest time).

    The common case is checked on the raw bytes; anything unusual goes through the full
    decoder, which words the message.
    """
    if len(leaf) >= 35:
        version, encoded, time_ms, event, _, kind_len = _HEAD.unpack_from(leaf)
        at = 35 + kind_len
        rule = _FAST_RULES.get(event)
        if rule is not None and version == 1 and at < len(leaf) and _KIND.fullmatch(leaf, 35, at):
            cp_len = leaf[at]
            end_cp = at + 1 + cp_len
            if (
                end_cp < len(leaf)
                and (cp_len == 2) is rule[0]
                and leaf[end_cp] == rule[1]
                and len(leaf) == end_cp + 1 + 32 * rule[1]
                and _COUNTERPART.fullmatch(leaf, at + 1, end_cp)
            ):
                if encoded == index and time_ms >= last_time:
                    return None, time_ms
                return _placed(index, encoded, time_ms, last_time)
    try:
        record = decode_record(leaf)
    except EntryFormatError as e:
        return f"entry {index}: {e}", last_time
    problem = grammar_problem(record.entry)
    if problem is not None:
        return f"entry {index}: {problem}", last_time
    return _placed(index, record.index, record.time_ms, last_time)


def _placed(index: int, encoded: int, time_ms: int, last_time: int) -> tuple[str | None, int]:
    if encoded != index:
        return f"entry {index}: its bytes encode index {encoded}", last_time
    if time_ms < last_time:
        return f"entry {index}: time {time_ms} is before the previous {last_time}", last_time
    return None, time_ms


# event -> (counterpart is a 2-letter code, digest count), from gateway.entries.EVENT_RULES
def _fast_rules() -> dict[int, tuple[bool, int]]:
    return {
        int(e): (r.counterpart == "jurisdiction", r.digests)
        for e, r in EVENT_RULES.items()
        if r.written
    }


_FAST_RULES = _fast_rules()


@dataclass
class _Mismatch:
    level: int
    position: int
    key: int
    stored: bytes
    recomputed: bytes

    @property
    def leaves(self) -> tuple[int, int]:
        return self.position << self.level, (self.position + 1) << self.level


class _TileCheck:
    """Compares a database's stored tiles (docs/ledger-format.md "Storage") with the perfect
    nodes the verifier recomputes, as they complete; rows are read in key order once."""

    def __init__(self, rows: Iterator[tuple[int, bytes]]) -> None:
        self._rows = rows
        self._next = next(rows, None)
        self.pend: list[list[bytes]] = [[] for _ in range(65)]
        self.checked = 0
        self.mismatches: list[_Mismatch] = []
        self.problems: list[str] = []

    def complete(self, level: int, size: int) -> None:
        """The node of ``level`` (a multiple of 4) just completed tile ``level // 4 - 1``."""
        t = level // 4 - 1
        key = (size << 4) | t
        rows = self.pend[level - 4 : level]
        blob = b"".join([h for row in rows for h in row])
        for row in rows:
            row.clear()
        while self._next is not None and self._next[0] < key:
            self.problems.append(f"stored tile row {self._next[0]} is no tile of this tree")
            self._next = next(self._rows, None)
        if self._next is None or self._next[0] != key:
            k = (size >> (4 * (t + 1))) - 1
            self.problems.append(f"tile {t}/{k} (row {key}) is missing from ledger_tiles")
            return
        stored = bytes(self._next[1])
        self._next = next(self._rows, None)
        self.checked += 30
        if stored == blob:
            return
        k = (size >> (4 * (t + 1))) - 1
        if len(stored) != len(blob):
            self.problems.append(f"tile {t}/{k} (row {key}) is {len(stored)} bytes, not 960")
            return
        for slot in range(30):
            a, b = stored[32 * slot : 32 * slot + 32], blob[32 * slot : 32 * slot + 32]
            if a != b:
                tier = max(r for r in range(4) if _TILE_ROWS[r] <= slot)
                pos = (k << (4 - tier)) + slot - _TILE_ROWS[tier]
                self.mismatches.append(_Mismatch(4 * t + tier, pos, key, a, b))

    def finish(self) -> None:
        """Rows beyond the last tile the entries complete."""
        while self._next is not None:
            self.problems.append(f"stored tile row {self._next[0]} is beyond the entries")
            self._next = next(self._rows, None)


@dataclass
class _Stream:
    """What step 4 found, for the steps after it."""

    frontier: Frontier
    failed: list[tuple[int, int]] = field(default_factory=list)  # entry ranges not vouched for
    verified_sizes: set[int] = field(default_factory=set)
    lost_at: int | None = None  # from here on the tree could not be recomputed
    gap: bool = False  # an entry is missing in the middle (named in step 4)
    captured: dict[Node, bytes] = field(default_factory=dict)
    messages: list[_Message] = field(default_factory=list)
    erased: set[tuple[str, uuid.UUID]] = field(default_factory=set)
    tiles: _TileCheck | None = None
    bad_leaves: dict[int, bytes] = field(default_factory=dict)  # stored leaf hash proved wrong
    altered: int = 0  # entries whose original hash a signed root confirmed (not their bytes)


def _step4_entries(
    source: LedgerSource,
    signed: list[_Signed],
    keys: _Keys,
    with_envelopes: bool,
    progress: Progress | None,
    result: VerificationResult,
) -> _Stream:
    """Step 4: entries in order (docs/ledger-format.md "Entries"), the tree recomputed
    (RFC 9162 2.1.1), each signed root compared; step 5 runs where one does not match."""
    pairs = [(a, b) for a, b in itertools.pairwise(signed) if 0 < a.size < b.size]
    wanted: dict[int, Node] = {
        node_id(*node): node
        for a, b in pairs
        for r in consistency_ranges(a.size, b.size)
        for node in perfect_nodes(*r)
    }
    rows = source.stored_tiles()
    stream = _Stream(Frontier(), tiles=_TileCheck(rows) if rows is not None else None)
    tiles = stream.tiles
    pend = tiles.pend if tiles is not None else []
    frontier = stream.frontier
    pending = [s for s in signed if s.size > 0]
    unmatched: list[_Unmatched] = []  # signed roots the entries do not give, not yet explained
    next_cp = 0
    last_time = 0
    good = Frontier()  # the tree at the last checkpoint whose root matched
    bad_from: int | None = None  # first entry of the current interval with an entry failure
    total = source.count
    captured = stream.captured
    for position, (stored_index, leaf) in enumerate(source.entries()):
        if stored_index != position:
            result.fail(
                "entries",
                f"entry {position} is missing (the next stored entry is {stored_index})",
                index=position,
            )
            stream.lost_at = position
            stream.gap = True
            break
        problem, last_time = _fast_entry_problem(leaf, position, last_time)
        if problem is not None:
            result.fail("entries", problem, index=position)
            bad_from = position if bad_from is None else bad_from
        elif with_envelopes and leaf[17] in _MESSAGE_EVENTS:
            e = decode_record(leaf).entry
            if e.event is Event.ERASED:  # counterpart: the message's origin
                stream.erased.add((e.counterpart, e.message_id))
            else:
                digest = e.digests[0] if e.digests else None
                origin = keys.own if e.event is Event.SENT else e.counterpart
                stream.messages.append(_Message(position, e.event, e.message_id, origin, digest))
        completed = frontier.append_keyed(sha256(b"\x00" + leaf).digest())  # RFC 9162 leaf
        if wanted:
            for key, h in completed:
                if key in wanted:
                    captured[wanted[key]] = h
        size = position + 1
        if tiles is not None:
            for level in range(len(completed)):
                pend[level].append(completed[level][1])
                if level and not level & 3:
                    tiles.complete(level, size)
        while next_cp < len(pending) and pending[next_cp].size == size:
            cp = pending[next_cp]
            next_cp += 1
            root = frontier.root()
            if root == cp.root:
                _forks(unmatched, cp, stream, result)
                stream.verified_sizes.add(size)
                good = frontier.copy()
                bad_from = None
                continue
            quiet = bad_from is not None  # the entry failures named above explain it
            bad_from = None
            if unmatched:  # an earlier mismatch is unexplained yet: it includes these entries
                unmatched.append(_Unmatched(good.size, cp, root, quiet))
                continue
            stream.failed.append((good.size, size))
            corrected = _step5_altered(source, good.size, cp, good, stream, result)
            if corrected is None:
                unmatched.append(_Unmatched(good.size, cp, root, quiet))
            else:
                frontier = stream.frontier = corrected
                good = corrected.copy()
        if progress is not None and size % PROGRESS_EVERY == 0:
            progress(size, total)
    else:
        if tiles is not None:
            tiles.finish()
    result.entries = frontier.size
    result.root = frontier.root()
    if progress is not None:
        progress(frontier.size, total)
    result.checkpoints = len(stream.verified_sizes)
    result.signed_entries = max(stream.verified_sizes, default=0) - stream.altered
    if signed and signed[0].size == 0:
        if signed[0].root == EMPTY_ROOT:
            result.checkpoints += 1
            stream.verified_sizes.add(0)
        else:
            result.fail(
                "checkpoints",
                "checkpoint of size 0: root is not the empty tree hash",
                checkpoint_size=0,
            )
    if stream.lost_at is not None:
        later = [s.size for s in pending if s.size > stream.lost_at]
        if later:
            result.notices.append(
                f"checkpoints of sizes {later[0]}..{later[-1]} ({len(later)}) were not checked: "
                f"the tree cannot be recomputed past entry {stream.lost_at - 1}"
            )
    if unmatched:
        _unexplained(unmatched, stream, result)
    return stream


@dataclass
class _Unmatched:
    start: int  # the last matching checkpoint's size
    cp: _Signed
    recomputed: bytes
    quiet: bool  # entry failures in the range explain it


def _forks(
    unmatched: list[_Unmatched], cp: _Signed, stream: _Stream, result: VerificationResult
) -> None:
    """A later signed root the entries give commits to every entry below it: the checkpoints
    that did not match signed another history of the same log (RFC 9162 2.1.4: they cannot be
    consistent with it)."""
    for u in unmatched:
        result.fail(
            "fork",
            f"checkpoint of size {u.cp.size}: signed root {u.cp.root.hex()} is not the root "
            f"{u.recomputed.hex()} of the first {u.cp.size} entries, to which the checkpoint of "
            f"size {cp.size} commits: the log's key signed two views of its history (a fork)",
            checkpoint_size=u.cp.size,
        )
        if (u.start, u.cp.size) in stream.failed:
            stream.failed.remove((u.start, u.cp.size))
    unmatched.clear()


def _unexplained(unmatched: list[_Unmatched], stream: _Stream, result: VerificationResult) -> None:
    """No later signed root vouches for the entries: they were altered somewhere in the first
    unmatched range, which the signed roots alone cannot narrow (ADR 0013)."""
    first = unmatched[0]
    size = first.cp.size
    stream.failed.append((first.start, result.entries))  # nothing signed vouches past it
    if not first.quiet:
        result.fail(
            "altered-entry",
            f"checkpoint of size {size}: signed root {first.cp.root.hex()} != recomputed "
            f"{first.recomputed.hex()}: one or more of entries {first.start}..{size - 1} were "
            "altered (the signed roots alone cannot say which; no stored hash reproduces the "
            "signed root)",
            index=first.start,
            checkpoint_size=size,
        )
    later = [u.cp.size for u in unmatched[1:]]
    if later:
        result.notices.append(
            f"checkpoints of sizes {', '.join(map(str, later))} do not match either: they "
            f"include entries {first.start}..{size - 1}"
        )


# -- step 5: which entries were altered -----------------------------------------------------


def _leaf_hashes(source: LedgerSource, start: int, end: int) -> list[bytes]:
    out = []
    for index, leaf in source.entries():
        if index >= end:
            break
        if index >= start:
            out.append(leaf_hash(leaf))
    return out


def _step5_altered(
    source: LedgerSource,
    start: int,
    cp: _Signed,
    good: Frontier,
    stream: _Stream,
    result: VerificationResult,
) -> Frontier | None:
    """Step 5: entries ``[start, cp.size)`` do not give ``cp``'s signed root: name them.

    A stored leaf hash that differs from an entry's is a candidate for that entry's original
    hash; it is believed only if, put in its place, the signed root comes out (RFC 9162: the
    root commits to every leaf hash). Returns the tree with the confirmed hashes, so later
    checkpoints are checked on their own, or None if no candidate set reproduces the root
    (then a later matching root shows a fork, or none shows the range altered: step 4).
    An entry step 4 named already (malformed, out of place) is not named again.
    """
    size = cp.size
    hashes = _leaf_hashes(source, start, size)
    candidates: dict[int, bytes] = {}
    for offset, h in enumerate(hashes):
        stored = source.stored_leaf_hash(start + offset)
        if stored is not None and stored != h:
            candidates[start + offset] = stored
    tries: list[dict[int, bytes]] = []
    if candidates:
        tries.append(candidates)
        if len(candidates) > 1:
            tries += [{i: h} for i, h in itertools.islice(candidates.items(), _LOCATE_TRIES)]
    for subset in tries:
        tree = good.copy()
        for offset, h in enumerate(hashes):
            tree.append_keyed(subset.get(start + offset, h))
        if tree.root() != cp.root:
            continue
        named = {f.index for f in result.failures if f.category == "entries"}
        for index, original in subset.items():
            if index in named:
                continue  # step 4 named this entry already
            result.fail(
                "altered-entry",
                f"entry {index} was altered: its bytes hash to {hashes[index - start].hex()}, "
                f"the signed root of size {size} commits to {original.hex()} there",
                index=index,
                checkpoint_size=size,
            )
        for index in candidates.keys() - subset.keys():
            stream.bad_leaves[index] = candidates[index]
        stream.altered += len(subset)
        return tree
    return None


# -- step 6: truncation ---------------------------------------------------------------------


def _step6_truncation(signed: list[_Signed], stream: _Stream, result: VerificationResult) -> None:
    """Step 6: no checkpoint is beyond the last entry (a truncated log)."""
    entries = result.entries
    result.within_log = sum(1 for s in signed if s.size <= entries)
    if stream.gap:
        return  # a missing entry in the middle was named in step 4
    latest = max((cp.size for cp in signed), default=0)
    if latest < entries:
        result.notices.append(
            f"entries {latest}..{entries - 1} are beyond the latest checkpoint (size {latest}): "
            "nothing signed vouches for them yet"
        )
    for cp in signed:
        if cp.size > entries:
            result.fail(
                "truncated",
                f"checkpoint of size {cp.size}: the ledger has only {entries} entries "
                f"(entries {entries}..{cp.size - 1} are missing: truncated)",
                index=entries,
                checkpoint_size=cp.size,
            )


# -- step 7: consistency --------------------------------------------------------------------


class _Captured:
    """The perfect nodes kept during the stream: the source of the consistency proofs."""

    def __init__(self, nodes: dict[Node, bytes]) -> None:
        self._nodes = nodes

    def subtree_hashes(self, nodes: Sequence[Node]) -> list[bytes]:
        try:
            return [self._nodes[n] for n in nodes]
        except KeyError as e:  # pragma: no cover - every wanted node is captured
            raise TreeRangeError(f"node {e.args[0]} was not captured") from e


def _step7_consistency(signed: list[_Signed], stream: _Stream, result: VerificationResult) -> None:
    """Step 7: each checkpoint is consistent with the previous one (RFC 9162 2.1.4), with a
    proof built from the recomputed tree; only below the first range the entries fail."""
    limit = min((a for a, _ in stream.failed), default=None)
    source = _Captured(stream.captured)
    for a, b in itertools.pairwise(signed):
        if not 0 < a.size < b.size or b.size not in stream.verified_sizes:
            continue
        if a.size not in stream.verified_sizes or (limit is not None and b.size > limit):
            continue
        try:
            proof = hash_ranges(consistency_ranges(a.size, b.size), source)
            verify_consistency(a.size, b.size, a.root, b.root, proof)
        except MerkleError as e:
            result.fail("fork", f"checkpoint of size {b.size}: {e}", checkpoint_size=b.size)
            continue
        result.consistency_proofs += 1


# -- step 8: stored hashes ------------------------------------------------------------------


def _step8_stored_hashes(stream: _Stream, result: VerificationResult) -> None:
    """Step 8: a stored subtree hash the entries (vouched for by signed roots) disprove is a bad
    stored hash: named by tile, level and position, never as a fork or an altered entry."""
    tiles = stream.tiles
    if tiles is None:
        return
    result.stored_hashes = tiles.checked
    for problem in tiles.problems:
        result.fail("stored-hash", problem)
    signed = result.signed_entries

    def explained(lo: int, hi: int) -> bool:  # a perfect node depends on its own leaves only
        return any(lo < end and start < hi for start, end in stream.failed)

    for m in tiles.mismatches:
        lo, hi = m.leaves
        if m.level == 0 and lo in stream.bad_leaves:
            pass  # step 5 proved this stored leaf hash wrong
        elif explained(lo, hi):
            continue
        t, k = m.key & 15, ((m.key >> 4) >> (4 * ((m.key & 15) + 1))) - 1
        result.fail(
            "stored-hash",
            f"stored subtree hash at level {m.level}, position {m.position} (tile {t}/{k}, "
            f"entries {lo}..{hi - 1}) is {m.stored.hex()}, but the entries give "
            f"{m.recomputed.hex()}: a bad stored hash "
            + (
                "(the entries there are vouched for by a signed root)"
                if hi <= signed
                else "(beyond the last matching checkpoint: nothing signed says more)"
            ),
            level=m.level,
            position=m.position,
        )


# -- step 9: envelopes ----------------------------------------------------------------------


@dataclass
class _Message:
    index: int
    event: Event
    message_id: uuid.UUID
    origin: str  # jurisdiction code: ids are unique per origin
    digest: bytes | None


def _step9_envelopes(
    messages: list[_Message],
    erased: set[tuple[str, uuid.UUID]],
    stored: dict[tuple[str, uuid.UUID], StoredEnvelope] | None,
    bundle: TrustBundle,
    result: VerificationResult,
) -> None:
    """Step 9: envelopes behind sent and received entries (docs/envelopes.md)."""
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


def default_policy(
    own: str, bundle: TrustBundle | None, witnesses: Iterable[Verifier]
) -> WitnessPolicy:
    """The default witness policy: with a bundle, every other jurisdiction in it; otherwise
    every hand-given witness key. Stated in ``audit verify --help`` and docs/audit.md."""
    if bundle is not None:
        return WitnessPolicy.all_of({j.value for j, _ in bundle if j.value != own})
    return WitnessPolicy.all_of(witness_id(v.name) for v in witnesses)


def verify_source(
    source: LedgerSource,
    log_key: Verifier | None = None,
    witnesses: Iterable[Verifier] = (),
    progress: Progress | None = None,
    *,
    bundle: TrustBundle | None = None,
    policy: WitnessPolicy | None = None,
) -> VerificationResult:
    """Verify an opened ledger source: the numbered steps of docs/audit.md, in order.

    Give ``log_key`` (and witness keys), or ``bundle`` to take every key from the signing
    certificates in the source and to check envelopes (step 9), or both. ``policy`` defaults to
    :func:`default_policy`; ``WitnessPolicy.unwitnessed()`` is the explicit opt-out.

    Raises:
        AuditError: no key to verify with, or a witness policy that could pass on nothing.
    """
    if bundle is None and log_key is None:
        raise AuditError("give the log's verifier key or a trust bundle")
    witness_keys = list(witnesses)
    own_j = jurisdiction_of_origin(source.origin)
    own = own_j.value if own_j is not None else ""
    policy = policy if policy is not None else default_policy(own, bundle, witness_keys)
    check_policy(policy, own, bundle)
    result = VerificationResult(origin=source.origin)
    keys = _step1_keys(source, log_key, witness_keys, bundle, result)  # (1)
    signed = _step2_checkpoints(source.checkpoints(), source.origin, keys, result)  # (2)
    _step3_witness_policy(signed, policy, result)  # (3)
    stream = _step4_entries(source, signed, keys, bundle is not None, progress, result)  # (4, 5)
    _step6_truncation(signed, stream, result)  # (6)
    _step7_consistency(signed, stream, result)  # (7)
    _step8_stored_hashes(stream, result)  # (8)
    if bundle is not None:  # (9)
        _step9_envelopes(stream.messages, stream.erased, source.envelopes(), bundle, result)
    _summarise(keys, result)
    return result


def verify_checkpoints(
    source: LedgerSource, bundle: TrustBundle, policy: WitnessPolicy | None = None
) -> VerificationResult:
    """Steps 1-3 only: keys from the certificates, every checkpoint and cosignature, and the
    witness policy on the latest checkpoint; what ``audit fetch`` checks before it is done.

    The entries are not read: ``result.checkpoints`` stays 0 (no root was compared), so
    ``ok`` is False; judge by ``failures``.

    Raises:
        AuditError: a witness policy that could pass on nothing.
    """
    own_j = jurisdiction_of_origin(source.origin)
    own = own_j.value if own_j is not None else ""
    policy = policy if policy is not None else default_policy(own, bundle, ())
    check_policy(policy, own, bundle)
    result = VerificationResult(origin=source.origin)
    keys = _step1_keys(source, None, [], bundle, result)  # (1)
    signed = _step2_checkpoints(source.checkpoints(), source.origin, keys, result)  # (2)
    _step3_witness_policy(signed, policy, result)  # (3)
    return result


def check_policy(policy: WitnessPolicy, own: str, bundle: TrustBundle | None) -> None:
    """Refuse a policy that could pass on nothing, or names a witness the bundle cannot certify.

    Raises:
        AuditError: naming what is wrong with the policy.
    """
    policy.check(own or None)
    if bundle is not None:
        unknown = sorted(policy.witnesses - {j.value for j, _ in bundle})
        if unknown:
            raise AuditError(
                f"the witness policy names {', '.join(unknown)}, which the trust bundle has no "
                "root for: no cosignature of theirs could ever be verified"
            )


def _summarise(keys: _Keys, result: VerificationResult) -> None:
    names = ", ".join(sorted({k.name for k in keys.log}))
    result.verified.extend(
        [
            f"{result.entries} entries decoded in order, tree recomputed",
            f"{result.checkpoints} checkpoints signed by {names} with matching roots",
            f"{result.consistency_proofs} consistency proofs between successive checkpoints",
            f"{result.cosignatures} witness cosignatures (each witness once per checkpoint)",
            f"witness policy: {result.policy}; {result.witnessed} checkpoints meet it",
        ]
    )
    if result.stored_hashes:
        result.verified.append(
            f"{result.stored_hashes} stored subtree hashes checked against the entries"
        )
    if keys.certified is not None:
        result.verified += [
            f"{result.certificates} signing certificates chained to the trust bundle",
            f"{result.envelopes} envelopes of sent/received entries verified, "
            f"{result.erased} erased with an erased entry, {result.withheld} withheld "
            "(not releasable to the auditor who fetched them)",
        ]


def verify_ledger(
    path: Path,
    log_key: Verifier | None = None,
    witnesses: Iterable[Verifier] = (),
    progress: Progress | None = None,
    *,
    bundle: TrustBundle | None = None,
    policy: WitnessPolicy | None = None,
) -> VerificationResult:
    """Verify a ledger database or export file at ``path`` (see :func:`verify_source`).

    Returns:
        The result; ``result.ok`` is False with ``failures`` naming every failure found, each
        with its category, entry index or checkpoint size.

    Raises:
        ExportFormatError: the file is neither a ledger database nor an export.
        AuditError: no key, or a witness policy that could pass on nothing.
    """
    source = open_source(path)
    try:
        return verify_source(source, log_key, witnesses, progress, bundle=bundle, policy=policy)
    finally:
        source.close()


def check_ledger(
    path: Path,
    log_key: Verifier | None = None,
    witnesses: Iterable[Verifier] = (),
    progress: Progress | None = None,
    *,
    bundle: TrustBundle | None = None,
    policy: WitnessPolicy | None = None,
) -> VerificationResult:
    """Like :func:`verify_ledger`, but raise on the first failure.

    Raises:
        BadEntryError: naming the entry index.
        BadCheckpointError: naming the checkpoint size.
        AuditError: a certificate does not chain, a bad stored hash, or nothing to verify.
    """
    result = verify_ledger(path, log_key, witnesses, progress, bundle=bundle, policy=policy)
    failure = result.first_failure
    if failure is not None:
        if failure.category in ("certificates", "stored-hash"):
            raise AuditError(failure.message)
        if failure.index is not None and failure.checkpoint_size is None:
            raise BadEntryError(failure.message, failure.index)
        raise BadCheckpointError(failure.message, failure.checkpoint_size)
    if not result.ok:
        raise AuditError(f"ledger of {result.entries} entries has no signed checkpoint to verify")
    return result
