"""Delivery: one thread per peer sends the outbox in submit order until every message has a
verified receipt in the ledger.

- Batches of up to ``batch_size`` envelopes (and ``batch_bytes`` serialized) go in one
  ``DeliverBatch`` call, so throughput is not one round trip per message; a bulk submit's
  thousand entries travel in one or two calls (ADR 0054).
- A transport failure (peer down, deadline) backs off exponentially with full jitter and retries
  the same head of the queue, so order per origin is kept.
- A peer's refusal of one envelope (bad signature, not releasable, replay) is final for that
  envelope: it is marked ``REFUSED`` and logged, and the ones after it go on.
- A receipt is verified (signer, signature, message id, digest, recipient) before its ``receipt``
  ledger entry is written; an unverifiable receipt counts as a transport failure.
- Failures are logged once per change of state (first failure, a different error, recovery)
  and, while a peer stays down, in one summary line every ``summary_interval`` seconds: an idle
  node with a peer down writes a few lines an hour, not one per retry.
- Receipts are saved while the next batch is on its way: their ledger entries are queued, and
  the next batch starts after the rows whose outcome is queued. If that commit fails, the rows
  are still pending and go again; the recipient answers a repeat with the receipt it gave.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from google.rpc import code_pb2

from customs.gateway.v1 import peer_pb2
from gateway.envelope import open_receipt
from gateway.envelope.wire import varint
from gateway.errors import GatewayError
from gateway.exchange import _store as store
from gateway.exchange.core import Exchange, kind_name
from gateway.ledger import Entry, Event, Record
from gateway.pki.bundle import TrustBundle
from gateway.pki.identity import Jurisdiction
from gateway.store import Connection
from gateway.store.leases import ALWAYS_HELD, Lease

__all__ = ["BATCH_BYTES", "BATCH_SIZE", "Backoff", "Deliverer"]

# A delivery call carries at most this many envelopes (the recipient takes up to
# peer.MAX_BATCH) and this many serialized bytes (well below a peer's 4 MiB request limit).
BATCH_SIZE = 1000
BATCH_BYTES = 3 * 1024 * 1024

log = logging.getLogger("gateway.exchange.delivery")

# Refusals that retrying cannot fix.
# Refusals that retrying cannot fix: a malformed or invalid message, one not releasable to the
# recipient or not the sender's to deliver, a replayed id. Anything else (the recipient does not
# trust the signer yet: a stale bundle or CRL; clocks apart; unavailable) is retried with backoff.
_FINAL_CODES = {
    code_pb2.INVALID_ARGUMENT,
    code_pb2.PERMISSION_DENIED,
    code_pb2.ALREADY_EXISTS,
}


_DELIVER_BATCH = "/customs.gateway.v1.PeerExchange/DeliverBatch"
# The key of DeliverBatchRequest.envelopes (length-delimited), as the wire format writes it.
_ENVELOPES_KEY = bytes(
    [peer_pb2.DeliverBatchRequest.DESCRIPTOR.fields_by_name["envelopes"].number << 3 | 2]
)


def _batch_request(envelopes: Sequence[bytes]) -> bytes:
    """The serialized ``DeliverBatchRequest`` of ``envelopes``, each the stored bytes of a
    serialized ``Envelope``: byte for byte what parsing each and serializing the request would
    give, without the parse and the copy (ADR 0081)."""
    key = _ENVELOPES_KEY
    return b"".join(part for e in envelopes for part in (key, varint(len(e)), e))


@dataclass(frozen=True)
class _Retry:
    """Why a delivered envelope has to be sent again."""

    reason: str


class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    def __init__(self, base: float = 0.05, cap: float = 5.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def delay(self, attempts: int) -> float:
        """Seconds to wait before attempt number ``attempts`` (0-based) is retried."""
        return self._rng.uniform(0, min(self.cap, self.base * 2 ** min(attempts, 30)))


def _error_state(error: str) -> str:
    """What identifies a kind of failure for logging: the error up to its first colon (the
    gRPC code, "peer answered 3 of 5", ...), so a changing detail is not a new state."""
    return error.split(":", 1)[0].strip()


class Deliverer:
    """Delivers this node's outbox to one peer, in a thread of its own."""

    def __init__(
        self,
        exchange: Exchange,
        peer: Jurisdiction,
        channel_factory: Callable[[], grpc.Channel],
        *,
        batch_size: int = BATCH_SIZE,
        batch_bytes: int = BATCH_BYTES,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        summary_interval: float = 600.0,
        clock: Callable[[], float] = time.time,
        lease: Lease = ALWAYS_HELD,
    ) -> None:
        self.exchange = exchange
        self.peer = peer
        # Replicas of one node: only the holder of this peer's lease delivers, and what it
        # writes is fenced by the lease (ADR 0072). One process (SQLite): always held.
        self._lease = lease
        self.standby = False  # True while another replica holds the lease (status, tests)
        self._channel_factory = channel_factory
        self._channel: grpc.Channel | None = None
        self._peer_stub: Any = None
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._timeout = timeout
        self._backoff = backoff or Backoff()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"deliver-{peer.value}", daemon=True)
        self._failures = 0
        # What an operator reads (status, logs): last success and failure, the error, and the
        # failure state last logged, with the attempts since the last summary line.
        self._clock = clock
        self._summary_interval = summary_interval
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_error = ""
        self.batches = 0  # DeliverBatch calls answered by the peer (for status and tests)
        self.delivered = 0  # envelopes in them
        self._failing_since: float | None = None
        self._logged_state = ""
        self._attempts_since_log = 0
        self._last_log = 0.0
        # While backing off from a failure, new outbox rows wait behind the failing head
        # anyway: they do not wake the thread (each wake would re-read the whole backlog).
        self._backing_off = False
        # While ``_saving`` (the ledger commit of a batch's receipts and refusals) is queued,
        # the next batch starts after its last outbox number, ``_saving_through``.
        self._saving: Future[list[Record]] | None = None
        self._saving_through = 0
        # A save failed while another was queued: wait for that one, then read the outbox from
        # its start, so the failed rows go again now, not once the backlog happens to drain.
        self._resend = False

    def start(self) -> None:
        """Start delivering."""
        self.exchange.on_outbox(self._outbox_grew)
        self._thread.start()

    def _outbox_grew(self, recipients: Sequence[str]) -> None:
        if not self._backing_off and self.peer.value in recipients:
            self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the batch in flight; if it is not answered within ``timeout`` seconds,
        cancel it (its rows stay pending and go again after a restart). Returns once the
        thread has ended, so nothing writes to the ledger after this (unless the thread is
        stuck beyond a second ``timeout``, which is logged)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive() and self._channel is not None:
            self._channel.close()  # cancels the call in flight
            self._thread.join(timeout)
        if self._thread.is_alive() and timeout > 0:  # kill() asks for no wait at all
            log.error("delivery thread for %s did not stop", self.peer)
        if self._channel is not None:
            self._channel.close()

    @property
    def failures(self) -> int:
        """Failed attempts since the last successful batch (0 while all is well)."""
        return self._failures

    def wake(self) -> None:
        """Try now (e.g. the peer is known to be back)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._lease.held():  # another replica delivers to this peer now
                self.standby = True
                self._settle(block=True)
                self._lease.wait(1.0)
                continue
            self.standby = False
            try:
                wait = self.deliver_once()
            except Exception:
                log.exception("delivery to %s failed unexpectedly", self.peer)
                wait = self._backoff.delay(self._failures)
                self._backing_off = True
            if wait is None:
                continue  # more to send right away
            self._wake.wait(wait)
            self._wake.clear()
        self._settle(block=True)

    def _settle(self, block: bool) -> bool:
        """Take the outcome of the queued save, if it is done (or ``block``). False if it failed:
        its rows are still pending in the outbox, and go again once no save is queued."""
        saving = self._saving
        if saving is None or not (block or saving.done()):
            return True
        self._saving = None
        try:
            saving.result()
        except Exception:
            log.exception("saving receipts from %s failed; those messages go again", self.peer)
            return False
        return True

    def deliver_once(self) -> float | None:
        """Send one batch. Returns None when more is ready, else seconds to wait before the next."""
        settled = self._settle(block=self._resend)
        self._resend = False
        if not settled:
            self._failures += 1
            return self._backoff.delay(self._failures)
        reader = self.exchange.ledger.reader()
        after = 0 if self._saving is None else self._saving_through
        rows = store.pending(reader, self.peer.value, self._batch_size, after)
        if not rows:
            return 1.0  # or sooner: a submit wakes this thread through on_outbox
        now_ms = int(time.time() * 1000)
        head = rows[0]
        self._backing_off = head.state == store.FAILING and head.next_attempt_ms > now_ms
        if self._backing_off:
            return (head.next_attempt_ms - now_ms) / 1000
        # After a failed attempt the head goes alone, as a probe: a peer that is still down
        # costs one message's read, parse and send per retry, not a whole batch's (up to
        # BATCH_SIZE envelopes). A failure still marks every row read here, as a batch's did;
        # once the head is through, the next batch is full again at once.
        waiting = rows
        if self._failures:
            rows = rows[:1]
        messages = store.MessageRow.get_many(
            reader, self.exchange.jurisdiction.value, [row.message_id for row in rows]
        )
        envelopes: list[bytes] = []
        size = 0
        for count, row in enumerate(rows):
            message = messages.get(row.message_id)
            if message is None or message.envelope is None:  # erased before it could be delivered
                self._refuse(row, "payload erased before delivery")
                return 0.0
            size += len(message.envelope) + 8  # the field's tag and length, at most
            if envelopes and size > self._batch_bytes:  # the rest goes in the next call
                rows = rows[:count]
                break
            envelopes.append(message.envelope)
        try:
            response = self._stub()(_batch_request(envelopes), timeout=self._timeout)
        except grpc.RpcError as exc:
            self._reconnect()
            return self._transport_failure(waiting, f"{exc.code().name}: {exc.details()}")
        self.batches += 1
        self.delivered += len(rows)
        if len(response.results) != len(rows):
            return self._transport_failure(
                rows, f"peer answered {len(response.results)} of {len(rows)}"
            )
        receipts: list[tuple[store.OutboxRow, bytes, Entry]] = []
        refusals: list[tuple[store.OutboxRow, str, Entry]] = []
        retry: tuple[int, str] | None = None
        # Once per batch, not per receipt: the trust in force and the clock.
        trust, now = self.exchange.trust(), self.exchange.now()
        for position, (row, result) in enumerate(zip(rows, response.results, strict=True)):
            outcome = self._check(row, messages[row.message_id], result, trust, now)
            if isinstance(outcome, _Retry):
                retry = (position, outcome.reason)
                break
            if isinstance(outcome, tuple) and isinstance(outcome[0], str):
                refusals.append((row, *outcome))
            else:
                receipts.append((row, *outcome))
        self._save(receipts, refusals)
        if retry is not None:  # in order: this one and those after it go again later
            return self._transport_failure(rows[retry[0] :], retry[1])
        self._succeeded()
        return None if len(rows) == self._batch_size or size > self._batch_bytes else 0.0

    def _succeeded(self) -> None:
        now = self._clock()
        self.last_success = now
        if self._failing_since is not None:
            log.info(
                "delivery to %s recovered after %d failed attempt(s) over %.0f s",
                self.peer,
                self._failures,
                now - self._failing_since,
                extra={"event": "delivery_recovered", "peer": self.peer.value},
            )
        self._failures = 0
        self._failing_since = None
        self._logged_state = ""
        self._attempts_since_log = 0

    def _reconnect(self) -> None:
        """Drop the channel: the next attempt re-reads the node's certificate, key and bundle,
        so a renewed client certificate is used once the old one no longer works."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _stub(self) -> Any:
        """The peer's ``DeliverBatch``, taking the request's serialized bytes (see
        :func:`_batch_request`) and answering a parsed ``DeliverBatchResponse``."""
        if self._channel is None:
            self._channel = self._channel_factory()
            self._peer_stub = self._channel.unary_unary(
                _DELIVER_BATCH,
                request_serializer=None,  # bytes, as _batch_request made them
                response_deserializer=peer_pb2.DeliverBatchResponse.FromString,
            )
        return self._peer_stub

    def _transport_failure(self, rows: list[store.OutboxRow], error: str) -> float:
        """Mark ``rows`` failed with the head's next attempt; return the seconds until then
        (the thread sleeps exactly that long: new outbox rows do not wake it meanwhile)."""
        self._failures += 1
        self._backing_off = True
        head_attempts = rows[0].attempts
        delay = self._backoff.delay(head_attempts + 1)
        next_ms = int((time.time() + delay) * 1000)
        seqs = [r.seq for r in rows]
        self._write(lambda conn: store.mark_failed(conn, seqs, error, next_ms, final=False))
        self._log_failure(len(rows), head_attempts + 1, error)
        return delay

    def _log_failure(self, waiting: int, attempt: int, error: str) -> None:
        """One line when the failure state changes (first failure, another kind of error), and
        one summary line per ``summary_interval`` while it lasts; nothing for the retries in
        between (they are counted in the summary and in the metrics)."""
        now = self._clock()
        self.last_failure, self.last_error = now, error
        self._attempts_since_log += 1
        if self._failing_since is None:
            self._failing_since = now
        state = _error_state(error)
        if state != self._logged_state:
            self._logged_state, self._last_log, self._attempts_since_log = state, now, 0
            log.warning(
                "delivery of %d message(s) to %s failed (attempt %d): %s; retrying with backoff "
                "(at most %.0f s apart), repeats summarised every %.0f s",
                waiting,
                self.peer,
                attempt,
                error,
                self._backoff.cap,
                self._summary_interval,
                extra={"event": "delivery_failed", "peer": self.peer.value},
            )
        elif now - self._last_log >= self._summary_interval:
            log.warning(
                "delivery to %s still failing: %d attempt(s) in the last %.0f s, %d message(s) "
                "waiting, failing since %s; last error: %s",
                self.peer,
                self._attempts_since_log,
                now - self._last_log,
                waiting,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._failing_since)),
                error,
                extra={"event": "delivery_failing_summary", "peer": self.peer.value},
            )
            self._last_log, self._attempts_since_log = now, 0

    def _refuse(self, row: store.OutboxRow, error: str) -> None:
        self._write(lambda conn: store.mark_failed(conn, [row.seq], error, 0, final=True))

    def _write(self, work: Callable[[Connection], None]) -> None:
        """``work`` in a ledger transaction, committed only under this peer's lease."""

        def fenced(conn: Connection) -> None:
            self._lease.fence(conn)
            work(conn)

        self.exchange.ledger.write(fenced)

    def _check(
        self,
        row: store.OutboxRow,
        message: store.MessageRow,
        result: peer_pb2.DeliveryResult,
        trust: tuple[TrustBundle, Sequence[x509.CertificateRevocationList]],
        now: dt.datetime,
    ) -> tuple[bytes, Entry] | tuple[str, Entry] | _Retry:
        """The verified receipt (by ``trust`` at ``now``) and its ``receipt`` entry; or the
        peer's final refusal (its text) and its ``refused`` entry; or why the envelope has to
        be sent again."""
        mid = uuid.UUID(row.message_id)
        kind = kind_name(message.kind)
        if result.HasField("error"):
            code = code_pb2.Code.Name(result.error.code)
            if result.error.code not in _FINAL_CODES:
                return _Retry(f"{self.peer} answered {code}: {result.error.message}")
            error = f"refused by {self.peer} ({code}): {result.error.message}"
            log.error(
                "message %s %s",
                row.message_id,
                error,
                extra={"event": "delivery_refused", "message_id": row.message_id},
            )
            return error, Entry(Event.REFUSED, mid, kind, self.peer.value, (message.digest,))
        bundle, crls = trust
        try:
            opened = open_receipt(result.receipt, bundle, crls, now=now)
        except GatewayError as exc:
            log.error("receipt for %s from %s rejected: %s", row.message_id, self.peer, exc)
            return _Retry(f"receipt from {self.peer} did not verify: {exc}")
        body = opened.body
        if (
            body.message_id != row.message_id
            or body.message_digest != message.digest
            or opened.signer.jurisdiction is not self.peer
        ):
            log.error(
                "receipt for %s from %s does not match the message (id %s, digest %s)",
                row.message_id,
                self.peer,
                body.message_id,
                body.message_digest.hex()[:16],
            )
            return _Retry(f"receipt from {self.peer} does not match the message")
        entry = Entry(Event.RECEIPT, mid, kind, self.peer.value, (message.digest, opened.digest))
        return result.receipt.SerializeToString(), entry

    def _save(
        self,
        receipts: list[tuple[store.OutboxRow, bytes, Entry]],
        refusals: list[tuple[store.OutboxRow, str, Entry]],
    ) -> None:
        """Queue the ledger entries of the verified receipts and the final refusals, with the
        marks on their outbox rows, in one transaction: the origin's ledger shows what was
        refused, by whom, and when. Returns at once; the previous save is awaited first, so at
        most one is outstanding."""
        if not receipts and not refusals:
            return

        def within(conn: Connection, first: int) -> None:
            self._lease.fence(conn)
            for offset, (row, receipt, _) in enumerate(receipts):
                store.mark_delivered(conn, row.seq, receipt, first + offset)
            for row, error, _ in refusals:
                store.mark_failed(conn, [row.seq], error, 0, final=True)

        entries = [entry for _, _, entry in receipts] + [entry for _, _, entry in refusals]
        if not self._settle(block=True):
            self._failures += 1  # this batch's outcomes are saved; the failed ones go again
            self._resend = True
        self._saving = self.exchange.ledger.queue_append(entries, within)
        self._saving_through = max(row.seq for row, _, _ in (*receipts, *refusals))
