"""Where Node.js is missing, the interop test says so in one line: skipped on a developer's
machine, failed under ``CI=true`` (CI must not pass without having run it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TEST = f"{HERE / 'test_node_client.py'}::test_a_failing_node_client_fails_the_test"


def _pytest_without_node(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(Path(sys.executable).parent)  # python, and no node
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", TEST],
        cwd=HERE.parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("ci", "code", "line"),
    [
        (None, 0, "SKIPPED [1] tests/interop/test_node_client.py"),
        ("false", 0, "Node.js interop test skipped: node not found"),
        ("true", 1, "Node.js interop test cannot run under CI: node not found"),
    ],
    ids=["no-ci", "ci-false", "ci-true"],
)
def test_missing_node_is_one_line(ci: str | None, code: int, line: str) -> None:
    done = _pytest_without_node(ci)
    assert done.returncode == code, done.stdout[-3000:]
    assert line in done.stdout, done.stdout[-3000:]
