"""Witnessing: each node cosigns the other nodes' checkpoints, and collects their cosignatures.

As a **witness** (C2SP tlog-witness ``add-checkpoint`` semantics over gRPC), a node:

1. checks the caller is the node of the checkpoint's jurisdiction, and the note's signature by
   that node's signing key (key name ``<cc>.customs-exchange/ledger``);
2. compares ``old_size`` with the size it last cosigned for that origin, and answers
   ``FAILED_PRECONDITION`` with a :class:`WitnessConflict` detail when they differ;
3. verifies the RFC 9162 consistency proof from the checkpoint it last cosigned to the new one
   (a checkpoint of the same size must have the same root); an inconsistent one is refused as a
   fork and logged loudly;
4. cosigns (tlog-cosignature/v1, key name ``<cc>.customs-exchange/witness``) and stores the
   new state durably before answering. Cosigning is deliberately not a ledger event: it would
   grow the witness's own log, whose new checkpoint the others would cosign, and so on forever.

As a **log**, a node pushes its latest checkpoint to every peer witness with a consistency
proof from the size that witness last cosigned, and stores the verified cosignatures with the
checkpoint, so auditors see them in ``GetCheckpoint``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
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
from gateway.merkle import ConsistencyProofError, verify_consistency
from gateway.notes import (
    COSIGNATURE_V1,
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

__all__ = [
    "WitnessClient",
    "WitnessConflictError",
    "cosigner_name",
    "cosigner_verifier",
    "ledger_origin",
    "log_verifier",
    "witness_cosign",
]  # the key names and verifiers are re-exported from gateway.pki.note_keys

log = logging.getLogger("gateway.exchange.witness")


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
    # (3) consistency from what was cosigned before
    if checkpoint.size < known_size:
        raise InvalidArgumentError(
            f"checkpoint size {checkpoint.size} is smaller than {known_size}, already cosigned"
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
            log.error(
                "FORK: %s checkpoint of size %d is not consistent with size %d cosigned before: %s",
                origin,
                checkpoint.size,
                known_size,
                exc,
                extra={"event": "fork", "origin": origin},
            )
            raise InvalidArgumentError(
                f"inconsistent checkpoint, refusing to cosign: {exc}"
            ) from exc
    # (4) cosign and record, durably, before answering
    cosigner = NoteSigner(
        cosigner_name(exchange.jurisdiction), exchange.signer.private_key, COSIGNATURE_V1
    )
    line = cosign(note.text, cosigner, int(time.time()))

    def record(conn: sqlite3.Connection) -> None:
        latest = store.witness_state(conn, origin)
        if (latest[0] if latest else 0) != known_size:
            raise WitnessConflictError(
                f"a concurrent cosigning moved {origin} on", latest[0] if latest else 0
            )
        store.set_witness_state(conn, origin, checkpoint.size, checkpoint.root_hash, note.text)

    exchange.ledger.write(record)
    log.info("cosigned %s checkpoint of size %d", origin, checkpoint.size)
    return peer_pb2.CosignCheckpointResponse(
        signature_lines=line.encode(), signer_certificate=exchange.signer.certificate_der
    )


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
    ) -> None:
        self.exchange = exchange
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
            for peer in self._peers:
                try:
                    self.push(peer)
                except grpc.RpcError as exc:
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

    def push(self, peer: Jurisdiction) -> int | None:
        """Have ``peer`` cosign the latest checkpoint; return the size cosigned, or None."""
        ledger = self.exchange.ledger
        latest = ledger.latest_checkpoint()
        if latest is None or latest.size == 0:
            return None
        witness = cosigner_name(peer)
        old = store.witnessed_size(ledger.reader(), witness)
        if old == latest.size:
            return None
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

        def remember(conn: sqlite3.Connection) -> None:
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
