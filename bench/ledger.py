"""Ledger benchmarks: appends, proofs at 100k and 1M entries, offline verification.

pymerkle's ``SqliteTree`` (an RFC 6962 tree in SQLite) is the baseline, measured on the same
sizes in the same run. ``--quick`` uses 10k and 50k entries.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymerkle import SqliteTree

from bench._report import Result, Scale
from gateway.ledger import Entry, Event, Ledger
from gateway.ledger._store import CACHED_HASHES
from gateway.notes import NoteSigner

GROUP = "ledger"
ORIGIN = "hk.customs-exchange/ledger"
SIGNER = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
BATCH = 10_000


def _entry(i: int) -> Entry:
    return Entry(
        Event.SENT,
        uuid.UUID(int=i + 1),
        "SEIZURE_NOTICE",
        "CN",
        (hashlib.sha256(i.to_bytes(8, "big")).digest(),),
    )


def _rate(fn: Callable[[], object], seconds: float, minimum: int = 3) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (at least ``minimum`` calls), after a
    warm-up of a quarter of that (page caches filled after the bulk appends), for both sides."""
    warm_until = time.perf_counter() + seconds / 4
    while time.perf_counter() < warm_until:
        fn()
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= minimum:
            return calls / elapsed


def _durable_appends(path: Path, callers: int, seconds: float) -> float:
    with Ledger.open(path, origin=ORIGIN, signer=SIGNER) as ledger:
        stop = time.perf_counter() + seconds
        counts = [0] * callers

        def work(t: int) -> None:
            i = 0
            while time.perf_counter() < stop:
                ledger.append(_entry(t * 10_000_000 + i))
                i += 1
            counts[t] = i

        start = time.perf_counter()
        threads = [threading.Thread(target=work, args=(t,)) for t in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / (time.perf_counter() - start)


_VERIFY = """
import resource, sys, time
from pathlib import Path
from gateway.audit import WitnessPolicy, check_ledger
from gateway.notes import Verifier
start = time.perf_counter()
# the bench ledger has no witnesses; the database's stored hashes are checked (step 8)
result = check_ledger(
    Path(sys.argv[1]), Verifier.from_vkey(sys.argv[2]), policy=WitnessPolicy.unwitnessed()
)
elapsed = time.perf_counter() - start
print(elapsed, result.entries, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _verify(path: Path) -> tuple[float, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _VERIFY, str(path), SIGNER.verifier.vkey],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def run(scale: Scale) -> list[Result]:
    """Measure everything the ledger targets name; return the rows."""
    small, large = (10_000, 50_000) if scale.quick else (100_000, 1_000_000)
    window = 0.5 if scale.quick else 2.0
    rng = random.Random(7)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        d = Path(tmp)
        ledger = Ledger.open(d / "ledger.db", origin=ORIGIN, signer=SIGNER)
        pm = SqliteTree(str(d / "pymerkle.db"))
        ours_append = theirs_append = signing = 0.0
        signed = 0
        done = 0
        proof_rates: dict[tuple[str, int], tuple[float, float]] = {}
        for target in (small, large):
            while done < target:
                n = min(BATCH, target - done)
                batch = [_entry(i) for i in range(done, done + n)]  # the callers' work
                start = time.perf_counter()
                ledger.append_many(batch)
                ours_append += time.perf_counter() - start  # the append loop alone
                done += n
                if done % (target // 10) == 0:
                    start = time.perf_counter()
                    ledger.checkpoint()
                    signing += time.perf_counter() - start
                    signed += 1
            # pymerkle stores the same canonical leaves.
            leaves = [leaf for _, leaf in _all_leaves(ledger, pm.get_size(), target)]
            start = time.perf_counter()
            pm.append_entries(leaves)
            theirs_append += time.perf_counter() - start
            pm.cache_clear()
            ledger.checkpoint()
            if target == small:
                src = sqlite3.connect(d / "ledger.db")
                dst = sqlite3.connect(d / "small.db")
                src.backup(dst)
                src.close()
                dst.close()
            size = target
            ours_incl = _rate(lambda s=size: ledger.inclusion_proof(rng.randrange(s), s), window)
            theirs_incl = _rate(
                lambda s=size: pm.prove_inclusion(rng.randrange(1, s + 1), s), window
            )
            ours_cons = _rate(
                lambda s=size: ledger.consistency_proof(rng.randrange(1, s), s), window
            )
            theirs_cons = _rate(lambda s=size: pm.prove_consistency(rng.randrange(1, s), s), window)
            proof_rates[("inclusion", size)] = (ours_incl, theirs_incl)
            proof_rates[("consistency", size)] = (ours_cons, theirs_cons)
        cached_level, cached = ledger.cached_hashes()
        ledger.close()
        pm.close()

        results.append(
            Result(
                GROUP,
                f"batched append ({large:,}, with subtree hashes)",
                large / ours_append,
                "entries/s",
                target=50_000,
            )
        )
        results.append(
            Result(
                GROUP,
                "batched append vs pymerkle",
                large / ours_append,
                "entries/s",
                "pymerkle SqliteTree.append_entries",
                large / theirs_append,
            )
        )
        results.append(
            Result(
                GROUP,
                f"checkpoint (tree head + Ed25519 note), {signed} made",
                1000 * signing / max(1, signed),
                "ms each",
            )
        )
        results.append(
            Result(
                GROUP,
                f"upper tree levels in memory at {large:,} (levels >= {cached_level})",
                cached,
                "hashes",
                target=CACHED_HASHES,
                higher_is_better=False,
            )
        )
        for kind in ("inclusion", "consistency"):
            for size in (small, large):
                ours, theirs = proof_rates[(kind, size)]
                name = f"{kind} proofs at {size:,}"
                if kind == "inclusion" and size == large:
                    results.append(Result(GROUP, name, ours, "proofs/s", target=10_000))
                results.append(
                    Result(
                        GROUP,
                        f"{name} vs pymerkle",
                        ours,
                        "proofs/s",
                        "pymerkle SqliteTree",
                        theirs,
                        target=40 if kind == "inclusion" and size == large else None,
                    )
                )
        seconds = 1.0 if scale.quick else 3.0
        grouped = _durable_appends(d / "durable32.db", 32, seconds)
        single = _durable_appends(d / "durable1.db", 1, seconds)
        results.append(
            Result(
                GROUP,
                "durable appends, 32 callers (group commit)",
                grouped,
                "entries/s",
                target=5_000,
            )
        )
        results.append(
            Result(
                GROUP,
                "group commit gain",
                grouped,
                "entries/s",
                "durable appends, 1 caller",
                single,
            )
        )
        t_large, n_large, rss_large = _verify(d / "ledger.db")
        t_small, n_small, rss_small = _verify(d / "small.db")
        results.append(
            Result(
                GROUP,
                f"offline verify {n_large:,} entries",
                t_large,
                "s",
                target=10,
                higher_is_better=False,
            )
        )
        results.append(
            Result(
                GROUP,
                "offline verify throughput",
                n_large / t_large,
                "entries/s",
                f"same at {n_small:,}",
                n_small / t_small,
            )
        )
        results.append(
            Result(
                GROUP,
                f"verify peak RSS at {n_large:,} vs {n_small:,}",
                rss_large / 1024,
                "MiB",
                f"peak RSS at {n_small:,}",
                rss_small / 1024,
                target=1.25,
                higher_is_better=False,
            )
        )
    return results


def _all_leaves(ledger: Ledger, start: int, end: int) -> list[tuple[int, bytes]]:
    rows: list[tuple[int, bytes]] = []
    while start < end:
        page = ledger.leaves(start, end)
        rows += page
        start += len(page)
    return rows
