"""Fetching a live node's ledger over ``LedgerAudit`` into an export file, for offline checks.

What is fetched is not trusted: the export is verified afterwards like any other
(:func:`gateway.audit.verify_ledger`). Against an earlier export of the same node, the node must
also prove that its current tree extends the one seen then (RFC 9162 consistency proof), so a
node cannot rewrite history between two audits without the auditor noticing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from customs.gateway.v1 import audit_pb2, audit_pb2_grpc, envelope_pb2
from gateway.audit._source import ExportSource, StoredEnvelope, write_export_records
from gateway.audit.errors import AuditError
from gateway.entries import Event, decode_record
from gateway.merkle import ConsistencyProofError, verify_consistency
from gateway.notes import parse_checkpoint, parse_note
from gateway.pki.note_keys import jurisdiction_of_origin

__all__ = ["FetchResult", "fetch_export"]

_PAGE = 1000


@dataclass(frozen=True)
class FetchResult:
    """What was fetched, and the consistency with an earlier export when one was given."""

    entries: int
    checkpoints: int
    certificates: int
    envelopes: int
    size: int
    since_size: int | None = None


def _entries(stub: Any, size: int) -> Iterator[bytes]:
    start = 0
    while start < size:
        response = stub.GetEntries(
            audit_pb2.GetEntriesRequest(start=start, end=min(size, start + _PAGE)), timeout=30
        )
        if not response.entries:
            raise AuditError(f"the node returned no entries from index {start} of {size}")
        for entry in response.entries:
            if start >= size:
                break
            if entry.index != start:
                raise AuditError(f"the node returned entry {entry.index} where {start} was due")
            yield bytes(entry.leaf)
            start += 1


def _notes(stub: Any, size: int) -> list[str]:
    notes: list[str] = []
    min_size = 0
    while True:
        page = stub.ListCheckpoints(
            audit_pb2.ListCheckpointsRequest(min_size=min_size, page_size=_PAGE), timeout=30
        ).checkpoints
        notes += [c.note.decode() for c in page if c.size <= size]
        if len(page) < _PAGE:
            return notes
        min_size = page[-1].size + 1


def _envelope(stub: Any, origin: str, message_id: uuid.UUID) -> StoredEnvelope:
    request = audit_pb2.GetEnvelopeRequest(
        message_id=str(message_id),
        origin=f"JURISDICTION_{origin}",
    )
    response = stub.GetEnvelope(request, timeout=30)
    if response.withheld:  # not releasable to this auditor's jurisdiction
        return StoredEnvelope(message_id, 0, None, withheld=True, origin=origin)
    if response.erased or not response.HasField("envelope"):
        return StoredEnvelope(message_id, 0, None, origin=origin)
    header = envelope_pb2.EnvelopeHeader.FromString(response.envelope.header)
    created_ms = header.created_at.seconds * 1000 + header.created_at.nanos // 1_000_000
    envelope = response.envelope.SerializeToString()
    return StoredEnvelope(message_id, created_ms, envelope, origin=origin)


def _last_checkpoint(path: Path) -> tuple[int, bytes]:
    source = ExportSource(path)
    try:
        notes = source.checkpoints()
    finally:
        source.close()
    if not notes:
        raise AuditError(f"{path} holds no checkpoint to check consistency from")
    checkpoint = parse_checkpoint(parse_note(notes[-1]).text)
    return checkpoint.size, checkpoint.root_hash


def fetch_export(channel: grpc.Channel, out: Path, since: Path | None = None) -> FetchResult:
    """Download a node's ledger into the export file ``out`` (written atomically).

    Steps: (1) the latest checkpoint fixes the size fetched; (2) with ``since``, the node's
    consistency proof from the last checkpoint of that earlier export to this one must verify;
    (3) entries, checkpoints, signing certificates and the envelope of every sent and received
    message are fetched and written.

    Raises:
        AuditError: the node's answers do not fit together, or the consistency proof fails.
    """
    stub = audit_pb2_grpc.LedgerAuditStub(channel)
    latest = stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=30)
    body = parse_checkpoint(parse_note(latest.note.decode()).text)
    since_size = None
    if since is not None:
        since_size, old_root = _last_checkpoint(since)
        if body.size < since_size:
            raise AuditError(
                f"the node's latest checkpoint is of size {body.size}, smaller than {since_size} "
                f"in {since}: its history was truncated or rewritten"
            )
        proof = stub.GetConsistencyProof(
            audit_pb2.GetConsistencyProofRequest(first=since_size, second=body.size), timeout=30
        )
        try:
            verify_consistency(since_size, body.size, old_root, body.root_hash, list(proof.hashes))
        except ConsistencyProofError as exc:
            raise AuditError(
                f"the node's tree of size {body.size} does not extend the one of size "
                f"{since_size} in {since}: {exc}"
            ) from exc
    leaves = list(_entries(stub, body.size))
    own = jurisdiction_of_origin(body.origin)
    if own is None:
        raise AuditError(f"checkpoint origin {body.origin!r} is no jurisdiction's ledger")
    messages = dict.fromkeys(  # (origin, id): the sender of a sent entry is this node
        (own.value if r.entry.event is Event.SENT else r.entry.counterpart, r.entry.message_id)
        for r in map(decode_record, leaves)
        if r.entry.event in (Event.SENT, Event.RECEIVED)
    )
    envelopes = [_envelope(stub, origin, m) for origin, m in messages]
    certificates = list(
        stub.ListSigningCertificates(
            audit_pb2.ListSigningCertificatesRequest(), timeout=30
        ).certificates
    )
    counts = write_export_records(
        out, body.origin, leaves, _notes(stub, body.size), certificates, envelopes
    )
    return FetchResult(*counts, size=body.size, since_size=since_size)
