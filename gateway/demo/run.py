"""The demo scenario. Each step prints what it did; any failure stops the demo with exit 1."""

from __future__ import annotations

import shutil
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.demo.cluster import ALL, Cluster, NodeProcess, free_port
from gateway.pki import Role, SpiffeId, create_root_ca, issue_leaf, issue_signing_certificate
from gateway.pki.bundle import TrustBundle
from gateway.pki.pem import certificate_pem, write_private_key, write_public_file
from gateway.transport import secure_channel

__all__ = ["run_demo"]


def _say(text: str = "") -> None:
    print(text, flush=True)


def _issue_certificates(root: Path) -> None:
    cas = {j: create_root_ca(j) for j in ALL}
    bundle = TrustBundle(tuple((j, ca.certificate) for j, ca in cas.items()))
    write_public_file(root / "bundle.json", bundle.to_json().encode())
    for j, ca in cas.items():
        d = root / j.value.lower()
        write_public_file(d / "ca.pem", certificate_pem(ca.certificate))
        write_private_key(d / "ca.key", ca.private_key)
        issued = {
            "node": issue_leaf(ca, SpiffeId(j, Role.NODE, "gateway")),
            "node-signing": issue_signing_certificate(ca, SpiffeId(j, Role.NODE, "gateway")),
            "partner": issue_leaf(ca, SpiffeId(j, Role.PARTNER, "risk")),
            "auditor": issue_leaf(ca, SpiffeId(j, Role.AUDITOR, "audit")),
        }
        for stem, cert in issued.items():
            write_public_file(d / f"{stem}.pem", certificate_pem(cert.certificate))
            assert cert.private_key is not None
            write_private_key(d / f"{stem}.key", cert.private_key)
        _say(f"  {j.value}: root CA, node TLS + Ed25519 signing certificates, partner, auditor")


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
            '[tls]\ncertificate = "node.pem"\nkey = "node.key"\ntrust_bundle = "../bundle.json"\n\n'
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
