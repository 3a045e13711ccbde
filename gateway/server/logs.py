"""Structured logs: one JSON object per line on stderr, with the node's identity in each.

A call that logs only queues its record; one writer thread formats the records and writes
whatever has queued up in one write. Serving threads therefore never wait for one another, or
for the disk, to log (with a lock around each write, a line per submit cost the node about
0.5 ms of CPU per call at 32 concurrent callers: docs/performance.md). The writer gathers a
burst for up to :data:`LINGER` seconds after its first line, so a busy node wakes it and writes
about fifty times a second, not once per line (ADR 0055); an error, a flush or the end of the
process cuts the wait short.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import logging
import os
import queue
import re
import sys
import threading
import traceback
from typing import TextIO

__all__ = ["configure_logging", "flush_logs", "route_native_stderr"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Seconds the writer waits, after the first line of a burst, for the lines that follow. Each
# wake of the writer is a thread hand-off that the serving threads pay for in GIL hand-offs;
# at 600 submits/s it woke about once per line (docs/performance.md).
LINGER = 0.02


class _JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self._node = node
        # What json.dumps(doc, default=str, ensure_ascii=False) builds anew for every line.
        self._encode = json.JSONEncoder(default=str, ensure_ascii=False).encode

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: say so, keep the line
            message = f"unformattable log message {record.msg!r} with arguments {record.args!r}"
        doc: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self._node,
            "message": message,
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return self._encode(doc)


class _QueueHandler(logging.Handler):
    """Hands records to the writer; the emitting thread does no formatting or I/O (except for
    errors and worse, which it waits to see written: those are the lines a crash must keep)."""

    def __init__(self, writer: _Writer) -> None:
        super().__init__()
        self._writer = writer

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: the writer is safe
        self._writer.put(record, wait=record.levelno >= logging.ERROR)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self._writer.put(record)


class _Writer:
    """Formats queued records and writes them, a burst at a time, to ``stream``."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter) -> None:
        self._records: queue.SimpleQueue[logging.LogRecord | threading.Event | None] = (
            queue.SimpleQueue()
        )
        self._stream = stream
        self._formatter = formatter
        self._lock = threading.Lock()  # whole bursts, and direct writes after close
        self._closed = False
        self._urgent = threading.Event()  # a flush or close waits: end the linger now
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def retarget(self, stream: TextIO) -> None:
        """Write to ``stream`` from the next burst on."""
        with self._lock:
            self._stream = stream

    def put(self, record: logging.LogRecord, wait: bool = False) -> None:
        """Queue ``record`` (and with ``wait``, return once it is written); once the writer is
        closed, write it at once."""
        if self._closed:
            self._write([self._line(record)])
            return
        self._records.put(record)
        if self._closed:  # closed meanwhile, perhaps after its last look at the queue
            self._drain()
        elif wait:
            self.flush()

    def flush(self, timeout: float = 5.0) -> None:
        """Return once every record queued before this call is written (or after ``timeout``)."""
        if self._closed or not self._thread.is_alive():
            return
        written = threading.Event()
        self._records.put(written)
        self._urgent.set()
        written.wait(timeout)

    def close(self) -> None:
        """Write what is queued and stop the thread; later records are written directly."""
        if self._closed:
            return
        self._records.put(None)
        self._urgent.set()
        self._thread.join(5)
        self._closed = True
        self._drain()

    def _drain(self) -> None:
        """Write what is in the queue now, from the calling thread (once closed)."""
        left: list[str] = []
        while True:
            try:
                item = self._records.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, logging.LogRecord):
                left.append(self._line(item))
            elif isinstance(item, threading.Event):
                item.set()
        if left:
            self._write(left)

    def _run(self) -> None:
        running = True
        while running:
            burst = [self._records.get()]
            if isinstance(burst[0], logging.LogRecord):
                self._urgent.wait(LINGER)  # let the burst gather: one wake, one write
            # Cleared before the queue is drained: a flush that sets it after this point has
            # its marker drained now or in the next burst, which then does not linger.
            self._urgent.clear()
            while True:  # everything already queued goes in the same write
                try:
                    burst.append(self._records.get_nowait())
                except queue.Empty:
                    break
            lines, flushed = [], []
            for item in burst:
                if item is None:
                    running = False
                elif isinstance(item, threading.Event):
                    flushed.append(item)
                else:
                    lines.append(self._line(item))
            if lines:
                self._write(lines)
            for written in flushed:
                written.set()

    def _line(self, record: logging.LogRecord) -> str:
        try:
            return self._formatter.format(record) + "\n"
        except Exception:  # a record that breaks the formatter must not end logging
            return json.dumps({"level": "error", "message": "unloggable record",
                               "logger": record.name}) + "\n"  # fmt: skip

    def _write(self, lines: list[str]) -> None:
        try:
            with self._lock:
                self._stream.write("".join(lines))
                self._stream.flush()
        except Exception:  # a full disk or a closed pipe: say so where possible, go on
            with contextlib.suppress(Exception):
                traceback.print_exc(file=sys.__stderr__)


_writer: _Writer | None = None


def configure_logging(node: str, level: int = logging.INFO) -> None:
    """Send the ``gateway`` loggers to stderr as JSON lines tagged with ``node``.

    Lines are written by a thread of their own, in the order they were logged; an error (or
    worse) is written before the call that logs it returns; whatever is queued is written
    before the process exits normally. Calling this again replaces the writer.
    """
    global _writer
    writer = _Writer(sys.stderr, _JsonFormatter(node))
    atexit.register(writer.close)
    if _writer is not None:  # its lines first; any logged until the swap, it writes directly
        _writer.close()
    _writer = writer
    root = logging.getLogger("gateway")
    root.handlers[:] = [_QueueHandler(writer)]
    root.setLevel(level)
    root.propagate = False


def flush_logs(timeout: float = 5.0) -> None:
    """Return once every line logged so far is written (at once if logs are not configured):
    for a caller about to write to stderr itself."""
    if _writer is not None:
        _writer.flush(timeout)


# gRPC C-core (absl) log lines: "E1202 19:02:41.639140    3533 ssl_transport_security.cc:3238] ..."
_NATIVE_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_NATIVE_LEVELS = {
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
}
_native_routed = False


def _native_record(line: str) -> tuple[int, str, dict[str, object]]:
    """Level, message and extra fields of one line that native code wrote to fd 2."""
    match = _NATIVE_LINE.match(line)
    if match is None:
        return logging.WARNING, line, {"event": "native-stderr"}
    level, source, message = match.groups()
    return _NATIVE_LEVELS[level], message, {"event": "grpc-core", "source": source}


def route_native_stderr() -> None:
    """Make every line native code writes to file descriptor 2 (gRPC C-core's log) a JSON line.

    fd 2 becomes a pipe read by a thread that logs each line through ``gateway.native`` (level
    from the line's ``E``/``W``/``I`` prefix, the C source file and line in ``source``);
    ``sys.stderr``, where the JSON lines and the CLI's own one-line errors go, keeps the
    original stderr. An exception that ends a thread is logged as a JSON line as well. Call
    once, after :func:`configure_logging`, in a process that owns its stderr
    (``customs-gateway serve``); idempotent.
    """
    global _native_routed
    stderr: TextIO = sys.stderr
    if _native_routed or stderr is not sys.__stderr__:
        # routed already, or someone in this process captures stderr (a test running the
        # command in-process): fd 2 is theirs, and the lines they capture stay theirs
        return
    stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = os.fdopen(original, "w", buffering=1, encoding="utf-8", errors="replace")
    if _writer is not None:
        _writer.retarget(sys.stderr)
    _native_routed = True
    log = logging.getLogger("gateway.native")

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line.strip():
                    continue
                level, message, extra = _native_record(line)
                log.log(level, "%s", message, extra=extra)

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()

    def thread_died(args: threading.ExceptHookArgs) -> None:
        # an exception no worker caught: a JSON line too, not a raw traceback in the log
        name = args.thread.name if args.thread is not None else "?"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        log.error("uncaught exception in thread %s", name, exc_info=exc_info)  # type: ignore[arg-type]

    threading.excepthook = thread_died
