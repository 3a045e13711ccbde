"""The demo scenario. Each step prints what it did; any failure stops the demo with exit 1."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from customs.gateway.v1 import audit_pb2, audit_pb2_grpc, common_pb2, partner_pb2
from gateway.audit._source import ExportSource, WitnessRecords
from gateway.cli import main as cli_main
from gateway.cli._base import counted
from gateway.demo.cluster import ALL, Cluster, NodeProcess, free_port
from gateway.demo.story import Partners, jurisdiction_name, short, state_name, wait_until
from gateway.demo.tamper import roll_back, strip_cosignatures
from gateway.domain.fixtures import HK_COMPANY_LATIN, HK_COMPANY_TRADITIONAL
from gateway.entries import Event
from gateway.errors import UnavailableError
from gateway.pki import Jurisdiction, Role
from gateway.transport import secure_channel

__all__ = ["run_demo"]

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


def _say(text: str = "") -> None:
    print(text, flush=True)


def _pki(*argv: str) -> None:
    """Run one ``customs-gateway pki`` command in-process, as an operator would."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["pki", *argv])
    if code != 0:
        raise UnavailableError(f"customs-gateway pki {' '.join(argv)} failed: {err.getvalue()}")


def _issue_certificates(root: Path) -> None:
    """Everything with the operator commands (see certs/README.md for the layout)."""
    for j in ALL:
        d = root / j.value.lower()
        ca = str(d / "ca")
        _pki("init-ca", "--jurisdiction", j.value, "--dir", ca)
        for role, name, stem, extra in (
            ("node", "gateway", "node", ()),
            ("node", "gateway", "node", ("--signing",)),
            ("partner", "risk", "partner", ()),
            ("auditor", "audit", "auditor", ()),
        ):
            _pki(
                "issue",
                "--ca-dir",
                ca,
                "--role",
                role,
                "--name",
                name,
                "--out-dir",
                str(d),
                "--file-stem",
                stem,
                *extra,
            )
        _pki("crl", "--ca-dir", ca, "--out", str(root / "crls" / f"{j.value.lower()}.crl"))
        _say(
            f"  {j.value}: root CA, node TLS + Ed25519 signing certificates, partner, auditor, "
            "first CRL"
        )
    _pki(
        "bundle",
        "build",
        "--out",
        str(root / "bundle.json"),
        *(f"--root={j.value}={root / j.value.lower() / 'ca'}" for j in ALL),
    )
    _pki("bundle", "check", str(root / "bundle.json"))


def _write_configs(root: Path, cluster: Cluster) -> None:
    ports = {j: free_port() for j in ALL}
    for j in ALL:
        d = root / j.value.lower()
        peers = "".join(
            f'\n[[peers]]\njurisdiction = "{p.value}"\naddress = "127.0.0.1:{ports[p]}"\n'
            for p in ALL
            if p is not j
        )
        config = d / "node.toml"
        config.write_text(
            f'jurisdiction = "{j.value}"\nlisten = "127.0.0.1:{ports[j]}"\ndata_dir = "data"\n\n'
            '[tls]\ncertificate = "node.pem"\nkey = "node.key"\ntrust_bundle = "../bundle.json"\n'
            'crls = ["../crls/cn.crl", "../crls/hk.crl", "../crls/mo.crl"]\n\n'
            '[signing]\ncertificate = "node-signing.pem"\nkey = "node-signing.key"\n'
            f"{peers}\n[server]\ngrace_seconds = 2.0\ncheckpoint_interval_seconds = 1.0\n"
        )
        cluster.nodes[j] = NodeProcess(j, config, ports[j], d / "node.log")


def _health_matrix(cluster: Cluster) -> bool:
    ok = True
    for caller in ALL:
        identity = cluster.client(caller, Role.NODE)
        for target in ALL:
            if target is caller:
                continue
            node = cluster.nodes[target]
            with secure_channel(node.address, identity, node.identity) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            ok &= status == health_pb2.HealthCheckResponse.SERVING
            _say(f"  {caller.value} node -> {target.value} node health over mutual TLS: {name}")
    return ok


def _auditor(cluster: Cluster, j: Jurisdiction) -> Any:
    node = cluster.nodes[j]
    channel = secure_channel(node.address, cluster.client(j, Role.AUDITOR), node.identity)
    return channel, audit_pb2_grpc.LedgerAuditStub(channel)


def _cosigners(cluster: Cluster, j: Jurisdiction, min_size: int) -> list[str] | None:
    """Names of the witnesses on ``j``'s latest checkpoint once it covers ``min_size``."""
    channel, stub = _auditor(cluster, j)
    with channel:
        checkpoint = stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=5)
        if checkpoint.size < min_size or not _only_witnessed_after(stub, checkpoint.size):
            return None
    names = [
        line.split(" ")[1]
        for line in checkpoint.note.decode().splitlines()
        if line.startswith("— ") and line.split(" ")[1].endswith("/witness")
    ]
    return sorted(names) if len(names) == 2 else None


def _only_witnessed_after(stub: Any, size: int) -> bool:
    """Whether every entry after ``size`` is a ``witnessed`` one (which asks for no checkpoint:
    the checkpoint of ``size`` is the last the node will make, until more traffic)."""
    for index in itertools.count(size):
        try:
            page = stub.GetEntries(
                audit_pb2.GetEntriesRequest(start=index, end=index + 1), timeout=5
            )
        except grpc.RpcError:
            return True  # beyond the ledger's last entry
        if any(e.leaf[17] != Event.WITNESSED for e in page.entries):
            return False
    return True  # pragma: no cover - count() does not end


def _wait_cosigned(cluster: Cluster, j: Jurisdiction, size: int) -> list[str]:
    return wait_until(f"{j.value} cosignatures", lambda: _cosigners(cluster, j, size))


def _cli(*argv: str) -> tuple[int, str]:
    """Run a ``customs-gateway`` command in-process, as an auditor would; (status, stdout)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(argv))
    if code == 2:
        raise UnavailableError(f"customs-gateway {' '.join(argv)}: {err.getvalue().strip()}")
    return code, out.getvalue()


def _audit(root: Path) -> bool:
    """Export each ledger, verify it with nothing but the trust bundle, reconcile all three."""
    exports = root / "exports"
    exports.mkdir(exist_ok=True)
    ok = True
    for j in ALL:
        export = exports / f"{j.value.lower()}.export"
        _cli(
            "audit",
            "export",
            "--db",
            str(root / j.value.lower() / "data" / "ledger.db"),
            "--out",
            str(export),
        )
        code, out = _cli(
            "audit",
            "verify",
            str(export),
            "--trust-bundle",
            str(root / "bundle.json"),
            "--json",
            "--no-progress",
        )
        ok &= code == 0
        _say(f"   {j.value}: {_summary(json.loads(out))}")
    _say("\n14. The auditor reconciles the three ledgers (customs-gateway audit reconcile)")
    code, out = _cli(
        "audit",
        "reconcile",
        *(str(exports / f"{j.value.lower()}.export") for j in ALL),
        "--trust-bundle",
        str(root / "bundle.json"),
    )
    _say(f"   {out.strip()}")
    return ok and code == 0 and _tamper(root)


def _tamper(root: Path) -> bool:
    """Roll back a copy of CN's ledger and strip the cosignatures from a copy of HK's: the
    audit names both. Returns whether the rollback was named."""
    exports, tampered = root / "exports", root / "tampered"
    tampered.mkdir(exist_ok=True)
    bundle = str(root / "bundle.json")
    _say("\n15. What if an operator rewrites its own ledger? The auditor tries it on copies")
    latest = {  # the largest checkpoint of CN that each witness cosigned
        j: max(
            c.size
            for c in (
                ExportSource(exports / f"{j.value.lower()}.export").witness_records() or _NONE
            ).cosigned
            if c.note.startswith(b"cn.customs-exchange/ledger\n")
        )
        for j in (HK, MO)
    }
    cut = min(latest.values()) - 1
    rolled = tampered / "cn-rolled-back.export"
    roll_back(exports / "cn.export", rolled, cut, root / "cn" / "node-signing.key")
    _say(
        f"   CN's copy rolled back to {cut} entries, below the checkpoints HK and MO cosigned "
        f"(sizes {latest[HK]} and {latest[MO]}), and re-signed with CN's own key"
    )
    code, out = _cli("audit", "verify", str(rolled), "--trust-bundle", bundle, "--no-progress")
    _say(
        f"   audit verify of that copy alone: exit {code}"
        + (" (its re-signed checkpoint has no witness)" if code else "")
    )
    code, out = _cli(
        "audit",
        "reconcile",
        str(rolled),
        *(str(exports / f"{j.value.lower()}.export") for j in (HK, MO)),
        "--trust-bundle",
        bundle,
    )
    rollbacks = [line for line in out.splitlines() if "[rolled-back]" in line]
    _say(f"   audit reconcile with HK's and MO's ledgers: exit {code}")
    for line in rollbacks:
        _say(f"   {line}")
    stripped = tampered / "hk-stripped.export"
    count = strip_cosignatures(exports / "hk.export", stripped)
    _say(f"   HK's copy with its {count} cosignature lines stripped")
    code, out = _cli("audit", "verify", str(stripped), "--trust-bundle", bundle, "--no-progress")
    failures = [line for line in out.splitlines() if line.startswith("FAILED")]
    _say(f"   audit verify of that copy (witness policy: every other jurisdiction): exit {code}")
    for line in failures[:3]:
        _say(f"   {line.strip()}")
    return code != 0 and bool(rollbacks)


def _story(cluster: Cluster, partners: Partners) -> None:
    _say("\n4. HK publishes a watchlist entry to CN and MO")
    entry = partners.publish_entry()
    _say(
        f"   HK risk engine: {HK_COMPANY_LATIN} ({HK_COMPANY_TRADITIONAL}),\n"
        "   suspected of moving antimony ingots declared as zinc through Viet Nam; risk HIGH"
    )
    _say(f"   accepted: message {short(entry.message_id)}, HK ledger index {entry.ledger_index}")

    _say("\n5. MO's node is stopped for maintenance (SIGTERM)")
    _say(f"   MO node exit {cluster.nodes[MO].stop()}")

    _say("\n6. CN submits a seizure notice releasable to HK and MO")
    request, notice = partners.submit_notice()
    line = request.notice.goods[0]
    quantity = f"{line.quantity.amount} {line.quantity.unit}"
    _say(f"   Shekou, case {request.notice.case_reference}: {quantity}")
    _say(f"   declared: {line.declared_description} (HS {line.declared_hs_code})")
    _say(f"   found:    {line.actual_description} (HS {line.actual_hs_code})")
    _say("   typologies: false declaration, concealment, third-country transshipment (via VN)")
    _say(
        f"   acknowledged only once durable: CN ledger index {notice.ledger_index}, "
        f"digest {notice.digest.hex()[:16]}..."
    )

    _say("\n7. HK's case management receives it on its inbound stream and acknowledges")
    (received,) = partners.read_inbound(HK, 1)
    ack = partners.acknowledge(HK, received.message_id)
    _say(
        f"   HK got {short(received.message_id)} from {jurisdiction_name(received.origin)} "
        f"(HK ledger index {received.ledger_index}); acknowledgement at index {ack.ledger_index}"
    )

    _say("\n8. CN checks delivery: HK has signed a receipt, MO is unreachable")
    status = wait_until(
        "the HK receipt",
        lambda: (
            (s := partners.status(CN, notice.message_id))
            and any(r.state == partner_pb2.DELIVERY_STATE_DELIVERED for r in s.recipients)
            and s
        ),
    )
    for r in status.recipients:
        detail = (
            f"receipt signed by {jurisdiction_name(r.recipient)}, attempts {r.attempts}"
            if r.state == partner_pb2.DELIVERY_STATE_DELIVERED
            else f"attempts {r.attempts}, last error: {r.last_error.split(':')[0]}"
        )
        _say(f"   {jurisdiction_name(r.recipient)}: {state_name(r.state)} ({detail})")

    _say("\n9. A CN port system screens a new export declaration against the watchlists")
    screening = partners.screen(CN)
    for hit in screening.hits:
        kinds = sorted(
            {partner_pb2.MatchKind.Name(x.kind).removeprefix("MATCH_KIND_") for x in hit.reasons}
        )
        _say(
            f"   hit: {jurisdiction_name(hit.origin)} entry {short(hit.entry_id)} score "
            f"{hit.score:.2f} ({', '.join(k.lower() for k in kinds)})"
        )
        for reason in hit.reasons[:3]:
            _say(f"     - {reason.detail}")

    _say("\n10. MO's node comes back and catches up")
    cluster.nodes[MO].start()
    partners.close()
    inbound = partners.read_inbound(MO, 2)
    for message in inbound:
        partners.acknowledge(MO, message.message_id)
        kind = common_pb2.MessageKind.Name(message.kind).removeprefix("MESSAGE_KIND_").lower()
        _say(
            f"   MO got {kind.replace('_', ' ')} {short(message.message_id)} from "
            f"{jurisdiction_name(message.origin)} and acknowledged it"
        )
    wait_until(
        "every receipt",
        lambda: all(
            r.state == partner_pb2.DELIVERY_STATE_DELIVERED
            for j, m in ((CN, notice.message_id), (HK, entry.message_id))
            for r in partners.status(j, m).recipients
        ),
    )
    _say("   CN and HK hold signed receipts from every recipient")


def run_demo(directory: Path) -> int:
    """Run the whole demo in ``directory`` (wiped first); return the exit status."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    cluster = Cluster(directory)
    partners = Partners(cluster)
    _say("customs-gateway demo: three customs administrations on loopback\n")
    _say("1. Each jurisdiction creates its own root CA and issues its certificates")
    _issue_certificates(directory)
    _say("   trust bundle with the three roots: bundle.json")
    _say("\n2. Three nodes start (customs-gateway serve), mutual TLS only")
    _write_configs(directory, cluster)
    try:
        for j in ALL:
            cluster.nodes[j].start()
            _say(f"   {j.value} node listening on {cluster.nodes[j].address}")
        _say("\n3. Each node checks the others' health with its own node certificate")
        healthy = _health_matrix(cluster)
        _story(cluster, partners)
        _say("\n11. Each ledger's latest checkpoint is cosigned by the two other jurisdictions")
        for j in ALL:
            channel, stub = _auditor(cluster, j)
            with channel:
                size = stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=5).size
            names = _wait_cosigned(cluster, j, size)
            _say(f"   {j.value}: checkpoint of size {size} cosigned by {' and '.join(names)}")
    finally:
        partners.close()
        codes = cluster.stop_all()
    _say(
        "\n12. Nodes stopped with SIGTERM: "
        + ", ".join(f"{j.value} exit {c}" for j, c in codes.items())
    )
    _say("\n13. An auditor exports each ledger and verifies it with nothing but the trust bundle")
    audited = _audit(directory)
    _say(_NEXT.format(d=directory))
    return 0 if healthy and audited and not any(codes.values()) else 1


_NONE = WitnessRecords([], [], [])


def _summary(result: dict[str, Any]) -> str:
    return (
        f"{counted(result['entries'], 'entry', 'entries')}, "
        f"{counted(result['checkpoints'], 'checkpoint')}, "
        f"{counted(result['consistency_proofs'], 'consistency proof')}, "
        f"{counted(result['cosignatures'], 'cosignature')}, "
        f"{counted(result['envelopes'], 'envelope')} verified; root {result['root'][:16]}..."
    )


_NEXT = """
What you can run next (everything is in {d}/):
  .venv/bin/customs-gateway pki list --ca-dir {d}/hk/ca      # HK's certificates, with status
  .venv/bin/customs-gateway audit verify {d}/cn/data/ledger.db --trust-bundle {d}/bundle.json
  .venv/bin/customs-gateway audit reconcile {d}/exports/cn.export \\
      {d}/exports/hk.export {d}/exports/mo.export --json
  .venv/bin/customs-gateway serve --config {d}/cn/node.toml    # run a node yourself
  less {d}/cn/node.log                                         # the node's JSON log"""
