"""``python -m gateway``: the same as the ``customs-gateway`` command."""

from gateway.cli import main

raise SystemExit(main())
