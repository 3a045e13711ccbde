"""Leases in PostgreSQL (ADR 0072): one holder at a time, takeover after a holder's death
(SIGKILL of a real process), a graceful hand-over, and fencing of a holder that lost its lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from customs.gateway.v1 import partner_pb2
from gateway.exchange.delivery import Deliverer
from gateway.ledger import Event
from gateway.store.leases import (
    ALWAYS_HELD,
    LeaseKeeper,
    LeaseLostError,
    PostgresLease,
    create_lease_table,
)
from tests.exchange.conftest import CN, HK, Trio, notice_request, write_trio_configs
from tests.support import World, wait_for

pytestmark = pytest.mark.postgres

NAMES = ["checkpointer", "deliver-HK"]


@pytest.fixture
def url(postgres_url: str) -> str:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        create_lease_table(conn)
    return postgres_url


class _Portable:
    """The gateway's portable SQL (``?`` placeholders) on a psycopg connection, as the
    store's PostgreSQL connection takes it."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), parameters)


def _keeper(url: str, ttl: float, holder: str) -> LeaseKeeper:
    return LeaseKeeper(lambda: psycopg.connect(url), NAMES, ttl=ttl, holder=holder)


def test_one_replica_holds_each_lease(url: str) -> None:
    a, b = _keeper(url, 2.0, "a"), _keeper(url, 2.0, "b")
    a.start()
    b.start()
    try:
        for _ in range(3):  # renewals keep them where they are
            a.renew_once()
            b.renew_once()
        assert all(a.lease(n).held() for n in NAMES)
        assert not any(b.lease(n).held() for n in NAMES)
        assert a.lease("checkpointer").epoch == 1
        assert a.lease("checkpointer").tenures == 1
    finally:
        a.stop()
        b.stop()


def test_a_graceful_stop_hands_the_leases_over_at_once(url: str) -> None:
    a, b = _keeper(url, 30.0, "a"), _keeper(url, 30.0, "b")
    a.start()
    b.start()
    try:
        a.stop(release=True)
        b.renew_once()  # its next round, long before the 30 s would have run out
        assert all(b.lease(n).held() for n in NAMES)
        assert b.lease("deliver-HK").epoch == 2
    finally:
        b.stop()


_HOLDER = """
import sys, time, psycopg
from gateway.store.leases import LeaseKeeper
keeper = LeaseKeeper(lambda: psycopg.connect(sys.argv[1]), ["checkpointer", "deliver-HK"],
                     ttl=1.0, holder="doomed")
keeper.start()
assert keeper.lease("checkpointer").held()
print("held", flush=True)
time.sleep(60)
"""


def test_a_killed_holder_s_leases_move_within_a_few_seconds(url: str) -> None:
    """SIGKILL: no release, no clean close; the survivor takes over after the expiry."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url], stdout=subprocess.PIPE, text=True
    )
    survivor = _keeper(url, 1.0, "survivor")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        survivor.start()
        assert not survivor.lease("checkpointer").held()
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        holder.wait()
        for name in NAMES:
            wait_for(survivor.lease(name).held, timeout=10, what=f"lease {name} taken over")
        took = time.monotonic() - killed
        assert took < 1.0 + 2 * survivor.interval + 1.0, took  # ttl, a renewal, slack
        assert survivor.lease("checkpointer").epoch == 2
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        survivor.stop()


def test_a_holder_that_lost_its_lease_cannot_commit(url: str) -> None:
    """The second wall: the holder still believes it holds the lease (its own clock), the
    database says the lease ran out and another replica took it: the work rolls back."""
    a, b = _keeper(url, 30.0, "a"), _keeper(url, 30.0, "b")
    a.renew_once()
    lease = a.lease("deliver-HK")
    with psycopg.connect(url) as work:
        work.execute("CREATE TABLE receipts (n INTEGER)")
        with work.transaction():
            lease.fence(_Portable(work))
            work.execute("INSERT INTO receipts VALUES (1)")
        # a clock jump, a pause longer than the lease: it runs out in the database
        work.execute("UPDATE gateway_leases SET expires_at = clock_timestamp()")
        work.commit()
        b.renew_once()
        assert b.lease("deliver-HK").held()
        assert lease.held()  # a's own view has not caught up

        def late_work() -> None:
            with work.transaction():
                work.execute("INSERT INTO receipts VALUES (2)")
                lease.fence(_Portable(work))

        with pytest.raises(LeaseLostError, match=r"lease deliver-HK \(epoch 1\) is no longer"):
            late_work()
        assert work.execute("SELECT n FROM receipts").fetchall() == [(1,)]
    a.stop(release=False)
    b.stop()


def test_a_takeover_waits_for_the_fenced_commit(url: str) -> None:
    """Fenced work holds the lease row: a replica taking the lease over after its expiry waits
    until that work has committed, so no work of the old epoch commits after the takeover."""
    a, b = _keeper(url, 0.6, "a"), _keeper(url, 0.6, "b")
    a.renew_once()
    with psycopg.connect(url) as work:
        with work.transaction():
            a.lease("checkpointer").fence(_Portable(work))
            time.sleep(0.7)  # the lease runs out in the database while the work is open
            taking = threading.Thread(target=b.renew_once)
            taking.start()
            wait_for(
                lambda: _waiting_on_lock(url), timeout=5, what="the takeover waiting on the row"
            )
            assert not b.lease("checkpointer").held()
        taking.join(5)
    assert b.lease("checkpointer").held()
    assert b.lease("checkpointer").epoch == 2
    a.stop(release=False)
    b.stop()


def _waiting_on_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO gateway_leases%%' AND datname = current_database()"
        ).fetchone()
    return bool(row and row[0])


def test_sqlite_nodes_always_hold() -> None:
    assert ALWAYS_HELD.held()
    assert ALWAYS_HELD.wait(0)
    ALWAYS_HELD.fence(None)  # type: ignore[arg-type]  # nothing is checked, nothing to run


class _GateOnly:
    """A PostgreSQL lease for a node whose ledger is SQLite here: held and wait are the lease's;
    its fence is left out, as it runs SQL in the ledger's (here SQLite) transaction. Fencing is
    the test above; this one is the deliverer's gate."""

    def __init__(self, lease: PostgresLease) -> None:
        self.name, self._lease = lease.name, lease

    def held(self) -> bool:
        return self._lease.held()

    def wait(self, timeout: float) -> bool:
        return self._lease.wait(timeout)

    def fence(self, conn: object) -> None:
        pass


def test_a_deliverer_sends_only_while_its_replica_holds_the_lease(
    url: str, world: World, tmp_path: Path
) -> None:
    """The deliverer to HK stands by while another replica holds ``deliver-HK``: a submitted
    message stays queued, never attempted; once the lease is this replica's, it is delivered."""
    trio = Trio(world, tmp_path, write_trio_configs(world, tmp_path))
    other, ours = _keeper(url, 30.0, "other"), _keeper(url, 30.0, "ours")
    other.renew_once()
    ours.renew_once()
    try:
        for j in (CN, HK):
            trio.start(j)
        cn = trio.nodes[CN]
        cn.deliverers[HK].stop()  # this test's deliverer stands in for the node's own
        peer = next(p for p in cn.config.peers if p.jurisdiction is HK)
        lease = _GateOnly(ours.lease("deliver-HK"))
        deliverer = Deliverer(cn.exchange, HK, cn.peer_channel_factory(peer), lease=lease)
        deliverer.start()
        request = notice_request(CN, [HK])
        trio.partner(CN).SubmitSeizureNotice(request, timeout=10)
        wait_for(lambda: deliverer.standby, what="the deliverer standing by")
        status = trio.partner(CN).GetDeliveryStatus(
            partner_pb2.GetDeliveryStatusRequest(message_id=request.addressing.message_id)
        )
        (recipient,) = status.recipients
        assert recipient.attempts == 0
        assert recipient.state == partner_pb2.DELIVERY_STATE_QUEUED
        other.stop(release=True)
        ours.renew_once()
        wait_for(lambda: len(trio.entries(CN, Event.RECEIPT)) == 1, what="the delivery")
        assert not deliverer.standby
        deliverer.stop()
    finally:
        trio.close()
        ours.stop()
