"""``customs-gateway demo``: the three-node scenario that ``make demo`` runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.demo import run_demo

EXAMPLE = """example:
  customs-gateway demo --dir demo-run

Issues fresh certificates for CN, HK and MO, starts the three nodes on loopback, runs the
scenario, verifies the ledgers and stops everything. Exit 0 when every step succeeded.
The directory must be new, empty, or a previous demo run (which is emptied first); any other
directory is refused (exit 2) and left as it was.
"""


def register(subparsers: Any) -> None:
    """Add the ``demo`` command."""
    p = subparsers.add_parser(
        "demo",
        help="run the three-node demo on loopback",
        description="Run the three-node demo on loopback.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dir",
        default="demo-run",
        type=Path,
        help="work directory: new, empty or a previous demo run (emptied first)",
    )
    p.set_defaults(handler=lambda args: run_demo(args.dir))
