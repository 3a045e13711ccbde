"""What a bulk entry costs as a node's store grows: a tool, not a bench group (issue 15).

``python -m bench.growth [--rounds R] [--n N] [--sequential] [--pages-at 0,9,19]`` publishes
``R`` bulk calls of ``N`` entries each (uuid entry and message ids, as ``bench.bulk`` sends) to
one node in this process (HK, not started: no gRPC server; its deliverers find no peer), and
prints after each call the CPU per entry of each thread (from /proc) and the size of each
SQLite WAL. At the rounds of ``--pages-at`` it also prints the pages the last transaction of
each SQLite file wrote to its WAL, by table or index (read from the WAL's frames and SQLite's
``dbstat``): a b-tree whose keys are random (uuids) is rewritten whole by each call until it
has many more pages than a call has entries, so the pages per entry grow with what is stored.
``--sequential`` uses increasing ids instead (what ``bench.entry_cost`` sends).
"""

from __future__ import annotations

import argparse
import collections
import sqlite3
import struct
import tempfile
import time
import uuid
from pathlib import Path

from bench.entry_cost import CN, HK, MO, _requests, _thread_cpu
from gateway.exchange.core import Mode
from gateway.exchange.submit import submit_many
from gateway.server import Node, load_config
from tests.support import make_world

_WAL_HEADER = struct.Struct(">8I")
_FRAME_HEADER = struct.Struct(">6I")


def wal_pages(db: Path) -> tuple[int, collections.Counter[str]]:
    """The frames of the committed transactions in ``db``'s WAL since it last restarted, and
    how many of them belong to each table or index (``?``: a page no b-tree owns now)."""
    wal = Path(f"{db}-wal").read_bytes() if Path(f"{db}-wal").exists() else b""
    if len(wal) < _WAL_HEADER.size:
        return 0, collections.Counter()
    page_size, salt = _WAL_HEADER.unpack_from(wal)[2], _WAL_HEADER.unpack_from(wal)[4:6]
    pages: list[int] = []
    committed = 0
    offset = _WAL_HEADER.size
    while offset + _FRAME_HEADER.size + page_size <= len(wal):
        page, commit, salt1, salt2, _, _ = _FRAME_HEADER.unpack_from(wal, offset)
        if (salt1, salt2) != salt:  # a frame of the WAL before it restarted
            break
        pages.append(page)
        if commit:
            committed = len(pages)
        offset += _FRAME_HEADER.size + page_size
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        owner = {page: name for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
    finally:
        conn.close()
    return committed, collections.Counter(owner.get(p, "?") for p in pages[:committed])


def _sizes(conn_path: Path) -> collections.Counter[str]:
    conn = sqlite3.connect(f"file:{conn_path}?mode=ro", uri=True)
    try:
        return collections.Counter(name for (name,) in conn.execute("SELECT name FROM dbstat"))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    """Run the rounds and print what each cost (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--n", type=int, default=2000, help="entries per bulk call")
    parser.add_argument("--sequential", action="store_true", help="increasing ids, not uuids")
    parser.add_argument("--pages-at", default="", help="rounds to print WAL pages at: 0,9,19")
    args = parser.parse_args(argv)
    pages_at = {int(r) for r in args.pages_at.split(",") if r}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = make_world(root / "pki")
        data = root / "hk-data"
        node = Node(load_config(world.write_config(HK, data, peers={CN: 1, MO: 2})))
        exchange = node.exchange
        try:
            for r in range(args.rounds):
                requests = _requests(args.n, exchange.now())
                for i, request in enumerate(requests):
                    if args.sequential:
                        request.addressing.message_id = f"{r:08x}-0000-4000-8000-{i:012d}"
                        request.entry.entry_id = f"{r:08x}-0000-4000-9000-{i:012d}"
                    else:
                        request.addressing.message_id = str(uuid.uuid4())
                        request.entry.entry_id = str(uuid.uuid4())
                before, cpu = _thread_cpu(), time.process_time()
                submit_many(exchange, requests, Mode.PUBLISH, "entries")
                node.watchlists.caught_up()
                total = (time.process_time() - cpu) * 1e6 / args.n
                after = _thread_cpu()
                threads = {
                    name: (seconds - before.get(name, 0.0)) * 1e6 / args.n
                    for name, seconds in after.items()
                    if seconds - before.get(name, 0.0) > 0
                }
                busiest = sorted(threads.items(), key=lambda kv: -kv[1])[:4]
                wal = {p.name: p.stat().st_size // 1024 for p in sorted(data.rglob("*-wal"))}
                print(
                    f"round {r:3d} stored {(r + 1) * args.n:7d}  CPU/entry {total:5.0f} us  "
                    + " ".join(f"{name[:16]} {us:.0f}" for name, us in busiest)
                    + "  WAL KiB "
                    + " ".join(f"{name} {kib}" for name, kib in wal.items()),
                    flush=True,
                )
                if r in pages_at:
                    for db in sorted(data.rglob("*.db")):
                        frames, owners = wal_pages(db)
                        if not frames:
                            continue
                        sizes = _sizes(db)
                        print(
                            f"    {db.name}: {frames} pages = {frames / args.n:.2f}/entry: "
                            + ", ".join(
                                f"{name} {count}/{sizes.get(name, 0)}"
                                for name, count in owners.most_common(10)
                            ),
                            flush=True,
                        )
        finally:
            node.ledger.close()


if __name__ == "__main__":
    main()
