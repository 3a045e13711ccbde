"""The signing certificate and key reload without a restart (ADR 0063): a new envelope is
signed with the renewed pair, checkpoints too, health/metrics/status report the pair in use,
and a pair that does not match is refused while the node goes on signing with the old one."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sqlite3
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from customs.gateway.v1 import envelope_pb2, partner_pb2_grpc
from gateway.audit import WitnessPolicy, verify_ledger
from gateway.pki import Jurisdiction, Role
from gateway.pki.bundle import TrustBundle, fingerprint
from gateway.pki.expiry import certificate_serial
from gateway.server import Node, load_config
from gateway.server.node import CERTIFICATES_IN_USE_KEY
from gateway.status import status_with_config
from tests.exchange.conftest import Trio, entry_request, notice_request
from tests.support import Credential, World, channel_to, ledger_file, wait_for

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


def _node_with_own_signing_files(world: World, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A config whose signing files are copies this test may replace; returns (config, cert,
    key)."""
    signing = world.signing(HK)
    cert, key = tmp_path / "signing.pem", tmp_path / "signing.key"
    shutil.copy(signing.certificate, cert)
    shutil.copy(signing.key, key)
    config = world.write_config(HK, tmp_path / "hk-data", server="tls_reload_seconds = 0.05")
    text = config.read_text().replace(str(signing.certificate), str(cert))
    config.write_text(text.replace(str(signing.key), str(key)))
    return config, cert, key


def _renewed(world: World, tag: str) -> Credential:
    return world.issue(
        HK, Role.NODE, "gateway", signing=True, lifetime=dt.timedelta(days=20), tag=tag
    )


def _envelope(node: Node, message_id: str) -> envelope_pb2.Envelope:
    conn = sqlite3.connect(node.config.data_dir / "ledger.db")
    try:
        (blob,) = conn.execute(
            "SELECT envelope FROM exchange_messages WHERE message_id = ?", (message_id,)
        ).fetchone()
    finally:
        conn.close()
    return envelope_pb2.Envelope.FromString(blob)


def _publish(world: World, node: Node) -> str:
    channel = channel_to(world, node, world.cred(HK, Role.PARTNER))
    with channel:
        request = entry_request([CN])
        partner_pb2_grpc.PartnerGatewayStub(channel).PublishWatchlistEntry(request, timeout=10)
    return str(request.addressing.message_id)


def _health_in_use(world: World, node: Node) -> str:
    with channel_to(world, node, world.cred(HK, Role.AUDITOR)) as channel:
        _, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return dict(call.trailing_metadata())[CERTIFICATES_IN_USE_KEY]


def test_renewed_signing_pair_is_used_and_reported_without_restart(
    world: World, tmp_path: Path
) -> None:
    config, cert_path, key_path = _node_with_own_signing_files(world, tmp_path)
    node = Node(load_config(config))
    node.start()
    try:
        old = node.signer.certificate
        before = _publish(world, node)
        assert _envelope(node, before).key_id == fingerprint(old)
        node.checkpointer.run_once()

        new = _renewed(world, "-renewed")
        shutil.copy(new.key, key_path)  # key first, then the certificate (the documented order)
        shutil.copy(new.certificate, cert_path)
        serial = certificate_serial(new.issued.certificate)
        wait_for(lambda: node.signing.generation == 1, what="the signing pair to reload")

        assert certificate_serial(node.signer.certificate) == serial
        after = _publish(world, node)
        envelope = _envelope(node, after)
        assert envelope.key_id == fingerprint(new.issued.certificate)
        assert envelope.signer_certificate == node.signer.certificate_der
        node.checkpointer.run_once()  # a checkpoint signed with the new key

        # what is reported is the pair in use
        assert f"signing serial={serial} not-after=" in _health_in_use(world, node)
        metrics = node.metrics.render().decode()
        assert 'certificate="signing",not_after="' in metrics
        assert f'serial="{serial}"' in metrics
        signing = [
            c
            for c in status_with_config(config, address=node.address).certificates
            if c.name == "signing"
        ]
        assert [c.serial for c in signing] == [serial]
        assert certificate_serial(old) != serial
    finally:
        node.stop(grace=0.5)
    # an auditor with nothing but the bundle verifies checkpoints and envelopes of both keys
    result = verify_ledger(
        config.parent / "hk-data" / "ledger.db",
        bundle=TrustBundle.from_json(world.bundle.read_bytes()),
        policy=WitnessPolicy.unwitnessed(),  # a node without peers: nobody cosigns
    )
    assert result.ok, result.failures
    assert result.checkpoints >= 2
    assert result.envelopes == 2


def test_a_mismatched_pair_is_refused_and_the_old_one_kept(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, cert_path, key_path = _node_with_own_signing_files(world, tmp_path)
    node = Node(load_config(config))
    node.start()
    try:
        old_serial = certificate_serial(node.signer.certificate)
        new = _renewed(world, "-half")
        with caplog.at_level(logging.WARNING, logger="gateway.server.signing"):
            shutil.copy(new.certificate, cert_path)  # the certificate without its key
            wait_for(
                lambda: "signing certificate not reloaded" in caplog.text,
                what="the refusal of a half-copied pair",
            )
        assert "does not match signing.certificate" in caplog.text
        assert f"still signing with certificate {old_serial}" in caplog.text
        assert certificate_serial(node.signer.certificate) == old_serial
        assert node.signing.generation == 0
        message = _publish(world, node)  # the node still signs, with the old pair
        assert _envelope(node, message).key_id == fingerprint(world.signing(HK).issued.certificate)

        shutil.copy(new.key, key_path)  # the key arrives: now it loads
        wait_for(lambda: node.signing.generation == 1, what="the completed pair to load")
        assert certificate_serial(node.signer.certificate) == certificate_serial(
            new.issued.certificate
        )
    finally:
        node.stop(grace=0.5)


def test_peers_cosign_checkpoints_of_the_renewed_key(trio: Trio, tmp_path: Path) -> None:
    """Three nodes: CN renews its signing pair while running; HK and MO cosign its next
    checkpoint (they learn the new key from the certificate sent with it), and a checkpoint
    made before the renewal is still sent with the certificate whose key signed it."""
    world = trio.world
    trio.stop(CN)
    signing = world.signing(CN)
    cert_path, key_path = tmp_path / "cn-signing.pem", tmp_path / "cn-signing.key"
    shutil.copy(signing.certificate, cert_path)
    shutil.copy(signing.key, key_path)
    config = trio.configs[CN]
    text = config.read_text().replace(str(signing.certificate), str(cert_path))
    text = text.replace(str(signing.key), str(key_path))
    config.write_text(text.replace("[server]", "[server]\ntls_reload_seconds = 0.05"))
    node = trio.start(CN)

    def cosigned_at_size(size: int) -> bool:
        # the witnesses' own "witnessed" entries follow, so "at least the submit's size"
        status = status_with_config(config, address=node.address)
        return (
            status.checkpoint is not None
            and status.checkpoint.size >= size
            and set(status.checkpoint.cosigners) == {"HK", "MO"}
        )

    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10)
    size = node.ledger.size()
    wait_for(lambda: cosigned_at_size(size), what="a checkpoint cosigned by HK and MO")
    old_note = node.ledger.latest_checkpoint().note  # type: ignore[union-attr]
    old_der = node.signer.certificate_der

    renewed = world.issue(
        CN, Role.NODE, "gateway", signing=True, lifetime=dt.timedelta(days=20), tag="-renewed"
    )
    shutil.copy(renewed.key, key_path)
    shutil.copy(renewed.certificate, cert_path)
    wait_for(lambda: node.signing.generation == 1, what="CN's signing pair to reload")
    assert node.witness_client._certificate_of(old_note) == old_der
    assert node.witness_client._certificate_of(old_note) != node.signer.certificate_der

    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10)
    size = node.ledger.size()
    wait_for(lambda: cosigned_at_size(size), what="the new key's checkpoint cosigned by HK and MO")
    trio.stop(CN)
    path = ledger_file(config.parent / "cn-data")
    result = verify_ledger(path, bundle=TrustBundle.from_json(world.bundle.read_bytes()))
    assert result.ok, result.failures
    assert result.cosignatures >= 4
