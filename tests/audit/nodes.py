"""Node ledgers with exchange rows, written directly: real envelopes signed by real certificates.

Each node's ledger is a real SQLite file with the exchange tables, entries appended through
``Ledger.append`` with the exchange row in the same transaction, as the exchange does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import time
import uuid
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import serialization
from google.protobuf import timestamp_pb2

from customs.gateway.v1 import common_pb2, envelope_pb2
from gateway.envelope import Signer, envelope_digest, proto_jurisdiction, seal, sign_receipt
from gateway.envelope.signing import RECEIPT_CONTEXT, pae
from gateway.exchange._store import create_schema, keep_certificate
from gateway.ledger import Entry, Event, Ledger, SignedCheckpoint
from gateway.notes import COSIGNATURE_V1, NoteSigner, cosign
from gateway.pki import Jurisdiction
from tests.support import World

KIND = common_pb2.MESSAGE_KIND_SEIZURE_NOTICE


def signer_of(world: World, j: Jurisdiction) -> Signer:
    """The node's envelope signer (its Ed25519 signing credential)."""
    cred = world.signing(j)
    key = cred.issued.private_key
    return Signer(cred.identity, key, cred.issued.certificate)  # type: ignore[arg-type]


def envelope(
    world: World, origin: Jurisdiction, to: Jurisdiction, mid: uuid.UUID, payload: bytes = b""
) -> envelope_pb2.Envelope:
    """A real envelope from ``origin`` to ``to`` (an empty SeizureNotice parses)."""
    signer = signer_of(world, origin)
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5))
    header = envelope_pb2.EnvelopeHeader(
        message_id=str(mid),
        kind=KIND,
        origin=proto_jurisdiction(origin),
        origin_node=signer.identity.uri,
        recipients=[proto_jurisdiction(to)],
        created_at=created,
    )
    return seal(header, payload, signer)


class NodeLedger:
    """A jurisdiction's ledger being written: sent, received, receipt, erased, checkpoints."""

    def __init__(self, world: World, j: Jurisdiction, path: Path) -> None:
        self.world, self.j, self.path = world, j, path
        self.origin = f"{j.trust_domain}/ledger"
        key = signer_of(world, j).private_key
        self.ledger = Ledger.open(
            path, origin=self.origin, signer=NoteSigner(self.origin, key), schema=create_schema
        )

    def __enter__(self) -> NodeLedger:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.ledger.close()

    def _message(self, env: envelope_pb2.Envelope, direction: str, origin: Jurisdiction) -> int:
        header = envelope_pb2.EnvelopeHeader.FromString(env.header)
        data = env.SerializeToString()

        def within(conn: sqlite3.Connection, index: int) -> None:
            conn.execute(
                "INSERT INTO exchange_messages (message_id, direction, origin, kind, subject, "
                "version, digest, envelope, ledger_index, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    header.message_id,
                    direction,
                    origin.value,
                    KIND,
                    "case",
                    1,
                    envelope_digest(env),
                    data,
                    index,
                    time.time_ns() // 1_000_000,
                ),
            )

        event = Event.SENT if direction == "out" else Event.RECEIVED
        counterpart = header.recipients[0] if direction == "out" else header.origin
        name = common_pb2.Jurisdiction.Name(counterpart).removeprefix("JURISDICTION_")
        return self.ledger.append(
            Entry(
                event, uuid.UUID(header.message_id), "SEIZURE_NOTICE", name, (envelope_digest(env),)
            ),
            within,
        ).index

    def sent(self, env: envelope_pb2.Envelope) -> int:
        """Record a message this node sent (its row and its ``sent`` entry); its index."""
        return self._message(env, "out", self.j)

    def received(self, env: envelope_pb2.Envelope, origin: Jurisdiction) -> int:
        """Record a message this node received from ``origin``; its index."""
        return self._message(env, "in", origin)

    def receipt(
        self,
        env: envelope_pb2.Envelope,
        by: Jurisdiction,
        digest: bytes | None = None,
        received_index: int = 0,
    ) -> envelope_pb2.SignedReceipt:
        """Record ``by``'s signed receipt (its ``received`` entry at ``received_index``) for a
        message this node sent: the ``receipt`` entry and the outbox row that keeps it."""
        header = envelope_pb2.EnvelopeHeader.FromString(env.header)
        signer = signer_of(self.world, by)
        received_at = timestamp_pb2.Timestamp()
        received_at.FromDatetime(dt.datetime.now(dt.UTC))
        signed = sign_receipt(
            envelope_pb2.ReceiptBody(
                message_id=header.message_id,
                message_digest=envelope_digest(env),
                recipient=proto_jurisdiction(by),
                recipient_node=signer.identity.uri,
                ledger_index=received_index,
                received_at=received_at,
            ),
            signer,
        )
        receipt_digest = hashlib.sha256(pae(RECEIPT_CONTEXT, signed.body)).digest()

        def within(conn: sqlite3.Connection, index: int) -> None:
            conn.execute(
                "INSERT INTO exchange_outbox (message_id, recipient, state, receipt, "
                "receipt_index) VALUES (?,?,?,?,?)",
                (header.message_id, by.value, 2, signed.SerializeToString(), index),
            )

        self.ledger.append(
            Entry(
                Event.RECEIPT,
                uuid.UUID(header.message_id),
                "SEIZURE_NOTICE",
                by.value,
                (digest or envelope_digest(env), receipt_digest),
            ),
            within,
        )
        return signed

    def entry(self, event: Event, mid: uuid.UUID, counterpart: str, digest: bytes) -> None:
        """Append any entry (no exchange row)."""
        self.ledger.append(Entry(event, mid, "SEIZURE_NOTICE", counterpart, (digest,)))

    def checkpoint(
        self, *witnesses: Jurisdiction, keys: dict[str, NoteSigner] | None = None
    ) -> SignedCheckpoint:
        """Sign a checkpoint and have each witness jurisdiction cosign it; keep the witnesses'
        signing certificates, as a node does for its auditors."""
        cp = self.ledger.checkpoint()
        for w in witnesses:
            der = self.world.signing(w).issued.certificate.public_bytes(serialization.Encoding.DER)
            self.ledger.write(lambda conn, der=der: keep_certificate(conn, der))
            cosigner = NoteSigner(
                f"{w.trust_domain}/witness", signer_of(self.world, w).private_key, COSIGNATURE_V1
            )
            self.ledger.add_cosignature(
                cp.size, cosign(cp.checkpoint.body(), cosigner, int(time.time()))
            )
        for signer in (keys or {}).values():
            self.ledger.add_cosignature(
                cp.size, cosign(cp.checkpoint.body(), signer, int(time.time()))
            )
        return cp
