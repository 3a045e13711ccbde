"""``python -m bench [--quick] [--long] [--only NAME ...]``: run the benchmarks, print one table."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from bench._report import Result, Scale, render

# Benchmark modules of this package, in the order they run.
MODULES: tuple[str, ...] = ("ledger", "screening", "exchange", "logs", "bulk", "replicas")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--long", action="store_true", help="also the rows that take minutes")
    parser.add_argument("--only", nargs="*", default=None, help="run only these modules")
    args = parser.parse_args(argv)
    scale = Scale(quick=args.quick, long=args.long)
    results: list[Result] = []
    for name in MODULES:
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        print(f"running bench.{name} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(f"bench.{name}")
        results.extend(module.run(scale))
        print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    print(render(results))
    missed = [r for r in results if r.met is False]
    if missed:
        print(
            f"\n{len(missed)} target(s) not met: "
            + ", ".join(f"{r.group}/{r.name}" for r in missed)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
