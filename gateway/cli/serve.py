"""``customs-gateway serve``: run one node (placeholder until the server lands)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli._base import CliError


def register(subparsers: Any) -> None:
    """Add the ``serve`` command."""
    p = subparsers.add_parser("serve", help="run a node", description="Run one gateway node.")
    p.add_argument("--config", required=True, help="path to the node's TOML config")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    raise CliError("serve is not implemented yet")
