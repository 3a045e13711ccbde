"""Prometheus metrics over HTTPS with client certificates (ADR 0008).

Nothing of the node listens in plaintext, so the metrics endpoint is HTTPS with the node's own
TLS certificate, and the scraper must present a certificate of its own: one that chains to a
root of the trust bundle, passes the same checks as a gRPC caller (SPIFFE identity, name
constraints, validity, CRLs) and is allowed by the authorization table: a ``monitor`` of this
node's jurisdiction (:data:`gateway.pki.policy.METRICS_METHOD`).

Two kinds of metric:

- counted as they happen, by the error interceptor: every RPC by method and status code, and
  the duration of unary RPCs;
- read when scraped, from the node's own state: ledger size and last checkpoint, undelivered
  outbox rows per peer, each deliverer's run of failures, certificate expiry, inconsistent
  checkpoints refused as a witness (kept as evidence).
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.errors import GatewayError, UnavailableError
from gateway.pki.access import Authenticator
from gateway.pki.identity import Jurisdiction
from gateway.pki.policy import METRICS_METHOD, authorize
from gateway.transport import AEAD_CIPHERS, TlsMaterial

__all__ = ["MetricsServer", "NodeMetrics", "NodeState", "server_context"]

log = logging.getLogger("gateway.server.metrics")

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class NodeState:
    """What the node reports at each scrape (each callable is cheap and thread-safe)."""

    ledger_size: Callable[[], int]
    checkpoint_size: Callable[[], int | None]
    pending: Callable[[], dict[tuple[str, str], int]]  # (peer, state) -> undelivered rows
    failures: Callable[[], dict[str, int]]  # peer -> consecutive failed attempts
    not_after: Callable[[], dict[str, float]]  # certificate -> expiry, Unix seconds
    # certificate -> (serial, not-after ISO 8601) of the certificates in use (not on disk)
    in_use: Callable[[], dict[str, tuple[str, str]]] | None = None
    # (origin, problem) -> inconsistent checkpoints refused as a witness, kept as evidence
    witness_evidence: Callable[[], dict[tuple[str, str], int]] = dict
    # budget -> (slots in use, capacity) of the node's limits (ADR 0023), if reported
    limits: Callable[[], dict[str, tuple[int, int]]] | None = None
    storage_ok: Callable[[], bool] | None = None  # can the ledger commit (the storage probe)
    crl_refusals: Callable[[], dict[str, int]] = dict  # reason -> CRL files refused
    crl_numbers: Callable[[], dict[str, int]] = dict  # issuing root -> CRL number in force
    # singleton -> whether this replica holds its lease (replicas on PostgreSQL, ADR 0072)
    leases: Callable[[], dict[str, bool]] = dict


class _StateCollector(Collector):
    def __init__(self, state: NodeState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        s = self._state
        yield GaugeMetricFamily(
            "gateway_ledger_entries", "Durable entries in the ledger.", value=s.ledger_size()
        )
        checkpoint = s.checkpoint_size()
        if checkpoint is not None:
            yield GaugeMetricFamily(
                "gateway_ledger_checkpoint_size",
                "Tree size of the latest signed checkpoint.",
                value=checkpoint,
            )
        pending = GaugeMetricFamily(
            "gateway_outbox_pending",
            "Outbox rows not yet delivered, by peer and state (queued, failing).",
            labels=["peer", "state"],
        )
        for (peer, state), count in sorted(s.pending().items()):
            pending.add_metric([peer, state], count)
        yield pending
        failures = GaugeMetricFamily(
            "gateway_delivery_consecutive_failures",
            "Failed delivery attempts to a peer since its last success.",
            labels=["peer"],
        )
        for peer, count in sorted(s.failures().items()):
            failures.add_metric([peer], count)
        yield failures
        expiry = GaugeMetricFamily(
            "gateway_certificate_not_after_timestamp_seconds",
            "When the node's certificates expire (Unix time).",
            labels=["certificate"],
        )
        for name, when in sorted(s.not_after().items()):
            expiry.add_metric([name], when)
        yield expiry
        if s.in_use is not None:
            info = GaugeMetricFamily(
                "gateway_certificate_in_use_info",
                "The certificates the node uses now (1 per certificate), by serial.",
                labels=["certificate", "serial", "not_after"],
            )
            for name, (serial, not_after) in sorted(s.in_use().items()):
                info.add_metric([name, serial, not_after], 1)
            yield info
        refused = GaugeMetricFamily(
            "gateway_witness_inconsistent_checkpoints",
            "Checkpoints a peer presented that were inconsistent with the one this node had "
            "cosigned (problem: fork or rollback), refused and kept as evidence.",
            labels=["origin", "problem"],
        )
        for (origin, problem), count in sorted(s.witness_evidence().items()):
            refused.add_metric([origin, problem], count)
        yield refused
        if s.limits is not None:
            in_use = GaugeMetricFamily(
                "gateway_limit_in_use",
                "Calls or streams admitted now, by budget of the node's [limits].",
                labels=["budget"],
            )
            capacity = GaugeMetricFamily(
                "gateway_limit_capacity", "The size of each budget.", labels=["budget"]
            )
            for budget, (used, size) in sorted(s.limits().items()):
                in_use.add_metric([budget], used)
                capacity.add_metric([budget], size)
            yield in_use
            yield capacity
        if s.storage_ok is not None:
            yield GaugeMetricFamily(
                "gateway_storage_writable",
                "1 while the ledger can commit (health SERVING), 0 while it cannot.",
                value=1 if s.storage_ok() else 0,
            )
        refusals = CounterMetricFamily(
            "gateway_crl_refusals",
            "Configured CRL files refused since start, by reason (missing, unreadable, "
            "unsigned, no-number, wrong-issuer, older); the CRL in force stays (ADR 0024).",
            labels=["reason"],
        )
        for reason, count in sorted(s.crl_refusals().items()):
            refusals.add_metric([reason], count)
        yield refusals
        numbers = GaugeMetricFamily(
            "gateway_crl_number",
            "CRL number in force per issuing root (jurisdiction and key id).",
            labels=["issuer"],
        )
        for issuer, number in sorted(s.crl_numbers().items()):
            numbers.add_metric([issuer], number)
        yield numbers
        leases = s.leases()
        if leases:
            held = GaugeMetricFamily(
                "gateway_lease_held",
                "1 for each singleton this replica runs now under its lease, 0 for those another "
                "replica runs (replicas on PostgreSQL, ADR 0072).",
                labels=["lease"],
            )
            for name, is_held in sorted(leases.items()):
                held.add_metric([name], 1 if is_held else 0)
            yield held


class NodeMetrics:
    """One node's metrics, in a registry of its own (several nodes may share a process)."""

    def __init__(self, state: NodeState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._calls = Counter(
            "gateway_rpc_requests",
            "RPCs served, by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "gateway_rpc_duration_seconds",
            "Time to answer unary RPCs, by method.",
            ["method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._bulk = Counter(
            "gateway_bulk_entries",
            "Entries of bulk calls (PublishWatchlistEntries, RevokeWatchlistEntries), by method "
            "and outcome (accepted, duplicate, refused).",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(state))
        # The labelled children, looked up once: ``labels()`` takes a lock and builds a key on
        # every call (about 7 µs of the 9 µs an observation cost). Both stay small: only the
        # node's own methods are observed (unknown ones never reach a handler), and a method
        # ends with one of gRPC's 17 codes.
        self._call_children: dict[tuple[str, str], Counter] = {}
        self._second_children: dict[str, Histogram] = {}

    def observe_bulk(self, method: str, accepted: int, duplicates: int, refused: int) -> None:
        """Count the entries of one bulk call by outcome."""
        for outcome, count in (
            ("accepted", accepted),
            ("duplicate", duplicates),
            ("refused", refused),
        ):
            if count:
                self._bulk.labels(method, outcome).inc(count)

    def observe(self, method: str, code: str, seconds: float | None) -> None:
        """Count one RPC; ``seconds`` for unary calls (streams last as long as the client
        wants, so their duration says nothing)."""
        key = (method, code)
        calls = self._call_children.get(key)
        if calls is None:  # two threads may both get here: labels() gives both the same child
            calls = self._call_children[key] = self._calls.labels(method, code)
        calls.inc()
        if seconds is not None:
            histogram = self._second_children.get(method)
            if histogram is None:
                histogram = self._second_children[method] = self._seconds.labels(method)
            histogram.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


_MAX_REQUESTS = 16  # authenticated connections served at once; more are closed at once
_MAX_HANDSHAKES = 64  # connections still in their TLS handshake; a new one evicts the oldest
_HANDSHAKE_DEADLINE = 3.0  # seconds for the whole handshake, however slowly its bytes come
_IO_TIMEOUT = 5.0  # seconds per read or write after the handshake
_DEADLINE = 15.0  # seconds a connection may last in all, however slowly its bytes come


class _Handshakes:
    """The connections still in their TLS handshake, oldest first (ADR 0008, 0025).

    A connection without a certificate costs nothing to open, so these have a budget of their
    own, apart from the authenticated requests: at most :data:`_MAX_HANDSHAKES` at once, each
    for at most :data:`_HANDSHAKE_DEADLINE`, and when the budget is full the newest connection
    evicts the oldest. Idle sockets therefore cannot take the slots a monitor needs: a monitor's
    handshake takes milliseconds, an attacker's sockets are pushed out by newer ones.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._pending: dict[int, socket.socket] = {}  # insertion order is age
        self._next = 0  # connections that began a handshake, since start
        self.evicted = 0  # connections closed to make room, since start

    def add(self, sock: socket.socket) -> int:
        """Register ``sock``; returns its ticket (evicting the oldest when full)."""
        oldest: socket.socket | None = None
        with self._lock:
            if len(self._pending) >= self._limit:
                ticket = next(iter(self._pending))
                oldest = self._pending.pop(ticket)
                self.evicted += 1
            self._next += 1
            self._pending[self._next] = sock
            ticket = self._next
        if oldest is not None:
            with contextlib.suppress(OSError):
                oldest.shutdown(socket.SHUT_RDWR)  # its thread's handshake fails at once
        return ticket

    def done(self, ticket: int) -> None:
        """The handshake of ``ticket`` ended (either way)."""
        with self._lock:
            self._pending.pop(ticket, None)

    @property
    def begun(self) -> int:
        """Connections that began a handshake since start."""
        with self._lock:
            return self._next

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


class _Handler(http.server.BaseHTTPRequestHandler):
    """One request per connection (``Connection: close``), in a thread of its own."""

    server: _HttpsServer
    protocol_version = "HTTP/1.1"
    timeout = _IO_TIMEOUT

    def setup(self) -> None:
        # The TLS handshake runs here, in this connection's thread, within its own budget
        # (_Handshakes): at most _HANDSHAKE_DEADLINE, or less if newer connections evict it.
        # Only then does the connection take one of the _MAX_REQUESTS slots; it is closed at
        # _DEADLINE whatever it is doing (a byte every few seconds).
        self._slot = False
        self._deadline = threading.Timer(_DEADLINE, self._expire)
        self._deadline.daemon = True
        self._deadline.start()
        ticket = self.server.handshakes.add(self.request)
        handshake_timer = threading.Timer(_HANDSHAKE_DEADLINE, self._expire)
        handshake_timer.daemon = True
        handshake_timer.start()
        try:
            try:
                self.request.settimeout(_HANDSHAKE_DEADLINE)
                self.request.do_handshake()
            finally:
                handshake_timer.cancel()
                self.server.handshakes.done(ticket)
            if not self.server.take_slot(self.client_address):
                raise ConnectionRefusedError("too many metrics requests at once")
            self._slot = True
            self.request.settimeout(_IO_TIMEOUT)
            super().setup()
        except BaseException:
            self._deadline.cancel()  # finish() does not run when setup fails
            if self._slot:
                self.server.release_slot()
            raise

    def _expire(self) -> None:
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        try:
            super().finish()
        finally:
            if self._slot:
                self.server.release_slot()

    def do_GET(self) -> None:
        refusal = self.server.refusal(self.connection)
        if refusal is not None:
            self._reply(403, f"{refusal}\n".encode(), "text/plain; charset=utf-8")
        elif self.path.split("?", 1)[0] != "/metrics":
            self._reply(404, b"only /metrics is served here\n", "text/plain; charset=utf-8")
        else:
            self._reply(200, self.server.metrics.render(), _CONTENT_TYPE)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics %s: " + format, self.client_address[0], *args)


class _HttpsServer(http.server.ThreadingHTTPServer):
    """A thread per connection: at most :data:`_MAX_HANDSHAKES` in their handshake (the oldest
    evicted by the newest) and :data:`_MAX_REQUESTS` authenticated ones: a client that stalls
    cannot keep a monitor from scraping or the node from stopping."""

    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 would let a burst of idle connections fill the
    # kernel's accept queue, and a monitor's SYN would wait for retransmission (1 s, 3 s...).
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        context: Callable[[], ssl.SSLContext],
        authenticator: Authenticator,
        jurisdiction: Jurisdiction,
        metrics: NodeMetrics,
    ) -> None:
        super().__init__(address, _Handler)
        self._context = context
        self._authenticator = authenticator
        self._jurisdiction = jurisdiction
        self._slots = threading.BoundedSemaphore(_MAX_REQUESTS)
        self.handshakes = _Handshakes(_MAX_HANDSHAKES)
        self.metrics = metrics

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        try:
            # The context of this moment: a reloaded certificate or bundle applies to the
            # next connection. The handshake itself happens in the connection's thread.
            wrapped = self._context().wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        except Exception as exc:  # never let one connection end the serving loop
            sock.close()
            log.error("metrics connection from %s not set up: %s", address, exc)
            raise OSError(str(exc)) from exc  # socketserver drops the request
        return wrapped, address

    def take_slot(self, client_address: object) -> bool:
        """Take one of the request slots for a connection past its handshake, or say no."""
        if self._slots.acquire(blocking=False):
            return True
        log.warning("metrics: too many requests at once; closing one from %s", client_address)
        return False

    def release_slot(self) -> None:
        """Give a request slot back."""
        self._slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        # A failed handshake (no certificate, plain HTTP, a stall) or a client gone mid-answer:
        # one line in the log, never a traceback.
        log.info("metrics connection from %s ended without an answer", client_address)

    def refusal(self, connection: socket.socket) -> str | None:
        """Why the peer of ``connection`` may not read metrics, or None."""
        assert isinstance(connection, ssl.SSLSocket)
        der = connection.getpeercert(binary_form=True)
        if der is None:
            return "a client certificate is required"
        try:
            principal = self._authenticator.authenticate(ssl.DER_cert_to_PEM_cert(der).encode())
            authorize(METRICS_METHOD, principal, self._jurisdiction)
        except GatewayError as exc:
            log.warning(
                "refused metrics scrape: %s", exc, extra={"event": "refused", "method": "metrics"}
            )
            return str(exc)
        return None


class MetricsServer:
    """Serves ``GET /metrics`` over HTTPS, client certificates required, in a thread."""

    def __init__(
        self,
        listen: str,
        context: Callable[[], ssl.SSLContext],
        authenticator: Authenticator,
        jurisdiction: Jurisdiction,
        metrics: NodeMetrics,
    ) -> None:
        host, _, port = listen.rpartition(":")
        try:
            self._server = _HttpsServer(
                (host.strip("[]"), int(port)), context, authenticator, jurisdiction, metrics
            )
        except OSError as exc:
            raise UnavailableError(
                f"cannot listen for metrics on {listen}: {exc.strerror or exc}"
            ) from None
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    @property
    def handshakes(self) -> tuple[int, int, int]:
        """(connections that began a TLS handshake since start, those in it now, those evicted
        since start to make room)."""
        pending = self._server.handshakes
        return pending.begun, len(pending), pending.evicted

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def server_context(material: TlsMaterial) -> ssl.SSLContext:
    """A TLS 1.2+ server context with the node's certificate and key that requires a client
    certificate chained to a root of the trust bundle (the finer checks follow per request).
    Only AEAD suites with forward secrecy, as on the gRPC port (ADR 0025)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(AEAD_CIPHERS)  # TLS 1.2: ECDHE with AES-GCM or ChaCha20 only
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=material.bundle.pem().decode())
    certificate, key = material.certificate_chain, material.private_key
    # ssl loads a certificate and key only from files: write them to a private temporary
    # directory for the moment of loading.
    with tempfile.TemporaryDirectory(prefix="cgw-tls-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, data in ((cert_path, certificate), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        context.load_cert_chain(cert_path, key_path)
    return context
