"""Helpers for the fail-closed tests that run the real ``customs-gateway serve`` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SETPRIV = shutil.which("setpriv")
# As root, file modes do not stop reads or writes (CAP_DAC_OVERRIDE). A node that runs as root
# still meets an unreadable key on a network share or a read-only disk; these tests show it by
# starting the node without the two capabilities that bypass file modes.
WITHOUT_DAC = (
    [SETPRIV, "--bounding-set=-dac_override,-dac_read_search", "--"]
    if os.geteuid() == 0 and SETPRIV is not None
    else []
)
FILE_MODES_APPLY = os.geteuid() != 0 or SETPRIV is not None


@dataclass(frozen=True)
class Outcome:
    """How a ``serve`` process ended."""

    status: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        """The lines on stderr."""
        return self.stderr.splitlines()


def serve_command(config: Path) -> list[str]:
    """The argv that runs ``serve`` on ``config`` (without the DAC bypass when root)."""
    return [*WITHOUT_DAC, sys.executable, "-m", "gateway", "serve", "--config", str(config)]


def start_serve(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``serve`` on ``config`` (with ``env`` instead of this process's environment);
    the caller waits for it."""
    return subprocess.Popen(
        serve_command(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> Outcome:
    """Wait for a ``serve`` that should refuse to start (killed if it serves instead)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return Outcome(proc.returncode, out, err)


def assert_one_line_refusal(outcome: Outcome, message: str) -> None:
    """Exit status 2, exactly one line on stderr, the CLI's error line, matching ``message``
    (a regular expression), and no traceback."""
    import re

    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert outcome.status == 2, outcome
    assert len(outcome.lines) == 1, outcome.stderr
    line = outcome.lines[0]
    assert line.startswith("customs-gateway: error: "), line
    assert re.search(message, line), f"{message!r} not in {line!r}"
