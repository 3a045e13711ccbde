"""How many calls and streams the node admits at once, per caller and in all (ADR 0023).

grpcio's synchronous server runs every call, server streams included, on one thread of a fixed
pool for as long as the call lasts. A caller who opens more streams than there are threads stops
the node. So the pool is divided into budgets, and a call is admitted only into a budget with
room; what is admitted can never hold every thread:

====================  =======================================  ==============================
budget                methods                                  who can fill it
====================  =======================================  ==============================
``reserved_calls``    ``Health/Check``, ``PeerExchange/*``     probes and peer nodes only
``calls``             every other unary method                 partners, auditors, anyone
``inbound_streams``   ``PartnerGateway/StreamInbound``         the node's own partners
``other_streams``     ``Health/Watch``, server reflection      anyone with a certificate
====================  =======================================  ==============================

The reserve is a thread pool of its own (``reserved_calls`` threads, taken from
``server.max_workers``): grpcio hands a reserved method's call to it on its polling thread, so
no other call queues in front of a health check or a peer's delivery. The other budgets share
the rest of the threads. Each caller (certificate identity) may also hold at most
``calls_per_caller`` unary calls and ``streams_per_caller`` streams, and at most half of either
stream budget. The budgets add up to at
most ``max_workers``, so admitted calls never hold every thread and a refusal (which runs on a
thread, for microseconds) always finds one.

:class:`Limiter` is pure bookkeeping (no gRPC): ``admit`` returns a release function or raises
:class:`~gateway.errors.ResourceExhaustedError`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from google.rpc import error_details_pb2

from gateway.errors import ResourceExhaustedError

__all__ = ["COUNT_LIMITS", "Budget", "Limiter", "Limits", "budget_of"]

# The limits that are counts (each at least 1); the others are durations in seconds.
COUNT_LIMITS = (
    "calls",
    "calls_per_caller",
    "reserved_calls",
    "inbound_streams",
    "other_streams",
    "streams_per_caller",
    "max_request_bytes",
    "max_response_bytes",
    "backlog",
    "bulk_entries",
    "bulk_bytes",
)

MIB = 1024 * 1024


class Budget(Enum):
    """Which share of the worker threads a method draws from."""

    RESERVED = "reserved_calls"
    CALLS = "calls"
    INBOUND_STREAMS = "inbound_streams"
    OTHER_STREAMS = "other_streams"

    @property
    def streaming(self) -> bool:
        """True for the budgets of long-lived server streams."""
        return self in (Budget.INBOUND_STREAMS, Budget.OTHER_STREAMS)


_RESERVED_PREFIXES = ("/customs.gateway.v1.PeerExchange/",)
_RESERVED_METHODS = frozenset({"/grpc.health.v1.Health/Check"})
_INBOUND = "/customs.gateway.v1.PartnerGateway/StreamInbound"


def budget_of(method: str, streaming: bool) -> Budget:
    """The budget a call of ``method`` (a full ``/package.Service/Method`` name) draws from."""
    if method == _INBOUND:
        return Budget.INBOUND_STREAMS
    if streaming:
        return Budget.OTHER_STREAMS
    if method in _RESERVED_METHODS or method.startswith(_RESERVED_PREFIXES):
        return Budget.RESERVED
    return Budget.CALLS


@dataclass(frozen=True)
class Limits:
    """The ``[limits]`` of a node config, resolved against the pool size ``workers``.

    Unset budgets are carved from ``workers``: an eighth (at least 2) reserved, a quarter for
    inbound streams, an eighth (at least 2) for other streams, the rest for calls.
    """

    workers: int
    calls: int
    calls_per_caller: int
    reserved_calls: int
    inbound_streams: int
    other_streams: int
    streams_per_caller: int
    stream_lifetime_seconds: float = 900.0
    max_request_bytes: int = 4 * MIB
    max_response_bytes: int = 16 * MIB
    backlog: int = 64
    storage_probe_seconds: float = 2.0
    bulk_entries: int = 1000  # entries in one bulk call (ADR 0053)
    bulk_bytes: int = 2 * MIB  # serialized size of one bulk request

    @classmethod
    def for_workers(
        cls,
        workers: int,
        *,
        calls: int | None = None,
        calls_per_caller: int | None = None,
        reserved_calls: int | None = None,
        inbound_streams: int | None = None,
        other_streams: int | None = None,
        streams_per_caller: int | None = None,
        **rest: float,
    ) -> Limits:
        """Fill in the budgets not given from ``workers`` (and ``bulk_bytes``, if not given, to at
        most ``max_request_bytes``); :meth:`problems` says if they fit."""
        reserved = reserved_calls if reserved_calls is not None else max(2, workers // 8)
        inbound = inbound_streams if inbound_streams is not None else max(1, workers // 4)
        other = other_streams if other_streams is not None else max(2, workers // 8)
        general = calls if calls is not None else workers - reserved - inbound - other
        if "bulk_bytes" not in rest and "max_request_bytes" in rest:  # a bulk call fits a request
            rest["bulk_bytes"] = min(cls.bulk_bytes, rest["max_request_bytes"])
        return cls(
            workers=workers,
            calls=general,
            calls_per_caller=(
                calls_per_caller if calls_per_caller is not None else max(1, general // 2)
            ),
            reserved_calls=reserved,
            inbound_streams=inbound,
            other_streams=other,
            streams_per_caller=(
                streams_per_caller if streams_per_caller is not None else max(1, inbound // 2)
            ),
            **rest,  # type: ignore[arg-type]
        )

    def problems(self) -> list[tuple[str, str]]:
        """(key, problem) for every limit the node could not enforce; empty when sound."""
        found: list[tuple[str, str]] = []
        for key in COUNT_LIMITS:
            if getattr(self, key) < 1:
                found.append((key, f"must be at least 1, got {getattr(self, key)}"))
        for key in ("stream_lifetime_seconds", "storage_probe_seconds"):
            if not getattr(self, key) > 0:
                found.append((key, "must be positive"))
        if not found and self.bulk_bytes > self.max_request_bytes:
            found.append(
                (
                    "bulk_bytes",
                    f"bulk_bytes {self.bulk_bytes} is more than max_request_bytes "
                    f"{self.max_request_bytes}: such a request would be refused before it is read",
                )
            )
        needed = self.threads_needed
        if not found and needed > self.workers:
            found.append(
                (
                    "calls",
                    f"calls {self.calls} + reserved_calls {self.reserved_calls} + inbound_streams "
                    f"{self.inbound_streams} + other_streams {self.other_streams} = {needed} "
                    f"threads, more than server.max_workers {self.workers}",
                )
            )
        return found

    @property
    def threads_needed(self) -> int:
        """Worker threads the budgets can hold at once."""
        return self.calls + self.reserved_calls + self.inbound_streams + self.other_streams

    def capacity(self, budget: Budget) -> int:
        """The size of ``budget``."""
        return int(getattr(self, budget.value))

    def share(self, budget: Budget) -> int:
        """The most of a stream budget one caller may hold: half (at least one), so a single
        certificate identity never takes all of the node's Watch or inbound streams."""
        return max(1, self.capacity(budget) // 2)

    def check_bulk(self, field: str, entries: int, size: int) -> None:
        """Admit a bulk request of ``entries`` entries and ``size`` serialized bytes.

        Raises:
            ResourceExhaustedError: above ``bulk_entries`` or ``bulk_bytes``, with a
                ``QuotaFailure`` naming the limit (split the batch and send the parts).
        """
        if entries > self.bulk_entries:
            raise _exhausted(
                "bulk_entries",
                f"{entries} {field} in one call, more than the node's limit (bulk_entries "
                f"{self.bulk_entries}); send them in calls of at most {self.bulk_entries}",
            )
        if size > self.bulk_bytes:
            raise _exhausted(
                "bulk_bytes",
                f"the request is {size} bytes, more than the node's limit (bulk_bytes "
                f"{self.bulk_bytes}); send the {field} in smaller calls",
            )


class Limiter:
    """Counts admitted calls per budget and per caller; thread-safe, no I/O."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._used: Counter[Budget] = Counter()
        self._calls: Counter[str] = Counter()
        self._streams: Counter[str] = Counter()
        self._shares: Counter[tuple[str, Budget]] = Counter()

    def in_use(self) -> dict[str, int]:
        """Slots in use per budget (for metrics and tests)."""
        with self._lock:
            return {b.value: self._used[b] for b in Budget}

    def admit(self, method: str, caller: str, streaming: bool) -> Callable[[], None]:
        """Take a slot for ``caller`` (a certificate identity) calling ``method``.

        Returns the function that gives the slot back (call it exactly once, when the call
        ends).

        Raises:
            ResourceExhaustedError: the caller's own limit or the method's budget is full.
        """
        budget = budget_of(method, streaming)
        mine = self._streams if budget.streaming else self._calls
        limits = self.limits
        per_caller = limits.streams_per_caller if budget.streaming else limits.calls_per_caller
        share = (caller, budget)
        with self._lock:
            if budget.streaming and self._shares[share] >= limits.share(budget):
                raise _exhausted(
                    caller,
                    f"{caller} already has {self._shares[share]} of the node's "
                    f"{limits.capacity(budget)} {budget.value.replace('_', ' ')} open, the most "
                    f"one caller may hold ({budget.value} / 2); close one or retry later",
                )
            if mine[caller] >= per_caller:
                kind = "streams" if budget.streaming else "calls"
                raise _exhausted(
                    caller,
                    f"{caller} already has {mine[caller]} {kind} open, the most one caller may "
                    f"have ({kind}_per_caller {per_caller}); close one or retry later",
                )
            if self._used[budget] >= limits.capacity(budget):
                raise _exhausted(
                    budget.value,
                    f"the node has {limits.capacity(budget)} {budget.value.replace('_', ' ')} "
                    f"in use, its limit ({budget.value} {limits.capacity(budget)}); retry later",
                )
            self._used[budget] += 1
            mine[caller] += 1
            self._shares[share] += 1

        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._used[budget] -= 1
                mine[caller] -= 1
                if mine[caller] <= 0:
                    del mine[caller]
                self._shares[share] -= 1
                if self._shares[share] <= 0:
                    del self._shares[share]

        return release


def _exhausted(subject: str, message: str) -> ResourceExhaustedError:
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=subject, description=message)]
    )
    return ResourceExhaustedError(message, details=[quota])
