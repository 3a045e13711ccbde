"""Where one bulk entry's CPU goes at one node, in-process (no gRPC): a tool, not a bench group.

``python -m bench.entry_cost [stage ...] [--n N] [--repeat R]`` times each stage of the per-entry
pipeline of a bulk publish on the benchmark's own entries (``bench.bulk.watchlist_entries``,
addressed to CN and MO from HK), in microseconds of this process's CPU per entry:

- ``parse``: the bulk request parsed from its bytes (what gRPC does before the handler);
- ``validate``: ``check_request`` (addressing and the entry, every rule);
- ``request_digest``: the deterministic serialization of the request and its SHA-256;
- ``seal``: the envelope header built, the payload serialized, the envelope signed (Ed25519);
- ``envelope_digest``: SHA-256 of the envelope's signed bytes;
- ``submit_many``: a whole bulk call of ``BATCH`` entries on a node in this process (HK, not
  started: no gRPC server, no deliveries): the above plus the idempotency and version reads,
  the ledger's group commit with fsync, the message, version and outbox rows, the watchlist
  view's update and the answer, per entry;
- ``open``: a recipient's ``open_envelope`` (verify and parse) of one sealed envelope;
- ``receipt``: ``sign_receipt`` of one receipt body.

Under ``valgrind --tool=callgrind`` (``--n`` small) the instruction counts of one stage are
repeatable whatever else the machine runs; with ``--threads`` the ``submit_many`` stage also
prints the CPU of each thread of this process (handler, ledger writer, ...) per entry.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bulk import BATCH, watchlist_entries
from customs.gateway.v1 import common_pb2, envelope_pb2, partner_pb2
from gateway.domain.kinds import check_request
from gateway.envelope import envelope_digest, open_envelope, seal, sign_receipt
from gateway.exchange.core import Mode
from gateway.exchange.submit import submit_many
from gateway.pki import Jurisdiction
from gateway.server import Node, load_config
from tests.support import make_world

STAGES = (
    "parse",
    "validate",
    "request_digest",
    "seal",
    "envelope_digest",
    "open",
    "receipt",
    "submit_many",
    "submit_no_view",
)
_round = 0  # a fresh id space for each submit stage
CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


def _requests(n: int, now: dt.datetime) -> list[partner_pb2.PublishWatchlistEntryRequest]:
    wire = [common_pb2.JURISDICTION_CN, common_pb2.JURISDICTION_MO]
    out = []
    for i, entry in enumerate(watchlist_entries(n, now=now)):
        out.append(
            partner_pb2.PublishWatchlistEntryRequest(
                addressing=partner_pb2.Addressing(
                    message_id=f"00000000-0000-4000-8000-{i:012d}",
                    recipients=wire,
                    handling=common_pb2.Handling(
                        releasable_to=wire, caveat="For customs enforcement use only"
                    ),
                ),
                entry=entry,
            )
        )
    return out


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by thread name (``comm``)."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        key = names.get(int(task.name), name)
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _time(label: str, n: int, repeat: int, work: Callable[[], Any]) -> None:
    best = float("inf")
    for _ in range(repeat):
        before = time.process_time()
        # Run inside functools.reduce (a C function nothing else here calls), so that
        # ``valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce``
        # counts the stage's instructions and nothing of the set-up.
        functools.reduce(lambda _, f: f(), [work], None)
        best = min(best, time.process_time() - before)
    print(f"{label:16s} {best * 1e6 / n:9.1f} us/entry (best of {repeat}, n={n})")


def _task_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of process ``pid``: tid -> (comm, seconds)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _spy() -> str:
    """py-spy's path: ``$PY_SPY``, beside this interpreter, or on ``$PATH`` ("" if none)."""
    beside = Path(sys.executable).with_name("py-spy")
    found = os.environ.get("PY_SPY") or (str(beside) if beside.exists() else None)
    return found or shutil.which("py-spy") or ""


def _python_names(pid: int) -> dict[int, str]:
    """tid -> Python thread name of process ``pid``, from ``py-spy dump`` (when installed)."""
    if not _spy():
        return {}
    text = subprocess.run(
        [_spy(), "dump", "--pid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    names: dict[int, str] = {}
    for match in re.finditer(r'Thread (0x[0-9A-Fa-f]+|\d+) \([^)]*\): "([^"]*)"', text):
        tid = match.group(1)
        names[int(tid, 16) if tid.startswith("0x") else int(tid)] = match.group(2)
    return names


def node_split(n: int, callers: int, record: str = "") -> None:
    """A real HK node process and the bulk bench's publish client (``callers`` threads, ``n``
    entries in calls of ``BATCH``): the node's CPU per entry, by thread; with ``record``, a
    ``py-spy record`` of the node (raw, by thread) to that file."""
    from bench.bulk import Load, _Publishing
    from bench.exchange import _partner, _pid, _running

    with tempfile.TemporaryDirectory(prefix="entry-cost-node-") as tmp:
        root = Path(tmp)
        world = make_world(root / "pki")
        with _running(world, root / "one", (HK,)) as (hk,):
            pid = _pid(hk)
            client = _partner(world, HK, hk.address)
            spy = None
            if record:
                spy = subprocess.Popen(
                    [_spy(), "record", "--pid", str(pid),
                     "-r", "400", "-t", "-f", "raw", "-o", record],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(2)
            before = _task_cpu(pid)
            load_before = os.getloadavg()[0]
            done = _Publishing(client, Load(n, callers, (CN, MO), str(uuid.uuid4()))).result(600)
            after = _task_cpu(pid)
            names = _python_names(pid)
            if spy is not None:
                spy.send_signal(2)  # py-spy writes its file on SIGINT
                spy.wait(60)
    total = sum(a[1] - before.get(t, (a[0], 0.0))[1] for t, a in after.items())
    print(
        f"node: {n} entries, {callers} caller(s), {done.entries / done.seconds:,.0f} entries/s, "
        f"CPU {total * 1e3 / n:.3f} ms/entry (load {load_before:.2f} -> {os.getloadavg()[0]:.2f})"
    )
    grouped: dict[str, float] = {}
    for tid, (comm, spent) in after.items():
        name = names.get(tid, comm)
        name = re.sub(r"_\d+$", "_*", name)  # pool threads together
        grouped[name] = grouped.get(name, 0.0) + spent - before.get(tid, (comm, 0.0))[1]
    for name, spent in sorted(grouped.items(), key=lambda kv: -kv[1]):
        if spent > 0:
            print(f"    {name:44s} {spent * 1e6 / n:8.1f} us/entry")


def main() -> None:
    """Time the stages named on the command line (all by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", default=list(STAGES))
    parser.add_argument("--n", type=int, default=BATCH)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", action="store_true")
    parser.add_argument("--callers", type=int, default=1)
    parser.add_argument("--record", default="", help="node: py-spy raw output file")
    args = parser.parse_args()
    n, repeat = args.n, args.repeat
    if args.stages == ["node"]:
        node_split(n, args.callers, args.record)
        return
    with tempfile.TemporaryDirectory(prefix="entry-cost-") as tmp:
        root = Path(tmp)
        world = make_world(root / "pki")
        config = world.write_config(HK, root / "hk-data", peers={CN: 1, MO: 2})
        node = Node(load_config(config))
        try:
            _run(node, world, args.stages, n, repeat, args.threads)
        finally:
            node.ledger.close()


def _run(node: Node, world: Any, stages: list[str], n: int, repeat: int, threads: bool) -> None:
    ex = node.exchange
    now = ex.now()
    requests = _requests(n, now)
    me = common_pb2.JURISDICTION_HK
    signer = ex.signer
    bulk = partner_pb2.PublishWatchlistEntriesRequest(entries=requests).SerializeToString()
    header = envelope_pb2.EnvelopeHeader(
        message_id=requests[0].addressing.message_id,
        kind=common_pb2.MESSAGE_KIND_WATCHLIST_ENTRY,
        origin=me,
        origin_node=signer.identity.uri,
        recipients=requests[0].addressing.recipients,
        handling=requests[0].addressing.handling,
    )
    header.created_at.FromDatetime(now)
    envelopes = [
        seal(header, r.entry.SerializeToString(), signer) for r in requests
    ]  # one header, n payloads: what a recipient opens
    bundle, crls = ex.trust()
    body = envelope_pb2.ReceiptBody(
        message_id=requests[0].addressing.message_id, message_digest=b"x" * 32
    )
    for stage in stages:
        if stage == "none":  # the set-up alone: subtract it from a stage's callgrind count
            continue
        if stage == "requests":  # the set-up and one more set of requests, as submit_many makes
            _requests(n, now)
            continue
        if stage == "parse":
            _time(
                stage,
                n,
                repeat,
                lambda: partner_pb2.PublishWatchlistEntriesRequest.FromString(bulk),
            )
        elif stage == "validate":
            _time(
                stage, n, repeat, lambda: [check_request(r, origin=me, now=now) for r in requests]
            )
        elif stage == "request_digest":
            _time(
                stage,
                n,
                repeat,
                lambda: [
                    hashlib.sha256(r.SerializeToString(deterministic=True)).digest()
                    for r in requests
                ],
            )
        elif stage == "seal":
            _time(
                stage,
                n,
                repeat,
                lambda: [seal(header, r.entry.SerializeToString(), signer) for r in requests],
            )
        elif stage == "envelope_digest":
            _time(stage, n, repeat, lambda: [envelope_digest(e) for e in envelopes])
        elif stage == "open":
            _time(
                stage,
                n,
                repeat,
                lambda: [open_envelope(e, bundle, crls, now=now) for e in envelopes],
            )
        elif stage == "receipt":
            _time(stage, n, repeat, lambda: [sign_receipt(body, signer) for _ in requests])
        elif stage == "submit_many":
            _submit_many(ex, n, repeat, threads, "submit_many")
        elif stage == "submit_no_view":  # the same without the payload listeners (the view)
            listeners, ex._listeners = ex._listeners, []
            try:
                _submit_many(ex, n, repeat, threads, stage)
            finally:
                ex._listeners = listeners


def _submit_many(ex: Any, n: int, repeat: int, threads: bool, label: str) -> None:
    global _round
    _round += 1
    best = float("inf")
    split: dict[str, float] = {}
    # The first call warms the caches and the reader connections; with --repeat 1 (callgrind)
    # there is only one: what a call costs once, not per entry, cancels between two sizes.
    for r in range(repeat + 1 if repeat > 1 else 1):
        requests = _requests(n, ex.now())
        for i, request in enumerate(requests):  # fresh ids each round: all accepted
            request.addressing.message_id = f"{_round:08x}-0000-4000-{8000 + r:04x}-{i:012d}"
            request.entry.entry_id = f"{_round:08x}-0000-4000-{9000 + r:04x}-{i:012d}"
        before_threads = _thread_cpu()
        before = time.process_time()
        response = submit_many(ex, requests, Mode.PUBLISH, "entries")
        spent = time.process_time() - before
        after_threads = _thread_cpu()
        if response.accepted != n:
            raise RuntimeError(f"{response.refused} refused: {response.results[0].refused}")
        if (r or repeat <= 1) and spent < best:
            best = spent
            split = {k: v - before_threads.get(k, 0.0) for k, v in after_threads.items()}
    print(f"{label:16s} {best * 1e6 / n:9.1f} us/entry (best of {repeat}, n={n})")
    if threads:
        for name, spent in sorted(split.items(), key=lambda kv: -kv[1]):
            if spent > 0:
                print(f"    {name:28s} {spent * 1e6 / n:9.1f} us/entry")


if __name__ == "__main__":
    main()
