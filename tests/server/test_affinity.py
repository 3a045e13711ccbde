"""The node's Python threads on one CPU at a time (ADR 0086): which CPU, which threads, and
the real ``serve`` process pinning them."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Collection
from pathlib import Path

import pytest

from gateway.pki import Jurisdiction
from gateway.server.affinity import (
    HOLD,
    CpuPinner,
    choose,
    cpu_times,
    first_cpu,
    pinned_processes,
    supported,
)
from gateway.server.config import load_config
from tests.support import World, python_process

STAT = """\
cpu  900 0 300 7000 100 0 0 0 0 0
cpu0 500 0 200 3000 50 0 0 0 0 0
cpu1 400 0 100 4000 50 10 0 0 0 0
intr 12345 0 0
ctxt 999
"""


def test_cpu_times_reads_busy_and_total_ticks_of_each_cpu() -> None:
    # busy leaves out idle and iowait; the "cpu" line of all CPUs is not a CPU
    assert cpu_times(STAT) == {0: (700, 3750), 1: (510, 4560)}


@pytest.mark.parametrize(
    ("current", "busy", "own", "expected"),
    [
        # the node alone uses its CPU: staying is right, however busy the CPU looks
        pytest.param(0, {0: 1.0, 1: 0.1}, 0.95, 0, id="busy-with-itself-stays"),
        # another process shares the node's CPU while the other one idles: move
        pytest.param(0, {0: 1.0, 1: 0.1}, 0.4, 1, id="crowded-moves-to-the-idle-cpu"),
        # others use both CPUs about as much: not worth a move (no chasing back and forth)
        pytest.param(0, {0: 0.9, 1: 0.5}, 0.3, 0, id="within-the-margin-stays"),
        pytest.param(1, {0: 0.2, 1: 0.5, 2: 0.05}, 0.0, 2, id="the-idlest-of-several"),
        # the CPU it was on is no longer allowed (a cpuset changed): the idlest allowed one
        pytest.param(3, {0: 0.7, 1: 0.2}, 0.5, 1, id="current-gone"),
        pytest.param(0, {}, 0.5, 0, id="nothing-known-stays"),
    ],
)
def test_choose(current: int, busy: dict[int, float], own: float, expected: int) -> None:
    assert choose(current, busy, own, margin=0.25) == expected


@pytest.mark.parametrize(
    ("pinned", "running_on", "expected"),
    [
        pytest.param({}, 1, 1, id="none-pinned-stays-where-it-runs"),
        # a second node on the machine takes the other CPU, wherever it runs
        pytest.param({1: 1}, 1, 0, id="second-node-spreads"),
        pytest.param({0: 1, 1: 1}, 1, 1, id="third-node-among-equals"),
        pytest.param({0: 2, 1: 1, 2: 1}, 0, 1, id="fewest-then-lowest"),
        pytest.param({5: 3}, 5, 0, id="not-allowed-cpus-ignored"),
    ],
)
def test_first_cpu(pinned: dict[int, int], running_on: int, expected: int) -> None:
    allowed = {0, 1, 2} if 2 in pinned else {0, 1}
    assert first_cpu(allowed, pinned, running_on) == expected


def test_pinned_processes_counts_user_processes_pinned_to_one_cpu(tmp_path: Path) -> None:
    def process(pid: int, allowed: str, kernel: bool = False) -> None:
        (tmp_path / str(pid)).mkdir()
        vm = "" if kernel else "VmSize:\t   48308 kB\n"
        text = f"Name:\tx\nKthread:\t{int(kernel)}\n{vm}Cpus_allowed_list:\t{allowed}\n"
        (tmp_path / str(pid) / "status").write_text(text)

    process(10, "1")  # another node
    process(11, "1")
    process(12, "0-1")  # free
    process(13, "0,1")
    process(14, "0", kernel=True)  # a per-CPU kernel thread
    process(os.getpid(), "0")  # this process itself
    (tmp_path / "15").mkdir()  # ended before its status was read
    (tmp_path / "self").mkdir()
    assert pinned_processes(tmp_path) == {1: 2}


class _Machine:
    """A fake machine: CPU ticks advanced by hand, threads, and the affinities set."""

    def __init__(self) -> None:
        self.ticks = {0: (0, 0), 1: (0, 0)}
        self.own = 0.0
        self.now = 0.0
        self.python = {11, 12}
        self.native = {21}
        self.pinned: dict[int, frozenset[int]] = {}

    def spend(self, busy: dict[int, int], own: float, seconds: float = 1.0) -> None:
        """One interval of ``seconds`` (100 ticks each): ``busy`` ticks used per CPU."""
        for cpu, used in busy.items():
            b, t = self.ticks[cpu]
            self.ticks[cpu] = (b + used, t + int(100 * seconds))
        self.own += own * seconds
        self.now += seconds

    def set_affinity(self, tid: int, cpus: Collection[int]) -> None:
        if tid == 99:
            raise ProcessLookupError(3, "No such process")  # ended meanwhile
        self.pinned[tid] = frozenset(cpus)

    def pinner(self) -> CpuPinner:
        return CpuPinner(
            allowed={0, 1},
            read_cpus=lambda: dict(self.ticks),
            own_seconds=lambda: self.own,
            python_threads=lambda: set(self.python),
            all_threads=lambda: self.python | self.native | {99},
            set_affinity=self.set_affinity,
            current_cpu=lambda: 1,
            pinned=lambda: {},
            clock=lambda: self.now,
        )


def test_python_threads_go_to_one_cpu_and_native_ones_stay_free() -> None:
    machine = _Machine()
    pinner = machine.pinner()
    pinner.round()
    # first round: the CPU the process runs on; a thread that ended is passed over
    assert machine.pinned == {11: {1}, 12: {1}, 21: {0, 1}}
    machine.python.add(13)  # a thread started since (a worker of a growing pool)
    machine.native.add(22)  # a native one that inherited the pin from its creator
    machine.pinned[22] = frozenset({1})
    machine.spend({0: 10, 1: 60}, own=0.55)
    pinner.round()
    assert machine.pinned == {11: {1}, 12: {1}, 13: {1}, 21: {0, 1}, 22: {0, 1}}


def test_the_threads_move_when_others_crowd_their_cpu(caplog: pytest.LogCaptureFixture) -> None:
    machine = _Machine()
    pinner = machine.pinner()
    pinner.round()
    machine.spend({0: 5, 1: 100}, own=0.5)  # half of CPU 1 is someone else's
    with caplog.at_level(logging.INFO, logger="gateway.server"):
        pinner.round()
    assert pinner.cpu == 0
    assert machine.pinned[11] == {0}
    assert machine.pinned[12] == {0}
    moved = [r for r in caplog.records if getattr(r, "event", None) == "cpu-pin"]
    assert [r.getMessage() for r in moved] == ["Python threads moved from CPU 1 to CPU 0"]
    # the node now busy on CPU 0 by itself: it stays there
    for _ in range(HOLD + 2):
        machine.spend({0: 95, 1: 0}, own=0.9)
        pinner.round()
        assert pinner.cpu == 0


def test_after_a_move_the_threads_stay_a_while() -> None:
    """Two nodes crowding one CPU may both move at once; each then waits HOLD rounds, so
    they do not chase each other back and forth every second."""
    machine = _Machine()
    pinner = machine.pinner()
    pinner.round()
    machine.spend({0: 5, 1: 100}, own=0.5)
    pinner.round()
    assert pinner.cpu == 0
    for _ in range(HOLD):  # CPU 0 now crowded by the other node that moved too
        machine.spend({0: 100, 1: 5}, own=0.5)
        pinner.round()
        assert pinner.cpu == 0
    machine.spend({0: 100, 1: 5}, own=0.5)  # still so after the hold: move
    pinner.round()
    assert pinner.cpu == 1
    assert machine.pinned[11] == {1}


def test_stop_frees_every_thread() -> None:
    machine = _Machine()
    pinner = machine.pinner()
    pinner.start()
    pinner.stop()
    assert machine.pinned == {11: {0, 1}, 12: {0, 1}, 21: {0, 1}}


def test_rounds_that_keep_failing_warn_once_and_say_when_pinning_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A machine whose /proc stops answering must not fill the log with a traceback a second."""
    machine = _Machine()
    broken = threading.Event()
    rounds = threading.Semaphore(0)

    def read_cpus() -> dict[int, tuple[int, int]]:
        rounds.release()
        if broken.is_set():
            raise PermissionError(13, "Permission denied", "/proc/stat")
        return dict(machine.ticks)

    pinner = CpuPinner(
        allowed={0, 1},
        interval=0.01,
        read_cpus=read_cpus,
        own_seconds=lambda: machine.own,
        python_threads=lambda: set(machine.python),
        all_threads=lambda: machine.python | machine.native,
        set_affinity=machine.set_affinity,
        current_cpu=lambda: 1,
        pinned=lambda: {},
        clock=lambda: machine.now,
    )
    with caplog.at_level(logging.INFO, logger="gateway.server"):
        pinner.start()  # its first round, in the caller, works
        broken.set()
        try:
            for _ in range(5):
                assert rounds.acquire(timeout=10)
            broken.clear()
            for _ in range(3):
                assert rounds.acquire(timeout=10)
        finally:
            pinner.stop()
    lines = [r for r in caplog.records if getattr(r, "event", None) == "cpu-pin"]
    assert lines[0].getMessage().startswith("Python threads on CPU 1")  # start's own line
    lines = lines[1:]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.INFO]
    assert "could not re-pin the Python threads (PermissionError" in lines[0].getMessage()
    assert lines[0].exc_info is None  # one line, no traceback
    assert lines[1].getMessage() == "Python threads pinned again"


class _Cpuset(_Machine):
    """A machine whose cpuset the operator (or Kubernetes' CPU manager) changes at run time:
    as the kernel does, every mask is cut to the new set (reset to it where nothing is left),
    and a mask with no allowed CPU is refused (EINVAL)."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks = {0: (0, 0), 1: (0, 0), 2: (0, 0)}
        self.cpuset = frozenset({0, 1, 2})

    def shrink(self, cpuset: set[int]) -> None:
        self.cpuset = frozenset(cpuset)
        for tid, cpus in self.pinned.items():
            self.pinned[tid] = cpus & self.cpuset or self.cpuset

    def set_affinity(self, tid: int, cpus: Collection[int]) -> None:
        if not set(cpus) & self.cpuset:
            raise OSError(errno.EINVAL, "Invalid argument")
        super().set_affinity(tid, set(cpus) & self.cpuset)

    def pinner(self) -> CpuPinner:
        return CpuPinner(
            allowed=self.cpuset,
            read_cpus=lambda: dict(self.ticks),
            own_seconds=lambda: self.own,
            python_threads=lambda: set(self.python),
            all_threads=lambda: self.python | self.native,
            set_affinity=self.set_affinity,
            get_affinity=lambda tid: self.pinned.get(tid, self.cpuset),
            current_cpu=lambda: 1,
            pinned=lambda: {},
            clock=lambda: self.now,
        )


def test_a_cpuset_that_shrinks_under_the_pinned_cpu_moves_the_threads_within_it() -> None:
    """The CPU the threads were pinned to is taken from the process (Kubernetes' static CPU
    manager shrinks the shared pool when a pod gets CPUs of its own): the kernel frees the
    threads over what is left; the pinner pins them again, to one CPU still allowed."""
    machine = _Cpuset()
    pinner = machine.pinner()
    pinner.round()
    assert machine.pinned == {11: {1}, 12: {1}, 21: {0, 1, 2}}
    machine.shrink({0, 2})
    assert machine.pinned == {11: {0, 2}, 12: {0, 2}, 21: {0, 2}}  # free on two CPUs
    machine.spend({0: 50, 1: 0, 2: 50}, own=0.5)
    pinner.round()
    assert pinner.cpu in {0, 2}
    assert pinner.allowed == {0, 2}
    assert machine.pinned == {11: {pinner.cpu}, 12: {pinner.cpu}, 21: {0, 2}}


def _affinity(pid: int) -> dict[int, tuple[str, str]]:
    """tid -> (comm, Cpus_allowed_list) of every thread of process ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        allowed = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
        out[int(task.name)] = ((task / "comm").read_text().strip(), allowed.split()[1])
    return out


def _serve(world: World, tmp_path: Path, pin: bool) -> tuple[dict[int, tuple[str, str]], str]:
    """Start the real ``serve`` command; the affinity of each of its threads once it listens,
    and its log."""
    server = "" if pin else "pin_python_threads = false"
    config = world.write_config(Jurisdiction.HK, tmp_path / "data", peers={}, server=server)
    assert load_config(config).server.pin_python_threads is pin
    proc = python_process("-m", "gateway", "serve", "--config", str(config))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), line
        threads = _affinity(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        return threads, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


needs_two_cpus = pytest.mark.skipif(
    not supported() or len(os.sched_getaffinity(0)) < 2,
    reason="pinning needs Linux and at least two CPUs this process may use",
)


@needs_two_cpus
def test_serve_pins_its_python_threads_to_one_cpu(world: World, tmp_path: Path) -> None:
    threads, log = _serve(world, tmp_path, pin=True)
    mine = os.sched_getaffinity(0)
    everything = _cpu_list(mine)
    main_thread = threads[min(threads)]  # the process's own id is its main thread's
    assert main_thread[1] != everything
    assert int(main_thread[1]) in mine
    pinned = {allowed for comm, allowed in threads.values() if allowed != everything}
    assert pinned == {main_thread[1]}  # one CPU for all the pinned threads
    assert sum(allowed == main_thread[1] for _, allowed in threads.values()) >= 10  # the pool...
    native = [allowed for comm, allowed in threads.values() if comm.startswith("event_engine")]
    assert native  # ...not gRPC's own threads
    assert all(a == everything for a in native)
    said = [json.loads(x) for x in log.splitlines() if '"cpu-pin"' in x]
    assert said
    assert said[0]["message"].startswith(f"Python threads on CPU {main_thread[1]} of ")
    assert said[0]["cpu"] == int(main_thread[1])
    assert "Traceback" not in log
    assert all(json.loads(x)["level"] != "error" for x in log.splitlines() if x.startswith("{"))


@needs_two_cpus
def test_serve_leaves_threads_free_when_told(world: World, tmp_path: Path) -> None:
    threads, log = _serve(world, tmp_path, pin=False)
    everything = _cpu_list(os.sched_getaffinity(0))
    assert len(threads) >= 10
    assert all(allowed == everything for _, allowed in threads.values())
    assert '"event": "stopped"' in log
    assert '"cpu-pin"' not in log


def _cpu_list(cpus: set[int]) -> str:
    """``Cpus_allowed_list`` of ``cpus`` as the kernel writes it (``0-3,6``)."""
    ordered = sorted(cpus)
    runs: list[list[int]] = []
    for cpu in ordered:
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def test_where_threads_cannot_be_pinned_serve_still_imports_and_pins_nothing() -> None:
    """macOS and Windows have no ``os.sched_setaffinity``: nothing may need it at import."""
    program = (
        "import os\n"
        "del os.sched_setaffinity, os.sched_getaffinity\n"
        "import gateway.cli.serve\n"
        "from gateway.server.affinity import supported\n"
        "print(supported())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


@pytest.mark.skipif(not supported(), reason="pinning needs Linux")
def test_a_node_that_cannot_pin_still_serves(world: World, tmp_path: Path) -> None:
    """Pinning is an optimisation: a machine that will not say which CPU the process runs on
    (``/proc/self/stat`` unreadable here) leaves the threads free, and the node serves and
    stops as usual, without a traceback."""
    config = world.write_config(Jurisdiction.HK, tmp_path / "data", peers={})
    program = (
        "import pathlib, sys\n"
        "read = pathlib.Path.read_text\n"
        "def refused(self, *args, **kwargs):\n"
        "    if str(self) == '/proc/self/stat':\n"
        "        raise PermissionError(13, 'Permission denied', str(self))\n"
        "    return read(self, *args, **kwargs)\n"
        "pathlib.Path.read_text = refused\n"
        "from gateway.cli import main\n"
        f"sys.exit(main(['serve', '--config', {str(config)!r}]))\n"
    )
    proc = python_process("-c", program)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=30)
        assert line.startswith("listening on "), log
        assert proc.returncode == 0, log
        assert "Traceback" not in log
        said = [json.loads(x) for x in log.splitlines() if '"cpu-pin"' in x]
        assert [(s["level"], s["message"]) for s in said] == [
            (
                "warning",
                "Python threads left free: cannot pin them: [Errno 13] Permission denied: "
                "'/proc/self/stat'",
            )
        ]
    finally:
        if proc.poll() is None:
            proc.kill()
