"""The auditor's report: every ledger verified, the ledgers reconciled, in one document.

``build_report`` runs the offline verifier on each ledger and reconciles them, then reads each
ledger once more for what an auditor hands on: the checkpoints with who signed and cosigned
them, the size of the log over time, the erasures, and every failure with the step it belongs
to and the entry index it names. The result is plain data (:class:`AuditReport`), rendered as
JSON (:func:`report_json`) or as one self-contained HTML page (``_report_html.render_html``).

The verifier's and the reconciliation's result objects are read through the small adapter at
the end of this module (``_step_of``, ``_steps``, ``_cell_of``), the one place that knows
their shape. Like the rest of ``gateway.audit``, nothing here imports the node's writer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway import __version__
from gateway.audit._policy import WitnessPolicy
from gateway.audit._reconcile import ReconciliationResult, reconcile_sources
from gateway.audit._source import DatabaseSource, ExportSource, LedgerSource, open_source
from gateway.audit._trust import CertifiedKeys, certified_keys
from gateway.audit._verify import CATEGORIES, Failure, VerificationResult, verify_source
from gateway.audit.errors import AuditError, ExportFormatError
from gateway.entries import Event, decode_record
from gateway.errors import GatewayError
from gateway.notes import NoteError, Verifier, parse_checkpoint, parse_note
from gateway.pki.bundle import TrustBundle, fingerprint
from gateway.pki.expiry import certificate_status
from gateway.pki.note_keys import jurisdiction_of_origin

_HEAD = struct.Struct(">BQQB")  # version, index, time in ms, event: the entry's first bytes
_LOG_NAMED = re.compile(r"([A-Z]{2})'s log ")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: The auditor's steps (docs/audit.md, section 2), in order: (number, name, what it checks).
STEPS: tuple[tuple[int, str, str], ...] = (
    (1, "keys", "signing certificates chain to the trust bundle: the log and witness keys"),
    (
        2,
        "checkpoints",
        "each checkpoint is signed by the log key, of this origin; each cosignature verifies, "
        "by a certified witness, within its certificate; no two checkpoints of one size differ",
    ),
    (3, "witness policy", "the latest checkpoint has the cosignatures the policy requires"),
    (
        4,
        "entries and tree",
        "entries present from 0, canonical, in time order; the recomputed Merkle root equals "
        "each signed root",
    ),
    (5, "altered entries", "where a signed root does not match, the altered entries are named"),
    (6, "truncation", "no checkpoint is beyond the last entry"),
    (7, "consistency", "each checkpoint is consistent with the one before (RFC 9162 2.1.4)"),
    (8, "stored hashes", "the stored subtree hashes equal the ones the entries give"),
    (9, "envelopes", "sent and received entries have their signed envelope, or an erasure"),
)
#: The verifier's failure categories, by the step that reports them.
CATEGORY_STEP: dict[str, int] = {
    "certificates": 1,
    "checkpoints": 2,
    "cosignatures": 2,
    "witness-policy": 3,
    "entries": 4,
    "altered-entry": 5,
    "truncated": 6,
    "fork": 7,
    "stored-hash": 8,
    "envelopes": 9,
}
RECONCILIATION_STEP = "reconciliation"
_STEP_NAMES = {number: name for number, name, _ in STEPS}


@dataclass(frozen=True)
class Signature:
    """One signature line of a checkpoint: whose, what role, and whether it verified."""

    name: str
    key_id: str
    role: str  # "log", "witness" or "unknown" (no certified key of that name and key id)
    verified: bool
    timestamp: int | None = None  # a cosignature's time (seconds since the epoch)
    problem: str = ""


@dataclass(frozen=True)
class CheckpointRow:
    """A signed checkpoint: size, root, time, signatures, and the failures that name it."""

    size: int
    root: str
    time_ms: int | None  # the time of its last entry, else of its earliest cosignature
    time_source: str  # "last entry", "cosignature" or ""
    signatures: tuple[Signature, ...]
    status: str  # "passed", "failed" (a failure names it) or "not verified" (a broken tree)

    @property
    def ok(self) -> bool:
        """True when the verifier checked this checkpoint's root and signature."""
        return self.status == "passed"

    @property
    def cosigners(self) -> list[str]:
        """Names of the witnesses whose cosignature verified."""
        return [s.name for s in self.signatures if s.role == "witness" and s.verified]


@dataclass(frozen=True)
class Erasure:
    """An ``erased`` entry: a payload removed at the end of its retention."""

    index: int
    time_ms: int
    message_id: str
    origin: str
    kind: str
    digest: str


@dataclass(frozen=True)
class CertificateRow:
    """A signing certificate the ledger carries, as the trust bundle judged it."""

    fingerprint: str
    subject: str
    role: str  # "log", "witness" or "rejected"
    serial: str  # hex, as pki list and show print it
    not_before: str
    not_after: str
    status: str  # at the report's time (gateway.pki.expiry): valid, expiring-soon, expired...
    problem: str = ""


@dataclass(frozen=True)
class FailureRow:
    """Anything that did not verify or reconcile, numbered across the whole report."""

    number: int
    ledger: str  # the origin line of the ledger it concerns
    step: str  # a step name of STEPS, or "reconciliation"
    category: str
    message: str
    index: int | None = None
    checkpoint_size: int | None = None
    problem: str = ""  # reconciliation: missing-received, digest-mismatch, ...
    message_id: str = ""

    @property
    def anchor(self) -> str:
        """The HTML id of this failure's row."""
        return f"failure-{self.number}"


@dataclass(frozen=True)
class StepRow:
    """One verification step of one ledger: passed, failed or not reached, and its counts."""

    number: int
    name: str
    description: str
    status: str  # "passed", "failed", "not reached"
    checked: str
    failures: tuple[int, ...] = ()  # numbers of FailureRow


@dataclass
class LedgerReport:
    """One ledger as the auditor found it."""

    path: str
    sha256: str  # of the file audited, so whoever receives the report can match the file
    origin: str
    jurisdiction: str
    entries: int
    root: str
    events: dict[str, int]
    first_time_ms: int | None
    last_time_ms: int | None
    checkpoints: list[CheckpointRow]
    certificates: list[CertificateRow]
    erasures: list[Erasure]
    steps: list[StepRow]
    verified: list[str]
    failures: list[FailureRow]
    policy: str = ""  # the witness policy the latest checkpoint was held to, in words
    notices: list[str] = field(default_factory=list)  # reported, not failures

    @property
    def ok(self) -> bool:
        """True when no step failed (a ledger with no verified checkpoint has a failure)."""
        return not self.failures and all(s.status != "failed" for s in self.steps)


@dataclass(frozen=True)
class MatrixCell:
    """What the sender's ledger says it sent to the recipient, and what came of it."""

    sender: str
    recipient: str
    sent: int
    received: int  # received entries in the recipient's ledger from the sender
    receipts: int  # receipt entries in the sender's ledger from the recipient
    pending: int
    refused: int
    failures: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no reconciliation failure concerns this pair."""
        return not self.failures


@dataclass
class AuditReport:
    """Every ledger, the reconciliation matrix and every failure, numbered."""

    generated_at: str
    trust_bundle: str
    version: str  # of customs-gateway, which wrote the report
    ledgers: list[LedgerReport]
    matrix: list[MatrixCell]
    reconciled: bool  # reconciliation ran (two ledgers or more)
    reconciliation: dict[str, int]
    pending: list[str]
    refused: list[str]
    failures: list[FailureRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what reconciliation could not check, why

    @property
    def ok(self) -> bool:
        """True when every ledger verified and the ledgers reconciled."""
        return not self.failures and all(led.ok for led in self.ledgers)


def build_report(
    paths: Sequence[Path],
    bundle: TrustBundle,
    *,
    bundle_name: str = "",
    now: dt.datetime | None = None,
    witnesses: Iterable[str] | None = None,
    quorum: int | None = None,
    no_witnesses: bool = False,
) -> AuditReport:
    """Verify each ledger with the trust bundle, reconcile them, and gather the report.

    Every ledger is verified on its own (``verify_source`` with the bundle: all nine steps);
    with two ledgers or more they are reconciled (``reconcile_sources``). Nothing is trusted
    that the verifier did not check: the checkpoint table re-verifies each signature line
    against the certified keys, and a checkpoint named by any failure is marked failed.

    The witness policy is the verifier's default (every other jurisdiction of the bundle on
    each ledger's latest checkpoint) unless ``witnesses`` (jurisdiction codes; each ledger's
    own is left out) or ``quorum`` is given, or ``no_witnesses`` opts out.

    Raises:
        ExportFormatError: a file is neither a ledger database nor an export, or two are of
            the same origin (an operator's mistake, not a finding).
        AuditError: a witness policy that could pass on nothing.
    """
    now = now or dt.datetime.now(dt.UTC)
    sources: list[DatabaseSource | ExportSource] = []
    try:
        for path in paths:
            try:
                sources.append(open_source(path))
            except OSError as exc:
                raise ExportFormatError(f"cannot read {path}: {exc.strerror}") from exc
        origins = [s.origin for s in sources]
        if len(set(origins)) != len(origins):
            raise ExportFormatError(f"two ledgers of the same origin among {origins}")
        numbering = _Numbering()
        read = [
            _ledger_report(
                path,
                source,
                bundle,
                numbering,
                now,
                _policy(_code(source), bundle, witnesses, quorum, no_witnesses),
            )
            for path, source in zip(paths, sources, strict=True)
        ]
        ledgers = [led for led, _ in read]
        scans = {led.jurisdiction: scan for led, scan in read if led.jurisdiction}
        report = AuditReport(
            generated_at=now.astimezone(dt.UTC).isoformat(timespec="seconds"),
            trust_bundle=bundle_name,
            version=__version__,
            ledgers=ledgers,
            matrix=[],
            reconciled=len(sources) >= 2,
            reconciliation={},
            pending=[],
            refused=[],
        )
        for led in ledgers:
            report.failures.extend(led.failures)
        if report.reconciled:
            try:
                result = reconcile_sources(sources, bundle)
            except (AuditError, GatewayError) as exc:
                report.failures.append(
                    numbering.row("", RECONCILIATION_STEP, RECONCILIATION_STEP, str(exc))
                )
            else:
                _add_reconciliation(report, result, ledgers, scans, numbering)
        return report
    finally:
        for source in sources:
            source.close()


class _Numbering:
    """Hands out failure numbers in report order."""

    def __init__(self) -> None:
        self.next = 1

    def row(self, ledger: str, step: str, category: str, message: str, **kw: Any) -> FailureRow:
        row = FailureRow(self.next, ledger, step, category, message, **kw)
        self.next += 1
        return row


@dataclass
class _Scan:
    """What one pass over the entries gathers for the report (no judgement: the verifier's)."""

    count: int = 0
    events: Counter[str] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None
    times: dict[int, int] = field(default_factory=dict)  # size -> time of entry size-1
    erasures: list[Erasure] = field(default_factory=list)
    # (message id, counterpart) of sent / received / receipt entries: the matrix's counts
    sent: dict[str, Counter[str]] = field(default_factory=dict)
    received: Counter[str] = field(default_factory=Counter)
    receipts: Counter[str] = field(default_factory=Counter)
    sent_index: dict[tuple[str, str], int] = field(default_factory=dict)  # (mid, to) -> index
    received_index: dict[tuple[str, str], int] = field(default_factory=dict)  # (mid, from)


def _scan(source: LedgerSource, sizes: set[int]) -> _Scan:
    scan = _Scan()
    for index, leaf in source.entries():
        scan.count += 1
        if len(leaf) < _HEAD.size:
            scan.events["undecodable"] += 1
            continue
        _, _, time_ms, event = _HEAD.unpack_from(leaf)
        scan.first_ms = time_ms if scan.first_ms is None else scan.first_ms
        scan.last_ms = time_ms
        if index + 1 in sizes:
            scan.times[index + 1] = time_ms
        try:
            name = Event(event).name.lower()
        except ValueError:
            name = "undecodable"
        scan.events[name] += 1
        if event not in (Event.SENT, Event.RECEIVED, Event.RECEIPT, Event.ERASED):
            continue
        try:
            e = decode_record(leaf).entry
        except GatewayError:
            continue  # the verifier names it (step 2)
        mid = str(e.message_id)
        if e.event is Event.ERASED:
            digest = e.digests[0].hex() if e.digests else ""
            scan.erasures.append(Erasure(index, time_ms, mid, e.counterpart, e.kind, digest))
        elif e.event is Event.SENT:
            scan.sent.setdefault(e.counterpart, Counter())[mid] += 1
            scan.sent_index.setdefault((mid, e.counterpart), index)
        elif e.event is Event.RECEIVED:
            scan.received[e.counterpart] += 1
            scan.received_index.setdefault((mid, e.counterpart), index)
        else:
            scan.receipts[e.counterpart] += 1
    return scan


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checkpoint_sizes(notes: Iterable[str]) -> set[int]:
    sizes = set()
    for note in notes:
        lines = note.split("\n")
        if len(lines) > 2 and lines[1].isdigit():
            sizes.add(int(lines[1]))
    return sizes


def _keys(
    source: LedgerSource, bundle: TrustBundle, now: dt.datetime
) -> tuple[CertifiedKeys, list[CertificateRow]]:
    j = jurisdiction_of_origin(source.origin)
    if j is None:
        return CertifiedKeys([], [], []), []
    keys = certified_keys(source.certificates(), bundle, j)
    rows = []
    good = {k.fingerprint: k for k in keys.log + keys.witnesses}
    for der in dict.fromkeys(source.certificates()):
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            continue  # named in keys.problems, and so by the verifier (step "certificates")
        fp = fingerprint(cert)
        key = good.get(fp)
        role = "rejected" if key is None else "log" if key in keys.log else "witness"
        problem = next((p for p in keys.problems if fp[:16] in p), "")
        rows.append(
            CertificateRow(
                fp,
                cert.subject.rfc4514_string(),
                role,
                f"{cert.serial_number:x}",
                cert.not_valid_before_utc.isoformat(),
                cert.not_valid_after_utc.isoformat(),
                certificate_status(cert, now).value,
                problem,
            )
        )
    return keys, rows


def _signatures(text: str, sigs: Iterable[Any], keys: CertifiedKeys) -> tuple[Signature, ...]:
    log = {(k.verifier.name, k.verifier.key_id): k.verifier for k in keys.log}
    witnesses = {(k.verifier.name, k.verifier.key_id): k.verifier for k in keys.witnesses}
    rows = []
    for sig in sigs:
        ident = (sig.name, sig.key_id)
        verifier: Verifier | None = log.get(ident) or witnesses.get(ident)
        role = "log" if ident in log else "witness" if ident in witnesses else "unknown"
        if verifier is None:
            rows.append(Signature(sig.name, sig.key_id.hex(), role, False, None, "unknown key"))
            continue
        try:
            timestamp = verifier.verify(text, sig.signature)
        except NoteError as exc:
            rows.append(Signature(sig.name, sig.key_id.hex(), role, False, None, str(exc)))
            continue
        rows.append(Signature(sig.name, sig.key_id.hex(), role, True, timestamp))
    return tuple(rows)


def _checkpoint_rows(
    notes: list[str],
    keys: CertifiedKeys,
    times: dict[int, int],
    failed: set[int],
    verified_up_to: int,
) -> list[CheckpointRow]:
    rows: dict[tuple[int, str], CheckpointRow] = {}
    for note in notes:
        try:
            parsed = parse_note(note)
            cp = parse_checkpoint(parsed.text)
        except NoteError:
            continue  # the verifier names it (step 1)
        signatures = _signatures(parsed.text, parsed.signatures, keys)
        stamps = [s.timestamp for s in signatures if s.verified and s.timestamp is not None]
        if cp.size in times:  # when the log reached this size: exact, to the millisecond
            time_ms: int | None = times[cp.size]
            time_source = "last entry"
        elif stamps:  # its entries are missing: when a witness first vouched for it
            time_ms, time_source = min(stamps) * 1000, "cosignature"
        else:
            time_ms, time_source = None, ""
        signed = any(s.role == "log" and s.verified for s in signatures)
        if cp.size in failed or not signed:
            status = "failed"
        else:
            status = "passed" if cp.size <= verified_up_to else "not verified"
        row = CheckpointRow(cp.size, cp.root_hash.hex(), time_ms, time_source, signatures, status)
        rows[(cp.size, row.root)] = row
    return sorted(rows.values(), key=lambda r: (r.size, r.root))


def _code(source: LedgerSource) -> str:
    j = jurisdiction_of_origin(source.origin)
    return j.value if j is not None else ""


def _ledger_report(
    path: Path,
    source: LedgerSource,
    bundle: TrustBundle,
    numbering: _Numbering,
    now: dt.datetime,
    policy: WitnessPolicy | None,
) -> tuple[LedgerReport, _Scan]:
    result = verify_source(source, bundle=bundle, policy=policy)
    notes = source.checkpoints()
    scan = _scan(source, _checkpoint_sizes(notes))
    keys, certificates = _keys(source, bundle, now)
    failures = [
        numbering.row(
            source.origin,
            _STEP_NAMES[_step_of(f)],
            f.category or "",
            f.message,
            index=f.index,
            checkpoint_size=f.checkpoint_size,
        )
        for f in result.failures
    ]
    if not failures and result.checkpoints == 0:  # a check that could pass on nothing
        failures.append(
            numbering.row(
                source.origin,
                _STEP_NAMES[2],
                "checkpoints",
                f"no signed checkpoint verified: nothing vouches for these {scan.count} entries",
            )
        )
    failed_sizes = {f.checkpoint_size for f in failures if f.checkpoint_size is not None}
    j = jurisdiction_of_origin(source.origin)
    scan.erasures.sort(key=lambda e: e.index)
    return LedgerReport(
        path=path.name,
        sha256=_file_sha256(path),
        origin=source.origin,
        jurisdiction=j.value if j is not None else "",
        entries=scan.count,
        root=result.root.hex(),
        events=dict(sorted(scan.events.items())),
        first_time_ms=scan.first_ms,
        last_time_ms=scan.last_ms,
        checkpoints=_checkpoint_rows(notes, keys, scan.times, failed_sizes, result.signed_entries),
        certificates=certificates,
        erasures=scan.erasures,
        steps=_steps(result, failures, source),
        policy=result.policy,
        notices=list(result.notices),
        verified=list(result.verified),
        failures=failures,
    ), scan


# --- the adapter: the verifier's and the reconciliation's result objects, read in one place ---


def _step_of(failure: Failure) -> int:
    """The step of docs/audit.md a verifier failure belongs to: by its category."""
    if failure.category == "fork" and failure.index is None and "disagree" in failure.message:
        return 2  # two checkpoints of one size: found among the checkpoints, not by a proof
    return CATEGORY_STEP.get(failure.category, 4)


def _steps(
    result: VerificationResult, failures: list[FailureRow], source: LedgerSource
) -> list[StepRow]:
    """Each step's status and what it checked (the verifier's counts per category)."""
    by_step: dict[str, list[int]] = {}
    for f in failures:
        by_step.setdefault(f.step, []).append(f.number)
    counts = result.counts()
    rows = []
    for number, name, description in STEPS:
        numbers = tuple(by_step.get(name, ()))
        mine = [c for c, step in CATEGORY_STEP.items() if step == number and c in counts]
        checked = "; ".join(
            f"{counts[c][0]} {CATEGORIES[c][0]}, {counts[c][1]} failed" for c in mine
        )
        # A step with no failure that verified nothing did not pass anything either: say so.
        nothing = not any(counts[c][0] for c in mine)
        status = "failed" if numbers else "nothing checked" if nothing else "passed"
        if number == 3:
            checked = f"policy: {result.policy}; {checked}"
        if number == 8 and isinstance(source, ExportSource) and not numbers:
            status, checked = "not applicable", "an export carries no stored hashes"
        rows.append(StepRow(number, name, description, status, checked, numbers))
    return rows


def _policy(
    own: str,
    bundle: TrustBundle,
    witnesses: Iterable[str] | None,
    quorum: int | None,
    no_witnesses: bool,
) -> WitnessPolicy | None:
    """The witness policy for the ledger of ``own``; None for the verifier's default (every
    other jurisdiction of the bundle)."""
    if no_witnesses:
        return WitnessPolicy.unwitnessed()
    if witnesses is None and quorum is None:
        return None
    named = set(witnesses) if witnesses is not None else {j.value for j, _ in bundle}
    members = frozenset(named - {own})
    return WitnessPolicy(members, quorum if quorum is not None else len(members))


def _cell_of(message_id: str, scans: dict[str, _Scan]) -> tuple[str, str, int | None]:
    """(sender, recipient, entry index) of a reconciliation finding, by its message id: the
    sender's ``sent`` entry, else the recipient's ``received`` one; empty when neither (a
    finding about a whole log, such as a rollback or a fork)."""
    for sender, scan in scans.items():
        for recipient in scan.sent:
            index = scan.sent_index.get((message_id, recipient))
            if index is not None:
                return sender, recipient, index
    for recipient, scan in scans.items():
        for (mid, sender), index in scan.received_index.items():
            if mid == message_id:
                return sender, recipient, index
    return "", "", None


def _add_reconciliation(
    report: AuditReport,
    result: ReconciliationResult,
    ledgers: list[LedgerReport],
    scans: dict[str, _Scan],
    numbering: _Numbering,
) -> None:
    origin_of = {led.jurisdiction: led.origin for led in ledgers}
    report.reconciliation = {
        "sent": result.sent,
        "matched": result.matched,
        "receipts": result.receipts,
        "unchecked": result.unchecked,
        "pending": len(result.pending),
        "refused": len(result.refused),
        "errors": len(result.errors),
        "receipts_verified": result.receipts_verified,
        "cosigned_checked": result.cosigned_checked,
        "evidence": result.evidence,
    }
    report.pending = list(result.pending)
    report.refused = list(result.refused)
    report.notes = list(result.notes)
    cell_failures: dict[tuple[str, str], list[int]] = {}
    for mismatch in result.errors:
        mid = str(mismatch.message_id)
        sender, recipient, index = _cell_of(mid, scans)
        log = _LOG_NAMED.match(mismatch.message)  # a rollback or fork names the log first
        concerns = sender or (log.group(1) if log else "")
        row = numbering.row(
            origin_of.get(concerns, ""),
            RECONCILIATION_STEP,
            RECONCILIATION_STEP,
            mismatch.message,
            index=index,
            problem=mismatch.problem,
            message_id=mid,
        )
        report.failures.append(row)
        cell_failures.setdefault((sender, recipient), []).append(row.number)
    pending = Counter(_cell_of(_first_uuid(t), scans)[:2] for t in result.pending)
    refused = Counter(_cell_of(_first_uuid(t), scans)[:2] for t in result.refused)
    codes = [led.jurisdiction for led in ledgers if led.jurisdiction]
    for sender in codes:
        for recipient in codes:
            if sender == recipient:
                continue
            report.matrix.append(
                MatrixCell(
                    sender,
                    recipient,
                    sent=sum(scans[sender].sent.get(recipient, Counter()).values()),
                    received=scans[recipient].received.get(sender, 0),
                    receipts=scans[sender].receipts.get(recipient, 0),
                    pending=pending[(sender, recipient)],
                    refused=refused[(sender, recipient)],
                    failures=tuple(cell_failures.get((sender, recipient), ())),
                )
            )


def _first_uuid(text: str) -> str:
    found = _UUID.search(text)
    return found.group(0) if found else ""


def report_json(report: AuditReport) -> dict[str, Any]:
    """The report as JSON-ready data: the same content as the HTML page."""
    ledgers = []
    for led in report.ledgers:
        data = asdict(led)
        data["ok"] = led.ok
        for cp, row in zip(data["checkpoints"], led.checkpoints, strict=True):
            cp["cosigners"] = row.cosigners
            cp["ok"] = row.ok
        ledgers.append(data)
    return {
        "ok": report.ok,
        "generated_at": report.generated_at,
        "trust_bundle": report.trust_bundle,
        "version": report.version,
        "steps": [{"number": n, "name": name, "checks": d} for n, name, d in STEPS],
        "ledgers": ledgers,
        "reconciliation": {
            "ran": report.reconciled,
            **report.reconciliation,
            "matrix": [{**asdict(c), "ok": c.ok} for c in report.matrix],
            "pending": report.pending,
            "refused": report.refused,
            "notes": report.notes,
        },
        "failures": [{**asdict(f), "anchor": f.anchor} for f in report.failures],
    }
