"""Every CLI command has help with an example and a place in the docs (as sqlite-utils does)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cli._base import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(
    p.read_text()
    for p in [ROOT / "README.md", ROOT / "certs" / "README.md", *(ROOT / "docs").rglob("*.md")]
)


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield prefix
        return
    for name, sub in subparsers[0].choices.items():
        yield from _commands(sub, (*prefix, name))


COMMANDS = sorted(_commands(build_parser()))


def test_there_are_commands() -> None:
    assert ("serve",) in COMMANDS
    assert ("audit", "fetch") in COMMANDS
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_command_has_help_with_an_example(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out.lower(), out
    assert f"customs-gateway {' '.join(command)}" in out


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_command_is_documented(command: tuple[str, ...]) -> None:
    assert f"customs-gateway {' '.join(command)}" in DOCS
