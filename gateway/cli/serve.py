"""``customs-gateway serve``: run one node until SIGTERM or SIGINT, then stop gracefully."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading
from typing import Any

from gateway.cli._base import EXIT_OK, CliError
from gateway.server import Node, load_config
from gateway.server.affinity import CpuPinner, supported
from gateway.server.config import NodeConfig
from gateway.server.logs import configure_logging, route_native_stderr
from gateway.store import database_errors

log = logging.getLogger("gateway.cli.serve")

YOUNG_COLLECTION_THRESHOLD = 20_000
"""Allocations less deallocations of tracked objects between two collections of the youngest
generation (CPython's default is 700). A bulk call makes tens of thousands of short-lived
objects (its entries' screening facts, postings, rows); with 700, collections ran every few
entries and promoted objects still in use to older generations, which were then scanned again:
about 8 % of the watchlist view's time (ADR 0078). Each young collection scans at most this
many objects, well under a millisecond."""

EXAMPLE = """example:
  customs-gateway serve --config /etc/customs-gateway/node.toml

On SIGTERM the node reports NOT_SERVING on its health service, lets in-flight calls finish
within server.grace_seconds, and exits 0. A config mistake is one line on stderr, exit 2.
"""


def register(subparsers: Any) -> None:
    """Add the ``serve`` command."""
    p = subparsers.add_parser(
        "serve",
        help="run a node",
        description="Run one gateway node (mutual TLS only).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="path to the node's TOML config")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.identity.uri)
    route_native_stderr()  # gRPC C-core's own lines become JSON lines too
    node = _start_up(config)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    frozen = _freeze_startup_heap()  # before serving: the collection it runs takes tens of ms
    node.start()  # a failure gives the node up: ledger closed, data directory unlocked
    # After start: gRPC's native threads exist by now, and only the Python ones are pinned.
    pinner = _pin_python_threads() if config.server.pin_python_threads and supported() else None
    # Logged once serving: a node that refuses to start says so in one line, nothing else.
    log.info(
        "start-up heap frozen: %d objects left out of garbage collection, young generation "
        "collected every %d allocations",
        frozen,
        gc.get_threshold()[0],
        extra={
            "event": "heap_frozen",
            "frozen_objects": frozen,
            "young_collection_threshold": gc.get_threshold()[0],
        },
    )
    print(f"listening on {node.address}", flush=True)
    stop.wait()
    if pinner is not None:
        pinner.stop()
    node.stop()
    return EXIT_OK


def _start_up(config: NodeConfig) -> Node:
    """Build the node; an operating-system or storage error that the start-up checks did not
    already name (ADR 0025) is still one line with its file, never a traceback."""
    try:
        return Node(config)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise CliError(f"cannot start the node:{where} {exc.strerror or exc}") from None
    except database_errors() as exc:
        raise CliError(f"cannot start the node: ledger in {config.data_dir}: {exc}") from None


def _pin_python_threads() -> CpuPinner | None:
    """Start the pinner (ADR 0086), or None where the machine will not let it read or pin its
    CPUs: pinning only saves CPU, so the node, already serving, serves on with its threads free
    and says so in one line (not a traceback, and not a node left behind by a crash)."""
    try:
        pinner = CpuPinner()
        pinner.start()
    except Exception as exc:  # whatever /proc or the kernel answered
        log.warning(
            "Python threads left free: cannot pin them: %s", exc, extra={"event": "cpu-pin"}
        )
        return None
    return pinner


def _freeze_startup_heap() -> int:
    """Take what start-up built (modules, protobuf descriptors, trust material) out of the
    cyclic collector's scans: it lives as long as the process. A full collection then looks only
    at objects made since; with the start-up heap in it, each one stopped every thread of the
    node for 40-57 ms, which was the p99 of the exchange latency (docs/performance.md).
    The youngest generation is then collected every :data:`YOUNG_COLLECTION_THRESHOLD`
    allocations. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    return gc.get_freeze_count()
