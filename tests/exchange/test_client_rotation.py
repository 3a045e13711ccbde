"""A node's renewed TLS certificate is used for delivery once the old one stops working:
the deliverer reconnects with fresh credentials instead of failing until a restart."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from customs.gateway.v1 import partner_pb2
from gateway.pki import Role, SpiffeId, issue_leaf
from gateway.pki.pem import certificate_pem, write_private_key, write_public_file
from gateway.pki.revocation import RevocationReason, RevokedEntry, build_crl
from tests.exchange.conftest import CN, HK, Trio, notice_request, write_trio_configs
from tests.support import World, wait_for


def test_delivery_survives_renewal_and_revocation_of_the_old_certificate(
    world: World, tmp_path: Path
) -> None:
    configs = write_trio_configs(world, tmp_path)
    # CN's node certificate is a copy the test may renew; HK loads a CRL the test may publish.
    node = world.cred(CN, Role.NODE)
    cert, key = tmp_path / "cn-node.pem", tmp_path / "cn-node.key"
    shutil.copy(node.certificate, cert)
    shutil.copy(node.key, key)
    text = configs[CN].read_text()
    configs[CN].write_text(
        text.replace(str(node.certificate), str(cert)).replace(str(node.key), str(key))
    )
    crl = tmp_path / "cn.crl"  # a configured CRL must exist at start (ADR 0024)
    write_public_file(crl, build_crl(world.cas[CN], [], number=0).public_bytes(Encoding.PEM))
    configs[HK].write_text(
        configs[HK]
        .read_text()
        .replace("crls = []", f'crls = ["{crl}"]')
        .replace("[server]", "[server]\ntls_reload_seconds = 0.1")
    )
    trio = Trio(world, tmp_path, configs)
    try:
        for j in (CN, HK):
            trio.start(j)
        first = trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
        wait_for(lambda: _delivered(trio, first.message_id), what="first delivery")

        # The operator renews CN's certificate (new key), then HK revokes the old one.
        renewed = issue_leaf(world.cas[CN], SpiffeId(CN, Role.NODE, "gateway"))
        assert renewed.private_key is not None
        write_private_key(key, renewed.private_key, overwrite=True)
        write_public_file(cert, certificate_pem(renewed.certificate))
        old_serial = node.issued.certificate.serial_number
        revoked = build_crl(
            world.cas[CN],
            [RevokedEntry(old_serial, dt.datetime.now(dt.UTC), RevocationReason.SUPERSEDED)],
            number=1,
        )
        write_public_file(crl, revoked.public_bytes(Encoding.PEM))
        wait_for(
            lambda: any(
                old_serial in c.revoked_serials() for c in trio.nodes[HK].authenticator.crls
            ),
            what="HK to load the CRL",
        )

        second = trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK]), timeout=10)
        wait_for(
            lambda: _delivered(trio, second.message_id), timeout=20, what="delivery after renewal"
        )
    finally:
        trio.close()


def _delivered(trio: Trio, message_id: str) -> bool:
    status = trio.partner(CN).GetDeliveryStatus(
        partner_pb2.GetDeliveryStatusRequest(message_id=message_id), timeout=5
    )
    return all(r.state == partner_pb2.DELIVERY_STATE_DELIVERED for r in status.recipients)
