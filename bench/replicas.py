"""Replica benchmarks (issue 14): a node on PostgreSQL against the same node on SQLite, and two
replicas of one node on one database, with where the CPU goes.

Method:

- The server is ``CUSTOMS_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
  Each phase that uses it creates a fresh database (``bench_<random>``) and drops it after.
- Load: group ``exchange``'s closed-loop client (32 threads on one mutual-TLS channel as the CN
  partner, seizure notices, fresh ids, in a process of its own) for a fixed time; with two
  replicas, one such client per replica, at the same time. Only CN runs: its deliveries to the
  absent peers fail and back off, so the number is the submit path, as in group ``exchange``.
- CPU, from ``/proc`` (Linux only), over the same window: the replicas' processes; PostgreSQL's
  backends connected to the bench's database plus its WAL writer; the clients' own processes.
  The database's share is its CPU over the sum of the three. PostgreSQL runs on this machine,
  so the shares add up to what the two cores did for the load.
- ``PostgreSQL alone`` rows measure the database without a node: 32 connections, each
  committing one 500-byte row per transaction in a closed loop (``synchronous_commit = on``, as
  the node's store needs), for the cost of a durable commit on this machine's server.

Rows that need code not in this tree (the PostgreSQL store, the replicas' leases) say so and
measure what can be measured without it.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench._report import Result, Scale
from bench.exchange import SUBMIT_METHOD, Client, _closed_loop, _cpu_seconds

GROUP = "replicas"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECTIONS = 32


def server_url() -> str:
    """The PostgreSQL server the benchmark may create databases on."""
    return os.environ.get("CUSTOMS_TEST_POSTGRES", DEFAULT_URL)


def has_pgstore() -> bool:
    """Whether this tree has the PostgreSQL store (issue 14 point 1)."""
    return importlib.util.find_spec("gateway.store") is not None


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """Create a database of a unique name on ``url``'s server; yield its URL; drop it."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(url, dbname=name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_pids(url: str) -> list[int]:
    """PostgreSQL server processes working for ``url``'s database: its backends and the WAL
    writer (asked of the server; the processes must be on this machine for their CPU)."""
    dbname = conninfo_to_dict(url).get("dbname")
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE (datname = %s AND pid <> pg_backend_pid()) OR backend_type = 'walwriter'",
            (dbname,),
        ).fetchall()
    return [int(pid) for (pid,) in rows]


class CpuMeter:
    """CPU seconds of a changing set of processes over a window: ``start`` notes each known
    process's CPU; ``stop`` counts what each (also those first seen then) used since."""

    def __init__(self) -> None:
        self._before: dict[int, float] = {}

    def start(self, pids: list[int]) -> None:
        self._before = {pid: _cpu_seconds(pid) for pid in pids}

    def stop(self, pids: list[int]) -> float:
        """CPU seconds used by ``pids`` since ``start`` (0 before for processes new since)."""
        used = 0.0
        for pid in set(pids) | set(self._before):
            now = _cpu_seconds(pid)
            if now == now:  # not NaN: the process is still there
                used += now - self._before.get(pid, 0.0)
        return used


# -- PostgreSQL alone -------------------------------------------------------------------------


def _commits(url: str, seconds: float) -> tuple[float, float]:
    """(durable commits/s, database CPU ms per commit) of CONNECTIONS threads each committing
    one 500-byte row per transaction in a closed loop."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE bench_rows (id bigserial PRIMARY KEY, body bytea NOT NULL)")
    connections = [psycopg.connect(url, autocommit=True) for _ in range(CONNECTIONS)]
    body = os.urandom(500)
    counts = [0] * CONNECTIONS
    stop = threading.Event()
    barrier = threading.Barrier(CONNECTIONS + 1)

    def worker(i: int) -> None:
        c = connections[i]
        barrier.wait()
        while not stop.is_set():
            c.execute("INSERT INTO bench_rows (body) VALUES (%s)", (body,))
            counts[i] += 1

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
        for t in threads:
            t.start()
        meter = CpuMeter()
        meter.start(database_pids(url))
        started = time.perf_counter()
        barrier.wait()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        cpu = meter.stop(database_pids(url))
    finally:
        for c in connections:
            c.close()
    total = sum(counts)
    return total / elapsed, cpu * 1000 / max(total, 1)


# -- load through nodes -----------------------------------------------------------------------


def load(clients: list[Client], seconds: float) -> tuple[float, float]:
    """Group ``exchange``'s closed-loop client against each of ``clients`` at once, each in a
    process of its own: (total calls/s, the clients' CPU seconds)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    per_thread = int(seconds * 400) + 10
    processes = [
        ctx.Process(target=_closed_loop, args=(c, SUBMIT_METHOD, seconds, per_thread, out))
        for c in clients
    ]
    for p in processes:
        p.start()
    answers = [out.get(timeout=seconds + 180) for _ in processes]
    for p in processes:
        p.join(10)
    errors = sum(a[1] for a in answers)
    if errors:
        raise RuntimeError(f"{errors} submits failed")
    return sum(a[0] / a[2] for a in answers), sum(a[3] for a in answers)


def run(scale: Scale) -> list[Result]:
    seconds = 2.0 if scale.quick else 8.0
    url = server_url()
    try:
        with psycopg.connect(url, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        return [Result(GROUP, f"not run: no PostgreSQL at {url} ({exc.__class__.__name__})",
                       float("nan"), "-")]  # fmt: skip
    results: list[Result] = []
    with fresh_database(url) as db:
        rate, cpu = _commits(db, seconds)
    results += [
        Result(GROUP, f"PostgreSQL alone: durable 500-byte commits/s, {CONNECTIONS} connections",
               rate, "commits/s"),
        Result(GROUP, "  database CPU per commit (backends + WAL writer)", cpu, "ms"),
    ]  # fmt: skip
    if not has_pgstore():
        missing = "node on PostgreSQL: not measured (no PostgreSQL store in this tree)"
        results.append(Result(GROUP, missing, float("nan"), "-"))
    return results


__all__ = ["CpuMeter", "database_pids", "fresh_database", "has_pgstore", "load", "run"]
