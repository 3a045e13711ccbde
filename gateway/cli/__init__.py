"""The ``customs-gateway`` command: parses arguments, calls the library, maps errors to exit codes.

Exit status: 0 success, 1 a check that ran and failed (e.g. a ledger that does not verify),
2 an operator mistake (bad arguments, bad config, missing file), reported as one line on stderr
without a traceback.

Each command group lives in its own module with a ``register(subparsers)`` function; handlers
take the parsed arguments and return an exit status. They raise :class:`CliError` (or any
:class:`gateway.errors.GatewayError`) for operator mistakes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gateway.cli._base import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, build_parser
from gateway.errors import GatewayError
from gateway.server.logs import flush_logs

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "CliError", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status instead of exiting (tests call this)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the command that was given them, with its own --help
            args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args))
    except (CliError, GatewayError) as exc:
        flush_logs()  # what the node logged comes first, and never inside this line
        sys.stderr.write(f"customs-gateway: error: {exc}\n")  # one write: one whole line
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
