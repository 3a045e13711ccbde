"""Who gets through to the CN node, over real mutual TLS on loopback: one table of callers.

Each case makes a real client certificate with the project's PKI code (or forges one with
``cryptography`` where the library refuses), dials a running CN node and calls one RPC. What is
refused at the TLS handshake surfaces on the client as ``UNAVAILABLE`` (BoringSSL checks the
chain, the validity period and the client EKU itself); what the gateway refuses surfaces as
``UNAUTHENTICATED`` or ``PERMISSION_DENIED`` with the rule in the details, and is logged.

"Admitted" means the access interceptor let the call through to the servicer: health answers
SERVING; the gateway services answer whatever their servicer answers (``UNIMPLEMENTED`` while a
servicer is a stub, an ``INVALID_ARGUMENT`` for the empty request once it is real), never one of
the three refusal codes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from customs.gateway.v1 import audit_pb2, partner_pb2, peer_pb2
from gateway.pki import (
    CertificateAuthority,
    Jurisdiction,
    RevocationReason,
    Role,
    SpiffeId,
    TrustBundle,
    build_crl,
    create_root_ca,
    issue_leaf,
)
from gateway.pki.pem import certificate_pem, private_key_pem, write_public_file
from gateway.pki.revocation import RevokedEntry
from gateway.server import Node
from gateway.transport import ClientIdentity, secure_channel
from tests.support import World, running_node

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO
REFUSALS = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}
_DESCRIPTORS = {
    d.full_name: d
    for m in (audit_pb2, partner_pb2, peer_pb2)
    for d in m.DESCRIPTOR.services_by_name.values()
}


@dataclass
class Cluster:
    """A running CN node whose CRL file the test may publish, and the world's PKI."""

    world: World
    node: Node
    crl: Path


@pytest.fixture(scope="module")
def cluster(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cn-node")
    crl = tmp / "cn.crl"  # every configured CRL must exist at start (ADR 0024)
    write_public_file(crl, build_crl(world.cas[CN], [], number=0).public_bytes(Encoding.PEM))
    config = world.write_config(CN, tmp / "cn-data", crls=[crl], server="tls_reload_seconds = 0.1")
    with running_node(config) as node:
        yield Cluster(world, node, crl)


def _call(channel: grpc.Channel, method: str) -> tuple[grpc.StatusCode, str]:
    """Call ``method`` with an empty request; return the status code and details."""
    if method == "/grpc.health.v1.Health/Check":
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        return grpc.StatusCode.OK, ""
    service, name = method.strip("/").split("/")
    desc = _DESCRIPTORS[service].methods_by_name[name]
    request_cls = message_factory.GetMessageClass(desc.input_type)
    response_cls = message_factory.GetMessageClass(desc.output_type)
    rpc = channel.unary_unary(
        method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_cls.FromString,
    )
    try:
        rpc(request_cls(), timeout=5)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _channel(cluster: Cluster, cert_pem: bytes, key_pem: bytes) -> grpc.Channel:
    roots = cluster.world.client_identity(cluster.world.cred(CN, Role.PARTNER)).root_certificates
    return secure_channel(
        cluster.node.address, ClientIdentity(cert_pem, key_pem, roots), cluster.node.config.identity
    )


def _issued(cluster: Cluster, j: Jurisdiction, role: Role, name: str, **kw) -> grpc.Channel:
    cred = cluster.world.issue(j, role, name, tag=f"-{name}", **kw)
    return _channel(cluster, cred.certificate.read_bytes(), cred.key.read_bytes())


# -- how each caller is made --------------------------------------------------------------------


def _default(j: Jurisdiction, role: Role) -> Callable[[Cluster], grpc.Channel]:
    def make(cluster: Cluster) -> grpc.Channel:
        cred = cluster.world.cred(j, role)
        return _channel(cluster, cred.certificate.read_bytes(), cred.key.read_bytes())

    return make


def _no_certificate(cluster: Cluster) -> grpc.Channel:
    roots = cluster.world.client_identity(cluster.world.cred(CN, Role.PARTNER)).root_certificates
    return grpc.secure_channel(
        cluster.node.address,
        grpc.ssl_channel_credentials(root_certificates=roots),
        options=[("grpc.ssl_target_name_override", cluster.node.config.identity.dns_name)],
    )


def _unknown_ca(cluster: Cluster) -> grpc.Channel:
    rogue = create_root_ca(CN)  # a CN root, but not the one in the bundle
    return _issued(cluster, CN, Role.PARTNER, "rogue", ca=rogue)


def _expired(cluster: Cluster) -> grpc.Channel:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    return _issued(cluster, CN, Role.PARTNER, "expired", now=past)


def _not_yet_valid(cluster: Cluster) -> grpc.Channel:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    return _issued(cluster, CN, Role.PARTNER, "early", now=future)


def _server_only_eku(cluster: Cluster) -> grpc.Channel:
    return _issued(cluster, CN, Role.NODE, "server-only", server_only=True)


def _mo_root_claiming_cn(cluster: Cluster) -> grpc.Channel:
    """Forged: signed by the real MO root, but its URI SAN says it is a CN partner.

    The library refuses to issue this (``the MO root cannot issue spiffe://cn...``), so it is
    built with ``cryptography`` directly.
    """
    with pytest.raises(ValueError, match="the MO root cannot issue spiffe://cn"):
        issue_leaf(cluster.world.cas[MO], SpiffeId(CN, Role.PARTNER, "risk"))
    return _channel(cluster, *_forged_pair(cluster.world.cas[MO]))


@dataclass(frozen=True)
class Case:
    make: Callable[[Cluster], grpc.Channel]
    method: str
    expected: grpc.StatusCode | None  # None: admitted
    details: str = ""


HEALTH = "/grpc.health.v1.Health/Check"
SUBMIT = "/customs.gateway.v1.PartnerGateway/SubmitSeizureNotice"
LIST = "/customs.gateway.v1.PartnerGateway/ListWatchlist"
DELIVER = "/customs.gateway.v1.PeerExchange/DeliverBatch"
COSIGN = "/customs.gateway.v1.PeerExchange/CosignCheckpoint"
CHECKPOINT = "/customs.gateway.v1.LedgerAudit/GetCheckpoint"
U, A, P = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)

CASES = {
    # refused at the TLS handshake by BoringSSL (the client sees UNAVAILABLE)
    "no-certificate": Case(_no_certificate, HEALTH, U),
    "unknown-ca": Case(_unknown_ca, HEALTH, U),
    "expired": Case(_expired, HEALTH, U),
    "not-yet-valid": Case(_not_yet_valid, HEALTH, U),
    "server-only-eku-as-client": Case(_server_only_eku, HEALTH, U),
    # The MO root's name constraints permit URIs in mo.customs-exchange only: BoringSSL refuses
    # the chain at the handshake (name constraint violation), before the gateway's own check
    # (a CN identity must chain to a CN root) is reached; see the next test for that check.
    "mo-root-claiming-cn": Case(_mo_root_claiming_cn, HEALTH, U),
    # refused by the gateway's authorization table
    "hk-partner-at-cn-node": Case(
        _default(HK, Role.PARTNER), LIST, P, "rule partner-own-jurisdiction"
    ),
    "partner-calls-peer-exchange": Case(
        _default(CN, Role.PARTNER), DELIVER, P, "rule peer-nodes-only"
    ),
    "own-node-calls-peer-exchange": Case(
        _default(CN, Role.NODE), DELIVER, P, "rule peer-nodes-only"
    ),
    "auditor-calls-submit": Case(
        _default(HK, Role.AUDITOR), SUBMIT, P, "rule partner-own-jurisdiction"
    ),
    "node-calls-audit": Case(_default(HK, Role.NODE), CHECKPOINT, P, "rule auditors-read-only"),
    # admitted
    "cn-partner-submits": Case(_default(CN, Role.PARTNER), SUBMIT, None),
    "cn-partner-lists-watchlist": Case(_default(CN, Role.PARTNER), LIST, None),
    "hk-node-delivers": Case(_default(HK, Role.NODE), DELIVER, None),
    "mo-node-cosigns": Case(_default(MO, Role.NODE), COSIGN, None),
    "hk-auditor-reads-checkpoint": Case(_default(HK, Role.AUDITOR), CHECKPOINT, None),
    "cn-auditor-reads-checkpoint": Case(_default(CN, Role.AUDITOR), CHECKPOINT, None),
    "mo-partner-checks-health": Case(_default(MO, Role.PARTNER), HEALTH, None),
    "hk-auditor-checks-health": Case(_default(HK, Role.AUDITOR), HEALTH, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_callers(cluster: Cluster, name: str, caplog: pytest.LogCaptureFixture) -> None:
    case = CASES[name]
    caplog.set_level(logging.WARNING, logger="gateway.server")
    with case.make(cluster) as channel:
        code, details = _call(channel, case.method)
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    if case.expected is None:
        # Admitted: the call reached its handler. An empty request may still fail there (e.g.
        # INVALID_ARGUMENT), but never at the handshake or at the access rules.
        assert code is not grpc.StatusCode.UNAVAILABLE, f"{name}: refused at the handshake"
        assert not details.startswith("rule "), f"{name}: {details}"
        assert not refusals, f"{name}: {refusals}"
        return
    assert code is case.expected
    if case.details:
        assert case.details in details
        assert any(case.method in m and case.details in m for m in refusals), refusals


def test_gateway_refuses_a_foreign_root_speaking_for_cn_when_tls_would_pass(
    world: World, tmp_path: Path
) -> None:
    """Without name constraints on the MO root, the TLS stack accepts the forged chain; the
    gateway still refuses it, because a CN identity must chain to the CN root (check 2)."""
    unconstrained = _unconstrained_mo_root()
    roots = TrustBundle(
        (
            (CN, world.cas[CN].certificate),
            (HK, world.cas[HK].certificate),
            (MO, unconstrained.certificate),
        )
    )
    bundle = tmp_path / "bundle.json"
    write_public_file(bundle, roots.to_json().encode())
    config = world.write_config(CN, tmp_path / "cn-data")
    config.write_text(config.read_text().replace(str(world.bundle), str(bundle)))
    cert_pem, key_pem = _forged_pair(unconstrained)
    with (
        running_node(config) as node,
        secure_channel(
            node.address, ClientIdentity(cert_pem, key_pem, roots.pem()), node.config.identity
        ) as channel,
    ):
        code, details = _call(channel, HEALTH)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "spiffe://cn.customs-exchange/partner/risk" in details
    assert "does not chain to a CN root of the trust bundle" in details


def _unconstrained_mo_root() -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "MO"),
            x509.NameAttribute(NameOID.COMMON_NAME, "MO unconstrained root"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(MO, cert, key)


def _forged_pair(mo: CertificateAuthority) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "risk")]))
        .issuer_name(mo.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://cn.customs-exchange/partner/risk")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(mo.private_key, hashes.SHA256())
    )
    return certificate_pem(cert), private_key_pem(key)


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_revoked_after_the_crl_is_published_without_restarting_the_node(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The revoked partner keeps its open connection; its next call is refused once the node
    has picked up the CRL (the TLS watcher, not a new handshake, loads it)."""
    caplog.set_level(logging.WARNING, logger="gateway.server")
    cred = cluster.world.issue(CN, Role.PARTNER, "to-revoke", tag="-to-revoke")
    with _channel(cluster, cred.certificate.read_bytes(), cred.key.read_bytes()) as channel:
        assert _call(channel, LIST)[0] not in REFUSALS
        serial = cred.issued.certificate.serial_number
        crl = build_crl(
            cluster.world.cas[CN],
            [RevokedEntry(serial, dt.datetime.now(dt.UTC), RevocationReason.KEY_COMPROMISE)],
            number=1,
        )
        write_public_file(cluster.crl, crl.public_bytes(Encoding.PEM))
        _wait_for(
            lambda: any(serial in v.revoked_serials() for v in cluster.node.authenticator.crls)
        )
        code, details = _call(channel, LIST)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "spiffe://cn.customs-exchange/partner/to-revoke" in details
    assert "was revoked at" in details
    assert "(CRL number 1)" in details
    # an unrevoked partner is unaffected by the same CRL
    with _default(CN, Role.PARTNER)(cluster) as channel:
        assert _call(channel, LIST)[0] not in REFUSALS


def test_a_crl_not_signed_by_a_bundle_root_is_not_loaded(cluster: Cluster) -> None:
    rogue = create_root_ca(CN)
    before = cluster.node.authenticator.crls
    generation = cluster.node.tls.generation
    forged = build_crl(rogue, [], number=99)
    # swap a forged CRL into the configured path, then put the real one back
    original = cluster.crl.read_bytes() if cluster.crl.exists() else None
    refused = cluster.node.tls.refusals.get("unsigned", 0)
    write_public_file(cluster.crl, forged.public_bytes(Encoding.PEM))
    _wait_for(lambda: cluster.node.tls.refusals.get("unsigned", 0) > refused)
    assert cluster.node.tls.generation == generation
    assert cluster.node.authenticator.crls == before
    if original is not None:
        write_public_file(cluster.crl, original)
