"""``customs-gateway audit``: verify a ledger offline, export it for an auditor."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.audit import (
    CATEGORIES,
    DatabaseSource,
    ExportSource,
    VerificationResult,
    WitnessPolicy,
    default_policy,
    open_source,
    reconcile,
    verify_checkpoints,
    verify_ledger,
    write_export,
)
from gateway.audit._policy import witness_id
from gateway.audit._verify import check_policy
from gateway.audit.errors import AuditError
from gateway.audit.live import fetch_export
from gateway.audit.report import build_report, render_html, report_json
from gateway.cli._base import EXIT_FAILED, EXIT_OK, CliError, counted
from gateway.notes import Verifier
from gateway.pki.bundle import TrustBundle
from gateway.pki.identity import Jurisdiction, Role, SpiffeId
from gateway.pki.note_keys import jurisdiction_of_origin
from gateway.store import StoreError, database_errors, open_database, redact
from gateway.transport import ClientIdentity, secure_channel

_VERIFY_EPILOG = """\
examples:
  customs-gateway audit verify hk-ledger.export --trust-bundle bundle.json
  customs-gateway audit verify hk-ledger.export --trust-bundle bundle.json --witnesses CN,MO \\
      --quorum 1 --json
  customs-gateway audit verify data/ledger.db \\
      --vkey 'hk.customs-exchange/ledger+1a2b3c4d+AU0v...' --witness-vkey mo-witness.vkey

With --trust-bundle, the log key and every witness key come from the signing certificates in
the export (chained to the bundle), every cosignature must be by one of them, and every sent
and received entry must have a matching, validly signed envelope (or an erased entry).

Witness policy: by default the latest checkpoint must be cosigned by EVERY OTHER jurisdiction
of the trust bundle (with --vkey: by every --witness-vkey). --witnesses names the set
(jurisdiction codes), --quorum how many of it must have cosigned (default: all). A policy that
could pass on nothing is refused. --no-witnesses is the explicit opt-out: only the log's own
signatures are checked, and the output says that its operator alone vouches for the history.
A witness that cosigned twice counts once.

On a ledger database, every stored subtree hash (ledger_tiles) is checked against the entries.

exit status: 0 verified, 1 the ledger does not verify (every failure is printed with its
category, entry index or checkpoint size), 2 bad arguments, a policy that could pass on
nothing, or an unreadable file.
"""

_EXPORT_EPILOG = """\
example:
  customs-gateway audit export --db data/ledger.db --out hk-ledger.export \\
      --cert certs/hk/node-gateway-signing.pem
  customs-gateway audit export --url postgresql://auditor@db.example/customs_hk \\
      --out hk-ledger.export       # a node on PostgreSQL ([storage] url)

The export (format version 2, docs/ledger-format.md) carries the entries, the checkpoints with
their cosignatures, the signing certificates found in the exchange's envelopes and receipts
(plus each --cert), and every envelope (empty when erased).
"""


_FETCH_EPILOG = """\
example:
  customs-gateway audit fetch --node 10.1.2.3:7001 --jurisdiction CN \\
      --cert auditor.pem --key auditor.key --trust-bundle bundle.json \\
      --out cn-2026-11.export --since cn-2026-10.export
  customs-gateway audit verify cn-2026-11.export --trust-bundle bundle.json

The fetched checkpoints are checked at once (signatures and cosignatures, with the keys of the
fetched certificates chained to the bundle) against the witness policy, as audit verify does
(--witnesses, --quorum, --no-witnesses; default: every other jurisdiction). Then verify the
whole export with audit verify.

exit status: 0 fetched (consistent with --since, latest checkpoint cosigned as the policy
requires), 1 the node's tree does not extend the earlier one or its checkpoints fail (the
export is kept as evidence), 2 bad arguments, a policy that could pass on nothing, or the node
cannot be reached.
"""

_RECONCILE_EPILOG = """\
example:
  customs-gateway audit reconcile cn.export hk.export mo.export --trust-bundle bundle.json

Also checks every signed receipt from its bytes, and every log against what the others
cosigned for it: a ledger shorter than a checkpoint its witnesses cosigned (rolled back), a
cosigned root its entries do not give (forked), two witnesses shown two views, and every
inconsistent checkpoint a witness refused live; each names both checkpoints and the witness
whose ledger holds the evidence.

exit status: 0 every message and checkpoint matches (pending deliveries are listed, not
errors), 1 a mismatch (both ledgers' indexes are named), 2 bad arguments.
Verify each ledger with `audit verify` first: reconciliation trusts what it reads.
"""


def _certificate_der(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data)
        )
    except ValueError as exc:
        raise CliError(f"{path} is not a certificate (PEM or DER)") from exc
    return cert.public_bytes(serialization.Encoding.DER)


def load_bundle(path: Path) -> TrustBundle:
    """Read a trust bundle file or raise :class:`CliError`."""
    try:
        return TrustBundle.from_json(path.read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read trust bundle {path}: {exc.strerror}") from exc


def _add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--witnesses",
        help="the witnesses the policy requires, e.g. CN,MO (default: every other jurisdiction "
        "of the trust bundle, or every --witness-vkey)",
    )
    parser.add_argument(
        "--quorum",
        type=int,
        help="how many of the witnesses must have cosigned the latest checkpoint (default: all)",
    )
    parser.add_argument(
        "--no-witnesses",
        action="store_true",
        help="opt out of the witness policy: the log's operator alone vouches for the result",
    )


def register(subparsers: Any) -> None:
    """Add the ``audit`` command group."""
    audit = subparsers.add_parser(
        "audit", help="verify or export a ledger", description="Offline ledger audit."
    )
    commands = audit.add_subparsers(title="audit commands", metavar="COMMAND")
    verify = commands.add_parser(
        "verify",
        help="recompute a ledger's tree and check every checkpoint",
        description="Verify a ledger database or export file offline.",
        epilog=_VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("path", type=Path, help="ledger database or export file")
    verify.add_argument("--vkey", help="the log's verifier key, or a file holding it")
    verify.add_argument(
        "--trust-bundle",
        type=Path,
        help="trust bundle JSON: take keys from certificates, check envelopes",
    )
    verify.add_argument(
        "--witness-vkey",
        action="append",
        default=[],
        help="a witness's cosignature verifier key or file (repeatable)",
    )
    _add_policy_arguments(verify)
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    verify.set_defaults(handler=_verify)
    export = commands.add_parser(
        "export",
        help="write a ledger's entries and checkpoints to one file",
        description="Export a ledger database to the single-file format auditors carry.",
        epilog=_EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    store = export.add_mutually_exclusive_group(required=True)
    store.add_argument("--db", type=Path, help="the node's ledger database (SQLite)")
    store.add_argument("--url", help="the node's PostgreSQL database ([storage] url)")
    export.add_argument("--out", type=Path, required=True, help="the export file to write")
    export.add_argument(
        "--cert",
        type=Path,
        action="append",
        default=[],
        help="a signing certificate (PEM or DER) to carry as well, e.g. the node's own",
    )
    export.set_defaults(handler=_export)
    recon = commands.add_parser(
        "reconcile",
        help="check the three nodes' ledgers against each other",
        description="Every sent entry must be received with the same digest, and receipted.",
        epilog=_RECONCILE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recon.add_argument("ledgers", type=Path, nargs="+", help="exports or ledger databases")
    recon.add_argument("--json", action="store_true", help="print the result as JSON")
    recon.add_argument(
        "--trust-bundle",
        type=Path,
        help="the trust bundle (JSON): node certificates must chain to it (recommended)",
    )
    recon.set_defaults(handler=_reconcile)
    fetch = commands.add_parser(
        "fetch",
        help="download a live node's ledger into an export file",
        description=(
            "Fetch a node's entries, checkpoints, signing certificates and envelopes over "
            "LedgerAudit (mutual TLS, as an auditor) into an export file to verify offline."
        ),
        epilog=_FETCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("--node", required=True, help="the node's HOST:PORT")
    fetch.add_argument(
        "--jurisdiction", required=True, help="the node's jurisdiction (CN, HK or MO)"
    )
    fetch.add_argument("--node-name", default="gateway", help="the node's name (default gateway)")
    fetch.add_argument("--cert", type=Path, required=True, help="your auditor certificate (PEM)")
    fetch.add_argument("--key", type=Path, required=True, help="your auditor private key (PEM)")
    fetch.add_argument("--trust-bundle", type=Path, required=True, help="the trust bundle (JSON)")
    fetch.add_argument("--out", type=Path, required=True, help="the export file to write")
    fetch.add_argument(
        "--since",
        type=Path,
        help="an earlier export of this node: its tree must be extended, not rewritten",
    )
    _add_policy_arguments(fetch)
    fetch.set_defaults(handler=_fetch)
    _register_report(commands)
    audit.set_defaults(handler=lambda _args: _usage(audit))


def _fetch(args: argparse.Namespace) -> int:
    for path in (args.cert, args.key, args.trust_bundle, *([args.since] if args.since else [])):
        if not path.is_file():
            raise CliError(f"no such file: {path}")
    own = Jurisdiction.parse(args.jurisdiction)
    bundle = load_bundle(args.trust_bundle)
    policy = _policy(args, own.value) or default_policy(own.value, bundle, ())
    check_policy(policy, own.value, bundle)  # before anything is fetched
    server = SpiffeId(own, Role.NODE, args.node_name)
    identity = ClientIdentity.from_files(args.cert, args.key, args.trust_bundle)
    try:
        with secure_channel(args.node, identity, server) as channel:
            result = fetch_export(channel, args.out, args.since)
    except grpc.RpcError as exc:
        raise CliError(f"{args.node}: {exc.code().name}: {exc.details()}") from None
    except AuditError as exc:
        print(f"customs-gateway: audit fetch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    since = (
        f"; consistent with the tree of size {result.since_size} in {args.since}"
        if result.since_size is not None
        else ""
    )
    print(
        f"fetched {result.entries} entries, {result.checkpoints} checkpoints, "
        f"{result.certificates} signing certificates and {result.envelopes} envelopes "
        f"(tree size {result.size}) to {args.out}{since}"
    )
    source = ExportSource(args.out)
    try:
        checked = verify_checkpoints(source, bundle, policy)
    finally:
        source.close()
    if checked.cosigners:
        latest = max(checked.cosigners)
        names = ", ".join(checked.cosigners[latest]) or "nobody"
        print(f"latest checkpoint (size {latest}) cosigned by: {names}")
    print(f"witness policy: {checked.policy}")
    if checked.failures:
        for failure in checked.failures:
            print(f"FAILED: {failure}")
        print(f"  the export is kept as evidence: customs-gateway audit verify {args.out}")
        return EXIT_FAILED
    return EXIT_OK


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _key(value: str) -> Verifier:
    path = Path(value)
    text = path.read_text().strip() if "+" not in value and path.is_file() else value
    return Verifier.from_vkey(text)


def _progress(done: int, total: int) -> None:
    percent = 100 * done // total if total else 100
    print(f"\rverifying: {done:,}/{total:,} entries ({percent}%)", end="", file=sys.stderr)
    if done >= total:
        print(file=sys.stderr)


def _as_json(result: VerificationResult) -> str:
    return json.dumps(
        {
            "ok": result.ok,
            "origin": result.origin,
            "entries": result.entries,
            "checkpoints": result.checkpoints,
            "cosignatures": result.cosignatures,
            "witness_policy": result.policy,
            "witnessed": result.witnessed,
            "cosigners": {str(size): names for size, names in result.cosigners.items()},
            "stored_hashes": result.stored_hashes,
            "consistency_proofs": result.consistency_proofs,
            "certificates": result.certificates,
            "envelopes": result.envelopes,
            "erased": result.erased,
            "withheld": result.withheld,
            "counts": {
                k: {"verified": v, "failed": f, "counts": CATEGORIES[k][0]}
                for k, (v, f) in result.counts().items()
            },
            "notices": result.notices,
            "first_bad_index": result.first_bad_index(),
            "root": result.root.hex(),
            "verified": result.verified,
            "failures": [
                {
                    "message": f.message,
                    "category": f.category,
                    "index": f.index,
                    "checkpoint_size": f.checkpoint_size,
                    "level": f.level,
                    "position": f.position,
                }
                for f in result.failures
            ],
        },
        indent=2,
    )


def _verify(args: argparse.Namespace) -> int:
    if not args.path.is_file():
        raise CliError(f"no such file: {args.path}")
    if args.vkey is None and args.trust_bundle is None:
        raise CliError("give --vkey or --trust-bundle")
    log_key = _key(args.vkey) if args.vkey else None
    witnesses = [_key(v) for v in args.witness_vkey]
    bundle = load_bundle(args.trust_bundle) if args.trust_bundle else None
    policy = _policy(args)
    show = not args.no_progress and not args.json
    result = verify_ledger(
        args.path, log_key, witnesses, _progress if show else None, bundle=bundle, policy=policy
    )
    if args.json:
        print(_as_json(result))
        return EXIT_OK if result.ok else EXIT_FAILED
    for notice in result.notices:
        print(f"note: {notice}")
    if result.cosigners:
        sizes = sorted(result.cosigners)
        shown = [f"{n}: {', '.join(result.cosigners[n]) or '-'}" for n in sizes[-_SHOWN:]]
        more = f"{len(sizes) - _SHOWN} earlier (--json lists all); " if len(sizes) > _SHOWN else ""
        print(f"cosigners by checkpoint size: {more}{'; '.join(shown)}")
        names = ", ".join(result.cosigners[sizes[-1]]) or "nobody"
        print(f"latest checkpoint (size {sizes[-1]}) cosigned by: {names}")
    print(f"witness policy: {result.policy}")
    if result.ok:
        print(
            f"ok: {result.origin}: {counted(result.entries, 'entry', 'entries')}, "
            f"{counted(result.checkpoints, 'checkpoint')}, "
            f"{counted(result.consistency_proofs, 'consistency proof')}, "
            f"{counted(result.cosignatures, 'cosignature')} "
            f"({result.witnessed} checkpoints meet the witness policy); "
            f"root {result.root.hex()}"
        )
        if result.stored_hashes:
            print(f"ok: {result.stored_hashes} stored subtree hashes match the entries")
        if bundle is not None:
            print(
                f"ok: {result.certificates} signing certificates chained to the bundle, "
                f"{result.envelopes} envelopes verified, {result.erased} erased, "
                f"{result.withheld} withheld"
            )
    elif result.failures:
        for failure in result.failures:
            print(f"FAILED: {failure}")
        for category, (verified, failed) in result.counts().items():
            if verified or failed:
                what = CATEGORIES[category][0]
                print(f"  {category}: {verified} {what}; {failed} failed")
        first = result.first_bad_index()
        if first is not None:
            print(f"  first bad entry index: {first}")
    else:
        print(f"FAILED: {result.entries} entries but no signed checkpoint to verify them against")
    return EXIT_OK if result.ok else EXIT_FAILED


_SHOWN = 12  # checkpoints whose cosigners the text output lists


def _policy(args: argparse.Namespace, own: str | None = None) -> WitnessPolicy | None:
    """The witness policy the arguments state, or None for the default."""
    if args.no_witnesses:
        if args.witnesses is not None or args.quorum is not None:
            raise CliError("--no-witnesses cannot be combined with --witnesses or --quorum")
        return WitnessPolicy.unwitnessed()
    if args.witnesses is None and args.quorum is None:
        return None
    if args.witnesses is not None:
        names = [w.strip() for w in args.witnesses.split(",") if w.strip()]
        members = frozenset(n if "/" in n else Jurisdiction.parse(n).value for n in names)
    elif args.trust_bundle is not None:
        members = frozenset(j.value for j, _ in load_bundle(args.trust_bundle))
        members -= {own if own is not None else _origin_code(args.path)}
    else:
        members = frozenset(witness_id(_key(v).name) for v in args.witness_vkey)
    quorum = args.quorum if args.quorum is not None else len(members)
    return WitnessPolicy(members, quorum)


def _origin_code(path: Path) -> str:
    source = open_source(path)
    try:
        j = jurisdiction_of_origin(source.origin)
    finally:
        source.close()
    return j.value if j is not None else ""


def _database_source(url: str) -> DatabaseSource:
    """The ledger in the PostgreSQL database at ``url``, read through the node's store."""
    try:
        database = open_database(url, Path())
        return DatabaseSource(conn=database.dedicated(), where=database.where)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    except database_errors() as exc:
        raise CliError(f"database {redact(url)}: {' '.join(str(exc).split())}") from None


def _export(args: argparse.Namespace) -> int:
    if args.db is not None and not args.db.is_file():
        raise CliError(f"no such file: {args.db}")
    extra = [_certificate_der(path) for path in args.cert]
    source = args.db if args.url is None else _database_source(args.url)
    entries, checkpoints, certificates, envelopes = write_export(source, args.out, extra)
    print(
        f"exported {entries} entries, {checkpoints} checkpoints, {certificates} signing "
        f"certificates and {envelopes} envelopes to {args.out}"
    )
    return EXIT_OK


def _reconcile(args: argparse.Namespace) -> int:
    for path in args.ledgers:
        if not path.is_file():
            raise CliError(f"no such file: {path}")
    if len(args.ledgers) < 2:
        raise CliError("give at least two ledgers to reconcile")
    bundle = load_bundle(args.trust_bundle) if args.trust_bundle else None
    result = reconcile(args.ledgers, bundle)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "ledgers": result.ledgers,
                    "sent": result.sent,
                    "matched": result.matched,
                    "receipts": result.receipts,
                    "unchecked": result.unchecked,
                    "receipts_verified": result.receipts_verified,
                    "cosigned_checked": result.cosigned_checked,
                    "evidence": result.evidence,
                    "pending": result.pending,
                    "refused": result.refused,
                    "notes": result.notes,
                    "errors": [
                        {
                            "problem": m.problem,
                            "message_id": str(m.message_id),
                            "message": m.message,
                        }
                        for m in result.errors
                    ],
                },
                indent=2,
            )
        )
    else:
        for line in result.pending:
            print(f"pending: {line}")
        for line in result.refused:
            print(f"refused: {line}")
        for line in result.notes:
            print(f"note: {line}")
        for error in result.errors:
            print(f"MISMATCH [{error.problem}]: {error}")
        verdict = "ok" if result.ok else "FAILED"
        print(
            f"{verdict}: {', '.join(result.ledgers)}: {result.sent} sent, {result.matched} "
            f"received with the same digest, {result.receipts} receipts "
            f"({result.receipts_verified} signed receipts verified), "
            f"{result.cosigned_checked} cosigned checkpoints checked against their logs, "
            f"{len(result.pending)} pending, {len(result.refused)} refused, "
            f"{len(result.errors)} mismatches"
        )
    return EXIT_OK if result.ok else EXIT_FAILED


_REPORT_EPILOG = """\
example:
  customs-gateway audit report cn.export hk.export mo.export \\
      --trust-bundle bundle.json --out audit-2026-11.html
  customs-gateway audit report cn.export hk.export mo.export \\
      --trust-bundle bundle.json --out audit-2026-11.json --json

One self-contained HTML page (no script, nothing fetched: it can be mailed or archived): per
ledger its size over time, its checkpoints and who cosigned them, the result of each
verification step, its erasures; the reconciliation matrix between the ledgers; every failure
numbered and highlighted with its entry index. --json writes the same content as JSON.

The witness policy is audit verify's, for each ledger: by default every other jurisdiction of
the trust bundle must have cosigned its latest checkpoint; --witnesses and --quorum state
another, --no-witnesses opts out.

exit status: 0 every ledger verified and the ledgers reconciled, 1 the report shows failures
(it is written all the same), 2 bad arguments, an unreadable file, or a witness policy that
could pass on nothing.
"""


def _register_report(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="write one HTML page (or JSON) of the audit of one or more ledgers",
        description="Verify and reconcile ledgers; write the result as a page an auditor hands on.",
        epilog=_REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("ledgers", type=Path, nargs="+", help="exports or ledger databases")
    report.add_argument("--trust-bundle", type=Path, required=True, help="the trust bundle (JSON)")
    report.add_argument("--out", type=Path, required=True, help="the file to write")
    report.add_argument(
        "--witnesses",
        help="the witnesses each ledger's latest checkpoint needs, e.g. CN,HK,MO (each ledger's "
        "own jurisdiction left out; default: every other jurisdiction of the trust bundle)",
    )
    report.add_argument(
        "--quorum", type=int, help="how many of those witnesses must have cosigned (default: all)"
    )
    report.add_argument(
        "--no-witnesses",
        action="store_true",
        help="opt out of the witness policy: each log's operator alone vouches for it",
    )
    report.add_argument("--json", action="store_true", help="write JSON instead of HTML")
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    for path in (*args.ledgers, args.trust_bundle):
        if not path.is_file():
            raise CliError(f"no such file: {path}")
    if not args.out.parent.is_dir():
        raise CliError(f"no such directory for --out: {args.out.parent}")
    bundle = load_bundle(args.trust_bundle)
    if args.no_witnesses and (args.witnesses is not None or args.quorum is not None):
        raise CliError("--no-witnesses cannot be combined with --witnesses or --quorum")
    witnesses = None
    if args.witnesses is not None:
        witnesses = [Jurisdiction.parse(w.strip()).value for w in args.witnesses.split(",") if w]
    # A file that is no ledger (ExportFormatError) or a policy that could pass on nothing
    # (AuditError) is one line and exit status 2 (main).
    report = build_report(
        args.ledgers,
        bundle,
        bundle_name=args.trust_bundle.name,
        witnesses=witnesses,
        quorum=args.quorum,
        no_witnesses=args.no_witnesses,
    )
    text = json.dumps(report_json(report), indent=2) + "\n" if args.json else render_html(report)
    tmp = args.out.with_name(args.out.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(args.out)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
    verdict = "ok" if report.ok else "FAILED"
    print(
        f"{verdict}: {len(report.ledgers)} ledgers, {len(report.failures)} failures; "
        f"report written to {args.out}"
    )
    for failure in report.failures:
        where = f" (entry {failure.index})" if failure.index is not None else ""
        print(
            f"  #{failure.number} {failure.ledger or '-'} {failure.step}{where}: {failure.message}"
        )
    return EXIT_OK if report.ok else EXIT_FAILED
