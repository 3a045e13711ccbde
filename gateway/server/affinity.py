"""The node's Python threads on one CPU at a time (ADR 0086).

CPython runs the Python code of one thread at a time (the GIL), and a node's threads let go of
it for microseconds, thousands of times a second: around every SQLite statement, Ed25519
signature and lock wait. With the threads free to run on every CPU, each release hands the GIL
to a waiter that the kernel wakes on another CPU, and the releaser, back from its short call a
moment later, has to wait for it in turn: a cross-CPU wake-up and two context switches, many
times per call. On one CPU the woken waiter has not run yet when the releaser comes back, so
the releaser simply takes the GIL again. Measured on two cores (docs/performance.md, session 9)
a durable single submit cost 1.0-1.3 ms of node CPU and about 35 context switches with the
threads free, 0.56-0.60 ms and 12 with the Python threads on one CPU, and the node served
1,700 submits/s instead of 900.

Only threads that run Python are pinned (those :func:`threading.enumerate` knows, which
includes grpcio's polling thread and its worker pool). Threads of native code that hold no
GIL (gRPC's event engine: sockets and TLS) stay free on every allowed CPU; one that inherited
the pin from the thread that started it is freed again at the next round.

Which CPU: the allowed CPUs are the process's affinity at start (an operator's ``taskset`` or
cpuset holds), less any the kernel later refuses (a cpuset that shrinks: the threads go to a CPU
still allowed). The threads start on the allowed CPU that the fewest other processes are pinned
to (:func:`first_cpu`: nodes started one after another on one machine, as the demo and the
benchmarks run three, take different CPUs; three nodes that shared one CPU of two delivered
1,180-1,330 bulk arrivals/s where spread they delivered 1,500-2,000), the one the process runs on
among equals. Then every :data:`INTERVAL` seconds :func:`choose` moves them to another allowed
CPU when that one was idler, over the last interval, than the current one would have been
without this process, by at least :data:`MARGIN` of a CPU (so a node moves off a CPU that
others crowd). After a move it stays :data:`HOLD` rounds, and each node's rounds come at
slightly random times, so two nodes that crowd one CPU do not move together and chase each
other back and forth. Linux only: elsewhere :func:`supported` is false and nothing is pinned.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

__all__ = [
    "HOLD",
    "INTERVAL",
    "MARGIN",
    "CpuPinner",
    "choose",
    "cpu_times",
    "first_cpu",
    "pinned_processes",
    "supported",
]

log = logging.getLogger("gateway.server")

INTERVAL = 1.0  # seconds between two looks at how busy each CPU was
MARGIN = 0.25  # of a CPU: how much idler another CPU must have been to move there
HOLD = 3  # rounds after a move before the next choice (the others' moves show by then)

# cpu -> (busy, total) clock ticks since boot
CpuTimes = Mapping[int, tuple[int, int]]


def supported() -> bool:
    """True where threads can be pinned (Linux: ``os.sched_setaffinity`` and ``/proc``)."""
    return hasattr(os, "sched_setaffinity") and Path("/proc/stat").exists()


def cpu_times(stat: str | None = None) -> dict[int, tuple[int, int]]:
    """Busy and total clock ticks of each CPU since boot, from ``/proc/stat`` (or ``stat``).

    Busy is everything but ``idle`` and ``iowait``; guest time is already in ``user``."""
    text = stat if stat is not None else Path("/proc/stat").read_text()
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit():
            continue
        ticks = [int(x) for x in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        total = sum(ticks)
        out[int(name[3:])] = (total - ticks[3] - ticks[4], total)
    return out


def choose(current: int, busy: Mapping[int, float], own: float, margin: float = MARGIN) -> int:
    """The CPU for the Python threads for the next interval.

    Args:
        current: the CPU they are on now.
        busy: each allowed CPU's busy share of the last interval (0 to 1), this process's
            own use included.
        own: the share of one CPU this process used in the last interval (nearly all of it on
            ``current``).
        margin: how much idler (share of a CPU) another CPU must have been to move there.

    Returns:
        ``current``, unless another CPU was busier with others' work by less than what others
        did on ``current`` minus ``margin``; then the idlest such CPU. A ``current`` that is
        no longer allowed gives the idlest allowed CPU.
    """
    if not busy:
        return current
    idlest = min(sorted(busy), key=lambda c: busy[c] if c != current else 2.0)
    if current not in busy:
        return idlest
    others_here = max(0.0, busy[current] - own)
    if idlest != current and busy[idlest] + margin <= others_here:
        return idlest
    return current


def first_cpu(allowed: Collection[int], pinned: Mapping[int, int], running_on: int) -> int:
    """The CPU to start on: the allowed one with the fewest other processes pinned to it
    (``pinned``: CPU -> how many), ``running_on`` among equals, else the lowest."""
    fewest = min(pinned.get(c, 0) for c in allowed)
    equals = sorted(c for c in allowed if pinned.get(c, 0) == fewest)
    return running_on if running_on in equals else equals[0]


def pinned_processes(proc: Path = Path("/proc")) -> dict[int, int]:
    """CPU -> how many other user-space processes have their main thread pinned to that CPU
    alone (kernel threads, pinned per CPU alike, are left out)."""
    counts: dict[int, int] = {}
    me = str(os.getpid())
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == me:
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # ended meanwhile, or not ours to read
            continue
        if "\nVmSize:" not in status:  # a kernel thread
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                value = line.split()[-1]
                if value.isdigit():
                    counts[int(value)] = counts.get(int(value), 0) + 1
                break
    return counts


def _python_threads() -> set[int]:
    return {t.native_id for t in threading.enumerate() if t.native_id is not None}


def _all_threads() -> set[int]:
    try:
        return {int(task.name) for task in Path("/proc/self/task").iterdir()}
    except OSError:
        return set()


def _current_cpu() -> int:
    """The CPU this process last ran on (field 39 of ``/proc/self/stat``)."""
    stat = Path("/proc/self/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[36])


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


class CpuPinner:
    """Keeps the process's Python threads on one allowed CPU, re-chosen every ``interval``.

    The functions that read the machine and set affinities are parameters, for tests.
    """

    def __init__(
        self,
        *,
        interval: float = INTERVAL,
        margin: float = MARGIN,
        allowed: Collection[int] | None = None,
        read_cpus: Callable[[], CpuTimes] = cpu_times,
        own_seconds: Callable[[], float] = _own_seconds,
        python_threads: Callable[[], set[int]] = _python_threads,
        all_threads: Callable[[], set[int]] = _all_threads,
        set_affinity: Callable[[int, Collection[int]], None] | None = None,
        get_affinity: Callable[[int], Collection[int]] | None = None,
        current_cpu: Callable[[], int] = _current_cpu,
        pinned: Callable[[], Mapping[int, int]] = pinned_processes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._margin = margin
        self.allowed = frozenset(allowed if allowed is not None else os.sched_getaffinity(0))
        self._read_cpus = read_cpus
        self._own_seconds = own_seconds
        self._python_threads = python_threads
        self._all_threads = all_threads
        # Looked up here, not as a default: the module imports where they do not exist.
        self._set_affinity = set_affinity or os.sched_setaffinity
        self._get_affinity = get_affinity or os.sched_getaffinity
        self._clock = clock
        self.cpu = first_cpu(self.allowed, pinned(), current_cpu())
        self._last: tuple[CpuTimes, float, float] | None = None
        self._hold = 0  # rounds left before the next choice
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Pin now, then re-choose and re-pin every interval in a daemon thread."""
        self.round()
        log.info(
            "Python threads on CPU %d of %s",
            self.cpu,
            ",".join(map(str, sorted(self.allowed))),
            extra={"event": "cpu-pin", "cpu": self.cpu},
        )
        self._thread = threading.Thread(target=self._run, name="cpu-pinner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop re-choosing and free every thread on all the allowed CPUs again."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for tid in self._all_threads():
            self._pin(tid, self.allowed)

    def _run(self) -> None:
        failing = False  # one warning per run of failed rounds, not one a second
        while not self._stop.wait(self._interval * random.uniform(0.75, 1.25)):  # noqa: S311
            try:
                self.round()
            except Exception as exc:  # a machine that stops answering must not end the node
                if not failing:
                    log.warning(
                        "could not re-pin the Python threads (%s: %s); trying again each round,"
                        " quietly until one succeeds",
                        type(exc).__name__,
                        exc,
                        extra={"event": "cpu-pin"},
                    )
                failing = True
            else:
                if failing:
                    log.info("Python threads pinned again", extra={"event": "cpu-pin"})
                failing = False

    def round(self) -> None:
        """Re-choose the CPU from the last interval's use (not on the first round), then pin
        every Python thread to it and free every other thread."""
        now = (self._read_cpus(), self._own_seconds(), self._clock())
        if self._hold > 0:
            self._hold -= 1
        elif self._last is not None:
            busy, own = _shares(self._last, now, self.allowed)
            cpu = choose(self.cpu, busy, own, self._margin)
            if cpu != self.cpu:
                log.info(
                    "Python threads moved from CPU %d to CPU %d",
                    self.cpu,
                    cpu,
                    extra={"event": "cpu-pin", "cpu": cpu, "busy": busy, "own": round(own, 3)},
                )
                self.cpu = cpu
                self._hold = HOLD
        self._last = now
        python = self._python_threads()
        for tid in self._all_threads():
            if tid in python:
                self._pin_python(tid)
            else:
                self._pin(tid, self.allowed)

    def _pin(self, tid: int, cpus: Collection[int]) -> None:
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            self._set_affinity(tid, cpus)

    def _pin_python(self, tid: int) -> None:
        try:
            self._set_affinity(tid, (self.cpu,))
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                return  # the thread ended meanwhile
            # The CPU is no longer the process's (its cpuset shrank, the kernel spread the
            # thread over what is left): what is left is allowed from now on.
            with contextlib.suppress(OSError):
                self._allow(frozenset(self._get_affinity(tid)))
                self._set_affinity(tid, (self.cpu,))

    def _allow(self, allowed: frozenset[int]) -> None:
        """The process may now use ``allowed`` only; a pinned CPU outside it is left."""
        if not allowed or self.cpu in allowed:
            return
        cpu = min(allowed)
        log.info(
            "Python threads moved from CPU %d to CPU %d: CPU %d is no longer allowed",
            self.cpu,
            cpu,
            self.cpu,
            extra={"event": "cpu-pin", "cpu": cpu},
        )
        self.allowed, self.cpu = allowed, cpu


def _shares(
    before: tuple[CpuTimes, float, float],
    after: tuple[CpuTimes, float, float],
    allowed: Collection[int],
) -> tuple[dict[int, float], float]:
    """Each allowed CPU's busy share between two readings, and this process's share of a CPU."""
    (cpus0, own0, t0), (cpus1, own1, t1) = before, after
    busy: dict[int, float] = {}
    for cpu in allowed:
        if cpu in cpus0 and cpu in cpus1:
            ticks = cpus1[cpu][1] - cpus0[cpu][1]
            busy[cpu] = (cpus1[cpu][0] - cpus0[cpu][0]) / ticks if ticks > 0 else 0.0
    own = (own1 - own0) / (t1 - t0) if t1 > t0 else 0.0
    return busy, own
