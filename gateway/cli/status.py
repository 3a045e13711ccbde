"""``customs-gateway status``: one node at a glance, for its operators.

Formats what :mod:`gateway.status` gathers and judges. Exit status: 0 all is well, 1 something
needs attention (each problem one line, at the end; also when the node does not answer), 2 an
operator's mistake (bad arguments, unreadable config or certificate, a refusal by the node).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli._base import EXIT_FAILED, EXIT_OK, CliError
from gateway.status import (
    DEFAULT_STUCK_AFTER,
    LeaseStatus,
    NodeStatus,
    NodeUnreachableError,
    StatusReport,
    assess,
    status_with_certificate,
    status_with_config,
)

__all__ = ["register"]

EXAMPLE = """examples:
  customs-gateway status --config /etc/customs-gateway/node.toml
  customs-gateway status 10.0.0.7:7002 --cert monitor.pem --key monitor.key \\
      --trust-bundle bundle.json --json

With --config, the node is asked at its configured address with its own TLS certificate. With
ADDRESS, with an operator's certificate (role monitor, the node's jurisdiction).
Exit status: 0 all is well; 1 something needs attention (one line per problem); 2 a mistake.
"""


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def register(subparsers: Any) -> None:
    """Add the ``status`` command."""
    p = subparsers.add_parser(
        "status",
        help="show a node at a glance: peers, backlog, ledger, certificates, CRLs",
        description=(
            "Show one node at a glance (its own view): identity and version, each peer and "
            "whether it is reachable, the outbox backlog per peer, the ledger size and last "
            "checkpoint with its cosigners, certificate expiry, the CRLs in force."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("address", nargs="?", metavar="ADDRESS", help="HOST:PORT of the node")
    p.add_argument("--config", type=Path, help="the node's TOML config (its own address and TLS)")
    p.add_argument("--cert", type=Path, help="with ADDRESS: a monitor certificate (PEM)")
    p.add_argument("--key", type=Path, help="with ADDRESS: its private key")
    p.add_argument("--trust-bundle", type=Path, help="with ADDRESS: the trust bundle JSON")
    p.add_argument("--name", default="gateway", help="with ADDRESS: the node's name (gateway)")
    p.add_argument(
        "--warn-days",
        type=_days,
        metavar="DAYS",
        help="warn of certificates expiring within DAYS (default: the node's own setting)",
    )
    p.add_argument(
        "--stuck-after",
        type=_positive,
        default=DEFAULT_STUCK_AFTER.total_seconds(),
        metavar="SECONDS",
        help="a backlog whose oldest message waits longer is stuck (default 300)",
    )
    p.add_argument("--timeout", type=_positive, default=15.0, help="seconds to wait (15)")
    p.add_argument("--json", action="store_true", help="print a JSON document")
    p.set_defaults(handler=_status)


def _fetch(args: argparse.Namespace) -> NodeStatus:
    if args.config is not None:
        if args.cert or args.key or args.trust_bundle:
            raise CliError(
                "--config uses the node's own certificate: omit --cert/--key/--trust-bundle"
            )
        return status_with_config(args.config, address=args.address, timeout=args.timeout)
    if args.address is None:
        raise CliError("give --config NODE.toml, or ADDRESS with --cert, --key and --trust-bundle")
    missing = [f"--{n}" for n in ("cert", "key", "trust_bundle") if getattr(args, n) is None]
    if missing:
        raise CliError(f"ADDRESS needs {', '.join(m.replace('_', '-') for m in missing)}")
    return status_with_certificate(
        args.address, args.cert, args.key, args.trust_bundle, name=args.name, timeout=args.timeout
    )


def _status(args: argparse.Namespace) -> int:
    try:
        status = _fetch(args)
    except NodeUnreachableError as exc:
        if args.json:
            print(
                json.dumps(
                    {"ok": False, "problems": [{"kind": "node-unreachable", "message": str(exc)}]},
                    indent=2,
                )
            )
        else:
            print(f"PROBLEM {exc}")
        return EXIT_FAILED
    report = assess(
        status, warning_days=args.warn_days, stuck_after=dt.timedelta(seconds=args.stuck_after)
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        sys.stdout.write(render(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def _age(now: dt.datetime, value: dt.datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((now - value).total_seconds())
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


def _leases(leases: tuple[LeaseStatus, ...]) -> list[str]:
    """Who runs each singleton (ADR 0072): the deliverers' history under "peers" is the
    answering replica's own, so it is empty where another replica holds the lease."""
    rows: list[tuple[str, ...]] = [("LEASE", "HOLDER", "EPOCH", "EXPIRES")]
    for lease in leases:
        if not lease.holder:
            rows.append((lease.name, "NOBODY", "-", "-"))
            continue
        left = lease.expires_in_seconds
        rows.append(
            (
                lease.name,
                lease.holder + (" (this replica)" if lease.here else ""),
                str(lease.epoch),
                f"in {left:.1f} s" if left > 0 else f"RAN OUT {-left:.1f} s ago",
            )
        )
    return _table(rows)


def render(report: StatusReport) -> str:
    """The one-screen text form of ``report``; problems last, one line each."""
    s = report.status
    now = s.now
    lines = [
        f"node     {s.identity} at {s.address} ({s.jurisdiction}), customs-gateway {s.version}",
        f"         up since {_when(s.started_at)}, node clock {_when(now)}",
    ]
    if s.checkpoint is None:
        lines.append(f"ledger   {s.ledger_size} entries, no checkpoint yet")
    else:
        c = s.checkpoint
        cosigners = ", ".join(c.cosigners) or "none"
        lines.append(
            f"ledger   {s.ledger_size} entries; checkpoint {c.size} made "
            f"{_age(now, c.created_at)}, cosigned by {cosigners}"
        )
    if s.storage == "postgresql":
        lines.append(
            f"storage  PostgreSQL, shared by this node's replicas; this one is {s.replica}"
        )
        lines += _leases(s.leases)
    lines.append("peers")
    rows: list[tuple[str, ...]] = [
        (
            "PEER",
            "ADDRESS",
            "REACHABLE",
            "QUEUED",
            "FAILING",
            "OLDEST WAITING",
            "LAST DELIVERY",
            "LAST ERROR",
        )
    ]
    for p in s.peers:
        rows.append(
            (
                p.jurisdiction,
                p.address,
                "yes" if p.reachable else "NO",
                str(p.queued),
                str(p.failing),
                _age(now, p.oldest_pending) if p.oldest_pending else "-",
                _age(now, p.last_success),
                (p.last_error or "-")[:60] if p.consecutive_failures else "-",
            )
        )
    lines += _table(rows) if s.peers else ["  (none configured)"]
    lines.append("certificates")
    rows = [("NAME", "SERIAL", "NOT AFTER", "DAYS LEFT", "SUBJECT")]
    for cert in s.certificates:
        rows.append(
            (
                cert.name,
                cert.serial,
                _when(cert.not_after),
                f"{cert.days_left(now):.1f}",
                cert.subject,
            )
        )
    lines += _table(rows)
    lines.append("CRLs in force")
    if s.crls:
        rows = [("ISSUER", "NUMBER", "THIS UPDATE", "NEXT UPDATE", "REVOKED")]
        for crl in s.crls:
            rows.append(
                (
                    crl.issuer,
                    str(crl.number),
                    _when(crl.this_update),
                    _when(crl.next_update),
                    str(crl.revoked),
                )
            )
        lines += _table(rows)
    else:
        lines.append("  none loaded")
    if report.ok:
        lines.append("all well")
    else:
        lines.append(f"{len(report.problems)} problem(s):")
        lines += [f"PROBLEM {p}" for p in report.problems]
    return "\n".join(lines) + "\n"
