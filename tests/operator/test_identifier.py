"""One certificate identifier (ADR 0062): the full serial in lower-case hex in ``pki list``,
``show``, ``renew``, refusals and warnings; revocation known to ``list`` and ``show``; full
SHA-256 fingerprints where operators compare out of band."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from customs.gateway.v1 import partner_pb2, partner_pb2_grpc
from gateway.cli import main
from gateway.pki import Jurisdiction, Role
from gateway.pki.bundle import fingerprint
from gateway.pki.expiry import certificate_serial
from gateway.pki.pem import load_certificate
from gateway.server import Node
from tests.support import World, channel_to

Run = Callable[..., tuple[int, str, str]]
PASS = "correct horse battery staple"


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def ca(tmp_path: Path, run: Run) -> tuple[Path, Path]:
    passfile = tmp_path / "pass.txt"
    passfile.write_text(PASS + "\n")
    d = tmp_path / "hk" / "ca"
    args = ["--jurisdiction", "HK", "--dir", str(d), "--passphrase-file", str(passfile)]
    assert run("pki", "init-ca", *args)[0] == 0
    return d, passfile


def _issue(run: Run, ca: tuple[Path, Path], out: Path, *extra: str) -> dict[str, str]:
    d, passfile = ca
    code, stdout, err = run(
        "pki", "issue", "--ca-dir", str(d), "--out-dir", str(out),
        "--passphrase-file", str(passfile), "--json", *extra,
    )  # fmt: skip
    assert code == 0, err
    doc: dict[str, str] = json.loads(stdout)
    return doc


def _list_rows(run: Run, ca_dir: Path) -> dict[str, list[str]]:
    code, out, err = run("pki", "list", "--ca-dir", str(ca_dir))
    assert code == 0, err
    rows = {}
    for line in out.splitlines()[2:]:
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


def test_list_prints_the_full_serial_that_renew_accepts(
    run: Run, ca: tuple[Path, Path], tmp_path: Path
) -> None:
    issued = _issue(run, ca, tmp_path / "node", "--role", "node", "--name", "gateway")
    cert = load_certificate(Path(issued["certificate"]))
    serial = certificate_serial(cert)
    assert issued["serial"] == serial
    assert len(serial) > 16  # 159 random bits: the whole serial, not a 16-digit prefix
    rows = _list_rows(run, ca[0])
    assert serial in rows, rows
    printed = rows[serial][0]
    code, out, err = run(
        "pki", "renew", "--ca-dir", str(ca[0]), "--serial", printed,
        "--out-dir", str(tmp_path / "node"), "--passphrase-file", str(ca[1]), "--force",
    )  # fmt: skip
    assert code == 0, err
    assert f"renewed {serial} as tls certificate " in out


def test_list_and_show_know_revocation_with_date_and_reason(
    run: Run, ca: tuple[Path, Path], tmp_path: Path
) -> None:
    p = _issue(run, ca, tmp_path / "p", "--role", "partner", "--name", "risk")
    code, _, err = run(
        "pki", "revoke", "--ca-dir", str(ca[0]), "--serial", p["serial"],
        "--reason", "key-compromise",
    )  # fmt: skip
    assert code == 0, err
    row = _list_rows(run, ca[0])[p["serial"]]
    assert re.fullmatch(r"revoked \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d \(key-compromise\)", row[-1])

    # without the CA's record or CRL, show does not claim "valid"
    code, out, _ = run("pki", "show", p["certificate"])
    assert code == 0
    assert "revocation not checked: give --ca-dir or --crl" in out
    # with the CA directory
    code, out, _ = run("pki", "show", p["certificate"], "--ca-dir", str(ca[0]))
    assert code == 0
    status = next(line for line in out.splitlines() if line.startswith("status"))
    assert re.search(r"revoked \d{4}-\d\d-\d\dT[\d:]+ \(key-compromise\)", status), status
    # with the CRL the CA published
    crl = tmp_path / "hk.crl"
    code, _, err = run(
        "pki", "crl", "--ca-dir", str(ca[0]), "--out", str(crl), "--passphrase-file", str(ca[1])
    )
    assert code == 0, err
    code, out, _ = run("pki", "show", p["certificate"], "--crl", str(crl), "--json")
    doc = json.loads(out)
    assert doc["status"] == "revoked"
    assert doc["reason"] == "key-compromise"
    assert doc["revoked_at"]
    assert doc["revocation_checked"] == [f"CRL {crl}"]
    # a certificate the CRL does not list is valid, and says what was checked
    other = _issue(run, ca, tmp_path / "a", "--role", "auditor", "--name", "audit")
    code, out, _ = run("pki", "show", other["certificate"], "--crl", str(crl))
    assert f"valid (revocation checked against CRL {crl})" in out


def test_show_refuses_a_crl_of_another_issuer(
    run: Run, ca: tuple[Path, Path], tmp_path: Path
) -> None:
    p = _issue(run, ca, tmp_path / "p", "--role", "partner", "--name", "risk")
    other = tmp_path / "mo" / "ca"
    assert run("pki", "init-ca", "--jurisdiction", "MO", "--dir", str(other))[0] == 0
    crl = tmp_path / "mo.crl"
    assert run("pki", "crl", "--ca-dir", str(other), "--out", str(crl))[0] == 0
    code, _, err = run("pki", "show", p["certificate"], "--crl", str(crl))
    assert code == 2
    assert f"CRL {crl} is of " in err
    assert "not of the certificate's issuer" in err


def test_bundle_check_prints_full_sha256_fingerprints(run: Run, tmp_path: Path) -> None:
    dirs = {}
    for j in ("CN", "HK", "MO"):
        dirs[j] = tmp_path / j.lower()
        assert run("pki", "init-ca", "--jurisdiction", j, "--dir", str(dirs[j]))[0] == 0
    bundle = tmp_path / "bundle.json"
    roots = [a for j in dirs for a in ("--root", f"{j}={dirs[j]}")]
    assert run("pki", "bundle", "build", *roots, "--out", str(bundle))[0] == 0
    code, out, _ = run("pki", "bundle", "check", str(bundle))
    assert code == 0
    for j, d in dirs.items():
        full = fingerprint(load_certificate(d / "ca.pem"))
        assert f"  {j}  sha256 {full} until " in out


def test_an_authorization_refusal_names_the_identity_never_a_fingerprint_prefix(
    world: World, hk_node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    cn_partner = world.cred(Jurisdiction.CN, Role.PARTNER)
    with (
        caplog.at_level(logging.WARNING, logger="gateway"),
        channel_to(world, hk_node, cn_partner) as channel,
    ):
        stub = partner_pb2_grpc.PartnerGatewayStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetDeliveryStatus(partner_pb2.GetDeliveryStatusRequest(), timeout=5)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    refused = [r for r in caplog.records if getattr(r, "event", "") == "refused"]
    assert refused
    assert fingerprint(cn_partner.issued.certificate)[:16] not in caplog.text
    assert "spiffe://cn.customs-exchange/partner/risk" in refused[0].getMessage()


def test_an_unauthenticated_certificate_is_named_by_its_serial(world: World, hk_node: Node) -> None:
    from gateway.pki import create_root_ca

    rogue_ca = create_root_ca(Jurisdiction.CN)  # not in the bundle
    rogue = world.issue(Jurisdiction.CN, Role.PARTNER, "rogue", ca=rogue_ca, tag="-rogue")
    serial = certificate_serial(rogue.issued.certificate)
    from gateway.pki.access import Authenticator
    from gateway.pki.bundle import TrustBundle
    from gateway.pki.pem import certificate_pem

    authenticator = Authenticator(TrustBundle.from_json(world.bundle.read_bytes()))
    with pytest.raises(Exception, match=rf"\(certificate {serial}\)"):
        authenticator.authenticate(certificate_pem(rogue.issued.certificate))
