"""``python -m bench.bulk_memory``: only group ``bulk``'s memory row (issue 15: one node's peak
RSS after 1,000,000 entries against after 100,000), without the rows before it, which take
minutes of their own; prints the row as ``make bench`` does, with the load average."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench import bulk
from bench._report import Result, render
from tests.support import make_world


def main() -> int:
    """Runs the memory row; its RSS after each 100,000 entries goes to standard error."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-bulk-memory-") as tmp:
        root = Path(tmp)
        row = bulk._memory(make_world(root / "pki"), root / "memory")
    print(
        render(
            [
                row,
                Result(bulk.GROUP, "machine load average (1 min) before", load_before, "runnable"),
                Result(
                    bulk.GROUP, "machine load average (1 min) after", os.getloadavg()[0], "runnable"
                ),
            ]
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
