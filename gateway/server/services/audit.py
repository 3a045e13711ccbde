"""LedgerAudit: read-only access to the ledger for auditors of any jurisdiction."""

from __future__ import annotations

import grpc

from customs.gateway.v1 import audit_pb2, audit_pb2_grpc, envelope_pb2
from gateway.envelope import jurisdiction_of, proto_jurisdiction
from gateway.errors import FieldViolation, InvalidArgumentError, NotFoundError
from gateway.exchange import _store as store
from gateway.ledger import Ledger, SignedCheckpoint
from gateway.pki.identity import Jurisdiction
from gateway.server.interceptors import current_caller

__all__ = ["AuditService"]

_MAX_PAGE = 1000
_MAX_SIZE = 2**63 - 1


def _checkpoint(signed: SignedCheckpoint) -> audit_pb2.Checkpoint:
    out = audit_pb2.Checkpoint(
        note=signed.note.encode(), size=signed.size, root_hash=signed.root_hash
    )
    out.created_at.FromMilliseconds(signed.created_ms)
    return out


class AuditService(audit_pb2_grpc.LedgerAuditServicer):  # type: ignore[misc]  # generated, untyped
    """Checkpoints, entries, proofs and envelopes, all in RFC 9162 / C2SP forms."""

    def __init__(self, ledger: Ledger, jurisdiction: Jurisdiction) -> None:
        self._ledger = ledger
        self._jurisdiction = jurisdiction

    def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> audit_pb2.Checkpoint:
        """The latest stored checkpoint with the cosignatures collected so far.

        Checkpoints are made by the node's checkpointer (every checkpoint interval when the log
        grew), not by readers: an auditor cannot make the node sign at will, and what it gets
        has had time to be witnessed.
        """
        latest = self._ledger.latest_checkpoint()
        if latest is None:  # a new ledger: sign its (empty) head now rather than refuse
            self._ledger.checkpoint()
            latest = self._ledger.latest_checkpoint()
            assert latest is not None
        return _checkpoint(latest)

    def ListCheckpoints(
        self, request: audit_pb2.ListCheckpointsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListCheckpointsResponse:
        limit = min(request.page_size or 100, _MAX_PAGE)
        # No ledger reaches 2^63 entries: a larger minimum asks for none (SQLite's integers
        # are signed 64-bit, so it is not passed on as it is).
        found = self._ledger.checkpoints(min(request.min_size, _MAX_SIZE), limit)
        return audit_pb2.ListCheckpointsResponse(checkpoints=[_checkpoint(c) for c in found])

    def GetEntries(
        self, request: audit_pb2.GetEntriesRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetEntriesResponse:
        leaves = self._ledger.leaves(request.start, request.end, _MAX_PAGE)
        return audit_pb2.GetEntriesResponse(
            entries=[audit_pb2.LedgerEntry(index=i, leaf=leaf) for i, leaf in leaves]
        )

    def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.InclusionProof:
        hashes = self._ledger.inclusion_proof(request.leaf_index, request.tree_size)
        return audit_pb2.InclusionProof(
            leaf_index=request.leaf_index, tree_size=request.tree_size, hashes=hashes
        )

    def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ConsistencyProof:
        hashes = self._ledger.consistency_proof(request.first, request.second)
        return audit_pb2.ConsistencyProof(first=request.first, second=request.second, hashes=hashes)

    def GetEnvelope(
        self, request: audit_pb2.GetEnvelopeRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetEnvelopeResponse:
        reader = self._ledger.reader()
        origin = jurisdiction_of(request.origin) if request.origin else None
        # Only UUIDs are ever stored as message ids; anything else (a NUL byte is not even a
        # PostgreSQL text value) is simply not here, without a query.
        rows = [
            r
            for r in (
                store.MessageRow.with_id(reader, request.message_id)
                if store.is_stored_id(request.message_id)
                else []
            )
            if origin is None or r.origin == origin.value
        ]
        if not rows:
            raise NotFoundError(f"no message {request.message_id!r} in this ledger")
        if len(rows) > 1:
            problem = FieldViolation(
                "origin", f"message id {request.message_id} has several origins; name one"
            )
            raise InvalidArgumentError(str(problem), [problem])
        row = rows[0]
        response = audit_pb2.GetEnvelopeResponse(erased=row.envelope is None)
        response.ledger_indexes.extend(store.ledger_indexes(reader, row.origin, row.message_id))
        if row.envelope is None:
            return response
        envelope = envelope_pb2.Envelope.FromString(row.envelope)
        if not self._releasable(envelope, row.origin, current_caller().jurisdiction):
            response.withheld = True
            return response
        response.envelope.CopyFrom(envelope)
        return response

    def _releasable(
        self, envelope: envelope_pb2.Envelope, origin: str, auditor: Jurisdiction
    ) -> bool:
        """Payloads go to auditors of this node's jurisdiction, the origin's, or a recipient's."""
        if auditor is self._jurisdiction or auditor.value == origin:
            return True
        header = envelope_pb2.EnvelopeHeader.FromString(envelope.header)
        return proto_jurisdiction(auditor) in header.handling.releasable_to

    def ListSigningCertificates(
        self, request: audit_pb2.ListSigningCertificatesRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListSigningCertificatesResponse:
        return audit_pb2.ListSigningCertificatesResponse(
            certificates=store.kept_certificates(self._ledger.reader())
        )
