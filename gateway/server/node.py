"""A gateway node: one gRPC server, mutual TLS only, with health, reflection and access control,
around the ledger, the exchange, delivery to peers and witnessing.

Lifecycle: :meth:`Node.start` binds the port (0 picks a free one), starts the background
workers and marks every service SERVING; :meth:`Node.stop` first marks them NOT_SERVING (peers
and load balancers stop sending), ends inbound streams, lets in-flight calls finish within the
grace period, stops the workers and closes the ledger.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import logging
import os
import queue
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from customs.gateway.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    partner_pb2,
    partner_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)
from gateway.envelope import Signer
from gateway.errors import GatewayError, UnavailableError
from gateway.exchange import _store as exchange_store
from gateway.exchange.core import Exchange
from gateway.exchange.delivery import Backoff, Deliverer
from gateway.exchange.watchlists import WATCHLIST_KINDS, Watchlists
from gateway.exchange.witness import WITNESS_HEALTH_SERVICE, WitnessClient, ledger_origin
from gateway.ledger import Checkpointer, Ledger
from gateway.notes import NoteSigner
from gateway.pki.access import Authenticator
from gateway.pki.bundle import TrustBundle
from gateway.pki.expiry import certificate_serial, expiry_warnings
from gateway.pki.identity import IdentityError, SpiffeId
from gateway.pki.pem import load_certificate, load_private_key
from gateway.pki.revocation import key_id
from gateway.server.config import LISTEN_ADDRESS_FILE, ConfigError, NodeConfig, PeerConfig
from gateway.server.health import StorageProbe
from gateway.server.interceptors import AccessInterceptor, ErrorInterceptor, current_stream
from gateway.server.limits import Budget, Limiter
from gateway.server.metrics import MetricsServer, NodeMetrics, NodeState, server_context
from gateway.server.revocation_store import LedgerRevocationStore
from gateway.server.revocation_store import create_schema as create_revocation_schema
from gateway.server.services import AuditService, PartnerService, PeerService
from gateway.server.services.status import StatusService
from gateway.server.signing import SigningMaterial
from gateway.server.startup import DataDirectory, StartupError, check_own_certificate
from gateway.store import (
    Connection,
    Database,
    StoreError,
    database_errors,
    ensure_schema,
    open_database,
)
from gateway.store.leases import ALWAYS_HELD, Lease
from gateway.transport import ClientIdentity, ServerTls, TlsMaterial, secure_channel

if TYPE_CHECKING:  # psycopg is imported only by a node on PostgreSQL
    import psycopg

    from gateway.store.leases import LeaseKeeper
    from gateway.store.notify import Listener

__all__ = [
    "CERTIFICATES_IN_USE_KEY",
    "CERTIFICATE_WARNINGS_KEY",
    "LISTEN_ADDRESS_FILE",
    "SERVICE_NAMES",
    "STORAGE_KEY",
    "Node",
]

log = logging.getLogger("gateway.server")

SERVICE_NAMES = (
    partner_pb2.DESCRIPTOR.services_by_name["PartnerGateway"].full_name,
    peer_pb2.DESCRIPTOR.services_by_name["PeerExchange"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["LedgerAudit"].full_name,
    status_pb2.DESCRIPTOR.services_by_name["NodeStatus"].full_name,
)


CERTIFICATE_WARNINGS_KEY = "certificate-warnings"
CERTIFICATES_IN_USE_KEY = "certificates-in-use"
WITNESS_EVIDENCE_KEY = "witness-evidence"
STORAGE_KEY = "storage"
_WATCH_TICK = 1.0  # seconds an idle Health/Watch stream sleeps between guard checks


class _HealthWithCertificates(health.HealthServicer):  # type: ignore[misc]
    """Standard health checking; ``Check`` also returns the node's certificate warnings in the
    trailing metadata ``certificate-warnings`` (``none`` when all is well), and why the ledger
    cannot commit in ``storage`` (``ok`` when it can), so an operator's probe sees them without
    a new RPC."""

    def __init__(self, node: Node) -> None:
        super().__init__(experimental_non_blocking=False)  # our Watch is a generator
        self._node = node

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        warnings = self._node.certificate_warnings()
        text = " | ".join(warnings) if warnings else "none"
        in_use = "; ".join(
            f"{name} serial={serial} not-after={not_after}"
            for name, (serial, not_after) in self._node.certificates_in_use().items()
        )
        storage = self._node.storage.last_problem or "ok"
        metadata = [
            (CERTIFICATE_WARNINGS_KEY, text.encode("ascii", "replace").decode()),
            (STORAGE_KEY, storage.encode("ascii", "replace").decode()),
            (CERTIFICATES_IN_USE_KEY, in_use),
        ]
        if request.service != WITNESS_HEALTH_SERVICE:
            context.set_trailing_metadata(tuple(metadata))
            return super().Check(request, context)
        # The witness: NOT_SERVING while it holds evidence of a peer's inconsistent checkpoint
        # (read from the database, so it survives restarts); the trailing metadata says which.
        evidence = self._node.witness_evidence()
        text = " | ".join(evidence) if evidence else "none"
        metadata.append((WITNESS_EVIDENCE_KEY, text.encode("ascii", "replace").decode()))
        context.set_trailing_metadata(tuple(metadata))
        overall = super().Check(health_pb2.HealthCheckRequest(service=""), context)
        if evidence or overall.status != health_pb2.HealthCheckResponse.SERVING:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return overall

    def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: Any = None,
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        """The standard Watch, except that an idle stream wakes every ``_WATCH_TICK`` seconds
        to let its :class:`StreamGuard` end it (revoked caller, lifetime over); grpc's own
        watcher sleeps until the status changes, however long that takes."""
        changes: queue.SimpleQueue[health_pb2.HealthCheckResponse | None] = queue.SimpleQueue()
        super().Watch(request, context, send_response_callback=changes.put)
        guard = current_stream()
        while context.is_active():
            try:
                change = changes.get(timeout=_WATCH_TICK)
            except queue.Empty:
                guard.check()
                continue
            if change is None:  # the call ended (grpc's close callback)
                return
            yield change

    def set_serving(self, serving: bool) -> None:
        """Mark the node and each of its services SERVING or NOT_SERVING."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            self.set(name, status)


class Node:
    """One jurisdiction's gateway node, built from its config."""

    def __init__(
        self, config: NodeConfig, *, clock: Callable[[], dt.datetime] | None = None
    ) -> None:
        """Check and lock the data directory, then load everything the node needs;
        ``clock`` (tests) replaces the wall clock of the exchange and the watchlist view.

        Raises:
            GatewayError: one line naming the file or config key that keeps the node from
                starting (ADR 0025); nothing is left locked or open.
        """
        self.config = config
        self._clock = clock
        self._stopped = threading.Event()
        # Start-up checks first (ADR 0025): one node per data directory, private files.
        self.data_dir = DataDirectory(config.data_dir, create_ledger=config.storage.url is None)
        try:
            self._start_up(config)
        except BaseException:
            ledger: Ledger | None = getattr(self, "ledger", None)
            if ledger is not None:
                ledger.close()
            watchlists: Watchlists | None = getattr(self, "watchlists", None)
            if watchlists is not None:
                watchlists.close()
            self.data_dir.release()
            raise

    def _start_up(self, config: NodeConfig) -> None:
        self.started_at: dt.datetime | None = None
        # The signing pair follows its files (ADR 0063); a reloaded one is checked as at start.
        self.signing = SigningMaterial(
            config.signing_certificate,
            config.signing_key,
            self._read_signer,
            on_change=self._signer_changed,
        )
        origin = ledger_origin(config.jurisdiction)
        self.database = _open_database(config, self.data_dir.ledger)
        self.ledger = _open_ledger(self.database, origin, self.signer)
        self.tls = ServerTls(
            config.tls_certificate,
            config.tls_key,
            config.trust_bundle,
            config.crls,
            on_change=self._tls_changed,
            store=LedgerRevocationStore(self.ledger),
            check=functools.partial(
                check_own_certificate,
                expected=config.identity,
                usage="server",
                what=f"TLS certificate {config.tls_certificate}",
            ),
        )
        material = self.tls.material
        self._check_signer(self.signer)
        self.authenticator = Authenticator(material.bundle, material.crls)
        self.limits = config.resolved_limits
        self.limiter = Limiter(self.limits)
        self.storage = StorageProbe(self.ledger, config.data_dir, self._storage_changed)
        self.exchange = Exchange(
            jurisdiction=config.jurisdiction,
            ledger=self.ledger,
            signer=self.signer,
            trust=self._trust,
            **({} if self._clock is None else {"clock": self._clock}),
        )
        self.watchlists = Watchlists(
            self.signer,
            self.exchange.now,
            # On PostgreSQL the view's tables are in the node's database: one view for replicas.
            config.data_dir / "watchlist-view.db" if config.storage.url is None else self.database,
            reader=self.ledger.reader,
            ledger_size=self.ledger.size(),
            # Applied after the answer, queries wait for it (ADR 0059); not where replicas
            # share the view: another replica's query would not wait for this one's queue.
            deferred=config.storage.url is None,
        )
        self.exchange.on_payloads(self.watchlists.apply_many)
        self.exchange.on_erased(self.watchlists.erased)
        self.exchange.keep_own_certificate()
        self.exchange.replay(WATCHLIST_KINDS)
        self.watchlists.reconcile(self.exchange.still_stored)
        self.stopping = threading.Event()
        # The singletons run on one replica at a time, under leases in the database (ADR 0072);
        # a node on SQLite is its only process and holds them all.
        self.lease_keeper, self.listener = self._replicas(config)
        interval = config.server.checkpoint_interval_seconds
        self.checkpointer = Checkpointer(
            self.ledger, interval=interval, lease=self.lease("checkpointer")
        )
        delivery = config.delivery
        self.deliverers = {
            p.jurisdiction: Deliverer(
                self.exchange,
                p.jurisdiction,
                self._channel_factory(p),
                backoff=Backoff(delivery.retry_base_seconds, delivery.retry_cap_seconds),
                summary_interval=delivery.failure_summary_seconds,
                lease=self.lease(f"deliver-{p.jurisdiction.value}"),
            )
            for p in config.peers
        }
        if self.listener is not None:  # another replica's submit may have filled the outbox
            # As a local submit does (ADR 0074): a deliverer backing off is not woken. Every
            # commit notifies, this replica's own too, and a woken deliverer rereads the head
            # of its backlog: a wake per commit cost a fifth of one replica's CPU under load.
            peers = [p.value for p in self.deliverers]
            self.listener.add(functools.partial(self.exchange.tell_outbox, peers))
        self.witness_client = WitnessClient(
            self.exchange,
            {p.jurisdiction: self._channel_factory(p) for p in config.peers},
            interval=interval,
            summary_interval=config.delivery.failure_summary_seconds,
            lease=self.lease("witness-client"),
        )
        self.health = _HealthWithCertificates(self)
        self.metrics = NodeMetrics(
            NodeState(
                ledger_size=self.ledger.size,
                checkpoint_size=self.ledger.checkpoint_size,
                pending=self._pending,
                failures=lambda: {p.value: d.failures for p, d in self.deliverers.items()},
                not_after=self._not_after,
                witness_evidence=lambda: exchange_store.evidence_counts(self.ledger.reader()),
                limits=self._limits_in_use,
                storage_ok=lambda: self.storage.last_problem is None,
                crl_refusals=self.tls.refusal_counts,
                crl_numbers=self._crl_numbers,
                in_use=self.certificates_in_use,
                leases=self._leases_held,
            )
        )
        self._metrics_tls: tuple[TlsMaterial, ssl.SSLContext] | None = None
        self.metrics_server = (
            MetricsServer(
                config.metrics_listen,
                self._metrics_context,
                self.authenticator,
                config.jurisdiction,
                self.metrics,
            )
            if config.metrics_listen is not None
            else None
        )
        self._warned: tuple[str, ...] = ()
        prefix = config.jurisdiction.value.lower()
        self._housekeeping = [
            _Periodic(f"{prefix}-tls", config.server.tls_reload_seconds, self._watch_tls),
            _Periodic(
                f"{prefix}-retention",
                config.server.retention_sweep_seconds,
                self._sweep_retention,
            ),
        ]
        # The reserve (Health/Check, PeerExchange) runs on threads of its own (ADR 0023).
        self._reserve = futures.ThreadPoolExecutor(
            max_workers=self.limits.reserved_calls, thread_name_prefix=f"{prefix}-reserve"
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=config.server.max_workers - self.limits.reserved_calls,
                thread_name_prefix=f"{prefix}-rpc",
            ),
            interceptors=[
                # Counted only when someone can read the counts: no work on every call else.
                ErrorInterceptor(self.metrics.observe if self.metrics_server else None),
                AccessInterceptor(
                    self.authenticator, config.jurisdiction, self.limiter, self._reserve
                ),
            ],
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", self.limits.max_request_bytes),
                ("grpc.max_send_message_length", self.limits.max_response_bytes),
            ],
            # Refused with RESOURCE_EXHAUSTED on grpcio's polling thread, before any worker
            # thread is taken: the only check grpcio's sync server makes that early (ADR 0023).
            maximum_concurrent_rpcs=config.server.max_workers + self.limits.backlog,
        )
        self._housekeeping.append(
            _Periodic(f"{prefix}-storage", self.limits.storage_probe_seconds, self.storage.run)
        )
        self._register()
        self.port = 0

    def _replicas(self, config: NodeConfig) -> tuple[LeaseKeeper | None, Listener | None]:
        """On a PostgreSQL database that replicas of this node share (ADR 0073): the keeper of
        this replica's leases and the listener that wakes its partner streams when another
        replica commits. None and None on SQLite (one process per node)."""
        database = self.ledger.database
        url = database.url
        if database.dialect != "postgresql" or url is None:
            return None, None
        import psycopg

        from gateway.store.leases import LeaseKeeper
        from gateway.store.notify import Listener

        def connect() -> psycopg.Connection[Any]:
            return psycopg.connect(url, connect_timeout=5)

        keeper = LeaseKeeper(connect, self.singletons(), ttl=config.server.lease_seconds)
        return keeper, Listener(connect, [self.exchange.wake_followers])

    def lease(self, name: str) -> Lease:
        """The lease of singleton ``name`` (``checkpointer``, ``witness-client``,
        ``retention``, ``deliver-<CC>``): always held unless replicas share the database."""
        if self.lease_keeper is None:
            return ALWAYS_HELD
        return self.lease_keeper.lease(name)

    def _leases_held(self) -> dict[str, bool]:
        """Each singleton's lease and whether this replica holds it; empty on SQLite."""
        if self.lease_keeper is None:
            return {}
        return {name: lease.held() for name, lease in self.lease_keeper.leases.items()}

    def singletons(self) -> list[str]:
        """The names of the leases this node's singletons run under (ADR 0072)."""
        peers = [f"deliver-{p.jurisdiction.value}" for p in self.config.peers]
        return ["checkpointer", "witness-client", "retention", *peers]

    def _sweep_retention(self) -> None:
        """Erase what is past its retention, on the replica holding the retention lease (an
        erasure made twice is refused by the database: the payload is gone)."""
        if self.lease("retention").held():
            self.exchange.erase_expired()

    def _pending(self) -> dict[tuple[str, str], int]:
        names = {exchange_store.QUEUED: "queued", exchange_store.FAILING: "failing"}
        with contextlib.closing(self.ledger.own_reader()) as conn:  # scrapes come on new threads
            counts = exchange_store.pending_counts(conn)
        return {(peer, names[state]): n for (peer, state), n in counts.items()}

    def _limits_in_use(self) -> dict[str, tuple[int, int]]:
        used = self.limiter.in_use()
        return {
            budget.value: (used[budget.value], self.limits.capacity(budget)) for budget in Budget
        }

    def _crl_numbers(self) -> dict[str, int]:
        return {
            f"{v.jurisdiction} {key_id(v.issuer)[:16]}": v.number
            for v in self.tls.material.verified_crls
            if v.number is not None
        }

    def _not_after(self) -> dict[str, float]:
        tls = self.tls.material.certificate
        return {
            "tls": tls.not_valid_after_utc.timestamp(),
            "signing": self.signer.certificate.not_valid_after_utc.timestamp(),
        }

    @property
    def signer(self) -> Signer:
        """The signing certificate and key in force (reloaded when the files change)."""
        return self.signing.signer

    def certificates_in_use(self) -> dict[str, tuple[str, str]]:
        """``{"tls": (serial, not-after ISO 8601), "signing": ...}`` of the certificates the
        node uses now: what health and metrics report (not the files on disk)."""
        tls = self.tls.material.certificate
        signing = self.signer.certificate
        return {
            name: (certificate_serial(c), c.not_valid_after_utc.isoformat())
            for name, c in (("tls", tls), ("signing", signing))
        }

    def _check_signer(self, signer: Signer) -> None:
        """Refuse a signing certificate that is not this node's, for signing, under a root of
        the bundle in force and not revoked (at start and at every reload)."""
        material = self.tls.material
        check_own_certificate(
            signer.certificate,
            material.bundle,
            list(material.crls),
            expected=self.config.identity,
            usage="signing",
            what=f"signing certificate {self.config.signing_certificate}",
        )

    def _read_signer(self) -> Signer:
        """The signing pair on disk (a reload is checked against the TLS material in force;
        at start that check follows once the TLS material is loaded)."""
        signer = _load_signer(self.config)
        if getattr(self, "tls", None) is not None:
            self._check_signer(signer)
        return signer

    def _signer_changed(self, signer: Signer) -> None:
        """A renewed signing pair: keep its certificate with the ledger first (auditors find
        the key of every checkpoint there), then sign with it from the next message on."""
        der = signer.certificate_der
        self.ledger.write(lambda conn: exchange_store.keep_certificate(conn, der))
        origin = ledger_origin(self.config.jurisdiction)
        self.ledger.signer = NoteSigner(origin, signer.private_key)
        self.exchange.use_signer(signer)

    def peer_channel_factory(self, peer: PeerConfig) -> Callable[[], grpc.Channel]:
        """New channels to ``peer`` with the node's own client certificate (status probes)."""
        return self._channel_factory(peer)

    def _metrics_context(self) -> ssl.SSLContext:
        """The metrics endpoint's TLS context for the TLS material in force (rebuilt after a
        reload, so a renewed certificate or a new bundle applies to the next scrape)."""
        material = self.tls.material
        if self._metrics_tls is None or self._metrics_tls[0] is not material:
            self._metrics_tls = (material, server_context(material))
        return self._metrics_tls[1]

    def _trust(self) -> tuple[TrustBundle, tuple[x509.CertificateRevocationList, ...]]:
        material = self.tls.material  # one snapshot: bundle and CRLs of the same reload
        return material.bundle, material.crls

    def _storage_changed(self, problem: str | None) -> None:
        """Health follows the storage probe: NOT_SERVING while the ledger cannot commit."""
        if self._stopped.is_set():
            return
        if problem is None:
            log.info("storage writable again: SERVING", extra={"event": "storage-ok"})
        else:
            log.error(
                "ledger cannot commit (%s): NOT_SERVING until it can",
                problem,
                extra={"event": "storage-failed"},
            )
        self.health.set_serving(problem is None)

    def _tls_changed(self, material: TlsMaterial) -> None:
        self.authenticator.update(material.bundle, material.crls)
        self._report_expiry()

    # -- certificate lifecycle: reload and expiry warnings ------------------------------------

    def witness_evidence(self) -> list[str]:
        """One line per inconsistent checkpoint a peer presented to this node as a witness,
        newest first (evidence kept for auditors); empty when none was ever seen."""
        return exchange_store.evidence_summaries(self.ledger.reader())

    def certificate_warnings(self) -> list[str]:
        """What an operator must act on: this node's TLS and signing certificates and the
        bundle's roots that expire within ``server.expiry_warning_days``, and loaded CRLs past
        their next update. Empty when all is well."""
        now = dt.datetime.now(dt.UTC)
        window = dt.timedelta(days=self.config.server.expiry_warning_days)
        material = self.tls.material
        certs: list[tuple[str, x509.Certificate]] = []
        problems: list[str] = []
        loaders: list[tuple[str, Callable[[], x509.Certificate]]] = [
            ("TLS certificate", lambda: material.certificate),
            ("signing certificate", lambda: self.signer.certificate),  # the one in use
        ]
        for label, load in loaders:
            try:
                certs.append((label, load()))
            except (ValueError, GatewayError) as exc:
                problems.append(f"{label} unreadable: {exc}")
        certs += [(f"{j} root CA", root) for j, root in material.bundle]
        warnings = [str(w) for w in expiry_warnings(certs, now, window)]
        for verified in self.authenticator.crls:
            if verified.is_stale(now):
                next_update = verified.crl.next_update_utc
                warnings.append(
                    f"{verified.jurisdiction} CRL number {verified.number} is past its next "
                    f"update {next_update.isoformat() if next_update else '?'}: publish a new one"
                )
        return problems + warnings

    def _report_expiry(self) -> None:
        warnings = self.certificate_warnings()
        # Log when the set of warnings changes (not every tick): subjects, not the countdown.
        key = tuple(w.split(" expires at ")[0].split(" expired at ")[0] for w in warnings)
        if key == self._warned:
            return
        self._warned = key
        for warning in warnings:
            log.warning("certificate warning: %s", warning, extra={"event": "certificate-warning"})

    def _watch_tls(self) -> None:
        """Pick up renewed certificates, a new bundle and new CRLs even when no new connection
        arrives (an existing connection's calls are then checked against the new CRLs)."""
        self.tls.refresh()
        if self.signing.refresh():
            self._warned = ()  # the renewed certificate's warnings (if any) are new
        self._report_expiry()

    def _channel_factory(self, peer: PeerConfig) -> Callable[[], grpc.Channel]:
        config = self.config

        def connect() -> grpc.Channel:
            identity = ClientIdentity.from_files(
                config.tls_certificate,
                config.tls_key,
                config.trust_bundle,
                server_jurisdiction=peer.jurisdiction,
            )
            return secure_channel(peer.targets(), identity, peer.identity)

        return connect

    def _register(self) -> None:
        partner_pb2_grpc.add_PartnerGatewayServicer_to_server(
            PartnerService(
                self.exchange,
                self.watchlists,
                self.stopping,
                self.limits,
                self.metrics.observe_bulk if self.metrics_server else None,
            ),
            self._server,
        )
        peer_pb2_grpc.add_PeerExchangeServicer_to_server(PeerService(self.exchange), self._server)
        audit_pb2_grpc.add_LedgerAuditServicer_to_server(
            AuditService(self.ledger, self.config.jurisdiction), self._server
        )
        self._status = StatusService(self)
        status_pb2_grpc.add_NodeStatusServicer_to_server(self._status, self._server)
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
        """Bind and start serving over mutual TLS; return the bound port.

        Raises:
            UnavailableError: the address cannot be bound; the node is then given up
                (:meth:`abandon`: ledger closed, data directory unlocked).
        """
        try:
            _refuse_if_taken(self.config.listen)
            try:
                self.port = self._server.add_secure_port(self.config.listen, self.tls.credentials())
            except RuntimeError as exc:
                raise UnavailableError(f"cannot listen on {self.config.listen}: {exc}") from exc
            if self.port == 0:
                raise UnavailableError(f"cannot listen on {self.config.listen}")
        except BaseException:
            self.abandon()
            raise
        self._server.start()
        self.started_at = dt.datetime.now(dt.UTC)
        _write_address_file(self.config.data_dir / LISTEN_ADDRESS_FILE, self.address)
        if self.lease_keeper is not None and self.listener is not None:
            self.lease_keeper.start()  # what is free now is taken before the workers start
            self.listener.start()
        self.checkpointer.start()
        for deliverer in self.deliverers.values():
            deliverer.start()
        self.witness_client.start()
        if self.metrics_server is not None:
            self.metrics_server.start()
            log.info(
                "metrics on https://%s:%d/metrics (client certificates required)",
                (self.config.metrics_listen or "").rpartition(":")[0],
                self.metrics_server.port,
                extra={"event": "metrics", "port": self.metrics_server.port},
            )
        self._report_expiry()
        for worker in self._housekeeping:
            worker.start(self._stopped)
        self.storage.run()  # SERVING only if the ledger can commit now
        log.info(
            "node %s listening on %s",
            self.config.identity.uri,
            self.address,
            extra={"event": "started", "address": self.address, "port": self.port},
        )
        if not self.config.crls:  # allowed (a PKI may publish none yet), never silent
            log.warning(
                "no CRL is configured ([tls] crls is empty): revoked certificates are admitted; "
                "list every jurisdiction's CRL to enforce revocation",
                extra={"event": "revocation-off"},
            )
        return self.port

    def stop(self, grace: float | None = None) -> None:
        """Stop gracefully: NOT_SERVING first, then finish in-flight calls within ``grace``."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.server.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        self.stopping.set()  # inbound streams end; unary calls in flight finish
        self.exchange.wake_followers()
        self._server.stop(grace).wait()
        self._status.close()
        self._reserve.shutdown(wait=False)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.witness_client.stop()
        for deliverer in self.deliverers.values():
            deliverer.stop()
        self.checkpointer.stop()
        self.checkpointer.run_once()  # the ledger's last entries are signed before it closes
        self._leave_replicas(release=True)
        self.ledger.close()
        self.watchlists.close()
        self.data_dir.release()
        log.info("node %s stopped", self.config.identity.uri, extra={"event": "stopped"})

    def abandon(self) -> None:
        """Give up a node whose :meth:`start` failed before it served: close the ledger and
        unlock the data directory (the server and workers never ran)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.metrics_server is not None:
            self.metrics_server.stop()  # its socket was bound when the node was made
        self.ledger.close()
        self.watchlists.close()
        self.data_dir.release()

    def kill(self) -> None:
        """Stop at once without a grace period or a final checkpoint, as a crash test needs."""
        self.stopping.set()
        self.exchange.wake_followers()
        self._server.stop(0).wait()
        self._status.close()
        self._reserve.shutdown(wait=False)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.witness_client.stop(0)
        for deliverer in self.deliverers.values():
            deliverer.stop(0)
        self.checkpointer.stop()
        self._leave_replicas(release=False)
        self.ledger.close()
        self.watchlists.close()
        self.data_dir.release()
        self._stopped.set()

    def _leave_replicas(self, *, release: bool) -> None:
        """Stop listening and renewing; ``release`` hands the leases to another replica at
        once (a graceful stop), else they run out after ``server.lease_seconds``."""
        if self.listener is not None:
            self.listener.stop()
        if self.lease_keeper is not None:
            self.lease_keeper.stop(release=release)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server terminates; True if it did."""
        return bool(self._server.wait_for_termination(timeout))

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _load_signer(config: NodeConfig) -> Signer:
    """The node's Ed25519 signer; its certificate must name this node and match its key."""
    cert = load_certificate(config.signing_certificate)
    key = load_private_key(config.signing_key)
    where = f"config {config.source}"
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{where}: key 'signing.key': not an Ed25519 private key")
    public = cert.public_key()
    if not isinstance(public, ed25519.Ed25519PublicKey) or public.public_bytes_raw() != (
        key.public_key().public_bytes_raw()
    ):
        raise ConfigError(f"{where}: key 'signing.key': does not match signing.certificate")
    try:
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
        identity = SpiffeId.parse(uris[0]) if len(uris) == 1 else None
    except (x509.ExtensionNotFound, IdentityError):
        identity = None
    if identity != config.identity:
        raise ConfigError(f"{where}: key 'signing.certificate': is not for {config.identity.uri}")
    return Signer(config.identity, key, cert)


def _open_database(config: NodeConfig, path: Path) -> Database:
    """The node's store (ADR 0070): the SQLite file ``path``, or the ``[storage] url``
    database, reached once now so an unreachable server is one line at start-up."""
    try:
        return open_database(config.storage.url, path)
    except StoreError as exc:
        raise StartupError(str(exc)) from None


def _open_ledger(database: Database, origin: str, signer: Signer) -> Ledger:
    """Open the node's ledger; a store it cannot use is named in one line."""
    path = database.where

    def schema(conn: Connection) -> None:
        exchange_store.create_schema(conn)
        create_revocation_schema(conn)
        if conn.dialect == "postgresql":  # replicas may share it
            from gateway.store.replicas import REPLICA_SCHEMA

            ensure_schema(conn, REPLICA_SCHEMA)

    try:
        return Ledger.open(
            database,
            origin=origin,
            signer=NoteSigner(origin, signer.private_key),
            schema=schema,
        )
    except database_errors() as exc:
        detail = " ".join(str(exc).split())  # PostgreSQL's messages span lines
        raise StartupError(f"ledger {path} cannot be opened: {detail}") from None
    except OSError as exc:
        raise StartupError(f"ledger {path} cannot be opened: {exc.strerror or exc}") from None


class _Periodic:
    """Runs ``work`` every ``interval`` seconds in a daemon thread until ``stop`` is set; a
    failure is logged and the next round runs anyway."""

    def __init__(self, name: str, interval: float, work: Callable[[], object]) -> None:
        self.name, self.interval, self.work = name, interval, work

    def start(self, stop: threading.Event) -> None:
        def loop() -> None:
            while not stop.wait(self.interval):
                try:
                    self.work()
                except Exception:
                    log.exception("%s failed; retrying in %.1f s", self.name, self.interval)

        threading.Thread(target=loop, name=self.name, daemon=True).start()


def _write_address_file(path: Path, address: str) -> None:
    """Replace ``path`` with ``address`` atomically (mode 0600): a reader sees the old or the
    new address, never half of one."""
    partial = path.with_name(f".{path.name}.partial")
    # 0600 like every file of the data directory (itself 0700): peers on the same machine run
    # as the same user.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(address + "\n")
    os.replace(partial, path)


def _refuse_if_taken(listen: str) -> None:
    """Raise if another process already listens on ``listen``, before gRPC tries: its own
    failure would first print a line of gRPC's log format on stderr, where an operator should
    see one line. Any doubt (a name to resolve, an unusual address) is left to gRPC."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's listener does
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UnavailableError(
                    f"cannot listen on {listen}: address already in use"
                ) from None
