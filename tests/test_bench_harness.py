"""The benchmark harness measures what it says: its workload is valid, its /proc readings and its
fresh databases are real. Nothing here is timed; speed is measured only in ``make bench``."""

from __future__ import annotations

import datetime as dt
import os

import psycopg
import pytest

from bench.bulk import rss_mib, watchlist_entries
from bench.replicas import CpuMeter, database_pids, fresh_database, server_url
from gateway.domain.validate import validate_watchlist_entry


def test_bulk_workload_is_valid_and_distinct() -> None:
    now = dt.datetime.now(dt.UTC)
    entries = list(watchlist_entries(500, start=99_500, now=now))
    assert [v for e in entries for v in validate_watchlist_entry(e, now=now)] == []
    assert len({e.entry_id for e in entries}) == 500
    assert len({e.names[0].full_name for e in entries}) == 500
    assert len({e.identifiers[0].value for e in entries}) == 500


def test_proc_readings_of_this_process() -> None:
    current, peak = rss_mib(os.getpid())
    assert 0 < current <= peak
    meter = CpuMeter()
    meter.start([os.getpid()])
    sum(i * i for i in range(300_000))
    assert meter.stop([os.getpid()]) > 0


@pytest.mark.postgres
def test_fresh_database_is_created_and_dropped() -> None:
    url = server_url()
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no PostgreSQL at {url}")
    with fresh_database(url) as db, psycopg.connect(db, autocommit=True) as c:
        name = c.execute("SELECT current_database()").fetchone()
        assert name is not None
        assert name[0].startswith("bench_")
        assert c.info.backend_pid in database_pids(db)
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT 1 FROM pg_database WHERE datname = %s", name).fetchone() is None
