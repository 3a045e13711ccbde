"""The key policy and the cipher suites, at every port of a node (ADR 0025).

Keys: ECDSA P-256/P-384, Ed25519 and RSA >= 2048 only, whoever presents them; a weak key from
the right CA is refused with UNAUTHENTICATED on the gRPC port and without metrics on the HTTPS
port. Suites: TLS 1.2+ with ECDHE and AES-GCM or ChaCha20 only; a client offering only CBC
suites (or only TLS 1.1) does not get a connection on either port, even when the environment
asks grpc for CBC."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpc_health.v1 import health_pb2, health_pb2_grpc

from customs.gateway.v1 import partner_pb2_grpc
from gateway.pki import Authenticator, Jurisdiction, Role, SpiffeId, create_root_ca, issue_leaf
from gateway.pki.bundle import TrustBundle
from gateway.pki.chain import CertificateCheckError
from gateway.pki.pem import certificate_pem
from gateway.pki.revocation import CrlError, build_crl, verify_crl
from gateway.server import Node
from gateway.transport import ClientIdentity, secure_channel
from tests.exchange.conftest import notice_request
from tests.failclosed.serving import start_serve
from tests.support import World, running_node

CN = Jurisdiction.CN

KEYS = {
    "rsa-1024": lambda: rsa.generate_private_key(65537, 1024),
    "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ecdsa-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ecdsa-p521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}
WEAK = {"rsa-1024": "RSA-1024", "ecdsa-p521": "ECDSA secp521r1"}
# Ed25519 is allowed by the policy (the nodes' signing keys are Ed25519), but grpc's BoringSSL
# does not offer Ed25519 signatures in TLS, so a TLS client cannot use one: shown on the
# authenticator below, not on the port.
TLS_GOOD = ["rsa-2048", "ecdsa-p256", "ecdsa-p384"]

CBC_ONLY = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:AES128-SHA"


def _pem_key(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(world: World, role: Role, name: str, kind: str, tmp: Path) -> tuple[Path, Path]:
    key = KEYS[kind]()
    issued = issue_leaf(
        world.cas[CN],
        SpiffeId(CN, role, name),
        public_key=key.public_key(),  # type: ignore[arg-type]
    )
    cert, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert.write_bytes(certificate_pem(issued.certificate))
    key_path.write_bytes(_pem_key(key))
    return cert, key_path


@pytest.fixture(scope="module")
def node(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A CN node with metrics on."""
    tmp = tmp_path_factory.mktemp("keys-node")
    config = world.write_config(CN, tmp / "cn-data")
    with config.open("a") as f:
        f.write('\n[metrics]\nlisten = "127.0.0.1:0"\n')
    with running_node(config) as running:
        yield running


def _submit(world: World, node: Node, cert: Path, key: Path) -> tuple[grpc.StatusCode, str]:
    identity = ClientIdentity(
        cert.read_bytes(), key.read_bytes(), TrustBundle.from_json(world.bundle.read_bytes()).pem()
    )
    with secure_channel(node.address, identity, node.config.identity) as channel:
        try:
            partner_pb2_grpc.PartnerGatewayStub(channel).SubmitSeizureNotice(
                notice_request(CN, [Jurisdiction.HK]), timeout=10
            )
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("kind", [*WEAK, *TLS_GOOD])
def test_grpc_port_admits_only_allowed_client_keys(
    world: World, node: Node, tmp_path: Path, kind: str
) -> None:
    cert, key = _issue(world, Role.PARTNER, f"keys-{kind}", kind, tmp_path)
    before = node.ledger.size()
    code, details = _submit(world, node, cert, key)
    if kind == "rsa-1024":  # TLS takes it; the node's own check refuses it on the call
        assert code is grpc.StatusCode.UNAUTHENTICATED, details
        assert "key RSA-1024 is not allowed (only ECDSA P-256 or P-384" in details
        assert node.ledger.size() == before
    elif kind == "ecdsa-p521":  # grpc's BoringSSL refuses P-521 signatures in the handshake
        assert code is grpc.StatusCode.UNAVAILABLE, details
        assert "NO_COMMON_SIGNATURE_ALGORITHMS" in details
        assert node.ledger.size() == before
    else:  # admitted: past authentication and authorization, the notice is recorded
        assert code is grpc.StatusCode.OK, details
        assert node.ledger.size() > before


@pytest.mark.parametrize("kind", list(KEYS))
def test_authenticator_applies_the_key_policy(world: World, tmp_path: Path, kind: str) -> None:
    """The same rule for every certificate the node checks (callers, peers, signing
    certificates all go through ``verify_leaf``)."""
    cert, _ = _issue(world, Role.PARTNER, f"auth-{kind}", kind, tmp_path)
    authenticator = Authenticator(TrustBundle.from_json(world.bundle.read_bytes()))
    if kind in WEAK:
        with pytest.raises(CertificateCheckError, match=f"key {WEAK[kind]} is not allowed"):
            authenticator.authenticate(cert.read_bytes())
    else:
        assert authenticator.authenticate(cert.read_bytes()).identity.name == f"auth-{kind}"


def _metrics_context(
    world: World, cert: Path, key: Path, ciphers: str | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cadata=TrustBundle.from_json(world.bundle.read_bytes()).pem().decode()
    )
    context.check_hostname = False
    if ciphers is not None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(ciphers)
    else:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client present a weak key
    context.load_cert_chain(cert, key)
    return context


def _scrape(node: Node, context: ssl.SSLContext) -> tuple[int, str]:
    assert node.metrics_server is not None
    conn = http.client.HTTPSConnection(
        "127.0.0.1", node.metrics_server.port, context=context, timeout=10
    )
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["rsa-1024", "ecdsa-p521", "rsa-2048", "ecdsa-p384"])
def test_metrics_port_admits_only_allowed_client_keys(
    world: World, node: Node, tmp_path: Path, kind: str
) -> None:
    cert, key = _issue(world, Role.MONITOR, f"metrics-{kind}", kind, tmp_path)
    context = _metrics_context(world, cert, key)
    if kind not in WEAK:
        status, body = _scrape(node, context)
        assert status == 200
        assert "gateway_ledger_entries" in body
        return
    if kind == "rsa-1024":  # OpenSSL's security level refuses it in the handshake already
        # (the client sees the server's "bad certificate" alert, or under load only the EOF)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _scrape(node, context)
        return
    status, body = _scrape(node, context)  # P-521: TLS takes it, the node's check does not
    assert status == 403
    assert f"key {WEAK[kind]} is not allowed" in body


def _handshake(port: int, context: ssl.SSLContext) -> str:
    """The suite negotiated with the server at ``port``; raises if none could be."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        context.wrap_socket(sock) as tls,
    ):
        cipher = tls.cipher()
        assert cipher is not None
        return cipher[0]


def _grpc_context(world: World, ciphers: str | None, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(
        cadata=TrustBundle.from_json(world.bundle.read_bytes()).pem().decode()
    )
    context.check_hostname = False
    partner = world.cred(CN, Role.PARTNER)
    context.load_cert_chain(partner.certificate, partner.key)
    context.set_alpn_protocols(["h2"])
    with warnings.catch_warnings():  # a client that offers an old version on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        context.maximum_version = maximum
        if maximum < ssl.TLSVersion.TLSv1_2:
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


SUITES = [
    ("cbc-only", CBC_ONLY, ssl.TLSVersion.TLSv1_2, False),
    ("tls-1.1", None, "TLSv1_1", False),
    ("aes-gcm", "ECDHE-ECDSA-AES128-GCM-SHA256", ssl.TLSVersion.TLSv1_2, True),
    ("chacha20", "ECDHE-ECDSA-CHACHA20-POLY1305", ssl.TLSVersion.TLSv1_2, True),
    ("tls-1.3", None, ssl.TLSVersion.TLSv1_3, True),
]


@pytest.mark.parametrize(
    ("ciphers", "maximum", "ok"), [s[1:] for s in SUITES], ids=[s[0] for s in SUITES]
)
@pytest.mark.parametrize("port", ["grpc", "metrics"])
def test_only_aead_suites_on_every_port(
    world: World,
    node: Node,
    port: str,
    ciphers: str | None,
    maximum: ssl.TLSVersion | str,
    ok: bool,
) -> None:
    if isinstance(maximum, str):  # looked up here: the old versions warn when touched
        maximum = getattr(ssl.TLSVersion, maximum)
    assert isinstance(maximum, ssl.TLSVersion)
    assert node.metrics_server is not None
    number = node.port if port == "grpc" else node.metrics_server.port
    context = _grpc_context(world, ciphers, maximum)
    if port == "metrics":
        context.set_alpn_protocols(["http/1.1"])
    if ok:
        suite = _handshake(number, context)
        assert "GCM" in suite or "CHACHA20" in suite or suite.startswith("TLS_"), suite
    else:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(number, context)


def test_grpc_suites_are_forced_whatever_the_environment(world: World, tmp_path: Path) -> None:
    """grpc takes its TLS 1.2 suites from GRPC_SSL_CIPHER_SUITES; a node started with CBC
    there still offers AEAD suites only (the node sets the variable itself)."""
    config = world.write_config(CN, tmp_path / "cn-data")
    env = {**os.environ, "GRPC_SSL_CIPHER_SUITES": f"{CBC_ONLY}:ECDHE-ECDSA-AES128-GCM-SHA256"}
    proc = start_serve(config, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line + (
            proc.stderr.read() if proc.stderr else ""
        )
        port = int(line.rsplit(":", 1)[1])
        good = _grpc_context(world, "ECDHE-ECDSA-AES128-GCM-SHA256", ssl.TLSVersion.TLSv1_2)
        assert _handshake(port, good) == "ECDHE-ECDSA-AES128-GCM-SHA256"  # the node is up
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(port, _grpc_context(world, CBC_ONLY, ssl.TLSVersion.TLSv1_2))
        openssl = shutil.which("openssl")
        if openssl is not None:  # the same with another TLS client
            partner = world.cred(CN, Role.PARTNER)
            probe = subprocess.run(
                [
                    openssl,
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{port}",
                    "-tls1_2",
                    "-cipher",
                    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA",
                    "-cert",
                    str(partner.certificate),
                    "-key",
                    str(partner.key),
                ],
                input="",
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert probe.returncode != 0
            assert "Cipher is (NONE)" in probe.stdout, probe.stdout + probe.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_health_still_answers_a_good_client(world: World, node: Node) -> None:
    """The control for the refusals above: the same node, a P-256 partner, a normal channel."""
    partner = world.cred(CN, Role.PARTNER)
    identity = world.client_identity(partner)
    with secure_channel(node.address, identity, node.config.identity) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert dt.datetime.now(dt.UTC) < world.cas[CN].certificate.not_valid_after_utc
    assert isinstance(world.cas[CN].certificate, x509.Certificate)


def test_a_crl_issuer_with_a_weak_key_is_refused(world: World) -> None:
    """CRL issuers are held to the key policy too: a P-521 root's CRL is not used."""
    weak = create_root_ca(CN, private_key=ec.generate_private_key(ec.SECP521R1()))
    bundle = TrustBundle(((CN, weak.certificate),))
    crl = build_crl(weak, [], number=1)
    with pytest.raises(CrlError, match=r"CRL issuer .*: key ECDSA secp521r1 is not allowed"):
        verify_crl(crl, bundle)
    good = build_crl(world.cas[CN], [], number=1)
    assert verify_crl(good, TrustBundle(((CN, world.cas[CN].certificate),))).number == 1
