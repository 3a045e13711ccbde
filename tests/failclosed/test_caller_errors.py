"""Every caller error is the caller's status, over real mutual TLS to a real CN node.

The matrix: bytes that do not parse, sent to every method of every service the node serves
(PartnerGateway, PeerExchange, LedgerAudit, Health, reflection), by a caller the access table
admits (INVALID_ARGUMENT, naming the request) and by one it refuses (PERMISSION_DENIED, whatever
the bytes); then the extreme values and the bad envelope that used to be INTERNAL. Each row
asserts the status and that nothing was written to the ledger.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from google.rpc import code_pb2

from customs.gateway.v1 import audit_pb2, audit_pb2_grpc, envelope_pb2, peer_pb2, peer_pb2_grpc
from gateway.envelope import Signer, seal
from gateway.exchange import delivery
from gateway.pki import Role, SpiffeId, TrustBundle
from gateway.pki.pem import certificate_pem, private_key_pem
from gateway.server import Node
from gateway.transport import ClientIdentity, secure_channel
from tests.failclosed.runtime_support import (
    CN,
    HK,
    METHODS,
    Method,
    allowed_caller,
    call_raw,
    denied_caller,
    ledger_state,
    sealed_notice,
)
from tests.support import World, channel_to, running_node

# A varint that never ends: no protobuf message parses from it.
GARBAGE = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"


@pytest.fixture(scope="module")
def cn(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("cn-caller-errors")
    with running_node(world.write_config(CN, tmp / "cn-data")) as node:
        yield node


def _rows() -> list[tuple[Method, str]]:
    rows = [(m, "admitted") for m in METHODS]
    rows += [(m, "refused") for m in METHODS if not m.service.full_name.startswith("grpc.")]
    return rows


@pytest.mark.parametrize(("method", "who"), _rows(), ids=lambda v: str(v))
def test_garbage_bytes_get_the_callers_status_and_write_nothing(
    world: World, cn: Node, method: Method, who: str, caplog: pytest.LogCaptureFixture
) -> None:
    cred = allowed_caller(world, method) if who == "admitted" else denied_caller(world, method)
    assert cred is not None
    before = ledger_state(cn)
    with channel_to(world, cn, cred) as channel, caplog.at_level(logging.WARNING):
        code, details, _ = call_raw(channel, method, GARBAGE)
    if who == "admitted":
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert f"do not decode as the {method.name} request message" in details
        assert any(getattr(r, "event", None) == "undecodable" for r in caplog.records)
    else:
        assert code is grpc.StatusCode.PERMISSION_DENIED, (code, details)
        assert details.startswith("rule "), details  # the rule that refused, never the bytes
    assert ledger_state(cn) == before


def test_list_checkpoints_beyond_any_signed_integer_is_an_empty_page(
    world: World, cn: Node
) -> None:
    with channel_to(world, cn, world.cred(HK, Role.AUDITOR)) as channel:
        stub = audit_pb2_grpc.LedgerAuditStub(channel)
        for min_size in (2**63 - 1, 2**63, 2**64 - 1):
            response = stub.ListCheckpoints(
                audit_pb2.ListCheckpointsRequest(min_size=min_size), timeout=5
            )
            assert list(response.checkpoints) == []


@pytest.mark.parametrize(
    "request_",
    [
        audit_pb2.GetEntriesRequest(start=2**64 - 1, end=2**64 - 1),
        audit_pb2.GetEntriesRequest(start=2**63, end=2**64 - 1),
        audit_pb2.GetEntriesRequest(start=0, end=2**64 - 1),
        audit_pb2.GetInclusionProofRequest(leaf_index=2**64 - 1, tree_size=2**64 - 1),
        audit_pb2.GetConsistencyProofRequest(first=2**63, second=2**64 - 1),
        audit_pb2.ListCheckpointsRequest(min_size=2**64 - 1, page_size=2**32 - 1),
    ],
    ids=["entries-start", "entries-signed", "entries-end", "inclusion", "consistency", "page"],
)
def test_extreme_integers_get_a_callers_status_or_an_answer(
    world: World, cn: Node, request_: Any
) -> None:
    method = next(m for m in METHODS if m.request is type(request_))
    before = ledger_state(cn)
    with channel_to(world, cn, world.cred(HK, Role.AUDITOR)) as channel:
        code, details, _ = call_raw(channel, method, request_.SerializeToString())
    assert code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
    ), (code, details)
    assert ledger_state(cn) == before


def _signer_with_malformed_san(world: World) -> Signer:
    """An Ed25519 signing certificate from the genuine HK root whose SAN extension is not DER."""
    ca = world.cas[HK]
    key = ed25519.Ed25519PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hk gateway signing")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.UnrecognizedExtension(
                ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x05\x86\x09ab"
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
    return Signer(SpiffeId(HK, Role.NODE, "gateway"), key, cert)


def test_bad_envelope_in_a_batch_is_refused_alone_and_finally(world: World, cn: Node) -> None:
    """The malformed-SAN envelope gets a final per-envelope INVALID_ARGUMENT; the genuine one
    beside it is received; the call itself is OK, never INTERNAL."""
    good = sealed_notice(world, HK, CN)
    bad = sealed_notice(world, HK, CN)
    forged_signer = _signer_with_malformed_san(world)
    header = envelope_pb2.EnvelopeHeader.FromString(bad.header)
    bad = seal(header, bad.payload, forged_signer)
    before = ledger_state(cn)
    with channel_to(world, cn, world.cred(HK, Role.NODE)) as channel:
        stub = peer_pb2_grpc.PeerExchangeStub(channel)
        response = stub.DeliverBatch(
            peer_pb2.DeliverBatchRequest(envelopes=[bad, good]), timeout=10
        )
    refused, received = response.results
    assert refused.error.code == code_pb2.INVALID_ARGUMENT, refused.error
    assert refused.error.code in delivery._FINAL_CODES  # the sender marks it REFUSED, stops
    assert "malformed extension" in refused.error.message
    assert not refused.HasField("receipt")
    assert received.HasField("receipt")
    assert not received.HasField("error")
    after = ledger_state(cn)
    assert after.size == before.size + 1  # the good one's `received` entry, nothing else


def test_a_tls_client_certificate_with_a_malformed_san_is_unauthenticated(
    world: World, cn: Node, tmp_path: Path
) -> None:
    """grpc's TLS layer does not parse the SAN; the gateway's check does, and refuses it."""
    ca = world.cas[CN]
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broken partner")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.UnrecognizedExtension(
                ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x05\x86\x09ab"
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
    roots = TrustBundle.from_json(world.bundle.read_bytes()).pem()
    identity = ClientIdentity(certificate_pem(cert), private_key_pem(key), roots)
    before = ledger_state(cn)
    with secure_channel(cn.address, identity, cn.config.identity) as channel:
        stub = audit_pb2_grpc.LedgerAuditStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=5)
    assert caught.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE)
    if caught.value.code() is grpc.StatusCode.UNAUTHENTICATED:
        assert "malformed extension" in (caught.value.details() or "")
    assert ledger_state(cn) == before


def test_undecodable_requests_are_counted_by_method_and_status(
    world: World, tmp_path: Path
) -> None:
    config = world.write_config(CN, tmp_path / "cn-data")
    with config.open("a") as f:
        f.write('\n[metrics]\nlisten = "127.0.0.1:0"\n')
    method = next(m for m in METHODS if m.name == "GetEntries")
    with (
        running_node(config) as node,
        channel_to(world, node, world.cred(HK, Role.AUDITOR)) as channel,
    ):
        for _ in range(3):
            code, _, _ = call_raw(channel, method, GARBAGE)
            assert code is grpc.StatusCode.INVALID_ARGUMENT
        text = node.metrics.render().decode()
    line = f'gateway_rpc_requests_total{{code="INVALID_ARGUMENT",method="{method.path}"}} 3.0'
    assert line in text
    assert 'gateway_limit_capacity{budget="calls"} 8.0' in text
    assert 'gateway_limit_in_use{budget="calls"} 0.0' in text
    assert "gateway_storage_writable 1.0" in text
