"""The node's log handler against the standard library's QueueHandler/QueueListener (issue 13).

What a serving thread pays to log one line, measured as its own CPU time (``thread_time``) with
16 threads logging at once, the way 16 gRPC workers do, and the time until every line is
written. Three handlers, each writing the node's JSON lines to the same kind of file:

- ``node``: ``gateway.server.logs`` (records queued on a ``SimpleQueue`` without a lock, one
  writer thread formats and writes each burst in one write; ADR 0051);
- ``stdlib``: ``logging.handlers.QueueHandler`` + ``QueueListener`` with a ``StreamHandler``
  and the same JSON formatter (the QueueHandler formats in the calling thread, under the
  handler lock; the listener writes and flushes line by line);
- ``locked``: a plain ``StreamHandler`` (format and write under its lock in the caller), what
  ADR 0051 replaced.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable

from bench._report import Result, Scale
from gateway.server import logs

_THREADS = 16


def _drive(
    handler: logging.Handler, per_thread: int, drain: Callable[[], None]
) -> tuple[float, float]:
    """Caller CPU µs per line, and wall ms until every line is written."""
    logger = logging.getLogger(f"bench.logs.{id(handler)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    cpu: list[float] = []
    start = threading.Barrier(_THREADS + 1)

    def work() -> None:
        start.wait()
        t0 = time.thread_time()
        for i in range(per_thread):
            logger.info(
                "accepted %s from %s", "message-id", "caller", extra={"event": "accepted", "n": i}
            )
        cpu.append(time.thread_time() - t0)

    threads = [threading.Thread(target=work) for _ in range(_THREADS)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    drain()
    wall = time.perf_counter() - began
    return sum(cpu) / (_THREADS * per_thread) * 1e6, wall * 1e3


def _measure(kind: str, per_thread: int, directory: str) -> tuple[float, float]:
    path = os.path.join(directory, f"{kind}.log")
    with open(path, "w", encoding="utf-8") as stream:
        formatter = logs._JsonFormatter("spiffe://hk.customs-exchange/node/gateway")
        if kind == "node":
            writer = logs._Writer(stream, formatter)
            result = _drive(logs._QueueHandler(writer), per_thread, writer.close)
        elif kind == "stdlib":
            records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
            target = logging.StreamHandler(stream)
            target.setFormatter(formatter)
            listener = logging.handlers.QueueListener(records, target)
            listener.start()
            handler = logging.handlers.QueueHandler(records)
            result = _drive(handler, per_thread, listener.stop)
        else:
            handler = logging.StreamHandler(stream)
            handler.setFormatter(formatter)
            result = _drive(handler, per_thread, lambda: None)
    with open(path, encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    if lines != _THREADS * per_thread:
        raise AssertionError(f"{kind}: {lines} lines written of {_THREADS * per_thread}")
    return result


def run(scale: Scale) -> list[Result]:
    """Caller CPU per line and time to write them all, node handler vs the standard library."""
    per_thread = 200 if scale.quick else 5000
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="cgw-bench-logs-") as directory:
        for kind in ("node", "stdlib", "locked", "node", "stdlib", "locked"):  # twice, best kept
            got = _measure(kind, per_thread, directory)
            best = out.get(kind)
            out[kind] = got if best is None else (min(best[0], got[0]), min(best[1], got[1]))
    n = f"{_THREADS} threads x {per_thread} lines"
    return [
        Result("logs", f"caller CPU per line, node handler ({n})", out["node"][0], "us",
               "stdlib QueueHandler", out["stdlib"][0], target=1.0, higher_is_better=False),
        Result("logs", f"caller CPU per line, node handler ({n})", out["node"][0], "us",
               "locked StreamHandler", out["locked"][0], target=1.0, higher_is_better=False),
        Result("logs", "all lines written, node handler", out["node"][1], "ms",
               "stdlib QueueListener", out["stdlib"][1]),
    ]  # fmt: skip
