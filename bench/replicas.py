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

import multiprocessing
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench._report import Result, Scale, with_load_average
from bench.exchange import (
    SUBMIT_METHOD,
    Client,
    _closed_loop,
    _cpu_seconds,
    _own_cpu,
    _partner,
    _pid,
    _sized,
)
from bench.ledger import ORIGIN, SIGNER, _entry
from gateway.demo.cluster import NodeProcess
from gateway.errors import UnavailableError
from gateway.ledger import Ledger
from gateway.pki import Jurisdiction
from gateway.server import LISTEN_ADDRESS_FILE
from gateway.store import open_database
from tests.support import ALL, World, make_world

GROUP = "replicas"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECTIONS = 32
CN = Jurisdiction.CN


def server_url() -> str:
    """The PostgreSQL server the benchmark may create databases on."""
    return os.environ.get("CUSTOMS_TEST_POSTGRES", DEFAULT_URL)


def has_pgstore() -> bool:
    """Whether this tree's node can be configured onto PostgreSQL (``[storage]``, issue 14
    point 1). Whether it then really stores there is checked after each phase."""
    from gateway.server import config

    return hasattr(config, "StorageSettings")


def _tables(url: str) -> int:
    """How many tables the node created in ``url``'s database."""
    with psycopg.connect(url) as c:
        row = c.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """Create a database of a unique name on ``url``'s server; yield its URL; drop it."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(url)._replace(path=f"/{name}").geturl()
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


def _commits(url: str, seconds: float, connections: int, locked: bool) -> tuple[float, float]:
    """(durable commits/s, database CPU ms per commit) of ``connections`` threads each committing
    one 500-byte row per transaction in a closed loop; ``locked``: each transaction also updates
    one shared row first (as a ledger sequenced by a locked tree-state row does), so commits
    to it are serial."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(
            "CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, body bytea NOT NULL)"
        )
        c.execute("CREATE TABLE IF NOT EXISTS bench_head (id int PRIMARY KEY, size bigint)")
        c.execute("INSERT INTO bench_head VALUES (1, 0) ON CONFLICT DO NOTHING")
    opened = [psycopg.connect(url) for _ in range(connections)]
    body = os.urandom(500)
    counts = [0] * connections
    stop = threading.Event()
    barrier = threading.Barrier(connections + 1)

    def worker(i: int) -> None:
        c = opened[i]
        barrier.wait()
        while not stop.is_set():
            with c.transaction():
                if locked:
                    c.execute("UPDATE bench_head SET size = size + 1 WHERE id = 1")
                c.execute("INSERT INTO bench_rows (body) VALUES (%s)", (body,))
            counts[i] += 1

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
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
        for c in opened:
            c.close()
    total = sum(counts)
    return total / elapsed, cpu * 1000 / max(total, 1)


# -- load through nodes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """Submits/s through some replicas and the CPU seconds each party used meanwhile."""

    rate: float
    seconds: float
    replicas_cpu: float
    database_cpu: float
    clients_cpu: float
    transactions: int = 0  # committed in the database meanwhile (pg_stat_database)

    def per_submit(self, cpu: float) -> float:
        """``cpu`` seconds as ms per submit."""
        return cpu * 1000 / (self.rate * self.seconds)

    @property
    def database_share(self) -> float:
        """The database's CPU over all CPU the load used (replicas, database, clients)."""
        total = self.replicas_cpu + self.database_cpu + self.clients_cpu
        return self.database_cpu / total if total else float("nan")


def load(
    clients: list[Client], seconds: float, replicas: list[int], database: str | None
) -> Measured:
    """Group ``exchange``'s closed-loop client against each of ``clients`` at once, each in a
    process of its own, with the CPU of the ``replicas`` (process ids), of ``database``'s
    server processes (when on PostgreSQL) and of the clients over the same window."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    per_thread = int(seconds * 400) + 10
    processes = [
        ctx.Process(target=_closed_loop, args=(c, SUBMIT_METHOD, seconds, per_thread, out))
        for c in clients
    ]
    nodes, db = CpuMeter(), CpuMeter()
    nodes.start(replicas)
    commits = _commits_so_far(database) if database else 0
    if database:
        db.start(database_pids(database))
    for p in processes:
        p.start()
    answers = [out.get(timeout=seconds + 180) for _ in processes]
    replicas_cpu = nodes.stop(replicas)
    database_cpu = db.stop(database_pids(database)) if database else 0.0
    commits = _commits_so_far(database) - commits if database else 0
    for p in processes:
        p.join(10)
    errors = sum(a[1] for a in answers)
    if errors:
        raise RuntimeError(f"{errors} submits failed")
    elapsed = max(a[2] for a in answers)
    return Measured(
        sum(a[0] for a in answers) / elapsed,
        elapsed,
        replicas_cpu,
        database_cpu,
        sum(a[3] for a in answers),
        commits,
    )


def _commits_so_far(url: str) -> int:
    """Transactions committed in ``url``'s database so far (the statistics collector's count,
    flushed at most every second or so: read over windows of several seconds)."""
    dbname = conninfo_to_dict(url).get("dbname")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SELECT pg_stat_clear_snapshot()")
        row = c.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)
        ).fetchone()
    return int(row[0]) if row else 0


def _ledger_appender(
    where: str, callers: int, seconds: float, offset: int, out: Any, release: Any
) -> None:
    """``callers`` threads append to the ledger at ``where`` (a PostgreSQL URL or a SQLite file)
    in a closed loop for ``seconds``, each append durable before the next; in a process of its
    own, as a replica's writer would be. Puts (appends, seconds, this process's CPU seconds),
    then waits for ``release``."""
    database = open_database(where if where.startswith("postgresql://") else None, Path(where))
    with Ledger.open(database, origin=ORIGIN, signer=SIGNER) as ledger:
        ledger.append(_entry(offset + 999_999_999))  # schema, connections, caches
        counts = [0] * callers
        barrier = threading.Barrier(callers + 1)
        deadline = [0.0]

        def work(t: int) -> None:
            barrier.wait()
            i = 0
            while time.perf_counter() < deadline[0]:
                ledger.append(_entry(offset + t * 10_000_000 + i))
                i += 1
            counts[t] = i

        threads = [threading.Thread(target=work, args=(t,)) for t in range(callers)]
        for t in threads:
            t.start()
        cpu = _own_cpu()
        started = time.perf_counter()
        deadline[0] = started + seconds
        barrier.wait()
        for t in threads:
            t.join()
        out.put((sum(counts), time.perf_counter() - started, _own_cpu() - cpu))
        release.wait(60)  # connections stay open until the parent has read the database's CPU
    database.close()


def ledgers(where: str, writers: int, seconds: float) -> Measured:
    """``writers`` processes appending to one ledger at ``where`` at once (32 threads each),
    with their CPU and, on PostgreSQL, the database's."""
    ctx = multiprocessing.get_context("spawn")
    out, release = ctx.Queue(), ctx.Event()
    # the first opener creates the schema; the others open it once it exists
    _ledger_appender_setup(where)
    processes = [
        ctx.Process(
            target=_ledger_appender, args=(where, 32, seconds, i * 1_000_000_000, out, release)
        )
        for i in range(writers)
    ]
    postgres = where.startswith("postgresql://")
    db, commits = CpuMeter(), _commits_so_far(where) if postgres else 0
    if postgres:
        db.start(database_pids(where))
    for p in processes:
        p.start()
    answers = [out.get(timeout=seconds + 120) for _ in processes]
    database_cpu = db.stop(database_pids(where)) if postgres else 0.0
    commits = _commits_so_far(where) - commits if postgres else 0
    release.set()
    for p in processes:
        p.join(10)
    elapsed = max(a[1] for a in answers)
    return Measured(
        sum(a[0] for a in answers) / elapsed,
        elapsed,
        sum(a[2] for a in answers),
        database_cpu,
        0.0,
        commits,
    )


def _ledger_appender_setup(where: str) -> None:
    database = open_database(where if where.startswith("postgresql://") else None, Path(where))
    Ledger.open(database, origin=ORIGIN, signer=SIGNER).close()
    database.close()


def storage_section(url: str) -> str:
    """The node config's ``[storage]`` table for a PostgreSQL database."""
    return f'\n[storage]\nurl = "{url}"\n'


class NodeStartError(RuntimeError):
    """A replica did not start; the message ends with its log's last lines."""


@contextmanager
def replicas(world: World, root: Path, n: int, database: str | None) -> Iterator[list[NodeProcess]]:
    """``n`` CN ``serve`` processes on port 0, each with a data directory of its own, all on
    ``database`` (SQLite in the data directory when None); the peers are absent."""
    processes = []
    for i in range(n):  # a directory each: the config is written beside the data directory
        config = _sized(
            world.write_config(
                CN,
                root / f"replica-{i}" / "cn-data",
                peers={p: root / f"{p.value.lower()}-data" / LISTEN_ADDRESS_FILE
                       for p in ALL if p is not CN},
            )
        )  # fmt: skip
        if database:
            config.write_text(config.read_text() + storage_section(database))
        processes.append(NodeProcess(CN, config, root / f"replica-{i}" / "cn.log"))
    try:
        for p in processes:
            try:
                p.start(timeout=60)  # a busy shared machine takes a while to import a node
            except UnavailableError as exc:  # the node's own line says why
                raise NodeStartError(f"{exc}: {p.log.read_text()[-600:]}") from None
        yield processes
    finally:
        for p in processes:
            p.stop()


def _through(world: World, nodes: list[NodeProcess], seconds: float, db: str | None) -> Measured:
    clients = [_partner(world, CN, n.address) for n in nodes]
    return load(clients, seconds, [_pid(n) for n in nodes], db)


def run(scale: Scale) -> list[Result]:
    """The group's rows, ending with the machine's load average before and after."""
    return with_load_average(GROUP, lambda: _run(scale))


def _run(scale: Scale) -> list[Result]:
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
        alone = {
            (n, locked): _commits(db, seconds / 2, n, locked)
            for n, locked in ((1, False), (CONNECTIONS, False), (CONNECTIONS, True))
        }
    (one, _), (many, many_cpu), (serial, _) = alone.values()
    results += [
        Result(GROUP, "PostgreSQL alone: durable 500-byte commits/s, 1 connection", one,
               "commits/s"),
        Result(GROUP, f"PostgreSQL alone: the same, {CONNECTIONS} connections", many,
               "commits/s", "1 connection", one),
        Result(GROUP, "  database CPU per commit (backends + WAL writer)", many_cpu, "ms"),
        Result(GROUP, f"PostgreSQL alone: {CONNECTIONS} connections, each commit also "
               "updating one shared row", serial, "commits/s", "1 connection", one),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        root = Path(tmp)
        world = make_world(root / "pki")
        with replicas(world, root / "sqlite", 1, None) as nodes:
            lite = _through(world, nodes, seconds, None)
        results += [
            Result(GROUP, "SQLite node: durable submits/s, 32 callers", lite.rate, "calls/s"),
            Result(GROUP, "  node CPU per submit", lite.per_submit(lite.replicas_cpu), "ms"),
            Result(GROUP, "  client CPU per submit", lite.per_submit(lite.clients_cpu), "ms"),
            Result(GROUP, "  cores busy: node", lite.replicas_cpu / lite.seconds, "cores"),
            Result(GROUP, "  cores busy: clients", lite.clients_cpu / lite.seconds, "cores"),
        ]  # fmt: skip
        if not has_pgstore():
            missing = "node on PostgreSQL: not measured (no PostgreSQL store in this tree)"
            results.append(Result(GROUP, missing, float("nan"), "-"))
            return results
        results += _ledger_rows(root, url, seconds)
        for n in (1, 2):
            with fresh_database(url) as db:
                try:
                    with replicas(world, root / f"pg-{n}", n, db) as nodes:
                        measured = _through(world, nodes, seconds, db)
                except NodeStartError as exc:  # the store is there, the node is not on it yet
                    line = str(exc).rpartition("error: ")[2].splitlines()[0]
                    why = line.rpartition(": ")[2][:80]
                    results.append(Result(GROUP, f"node on PostgreSQL: does not start in this "
                                          f"tree ({why})", float("nan"), "-"))  # fmt: skip
                    break
                if not _tables(db):
                    raise RuntimeError("the node stored nothing in PostgreSQL: [storage] ignored")
            results += _rows(n, measured, lite)
    return results


def _ledger_rows(root: Path, url: str, seconds: float) -> list[Result]:
    """The ledger alone (no node) on SQLite, on PostgreSQL, and on PostgreSQL from two writer
    processes at once, as two replicas' ledgers would be."""
    lite = ledgers(str(root / "ledger.db"), 1, seconds)
    with fresh_database(url) as db:
        one = ledgers(db, 1, seconds)
    with fresh_database(url) as db:
        two = ledgers(db, 2, seconds)
    return [
        Result(GROUP, "ledger alone on SQLite: durable appends/s, 32 callers", lite.rate,
               "appends/s"),
        Result(GROUP, "ledger alone on PostgreSQL: the same", one.rate, "appends/s",
               "ledger on SQLite", lite.rate),
        Result(GROUP, "  writer process CPU per append", one.per_submit(one.replicas_cpu), "ms",
               "on SQLite", lite.per_submit(lite.replicas_cpu)),
        Result(GROUP, "  PostgreSQL CPU per append", one.per_submit(one.database_cpu), "ms"),
        Result(GROUP, "  PostgreSQL transactions per append", one.transactions /
               (one.rate * one.seconds), "xact"),
        Result(GROUP, "ledger alone on PostgreSQL, 2 writer processes (replicas): appends/s",
               two.rate, "appends/s", "1 writer process", one.rate),
        Result(GROUP, "  PostgreSQL transactions per append", two.transactions /
               (two.rate * two.seconds), "xact"),
    ]  # fmt: skip


def _rows(n: int, pg: Measured, lite: Measured) -> list[Result]:
    head = (
        Result(GROUP, "one replica on PostgreSQL: durable submits/s", pg.rate, "calls/s",
               "SQLite node, same run", lite.rate, target=0.7)
        if n == 1 else
        Result(GROUP, f"{n} replicas, one database: submits/s through all", pg.rate, "calls/s",
               "SQLite node, same run", lite.rate)
    )  # fmt: skip
    return [
        head,
        Result(GROUP, "  replicas' CPU per submit", pg.per_submit(pg.replicas_cpu), "ms",
               "SQLite node's", lite.per_submit(lite.replicas_cpu)),
        Result(GROUP, "  PostgreSQL CPU per submit (backends + WAL writer)",
               pg.per_submit(pg.database_cpu), "ms"),
        Result(GROUP, "  clients' CPU per submit", pg.per_submit(pg.clients_cpu), "ms"),
        Result(GROUP, "  database share of the load's CPU", 100 * pg.database_share, "%"),
        Result(GROUP, "  cores busy: replicas", pg.replicas_cpu / pg.seconds, "cores"),
        Result(GROUP, "  cores busy: PostgreSQL", pg.database_cpu / pg.seconds, "cores"),
        Result(GROUP, "  cores busy: clients", pg.clients_cpu / pg.seconds, "cores"),
        Result(GROUP, "  PostgreSQL transactions per submit (reads and group commits)",
               pg.transactions / (pg.rate * pg.seconds), "xact"),
    ]  # fmt: skip


__all__ = [
    "CpuMeter",
    "Measured",
    "database_pids",
    "fresh_database",
    "has_pgstore",
    "load",
    "replicas",
    "run",
    "storage_section",
]
