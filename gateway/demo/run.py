"""The demo scenario. Each step prints what it did; any failure stops the demo with exit 1."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.cli import main as cli_main
from gateway.demo.cluster import ALL, Cluster, NodeProcess, free_port
from gateway.errors import UnavailableError
from gateway.pki import Role
from gateway.transport import secure_channel

__all__ = ["run_demo"]


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
            f"{peers}\n[server]\ngrace_seconds = 2.0\n"
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


def run_demo(directory: Path) -> int:
    """Run the whole demo in ``directory`` (wiped first); return the exit status."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    cluster = Cluster(directory)
    _say("customs-gateway demo: three customs administrations on loopback\n")
    _say("1. Each jurisdiction creates its own root CA and issues its certificates")
    _issue_certificates(directory)
    _say("   trust bundle with the three roots: bundle.json\n")
    _say("2. Three nodes start (customs-gateway serve), mutual TLS only")
    _write_configs(directory, cluster)
    try:
        for j in ALL:
            cluster.nodes[j].start()
            _say(f"  {j.value} node listening on {cluster.nodes[j].address}")
        _say("\n3. Each node checks the others' health with its own node certificate")
        healthy = _health_matrix(cluster)
    finally:
        codes = cluster.stop_all()
    _say(
        "\n4. Nodes stopped with SIGTERM: "
        + ", ".join(f"{j.value} exit {c}" for j, c in codes.items())
    )
    _say(f"\nEverything is in {directory}/ (certificates, configs, node logs).")
    return 0 if healthy and not any(codes.values()) else 1
