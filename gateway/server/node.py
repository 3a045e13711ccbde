"""A gateway node: one gRPC server, mutual TLS only, with health, reflection and access control.

Lifecycle: :meth:`Node.start` binds the port (0 picks a free one) and marks every service
SERVING; :meth:`Node.stop` first marks them NOT_SERVING (load balancers and peers stop sending),
then lets in-flight calls finish within the grace period and closes the storage.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from customs.gateway.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    partner_pb2,
    partner_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
)
from gateway.errors import UnavailableError
from gateway.pki.access import Authenticator
from gateway.server.config import NodeConfig
from gateway.server.interceptors import AccessInterceptor, ErrorInterceptor
from gateway.transport import ServerTls, TlsMaterial

__all__ = ["SERVICE_NAMES", "Node"]

log = logging.getLogger("gateway.server")

SERVICE_NAMES = (
    partner_pb2.DESCRIPTOR.services_by_name["PartnerGateway"].full_name,
    peer_pb2.DESCRIPTOR.services_by_name["PeerExchange"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["LedgerAudit"].full_name,
)


class Node:
    """One jurisdiction's gateway node, built from its config."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._stopped = threading.Event()
        self.tls = ServerTls(
            config.tls_certificate,
            config.tls_key,
            config.trust_bundle,
            config.crls,
            on_change=self._tls_changed,
        )
        self.authenticator = Authenticator(self.tls.material.bundle, self.tls.material.crls)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=config.server.max_workers,
                thread_name_prefix=f"{config.jurisdiction.value.lower()}-rpc",
            ),
            interceptors=[
                ErrorInterceptor(),
                AccessInterceptor(self.authenticator, config.jurisdiction),
            ],
            options=[("grpc.so_reuseport", 0)],
        )
        self._register()
        self.port = 0

    def _tls_changed(self, material: TlsMaterial) -> None:
        self.authenticator.update(material.bundle, material.crls)

    def _register(self) -> None:
        partner_pb2_grpc.add_PartnerGatewayServicer_to_server(
            partner_pb2_grpc.PartnerGatewayServicer(), self._server
        )
        peer_pb2_grpc.add_PeerExchangeServicer_to_server(
            peer_pb2_grpc.PeerExchangeServicer(), self._server
        )
        audit_pb2_grpc.add_LedgerAuditServicer_to_server(
            audit_pb2_grpc.LedgerAuditServicer(), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )

    @property
    def address(self) -> str:
        """``host:port`` the node listens on (after :meth:`start`)."""
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def start(self) -> int:
        """Bind and start serving over mutual TLS; return the bound port."""
        try:
            self.port = self._server.add_secure_port(self.config.listen, self.tls.credentials())
        except RuntimeError as exc:
            raise UnavailableError(f"cannot listen on {self.config.listen}: {exc}") from exc
        if self.port == 0:
            raise UnavailableError(f"cannot listen on {self.config.listen}")
        self._server.start()
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "node %s listening on %s",
            self.config.identity.uri,
            self.address,
            extra={"event": "started", "address": self.address},
        )
        return self.port

    def stop(self, grace: float | None = None) -> None:
        """Stop gracefully: NOT_SERVING first, then finish in-flight calls within ``grace``."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.server.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        log.info("node %s stopped", self.config.identity.uri, extra={"event": "stopped"})

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server terminates; True if it did."""
        return bool(self._server.wait_for_termination(timeout))

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
