"""Witnessing: each node cosigns the other nodes' checkpoints, and collects their cosignatures.

As a **witness** (C2SP tlog-witness ``add-checkpoint`` semantics over gRPC), a node:

1. checks the caller is the node of the checkpoint's jurisdiction, and the note's signature by
   that node's signing key (key name ``<cc>.customs-exchange/ledger``);
2. compares ``old_size`` with the size it last cosigned for that origin, and answers
   ``FAILED_PRECONDITION`` with a :class:`WitnessConflict` detail when they differ;
3. verifies the RFC 9162 consistency proof from the checkpoint it last cosigned to the new one
   (a checkpoint of the same size must have the same root). A smaller checkpoint (rollback) or
   one the proof does not lead to (fork, split view) is refused with ``INVALID_ARGUMENT``, and
   both signed notes are kept as evidence (``exchange_witness_evidence``, in the export) before
   answering, logged as ``FORK``/``ROLLBACK``, counted in the metrics and shown by the health of
   :data:`WITNESS_HEALTH_SERVICE` (NOT_SERVING while evidence is held);
4. cosigns (tlog-cosignature/v1, key name ``<cc>.customs-exchange/witness``) and records it in
   its own ledger: a ``witnessed`` entry (counterpart the peer, digests SHA-256 of the note as
   presented and of the cosignature line) with the note, the proof and the cosignature kept
   beside it in the same transaction, durably, before answering (ADR 0015).

As a **log**, a node pushes its latest checkpoint to every peer witness with a consistency
proof from the size that witness last cosigned, and stores the verified cosignatures with the
checkpoint, so auditors see them in ``GetCheckpoint``. It pushes only when its log grew by an
entry other than ``witnessed`` since that size: recording cosignings would otherwise make three
idle nodes cosign each other's growth forever.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf import any_pb2
from grpc_status import rpc_status

from customs.gateway.v1 import peer_pb2, peer_pb2_grpc
from gateway.errors import FailedPreconditionError, InvalidArgumentError, PermissionDeniedError
from gateway.exchange import _store as store
from gateway.exchange.core import Exchange
from gateway.ledger import Entry, Event, SignedCheckpoint
from gateway.ledger._checkpointer import calls_for_checkpoint
from gateway.merkle import ConsistencyProofError, verify_consistency
from gateway.notes import (
    COSIGNATURE_V1,
    Checkpoint,
    NoteError,
    NoteSigner,
    cosign,
    open_note,
    parse_checkpoint,
    parse_note,
    verify_cosignature,
)
from gateway.pki.access import Principal
from gateway.pki.chain import CertificateCheckError, verify_leaf
from gateway.pki.identity import Jurisdiction, Role
from gateway.pki.note_keys import cosigner_name, cosigner_verifier, ledger_origin, log_verifier
from gateway.store import Connection
from gateway.store.leases import ALWAYS_HELD, Lease

__all__ = [
    "WITNESS_HEALTH_SERVICE",
    "InconsistentCheckpointError",
    "WitnessClient",
    "WitnessConflictError",
    "cosigner_name",
    "cosigner_verifier",
    "ledger_origin",
    "log_verifier",
    "witness_cosign",
    "witnessed_entry",
]  # the key names and verifiers are re-exported from gateway.pki.note_keys

log = logging.getLogger("gateway.exchange.witness")

# The health service name whose status says whether this node, as a witness, holds evidence of
# a peer's inconsistent checkpoint (NOT_SERVING) or not (SERVING); docs/operations.md.
WITNESS_HEALTH_SERVICE = "customs.gateway.v1.Witness"
WITNESSED_KIND = "CHECKPOINT"


_REFUSAL = "inconsistent checkpoint, refusing to cosign: "


class InconsistentCheckpointError(InvalidArgumentError):
    """A peer presented a checkpoint inconsistent with the one this witness cosigned."""


def witnessed_entry(peer: Jurisdiction, note: bytes, cosignature: str) -> Entry:
    """The ``witnessed`` ledger entry of cosigning ``peer``'s checkpoint ``note`` (as presented).

    Message id: the first 16 bytes of SHA-256(note); digests: SHA-256(note), then
    SHA-256(cosignature line, UTF-8) (docs/ledger-format.md).
    """
    digest = hashlib.sha256(note).digest()
    return Entry(
        Event.WITNESSED,
        uuid.UUID(bytes=digest[:16]),
        WITNESSED_KIND,
        peer.value,
        (digest, hashlib.sha256(cosignature.encode()).digest()),
    )


class WitnessConflictError(FailedPreconditionError):
    """``old_size`` is not the size this witness last cosigned; ``known_size`` is."""

    def __init__(self, message: str, known_size: int) -> None:
        super().__init__(message)
        self.known_size = known_size
        self.details = [peer_pb2.WitnessConflict(known_size=known_size)]


def _signing_key(
    exchange: Exchange, der: bytes, expected: Jurisdiction, what: str
) -> ed25519.Ed25519PublicKey:
    bundle, crls = exchange.trust()
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise InvalidArgumentError(f"{what} signing certificate is not valid DER") from exc
    try:
        identity = verify_leaf(cert, bundle, crls, at=exchange.now(), usage="signing")
    except CertificateCheckError as exc:
        raise CertificateCheckError(f"{what} signing certificate: {exc}") from exc
    if identity.jurisdiction is not expected or identity.role is not Role.NODE:
        raise PermissionDeniedError(f"{what} is signed by {identity.uri}, not a {expected} node")
    public = cert.public_key()
    if not isinstance(public, ed25519.Ed25519PublicKey):
        raise PermissionDeniedError(f"{what} signing certificate has no Ed25519 key")
    return public


def witness_cosign(
    exchange: Exchange, request: peer_pb2.CosignCheckpointRequest, caller: Principal
) -> peer_pb2.CosignCheckpointResponse:
    """Cosign a peer's checkpoint after the checks of the module docstring (steps 1-4)."""
    origin_j = caller.jurisdiction
    origin = ledger_origin(origin_j)
    # (1) the note is the caller's, signed by its node signing key
    public = _signing_key(exchange, request.signer_certificate, origin_j, "checkpoint")
    try:
        note, _ = open_note(request.checkpoint, [log_verifier(origin_j, public)])
        checkpoint = parse_checkpoint(note.text)
    except NoteError as exc:
        raise InvalidArgumentError(f"checkpoint from {origin_j}: {exc}") from exc
    if checkpoint.origin != origin:
        raise InvalidArgumentError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    # (2) old size must be what this witness last cosigned
    known = store.witness_state(exchange.ledger.reader(), origin)
    known_size, known_root = known if known else (0, b"")
    if request.old_size != known_size:
        raise WitnessConflictError(
            f"old size {request.old_size} is not {known_size}, the size last cosigned for {origin}",
            known_size,
        )
    # (3) consistency from what was cosigned before; a rollback or a fork is kept as evidence
    if checkpoint.size < known_size:
        _refuse(
            exchange,
            origin,
            "rollback",
            request,
            checkpoint,
            known_size,
            known_root,
            f"checkpoint size {checkpoint.size} is smaller than {known_size}, already cosigned",
        )
    if known_size == 0:
        if request.consistency_proof:
            raise InvalidArgumentError("a first checkpoint takes no consistency proof")
    else:
        try:
            verify_consistency(
                known_size,
                checkpoint.size,
                known_root,
                checkpoint.root_hash,
                list(request.consistency_proof),
            )
        except ConsistencyProofError as exc:
            _refuse(
                exchange,
                origin,
                "fork",
                request,
                checkpoint,
                known_size,
                known_root,
                f"{_REFUSAL}{exc}",
            )
    # (4) cosign and record, durably, before answering
    cosigner = NoteSigner(
        cosigner_name(exchange.jurisdiction), exchange.signer.private_key, COSIGNATURE_V1
    )
    line = cosign(note.text, cosigner, int(time.time()))
    if checkpoint.size == known_size:  # the same checkpoint again: already recorded
        return peer_pb2.CosignCheckpointResponse(
            signature_lines=line.encode(), signer_certificate=exchange.signer.certificate_der
        )
    presented = bytes(request.checkpoint)
    proof = list(request.consistency_proof)
    certificate = bytes(request.signer_certificate)

    def record(conn: Connection, index: int) -> None:
        latest = store.witness_state(conn, origin)
        if (latest[0] if latest else 0) != known_size:
            raise WitnessConflictError(
                f"a concurrent cosigning moved {origin} on", latest[0] if latest else 0
            )
        store.set_witness_state(conn, origin, checkpoint.size, checkpoint.root_hash, note.text)
        store.record_cosigned(
            conn, index, origin, checkpoint.size, known_size, proof, presented, line
        )
        # the log's certificate, so an audit of this ledger alone can check the note it holds
        store.keep_certificate(conn, certificate)

    exchange.ledger.append(witnessed_entry(origin_j, presented, line), within=record)
    log.info("cosigned %s checkpoint of size %d", origin, checkpoint.size)
    return peer_pb2.CosignCheckpointResponse(
        signature_lines=line.encode(), signer_certificate=exchange.signer.certificate_der
    )


def _refuse(
    exchange: Exchange,
    origin: str,
    problem: str,
    request: peer_pb2.CosignCheckpointRequest,
    presented_checkpoint: Checkpoint,
    known_size: int,
    known_root: bytes,
    reason: str,
) -> None:
    """Keep both notes as evidence (durably), log and raise :class:`InconsistentCheckpointError`."""
    cosigned = store.last_cosigned_note(exchange.ledger.reader(), origin)
    presented = bytes(request.checkpoint)
    proof = list(request.consistency_proof)
    detected = int(time.time() * 1000)
    summary = (
        f"{origin} presented a checkpoint of size {presented_checkpoint.size} root "
        f"{presented_checkpoint.root_hash.hex()} inconsistent with the one cosigned, of size "
        f"{known_size} root {known_root.hex()} ({reason.removeprefix(_REFUSAL)}; presented note "
        f"SHA-256 {hashlib.sha256(presented).hexdigest()})"
    )

    def keep(conn: Connection) -> None:
        store.keep_evidence(
            conn,
            origin,
            problem,
            detected,
            cosigned,
            presented,
            request.old_size,
            proof,
            summary,
        )

    exchange.ledger.write(keep)
    log.error(
        "%s: %s; both notes kept as evidence",
        problem.upper(),
        summary,
        extra={"event": problem, "origin": origin, "cosigned_size": known_size},
    )
    raise InconsistentCheckpointError(reason)


class WitnessClient:
    """Pushes this node's latest checkpoint to each peer witness and stores their cosignatures."""

    def __init__(
        self,
        exchange: Exchange,
        peers: dict[Jurisdiction, Callable[[], grpc.Channel]],
        *,
        interval: float = 2.0,
        timeout: float = 10.0,
        summary_interval: float = 600.0,
        lease: Lease = ALWAYS_HELD,
    ) -> None:
        self.exchange = exchange
        self._lease = lease  # replicas: one of them pushes checkpoints (ADR 0072)
        # per peer: (error code logged, when logged, attempts since): one line per change
        self._unreachable: dict[Jurisdiction, tuple[str, float, int]] = {}
        self._summary_interval = summary_interval
        self._peers = peers
        self._channels: dict[Jurisdiction, grpc.Channel] = {}
        self._interval = interval
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="witness-client", daemon=True)

    def start(self) -> None:
        """Start pushing checkpoints every ``interval`` seconds."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop pushing."""
        self._stop.set()
        self._thread.join(timeout)
        for channel in self._channels.values():
            channel.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._lease.held():
                continue
            for peer in self._peers:
                try:
                    self.push(peer)
                except grpc.RpcError as exc:
                    if exc.code() is grpc.StatusCode.INVALID_ARGUMENT:
                        log.error(
                            "witness %s refused to cosign this node's checkpoint: %s",
                            peer,
                            exc.details(),
                            extra={"event": "cosign-refused", "peer": peer.value},
                        )
                    else:
                        self._log_unreachable(peer, exc.code().name)
                    channel = self._channels.pop(peer, None)  # reconnect with fresh credentials
                    if channel is not None:
                        channel.close()
                    continue
                except Exception:
                    log.exception("cosigning by %s failed", peer)
                    continue
                if self._unreachable.pop(peer, None) is not None:
                    log.info("witness %s reachable again", peer, extra={"event": "witness_back"})

    def _log_unreachable(self, peer: Jurisdiction, code: str) -> None:
        """One line when ``peer`` becomes unreachable (or fails otherwise), then a summary
        every ``summary_interval`` while it lasts: not a line per round."""
        now = time.monotonic()
        logged = self._unreachable.get(peer)
        if logged is None or logged[0] != code:
            self._unreachable[peer] = (code, now, 0)
            log.info(
                "witness %s unreachable: %s; retrying every %.0f s, repeats summarised every "
                "%.0f s",
                peer,
                code,
                self._interval,
                self._summary_interval,
                extra={"event": "witness_unreachable", "peer": peer.value},
            )
        elif now - logged[1] >= self._summary_interval:
            self._unreachable[peer] = (code, now, 0)
            log.info(
                "witness %s still unreachable: %s, %d attempt(s) in the last %.0f s",
                peer,
                code,
                logged[2] + 1,
                now - logged[1],
                extra={"event": "witness_unreachable_summary", "peer": peer.value},
            )
        else:
            self._unreachable[peer] = (code, logged[1], logged[2] + 1)

    def _stub(self, peer: Jurisdiction) -> Any:
        if peer not in self._channels:
            self._channels[peer] = self._peers[peer]()
        return peer_pb2_grpc.PeerExchangeStub(self._channels[peer])

    def due(self, peer: Jurisdiction) -> bool:
        """Whether the latest checkpoint has something for ``peer`` to cosign: the log grew
        since the size ``peer`` last cosigned by an entry other than ``witnessed``."""
        return self._due(peer) is not None

    def _due(self, peer: Jurisdiction) -> tuple[SignedCheckpoint, int] | None:
        """The latest checkpoint and the size ``peer`` last cosigned, read once, when the
        checkpoint is due for ``peer``; None when it is not."""
        ledger = self.exchange.ledger
        latest = ledger.latest_checkpoint()
        if latest is None or latest.size == 0:
            return None
        old = store.witnessed_size(ledger.reader(), cosigner_name(peer))
        if old == latest.size:
            return None
        if old < latest.size and not calls_for_checkpoint(ledger, old, latest.size):
            return None
        return latest, old  # old > size: let the witness's conflict answer say where it stands

    def push(self, peer: Jurisdiction) -> int | None:
        """Have ``peer`` cosign the latest checkpoint if :meth:`due`; return the size cosigned,
        or None."""
        due = self._due(peer)
        if due is None:
            return None
        latest, old = due
        ledger = self.exchange.ledger
        for _ in range(2):  # once more after learning the witness's size from a conflict
            proof = ledger.consistency_proof(old, latest.size) if 0 < old < latest.size else []
            request = peer_pb2.CosignCheckpointRequest(
                old_size=old,
                consistency_proof=proof,
                checkpoint=latest.note.encode(),
                signer_certificate=self._certificate_of(latest.note),
            )
            try:
                response = self._stub(peer).CosignCheckpoint(request, timeout=self._timeout)
            except grpc.RpcError as exc:
                known = _conflict_size(exc)
                if known is None:
                    raise
                old = known
                continue
            self._store(peer, latest.size, latest.checkpoint.body(), response)
            return latest.size
        return None

    def _certificate_of(self, note: str) -> bytes:
        """The signing certificate whose key signed ``note`` (the signing pair may have been
        renewed since the checkpoint was made)."""
        ids = {s.key_id for s in parse_note(note).signatures}
        exchange = self.exchange
        for signer in (exchange.signer, *exchange.retired_signers):
            public = signer.private_key.public_key()
            if log_verifier(exchange.jurisdiction, public).key_id in ids:
                return signer.certificate_der
        return exchange.signer.certificate_der

    def _store(
        self, peer: Jurisdiction, size: int, body: str, response: peer_pb2.CosignCheckpointResponse
    ) -> None:
        public = _signing_key(self.exchange, response.signer_certificate, peer, "cosignature")
        verifier = cosigner_verifier(peer, public)
        line = response.signature_lines.decode()
        verify_cosignature(body, line, verifier)
        ledger = self.exchange.ledger
        ledger.add_cosignature(size, line, verifier)
        witness = cosigner_name(peer)
        certificate = response.signer_certificate

        def remember(conn: Connection) -> None:
            store.set_witnessed_size(conn, witness, size)
            store.keep_certificate(conn, certificate)

        ledger.write(remember)


def _conflict_size(exc: grpc.RpcError) -> int | None:
    status = rpc_status.from_call(exc)
    if status is None:
        return None
    for detail in status.details:
        conflict = peer_pb2.WitnessConflict()
        if isinstance(detail, any_pb2.Any) and detail.Unpack(conflict):
            return int(conflict.known_size)
    return None
