"""``customs-gateway status`` on replicas (ADR 0072): which replica runs each singleton, read
from the database, and a lease that no replica holds any more is a problem to act on."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from gateway.cli import main
from gateway.pki import Jurisdiction, Role
from gateway.server import Node
from gateway.status import NodeStatus, ProblemKind, assess, status_with_certificate
from tests.support import World, wait_for

pytestmark = pytest.mark.postgres

CN = Jurisdiction.CN


def _status_of(world: World, node: Node) -> NodeStatus:
    monitor = world.issue(CN, Role.MONITOR, "ops")
    return status_with_certificate(node.address, monitor.certificate, monitor.key, world.bundle)


def test_status_names_the_holder_of_every_singleton(
    world: World, nodes: dict[str, Node], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = nodes["cn-1"], nodes["cn-2"]
    singletons = sorted(first.singletons())
    wait_for(
        lambda: all(
            any(k.leases[n].held() for k in (first.lease_keeper, second.lease_keeper) if k)
            for n in singletons
        ),
        what="every lease taken",
    )
    status = _status_of(world, first)
    assert first.lease_keeper is not None
    assert second.lease_keeper is not None
    assert status.storage == "postgresql"
    assert status.replica == first.lease_keeper.holder
    assert [lease.name for lease in status.leases] == singletons
    holders = {first.lease_keeper.holder, second.lease_keeper.holder}
    for lease in status.leases:
        assert lease.holder in holders
        assert lease.held
        assert lease.epoch >= 1
        assert lease.here == first.lease_keeper.leases[lease.name].held()
        assert 0 < lease.expires_in_seconds <= first.config.server.lease_seconds
    assert assess(status).ok

    monitor = world.issue(CN, Role.MONITOR, "ops-cli")
    argv = ["status", first.address, "--cert", str(monitor.certificate)]
    argv += ["--key", str(monitor.key), "--trust-bundle", str(world.bundle)]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"this one is {first.lease_keeper.holder}" in out
    assert "LEASE" in out
    assert "checkpointer" in out
    assert "deliver-HK" in out


def test_a_lease_no_replica_renews_is_a_problem(world: World, nodes: dict[str, Node]) -> None:
    """Moved forward in time (no sleeping): a lease run out for three lease lengths, and one
    never taken on a replica up that long, each name what has stopped."""
    status = _status_of(world, nodes["cn-1"])
    ttl = status.lease_seconds
    leases = list(status.leases)
    checkpointer = next(i for i, x in enumerate(leases) if x.name == "checkpointer")
    deliver = next(i for i, x in enumerate(leases) if x.name == "deliver-HK")
    leases[checkpointer] = dataclasses.replace(
        leases[checkpointer], expires_in_seconds=-3.5 * ttl, here=False
    )
    leases[deliver] = dataclasses.replace(leases[deliver], holder="", epoch=0)
    stale = dataclasses.replace(
        status,
        leases=tuple(leases),
        now=status.now + dt.timedelta(seconds=10 * ttl),
    )
    problems = [p for p in assess(stale).problems if p.kind is ProblemKind.LEASE_UNHELD]
    assert {p.subject for p in problems} == {"checkpointer", "deliver-HK"}
    text = " ".join(map(str, problems))
    assert "no checkpoints are made" in text
    assert "nothing is delivered to HK" in text
    # Just run out, or never taken but the replica just started: a takeover is still due.
    leases[checkpointer] = dataclasses.replace(leases[checkpointer], expires_in_seconds=-ttl)
    fresh = dataclasses.replace(status, leases=tuple(leases), now=status.started_at)
    assert not [p for p in assess(fresh).problems if p.kind is ProblemKind.LEASE_UNHELD]
