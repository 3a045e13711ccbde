"""CPU per entry at each of three nodes while a list published in bulk at HK reaches CN and MO:
a tool, not a bench group.

``python -m bench.recv_cost [--n N] [--record FILE]`` starts three real nodes on loopback (the
bulk bench's ``_running``), opens an acknowledging partner stream at CN and at MO (the bench's
``_AckingReader``), publishes ``N`` entries at HK in bulk (8 callers, the bench's load) and waits
until every entry arrived and was acknowledged at both recipients. It prints the rate (arrivals
per second on the two streams) and each node's CPU per entry, by thread (Python thread names
from ``py-spy dump`` when py-spy is installed; pool threads together). With ``--record`` a
``py-spy record --gil`` (raw, by thread) of ``--node`` (CN) is written to ``FILE``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.bulk import Load, _AckingReader, _Publishing
from bench.entry_cost import _python_names, _spy, _task_cpu
from bench.exchange import _partner, _pid, _running
from gateway.pki import Jurisdiction
from tests.support import make_world

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


def main() -> None:
    """Run once and print the rates and the CPU per entry of each node by thread."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="entries published at HK")
    parser.add_argument("--record", default="", help="py-spy raw profile (GIL holder) to FILE")
    parser.add_argument("--node", default="CN", help="the node --record profiles (CN, HK, MO)")
    args = parser.parse_args()
    n = args.n
    timeout = 120 + n / 50
    with tempfile.TemporaryDirectory(prefix="recv-cost-") as tmp:
        root = Path(tmp)
        world = make_world(root / "pki")
        with _running(world, root / "three", (CN, HK, MO)) as nodes:
            pids = {p.jurisdiction: _pid(p) for p in nodes}
            readers = [
                _AckingReader(_partner(world, p.jurisdiction, p.address))
                for p in nodes
                if p.jurisdiction is not HK
            ]
            spy = None
            if args.record:
                target = str(pids[Jurisdiction(args.node)])
                spy = subprocess.Popen(
                    [_spy(), "record", "--gil", "--pid", target,
                     "-r", "200", "-t", "-f", "raw", "-o", args.record],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(2)
            try:
                before = {j: _task_cpu(pid) for j, pid in pids.items()}
                load_before = os.getloadavg()[0]
                load = Load(n, 8, (CN, MO), str(uuid.uuid4()))
                done = _Publishing(_partner(world, HK, nodes[1].address), load).result(timeout)
                for reader in readers:  # the client's warm-up entry, then the load
                    reader.wait_for(1 + n, timeout)
                arrived = max(r.last_arrival for r in readers)
                acked = max(r.wait_acked(1 + n, timeout) for r in readers)
                after = {j: _task_cpu(pid) for j, pid in pids.items()}
            finally:
                for reader in readers:
                    reader.close()
                if spy is not None:
                    spy.send_signal(2)  # py-spy writes its file on SIGINT
                    spy.wait(60)
            names = {j: _python_names(pid) for j, pid in pids.items()}
            if any(r.duplicates or r.ack_errors for r in readers):
                raise RuntimeError("duplicate arrivals or failed acknowledgements")
    total = 0.0
    lines: list[str] = []
    for j in (HK, CN, MO):
        grouped: dict[str, float] = {}
        for tid, (comm, spent) in after[j].items():
            name = re.sub(r"_\d+$", "_*", names[j].get(tid, comm))  # pool threads together
            grouped[name] = grouped.get(name, 0.0) + spent - before[j].get(tid, (comm, 0.0))[1]
        node = sum(grouped.values())
        total += node
        lines.append(f"  {j.value}: {node * 1e6 / n:8.1f} us/entry")
        for name, spent in sorted(grouped.items(), key=lambda kv: -kv[1]):
            if spent > 0:
                lines.append(f"      {name:40s} {spent * 1e6 / n:8.1f} us/entry")
    print(
        f"three nodes, {n} entries at HK: {2 * n / (arrived - done.started):,.0f} arrivals/s, "
        f"{2 * n / (acked - done.started):,.0f} acknowledged/s, nodes' CPU "
        f"{total * 1e3 / n:.3f} ms/entry (load {load_before:.2f} -> {os.getloadavg()[0]:.2f})"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
