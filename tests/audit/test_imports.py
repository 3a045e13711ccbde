"""The offline auditor loads the entry codec and the pure core, nothing of the node's writer."""

from __future__ import annotations

import json
import subprocess
import sys

# What an auditor's process must never load: the node's writer, exchange, server, store and
# transport (nor a database driver: the auditor reads what it is handed).
FORBIDDEN = (
    "gateway.ledger",
    "gateway.exchange",
    "gateway.server",
    "gateway.store",
    "gateway.transport",
    "grpc",
    "psycopg",
)


def test_importing_gateway_audit_loads_nothing_of_the_node() -> None:
    script = (
        "import json, sys, gateway.audit\n"
        "from gateway.audit import verify_ledger\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    loaded = json.loads(out)
    assert "gateway.audit._verify" in loaded
    assert "gateway.entries._codec" in loaded  # the codec is there, from its neutral place
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []
