"""NodeStatus: the node's own view of itself for its operators (``customs-gateway status``).

Facts only, gathered at the moment of the call: identity and version, ledger size and the latest
checkpoint with the witnesses that cosigned it, per peer a health check made now (in parallel,
a few seconds at most), the outbox backlog and the deliverer's last success and failure, the
certificates the node *uses* (from memory, not from disk) and the CRLs it enforces. The judgement
of what needs attention is the caller's (:func:`gateway.status.assess`), with its thresholds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from customs.gateway.v1 import status_pb2, status_pb2_grpc
from gateway import __version__
from gateway.exchange import _store as store
from gateway.notes import parse_note
from gateway.pki.bundle import fingerprint
from gateway.pki.expiry import certificate_serial
from gateway.pki.identity import Jurisdiction
from gateway.pki.note_keys import cosigner_name
from gateway.store.leases import LeaseRow, read_leases

if TYPE_CHECKING:
    from gateway.server.node import Node

__all__ = ["PROBE_TIMEOUT", "StatusService"]

PROBE_TIMEOUT = 3.0  # seconds for each peer's health check


@dataclass(frozen=True)
class _Probe:
    reachable: bool
    error: str


def _probe(connect: Callable[[], grpc.Channel]) -> _Probe:
    """Check the peer's health with the node's own client certificate, on a fresh channel."""
    try:
        with connect() as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT
            )
    except grpc.RpcError as exc:
        return _Probe(False, f"{exc.code().name}: {exc.details()}")
    except Exception as exc:  # credentials unreadable at this moment: say so, do not fail
        return _Probe(False, f"cannot connect: {exc}")
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        return _Probe(False, health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
    return _Probe(True, "")


def _certificate(name: str, subject: str, cert: x509.Certificate) -> status_pb2.CertificateInUse:
    out = status_pb2.CertificateInUse(
        name=name, subject=subject, serial=certificate_serial(cert), fingerprint=fingerprint(cert)
    )
    out.not_before.FromDatetime(cert.not_valid_before_utc)
    out.not_after.FromDatetime(cert.not_valid_after_utc)
    return out


class StatusService(status_pb2_grpc.NodeStatusServicer):  # type: ignore[misc]  # generated
    """Answers ``GetStatus`` from the node's live state."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="status-probe")

    def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> status_pb2.GetStatusResponse:
        """The node's status now (see the module docstring)."""
        node, config = self._node, self._node.config
        probes = {
            p.jurisdiction: self._pool.submit(_probe, node.peer_channel_factory(p))
            for p in config.peers
        }
        out = status_pb2.GetStatusResponse(
            identity=config.identity.uri,
            jurisdiction=config.jurisdiction.value,
            version=__version__,
            ledger_size=node.ledger.size(),
            expiry_warning_days=config.server.expiry_warning_days,
            checkpoint_interval_seconds=config.server.checkpoint_interval_seconds,
            storage=node.ledger.database.dialect,
            lease_seconds=config.server.lease_seconds,
        )
        if node.started_at is not None:
            out.started_at.FromDatetime(node.started_at)
        latest = node.ledger.latest_checkpoint()
        if latest is not None:
            names = {cosigner_name(j): j.value for j in Jurisdiction}
            signed = {s.name for s in parse_note(latest.note).signatures}
            out.checkpoint.size = latest.size
            out.checkpoint.created_at.FromMilliseconds(latest.created_ms)
            out.checkpoint.cosigners.extend(v for k, v in names.items() if k in signed)
        with contextlib.closing(node.ledger.own_reader()) as conn:
            counts = store.pending_counts(conn)
            oldest = store.oldest_pending(conn, config.jurisdiction.value)
            cosigned = {
                p.jurisdiction: store.witnessed_size(conn, cosigner_name(p.jurisdiction))
                for p in config.peers
            }
            if node.lease_keeper is not None:
                self._leases(out, read_leases(conn))
        for peer in config.peers:
            j = peer.jurisdiction.value
            deliverer = node.deliverers.get(peer.jurisdiction)
            probe = probes[peer.jurisdiction].result()
            row = out.peers.add(
                jurisdiction=j,
                address=peer.target(),
                reachable=probe.reachable,
                probe_error=probe.error,
                queued=counts.get((j, store.QUEUED), 0),
                failing=counts.get((j, store.FAILING), 0),
                cosigned_size=cosigned[peer.jurisdiction],
            )
            if j in oldest:
                row.oldest_pending.FromMilliseconds(oldest[j])
            if deliverer is not None:
                row.consecutive_failures = deliverer.failures
                row.last_error = deliverer.last_error
                if deliverer.last_success is not None:
                    row.last_success.FromMilliseconds(int(deliverer.last_success * 1000))
                if deliverer.last_failure is not None:
                    row.last_failure.FromMilliseconds(int(deliverer.last_failure * 1000))
        material = node.tls.material
        out.certificates.append(
            _certificate(
                "tls",
                config.identity.uri,
                material.certificate,
            )
        )
        out.certificates.append(
            _certificate("signing", config.identity.uri, node.signer.certificate)
        )
        for j, root in material.bundle:
            out.certificates.append(_certificate(f"{j} root", root.subject.rfc4514_string(), root))
        for verified in node.authenticator.crls:
            crl = verified.crl
            item = out.crls.add(
                issuer=verified.jurisdiction.value,
                number=verified.number or 0,
                revoked=len(verified.revoked_serials()),
            )
            item.this_update.FromDatetime(crl.last_update_utc)
            if crl.next_update_utc is not None:
                item.next_update.FromDatetime(crl.next_update_utc)
        out.now.FromDatetime(dt.datetime.now(dt.UTC))
        return out

    def _leases(self, out: status_pb2.GetStatusResponse, rows: list[LeaseRow]) -> None:
        """Each singleton's lease as the database has it (replicas on PostgreSQL only)."""
        keeper = self._node.lease_keeper
        assert keeper is not None
        out.replica = keeper.holder
        stored = {row.name: row for row in rows}
        for name in sorted(self._node.singletons()):
            item = out.leases.add(name=name)
            row = stored.get(name)
            if row is None:  # never taken by any replica
                continue
            item.holder, item.epoch = row.holder, row.epoch
            item.acquired_at.FromMilliseconds(row.acquired_ms)
            item.expires_in_seconds = row.expires_in_seconds
            item.here = row.holder == keeper.holder and row.expires_in_seconds > 0

    def close(self) -> None:
        """Stop the probe threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
