"""Revocation cannot be undone (ADR 0024): not by copying another CA's CRL over a CA's file, not
by putting an older CRL back (while running or across a restart), not by deleting the file, and
not by starting without it. Each case asserts the refused caller's status and that the ledger
did not change, after waiting for the refusal itself (log line and counter)."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from customs.gateway.v1 import partner_pb2_grpc
from gateway.pki import Jurisdiction, Role, create_root_ca
from gateway.pki.bundle import TrustBundle
from gateway.pki.pem import write_public_file
from gateway.pki.revocation import (
    CrlRefused,
    IssuerState,
    RevocationReason,
    RevokedEntry,
    VerifiedCrl,
    admit_crl,
    build_crl,
    key_id,
    verify_crl,
)
from gateway.server import Node, load_config
from tests.exchange.conftest import notice_request
from tests.failclosed.serving import assert_one_line_refusal, finish, start_serve
from tests.support import Credential, World, channel_to, running_node, wait_for

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


def _publish(world: World, path: Path, ca: Jurisdiction, number: int, *revoked: Credential) -> None:
    now = dt.datetime.now(dt.UTC)
    entries = [
        RevokedEntry(c.issued.certificate.serial_number, now, RevocationReason.KEY_COMPROMISE)
        for c in revoked
    ]
    crl = build_crl(world.cas[ca], entries, number=number)
    write_public_file(path, crl.public_bytes(Encoding.PEM))


def _submit(world: World, node: Node, cred: Credential) -> tuple[grpc.StatusCode, str]:
    """A partner's seizure notice; (status, details)."""
    with channel_to(world, node, cred) as channel:
        try:
            partner_pb2_grpc.PartnerGatewayStub(channel).SubmitSeizureNotice(
                notice_request(CN, [HK]), timeout=10
            )
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _assert_refused_and_nothing_written(world: World, node: Node, cred: Credential) -> None:
    before = node.ledger.size()
    code, details = _submit(world, node, cred)
    assert code is grpc.StatusCode.UNAUTHENTICATED, details
    assert "was revoked at" in details
    assert node.ledger.size() == before


def _numbers(node: Node) -> dict[str, int | None]:
    return {f"{v.jurisdiction}": v.number for v in node.tls.material.verified_crls}


@pytest.fixture
def revoked(world: World) -> Credential:
    """A CN partner the CN CRLs of these tests revoke."""
    return world.issue(CN, Role.PARTNER, "revoked", tag="-revoked")


@pytest.fixture
def config(world: World, tmp_path: Path, revoked: Credential) -> Path:
    """A CN node with CN's and HK's CRLs; CN's (number 2) revokes ``revoked``."""
    _publish(world, tmp_path / "cn.crl", CN, 2, revoked)
    _publish(world, tmp_path / "hk.crl", HK, 1)
    return world.write_config(
        CN,
        tmp_path / "cn-data",
        peers={HK: tmp_path / "hk-never-started" / "listen-address"},  # a peer that is down
        crls=[tmp_path / "cn.crl", tmp_path / "hk.crl"],
        server="tls_reload_seconds = 0.1",
    )


def _refusals(node: Node, reason: str) -> Callable[[], bool]:
    start = node.tls.refusals.get(reason, 0)
    return lambda: node.tls.refusals.get(reason, 0) > start


def test_crl_of_another_ca_copied_over_a_cas_file_is_refused(
    world: World,
    tmp_path: Path,
    config: Path,
    revoked: Credential,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.transport")
    with running_node(config) as node:
        _assert_refused_and_nothing_written(world, node, revoked)
        # a genuine partner is admitted and written: the ledger check below can fail
        before = node.ledger.size()
        assert _submit(world, node, world.cred(CN, Role.PARTNER))[0] is grpc.StatusCode.OK
        assert node.ledger.size() > before

        # HK's newer CRL (number 5, genuinely signed by HK's root) copied over cn.crl
        swapped = _refusals(node, "wrong-issuer")
        _publish(world, tmp_path / "hk-new.crl", HK, 5)
        shutil.copy(tmp_path / "hk-new.crl", tmp_path / "cn.crl")
        wait_for(swapped, what="the swapped CRL refused")
        assert any(
            "holds a CRL of HK root" in r.getMessage()
            and "the file is for the CN root" in r.getMessage()
            for r in caplog.records
        )
        assert _numbers(node) == {"CN": 2, "HK": 1}
        scrape = node.metrics.render().decode()
        assert 'gateway_crl_refusals_total{reason="wrong-issuer"} 1.0' in scrape
        _assert_refused_and_nothing_written(world, node, revoked)

        # the genuine next CRL of CN is still accepted, and the partner stays revoked
        _publish(world, tmp_path / "cn.crl", CN, 3, revoked)
        wait_for(lambda: _numbers(node) == {"CN": 3, "HK": 1}, what="CN CRL 3 in force")
        _assert_refused_and_nothing_written(world, node, revoked)


@pytest.mark.parametrize("rollback", ["older-crl-put-back", "crl-file-deleted"])
def test_crl_rolled_back_while_running_keeps_the_newer_one(
    world: World, tmp_path: Path, config: Path, revoked: Credential, rollback: str
) -> None:
    with running_node(config) as node:
        _assert_refused_and_nothing_written(world, node, revoked)
        if rollback == "older-crl-put-back":
            refused = _refusals(node, "older")
            _publish(world, tmp_path / "cn.crl", CN, 1)  # genuinely signed, revokes no one
        else:
            refused = _refusals(node, "missing")
            (tmp_path / "cn.crl").unlink()
        wait_for(refused, what=f"{rollback} refused")
        assert _numbers(node) == {"CN": 2, "HK": 1}
        _assert_refused_and_nothing_written(world, node, revoked)


def test_the_highest_crl_number_per_issuer_survives_a_restart(
    world: World, tmp_path: Path, config: Path, revoked: Credential
) -> None:
    """The store, not memory, holds the highest number: after a restart an older CRL (which
    does not list the revoked partner) does not start the node, in-process or as ``serve``."""
    with running_node(config) as node:
        _publish(world, tmp_path / "cn.crl", CN, 4, revoked)
        wait_for(lambda: _numbers(node)["CN"] == 4, what="CN CRL 4 in force")
    _publish(world, tmp_path / "cn.crl", CN, 3)  # genuinely signed, older, revokes no one
    cn_key = key_id(world.cas[CN].certificate)[:16]
    message = (
        rf"CRL file {tmp_path / 'cn.crl'}: CRL number 3 of CN root \(key id {cn_key}\) is "
        r"older than 4, already seen; an old CRL would un-revoke"
    )
    with pytest.raises(CrlRefused, match=message):
        Node(load_config(config))
    assert_one_line_refusal(finish(start_serve(config)), message)
    # with the newest CRL back, it starts, and the partner is still refused
    _publish(world, tmp_path / "cn.crl", CN, 4, revoked)
    with running_node(config) as node:
        _assert_refused_and_nothing_written(world, node, revoked)


def test_another_cas_crl_over_the_file_after_a_restart_is_refused(
    world: World, tmp_path: Path, config: Path
) -> None:
    """Which CA a file is for is in the store too: a fresh start does not re-learn it."""
    with running_node(config):
        pass
    _publish(world, tmp_path / "cn.crl", MO, 9)  # a genuine MO CRL, not configured anywhere
    outcome = finish(start_serve(config))
    assert_one_line_refusal(
        outcome, r"cn.crl: holds a CRL of MO root .* but the file is for the CN root"
    )


def test_the_same_cas_crl_in_two_files_is_refused(
    world: World, tmp_path: Path, config: Path
) -> None:
    shutil.copy(tmp_path / "cn.crl", tmp_path / "hk.crl")
    assert_one_line_refusal(
        finish(start_serve(config)), r"hk.crl: holds a CRL of the CN root .*, as .*cn.crl does"
    )


@pytest.mark.parametrize("problem", ["missing", "empty", "directory"])
def test_node_does_not_start_without_every_configured_crl(
    tmp_path: Path, config: Path, problem: str
) -> None:
    crl = tmp_path / "hk.crl"
    crl.unlink()
    if problem == "empty":
        crl.write_bytes(b"")
    elif problem == "directory":
        crl.mkdir()
    message = {
        "missing": rf"CRL file {crl} does not exist",
        "empty": rf"CRL file {crl}: not a PEM or DER CRL \(0 bytes\)",
        "directory": rf"CRL file {crl} cannot be read: Is a directory",
    }[problem]
    assert_one_line_refusal(finish(start_serve(config)), message)


# -- the decision itself, pure: a table of named cases ----------------------------------------


def _verified(world: World, ca: Jurisdiction, number: int | None) -> VerifiedCrl:
    crl = (
        build_crl(world.cas[ca], [], number=number)
        if number is not None
        else _without_number(world, ca)  # as some CAs issue them
    )
    return verify_crl(crl, TrustBundle(tuple((j, c.certificate) for j, c in world.cas.items())))


def _without_number(world: World, ca: Jurisdiction) -> x509.CertificateRevocationList:
    now = dt.datetime.now(dt.UTC)
    authority = world.cas[ca]
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.certificate.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .sign(authority.private_key, hashes.SHA256())
    )


PATH = "/etc/customs-gateway/cn.crl"

# (name, CRL in the file, CRL in force for the file, stored rows, outcome)
ADMIT = [
    ("first-sight", (CN, 1), None, [], "ok"),
    ("same-number-again", (CN, 2), (CN, 2), [(CN, 2, PATH)], "ok"),
    ("newer", (CN, 3), (CN, 2), [(CN, 2, PATH)], "ok"),
    ("older-than-in-force", (CN, 1), (CN, 2), [], "older"),
    ("older-than-stored", (CN, 1), None, [(CN, 2, PATH)], "older"),
    ("older-than-stored-at-another-path", (CN, 1), None, [(CN, 5, "/old/cn.crl")], "older"),
    ("other-ca-over-file-in-force", (HK, 9), (CN, 2), [], "wrong-issuer"),
    ("other-ca-over-file-after-restart", (HK, 9), None, [(CN, 2, PATH)], "wrong-issuer"),
    ("no-crl-number", (CN, None), None, [], "no-number"),
]


@pytest.mark.parametrize(
    ("crl", "in_force", "stored", "outcome"), [c[1:] for c in ADMIT], ids=[c[0] for c in ADMIT]
)
def test_admit_crl(
    world: World,
    crl: tuple[Jurisdiction, int | None],
    in_force: tuple[Jurisdiction, int] | None,
    stored: list[tuple[Jurisdiction, int, str]],
    outcome: str,
) -> None:
    known = {
        key_id(world.cas[j].certificate): IssuerState(key_id(world.cas[j].certificate), j, n, p)
        for j, n, p in stored
    }
    roots = [ca.certificate for ca in world.cas.values()]
    verified = _verified(world, *crl)
    current = _verified(world, *in_force) if in_force is not None else None
    if outcome == "ok":
        state = admit_crl(PATH, verified, in_force=current, known=known, roots=roots)
        assert (state.jurisdiction, state.number, state.path) == (crl[0], crl[1], PATH)
        assert state.key_id == key_id(world.cas[crl[0]].certificate)
    else:
        with pytest.raises(CrlRefused, match=f"CRL file {PATH}: ") as refused:
            admit_crl(PATH, verified, in_force=current, known=known, roots=roots)
        assert refused.value.reason == outcome


def test_a_stored_binding_to_a_root_no_longer_in_the_bundle_does_not_bind(world: World) -> None:
    """After a root rollover the file may hold the new root's CRLs."""
    old = create_root_ca(CN)
    known = {key_id(old.certificate): IssuerState(key_id(old.certificate), CN, 40, PATH)}
    roots = [ca.certificate for ca in world.cas.values()]
    state = admit_crl(PATH, _verified(world, CN, 1), in_force=None, known=known, roots=roots)
    assert state.number == 1
