"""Issue 14's Done-when scenarios with real processes and a real PostgreSQL (ADR 0072, 0073).

(a) Two CN replicas share one PostgreSQL database, HK and MO run on SQLite and know CN by both
    replicas' addresses. Load goes through both replicas (client-side round robin); the replica
    holding the leases is killed with SIGKILL mid-run. Every acknowledged message is in CN's
    ledger once, reaches HK's and MO's partner streams exactly once and has one receipt from
    each; the three ledgers verify and reconcile (the `customs-gateway audit` CLI); the leases
    moved to the survivor, and its checkpoints, deliveries and witnessing went on.
(b) Both replicas appending at full speed make one ledger: the offline auditor verifies it, and
    its indexes run from 0 with no gap and no repeat.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
import pytest

from customs.gateway.v1 import partner_pb2, partner_pb2_grpc
from gateway.audit import open_source
from gateway.cli import main
from gateway.ledger import Entry, Event, decode_record
from gateway.pki import Jurisdiction, Role
from gateway.server import LISTEN_ADDRESS_FILE, load_config
from gateway.transport import secure_channel
from tests.exchange.conftest import notice_request
from tests.support import World, serve_process, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO
REPLICAS = ("cn-1", "cn-2")
JURISDICTION = {"cn-1": CN, "cn-2": CN, "hk": HK, "mo": MO}
SERVER = "checkpoint_interval_seconds = 0.5\nlease_seconds = 2.0"


def _data(root: Path, name: str) -> Path:
    return root / name / "data"


def _address_file(root: Path, name: str) -> Path:
    return _data(root, name) / LISTEN_ADDRESS_FILE


@dataclass
class Cluster:
    """CN as two replicas on PostgreSQL, HK and MO on SQLite, each a ``serve`` process."""

    world: World
    root: Path
    url: str
    configs: dict[str, Path] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    def write(self, *, peers: bool = True) -> None:
        cn_files = [_address_file(self.root, r) for r in REPLICAS]
        for name in REPLICAS:
            self.configs[name] = self.world.write_config(
                CN,
                _data(self.root, name),
                peers=(
                    {HK: _address_file(self.root, "hk"), MO: _address_file(self.root, "mo")}
                    if peers
                    else {}
                ),
                server=SERVER,
                storage=self.url,
            )
        if not peers:
            return
        for name, j, other in (("hk", HK, "mo"), ("mo", MO, "hk")):
            self.configs[name] = self.world.write_config(
                j,
                _data(self.root, name),
                peers={CN: cn_files, JURISDICTION[other]: _address_file(self.root, other)},
                server="checkpoint_interval_seconds = 0.5",
            )

    def serve(self, name: str) -> None:
        proc, address = serve_process(
            self.configs[name], self.root / f"{name}.log", JURISDICTION[name]
        )
        self.procs[name] = proc
        self.addresses[name] = address

    def stub(self, j: Jurisdiction, *names: str) -> partner_pb2_grpc.PartnerGatewayStub:
        identity = self.world.client_identity(self.world.cred(j, Role.PARTNER))
        channel = secure_channel(
            [self.addresses[n] for n in names],
            identity,
            load_config(self.configs[names[0]]).identity,
        )
        return partner_pb2_grpc.PartnerGatewayStub(channel)

    def fetch(self, name: str, out: Path, *extra: str) -> Path:
        """``name``'s ledger fetched live into ``out`` (``audit fetch``)."""
        export = self.try_fetch(name, out, *extra)
        assert export is not None
        return export

    def try_fetch(self, name: str, out: Path, *extra: str) -> Path | None:
        """As :meth:`fetch`; None when the fetch fails (its latest checkpoint not cosigned yet,
        for instance)."""
        auditor = self.world.cred(JURISDICTION[name], Role.AUDITOR)
        argv = ["audit", "fetch", "--node", self.addresses[name]]
        argv += ["--jurisdiction", JURISDICTION[name].value]
        argv += ["--cert", str(auditor.certificate), "--key", str(auditor.key)]
        argv += ["--trust-bundle", str(self.world.bundle), "--out", str(out), *extra]
        return out if main(argv) == 0 else None

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(world: World, tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    c = Cluster(world, tmp_path, postgres_url)
    try:
        yield c
    finally:
        c.close()


class Load:
    """Submitters sending seizure notices to CN through a channel; each notice is retried with
    the same request (same message id) until it is acknowledged."""

    def __init__(self, stub: partner_pb2_grpc.PartnerGatewayStub, recipients: list[Jurisdiction]):
        self.stub, self.recipients = stub, recipients
        self.acked: list[str] = []
        self.duplicates = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(4)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(60)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _run(self) -> None:
        while not self.stop.is_set():
            request = notice_request(CN, self.recipients)
            deadline = time.monotonic() + 30
            while True:
                try:
                    response = self.stub.SubmitSeizureNotice(request, timeout=5)
                except grpc.RpcError as exc:
                    if time.monotonic() > deadline:
                        with self._lock:
                            self.errors.append(f"{exc.code().name}: {exc.details()}")
                        return
                    time.sleep(0.1)
                    continue
                with self._lock:
                    self.acked.append(response.message_id)
                    self.duplicates += response.duplicate
                break


def _holders(url: str) -> dict[str, tuple[str, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT name, holder, epoch FROM gateway_leases").fetchall()
    return {name: (holder, epoch) for name, holder, epoch in rows}


def _pid(holder: str) -> int:
    return int(holder.split(":")[1])


def _records(path: Path) -> list[tuple[int, Entry]]:
    source = open_source(path)
    return [(index, decode_record(leaf).entry) for index, leaf in source.entries()]


def _stream_ids(stub: partner_pb2_grpc.PartnerGatewayStub, wanted: set[str]) -> list[str]:
    got: list[str] = []
    call = stub.StreamInbound(partner_pb2.StreamInboundRequest(), timeout=90)
    for message in call:
        got.append(message.message_id)
        if wanted <= set(got):
            break
    call.cancel()
    return got


def test_sigkill_of_a_cn_replica_loses_nothing_and_its_leases_move(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.write()
    for name in ("cn-1", "cn-2", "hk", "mo"):
        cluster.serve(name)
    holders = wait_for(
        lambda: (h := _holders(cluster.url)) and len(h) == 5 and h,
        what="every singleton's lease taken",
    )
    # Kill the replica holding HK's deliverer (the first started takes them all).
    doomed = next(n for n in REPLICAS if cluster.procs[n].pid == _pid(holders["deliver-HK"][0]))
    survivor = next(n for n in REPLICAS if n != doomed)

    load = Load(cluster.stub(CN, *REPLICAS), [HK, MO])
    load.start()
    try:
        wait_for(lambda: load.count() >= 40, timeout=60, what="40 acknowledged submits")
        cluster.procs[doomed].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        cluster.procs[doomed].wait(10)
        at_kill = load.count()
        # The leases move to the survivor within a few seconds (2 s leases, renewed each 0.5 s).
        survivor_pid = cluster.procs[survivor].pid
        after = wait_for(
            lambda: (
                (h := _holders(cluster.url))
                and {_pid(holder) for holder, _ in h.values()} == {survivor_pid}
                and h
            ),
            timeout=20,
            what="the leases taken over by the survivor",
        )
        moved = time.monotonic() - killed
        wait_for(lambda: load.count() >= at_kill + 40, timeout=90, what="40 more after the kill")
    finally:
        load.join()
    assert moved < 2.0 + 0.5 + 2.0, moved  # the lease, one renewal, slack for a loaded machine
    assert load.errors == []
    acked = set(load.acked)
    assert len(acked) == len(load.acked)  # one answer per message, duplicates or not

    # The leases moved: every one is the survivor's now, in a new epoch where it was the dead's.
    for name, (holder, epoch) in holders.items():
        if _pid(holder) == cluster.procs[doomed].pid:
            assert after[name][1] > epoch, name

    # Every acknowledged message reaches HK's and MO's partner streams, exactly once.
    for j, name in ((HK, "hk"), (MO, "mo")):
        got = _stream_ids(cluster.stub(j, name), acked)
        assert acked <= set(got), j
        assert len(got) == len(set(got)), f"{j}: a message streamed twice"

    # CN's ledger: one `sent` entry per acknowledged message, one receipt from each peer; the
    # survivor's checkpoints cover it all and are cosigned by HK and MO (witnessing went on).
    def cn_done() -> Path | None:
        export = cluster.try_fetch(survivor, tmp_path / "cn.export")
        if export is None:  # its latest checkpoint is not cosigned by both yet
            return None
        records = _records(export)
        receipts = {(e.message_id, e.counterpart) for _, e in records if e.event is Event.RECEIPT}
        wanted = {(uuid.UUID(m), p) for m in acked for p in ("HK", "MO")}
        notes = open_source(export).checkpoints()
        last_sent = max(i for i, e in records if e.event is Event.SENT)
        covered = any(
            "— hk.customs-exchange/witness " in n
            and "— mo.customs-exchange/witness " in n
            and int(n.splitlines()[1]) > last_sent
            for n in notes
        )
        return export if wanted <= receipts and covered else None

    export = wait_for(cn_done, timeout=90, what="CN's receipts and a cosigned checkpoint")
    records = _records(export)
    sent = collections.Counter(
        (e.message_id, e.counterpart) for _, e in records if e.event is Event.SENT
    )  # one `sent` entry per recipient
    assert {(uuid.UUID(m), p) for m in acked for p in ("HK", "MO")} <= set(sent)
    assert max(sent.values()) == 1, "a message recorded twice"
    receipts = collections.Counter(
        (e.message_id, e.counterpart) for _, e in records if e.event is Event.RECEIPT
    )
    assert max(receipts.values()) == 1, "a receipt recorded twice"

    # The three ledgers verify (default witness policy) and reconcile.
    exports = [export]
    exports += [cluster.fetch(n, tmp_path / f"{n}.export") for n in ("hk", "mo")]
    bundle = str(cluster.world.bundle)
    capsys.readouterr()
    for path in exports:
        assert main(["audit", "verify", str(path), "--trust-bundle", bundle, "--no-progress"]) == 0
    assert main(["audit", "reconcile", *map(str, exports)]) == 0
    assert "0 mismatches" in capsys.readouterr().out


def test_two_replicas_appending_at_full_speed_make_one_ledger(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.write(peers=False)
    for name in REPLICAS:
        cluster.serve(name)
    loads = [Load(cluster.stub(CN, name), [HK]) for name in REPLICAS]  # one per replica
    for load in loads:
        load.start()
    try:
        wait_for(lambda: all(x.count() >= 150 for x in loads), timeout=90, what="150 each")
    finally:
        for load in loads:
            load.join()
    assert [x.errors for x in loads] == [[], []]
    acked = [m for load in loads for m in load.acked]

    wanted = {uuid.UUID(m) for m in acked}

    def covered() -> list[tuple[int, Entry]] | None:
        """The export once a checkpoint covers every acknowledged message (an export ends at
        the latest checkpoint; CN has no witnesses here)."""
        records = _records(cluster.fetch("cn-2", tmp_path / "cn.export", "--no-witnesses"))
        sent = {e.message_id for _, e in records if e.event is Event.SENT}
        return records if wanted <= sent else None

    records = wait_for(covered, timeout=30, what="a checkpoint covering every submit")
    export = tmp_path / "cn.export"
    assert [i for i, _ in records] == list(range(len(records)))  # no gap, no repeat
    sent = collections.Counter(e.message_id for _, e in records if e.event is Event.SENT)
    assert sorted(sent) == sorted(uuid.UUID(m) for m in acked)
    assert set(sent.values()) == {1}
    capsys.readouterr()
    verify = ["audit", "verify", str(export), "--trust-bundle", str(cluster.world.bundle)]
    assert main([*verify, "--no-witnesses", "--no-progress"]) == 0, capsys.readouterr().out
