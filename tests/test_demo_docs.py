"""The README's demo story and certs/README.md's demo layout are what the demo does: one demo
run, its printed step headings against the README's, its files against the documented tree."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from gateway.cli import main
from tests.test_docs import ROOT, check_layout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A demo run in ``demo-run/`` and what it printed."""
    directory = tmp_path_factory.mktemp("demo") / "demo-run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["demo", "--dir", str(directory)])
    assert code == 0, out.getvalue()
    return directory, out.getvalue()


def _readme_steps() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## What the demo shows", 1)[1].split("\n## ", 1)[0]
    return [
        (int(n), title.rstrip("."))
        for n, title in re.findall(r"^(\d+)\. \*\*(.+?)\*\*", section, re.M | re.S)
    ]


def test_readme_tells_the_steps_the_demo_prints(demo: tuple[Path, str]) -> None:
    printed = [(int(n), t) for n, t in re.findall(r"^(\d+)\. (.+)$", demo[1], re.M)]
    told = _readme_steps()
    assert [n for n, _ in told] == list(range(1, len(told) + 1))
    assert len(told) == len(printed), (told, printed)
    for (n, title), (m, heading) in zip(told, printed, strict=True):
        assert n == m
        assert heading.startswith(" ".join(title.split())), (n, title, heading)


def test_certs_readme_describes_the_files_the_demo_makes(demo: tuple[Path, str]) -> None:
    check_layout(demo[0], "demo")
