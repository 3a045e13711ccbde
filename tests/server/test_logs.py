"""Structured logs: every line is written, whole and in order, by the writer thread."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.pki import Jurisdiction
from gateway.server import logs
from tests.support import World

_PROGRAM = textwrap.dedent(
    """
    import logging, threading
    from gateway.server.logs import configure_logging

    configure_logging("spiffe://cn.customs.example/node")
    log = logging.getLogger("gateway.test")

    def burst(t):
        for i in range(500):
            log.info("line %d of thread %d", i, t, extra={"event": "line", "t": t, "i": i})

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.info("%d is not a number", "x")  # cannot be formatted
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed", extra={"event": "failed"})
    log.info("last words", extra={"event": "last"})  # then a normal exit
    """
)


def _run(program: str = _PROGRAM) -> list[dict[str, object]]:
    """Run ``program`` in a fresh interpreter; its stderr's JSON lines (others are dropped)."""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    return [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]


def test_every_line_is_written_whole_and_in_order_before_exit() -> None:
    lines = _run()
    assert all(line["node"] == "spiffe://cn.customs.example/node" for line in lines)
    for t in range(8):
        mine = [line["i"] for line in lines if line.get("t") == t]
        assert mine == list(range(500))  # none lost, none twice, in the order logged
    assert lines[-1]["event"] == "last"  # written although the process exited right after


def test_a_bad_record_is_reported_and_logging_goes_on() -> None:
    lines = _run()
    assert any(
        str(line["message"]).startswith("unformattable log message '%d is not a number'")
        for line in lines
    )
    failed = next(line for line in lines if line.get("event") == "failed")
    assert "ValueError: boom" in str(failed["exception"])
    assert lines[-1]["message"] == "last words"


_BROKEN_WRITE = textwrap.dedent(
    """
    import logging, sys
    from gateway.server.logs import configure_logging, flush_logs

    class Flaky:  # stderr whose first write fails, as a full disk or a closed pipe would
        failed = False
        def write(self, text):
            if not Flaky.failed:
                Flaky.failed = True
                raise OSError(28, "No space left on device")
            return sys.__stderr__.write(text)
        def flush(self):
            sys.__stderr__.flush()

    sys.stderr = Flaky()
    configure_logging("spiffe://mo.customs.example/node")
    log = logging.getLogger("gateway.test")
    log.info("lost with the failed write", extra={"event": "first"})
    flush_logs()
    for i in range(3):
        log.info("after the failure %d", i, extra={"event": "after", "i": i})
    """
)

_ABRUPT_EXIT = textwrap.dedent(
    """
    import logging, os
    from gateway.server.logs import configure_logging

    configure_logging("spiffe://hk.customs.example/node")
    logging.getLogger("gateway.test").error("ledger commit failed", extra={"event": "error"})
    os._exit(0)  # as a crash would: no atexit, no flush
    """
)

_TWICE = textwrap.dedent(
    """
    import logging, threading
    from gateway.server.logs import configure_logging

    log = logging.getLogger("gateway.test")
    configure_logging("spiffe://cn.customs.example/node")
    for i in range(300):
        log.info("first writer %d", i, extra={"i": i})
    configure_logging("spiffe://cn.customs.example/node")
    for i in range(300, 600):
        log.info("second writer %d", i, extra={"i": i})
    writers = [t for t in threading.enumerate() if t.name == "log-writer"]
    log.info("writers", extra={"event": "writers", "count": len(writers)})
    """
)


def test_a_failed_write_does_not_end_logging() -> None:
    lines = _run(_BROKEN_WRITE)
    assert [line["i"] for line in lines if line.get("event") == "after"] == [0, 1, 2]


def test_an_error_is_written_before_the_call_returns() -> None:
    lines = _run(_ABRUPT_EXIT)
    assert [line["message"] for line in lines] == ["ledger commit failed"]


def test_configuring_again_replaces_the_writer_and_keeps_the_order() -> None:
    lines = _run(_TWICE)
    assert [line["i"] for line in lines if "i" in line] == list(range(600))
    assert lines[-1]["count"] == 1


@pytest.fixture
def busy_port() -> object:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_cli_error_line_is_whole_and_after_the_nodes_log_lines(
    world: World, tmp_path: Path, busy_port: int
) -> None:
    """``serve`` on a port in use: the node has logged (its data directory made private) when
    start fails; the operator's one line comes last, whole, and exit status is 2."""
    config = world.write_config(
        Jurisdiction.MO, tmp_path / "data", peers={}, listen=f"127.0.0.1:{busy_port}"
    )
    (tmp_path / "data").mkdir(mode=0o755)  # readable by others: tightened, with a log line
    (tmp_path / "data").chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    *before, last = done.stderr.splitlines()
    assert (
        last
        == f"customs-gateway: error: cannot listen on 127.0.0.1:{busy_port}: address already in use"
    )
    logs = [json.loads(line) for line in before]  # every other line is the node's, whole
    assert [line["event"] for line in logs] == ["permissions-tightened"]


_PACED = textwrap.dedent(
    """
    import json, logging, sys, time
    from gateway.server import logs

    class Counting:  # stderr that counts the writer's writes
        writes = 0
        def write(self, text):
            Counting.writes += 1
            return sys.__stderr__.write(text)
        def flush(self):
            sys.__stderr__.flush()

    sys.stderr = Counting()
    logs.configure_logging("spiffe://cn.customs.example/node")
    log = logging.getLogger("gateway.test")
    start = time.monotonic()
    for i in range(200):  # a line every 0.5 ms, as a node answering 2,000 calls/s logs them
        log.info("paced %d", i, extra={"i": i})
        time.sleep(0.0005)
    elapsed = time.monotonic() - start
    log.info("slow", extra={"event": "slow"})  # starts a burst that lingers...
    flushed = time.monotonic()
    logs.flush_logs()  # ...until a flush cuts it short
    took = time.monotonic() - flushed
    print(json.dumps({"writes": Counting.writes, "elapsed": elapsed, "flush": took,
                      "linger": logs.LINGER}), file=sys.__stdout__)
    """
)


def test_paced_lines_share_writes_and_a_flush_does_not_wait_for_the_linger() -> None:
    """The writer gathers a burst for LINGER seconds (ADR 0055): a line every half millisecond
    is written in about one write per LINGER, not one per line; a flush returns at once."""
    done = subprocess.run(
        [sys.executable, "-c", _PACED], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [line["i"] for line in lines if "i" in line] == list(range(200))
    report = json.loads(done.stdout)
    bursts = report["elapsed"] / report["linger"] + 2
    assert report["writes"] <= bursts < 200, report  # one write per burst, far fewer than lines
    assert report["flush"] < report["linger"], report


def test_a_line_keeps_non_ascii_text_and_writes_other_values_as_text() -> None:
    """Names in any script stay readable in the log; an extra that JSON cannot hold (a path, a
    time) is written as its text, not refused."""
    formatter = logs._JsonFormatter("spiffe://mo.customs-exchange/node/gateway")
    record = logging.LogRecord(
        "gateway.test", logging.INFO, __file__, 1, "實體 %s", ("Ünal",), None
    )
    record.where = Path("/data/ledger.db")
    record.at = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
    line = formatter.format(record)
    assert "實體 Ünal" in line  # as written, not \\u escapes
    doc = json.loads(line)
    assert doc["message"] == "實體 Ünal"
    assert doc["where"] == "/data/ledger.db"
    assert doc["at"] == "2026-12-03 10:00:00+00:00"
    assert doc["node"] == "spiffe://mo.customs-exchange/node/gateway"
    assert doc["level"] == "info"
