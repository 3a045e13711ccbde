"""``customs-gateway config example``: print an annotated node config that ``serve`` accepts.

Every key of ``docs/configuration.md`` is in it: required ones set, optional ones at their
default (commented out where leaving them out is the usual choice). The paths follow the layout
of ``certs/README.md``, relative to the config file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from gateway.cli._base import EXIT_OK
from gateway.pki.identity import Jurisdiction
from gateway.server.config import DeliverySettings, ServerSettings
from gateway.server.limits import Limits

__all__ = ["example_config", "register"]

_EPILOG = """\
example:
  customs-gateway config example --jurisdiction HK > /etc/customs-gateway/node.toml

Paths in the output are relative to the config file, laid out as certs/README.md describes.
Every key is explained in docs/configuration.md.
"""


def example_config(
    jurisdiction: Jurisdiction = Jurisdiction.HK, listen: str = "0.0.0.0:7443"
) -> str:
    """An annotated TOML node config for ``jurisdiction``: every key, with what it means."""
    cc = jurisdiction.value.lower()
    d = ServerSettings()
    dd = DeliverySettings()

    def line(setting: str, comment: str = "") -> str:
        return f"{setting:<35} # {comment}" if comment else setting

    peers = "\n".join(
        "\n".join(
            [
                "[[peers]]",
                line(f'jurisdiction = "{p.value}"'),
                f'address = "gateway.{p.value.lower()}.customs-exchange:7443"',
                f'# address_file = "../{p.value.lower()}/data/listen-address"',
                f'# addresses = ["gateway-1.{p.value.lower()}.example:7443", '
                f'"gateway-2.{p.value.lower()}.example:7443"]',
                f'# address_files = ["../{p.value.lower()}-1/data/listen-address", '
                f'"../{p.value.lower()}-2/data/listen-address"]',
                line('name = "gateway"', "its holder name (default)"),
                "",
            ]
        )
        for p in Jurisdiction
        if p is not jurisdiction
    )
    s = [
        f"# customs-gateway node config ({jurisdiction.value}). Reference: docs/configuration.md.",
        "# Paths are relative to this file. Check it with: customs-gateway serve --config FILE",
        "",
        line(f'jurisdiction = "{jurisdiction.value}"', "CN, HK or MO: whose node this is"),
        line('name = "gateway"', f"spiffe://{cc}.customs-exchange/node/gateway"),
        line(f'listen = "{listen}"', "HOST:PORT, mutual TLS only; port 0: any free"),
        line('data_dir = "data"', "ledger.db and listen-address live here"),
        "",
        line("[tls]", "the node's transport identity and what it trusts"),
        line(f'certificate = "certs/{cc}/node/gateway.pem"'),
        line(f'key = "certs/{cc}/node/gateway.key"'),
        line('trust_bundle = "certs/shared/bundle.json"', "the three roots"),
        'crls = ["certs/shared/cn.crl", "certs/shared/hk.crl", "certs/shared/mo.crl"]',
        "",
        line("[signing]", "Ed25519: signs envelopes, receipts, checkpoints"),
        line(f'certificate = "certs/{cc}/node/gateway-signing.pem"'),
        line(f'key = "certs/{cc}/node/gateway-signing.key"'),
        "",
        "# The other jurisdictions' nodes: this node delivers to them and they witness its",
        "# checkpoints. The TLS name checked is <name>.<cc>.customs-exchange whatever the address.",
        "# address_file instead of address: a file holding HOST:PORT, re-read at every reconnect",
        "# (nodes on one machine that bind port 0: tests, the demo). A peer node run as several",
        "# replicas: addresses (or address_files), one per replica; calls go round robin to",
        "# those up and are retried on another when one fails (docs/operations.md, Deployment).",
        peers,
        line("[server]", "optional; the defaults are shown"),
        line(f"grace_seconds = {d.grace_seconds}", "on SIGTERM, in-flight calls get this long"),
        line(f"max_workers = {d.max_workers}", "threads serving RPCs"),
        line(f"expiry_warning_days = {d.expiry_warning_days}", "warn before certificates expire"),
        line(
            f"checkpoint_interval_seconds = {d.checkpoint_interval_seconds}",
            "how often a checkpoint is signed",
        ),
        line(f"tls_reload_seconds = {d.tls_reload_seconds}", "how often TLS files, CRLs are read"),
        line(
            f"retention_sweep_seconds = {d.retention_sweep_seconds}",
            "how often expired payloads are erased",
        ),
        line(f"lease_seconds = {d.lease_seconds}", "replicas: a dead one's work moves after this"),
        line(
            f"pin_python_threads = {str(d.pin_python_threads).lower()}",
            "Python threads on one CPU at a time",
        ),
        "",
        line("[delivery]", "optional; the defaults are shown"),
        line(f"retry_base_seconds = {dd.retry_base_seconds}", "first retry, doubling (jitter)"),
        line(f"retry_cap_seconds = {dd.retry_cap_seconds}", "longest wait between retries"),
        line(
            f"failure_summary_seconds = {dd.failure_summary_seconds}",
            "a peer still down: one summary line this often",
        ),
        "",
        line("# [metrics]", "optional: Prometheus over HTTPS, monitor role"),
        '# listen = "127.0.0.1:9464"',
        "",
        line("# [limits]", f"optional; defaults for max_workers = {d.max_workers}"),
        *(f"# {key} = {value}" for key, value in _limit_defaults(d.max_workers)),
        "",
        line("# [storage]", "optional: absent, SQLite files in data_dir"),
        '# url = "postgresql://gateway@127.0.0.1:5432/customs"',
        "",
    ]
    return "\n".join(s)


def _limit_defaults(workers: int) -> list[tuple[str, object]]:
    """Each ``[limits]`` key with the value in force when it is left out."""
    limits = Limits.for_workers(workers)
    return [(f.name, getattr(limits, f.name)) for f in fields(limits) if f.name != "workers"]


def register(subparsers: Any) -> None:
    """Add the ``config`` command group."""
    group = subparsers.add_parser(
        "config",
        help="node config helpers",
        description="Node config helpers (reference: docs/configuration.md).",
    )
    commands = group.add_subparsers(title="config commands", metavar="COMMAND", required=True)
    example = commands.add_parser(
        "example",
        help="print an annotated node config",
        description="Print an annotated node config with every key; serve accepts it once "
        "the certificates it names exist.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    example.add_argument(
        "--jurisdiction",
        type=str.upper,
        choices=[j.value for j in Jurisdiction],
        default="HK",
        help="CN, HK or MO (default HK)",
    )
    example.add_argument(
        "--listen", default="0.0.0.0:7443", help="HOST:PORT to listen on (default 0.0.0.0:7443)"
    )
    example.set_defaults(handler=_example)


def _example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_config(Jurisdiction(args.jurisdiction), args.listen))
    return EXIT_OK
