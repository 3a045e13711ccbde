"""LISTEN/NOTIFY wake-ups across replicas (ADR 0073): a commit that adds ledger entries wakes
every replica's listener, only once committed, and a listener whose connection is lost comes
back by itself."""

from __future__ import annotations

import threading

import psycopg
import pytest

from gateway.store.notify import Listener, create_ledger_trigger
from tests.support import wait_for

pytestmark = pytest.mark.postgres


@pytest.fixture
def url(postgres_url: str) -> str:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger_entries (idx BIGINT PRIMARY KEY)")
        create_ledger_trigger(conn)
        create_ledger_trigger(conn)  # idempotent: every replica runs it at start
    return postgres_url


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.n += 1


def test_a_commit_wakes_every_replica_once_it_is_committed(url: str) -> None:
    woken = [_Counter(), _Counter()]
    listeners = [Listener(lambda: psycopg.connect(url), [w]) for w in woken]
    for listener in listeners:
        listener.start()
    try:
        for listener in listeners:
            assert listener.listening.wait(5)
        wait_for(lambda: all(w.n == 1 for w in woken), what="the wake-up at LISTEN")
        with psycopg.connect(url) as open_one, psycopg.connect(url) as other:
            open_one.execute("INSERT INTO ledger_entries VALUES (0)")  # not committed yet
            with other.transaction():
                other.execute("INSERT INTO ledger_entries VALUES (1), (2)")
                other.execute("INSERT INTO ledger_entries VALUES (3)")
            # one wake-up for the committed transaction (its statements folded into one)...
            wait_for(lambda: all(w.n == 2 for w in woken), what="the committed insert's wake-up")
            assert [listener.received for listener in listeners] == [1, 1]  # ...not the open one
            open_one.commit()
            wait_for(lambda: all(w.n == 3 for w in woken), what="the second commit's wake-up")
    finally:
        for listener in listeners:
            listener.stop()


def test_a_listener_reconnects_and_wakes_everything_once(url: str) -> None:
    woken = _Counter()
    listener = Listener(lambda: psycopg.connect(url), [woken], retry_seconds=0.1)
    listener.start()
    try:
        assert listener.listening.wait(5)
        with psycopg.connect(url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
            ).fetchall()
            assert killed == [(True,)]
            wait_for(lambda: woken.n >= 2, what="the wake-up after reconnecting")
            assert listener.listening.wait(5)
            before = woken.n
            admin.execute("INSERT INTO ledger_entries VALUES (7)")
            wait_for(lambda: woken.n == before + 1, what="a notification after reconnecting")
    finally:
        listener.stop()
