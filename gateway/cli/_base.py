"""Parser assembly and the error type shared by every command group."""

from __future__ import annotations

import argparse
import importlib
from typing import NoReturn

from gateway import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Command groups, each a module of gateway.cli with a register(subparsers) function.
_COMMAND_MODULES = ("serve", "status", "config", "demo", "pki", "audit")


def counted(n: int, noun: str, plural: str = "") -> str:
    """``"1 checkpoint"``, ``"2 checkpoints"``: a count with its noun (``plural`` when it is
    not the noun plus "s"), for summaries."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


class CliError(Exception):
    """An operator mistake: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command group registered."""
    parser = _Parser(
        prog="customs-gateway",
        description="Cross-border exchange of customs watchlists and seizure notices.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"gateway.cli.{name}")
        module.register(subparsers)
    _remember_command_parsers(parser)
    return parser


def _remember_command_parsers(parser: argparse.ArgumentParser) -> None:
    """Give every command's arguments a ``command_parser`` default naming its own parser, so a
    mistake found after parsing (an unknown option) points to ``customs-gateway pki revoke
    --help``, not the top-level help."""
    parser.set_defaults(command_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _remember_command_parsers(sub)
