"""Bulk publishing benchmarks (issue 15): durable entries/s of a bulk publish at one node, a
list published at HK counted on CN's and MO's partner streams, and the node's memory over a
1,000,000-entry load, each beside a bare mutual-TLS echo measured in the same run.

Method:

- The baseline is group ``exchange``'s: its echo server (a bare grpcio server in a process of
  its own, same thread pool and mutual-TLS material as a node) and its closed-loop client (32
  threads on one channel, in a process of its own). Nodes are real ``customs-gateway serve``
  processes started by the same helpers, with fresh data directories for each phase.
- Workload: ``watchlist_entries`` makes valid entries, each its own entry id, name and HK
  business-registration number (the seed entry of ``gateway.domain.fixtures`` otherwise), so a
  node validates, signs, ledgers and delivers each as it would a real list. A publish client
  runs in a process of its own (so that it shares no GIL with the stream readers); it builds
  and serializes every call before the clock starts, then 1 or 8 threads send them, each call
  waiting for its answer, which comes only when every accepted entry is durable.
- One node: only HK runs (its deliveries to the absent peers fail and back off), so the number is
  the publish path. Durable entries/s = entries accepted / wall time of the whole load.
- Three nodes: HK publishes to CN and MO; a partner of each reads ``StreamInbound`` and
  acknowledges every message (``AcknowledgeInboundMessages``: two threads per partner, each
  taking every message waiting into one call). Arrivals/s = messages on the two streams (two
  per entry, as group ``exchange`` counts its three streams) / time from the first publish
  call to the last arrival. Every message must arrive once.
- Memory (``--long`` only): one node, 100,000 entries, then 900,000 more. The node's peak RSS
  (``VmHWM`` of ``/proc``) after 1,000,000 against after 100,000.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import queue
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench._report import Result, Scale, with_load_average
from bench.exchange import (
    ECHO_METHOD,
    PROTO,
    Client,
    _cpu_seconds,
    _echo,
    _own_cpu,
    _partner,
    _pid,
    _running,
    _throughput,
)
from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2, partner_pb2_grpc
from gateway.domain.fixtures import seed_watchlist_entry
from gateway.pki import Jurisdiction
from tests.support import make_world

GROUP = "bulk"
CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO
WATCHLIST = "bench-front-companies"
BATCH = 1000  # entries per bulk call
HOW = "bulk RPC"  # in the rows' names
REVOKED = 2_000  # entries revoked after the 8-caller publish (no target names a revoke rate)
REVOKE_SECONDS = 180.0  # the revoke row's time limit
ACKERS = 2  # acknowledging threads per partner stream
ACK_BATCH = 1000  # acknowledgements per call at most (the node's bulk_entries)
STOP_GROWTH = 2.5  # the memory row stops loading once the node's peak RSS is this far past 100k


# -- workload ---------------------------------------------------------------------------------


def watchlist_entries(
    n: int, *, start: int = 0, now: dt.datetime | None = None, namespace: str = ""
) -> Iterator[domain_pb2.WatchlistEntry]:
    """``n`` valid version-1 entries numbered from ``start``: the seed entry with its own entry
    id, name and 8-digit business-registration number (valid at ``now``). Entry ``i``'s id is
    derived from ``namespace`` and ``i`` (random without a namespace), so that a later run can
    revoke what an earlier one published."""
    base = seed_watchlist_entry(now or dt.datetime.now(dt.UTC))
    base.watchlist = WATCHLIST
    del base.names[:]
    for i in range(start, start + n):
        entry = domain_pb2.WatchlistEntry()
        entry.CopyFrom(base)
        entry.entry_id = _entry_id(namespace, i)
        entry.names.add(full_name=f"Bench Front Company {i:07d} Limited")
        entry.identifiers[0].value = f"{(i * 7919) % 100_000_000:08d}"
        yield entry


def revocations(
    n: int, *, start: int = 0, namespace: str
) -> Iterator[domain_pb2.WatchlistRevocation]:
    """Revocations (version 2) of the entries ``watchlist_entries`` numbered the same way."""
    for i in range(start, start + n):
        yield domain_pb2.WatchlistRevocation(
            watchlist=WATCHLIST,
            entry_id=_entry_id(namespace, i),
            version=2,
            reason="Network dismantled; entries no longer needed.",
        )


def _entry_id(namespace: str, i: int) -> str:
    if not namespace:
        return str(uuid.uuid4())
    return str(uuid.uuid5(uuid.UUID(namespace), str(i)))


def _addressing(recipients: list[Jurisdiction]) -> partner_pb2.Addressing:
    wire = [PROTO[r] for r in recipients]
    return partner_pb2.Addressing(
        message_id=str(uuid.uuid4()),
        recipients=wire,
        handling=common_pb2.Handling(releasable_to=wire, caveat="For customs enforcement use only"),
    )


@dataclass(frozen=True)
class Load:
    """One run: ``n`` entries numbered from ``start`` published (or, with ``revoke``, revoked)
    to ``recipients`` by ``callers`` threads, entry ids derived from ``namespace``; ``lazy``
    builds each call just before sending it (for loads too big to hold in memory)."""

    n: int
    callers: int
    recipients: tuple[Jurisdiction, ...]
    namespace: str
    start: int = 0
    revoke: bool = False
    lazy: bool = False

    def method(self) -> str:
        """The bulk RPC this load calls."""
        name = "RevokeWatchlistEntries" if self.revoke else "PublishWatchlistEntries"
        return f"/customs.gateway.v1.PartnerGateway/{name}"

    def calls(self, start: int, n: int) -> Iterator[tuple[bytes, int]]:
        """Serialized bulk requests for entries ``start`` to ``start + n``, each with the number
        of entries it carries (BATCH, the last one fewer)."""
        recipients = list(self.recipients)
        singles: Iterator[Any]
        if self.revoke:
            singles = (
                partner_pb2.RevokeWatchlistEntryRequest(
                    addressing=_addressing(recipients), revocation=r
                )
                for r in revocations(n, start=start, namespace=self.namespace)
            )
        else:
            singles = (
                partner_pb2.PublishWatchlistEntryRequest(
                    addressing=_addressing(recipients), entry=e
                )
                for e in watchlist_entries(n, start=start, namespace=self.namespace)
            )
        batch: list[Any] = []
        for single in singles:
            batch.append(single)
            if len(batch) == BATCH:
                yield self._bulk(batch), len(batch)
                batch = []
        if batch:
            yield self._bulk(batch), len(batch)

    def _bulk(self, batch: list[Any]) -> bytes:
        if self.revoke:
            request = partner_pb2.RevokeWatchlistEntriesRequest(revocations=batch)
        else:
            request = partner_pb2.PublishWatchlistEntriesRequest(entries=batch)
        return bytes(request.SerializeToString())


def _accepted(response: bytes) -> int:
    """How many entries an answer says were accepted (new; a duplicate or refusal is a fault
    of the benchmark, raised)."""
    answer = partner_pb2.BulkSubmitResponse.FromString(response)
    if answer.duplicates or answer.refused:
        first = next(r for r in answer.results if r.outcome != partner_pb2.BULK_OUTCOME_ACCEPTED)
        raise RuntimeError(
            f"{answer.duplicates} duplicate(s), {answer.refused} refused, first: {first}"
        )
    return int(answer.accepted)


# -- the publish client -----------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """What a publish run did: entries accepted, its start (``time.monotonic``, comparable across
    processes on Linux), wall seconds, the client's CPU seconds."""

    entries: int
    started: float
    seconds: float
    client_cpu: float


def _publish_client(client: Client, load: Load, out: Any) -> None:
    """Run ``load`` against ``client``'s node and put a ``Published`` on ``out``; in a process."""
    channel = client.channel()
    call = channel.unary_unary(load.method())  # bytes in, bytes out
    # Warm up the channel with one entry of its own, outside the count (a publish, also before
    # a revoke: its entry is one the load does not touch).
    warm = Load(1, 1, load.recipients, namespace="")
    channel.unary_unary(warm.method())(next(warm.calls(10_000_000, 1))[0], timeout=60)
    shares = [
        (load.n * i // load.callers, load.n * (i + 1) // load.callers) for i in range(load.callers)
    ]
    work: list[Any] = [load.calls(load.start + lo, hi - lo) for lo, hi in shares]
    if not load.lazy:
        work = [list(calls) for calls in work]
    accepted = [0] * load.callers
    failures: list[BaseException] = []
    barrier = threading.Barrier(load.callers + 1)

    def caller(i: int) -> None:
        barrier.wait()
        try:
            for request, _count in work[i]:
                accepted[i] += _accepted(call(request, timeout=600))
        except BaseException as exc:  # reported by the parent, not lost in a thread
            failures.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(load.callers)]
    for t in threads:
        t.start()
    cpu_before = _own_cpu()
    started = time.monotonic()
    barrier.wait()
    for t in threads:
        t.join()
    if not failures:
        # The node applies its watchlist view after answering (ADR 0059) and answers a query of
        # the view once it is caught up: the run ends when the view shows the last entry.
        _view_shows(channel, load)
    seconds = time.monotonic() - started
    cpu = _own_cpu() - cpu_before
    channel.close()
    if failures:
        out.put(f"{len(failures)} caller(s) failed, first: {failures[0]!r}")
        return
    out.put(Published(sum(accepted), started, seconds, cpu))


def _view_shows(channel: Any, load: Load) -> None:
    """Ask the node's view for the load's last entry: the answer waits until every payload
    the node had recorded before it is applied to the view."""
    last = load.start + load.n - 1
    get = channel.unary_unary(
        "/customs.gateway.v1.PartnerGateway/GetWatchlistEntry",
        request_serializer=partner_pb2.GetWatchlistEntryRequest.SerializeToString,
        response_deserializer=partner_pb2.WatchlistItem.FromString,
    )
    item = get(
        partner_pb2.GetWatchlistEntryRequest(
            origin=PROTO[Jurisdiction.HK],
            watchlist=WATCHLIST,
            entry_id=_entry_id(load.namespace, last),
        ),
        timeout=600,
    )
    revoked = item.state == partner_pb2.ENTRY_STATE_REVOKED
    if revoked != load.revoke:
        raise RuntimeError(f"the view shows the last entry in state {item.state}")


class _Publishing:
    """A publish client in a process of its own (spawned), started at construction."""

    def __init__(self, client: Client, load: Load) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._out = ctx.Queue()
        self._process = ctx.Process(target=_publish_client, args=(client, load, self._out))
        self._process.start()

    def result(self, timeout: float) -> Published:
        """The run's ``Published``; raises if the client failed."""
        try:
            answer = self._out.get(timeout=timeout)
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
        if not isinstance(answer, Published):
            raise RuntimeError(f"bulk publish client: {answer}")
        return answer


# -- partner streams --------------------------------------------------------------------------


class _AckingReader:
    """A partner reading ``StreamInbound`` in a thread and acknowledging what arrived from
    ACKERS threads, each taking every message waiting (up to ACK_BATCH) into one
    ``AcknowledgeInboundMessages`` call (ADR 0056); counts arrivals (time of the last one,
    duplicates) and acknowledgements."""

    def __init__(self, client: Client) -> None:
        self._channel = client.channel()
        self._stub = partner_pb2_grpc.PartnerGatewayStub(self._channel)
        self._call = self._stub.StreamInbound(partner_pb2.StreamInboundRequest())
        self._waiting: queue.SimpleQueue[partner_pb2.AcknowledgeInboundRequest | None] = (
            queue.SimpleQueue()
        )
        self.seen: set[str] = set()
        self.duplicates = 0
        self.last_arrival = 0.0
        self.acked = 0
        self.ack_errors = 0
        self.ack_error = ""
        self._lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._ackers = [threading.Thread(target=self._ack, daemon=True) for _ in range(ACKERS)]
        for acker in self._ackers:
            acker.start()

    def _read(self) -> None:
        """Reads until closed; a stream the node ends at its lifetime
        (``limits.stream_lifetime_seconds``, UNAVAILABLE) is opened again from the last
        cursor, as a partner does: a full-size run outlasts one stream."""
        cursor = ""
        while True:
            try:
                for message in self._call:
                    cursor = message.cursor
                    if message.message_id in self.seen:
                        self.duplicates += 1
                        continue
                    self.seen.add(message.message_id)
                    self.last_arrival = time.monotonic()
                    self._waiting.put(
                        partner_pb2.AcknowledgeInboundRequest(
                            message_id=message.message_id, origin=message.origin
                        )
                    )
                return
            except grpc.RpcError as exc:
                if exc.code() is grpc.StatusCode.CANCELLED or self._closing:
                    return
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise
            self._call = self._stub.StreamInbound(partner_pb2.StreamInboundRequest(cursor=cursor))

    def _ack(self) -> None:
        """Acknowledge what waits, in calls of up to ACK_BATCH, until closed."""
        while True:
            first = self._waiting.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < ACK_BATCH:
                try:
                    more = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._waiting.put(None)  # for the next acker
                    break
                batch.append(more)
            request = partner_pb2.AcknowledgeInboundMessagesRequest(acknowledgements=batch)
            try:
                answer = self._stub.AcknowledgeInboundMessages(request, timeout=60)
                ok, failed = answer.acknowledged, len(batch) - answer.acknowledged
                if failed:
                    first_bad = next(
                        r for r in answer.results if r.outcome != partner_pb2.BULK_OUTCOME_ACCEPTED
                    )
                    self.ack_error = str(first_bad).replace("\n", " ")
            except grpc.RpcError as exc:
                ok, failed = 0, len(batch)
                self.ack_error = f"{exc.code().name}: {exc.details()}"
            with self._lock:
                self.acked += ok
                self.ack_errors += failed

    def wait_for(self, n: int, timeout: float) -> None:
        """Until ``n`` distinct messages arrived; raises after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.seen)} of {n} messages arrived in {timeout:g} s")
            time.sleep(0.05)

    def wait_acked(self, n: int, timeout: float) -> float:
        """Until ``n`` acknowledgements are answered (or ``timeout``); the time it happened."""
        deadline = time.monotonic() + timeout
        while self.acked + self.ack_errors < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return time.monotonic()

    def close(self) -> None:
        self._closing = True
        self._call.cancel()
        self._thread.join(5)
        for _ in self._ackers:
            self._waiting.put(None)
        for acker in self._ackers:
            acker.join(5)
        self._channel.close()


# -- /proc ------------------------------------------------------------------------------------


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of process ``pid`` in MiB, from ``/proc`` (NaN where missing)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return float("nan"), float("nan")
    fields = {k: v for k, _, v in (line.partition(":") for line in lines)}
    kib = [float(fields.get(k, "nan kB").split()[0]) for k in ("VmRSS", "VmHWM")]
    return kib[0] / 1024, kib[1] / 1024


# -- phases -----------------------------------------------------------------------------------


def run(scale: Scale) -> list[Result]:
    """The group's rows, ending with the machine's load average before and after."""
    return with_load_average(GROUP, lambda: _run(scale))


def _run(scale: Scale) -> list[Result]:
    # --quick loads 10,000 entries, not 2,000: an entry's cost grows with what is stored (and a
    # name key is capped past 2,000 entries, ADR 0079), so 2,000 entries read 0.25 ms of node
    # CPU per entry where 20,000 read 0.34-0.39 ms (docs/performance.md, session 8).
    n = 10_000 if scale.quick else 100_000
    seconds = 2.0 if scale.quick else 5.0
    timeout = 120 + n / 50
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
        root = Path(tmp)
        world = make_world(root / "pki")
        with _echo(world) as (echo_address, echo_pid):
            measured = _throughput(
                _partner(world, CN, echo_address), ECHO_METHOD, seconds, echo_pid
            )
        echo_rate, echo_cpu = measured.rate, measured.server_cpu
        echo = ("bare mTLS echo calls/s", echo_rate)

        for callers in (1, 8):
            ns = str(uuid.uuid4())
            with _running(world, root / f"one-{callers}", (HK,)) as (hk,):
                client = _partner(world, HK, hk.address)
                cpu_before = _cpu_seconds(_pid(hk))
                done = _Publishing(client, Load(n, callers, (CN, MO), ns)).result(timeout)
                node_cpu = _cpu_seconds(_pid(hk)) - cpu_before
                _check(done, n)
                results += [
                    Result(GROUP, f"publish at one node, {n:,} entries, {callers} caller(s) "
                           f"({HOW})", done.entries / done.seconds, "entries/s", *echo,
                           target=1.0),
                    Result(GROUP, "  node CPU per durable entry", node_cpu * 1000 / n, "ms",
                           "echo server CPU per call", echo_cpu),
                ]  # fmt: skip
                if callers == 8:  # withdraw part of the list just published (no target)
                    results.append(_revoke(client, n, ns, echo))

        with _running(world, root / "three", (CN, HK, MO)) as (cn, hk, mo):
            readers = [_AckingReader(_partner(world, j.jurisdiction, j.address)) for j in (cn, mo)]
            try:
                pids = [_pid(p) for p in (cn, hk, mo)]
                cpu_before = sum(_cpu_seconds(p) for p in pids)
                load = Load(n, 8, (CN, MO), str(uuid.uuid4()))
                done = _Publishing(_partner(world, HK, hk.address), load).result(timeout)
                for reader in readers:  # the client's warm-up entry, then the load
                    reader.wait_for(1 + n, timeout)
                arrived = max(r.last_arrival for r in readers)
                acked = max(r.wait_acked(1 + n, timeout) for r in readers)
                nodes_cpu = sum(_cpu_seconds(p) for p in pids) - cpu_before
            finally:
                for reader in readers:
                    reader.close()
            _check(done, n)
            duplicates = sum(r.duplicates for r in readers)
            if duplicates or any(r.ack_errors for r in readers):
                raise RuntimeError(
                    f"{duplicates} duplicate arrivals, "
                    f"{sum(r.ack_errors for r in readers)} failed acknowledgements "
                    f"({'; '.join(r.ack_error for r in readers if r.ack_error)})"
                )
            results += [
                Result(GROUP, f"three nodes: {n:,} entries at HK, arrivals/s on CN+MO streams "
                       f"({HOW})", 2 * n / (arrived - done.started), "msg/s", *echo, target=1.0),
                Result(GROUP, "  acknowledged/s on CN+MO streams", 2 * n / (acked - done.started),
                       "msg/s", *echo),
                Result(GROUP, "  nodes' CPU per entry (publish, 2 deliveries, 2 arrivals, 2 acks)",
                       nodes_cpu * 1000 / n, "ms"),
            ]  # fmt: skip

        if scale.long:
            results.append(_memory(world, root / "memory"))
    return results


def _memory(world: Any, root: Path) -> Result:
    """Peak RSS of one node after 1,000,000 entries against after the first 100,000, loaded in
    runs of 100,000 (each run's RSS is printed to standard error as it ends). Once the peak is
    past STOP_GROWTH times the first, the target is missed whatever comes next, and loading
    stops there (a node growing linearly would take gigabytes of a shared machine); the row
    then names how far it went."""
    step, total = 100_000, 1_000_000
    peaks: list[float] = []
    with _running(world, root, (HK,)) as (hk,):
        client = _partner(world, HK, hk.address)
        ns = str(uuid.uuid4())
        for start in range(0, total, step):
            load = Load(step, 8, (CN, MO), ns, start=start, lazy=True)
            done = _Publishing(client, load).result(7200)
            _check(done, step)
            current, peak = rss_mib(_pid(hk))
            peaks.append(peak)
            print(f"  {start + step:>9,} entries: RSS {current:,.0f} MiB, peak {peak:,.0f} MiB, "
                  f"{step / done.seconds:,.0f} entries/s", file=sys.stderr, flush=True)  # fmt: skip
            if peak > STOP_GROWTH * peaks[0]:
                break
    loaded = step * len(peaks)
    name = f"node peak RSS after {loaded:,} entries ({HOW})"
    if loaded < total:
        name += f"; stopped before {total:,}: past {STOP_GROWTH:g}x"
    return Result(GROUP, name, peaks[-1], "MiB", f"after {step:,}", peaks[0], target=1.5,
                  higher_is_better=False)  # fmt: skip


def _revoke(client: Client, published: int, ns: str, echo: tuple[str, float]) -> Result:
    """Revoke REVOKED of the ``published`` entries with 8 callers; at most REVOKE_SECONDS (a
    revoke path that slows with the list's size must not hold up the whole table)."""
    m = min(published, REVOKED)
    running = _Publishing(client, Load(m, 8, (CN, MO), ns, revoke=True))
    name = f"revoke at one node, {m:,} of the {published:,} entries, 8 callers ({HOW})"
    try:
        done = running.result(REVOKE_SECONDS)
    except queue.Empty:
        return Result(GROUP, f"{name}: not done in {REVOKE_SECONDS:g} s", float("nan"),
                      "entries/s", *echo)  # fmt: skip
    _check(done, m)
    return Result(GROUP, name, done.entries / done.seconds, "entries/s", *echo)


def _check(done: Published, n: int) -> None:
    if done.entries != n:
        raise RuntimeError(f"{done.entries} of {n} entries accepted")


__all__ = [
    "Load",
    "Published",
    "revocations",
    "rss_mib",
    "run",
    "watchlist_entries",
]
