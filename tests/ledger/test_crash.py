"""SIGKILL a writer process mid-stream; every acknowledged entry must survive, consistently."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import WitnessPolicy, check_ledger
from gateway.ledger import Ledger, decode_record
from gateway.merkle import MemoryTree
from gateway.notes import NoteSigner
from tests.ledger.conftest import ORIGIN

WRITER = """
import sys, threading, uuid, hashlib
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gateway.ledger import Entry, Event, Ledger
from gateway.notes import NoteSigner

signer = NoteSigner(sys.argv[2], Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
schema = lambda c: c.execute("CREATE TABLE IF NOT EXISTS outbox (idx INTEGER PRIMARY KEY)")
ledger = Ledger.open(sys.argv[1], origin=sys.argv[2], signer=signer, schema=schema)
out = threading.Lock()

def outbox(conn, index):
    conn.execute("INSERT INTO outbox VALUES (?)", (index,))

def work(t):
    i = 0
    while True:
        i += 1
        entry = Entry(Event.SENT, uuid.uuid4(), "SEIZURE_NOTICE", "CN",
                      (hashlib.sha256(f"{t}/{i}".encode()).digest(),))
        if i % 5 == 0:
            indexes = [r.index for r in ledger.append_many([entry] * 7)]
        else:
            indexes = [ledger.append(entry, within=outbox).index]
        with out:
            sys.stdout.write("".join(f"{x}\\n" for x in indexes))
            sys.stdout.flush()

for t in range(8):
    threading.Thread(target=work, args=(t,), daemon=True).start()
threading.Event().wait()
"""

UNWITNESSED = WitnessPolicy.unwitnessed()  # these tests check the log, not witnessing


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    root = Path(__file__).resolve().parents[2]
    acked: set[int] = set()
    for _round in range(2):  # crash, reopen and crash again on the recovered file
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), ORIGIN],
            stdout=subprocess.PIPE,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        seen = 0
        while seen < 400 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.add(int(line))
            seen += 1
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        acked.update(int(x) for x in rest.split())
        assert proc.returncode == -signal.SIGKILL
        assert seen >= 400, "the writer did not get going"

        signer = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
        with Ledger.open(path, origin=ORIGIN, signer=signer) as ledger:
            size = ledger.size()
            assert max(acked) < size, f"acknowledged entry {max(acked)} lost (size {size})"
            leaves = []
            for start in range(0, size, 1000):
                leaves += [leaf for _, leaf in ledger.leaves(start, size)]
            assert [decode_record(leaf).index for leaf in leaves] == list(range(size))
            assert ledger.root() == MemoryTree(leaves).root()
            # Single appends wrote an outbox row in their transaction, batches (7 entries with
            # one message id) did not: each entry has its row exactly when it should.
            outbox = {i for (i,) in ledger.reader().execute("SELECT idx FROM outbox")}
            ids = Counter(decode_record(leaf).entry.message_id for leaf in leaves)
            singles = {
                i for i, leaf in enumerate(leaves) if ids[decode_record(leaf).entry.message_id] == 1
            }
            assert outbox == singles
            ledger.checkpoint()
        result = check_ledger(path, signer.verifier, policy=UNWITNESSED)
        assert result.entries == size
