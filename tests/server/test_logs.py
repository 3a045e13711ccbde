"""Structured logs: every line is written, whole and in order, by the writer thread."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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


def _run() -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    return [json.loads(line) for line in done.stderr.splitlines()]


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
